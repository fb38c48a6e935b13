/* test_buf.c - the answer buffer: growth, the hard limit and its sticky
 * failure, steal, integers, floats (null for non-finite) and JSON string
 * escaping per RFC 8259 (checked back through cJSON's parser). */
#include <check.h>
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "f32fmt.h"
#include "testutil.h"

/* The buffer's bytes as a NUL-terminated string for comparisons. */
static const char *text_of(struct buf *b)
{
    static char copy[4096];
    ck_assert_uint_lt(b->len, sizeof copy);
    if (b->len > 0)
        memcpy(copy, b->data, b->len);
    copy[b->len] = '\0';
    return copy;
}

START_TEST(test_init_deinit)
{
    struct buf zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    buf_deinit(&zeroed); /* zeroed: no-op */
    buf_deinit(NULL);

    struct buf b;
    buf_init(&b, 100);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert(!b.failed);
    buf_puts(&b, "abc");
    buf_deinit(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    buf_deinit(&b); /* twice is fine */
}
END_TEST

START_TEST(test_append_and_grow)
{
    struct buf b;
    buf_init(&b, 0); /* no limit */
    buf_putc(&b, '[');
    buf_puts(&b, "hello");
    buf_append(&b, ", world", 7);
    buf_append(&b, NULL, 0);
    buf_printf(&b, " %d/%s", 42, "x");
    buf_putc(&b, ']');
    ck_assert_str_eq(text_of(&b), "[hello, world 42/x]");

    /* Past the first allocations: a megabyte of a known pattern. */
    buf_deinit(&b);
    buf_init(&b, 0);
    for (int i = 0; i < (1 << 20); i++)
        buf_putc(&b, (char)('a' + i % 26));
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.len, 1u << 20);
    ck_assert_uint_ge(b.cap, b.len);
    for (int i = 0; i < (1 << 20); i += 4099)
        ck_assert_int_eq(b.data[i], 'a' + i % 26);
    buf_deinit(&b);
}
END_TEST

START_TEST(test_printf_long)
{
    char big[1000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "<");
    buf_printf(&b, "%s|%d", big, 7);
    ck_assert_uint_eq(b.len, 1 + 999 + 2);
    ck_assert_int_eq(b.data[0], '<');
    ck_assert_int_eq(b.data[999], 'z');
    ck_assert_int_eq(memcmp(b.data + 1000, "|7", 2), 0);
    buf_deinit(&b);
}
END_TEST

START_TEST(test_limit_is_hard_and_sticky)
{
    struct buf b;
    buf_init(&b, 10);
    buf_puts(&b, "12345678");
    ck_assert(!b.failed);
    buf_puts(&b, "abc"); /* would make 11 */
    ck_assert(b.failed);
    ck_assert_uint_eq(b.len, 8); /* nothing of the refused append */
    buf_putc(&b, 'x');           /* fits, but the buffer has failed */
    buf_printf(&b, "%d", 1);
    buf_put_i64(&b, 1);
    buf_put_f32(&b, 1.0f);
    buf_put_json_string(&b, "a", 1);
    buf_put_f32_array(&b, NULL, 0);
    ck_assert_uint_eq(b.len, 8);
    ck_assert(!buf_reserve(&b, 1));
    size_t len = 123;
    ck_assert_ptr_null(buf_steal(&b, &len));
    ck_assert_uint_eq(len, 0);
    buf_deinit(&b);
}
END_TEST

START_TEST(test_limit_exact_fit)
{
    struct buf b;
    buf_init(&b, 10);
    buf_puts(&b, "0123456789");
    ck_assert(!b.failed);
    ck_assert_uint_eq(b.len, 10);
    ck_assert_uint_le(b.cap, 10); /* never allocates past the limit */
    buf_putc(&b, 'x');
    ck_assert(b.failed);
    buf_deinit(&b);

    buf_init(&b, 10);
    ck_assert(buf_reserve(&b, 10));
    ck_assert(!buf_reserve(&b, 11));
    ck_assert(b.failed);
    buf_deinit(&b);
}
END_TEST

