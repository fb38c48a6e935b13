/* test_loader_npy.c - numpy .npy files (core/loader_npy.c) and the float
 * conversions: float32/float64/float16, big-endian and format versions 1-3
 * written by np.save load to numpy's exact float32 values; every half and
 * bfloat16 bit pattern converts exactly; npy_write_fd writes the very bytes
 * np.save writes; broken files fail naming the offset; npy_load_exact keeps
 * the non-finite values npy_load refuses. */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_loader_common.h"

static void expect_npy(const char *npy, const char *f32, int64_t rows, int64_t dim)
{
    struct matrix m;
    struct vocab *v;
    load_ok(npy, LOADER_AUTO, NULL, &m, &v);
    ck_assert_ptr_null(v);
    expect_matrix(&m, f32, rows, dim);
    matrix_deinit(&m);
    load_ok(npy, LOADER_NPY, NULL, &m, &v);
    expect_matrix(&m, f32, rows, dim);
    matrix_deinit(&m);
}

START_TEST(float32_padded_rows)
{
    expect_npy(LFIX("f32.npy"), LFIX("f32.f32"), 37, 20);
}
END_TEST

START_TEST(float32_rows_a_stride_wide)
{
    expect_npy(LFIX("f32_wide.npy"), LFIX("f32_wide.f32"), 40, 32);
}
END_TEST

START_TEST(float64_rounds_to_nearest)
{
    expect_npy(LFIX("f64.npy"), LFIX("f64.f32"), 25, 7);
}
END_TEST

START_TEST(float16_every_finite_positive_half)
{
    expect_npy(LFIX("f16.npy"), LFIX("f16.f32"), 1984, 16);
}
END_TEST

START_TEST(big_endian_and_versions_2_3)
{
    expect_npy(LFIX("f32_be.npy"), LFIX("f32_be.f32"), 10, 5);
    expect_npy(LFIX("f32_v2.npy"), LFIX("f32_v23.f32"), 6, 3);
    expect_npy(LFIX("f32_v3.npy"), LFIX("f32_v23.f32"), 6, 3);
}
END_TEST

/* ---- conversions, every bit pattern ------------------------------------- */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* IEEE binary16 by its definition, computed in double. */
static float half_reference(uint16_t h)
{
    int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31)
        v = m == 0 ? INFINITY : NAN;
    else if (e == 0)
        v = ldexp(m, -24);
    else
        v = ldexp(m + 1024, e - 25);
    return (float)(sign ? -v : v);
}

START_TEST(half_to_float_all_patterns)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float got = half_to_float((uint16_t)h);
        float ref = half_reference((uint16_t)h);
        if (((h >> 10) & 31) == 31 && (h & 1023) != 0) {
            /* NaN: keeps sign and payload */
            uint32_t want = (h & 0x8000u) << 16 | 0x7f800000u | (h & 1023u) << 13;
            if (bits_of(got) != want)
                ck_abort_msg("half 0x%04x: NaN 0x%08x, want 0x%08x", h, bits_of(got), want);
        } else if (bits_of(got) != bits_of(ref)) {
            ck_abort_msg("half 0x%04x: 0x%08x, want 0x%08x", h, bits_of(got), bits_of(ref));
        }
    }
    ck_assert(half_to_float(0x3c00) == 1.0f);
    ck_assert(half_to_float(0x7bff) == 65504.0f);
    ck_assert(half_to_float(0x0001) == 0x1p-24f);
    ck_assert(bits_of(half_to_float(0x8000)) == 0x80000000u);
}
END_TEST

/* bfloat16 by its definition: 8 exponent bits, 7 fraction bits. */
static float bf16_reference(uint16_t b)
{
    int sign = b >> 15, e = (b >> 7) & 255, m = b & 127;
    double v;
    if (e == 255)
        v = m == 0 ? INFINITY : NAN;
    else if (e == 0)
        v = ldexp(m, -133);
    else
        v = ldexp(m + 128, e - 134);
    return (float)(sign ? -v : v);
}

