/* test_vocab.c - core/vocab.c: adds and finds under heavy probing, exact
 * byte matching, the file format and its errors, write/read round trips,
 * the sorted index and its prefix ranges (against a brute-force scan), and
 * the time to load and index one million tokens. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "testutil.h"
#include "vocab.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

START_TEST(add_find_token)
{
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 0), CORE_OK);
    int64_t id = -5;
    ck_assert_int_eq(vocab_add(v, "cat", 3, &id), CORE_OK);
    ck_assert_int_eq(id, 0);
    ck_assert_int_eq(vocab_add(v, "ca", 2, &id), CORE_OK); /* a prefix is another token */
    ck_assert_int_eq(id, 1);
    ck_assert_int_eq(vocab_add(v, "a\0b", 3, &id), CORE_OK); /* bytes, not C strings */
    ck_assert_int_eq(vocab_add(v, "a\0c", 3, &id), CORE_OK);
    ck_assert_int_eq(vocab_add(v, "cat", 3, &id), CORE_EEXISTS);
    ck_assert_int_eq(id, 0);
    ck_assert_int_eq(vocab_size(v), 4);
    ck_assert_int_eq(vocab_find(v, "cat", 3), 0);
    ck_assert_int_eq(vocab_find(v, "ca", 2), 1);
    ck_assert_int_eq(vocab_find(v, "a\0c", 3), 3);
    ck_assert_int_eq(vocab_find(v, "c", 1), -1);
    ck_assert_int_eq(vocab_find(v, "Cat", 3), -1);
    ck_assert_int_eq(vocab_find(v, "", 0), -1);
    size_t len = 0;
    const char *tok = vocab_token(v, 2, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_mem_eq(tok, "a\0b", 3);
    ck_assert_ptr_null(vocab_token(v, 4, &len));
    ck_assert_ptr_null(vocab_token(v, -1, &len));
    vocab_free(v);
    vocab_free(NULL);
}
END_TEST

START_TEST(add_refuses_bad_tokens)
{
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 2), CORE_OK);
    ck_assert_int_eq(vocab_add(v, "x", 0, NULL), CORE_EINVAL);
    ck_assert_int_eq(vocab_add(v, "a\nb", 3, NULL), CORE_EINVAL);
    ck_assert_int_eq(vocab_add(v, "ab\r", 3, NULL), CORE_EINVAL);
    char *big = malloc(VOCAB_MAX_TOKEN_BYTES + 1);
    memset(big, 'z', VOCAB_MAX_TOKEN_BYTES + 1);
    ck_assert_int_eq(vocab_add(v, big, VOCAB_MAX_TOKEN_BYTES + 1, NULL), CORE_EINVAL);
    ck_assert_int_eq(vocab_add(v, big, VOCAB_MAX_TOKEN_BYTES, NULL), CORE_OK);
    ck_assert_int_eq(vocab_find(v, big, VOCAB_MAX_TOKEN_BYTES), 0);
    ck_assert_int_eq(vocab_find(v, big, VOCAB_MAX_TOKEN_BYTES + 1), -1);
    ck_assert_int_eq(vocab_size(v), 1);
    free(big);
    vocab_free(v);
}
END_TEST

/* 200k near-identical tokens (shared prefixes, one byte apart, lengths 1
 * to 40) grown from an empty table: many shared home slots and long probe
 * runs, and the table is rebuilt several times along the way. */
START_TEST(many_similar_tokens)
{
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 0), CORE_OK);
    char buf[64];
    int wrong = 0;
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(buf, sizeof(buf), "%.*s%d", i % 31, "ppppppppppppppppppppppppppppppp", i);
        int64_t id = -1;
        wrong += vocab_add(v, buf, (size_t)n, &id) != CORE_OK || id != i;
    }
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(buf, sizeof(buf), "%.*s%d", i % 31, "ppppppppppppppppppppppppppppppp", i);
        wrong += vocab_find(v, buf, (size_t)n) != i;
        buf[n - 1] = 'x';
        wrong += vocab_find(v, buf, (size_t)n) != -1;
    }
    ck_assert_int_eq(wrong, 0);
    ck_assert_int_eq(vocab_size(v), 200000);
    vocab_free(v);
}
END_TEST

