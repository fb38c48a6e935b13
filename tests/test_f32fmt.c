/* test_f32fmt.c - the float32 formatter: expected strings, the layout rule,
 * and the reference judge of tests/f32fmt_ref.h (strtof round trip, no
 * shorter decimal, no closer one as short) on edge and random patterns, plus
 * agreement with numpy's shortest digits (fixture from
 * scripts/gen_f32fmt_fixture.py). bench/f32fmt_verify.c runs the same judge
 * on all 2^32 patterns. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "f32fmt.h"
#include "f32fmt_ref.h"
#include "testutil.h"

static float from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* f32fmt into a canary-filled buffer; fails when it writes past F32FMT_MAX
 * bytes or returns a length that leaves no room for a NUL. */
static size_t format_checked(float f, char out[F32FMT_MAX + 8])
{
    memset(out, 0x5a, F32FMT_MAX + 8);
    size_t n = f32fmt(f, out);
    ck_assert_uint_lt(n, F32FMT_MAX);
    for (int i = F32FMT_MAX; i < F32FMT_MAX + 8; i++)
        ck_assert_msg(out[i] == 0x5a, "f32fmt wrote past F32FMT_MAX at byte %d", i);
    out[n] = '\0';
    return n;
}

static void assert_judged_ok(uint32_t bits)
{
    char out[F32FMT_MAX + 8];
    float f = from_bits(bits);
    size_t n = format_checked(f, out);
    enum f32ref_verdict v = f32ref_check(f, out, n);
    ck_assert_msg(v == F32REF_OK, "%08x -> \"%s\": %s", (unsigned)bits, out,
                  f32ref_verdict_name(v));
}

static const struct {
    float f;
    const char *text;
} expected[] = {
    {0.1f, "0.1"},
    {0.0f, "0.0"},
    {-0.0f, "-0.0"},
    {1.0f, "1.0"},
    {-2.5f, "-2.5"},
    {100.0f, "100.0"},
    {16777216.0f, "16777216.0"},
    {123456789.0f, "123456790.0"},
    {FLT_MAX, "3.4028235e+38"},
    {-FLT_MAX, "-3.4028235e+38"},
    {FLT_MIN, "1.1754944e-38"},
    {FLT_TRUE_MIN, "1e-45"},
    {-FLT_TRUE_MIN, "-1e-45"},
    {1.0f / 3.0f, "0.33333334"},
    {2.0f / 3.0f, "0.6666667"},
    {0.3f, "0.3"},
    {1e-3f, "0.001"},
    {1e-4f, "0.0001"},
    {1.5e-4f, "0.00015"},
    {1e-5f, "1e-05"},
    {1.5e-7f, "1.5e-07"},
    {1e15f, "1000000000000000.0"},
    {1e16f, "1e+16"},
    {1e30f, "1e+30"},
    {123.5f, "123.5"},
    {0.0009765625f, "0.0009765625"},
    {33554432.0f, "33554432.0"},
    {4194304.5f, "4194304.5"},
    {3.14159265f, "3.1415927"},
    /* The branch-free fraction layouts and their edges: nine digits with
     * trailing zeros (0.01 is 100000000e-10), the point after 7 digits,
     * whole numbers and the 1e-4 boundary next to them. */
    {0.01f, "0.01"},
    {-0.0123456789f, "-0.012345679"},
    {0.099999994f, "0.099999994"},
    {0.00012345f, "0.00012345"},
    {-1.25e-4f, "-0.000125"},
    {0.0009999999f, "0.0009999999"},
    {99999.99f, "99999.99"},
    {123456.79f, "123456.79"},
    {1234567.5f, "1234567.5"},
    {8388607.5f, "8388607.5"},
    {-9999999.0f, "-9999999.0"},
};

START_TEST(test_expected_strings)
{
    char out[F32FMT_MAX + 8];
    format_checked(expected[_i].f, out);
    ck_assert_str_eq(out, expected[_i].text);
}
END_TEST

