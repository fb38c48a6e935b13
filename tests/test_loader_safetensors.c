/* test_loader_safetensors.c - safetensors files (core/loader_safetensors.c):
 * F32/F16/BF16 tensors load to the exact values numpy and torch hold, the
 * tensor is picked by name or as the only 2-D one, and broken headers
 * (length past EOF, bad JSON, offsets out of bounds or not matching
 * dtype * shape, unknown dtypes, missing names) fail with clear messages. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_loader_common.h"

static void expect_tensor(const char *file, const char *tensor, const char *f32, int64_t rows,
                          int64_t dim)
{
    struct matrix m;
    struct vocab *v;
    load_ok(file, LOADER_AUTO, tensor, &m, &v);
    ck_assert_ptr_null(v);
    expect_matrix(&m, f32, rows, dim);
    matrix_deinit(&m);
    load_ok(file, LOADER_SAFETENSORS, tensor, &m, &v);
    expect_matrix(&m, f32, rows, dim);
    matrix_deinit(&m);
}

START_TEST(the_only_2d_tensor_is_taken)
{
    expect_tensor(LFIX("st_one.safetensors"), NULL, LFIX("st_one.f32"), 12, 5);
    expect_tensor(LFIX("st_one.safetensors"), "emb.weight", LFIX("st_one.f32"), 12, 5);
}
END_TEST

START_TEST(named_tensors_of_each_dtype)
{
    expect_tensor(LFIX("st_multi.safetensors"), "a", LFIX("st_multi_a.f32"), 9, 6);
    expect_tensor(LFIX("st_multi.safetensors"), "b", LFIX("st_multi_b.f32"), 7, 4);
    expect_tensor(LFIX("st_multi.safetensors"), "c", LFIX("st_multi_c.f32"), 50, 8);
}
END_TEST

static void expect_pick_fail(const char *fixture, const char *tensor, int code, const char *n1,
                             const char *n2)
{
    char *p = fixture_path(fixture);
    const char *const needles[] = {n1, n2, NULL};
    expect_fail_v(p, LOADER_AUTO, tensor, code, needles);
    free(p);
}

START_TEST(picking_errors_list_the_candidates)
{
    expect_pick_fail(LFIX("st_multi.safetensors"), NULL, CORE_EINVAL, "3 2-D tensors",
                     "\"a\" (F32, 2-D), \"b\" (F16, 2-D), \"c\" (BF16, 2-D)");
    expect_pick_fail(LFIX("st_multi.safetensors"), "nope", CORE_ENOTFOUND,
                     "no tensor named \"nope\"", "\"ids\" (I32, 1-D)");
    expect_pick_fail(LFIX("st_multi.safetensors"), "ids", CORE_EUNSUPPORTED, "\"ids\"",
                     "1-D");
    expect_pick_fail(LFIX("st_one.safetensors"), "bias", CORE_EUNSUPPORTED, "\"bias\" is 1-D",
                     NULL);
}
END_TEST

/* ---- hand-made files ---------------------------------------------------- */

