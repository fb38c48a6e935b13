/* test_loader.c - the loader front door (core/loader.c): format names,
 * format detection on files real writers made, dispatch, vocab files for
 * .npy and safetensors, snapshots left to their own module, and progress. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_loader_common.h"

START_TEST(format_names_round_trip)
{
    static const enum loader_format all[] = {
        LOADER_AUTO, LOADER_WORD2VEC, LOADER_WORD2VEC_BINARY, LOADER_GLOVE,
        LOADER_NPY,  LOADER_SAFETENSORS, LOADER_SNAPSHOT,
    };
    static const char *const names[] = {"auto", "word2vec", "word2vec_binary", "glove",
                                        "npy", "safetensors", "snapshot"};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        enum loader_format f = LOADER_SNAPSHOT;
        ck_assert_str_eq(loader_format_name(all[i]), names[i]);
        ck_assert(loader_format_parse(names[i], &f));
        ck_assert_int_eq(f, all[i]);
    }
    enum loader_format f = LOADER_NPY;
    ck_assert(!loader_format_parse("NPY", &f));
    ck_assert(!loader_format_parse("", &f));
    ck_assert(!loader_format_parse(NULL, &f));
    ck_assert(!loader_format_parse("word2vec ", &f));
    ck_assert_int_eq(f, LOADER_NPY);
    ck_assert_str_eq(loader_format_name((enum loader_format)99), "unknown");
}
END_TEST

static void expect_detect(const char *fixture, enum loader_format want)
{
    char *p = fixture_path(fixture);
    enum loader_format f = LOADER_AUTO;
    char err[256] = "";
    int rc = loader_detect(p, &f, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "%s: %s", p, err);
    ck_assert_msg(f == want, "%s: detected %s, want %s", p, loader_format_name(f),
                  loader_format_name(want));
    free(p);
}

START_TEST(detects_each_writer)
{
    expect_detect(LFIX("w2v.txt"), LOADER_WORD2VEC);
    expect_detect(LFIX("fasttext.vec"), LOADER_WORD2VEC);
    expect_detect(LFIX("w2v.bin"), LOADER_WORD2VEC_BINARY);
    expect_detect(LFIX("w2v_nl.bin"), LOADER_WORD2VEC_BINARY);
    expect_detect(LFIX("glove.txt"), LOADER_GLOVE);
    expect_detect(LFIX("f32.npy"), LOADER_NPY);
    expect_detect(LFIX("f16.npy"), LOADER_NPY);
    expect_detect(LFIX("f32_v3.npy"), LOADER_NPY);
    expect_detect(LFIX("st_one.safetensors"), LOADER_SAFETENSORS);
    expect_detect(LFIX("st_multi.safetensors"), LOADER_SAFETENSORS);
    expect_detect("loaders", LOADER_SNAPSHOT);
}
END_TEST

static enum loader_format detect_text(const char *dir, const void *data, size_t n)
{
    char *p = testutil_write_file(dir, "d", data, n);
    enum loader_format f = LOADER_AUTO;
    char err[256] = "";
    ck_assert_msg(loader_detect(p, &f, err, sizeof(err)) == CORE_OK, "%s", err);
    free(p);
    return f;
}

START_TEST(detects_edge_layouts)
{
    char *dir = testutil_tmpdir();
    /* text rows holding nan/inf are still text (and then fail as non-finite) */
    ck_assert_int_eq(detect_text(dir, "2 3\na nan 1 2\n", 14), LOADER_WORD2VEC);
    ck_assert_int_eq(detect_text(dir, "2 3\r\na 1 2 3\r\n", 14), LOADER_WORD2VEC);
    ck_assert_int_eq(detect_text(dir, "2 3", 3), LOADER_WORD2VEC);
    /* a glove line whose token is a number is not a header */
    ck_assert_int_eq(detect_text(dir, "2 3 4\n5 6 7\n", 12), LOADER_GLOVE);
    ck_assert_int_eq(detect_text(dir, "1 2\na \x00\x00\x80\x3f\x00\x00\x00\x40", 14),
                     LOADER_WORD2VEC_BINARY);
    /* safetensors needs its length to fit the file */
    ck_assert_int_eq(detect_text(dir, "\x02\x00\x00\x00\x00\x00\x00\x00{}", 10),
                     LOADER_SAFETENSORS);
    ck_assert_int_eq(detect_text(dir, "\x09\x00\x00\x00\x00\x00\x00\x00{}", 10), LOADER_GLOVE);
    /* the name speaks when the content has no magic: the reader then says why */
    char *p = testutil_write_file(dir, "junk.npy", "hello 1 2\n", 10);
    expect_fail(p, LOADER_AUTO, CORE_EFORMAT, "not a .npy file");
    free(p);
    p = testutil_write_file(dir, "junk.safetensors", "hello 1 2\n", 10);
    expect_fail(p, LOADER_AUTO, CORE_EFORMAT, "header length");
    free(p);
    p = testutil_write_file(dir, "empty", "", 0);
    enum loader_format f;
    char err[256] = "";
    ck_assert_int_eq(loader_detect(p, &f, err, sizeof(err)), CORE_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "empty"));
    free(p);
    ck_assert_int_eq(loader_detect("/no/such/file", &f, err, sizeof(err)), CORE_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err, "/no/such/file"));
    testutil_rmtree(dir);
}
END_TEST