START_TEST(test_steal)
{
    struct buf b;
    buf_init(&b, 0);
    size_t len = 99;
    ck_assert_ptr_null(buf_steal(&b, &len)); /* empty, no storage */
    ck_assert_uint_eq(len, 0);

    buf_puts(&b, "payload");
    char *data = buf_steal(&b, &len);
    ck_assert_ptr_nonnull(data);
    ck_assert_uint_eq(len, 7);
    ck_assert_int_eq(memcmp(data, "payload", 7), 0);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_uint_eq(b.cap, 0);
    free(data);

    /* The buffer is reusable after a steal. */
    buf_puts(&b, "again");
    ck_assert_str_eq(text_of(&b), "again");
    buf_deinit(&b);
}
END_TEST

START_TEST(test_integers)
{
    struct buf b;
    buf_init(&b, 0);
    buf_put_i64(&b, 0);
    buf_putc(&b, ' ');
    buf_put_i64(&b, -1);
    buf_putc(&b, ' ');
    buf_put_i64(&b, INT64_MIN);
    buf_putc(&b, ' ');
    buf_put_i64(&b, INT64_MAX);
    buf_putc(&b, ' ');
    buf_put_u64(&b, 0);
    buf_putc(&b, ' ');
    buf_put_u64(&b, UINT64_MAX);
    buf_putc(&b, ' ');
    buf_put_u64(&b, 1000000);
    ck_assert_str_eq(text_of(&b), "0 -1 -9223372036854775808 9223372036854775807 0 "
                                  "18446744073709551615 1000000");
    buf_deinit(&b);
}
END_TEST

START_TEST(test_floats_and_null)
{
    struct buf b;
    buf_init(&b, 0);
    buf_put_f32(&b, 0.1f);
    buf_putc(&b, ' ');
    buf_put_f32(&b, -0.0f);
    buf_putc(&b, ' ');
    buf_put_f32(&b, NAN);
    buf_putc(&b, ' ');
    buf_put_f32(&b, INFINITY);
    buf_putc(&b, ' ');
    buf_put_f32(&b, -INFINITY);
    buf_putc(&b, ' ');
    buf_put_f32(&b, FLT_MAX);
    ck_assert_str_eq(text_of(&b), "0.1 -0.0 null null null 3.4028235e+38");
    buf_deinit(&b);
}
END_TEST

START_TEST(test_float_arrays)
{
    struct buf b;
    buf_init(&b, 0);
    buf_put_f32_array(&b, NULL, 0);
    buf_putc(&b, ' ');
    const float v[] = {1.0f, -0.5f, NAN, 1e-5f, 0.1f};
    buf_put_f32_array(&b, v, 5);
    ck_assert_str_eq(text_of(&b), "[] [1.0,-0.5,null,1e-05,0.1]");
    buf_deinit(&b);
}
END_TEST

/* A long array equals the per-float texts joined with commas, and parses
 * back (cJSON) to the same floats. */
START_TEST(test_float_array_matches_f32fmt)
{
    enum { N = 5000 };
    float *v = malloc(N * sizeof *v);
    ck_assert_ptr_nonnull(v);
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        v[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (float)pow(10.0, i % 9 - 6);
    }
    struct buf b, want;
    buf_init(&b, 0);
    buf_init(&want, 0);
    buf_put_f32_array(&b, v, N);
    buf_putc(&want, '[');
    for (int i = 0; i < N; i++) {
        char tmp[F32FMT_MAX];
        if (i > 0)
            buf_putc(&want, ',');
        buf_append(&want, tmp, f32fmt(v[i], tmp));
    }
    buf_putc(&want, ']');
    ck_assert_uint_eq(b.len, want.len);
    ck_assert_int_eq(memcmp(b.data, want.data, b.len), 0);

    buf_putc(&b, '\0');
    cJSON *arr = cJSON_Parse(b.data);
    ck_assert_ptr_nonnull(arr);
    ck_assert_int_eq(cJSON_GetArraySize(arr), N);
    for (int i = 0; i < N; i += 7)
        ck_assert_float_eq((float)cJSON_GetArrayItem(arr, i)->valuedouble, v[i]);
    cJSON_Delete(arr);
    buf_deinit(&want);
    buf_deinit(&b);
    free(v);
}
END_TEST