START_TEST(bf16_to_float_all_patterns)
{
    for (uint32_t b = 0; b < 65536; b++) {
        float got = bf16_to_float((uint16_t)b);
        float ref = bf16_reference((uint16_t)b);
        if (((b >> 7) & 255) == 255 && (b & 127) != 0) {
            if (bits_of(got) != b << 16)
                ck_abort_msg("bf16 0x%04x: NaN 0x%08x", b, bits_of(got));
        } else if (bits_of(got) != bits_of(ref)) {
            ck_abort_msg("bf16 0x%04x: 0x%08x, want 0x%08x", b, bits_of(got), bits_of(ref));
        }
    }
    ck_assert(bf16_to_float(0x3f80) == 1.0f);
}
END_TEST

/* ---- writing ------------------------------------------------------------ */

/* Writes m with npy_write_fd; returns the file's path in dir. */
static char *write_npy(const char *dir, const char *name, const struct matrix *m)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(npy_write_fd(fd, m->data, m->rows, m->dim, m->stride), CORE_OK);
    ck_assert_int_eq(close(fd), 0);
    return p;
}

/* Written files are byte-for-byte what np.save wrote for the same array,
 * and load back to the same matrix. */
static void write_like_numpy(const char *npy, const char *f32, int64_t rows, int64_t dim)
{
    struct matrix m, back;
    struct vocab *v;
    load_ok(npy, LOADER_NPY, NULL, &m, &v);
    char *dir = testutil_tmpdir();
    char *p = write_npy(dir, "w.npy", &m);
    size_t a_len, b_len;
    char *fp = fixture_path(npy);
    char *a = testutil_read_file(fp, &a_len);
    char *b = testutil_read_file(p, &b_len);
    ck_assert_uint_eq(a_len, b_len);
    ck_assert_msg(memcmp(a, b, a_len) == 0, "%s differs from np.save's bytes", p);
    char err[256];
    struct loader_opts o = {.format = LOADER_AUTO};
    ck_assert_int_eq(loader_load(p, &o, &back, &v, err, sizeof(err)), CORE_OK);
    expect_matrix(&back, f32, rows, dim);
    matrix_deinit(&back);
    matrix_deinit(&m);
    free(a);
    free(b);
    free(fp);
    free(p);
    testutil_rmtree(dir);
}

START_TEST(write_matches_np_save)
{
    write_like_numpy(LFIX("f32.npy"), LFIX("f32.f32"), 37, 20);
    write_like_numpy(LFIX("f32_wide.npy"), LFIX("f32_wide.f32"), 40, 32);
}
END_TEST

