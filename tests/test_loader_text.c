/* test_loader_text.c - word2vec text, fastText .vec and GloVe files
 * (core/loader_text.c): the decimal parser is bit-exact against strtof over
 * millions of strings, files written by gensim, glove.c's format and the
 * fastText CLI load to the exact float32 values numpy holds, and every
 * malformed file fails with a message naming the file and line. */
#include <check.h>
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader_internal.h"
#include "test_loader_common.h"

/* ---- the float parser against strtof ------------------------------------ */

static uint64_t rng_state = 0x853c49e6748fea9bull;

static uint64_t next_u64(void)
{
    /* splitmix64: deterministic, so a failure reproduces */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned below(unsigned n)
{
    return (unsigned)(next_u64() % n);
}

/* Parses s both ways; the value bits and the end must agree. Plain ifs in
 * front of the asserts: Check reports every passing assert to the parent
 * process, which over millions of strings costs minutes. */
static void same_as_strtof(const char *text)
{
    /* the parser may read LOADER_PARSE_PAD bytes past the NUL */
    char s[256 + LOADER_PARSE_PAD] = {0};
    if (strlen(text) >= 256)
        ck_abort_msg("test string too long");
    strcpy(s, text);
    char *end_ref;
    float ref = strtof(s, &end_ref);
    float got = 12345.0f;
    const char *end = loader_parse_f32(s, &got);
    if (end_ref == s) {
        if (end != NULL)
            ck_abort_msg("\"%s\": strtof reads nothing, we read %d chars", s, (int)(end - s));
        return;
    }
    if (end != end_ref)
        ck_abort_msg("\"%s\": end %d, strtof's %d", s, end ? (int)(end - s) : -1,
                     (int)(end_ref - s));
    uint32_t a, b;
    memcpy(&a, &got, 4);
    memcpy(&b, &ref, 4);
    if (a != b)
        ck_abort_msg("\"%s\": got %a (0x%08x), strtof %a (0x%08x)", s, (double)got, a,
                     (double)ref, b);
}

/* Random decimals: 1-22 digits, a point anywhere (or none), an optional
 * exponent, signs; covering the fast path's edges (19 digits, 2^53,
 * exponent +-22) and well past them. */
static void random_decimal(char *s)
{
    char *p = s;
    unsigned r = below(4);
    if (r == 0)
        *p++ = '-';
    else if (r == 1)
        *p++ = '+';
    unsigned nd = 1 + below(22);
    unsigned point = below(nd + 2); /* nd + 1: no point */
    for (unsigned i = 0; i < nd; i++) {
        if (i == point)
            *p++ = '.';
        *p++ = (char)('0' + (i == 0 && below(3) == 0 ? 0 : below(10)));
    }
    if (point == nd)
        *p++ = '.';
    if (below(2)) {
        *p++ = below(2) ? 'e' : 'E';
        unsigned es = below(3);
        if (es == 1)
            *p++ = '-';
        else if (es == 2)
            *p++ = '+';
        p += sprintf(p, "%u", below(3) == 0 ? below(60) : below(25));
    }
    *p = '\0';
}

START_TEST(parse_random_decimals_match_strtof)
{
    char s[64];
    for (int i = 0; i < 1000000; i++) {
        random_decimal(s);
        same_as_strtof(s);
    }
}
END_TEST

/* Random float32 bit patterns printed the ways real writers print them. */
START_TEST(parse_printed_floats_match_strtof)
{
    char s[128];
    for (int i = 0; i < 250000; i++) {
        uint32_t bits = (uint32_t)next_u64();
        if ((bits & 0x7f800000u) == 0x7f800000u)
            continue;
        float f;
        memcpy(&f, &bits, 4);
        /* precisions as "%.9g" ... "%.5g", "%.17g", "%f" and "%.6e" print */
        static const int prec[] = {9, 8, 7, 6, 5, 17};
        for (size_t k = 0; k < sizeof(prec) / sizeof(prec[0]); k++) {
            snprintf(s, sizeof(s), "%.*g", prec[k], (double)f);
            same_as_strtof(s);
        }
        snprintf(s, sizeof(s), "%f", (double)f);
        same_as_strtof(s);
        snprintf(s, sizeof(s), "%.6e", (double)f);
        same_as_strtof(s);
        /* the shortest-ish form must round-trip */
        memset(s, 0, sizeof(s));
        snprintf(s, sizeof(s) - LOADER_PARSE_PAD, "%.9g", (double)f);
        float back;
        if (loader_parse_f32(s, &back) == NULL || memcmp(&back, &f, 4) != 0)
            ck_abort_msg("\"%s\" does not round-trip", s);
    }
}
END_TEST

/* Decimals on and next to the midpoints between adjacent floats: where a
 * double-then-float conversion would round twice. */
START_TEST(parse_midpoints_match_strtof)
{
    char s[160];
    for (int i = 0; i < 120000; i++) {
        uint32_t bits = (uint32_t)next_u64() & 0x7f7fffffu;
        if (below(4) == 0)
            bits = (bits & 0x807fffffu) | ((uint32_t)(127 + below(40) - 20) << 23);
        float f, g;
        memcpy(&f, &bits, 4);
        g = nextafterf(f, INFINITY);
        double mid = ((double)f + (double)g) / 2; /* exact: 25 significant bits */
        snprintf(s, sizeof(s), "%.40e", mid);      /* exact or near-exact decimal */
        same_as_strtof(s);
        for (int digits = 14; digits <= 20; digits++) {
            snprintf(s, sizeof(s), "%.*e", digits - 1, mid); /* rounds near the midpoint */
            same_as_strtof(s);
        }
        snprintf(s, sizeof(s), "%.17g", nextafter(mid, 0.0));
        same_as_strtof(s);
        snprintf(s, sizeof(s), "%.17g", nextafter(mid, INFINITY));
        same_as_strtof(s);
    }
}
END_TEST

/* A locale with a decimal comma must not change what files mean. Debian
 * ships no compiled de_DE locale by default, so the test compiles one into
 * a temporary directory with localedef (skipping, loudly, without it). */
START_TEST(parse_ignores_the_locale)
{
    char *dir = testutil_tmpdir();
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "localedef -i de_DE -f UTF-8 %s/de_DE.UTF-8 >/dev/null 2>&1",
             dir);
    const char *set = NULL;
    if (system(cmd) == 0) {
        setenv("LOCPATH", dir, 1);
        set = setlocale(LC_NUMERIC, "de_DE.UTF-8");
    }
    if (set == NULL) {
        fprintf(stderr, "parse_ignores_the_locale: no de_DE locale could be made; skipped\n");
        testutil_rmtree(dir);
        return;
    }
    ck_assert(strtof("2.5", NULL) == 2.0f); /* the locale bites strtof itself */
    char s[64 + LOADER_PARSE_PAD] = "0.100000000000000000000000001"; /* strtof's path */
    float f = 0;
    ck_assert_ptr_eq(loader_parse_f32(s, &f), s + strlen(s));
    ck_assert(f == 0.1f);
    strcpy(s, "2.5"); /* the fast path */
    ck_assert_ptr_eq(loader_parse_f32(s, &f), s + 3);
    ck_assert(f == 2.5f);
    setlocale(LC_NUMERIC, "C");
    unsetenv("LOCPATH");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(parse_edge_cases)
{
    static const char *const cases[] = {
        "0", "-0", "+0.0", "0.0e0", ".5", "5.", "-.5e-3", "1e", "1e+", "1e-", "1.2.3", "abc",
        "nan", "-nan", "inf", "-Infinity", "1e39", "-1e39", "3.4028235e38", "3.40282356e38",
        "3.4028235677973366e38", "3.4028235677973367e38", "0x1p3", "0X1.8P+1", "1.0000000596046447753906250",
        "1.00000005960464477539062500001", "16777217", "16777219", "16777217.0000000000001",
        "1e-45", "7e-46", "7.1e-46", "1.1754942e-38", "1.17549435e-38",
        "0.000000000000000000000000000000000000000000001",
        "0.1000000000000000000000000000000001", "123456789012345678901234567890",
        "9007199254740993", "9007199254740992e-22", "1e22", "1e23", "1e-22", "1e-23",
        "00000000000000000000000000001.5", "1,5", "1e5x", "--1", "+-1", "", "-", ".", "e5",
        "4.9406564584124654e-324", "1e-400", "1e400", "-0.000000", "123.456789",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        same_as_strtof(cases[i]);
}
END_TEST

/* ---- fixtures from real writers ----------------------------------------- */

START_TEST(gensim_text_loads_exactly)
{
    struct matrix m;
    struct vocab *v;
    load_ok(LFIX("w2v.txt"), LOADER_AUTO, NULL, &m, &v);
    expect_matrix(&m, LFIX("w2v.f32"), 40, 24);
    expect_tokens(v, LFIX("w2v.tokens.txt"));
    matrix_deinit(&m);
    vocab_free(v);
    load_ok(LFIX("w2v.txt"), LOADER_WORD2VEC, NULL, &m, &v);
    expect_matrix(&m, LFIX("w2v.f32"), 40, 24);
    matrix_deinit(&m);
    vocab_free(v);
}
END_TEST

START_TEST(glove_loads_exactly)
{
    struct matrix m;
    struct vocab *v;
    load_ok(LFIX("glove.txt"), LOADER_AUTO, NULL, &m, &v);
    expect_matrix(&m, LFIX("glove.f32"), 30, 10);
    expect_tokens(v, LFIX("glove.tokens.txt"));
    matrix_deinit(&m);
    vocab_free(v);
}
END_TEST

START_TEST(fasttext_vec_loads_exactly)
{
    struct matrix m;
    struct vocab *v;
    load_ok(LFIX("fasttext.vec"), LOADER_AUTO, NULL, &m, &v);
    expect_matrix(&m, LFIX("fasttext.f32"), 17, 8);
    expect_tokens(v, LFIX("fasttext.tokens.txt"));
    matrix_deinit(&m);
    vocab_free(v);
}
END_TEST

/* ---- layout tolerance --------------------------------------------------- */

static void load_text(const char *dir, const char *text, enum loader_format f, struct matrix *m,
                      struct vocab **v)
{
    char *p = testutil_write_file(dir, "t.txt", text, strlen(text));
    struct loader_opts o = {.format = f};
    char err[256] = "";
    int rc = loader_load(p, &o, m, v, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "%s", err);
    free(p);
}

START_TEST(crlf_tabs_trailing_blanks_and_last_line)
{
    char *dir = testutil_tmpdir();
    struct matrix m;
    struct vocab *v;
    /* CRLF, trailing spaces, tabs between values, no final newline */
    load_text(dir, "2 3 \r\nb\t1.5 -2  3e1 \r\na\xc3\xa9 0.25\t0.5\t-0\r\n\r\n", LOADER_AUTO, &m,
              &v);
    ck_assert_int_eq(m.rows, 2);
    ck_assert_int_eq(m.dim, 3);
    const float want[6] = {1.5f, -2.0f, 30.0f, 0.25f, 0.5f, -0.0f};
    for (int i = 0; i < 6; i++)
        ck_assert_msg(memcmp(&matrix_row(&m, i / 3)[i % 3], &want[i], 4) == 0, "value %d", i);
    ck_assert_int_eq(vocab_find(v, "a\xc3\xa9", 3), 1);
    ck_assert_int_eq(vocab_find(v, "b", 1), 0);
    matrix_deinit(&m);
    vocab_free(v);
    load_text(dir, "x 1 2\ny 3 4", LOADER_GLOVE, &m, &v);
    ck_assert_int_eq(m.rows, 2);
    ck_assert(matrix_row(&m, 1)[1] == 4.0f);
    matrix_deinit(&m);
    vocab_free(v);
    testutil_rmtree(dir);
}
END_TEST

/* Lines longer than the reader's first buffer, and rows straddling refills. */
START_TEST(long_lines_grow_the_buffer)
{
    const int64_t dim = 2600000; /* "1 " per value: 5.2 MB lines */
    size_t line = 2 + (size_t)dim * 2;
    char *text = malloc(3 * line + 1);
    char *p = text;
    for (int r = 0; r < 3; r++) {
        *p++ = (char)('a' + r);
        for (int64_t j = 0; j < dim; j++) {
            *p++ = ' ';
            *p++ = (char)('1' + (j + r) % 9);
        }
        *p++ = '\n';
    }
    *p = '\0';
    char *dir = testutil_tmpdir();
    struct matrix m;
    struct vocab *v;
    load_text(dir, text, LOADER_GLOVE, &m, &v);
    ck_assert_int_eq(m.rows, 3);
    ck_assert_int_eq(m.dim, dim);
    for (int r = 0; r < 3; r++)
        for (int64_t j = 0; j < dim; j += 99991)
            ck_assert(matrix_row(&m, r)[j] == (float)(1 + (j + r) % 9));
    ck_assert(matrix_row(&m, 2)[dim - 1] == (float)(1 + (dim - 1 + 2) % 9));
    matrix_deinit(&m);
    vocab_free(v);
    free(text);
    testutil_rmtree(dir);
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

START_TEST(missing_and_empty_files)
{
    expect_fail("/nonexistent/dir/vectors.txt", LOADER_WORD2VEC, CORE_ENOTFOUND, "cannot open");
    expect_fail("/nonexistent/dir/vectors.txt", LOADER_AUTO, CORE_ENOTFOUND, "cannot open");
    char *dir = testutil_tmpdir();
    expect_text_fail(dir, "empty.txt", "", LOADER_AUTO, CORE_EFORMAT, "empty");
    expect_text_fail(dir, "empty.txt", "", LOADER_WORD2VEC, CORE_EFORMAT, "empty");
    expect_text_fail(dir, "empty.txt", "", LOADER_GLOVE, CORE_EFORMAT, "no vectors");
    expect_text_fail(dir, "blank.txt", " \n\n\r\n", LOADER_GLOVE, CORE_EFORMAT, "no vectors");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(bad_headers)
{
    char *dir = testutil_tmpdir();
    expect_text_fail(dir, "h.txt", "0 3\n", LOADER_WORD2VEC, CORE_EFORMAT, "line 1",
                     "must be >= 1");
    expect_text_fail(dir, "h.txt", "2 0\na\nb\n", LOADER_WORD2VEC, CORE_EFORMAT, "line 1",
                     "must be >= 1");
    expect_text_fail(dir, "h.txt", "-2 3\na 1 2 3\n", LOADER_AUTO, CORE_EFORMAT, "line 1",
                     "must be >= 1");
    expect_text_fail(dir, "h.txt", "rows dim\na 1 2 3\n", LOADER_WORD2VEC, CORE_EFORMAT,
                     "line 1", "header");
    /* more than the file could hold: refused before allocating */
    expect_text_fail(dir, "h.txt", "100000000 300\na 1 2 3\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 1", "more than the 22-byte file can hold");
    expect_text_fail(dir, "h.txt", "2 99999999999999999999999\na 1\n", LOADER_AUTO,
                     CORE_EFORMAT, "line 1", "more than the");
    expect_text_fail(dir, "h.txt", "3000000000 1\na 1\n", LOADER_AUTO, CORE_ETOOBIG, "line 1");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(truncated_and_wrong_width_rows)
{
    char *dir = testutil_tmpdir();
    expect_text_fail(dir, "r.txt", "3 3\na 1.5 2.5 3.5\nb 4.5 5.5 6.5\n", LOADER_AUTO,
                     CORE_EFORMAT, "line 3: file ends after 2 rows", "announced 3");
    /* so short that the header alone proves it */
    expect_text_fail(dir, "r.txt", "3 3\na 1 2 3\nb 4 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 1", "truncated file or wrong header");
    expect_text_fail(dir, "r.txt", "2 3\na 1 2 3\nb 4 5", LOADER_AUTO, CORE_EFORMAT,
                     "line 3: 2 values, expected 3");
    expect_text_fail(dir, "r.txt", "2 3\na 1 2 3 4\nb 4 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 2: 4 values, expected 3");
    expect_text_fail(dir, "r.txt", "2 3\na 1.25 2.25 3.25\nb\n", LOADER_AUTO,
                     CORE_EFORMAT, "line 3: 0 values, expected 3");
    expect_text_fail(dir, "r.txt", "2 3\na 1 2 3\nb 4 5 6\nc 7 8 9\n", LOADER_AUTO,
                     CORE_EFORMAT, "line 4", "more rows than the 2");
    expect_text_fail(dir, "g.txt", "a 1 2 3\nb 4 5\n", LOADER_GLOVE, CORE_EFORMAT,
                     "line 2: 2 values, expected 3");
    expect_text_fail(dir, "g.txt", "a 1 2 3\nb 4 5 6 7 8\n", LOADER_GLOVE, CORE_EFORMAT,
                     "line 2: 5 values, expected 3");
    expect_text_fail(dir, "g.txt", "a\nb 4 5 6\n", LOADER_GLOVE, CORE_EFORMAT, "line 1");
    expect_text_fail(dir, "b.txt", "2 3\na 1 2 3\n\nb 4 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 3: empty line");
    expect_text_fail(dir, "b.txt", "2 3\na 1 2 3\n 4 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 3", "starts with a blank");
    /* a binary word2vec file read as text */
    char *p = fixture_path(LFIX("w2v.bin"));
    expect_fail(p, LOADER_WORD2VEC, CORE_EFORMAT, "line 2: holds a NUL byte");
    free(p);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(bad_values)
{
    char *dir = testutil_tmpdir();
    expect_text_fail(dir, "v.txt", "2 3\na 1 nan 3\nb 4 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 2, value 2", "\"nan\"", "not a finite");
    expect_text_fail(dir, "v.txt", "2 3\na 1 2 3\nb 4 5 -inf\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 3, value 3", "not a finite");
    expect_text_fail(dir, "v.txt", "2 3\na 1 2 3\nb 4 1e39 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 3, value 2", "\"1e39\"", "not a finite");
    expect_text_fail(dir, "v.txt", "2 3\na 1 1.2.3 3\nb 4 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 2, value 2", "\"1.2.3\"", "not a number");
    expect_text_fail(dir, "v.txt", "2 3\na 1 2 3\nb abc 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 3, value 1", "\"abc\"", "not a number");
    expect_text_fail(dir, "v.txt", "a 1,5 2\n", LOADER_GLOVE, CORE_EFORMAT, "line 1, value 1",
                     "not a number");
    expect_text_fail(dir, "v.txt", "a 1 2\nb 3 4e\n", LOADER_GLOVE, CORE_EFORMAT,
                     "line 2, value 2", "not a number");
    testutil_rmtree(dir);
}
END_TEST

START_TEST(bad_tokens)
{
    char *dir = testutil_tmpdir();
    expect_text_fail(dir, "d.txt", "3 2\na 1 2\nb 3 4\na 5 6\n", LOADER_AUTO, CORE_EFORMAT,
                     "line 4", "duplicated token \"a\"", "first on line 2");
    expect_text_fail(dir, "d.txt", "x 1\ny 2\nz 3\ny 4\n", LOADER_GLOVE, CORE_EFORMAT,
                     "line 4", "duplicated token \"y\"", "first on line 2");
    size_t n = 5000;
    char *text = malloc(n + 16);
    memset(text, 'k', n);
    strcpy(text + n, " 1 2\n");
    expect_text_fail(dir, "long.txt", text, LOADER_GLOVE, CORE_EFORMAT, "line 1",
                     "token of 5000 bytes");
    free(text);
    testutil_rmtree(dir);
}
END_TEST

static void count_progress(void *ud, uint64_t done, uint64_t total)
{
    uint64_t *calls = ud;
    calls[0]++;
    calls[1] = done;
    calls[2] = total;
}

START_TEST(progress_reports_the_end)
{
    uint64_t calls[3] = {0, 0, 0};
    char *p = fixture_path(LFIX("w2v.txt"));
    size_t len;
    free(testutil_read_file(p, &len));
    struct loader_opts o = {.format = LOADER_AUTO, .progress = count_progress,
                            .progress_ud = calls};
    struct matrix m;
    struct vocab *v;
    char err[256];
    ck_assert_int_eq(loader_load(p, &o, &m, &v, err, sizeof(err)), CORE_OK);
    ck_assert_uint_ge(calls[0], 1);
    ck_assert_uint_eq(calls[1], len);
    ck_assert_uint_eq(calls[2], len);
    matrix_deinit(&m);
    vocab_free(v);
    free(p);
}
END_TEST

static Suite *loader_text_suite(void)
{
    Suite *s = suite_create("loader_text");
    TCase *tc = tcase_create("parse_f32");
    tcase_add_test(tc, parse_random_decimals_match_strtof);
    tcase_add_test(tc, parse_printed_floats_match_strtof);
    tcase_add_test(tc, parse_midpoints_match_strtof);
    tcase_add_test(tc, parse_edge_cases);
    tcase_add_test(tc, parse_ignores_the_locale); /* runs localedef: seconds */
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_add_test(tc, gensim_text_loads_exactly);
    tcase_add_test(tc, glove_loads_exactly);
    tcase_add_test(tc, fasttext_vec_loads_exactly);
    tcase_add_test(tc, crlf_tabs_trailing_blanks_and_last_line);
    tcase_add_test(tc, long_lines_grow_the_buffer);
    tcase_add_test(tc, progress_reports_the_end);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_test(tc, missing_and_empty_files);
    tcase_add_test(tc, bad_headers);
    tcase_add_test(tc, truncated_and_wrong_width_rows);
    tcase_add_test(tc, bad_values);
    tcase_add_test(tc, bad_tokens);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(loader_text_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
