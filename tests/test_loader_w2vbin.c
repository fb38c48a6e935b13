/* test_loader_w2vbin.c - word2vec binary files (core/loader_w2vbin.c):
 * gensim's layout (no newline after rows) and word2vec.c's (a newline after
 * each row) load to numpy's exact values, and truncated, oversized,
 * duplicated, non-finite and trailing-garbage files fail naming the byte
 * offset. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_loader_common.h"

START_TEST(gensim_binary_loads_exactly)
{
    struct matrix m;
    struct vocab *v;
    load_ok(LFIX("w2v.bin"), LOADER_AUTO, NULL, &m, &v);
    expect_matrix(&m, LFIX("w2v.f32"), 40, 24);
    expect_tokens(v, LFIX("w2v.tokens.txt"));
    matrix_deinit(&m);
    vocab_free(v);
    load_ok(LFIX("w2v.bin"), LOADER_WORD2VEC_BINARY, NULL, &m, &v);
    expect_matrix(&m, LFIX("w2v.f32"), 40, 24);
    matrix_deinit(&m);
    vocab_free(v);
}
END_TEST

START_TEST(word2vec_c_layout_loads_exactly)
{
    struct matrix m;
    struct vocab *v;
    load_ok(LFIX("w2v_nl.bin"), LOADER_AUTO, NULL, &m, &v);
    expect_matrix(&m, LFIX("w2v.f32"), 40, 24);
    expect_tokens(v, LFIX("w2v.tokens.txt"));
    matrix_deinit(&m);
    vocab_free(v);
}
END_TEST

/* ---- hand-built files --------------------------------------------------- */

struct bin {
    char *data;
    size_t len;
};