START_TEST(write_bad_args_and_io_errors)
{
    float x[16] = {1};
    ck_assert_int_eq(npy_write_fd(-1, x, 1, 1, 16), CORE_EINVAL);
    ck_assert_int_eq(npy_write_fd(1, x, 1, 0, 16), CORE_EINVAL);
    ck_assert_int_eq(npy_write_fd(1, x, 1, 17, 16), CORE_EINVAL);
    ck_assert_int_eq(npy_write_fd(1, x, -1, 1, 16), CORE_EINVAL);
    int fd = open("/dev/null", O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(npy_write_fd(fd, x, 1, 1, 16), CORE_EIO);
    close(fd);
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

/* A version 1.0 file with the given dict text and data bytes. */
static char *make_npy(const char *dir, const char *dict, const void *data, size_t n)
{
    size_t dl = strlen(dict);
    size_t total = (10 + dl + 1 + 63) / 64 * 64;
    char *buf = malloc(total + n);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)((total - 10) & 0xff);
    buf[9] = (char)((total - 10) >> 8);
    memcpy(buf + 10, dict, dl);
    memset(buf + 10 + dl, ' ', total - 10 - dl);
    buf[total - 1] = '\n';
    memcpy(buf + total, data, n);
    char *p = testutil_write_file(dir, "e.npy", buf, total + n);
    free(buf);
    return p;
}

#define expect_npy_fail(dir, dict, data, n, code, ...)                                     \
    do {                                                                                   \
        char *p_ = make_npy(dir, dict, data, n);                                           \
        expect_fail(p_, LOADER_AUTO, code, __VA_ARGS__);                                   \
        free(p_);                                                                          \
    } while (0)

/* Raw bytes (NULs included) as an .npy file, read as format npy. */
#define expect_bytes_fail(dir, lit, code, ...)                                             \
    do {                                                                                   \
        char *p_ = testutil_write_file(dir, "m.npy", lit, sizeof(lit) - 1);                \
        expect_fail(p_, LOADER_NPY, code, __VA_ARGS__);                                    \
        free(p_);                                                                          \
    } while (0)

START_TEST(refused_arrays)
{
    char *p = fixture_path(LFIX("err_fortran.npy"));
    expect_fail(p, LOADER_AUTO, CORE_EUNSUPPORTED, "fortran_order is True");
    free(p);
    p = fixture_path(LFIX("err_3d.npy"));
    expect_fail(p, LOADER_AUTO, CORE_EUNSUPPORTED, "3-D");
    free(p);
    p = fixture_path(LFIX("err_1d.npy"));
    expect_fail(p, LOADER_NPY, CORE_EUNSUPPORTED, "1-D");
    free(p);
    p = fixture_path(LFIX("err_int32.npy"));
    expect_fail(p, LOADER_AUTO, CORE_EUNSUPPORTED, "'<i4'", "not supported");
    free(p);
}
END_TEST

START_TEST(broken_headers)
{
    char *dir = testutil_tmpdir();
    float d[6] = {1, 2, 3, 4, 5, 6};
    expect_bytes_fail(dir, "\x93NUMPX\x01\x00\x10\x00{}", CORE_EFORMAT, "offset 0", "magic");
    expect_bytes_fail(dir, "\x93NUMPY\x01\x00\x50\x00{'descr': '<f4'", CORE_EFORMAT,
                      "offset 8", "header length 80 runs past the end");
    expect_bytes_fail(dir, "\x93NUMPY\x04\x00\x10\x00\x00\x00{}", CORE_EUNSUPPORTED,
                      "version 4.0");
    expect_bytes_fail(dir, "\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", CORE_EFORMAT,
                      "header length 2147483647 runs past the end");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1, }",
                    d, sizeof(d), CORE_EFORMAT, "header dict", "unexpected or repeated key");
    expect_npy_fail(dir, "{'descr': '<f4', 'descr': '<f4', 'shape': (2, 3), }", d, sizeof(d),
                    CORE_EFORMAT, "unexpected or repeated key");
    expect_npy_fail(dir, "{'descr': '<f4', 'shape': (2, 3), }", d, sizeof(d), CORE_EFORMAT,
                    "needs 'descr', 'fortran_order' and 'shape'");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", d,
                    sizeof(d), CORE_EFORMAT, "offset 44", "not True or False");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", d,
                    sizeof(d), CORE_EFORMAT, "'shape' is not a tuple");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk", d,
                    sizeof(d), CORE_EFORMAT, "bytes after the closing");
    expect_npy_fail(dir, "['descr']", d, sizeof(d), CORE_EFORMAT, "offset 10",
                    "does not start with '{'");
    expect_npy_fail(dir, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
                    d, sizeof(d), CORE_EFORMAT, "structured");
    expect_npy_fail(dir, "{'descr': '>i8', 'fortran_order': False, 'shape': (2, 3), }", d,
                    sizeof(d), CORE_EUNSUPPORTED, "'>i8'");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", d, 0,
                    CORE_EFORMAT, "empty");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(short_data_and_bad_values)
{
    char *dir = testutil_tmpdir();
    float d[6] = {1, 2, 3, 4, 5, 6};
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d, 20,
                    CORE_EFORMAT, "offset 128", "data shorter than shape (2, 3)", "20 bytes");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 3), }",
                    d, 24, CORE_EFORMAT, "data shorter");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': "
                         "(4611686018427387904, 3), }", d, 24, CORE_ETOOBIG, "more than");
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': "
                         "(2, 4611686018427387904), }", d, 24, CORE_EFORMAT, "data shorter");
    /* data starts at 128; [1, 2] lives at 128 + (1 * 3 + 2) * 4 = 148 */
    d[5] = NAN;
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", d,
                    sizeof(d), CORE_EFORMAT, "offset 148", "element [1, 2] is not finite");
    /* rows a stride wide take the direct path: same check */
    float w[32] = {0};
    w[17] = -INFINITY;
    expect_npy_fail(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 16), }", w,
                    sizeof(w), CORE_EFORMAT, "offset 196", "element [1, 1] is not finite");
    double big[2] = {1.0, 1e300};
    expect_npy_fail(dir, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }", big,
                    sizeof(big), CORE_EFORMAT, "offset 136", "element [0, 1] is not finite");
    uint16_t h[2] = {0x3c00, 0x7c00};
    expect_npy_fail(dir, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }", h,
                    sizeof(h), CORE_EFORMAT, "offset 130", "element [0, 1] is not finite");
    testutil_rmtree(dir);
    /* numpy's own file cut short */
    char *p = fixture_path(LFIX("f32.npy"));
    size_t len;
    char *bytes = testutil_read_file(p, &len);
    free(p);
    dir = testutil_tmpdir();
    p = testutil_write_file(dir, "cut.npy", bytes, len - 4);
    expect_fail(p, LOADER_AUTO, CORE_EFORMAT, "data shorter than shape (37, 20)");
    free(p);
    free(bytes);
    testutil_rmtree(dir);
}
END_TEST