static char *write_tmp(char **dir, const char *name, const char *text, size_t len)
{
    *dir = testutil_tmpdir();
    return testutil_write_file(*dir, name, text, len);
}

/* Loads text as a vocabulary file and expects failure with `code`, no
 * vocabulary, and an error naming the file and the line. */
static void expect_load_error(const char *text, size_t len, int code, const char *line_needle,
                              const char *needle)
{
    char *dir;
    char *path = write_tmp(&dir, "vocab.txt", text, len);
    struct vocab *v = (struct vocab *)1;
    char err[512] = "";
    ck_assert_int_eq(vocab_load_file(&v, path, err, sizeof(err)), code);
    ck_assert_ptr_null(v);
    ck_assert_msg(strstr(err, path) != NULL, "error '%s' does not name the file", err);
    ck_assert_msg(strstr(err, line_needle) != NULL, "error '%s' does not name '%s'", err, line_needle);
    ck_assert_msg(strstr(err, needle) != NULL, "error '%s' does not say '%s'", err, needle);
    free(path);
    testutil_rmtree(dir);
}

START_TEST(load_errors_name_file_and_line)
{
    const char blank[] = "a\nb\n\nc\n";
    expect_load_error(blank, sizeof(blank) - 1, CORE_EFORMAT, ":3:", "blank");
    const char blank_first[] = "\na\n";
    expect_load_error(blank_first, sizeof(blank_first) - 1, CORE_EFORMAT, ":1:", "blank");
    const char blank_end[] = "a\nb\n\n";
    expect_load_error(blank_end, sizeof(blank_end) - 1, CORE_EFORMAT, ":3:", "blank");
    const char crlf_blank[] = "a\r\n\r\nb\r\n";
    expect_load_error(crlf_blank, sizeof(crlf_blank) - 1, CORE_EFORMAT, ":2:", "blank");
    const char dup[] = "the\ncat\nsat\ncat\n";
    expect_load_error(dup, sizeof(dup) - 1, CORE_EFORMAT, ":4:", "line 2");
    const char cr[] = "ok\nbad\rtoken\n";
    expect_load_error(cr, sizeof(cr) - 1, CORE_EFORMAT, ":2:", "carriage return");
    size_t n = VOCAB_MAX_TOKEN_BYTES + 10;
    char *longline = malloc(n);
    memcpy(longline, "a\nb\n", 4);
    memset(longline + 4, 'y', n - 5);
    longline[n - 1] = '\n';
    expect_load_error(longline, n, CORE_EFORMAT, ":3:", "limit");
    free(longline);

    struct vocab *v = (struct vocab *)1;
    char err[256] = "";
    ck_assert_int_eq(vocab_load_file(&v, "/nonexistent/vocab.txt", err, sizeof(err)), CORE_EIO);
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/vocab.txt"));
}
END_TEST