static void put(struct bin *b, const void *p, size_t n)
{
    b->data = realloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_str(struct bin *b, const char *s)
{
    put(b, s, strlen(s));
}

/* "tok " + dim floats; values[k] = base + k */
static void put_row(struct bin *b, const char *tok, int dim, float base, bool newline)
{
    put_str(b, tok);
    put_str(b, " ");
    for (int k = 0; k < dim; k++) {
        float f = base + (float)k;
        put(b, &f, 4);
    }
    if (newline)
        put_str(b, "\n");
}

static char *write_bin(const char *dir, struct bin *b)
{
    char *p = testutil_write_file(dir, "v.bin", b->data, b->len);
    free(b->data);
    b->data = NULL;
    b->len = 0;
    return p;
}

static void expect_bin_fail(const char *dir, struct bin *b, int code, const char *n1,
                            const char *n2)
{
    char *p = write_bin(dir, b);
    const char *const needles[] = {n1, n2, NULL};
    expect_fail_v(p, LOADER_WORD2VEC_BINARY, NULL, code, needles);
    free(p);
}

START_TEST(small_file_values_and_trailing_newline)
{
    char *dir = testutil_tmpdir();
    struct bin b = {0};
    put_str(&b, "2 3\n");
    put_row(&b, "x", 3, 1.0f, false);
    put_row(&b, "y\xc3\xbf", 3, -5.0f, false);
    put_str(&b, "\n");
    char *p = write_bin(dir, &b);
    struct matrix m;
    struct vocab *v;
    char err[256];
    struct loader_opts o = {.format = LOADER_AUTO};
    ck_assert_msg(loader_load(p, &o, &m, &v, err, sizeof(err)) == CORE_OK, "%s", err);
    ck_assert_int_eq(m.rows, 2);
    ck_assert(matrix_row(&m, 0)[2] == 3.0f);
    ck_assert(matrix_row(&m, 1)[0] == -5.0f);
    ck_assert_int_eq(vocab_find(v, "y\xc3\xbf", 3), 1);
    matrix_deinit(&m);
    vocab_free(v);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(truncated_files)
{
    char *dir = testutil_tmpdir();
    struct bin b = {0};
    /* header 4 bytes; rows of 5 + 12 bytes at 4, 21, 38; row 2's floats at
     * 43; long enough tokens that the header's size check still passes */
    put_str(&b, "3 3\n");
    put_row(&b, "aaaa", 3, 0, false);
    put_row(&b, "bbbb", 3, 0, false);
    put_row(&b, "cccc", 3, 0, false);
    b.len -= 5;
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 43: row 2 needs 12 bytes", "ends after 7");
    /* rows of 21 bytes: the third token starts at 46 and is cut */
    put_str(&b, "3 3\n");
    put_row(&b, "aaaaaaaa", 3, 0, false);
    put_row(&b, "bbbbbbbb", 3, 0, false);
    put_str(&b, "cc");
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 46: row 2", "ends inside the token");
    /* word2vec.c layout, rows of 22 bytes, one row missing */
    put_str(&b, "3 3\n");
    put_row(&b, "aaaaaaaa", 3, 0, true);
    put_row(&b, "bbbbbbbb", 3, 0, true);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 48", "file ends after 2 rows");
    /* so short that the header alone proves it */
    put_str(&b, "3 3\n");
    put_row(&b, "a", 3, 0, false);
    put_row(&b, "b", 3, 0, false);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 0", "truncated file or wrong header");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(bad_headers)
{
    char *dir = testutil_tmpdir();
    struct bin b = {0};
    put_str(&b, "1000000 300\n");
    put_row(&b, "a", 300, 0, false);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 0", "more than the");
    put_str(&b, "0 3\n");
    put_row(&b, "a", 3, 0, false);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 0", "must be >= 1");
    put_str(&b, "2 -3\n");
    put_row(&b, "a", 3, 0, false);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 0", "must be >= 1");
    put_str(&b, "two 3\n");
    put_row(&b, "a", 3, 0, false);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 0", "expected a header");
    put_str(&b, "");
    expect_bin_fail(dir, &b, CORE_EFORMAT, "empty", NULL);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(bad_rows)
{
    char *dir = testutil_tmpdir();
    struct bin b = {0};
    /* duplicated token */
    put_str(&b, "3 2\n");
    put_row(&b, "a", 2, 0, false);
    put_row(&b, "b", 2, 0, false);
    put_row(&b, "a", 2, 0, false);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 24: row 2: duplicated token \"a\"",
                    "first in row 0");
    /* NaN as row 1's second value: row 1 floats at 4 + 10 + 2 = 16, value 2 at 20 */
    put_str(&b, "2 2\n");
    put_row(&b, "a", 2, 0, false);
    put_str(&b, "b ");
    float vals[2] = {1.0f, NAN};
    put(&b, vals, 8);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 20: row 1, value 2 is not finite", NULL);
    put_str(&b, "1 2\n");
    put_str(&b, "a ");
    float inf[2] = {INFINITY, 1.0f};
    put(&b, inf, 8);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 6: row 0, value 1 is not finite", NULL);
    /* data after the announced rows */
    put_str(&b, "1 2\n");
    put_row(&b, "a", 2, 0, true);
    put_row(&b, "b", 2, 0, true);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 15", "data after the 1 rows");
    /* a token with no space within the limit */
    put_str(&b, "1 2\n");
    char *tok = malloc(6000);
    memset(tok, 'k', 6000);
    put(&b, tok, 6000);
    free(tok);
    put_str(&b, " ");
    put_row(&b, "", 2, 0, false);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 4: row 0", "no space ending the token");
    /* an empty token */
    put_str(&b, "1 2\n");
    put_row(&b, "", 2, 0, true);
    expect_bin_fail(dir, &b, CORE_EFORMAT, "offset 4: row 0", "empty");
    testutil_rmtree(dir);
}
END_TEST

static Suite *loader_w2vbin_suite(void)
{
    Suite *s = suite_create("loader_w2vbin");
    TCase *tc = tcase_create("files");
    tcase_add_test(tc, gensim_binary_loads_exactly);
    tcase_add_test(tc, word2vec_c_layout_loads_exactly);
    tcase_add_test(tc, small_file_values_and_trailing_newline);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, truncated_files);
    tcase_add_test(tc, bad_headers);
    tcase_add_test(tc, bad_rows);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(loader_w2vbin_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