/* 8-byte length, the JSON, then n data bytes (counting 0.5, 1.5, ...). */
static char *make_st(const char *dir, const char *json, size_t n)
{
    size_t jl = strlen(json);
    char *buf = malloc(8 + jl + n + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (char)((uint64_t)jl >> (8 * i));
    memcpy(buf + 8, json, jl);
    for (size_t i = 0; i + 4 <= n; i += 4) {
        float f = 0.5f + (float)(i / 4);
        memcpy(buf + 8 + jl + i, &f, 4);
    }
    char *p = testutil_write_file(dir, "t.safetensors", buf, 8 + jl + n);
    free(buf);
    return p;
}

#define expect_st_fail(dir, json, n, tensor, code, ...)                                    \
    do {                                                                                   \
        char *p_ = make_st(dir, json, n);                                                  \
        const char *const needles_[] = {__VA_ARGS__, NULL};                               \
        expect_fail_v(p_, LOADER_SAFETENSORS, tensor, code, needles_);                     \
        free(p_);                                                                          \
    } while (0)

START_TEST(small_file_with_escapes_and_padding)
{
    char *dir = testutil_tmpdir();
    char *p = make_st(dir,
                      "{\"__metadata__\":{\"k\":\"v\",\"n\":\"\\u00e9\"},"
                      "\"w\\u00e9\\n\\ud83d\\ude42\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                      "\"data_offsets\":[0,24]}}    ",
                      24);
    struct loader_opts o = {.format = LOADER_AUTO, .tensor = "w\xc3\xa9\n\xf0\x9f\x99\x82"};
    struct matrix m;
    struct vocab *v;
    char err[512];
    ck_assert_msg(loader_load(p, &o, &m, &v, err, sizeof(err)) == CORE_OK, "%s", err);
    ck_assert_int_eq(m.rows, 2);
    ck_assert_int_eq(m.dim, 3);
    ck_assert(matrix_row(&m, 1)[2] == 5.5f);
    matrix_deinit(&m);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(header_length_and_size)
{
    char *dir = testutil_tmpdir();
    expect_text_fail(dir, "s.safetensors", "\x05", LOADER_SAFETENSORS, CORE_EFORMAT,
                     "offset 0", "too short");
    const char past[] = "\xff\x00\x00\x00\x00\x00\x00\x00{\"a\":1}";
    char *p = testutil_write_file(dir, "s.safetensors", past, sizeof(past) - 1);
    expect_fail(p, LOADER_SAFETENSORS, CORE_EFORMAT, "offset 0",
                "header length 255 runs past the end of the 15-byte file");
    free(p);
    const char huge[] = "\xff\xff\xff\xff\xff\xff\xff\xff{}";
    p = testutil_write_file(dir, "s.safetensors", huge, sizeof(huge) - 1);
    expect_fail(p, LOADER_SAFETENSORS, CORE_EFORMAT, "runs past the end");
    free(p);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(bad_json)
{
    char *dir = testutil_tmpdir();
    const char *ok_entry = "{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}";
    char json[512];
    expect_st_fail(dir, "[1,2]", 24, NULL, CORE_EFORMAT, "offset 8", "not a JSON object");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}", 24,
                   NULL, CORE_EFORMAT, "expected ',' or '}'");
    snprintf(json, sizeof(json), "{\"a\":%s} x", ok_entry);
    expect_st_fail(dir, json, 24, NULL, CORE_EFORMAT, "bytes after the header object");
    /* the second key starts at 8 + 5 + 51 + 1 */
    snprintf(json, sizeof(json), "{\"a\":%s,\"a\":%s}", ok_entry, ok_entry);
    expect_st_fail(dir, json, 24, NULL, CORE_EFORMAT, "offset 65", "duplicate key \"a\"");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", 24, NULL, CORE_EFORMAT,
                   "needs dtype, shape and data_offsets");
    expect_st_fail(dir,
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24],\"x\":1}}",
                   24, NULL, CORE_EFORMAT, "unknown or repeated key");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}",
                   24, NULL, CORE_EFORMAT, "non-negative integer");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24.0]}}",
                   24, NULL, CORE_EFORMAT, "not a fraction");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0]}}", 24,
                   NULL, CORE_EFORMAT, "[begin, end]");
    expect_st_fail(dir, "{\"a\\q\":{}}", 24, NULL, CORE_EFORMAT, "bad escape");
    expect_st_fail(dir, "{\"a\\ud800\":{}}", 24, NULL, CORE_EFORMAT, "surrogate");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\"", 24, NULL, CORE_EFORMAT, "header JSON");
    expect_st_fail(dir, "{\"__metadata__\":{\"k\":[[[[[[[[[[1]]]]]]]]]]},\"a\":1}", 24, NULL,
                   CORE_EFORMAT, "a tensor entry is not an object");
    expect_st_fail(dir, "{\"__metadata__\":[],\"a\":{}}", 24, NULL, CORE_EFORMAT,
                   "\"__metadata__\" is not an object");
    expect_st_fail(dir, "{\"__metadata__\":{\"k\":01}}", 24, NULL, CORE_EFORMAT, "bad number");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(bad_offsets_and_dtypes)
{
    char *dir = testutil_tmpdir();
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,28]}}", 24,
                   NULL, CORE_EFORMAT, "\"a\": data_offsets [0, 28] outside the 24 data bytes");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,4]}}", 24,
                   NULL, CORE_EFORMAT, "data_offsets [8, 4] outside");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
                   NULL, CORE_EFORMAT, "span 20 bytes but F32 times the shape is 24");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24,
                   NULL, CORE_EFORMAT, "span 24 bytes but F16 times the shape is 12");
    expect_st_fail(dir,
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                   "\"data_offsets\":[0,24]}}",
                   24, NULL, CORE_EFORMAT, "shape overflows");
    /* another tensor's broken offsets spoil the file too */
    expect_st_fail(dir,
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                   "\"b\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[24,25]}}",
                   24, "a", CORE_EFORMAT, "\"b\"", "outside the 24 data bytes");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"Q7\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24,
                   NULL, CORE_EFORMAT, "unknown dtype \"Q7\"");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"I32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24,
                   "a", CORE_EUNSUPPORTED, "dtype I32", "F32, F16, BF16");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]}}", 24,
                   NULL, CORE_EFORMAT, "is empty");
    expect_st_fail(dir, "{}", 0, NULL, CORE_ENOTFOUND, "no 2-D tensor", "no tensors");
    expect_st_fail(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]}}", 24,
                   NULL, CORE_ENOTFOUND, "no 2-D tensor", "\"a\" (F32, 1-D)");
    /* a NaN in the data: element [1, 0] at 8 + header + 12 */
    char *p = make_st(dir, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}",
                      24);
    size_t len;
    char *bytes = testutil_read_file(p, &len);
    memcpy(bytes + len - 12, "\x00\x00\xc0\x7f", 4);
    free(p);
    p = testutil_write_file(dir, "nan.safetensors", bytes, len);
    char want[64];
    snprintf(want, sizeof(want), "offset %zu: element [1, 0] is not finite", len - 12);
    expect_fail(p, LOADER_SAFETENSORS, CORE_EFORMAT, want);
    free(p);
    free(bytes);
    testutil_rmtree(dir);
}
END_TEST

static Suite *loader_safetensors_suite(void)
{
    Suite *s = suite_create("loader_safetensors");
    TCase *tc = tcase_create("read");
    tcase_add_test(tc, the_only_2d_tensor_is_taken);
    tcase_add_test(tc, named_tensors_of_each_dtype);
    tcase_add_test(tc, picking_errors_list_the_candidates);
    tcase_add_test(tc, small_file_with_escapes_and_padding);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, header_length_and_size);
    tcase_add_test(tc, bad_json);
    tcase_add_test(tc, bad_offsets_and_dtypes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(loader_safetensors_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