START_TEST(load_accepts_line_endings)
{
    const char text[] = "the\r\nçava\nend"; /* CRLF, LF, none at the end */
    char *dir;
    char *path = write_tmp(&dir, "v.txt", text, sizeof(text) - 1);
    struct vocab *v;
    char err[256] = "";
    ck_assert_msg(vocab_load_file(&v, path, err, sizeof(err)) == CORE_OK, "%s", err);
    ck_assert_int_eq(vocab_size(v), 3);
    ck_assert_int_eq(vocab_find(v, "the", 3), 0);
    ck_assert_int_eq(vocab_find(v, "çava", strlen("çava")), 1);
    ck_assert_int_eq(vocab_find(v, "end", 3), 2);
    vocab_free(v);
    free(path);
    path = testutil_write_file(dir, "empty.txt", "", 0);
    ck_assert_int_eq(vocab_load_file(&v, path, err, sizeof(err)), CORE_OK);
    ck_assert_int_eq(vocab_size(v), 0);
    vocab_free(v);
    free(path);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(write_reads_back)
{
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 0), CORE_OK);
    const char *words[] = {"<pad>", "über", "tab\there", "a b", "x"};
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(vocab_add(v, words[i], strlen(words[i]), NULL), CORE_OK);
    char *dir = testutil_tmpdir();
    size_t plen = strlen(dir) + 16;
    char *path = malloc(plen);
    snprintf(path, plen, "%s/out.txt", dir);
    FILE *f = fopen(path, "wb");
    ck_assert_int_eq(vocab_write(v, f), CORE_OK);
    ck_assert_int_eq(fclose(f), 0);
    size_t len;
    char *text = testutil_read_file(path, &len);
    ck_assert_str_eq(text, "<pad>\nüber\ntab\there\na b\nx\n");
    free(text);
    struct vocab *back;
    char err[256] = "";
    ck_assert_msg(vocab_load_file(&back, path, err, sizeof(err)) == CORE_OK, "%s", err);
    ck_assert_int_eq(vocab_size(back), 5);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(vocab_find(back, words[i], strlen(words[i])), i);
    vocab_free(back);
    f = fopen("/dev/full", "wb");
    if (f != NULL) { /* a write that fails surfaces as CORE_EIO */
        int rc = vocab_write(v, f);
        int rc_close = fclose(f);
        ck_assert(rc == CORE_EIO || rc_close != 0);
    }
    free(path);
    testutil_rmtree(dir);
    vocab_free(v);
}
END_TEST

/* ---- sorted index ------------------------------------------------------ */

static struct vocab *vocab_of(const char *const *words, size_t n)
{
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 0), CORE_OK);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(vocab_add(v, words[i], strlen(words[i]), NULL), CORE_OK);
    return v;
}

/* The tokens of prefix's range, joined by spaces, into out. */
static const char *range_text(const struct vocab *v, const char *prefix, size_t plen,
                              char *out, size_t outlen)
{
    int64_t first = -1, count = -1;
    ck_assert_int_eq(vocab_prefix_range(v, prefix, plen, &first, &count), CORE_OK);
    size_t used = 0;
    out[0] = '\0';
    for (int64_t i = 0; i < count; i++) {
        size_t len = 0;
        const char *tok = vocab_token(v, vocab_sorted_id(v, first + i), &len);
        used += (size_t)snprintf(out + used, outlen - used, "%s%.*s", i ? " " : "", (int)len, tok);
    }
    return out;
}

