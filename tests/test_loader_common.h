/* test_loader_common.h - checks shared by the loader suites
 * (test_loader_*.c): a loaded matrix against a .f32 dump made by numpy, a
 * vocabulary against a token list, and "this file fails with this code and a
 * message naming the file and saying this". Fixtures live in
 * tests/fixtures/loaders/ and come from scripts/gen_loader_fixtures.py. */
#ifndef TESTS_TEST_LOADER_COMMON_H
#define TESTS_TEST_LOADER_COMMON_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "loader.h"
#include "testutil.h"
#include "vocab.h"

#define LFIX(name) "loaders/" name

/* Every value bit-for-bit equal to the dump (so -0.0 and subnormals count),
 * and every padding float zero. */
static inline void expect_matrix(const struct matrix *m, const char *f32_fixture, int64_t rows,
                                 int64_t dim)
{
    ck_assert_int_eq(m->rows, rows);
    ck_assert_int_eq(m->dim, dim);
    ck_assert_int_eq(m->stride % MATRIX_ALIGN_FLOATS, 0);
    size_t n;
    float *ref = fixture_f32(f32_fixture, &n);
    ck_assert_uint_eq(n, (size_t)(rows * dim));
    for (int64_t i = 0; i < rows; i++) {
        const float *row = matrix_row(m, i);
        ck_assert_msg(memcmp(row, ref + i * dim, (size_t)dim * sizeof(float)) == 0,
                      "%s: row %lld differs", f32_fixture, (long long)i);
        for (int64_t j = dim; j < m->stride; j++)
            ck_assert_msg(row[j] == 0.0f, "row %lld padding float %lld not zero", (long long)i,
                          (long long)j);
    }
    free(ref);
}

/* The vocabulary holds exactly the fixture's tokens, in order. */
static inline void expect_tokens(const struct vocab *v, const char *tokens_fixture)
{
    char *p = fixture_path(tokens_fixture);
    size_t len;
    char *text = testutil_read_file(p, &len);
    ck_assert_msg(text != NULL, "fixture %s missing", p);
    free(p);
    ck_assert_ptr_nonnull(v);
    int64_t id = 0;
    for (char *s = text; s < text + len; id++) {
        char *nl = memchr(s, '\n', (size_t)(text + len - s));
        ck_assert_ptr_nonnull(nl);
        size_t n = (size_t)(nl - s);
        size_t tl;
        const char *tok = vocab_token(v, id, &tl);
        ck_assert_ptr_nonnull(tok);
        ck_assert_msg(tl == n && memcmp(tok, s, n) == 0, "token %lld: \"%.*s\" vs \"%.*s\"",
                      (long long)id, (int)tl, tok, (int)n, s);
        ck_assert_int_eq(vocab_find(v, s, n), id);
        s = nl + 1;
    }
    ck_assert_int_eq(vocab_size(v), id);
    free(text);
}

/* Loads path with the given format; the load must fail with code, leave the
 * matrix empty and no vocabulary, and say the path and every one of the
 * NULL-terminated substrings. */
static inline void expect_fail_v(const char *path, enum loader_format f, const char *tensor,
                                 int code, const char *const *needles)
{
    struct loader_opts o = {.format = f, .tensor = tensor};
    struct matrix m;
    struct vocab *v = (struct vocab *)&m; /* must be overwritten with NULL */
    char err[512] = "";
    int rc = loader_load(path, &o, &m, &v, err, sizeof(err));
    ck_assert_msg(rc == code, "%s: expected %s, got %s (%s)", path, core_errname(code),
                  core_errname(rc), err);
    ck_assert_ptr_null(m.data);
    ck_assert_int_eq(m.rows, 0);
    ck_assert_ptr_null(v);
    ck_assert_msg(strstr(err, path) != NULL, "message does not name the file: %s", err);
    for (; *needles != NULL; needles++)
        ck_assert_msg(strstr(err, *needles) != NULL, "message lacks \"%s\": %s", *needles, err);
}

#define expect_fail(path, f, code, ...)                                                    \
    do {                                                                                   \
        const char *const needles_[] = {__VA_ARGS__, NULL};                               \
        expect_fail_v(path, f, NULL, code, needles_);                                      \
    } while (0)

/* Writes text to dir/name and expects the load (format f) to fail. */
#define expect_text_fail(dir, name, text, f, code, ...)                                    \
    do {                                                                                   \
        char *p_ = testutil_write_file(dir, name, text, strlen(text));                     \
        expect_fail(p_, f, code, __VA_ARGS__);                                             \
        free(p_);                                                                          \
    } while (0)

/* Loads a fixture with the given format, failing the test on error. */
static inline void load_ok(const char *fixture, enum loader_format f, const char *tensor,
                           struct matrix *m, struct vocab **v)
{
    char *p = fixture_path(fixture);
    struct loader_opts o = {.format = f, .tensor = tensor};
    char err[512] = "";
    int rc = loader_load(p, &o, m, v, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "%s: %s (%s)", p, core_errname(rc), err);
    free(p);
}

#endif