START_TEST(test_bit_patterns)
{
    static const struct {
        uint32_t bits;
        const char *text;
    } cases[] = {
        {0x00000001, "1e-45"},         {0x00000002, "3e-45"},
        {0x00000007, "1e-44"},         {0x007fffff, "1.1754942e-38"},
        {0x00800000, "1.1754944e-38"}, {0x7f7fffff, "3.4028235e+38"},
        {0x7f800000, "null"},          {0xff800000, "null"},
        {0x7fc00000, "null"},          {0xffffffff, "null"},
        {0x4b7fffff, "16777215.0"},    {0x5a0e1bca, "1e+16"},
        {0x38d1b717, "0.0001"},        {0x38d1b716, "9.999999e-05"},
        {0x3727c5ac, "1e-05"},         {0x80000001, "-1e-45"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[F32FMT_MAX + 8];
        format_checked(from_bits(cases[i].bits), out);
        ck_assert_msg(strcmp(out, cases[i].text) == 0, "%08x -> \"%s\", want \"%s\"",
                      (unsigned)cases[i].bits, out, cases[i].text);
    }
}
END_TEST

/* Zeros, subnormals, every power of two with its neighbours, extremes and
 * the floats around each power of ten. */
START_TEST(test_edge_patterns_judged)
{
    for (uint32_t b = 0; b < 2000; b++)
        assert_judged_ok(b);
    for (uint32_t biased = 0; biased < 255; biased++) {
        uint32_t base = biased << 23;
        for (uint32_t sign = 0; sign < 2; sign++) {
            uint32_t s = sign << 31;
            assert_judged_ok(s | base);
            assert_judged_ok(s | (base + 1));
            assert_judged_ok(s | (base | 0x7fffff));
            assert_judged_ok(s | (base + 0x400000));
        }
    }
    for (int p = -45; p <= 38; p++) {
        float f = (float)pow(10.0, p);
        assert_judged_ok(f32ref_bits(nextafterf(f, 0)));
        assert_judged_ok(f32ref_bits(f));
        assert_judged_ok(f32ref_bits(nextafterf(f, INFINITY)));
    }
    assert_judged_ok(0xff800000); /* -inf prints null */
    assert_judged_ok(0x7fc00001); /* NaN prints null */
}
END_TEST

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

START_TEST(test_random_patterns_judged)
{
    uint64_t s = 0x243f6a8885a308d3u;
    for (int i = 0; i < 4000; i++)
        assert_judged_ok((uint32_t)rng_next(&s));
}
END_TEST

/* Embedding-like values: many digits, exponents from -6 to 1. */
START_TEST(test_random_small_values_judged)
{
    uint64_t s = 0x13198a2e03707344u;
    for (int i = 0; i < 4000; i++) {
        double u = (double)(rng_next(&s) >> 11) / 9007199254740992.0;
        double mag = pow(10.0, -6.0 + 7.0 * u);
        float f = (float)((rng_next(&s) & 1) ? mag : -mag);
        assert_judged_ok(f32ref_bits(f));
    }
}
END_TEST

/* Plain text exactly when 1e-4 <= |x| < 1e16 as a decimal, as Python's
 * repr(); scientific exponents carry a sign and two or more digits. */
START_TEST(test_layout_rule)
{
    uint64_t s = 0x452821e638d01377u;
    for (int i = 0; i < 4000; i++) {
        uint32_t bits = (uint32_t)rng_next(&s);
        float f = from_bits(bits);
        if (!isfinite(f) || f == 0)
            continue;
        char out[F32FMT_MAX + 8];
        size_t n = format_checked(f, out);
        struct f32ref_number num;
        ck_assert(f32ref_parse(out, n, &num));
        int lead_exp = num.exp + num.ndigits - 1;
        const char *e = strchr(out, 'e');
        bool plain = lead_exp >= -4 && lead_exp < 16;
        ck_assert_msg(plain == (e == NULL), "%08x -> \"%s\"", (unsigned)bits, out);
        if (e != NULL) {
            ck_assert(e[1] == '+' || e[1] == '-');
            ck_assert_uint_ge(strlen(e + 2), 2);
            ck_assert_msg(strchr(out, '.') != NULL || num.ndigits == 1, "\"%s\"", out);
        } else {
            ck_assert_ptr_nonnull(strchr(out, '.')); /* "100.0", not "100" */
        }
    }
}
END_TEST

/* f32fmt_array writes exactly the f32fmt texts joined by commas, within
 * n * F32FMT_MAX bytes. */
START_TEST(test_array_matches_single)
{
    enum { N = 300 };
    static float v[N];
    uint64_t s = 0x082efa98ec4e6c89u;
    for (int i = 0; i < N; i++)
        v[i] = from_bits((uint32_t)rng_next(&s));
    const float special[] = {0.0f, -0.0f, 1.0f, 0.01f, 1e-5f, -1e30f, 123.5f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++)
        v[i * 7] = special[i];
    for (int i = 100; i < N; i++) /* embedding-like magnitudes */
        v[i] = (float)(((double)(rng_next(&s) >> 11) / 9007199254740992.0 - 0.5) * 0.2);

    static char got[N * F32FMT_MAX + 8], want[N * F32FMT_MAX];
    /* Odd and even counts, and rows from v + 1 too: f32fmt_array takes
     * floats in pairs, so each special value must land in both slots of a
     * pair and in the odd one at the end. */
    const size_t counts[] = {0, 1, 2, 3, 4, 5, 128, N - 1};
    for (size_t start = 0; start < 2; start++) {
        const float *row = v + start;
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            size_t n = counts[c];
            memset(got, 0x5a, sizeof got);
            size_t len = f32fmt_array(row, n, got);
            for (size_t i = n * F32FMT_MAX; i < n * F32FMT_MAX + 8; i++)
                ck_assert_msg(got[i] == 0x5a, "n=%zu: wrote past n * F32FMT_MAX at byte %zu", n,
                              i);
            size_t wlen = 0;
            for (size_t i = 0; i < n; i++) {
                if (i > 0)
                    want[wlen++] = ',';
                wlen += f32fmt(row[i], want + wlen);
            }
            ck_assert_uint_eq(len, wlen);
            ck_assert_msg(memcmp(got, want, len) == 0, "start=%zu n=%zu: \"%.*s\" != \"%.*s\"",
                          start, n, (int)len, got, (int)wlen, want);
        }
    }
}
END_TEST