START_TEST(prefix_ranges)
{
    const char *words[] = {"gold", "go", "golden", "good", "apple", "g", "gol", "\xc3\xa9", /* é */
                           "\xc3\xa9lan", "z", "Gold", "goal", "h"};
    struct vocab *v = vocab_of(words, sizeof words / sizeof words[0]);
    int64_t first = 0, count = 0;
    ck_assert(!vocab_has_index(v));
    ck_assert_int_eq(vocab_prefix_range(v, "g", 1, &first, &count), CORE_EINVAL);
    ck_assert_int_eq(vocab_sorted_id(v, 0), -1);
    ck_assert_int_eq(vocab_build_index(v), CORE_OK);
    ck_assert(vocab_has_index(v));

    char out[512];
    /* byte order: upper case before lower case, a token before its extensions,
     * UTF-8 (code points >= 0x80) after ASCII */
    ck_assert_str_eq(range_text(v, "", 0, out, sizeof out),
                     "Gold apple g go goal gol gold golden good h z \xc3\xa9 \xc3\xa9lan");
    ck_assert_str_eq(range_text(v, "go", 2, out, sizeof out), "go goal gol gold golden good");
    ck_assert_str_eq(range_text(v, "gol", 3, out, sizeof out), "gol gold golden");
    ck_assert_str_eq(range_text(v, "golden", 6, out, sizeof out), "golden");
    ck_assert_str_eq(range_text(v, "goldenrod", 9, out, sizeof out), "");
    ck_assert_str_eq(range_text(v, "G", 1, out, sizeof out), "Gold");
    ck_assert_str_eq(range_text(v, "\xc3\xa9", 2, out, sizeof out), "\xc3\xa9 \xc3\xa9lan");
    ck_assert_str_eq(range_text(v, "\xc3", 1, out, sizeof out), "\xc3\xa9 \xc3\xa9lan");
    ck_assert_str_eq(range_text(v, "\xff", 1, out, sizeof out), "");

    /* an empty range sits where the prefix would sort */
    ck_assert_int_eq(vocab_prefix_range(v, "gp", 2, &first, &count), CORE_OK);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(first, 9); /* after "good", before "h" */
    ck_assert_int_eq(vocab_prefix_range(v, "A", 1, &first, &count), CORE_OK);
    ck_assert_int_eq(first, 0);
    ck_assert_int_eq(count, 0);
    ck_assert_int_eq(vocab_prefix_range(v, "\xff", 1, &first, &count), CORE_OK);
    ck_assert_int_eq(first, 13);
    ck_assert_int_eq(vocab_sorted_id(v, 13), -1);
    ck_assert_int_eq(vocab_sorted_id(v, -1), -1);
    ck_assert_int_eq(vocab_sorted_id(v, 0), 10); /* "Gold" */

    /* a new token drops the index rather than leave it stale */
    ck_assert_int_eq(vocab_add(v, "gone", 4, NULL), CORE_OK);
    ck_assert(!vocab_has_index(v));
    ck_assert_int_eq(vocab_prefix_range(v, "go", 2, &first, &count), CORE_EINVAL);
    ck_assert_int_eq(vocab_build_index(v), CORE_OK);
    ck_assert_str_eq(range_text(v, "gon", 3, out, sizeof out), "gone");
    vocab_free(v);

    ck_assert_int_eq(vocab_new(&v, 0), CORE_OK); /* an empty vocabulary indexes too */
    ck_assert_int_eq(vocab_build_index(v), CORE_OK);
    ck_assert_int_eq(vocab_prefix_range(v, "a", 1, &first, &count), CORE_OK);
    ck_assert_int_eq(first, 0);
    ck_assert_int_eq(count, 0);
    vocab_free(v);
}
END_TEST

static int compare_tokens(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

/* 20,000 random tokens over a small alphabet of ASCII, bytes >= 0x80 and
 * NUL, so prefixes are shared a lot: the index is in token order and every
 * range holds exactly the tokens a scan finds. */
START_TEST(prefix_ranges_match_a_scan)
{
    static const char alphabet[] = {'a', 'b', 'c', 'A', '\0', '\x80', '\xc3', '\xff'};
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 0), CORE_OK);
    uint64_t state = 12345;
    char buf[16];
    while (vocab_size(v) < 20000) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t len = 1 + (size_t)(state >> 60) % 8;
        for (size_t i = 0; i < len; i++)
            buf[i] = alphabet[(state >> (4 * i + 8)) & 7];
        int rc = vocab_add(v, buf, len, NULL);
        ck_assert(rc == CORE_OK || rc == CORE_EEXISTS);
    }
    ck_assert_int_eq(vocab_build_index(v), CORE_OK);
    int64_t n = vocab_size(v);
    int wrong = 0;
    for (int64_t pos = 1; pos < n; pos++) {
        size_t alen, blen;
        const char *a = vocab_token(v, vocab_sorted_id(v, pos - 1), &alen);
        const char *b = vocab_token(v, vocab_sorted_id(v, pos), &blen);
        wrong += compare_tokens(a, alen, b, blen) >= 0;
    }
    ck_assert_int_eq(wrong, 0);
    for (int q = 0; q < 300; q++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        size_t plen = (size_t)(state >> 61) % 5; /* 0 to 4 bytes */
        for (size_t i = 0; i < plen; i++)
            buf[i] = alphabet[(state >> (4 * i + 8)) & 7];
        int64_t first, count, want = 0;
        ck_assert_int_eq(vocab_prefix_range(v, buf, plen, &first, &count), CORE_OK);
        for (int64_t id = 0; id < n; id++) {
            size_t len;
            const char *tok = vocab_token(v, id, &len);
            want += len >= plen && memcmp(tok, buf, plen) == 0;
        }
        ck_assert_int_eq(count, want);
        for (int64_t i = 0; i < count; i++) {
            size_t len;
            const char *tok = vocab_token(v, vocab_sorted_id(v, first + i), &len);
            wrong += len < plen || memcmp(tok, buf, plen) != 0;
        }
    }
    ck_assert_int_eq(wrong, 0);
    vocab_free(v);
}
END_TEST