/* The array reserves for the worst case when it can; near the limit it
 * must still succeed when the exact text fits, and fail when it does not. */
START_TEST(test_float_array_near_limit)
{
    const float v[] = {1.0f, 2.0f};
    struct buf b;
    buf_init(&b, 9); /* "[1.0,2.0]" is exactly 9 bytes */
    buf_put_f32_array(&b, v, 2);
    ck_assert(!b.failed);
    ck_assert_str_eq(text_of(&b), "[1.0,2.0]");
    buf_deinit(&b);

    buf_init(&b, 8);
    buf_put_f32_array(&b, v, 2);
    ck_assert(b.failed);
    ck_assert_uint_le(b.len, 8);
    buf_deinit(&b);
}
END_TEST

START_TEST(test_json_string_escapes)
{
    struct buf b;
    buf_init(&b, 0);
    const char in[] = "a\"b\\c/\n\r\t\b\f\x01\x1f\x7f \xc3\xa9";
    buf_put_json_string(&b, in, sizeof in - 1);
    ck_assert_str_eq(text_of(&b),
                     "\"a\\\"b\\\\c/\\n\\r\\t\\b\\f\\u0001\\u001f\x7f \xc3\xa9\"");
    buf_deinit(&b);

    buf_init(&b, 0);
    buf_put_json_string(&b, "", 0);
    buf_putc(&b, ' ');
    buf_put_json_string(&b, "x\0y", 3); /* the length counts, not a NUL */
    ck_assert_str_eq(text_of(&b), "\"\" \"x\\u0000y\"");
    buf_deinit(&b);
}
END_TEST

/* Every byte 1..255 survives escaping and cJSON's parser. */
START_TEST(test_json_string_round_trip)
{
    char in[256];
    size_t n = 0;
    for (int c = 1; c < 128; c++)
        in[n++] = (char)c;
    memcpy(in + n, "\xe2\x82\xac", 3); /* valid UTF-8 passes through */
    n += 3;
    struct buf b;
    buf_init(&b, 0);
    buf_put_json_string(&b, in, n);
    for (size_t i = 0; i < b.len; i++)
        ck_assert_msg((unsigned char)b.data[i] >= 0x20, "raw control byte at %zu", i);
    buf_putc(&b, '\0');
    cJSON *s = cJSON_Parse(b.data);
    ck_assert_ptr_nonnull(s);
    ck_assert(cJSON_IsString(s));
    ck_assert_uint_eq(strlen(s->valuestring), n);
    ck_assert_int_eq(memcmp(s->valuestring, in, n), 0);
    cJSON_Delete(s);
    buf_deinit(&b);
}
END_TEST

static Suite *buf_suite(void)
{
    Suite *s = suite_create("buf");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_init_deinit);
    tcase_add_test(tc, test_append_and_grow);
    tcase_add_test(tc, test_printf_long);
    tcase_add_test(tc, test_limit_is_hard_and_sticky);
    tcase_add_test(tc, test_limit_exact_fit);
    tcase_add_test(tc, test_steal);
    tcase_add_test(tc, test_integers);
    tcase_add_test(tc, test_floats_and_null);
    tcase_add_test(tc, test_float_arrays);
    tcase_add_test(tc, test_float_array_matches_f32fmt);
    tcase_add_test(tc, test_float_array_near_limit);
    tcase_add_test(tc, test_json_string_escapes);
    tcase_add_test(tc, test_json_string_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(buf_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