/* The judge itself must reject wrong answers, or the tests above prove
 * nothing. */
START_TEST(test_reference_rejects)
{
    ck_assert_int_eq(f32ref_check(0.1f, "0.10000000149", 13), F32REF_LONGER);
    ck_assert_int_eq(f32ref_check(0.1f, "0.2", 3), F32REF_ROUNDTRIP);
    ck_assert_int_eq(f32ref_check(0.1f, ".1", 2), F32REF_SYNTAX);
    ck_assert_int_eq(f32ref_check(0.1f, "+0.1", 4), F32REF_SYNTAX);
    ck_assert_int_eq(f32ref_check(0.1f, "0.1e", 4), F32REF_SYNTAX);
    ck_assert_int_eq(f32ref_check(100.0f, "0100", 4), F32REF_SYNTAX);
    ck_assert_int_eq(f32ref_check(-0.0f, "0.0", 3), F32REF_ROUNDTRIP);
    ck_assert_int_eq(f32ref_check(INFINITY, "1e999", 5), F32REF_SYNTAX);
    ck_assert_int_eq(f32ref_check(1.0f, "null", 4), F32REF_SYNTAX);
    /* 8e-45 and 9e-45 both read back as the subnormal 6 * 2^-149 =
     * 8.4078e-45; 8 is closer. */
    ck_assert_int_eq(f32ref_check(from_bits(6), "9e-45", 5), F32REF_FARTHER);
    ck_assert_int_eq(f32ref_check(from_bits(6), "8e-45", 5), F32REF_OK);
    /* 0.33333334f: 0.33333333 reads back too but is farther. */
    ck_assert_int_eq(f32ref_check(1.0f / 3.0f, "0.33333333", 10), F32REF_FARTHER);
}
END_TEST