/* npy_load_exact, the snapshots' reader, keeps what npy_load refuses, on
 * every path: rows a stride wide (read straight in), padded rows and
 * byte-swapped data (through the bounce buffer), float16 (converted). */
static void expect_exact(const char *dir, const char *dict, const void *data, size_t n,
                         const uint32_t *want, int64_t rows, int64_t dim)
{
    char *p = make_npy(dir, dict, data, n);
    struct matrix m;
    char err[256] = "";
    ck_assert_msg(npy_load_exact(p, NULL, &m, err, sizeof(err)) == CORE_OK, "%s", err);
    ck_assert_int_eq(m.rows, rows);
    ck_assert_int_eq(m.dim, dim);
    for (int64_t i = 0; i < rows * dim; i++)
        ck_assert_msg(bits_of(matrix_row(&m, i / dim)[i % dim]) == want[i],
                      "%s: element %lld: %08x, want %08x", dict, (long long)i,
                      bits_of(matrix_row(&m, i / dim)[i % dim]), want[i]);
    matrix_deinit(&m);
    struct loader_opts o = {.format = LOADER_NPY};
    ck_assert_int_eq(npy_load(p, &o, &m, err, sizeof(err)), CORE_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "is not finite"));
    free(p);
}

START_TEST(exact_keeps_every_bit_pattern)
{
    static const uint32_t odd[8] = {0x7fc00001u, 0xffa00badu, 0x7f800000u, 0xff800000u,
                                    0x80000000u, 0x00000001u, 0x807fffffu, 0x3f800000u};
    char *dir = testutil_tmpdir();
    uint32_t wide[32], want_wide[32];
    for (int i = 0; i < 32; i++)
        wide[i] = want_wide[i] = odd[(i * 3) % 8];
    expect_exact(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 16), }", wide,
                 sizeof(wide), want_wide, 2, 16);
    expect_exact(dir, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }", odd,
                 sizeof(odd), odd, 2, 4);
    uint32_t swapped[8];
    for (int i = 0; i < 8; i++)
        swapped[i] = __builtin_bswap32(odd[i]);
    expect_exact(dir, "{'descr': '>f4', 'fortran_order': False, 'shape': (4, 2), }", swapped,
                 sizeof(swapped), odd, 4, 2);
    /* half NaN payloads widen as the bits say: mantissa << 13 */
    static const uint16_t h[4] = {0x7c00, 0xfc00, 0x7e01, 0x8000};
    static const uint32_t want_h[4] = {0x7f800000u, 0xff800000u, 0x7fc02000u, 0x80000000u};
    expect_exact(dir, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 4), }", h,
                 sizeof(h), want_h, 1, 4);
    testutil_rmtree(dir);
}
END_TEST

static Suite *loader_npy_suite(void)
{
    Suite *s = suite_create("loader_npy");
    TCase *tc = tcase_create("read");
    tcase_add_test(tc, float32_padded_rows);
    tcase_add_test(tc, float32_rows_a_stride_wide);
    tcase_add_test(tc, float64_rounds_to_nearest);
    tcase_add_test(tc, float16_every_finite_positive_half);
    tcase_add_test(tc, big_endian_and_versions_2_3);
    tcase_add_test(tc, exact_keeps_every_bit_pattern);
    suite_add_tcase(s, tc);
    tc = tcase_create("convert");
    tcase_add_test(tc, half_to_float_all_patterns);
    tcase_add_test(tc, bf16_to_float_all_patterns);
    suite_add_tcase(s, tc);
    tc = tcase_create("write");
    tcase_add_test(tc, write_matches_np_save);
    tcase_add_test(tc, write_bad_args_and_io_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, refused_arrays);
    tcase_add_test(tc, broken_headers);
    tcase_add_test(tc, short_data_and_bad_values);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(loader_npy_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