START_TEST(snapshots_are_not_loaded_here)
{
    char *dir = testutil_tmpdir();
    expect_fail(dir, LOADER_AUTO, CORE_EUNSUPPORTED, "snapshot");
    expect_fail(dir, LOADER_SNAPSHOT, CORE_EUNSUPPORTED, "snapshot");
    /* a directory given as a file format */
    expect_fail(dir, LOADER_NPY, CORE_EINVAL, "not a regular file");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(null_opts_mean_auto)
{
    char *p = fixture_path(LFIX("w2v.bin"));
    struct matrix m;
    struct vocab *v;
    char err[256];
    ck_assert_int_eq(loader_load(p, NULL, &m, &v, err, sizeof(err)), CORE_OK);
    expect_matrix(&m, LFIX("w2v.f32"), 40, 24);
    ck_assert_int_eq(vocab_size(v), 40);
    matrix_deinit(&m);
    vocab_free(v);
    free(p);
}
END_TEST

/* A vocab file of n tokens "t0".."t<n-1>" in dir. */
static char *write_vocab(const char *dir, int n)
{
    char *text = malloc((size_t)n * 12 + 1);
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)sprintf(text + len, "t%d\n", i);
    char *p = testutil_write_file(dir, "vocab.txt", text, len);
    free(text);
    return p;
}

START_TEST(vocab_files_for_dense_formats)
{
    char *dir = testutil_tmpdir();
    char *npy = fixture_path(LFIX("f32.npy"));
    char *st = fixture_path(LFIX("st_one.safetensors"));
    char *vp = write_vocab(dir, 37);
    struct loader_opts o = {.format = LOADER_AUTO, .vocab_path = vp};
    struct matrix m;
    struct vocab *v;
    char err[512] = "";
    ck_assert_msg(loader_load(npy, &o, &m, &v, err, sizeof(err)) == CORE_OK, "%s", err);
    expect_matrix(&m, LFIX("f32.f32"), 37, 20);
    ck_assert_int_eq(vocab_size(v), 37);
    ck_assert_int_eq(vocab_find(v, "t36", 3), 36);
    matrix_deinit(&m);
    vocab_free(v);
    /* 37 tokens for a 12-row tensor */
    ck_assert_int_eq(loader_load(st, &o, &m, &v, err, sizeof(err)), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "37 tokens"));
    ck_assert_ptr_nonnull(strstr(err, "12 rows"));
    ck_assert_ptr_null(m.data);
    ck_assert_ptr_null(v);
    free(vp);
    vp = write_vocab(dir, 12);
    o.vocab_path = vp;
    ck_assert_msg(loader_load(st, &o, &m, &v, err, sizeof(err)) == CORE_OK, "%s", err);
    ck_assert_int_eq(vocab_size(v), 12);
    matrix_deinit(&m);
    vocab_free(v);
    /* files with their own tokens refuse a second vocabulary */
    char *w2v = fixture_path(LFIX("w2v.txt"));
    ck_assert_int_eq(loader_load(w2v, &o, &m, &v, err, sizeof(err)), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "carries its own tokens"));
    ck_assert_ptr_null(v);
    /* a broken vocab file is reported as such */
    char *bad = testutil_write_file(dir, "bad.txt", "a\na\n", 4);
    o.vocab_path = bad;
    ck_assert_int_ne(loader_load(npy, &o, &m, &v, err, sizeof(err)), CORE_OK);
    ck_assert_ptr_nonnull(strstr(err, "bad.txt"));
    ck_assert_ptr_null(m.data);
    ck_assert_ptr_null(v);
    free(bad);
    free(w2v);
    free(vp);
    free(npy);
    free(st);
    testutil_rmtree(dir);
}
END_TEST

struct progress_log {
    int calls;
    uint64_t last_done, total;
    int backwards;
};

static void on_progress(void *ud, uint64_t done, uint64_t total)
{
    struct progress_log *l = ud;
    if (done < l->last_done)
        l->backwards++;
    l->calls++;
    l->last_done = done;
    l->total = total;
}

/* A 72 MB float32 .npy crosses the 64 MB report interval once. */
START_TEST(progress_during_a_long_load)
{
    char *dir = testutil_tmpdir();
    struct matrix big;
    ck_assert_int_eq(matrix_init(&big, 147456, 128), CORE_OK); /* 72 MiB */
    for (int64_t i = 0; i < big.rows; i += 997)
        matrix_row(&big, i)[i % 128] = (float)i;
    char *p = malloc(strlen(dir) + 16);
    sprintf(p, "%s/big.npy", dir);
    FILE *f = fopen(p, "wb");
    ck_assert_int_eq(npy_write_fd(fileno(f), big.data, big.rows, big.dim, big.stride), CORE_OK);
    fclose(f);
    struct progress_log log = {0};
    struct loader_opts o = {.format = LOADER_AUTO, .progress = on_progress, .progress_ud = &log};
    struct matrix m;
    struct vocab *v;
    char err[256];
    ck_assert_int_eq(loader_load(p, &o, &m, &v, err, sizeof(err)), CORE_OK);
    ck_assert_int_eq(memcmp(m.data, big.data, big.bytes), 0);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_int_ge(log.calls, 2);
    ck_assert_int_eq(log.backwards, 0);
    ck_assert_uint_eq(log.last_done, (uint64_t)st.st_size);
    ck_assert_uint_eq(log.total, (uint64_t)st.st_size);
    matrix_deinit(&m);
    matrix_deinit(&big);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

static Suite *loader_suite(void)
{
    Suite *s = suite_create("loader");
    TCase *tc = tcase_create("front");
    tcase_add_test(tc, format_names_round_trip);
    tcase_add_test(tc, detects_each_writer);
    tcase_add_test(tc, detects_edge_layouts);
    tcase_add_test(tc, snapshots_are_not_loaded_here);
    tcase_add_test(tc, null_opts_mean_auto);
    tcase_add_test(tc, vocab_files_for_dense_formats);
    tcase_add_test(tc, progress_during_a_long_load);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(loader_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