/* The exact interval model of f32fmt_ref.h against strtof: a decimal lies
 * in the interval of strtof(decimal) and in neither neighbour's. Integers
 * in [2^24, 2^27) hit interval ends exactly (ties to even, and the uneven
 * interval below a power of two); random decimals cover all exponents. */
static void assert_model_agrees(uint64_t digits, int exp)
{
    char text[48];
    snprintf(text, sizeof text, "%llue%d", (unsigned long long)digits, exp);
    float f = strtof(text, NULL);
    if (f == 0 || !isfinite(f))
        return;
    struct f32ref_interval own = f32ref_interval_of(f);
    struct f32ref_interval up = f32ref_interval_of(nextafterf(f, INFINITY));
    struct f32ref_interval down = f32ref_interval_of(nextafterf(f, 0));
    ck_assert_msg(f32ref_in(&own, digits, exp), "%s not in the interval of %a", text, (double)f);
    ck_assert_msg(!f32ref_in(&up, digits, exp), "%s in the interval above %a", text, (double)f);
    ck_assert_msg(!f32ref_in(&down, digits, exp), "%s in the interval below %a", text,
                  (double)f);
    ck_assert(f32ref_reads_back(f, false, digits, exp));
}

START_TEST(test_reference_model_matches_strtof)
{
    uint64_t s = 0xa4093822299f31d0u;
    for (uint64_t x = (1u << 24); x < (1u << 24) + 3000; x++)
        assert_model_agrees(x, 0);
    for (uint64_t x = (1u << 25) - 1500; x < (1u << 25) + 1500; x++)
        assert_model_agrees(x, 0);
    for (int i = 0; i < 20000; i++) {
        uint64_t digits = rng_next(&s) % 1000000000u + 1;
        int exp = (int)(rng_next(&s) % 100) - 55;
        assert_model_agrees(digits, exp);
    }
    /* The smallest subnormal's interval is open at half of it, 2^-150. */
    struct f32ref_interval tiny = f32ref_interval_of(from_bits(1));
    ck_assert(!f32ref_in(&tiny, 7006492321624085u, -61)); /* just below 2^-150 */
    ck_assert(f32ref_in(&tiny, 7006492321624086u, -61));  /* just above */
}
END_TEST

/* Same digits and decimal exponent as numpy's Dragon4 for every value in the
 * fixture. */
START_TEST(test_agrees_with_numpy)
{
    char *path = fixture_path("f32fmt_numpy.txt");
    FILE *fp = fopen(path, "r");
    ck_assert_msg(fp != NULL, "cannot open %s", path);
    unsigned bits;
    char digits[32];
    int exp10;
    int lines = 0;
    while (fscanf(fp, "%x %31s %d", &bits, digits, &exp10) == 3) {
        char out[F32FMT_MAX + 8];
        size_t n = format_checked(from_bits(bits), out);
        struct f32ref_number num;
        ck_assert_msg(f32ref_parse(out, n, &num), "\"%s\"", out);
        char ours[32];
        snprintf(ours, sizeof ours, "%llu", (unsigned long long)num.digits);
        int our_exp = num.digits == 0 ? 0 : num.exp + num.ndigits - 1;
        ck_assert_msg(strcmp(ours, digits) == 0 && our_exp == exp10,
                      "%08x: ours \"%s\", numpy %s e%d", bits, out, digits, exp10);
        lines++;
    }
    fclose(fp);
    free(path);
    ck_assert_int_gt(lines, 3000);
}
END_TEST

static Suite *f32fmt_suite(void)
{
    Suite *s = suite_create("f32fmt");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, test_expected_strings, 0, sizeof expected / sizeof expected[0]);
    tcase_add_test(tc, test_bit_patterns);
    tcase_add_test(tc, test_edge_patterns_judged);
    tcase_add_test(tc, test_random_patterns_judged);
    tcase_add_test(tc, test_random_small_values_judged);
    tcase_add_test(tc, test_layout_rule);
    tcase_add_test(tc, test_array_matches_single);
    tcase_add_test(tc, test_reference_rejects);
    tcase_add_test(tc, test_reference_model_matches_strtof);
    tcase_add_test(tc, test_agrees_with_numpy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(f32fmt_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