/* One million distinct tokens through vocab_load_file; prints the time. The
 * bound only catches a quadratic regression (sanitizer builds at -O0 take
 * ~2 s on this machine kind); the figure printed is the point. */
START_TEST(load_one_million_tokens)
{
    const int n = 1000000;
    size_t cap = (size_t)n * 24, len = 0;
    char *text = malloc(cap);
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "tok%x_%d\n", (unsigned)(i * 2654435761u), i);
    char *dir;
    char *path = write_tmp(&dir, "big.txt", text, len);
    struct vocab *v;
    char err[256] = "";
    double t0 = now_seconds();
    ck_assert_msg(vocab_load_file(&v, path, err, sizeof(err)) == CORE_OK, "%s", err);
    double secs = now_seconds() - t0;
    fprintf(stderr, "vocab: loaded %d tokens in %.3f s\n", n, secs);
    ck_assert_int_eq(vocab_size(v), n);
    char buf[32];
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        int k = snprintf(buf, sizeof(buf), "tok%x_%d", (unsigned)(i * 2654435761u), i);
        wrong += vocab_find(v, buf, (size_t)k) != i;
    }
    ck_assert_int_eq(wrong, 0);
    ck_assert_msg(secs < 20.0, "loading 1M tokens took %.2f s", secs);
    t0 = now_seconds();
    ck_assert_int_eq(vocab_build_index(v), CORE_OK);
    secs = now_seconds() - t0;
    fprintf(stderr, "vocab: sorted %d tokens in %.3f s\n", n, secs);
    int64_t first, count;
    ck_assert_int_eq(vocab_prefix_range(v, "tok", 3, &first, &count), CORE_OK);
    ck_assert_int_eq(count, n);
    ck_assert_msg(secs < 20.0, "sorting 1M tokens took %.2f s", secs);
    vocab_free(v);
    free(path);
    free(text);
    testutil_rmtree(dir);
}
END_TEST

static Suite *vocab_suite(void)
{
    Suite *s = suite_create("vocab");
    TCase *tc = tcase_create("map");
    tcase_add_test(tc, add_find_token);
    tcase_add_test(tc, add_refuses_bad_tokens);
    tcase_add_test(tc, many_similar_tokens);
    suite_add_tcase(s, tc);
    tc = tcase_create("index");
    tcase_add_test(tc, prefix_ranges);
    tcase_add_test(tc, prefix_ranges_match_a_scan);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    tc = tcase_create("file");
    tcase_add_test(tc, load_errors_name_file_and_line);
    tcase_add_test(tc, load_accepts_line_endings);
    tcase_add_test(tc, write_reads_back);
    tcase_add_test(tc, load_one_million_tokens);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(vocab_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
