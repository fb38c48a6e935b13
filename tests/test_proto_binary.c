/* test_proto_binary.c - the binary body parsers of proto/binary.c: shapes,
 * lengths, ids, floats in place or copied, the lr header, every error with
 * its code and message, and the same structs as the JSON parsers. */
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binary.h"
#include "request.h"
#include "testutil.h"

/* A 5 x 3 table: ids in [0, 5), D = 3. */
static const struct request_limits LIM = {
    .num_embeddings = 5, .dim = 3, .max_batch = 8, .max_k = 1000,
};

static char err[STATUS_ERR_MAX];

/* A body built in an aligned buffer: ids as int64 then floats as float32,
 * little-endian (the test machines are). off shifts it by that many bytes
 * to make the floats misaligned. */
struct body {
    alignas(16) unsigned char bytes[1024];
    size_t off;
    size_t len;
};

static void body_init(struct body *b, size_t off)
{
    memset(b, 0, sizeof *b);
    b->off = off;
}

static void put_ids(struct body *b, const int64_t *ids, size_t n)
{
    memcpy(b->bytes + b->off + b->len, ids, n * sizeof *ids);
    b->len += n * sizeof *ids;
}

static void put_floats(struct body *b, const float *v, size_t n)
{
    memcpy(b->bytes + b->off + b->len, v, n * sizeof *v);
    b->len += n * sizeof *v;
}

static const char *data(const struct body *b)
{
    return (const char *)b->bytes + b->off;
}

static void check_fail(enum status_code got, enum status_code want, const char *fragment,
                       const char *what)
{
    ck_assert_msg(got == want, "%s: got %s (%s), want %s", what, status_name(got), err,
                  status_name(want));
    ck_assert_msg(strstr(err, fragment) != NULL, "%s: message \"%s\" lacks \"%s\"", what, err,
                  fragment);
}

/* ---- X-Embedding-Shape ---- */

static void shape_ok(const char *text, size_t ndim, const size_t *want)
{
    size_t shape[REQUEST_MAX_DIMS], got;
    enum status_code sc = binary_parse_shape(text, shape, &got, err, sizeof err);
    ck_assert_msg(sc == STATUS_OK, "\"%s\": %s", text, err);
    ck_assert_uint_eq(got, ndim);
    for (size_t d = 0; d < ndim; d++)
        ck_assert_uint_eq(shape[d], want[d]);
}

static void shape_fails(const char *text, const char *fragment)
{
    size_t shape[REQUEST_MAX_DIMS], ndim;
    check_fail(binary_parse_shape(text, shape, &ndim, err, sizeof err),
               STATUS_INVALID_ARGUMENT, fragment, text);
}

START_TEST(shape_header)
{
    shape_ok("2,3", 2, (size_t[]){2, 3});
    shape_ok(" 2 , 3\t", 2, (size_t[]){2, 3});
    shape_ok("7", 1, (size_t[]){7});
    shape_ok("0", 1, (size_t[]){0});
    shape_ok("1,0,4", 3, (size_t[]){1, 0, 4});
    shape_ok("", 0, NULL);
    shape_ok("  ", 0, NULL);

    const char *bad[] = {"2,", ",2", "2,,3", "-1", "+1", "2x", "2 3", "1.5", "0x10", "2;3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        shape_fails(bad[i], "expected comma-separated non-negative integers");
    shape_fails("99999999999999999999", "larger than");

    char deep[200] = "";
    for (int d = 0; d <= REQUEST_MAX_DIMS; d++)
        strcat(deep, d ? ",1" : "1");
    shape_fails(deep, "more than 32 dimensions");
    deep[strlen(deep) - 2] = '\0'; /* exactly 32 */
    size_t shape[REQUEST_MAX_DIMS], ndim;
    ck_assert_int_eq(binary_parse_shape(deep, shape, &ndim, err, sizeof err), STATUS_OK);
    ck_assert_uint_eq(ndim, REQUEST_MAX_DIMS);

    /* client bytes are quoted printable and cut */
    shape_fails("2,\x01", "\"2,?\"");
    char longer[200];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    shape_fails(longer, "xxx...\"");
}
END_TEST

/* ---- lookup ---- */

static void lookup_fails(const struct body *b, const char *shape, const char *lr,
                         enum status_code want, const char *fragment)
{
    struct binary_headers h = {shape, lr};
    struct lookup_request r;
    check_fail(binary_parse_lookup(data(b), b->len, &h, &LIM, &r, err, sizeof err), want,
               fragment, shape ? shape : "(no shape)");
    ck_assert_ptr_null(r.in.ids); /* left zeroed */
    ck_assert_uint_eq(r.in.n, 0);
    request_lookup_deinit(&r);
}

START_TEST(lookup_shapes)
{
    struct body b;
    struct lookup_request r;
    struct binary_headers flat = {NULL, NULL}, two = {"2,3", NULL}, scalar = {"", NULL};
    const int64_t ids[6] = {0, 1, 2, 3, 4, 4};

    body_init(&b, 0);
    put_ids(&b, ids, 6);
    ck_assert_int_eq(binary_parse_lookup(data(&b), b.len, &flat, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert(!r.is_bags && !r.in.is_tokens);
    ck_assert_uint_eq(r.in.ndim, 1);
    ck_assert_uint_eq(r.in.shape[0], 6);
    ck_assert_uint_eq(r.in.n, 6);
    ck_assert_mem_eq(r.in.ids, ids, sizeof ids);
    request_lookup_deinit(&r);

    ck_assert_int_eq(binary_parse_lookup(data(&b), b.len, &two, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.in.ndim, 2);
    ck_assert_uint_eq(r.in.shape[0], 2);
    ck_assert_uint_eq(r.in.shape[1], 3);
    ck_assert_mem_eq(r.in.ids, ids, sizeof ids);
    request_lookup_deinit(&r);

    /* the same as JSON {"ids": [[0,1,2],[3,4,4]]} */
    struct lookup_request j;
    const char *json = "{\"ids\": [[0, 1, 2], [3, 4, 4]]}";
    ck_assert_int_eq(binary_parse_lookup(data(&b), b.len, &two, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_int_eq(request_parse_lookup(json, strlen(json), &LIM, &j, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.in.ndim, j.in.ndim);
    ck_assert_mem_eq(r.in.shape, j.in.shape, sizeof r.in.shape);
    ck_assert_mem_eq(r.in.ids, j.in.ids, 6 * sizeof *j.in.ids);
    request_lookup_deinit(&r);
    request_lookup_deinit(&j);

    /* a 0-d input: one id, shape () */
    body_init(&b, 0);
    put_ids(&b, ids + 3, 1);
    ck_assert_int_eq(binary_parse_lookup(data(&b), b.len, &scalar, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.in.ndim, 0);
    ck_assert_uint_eq(r.in.n, 1);
    ck_assert_int_eq(r.in.ids[0], 3);
    request_lookup_deinit(&r);

    /* no ids: an empty body, flat or with a zero in the shape */
    body_init(&b, 0);
    struct binary_headers empty = {"2,0", NULL};
    ck_assert_int_eq(binary_parse_lookup(data(&b), 0, &flat, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.in.n, 0);
    ck_assert_uint_eq(r.in.shape[0], 0);
    request_lookup_deinit(&r);
    ck_assert_int_eq(binary_parse_lookup(data(&b), 0, &empty, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.in.ndim, 2);
    ck_assert_uint_eq(r.in.n, 0);
    request_lookup_deinit(&r);

    /* ids need no alignment */
    body_init(&b, 3);
    put_ids(&b, ids, 6);
    ck_assert_int_eq(binary_parse_lookup(data(&b), b.len, &two, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_mem_eq(r.in.ids, ids, sizeof ids);
    request_lookup_deinit(&r);
}
END_TEST

START_TEST(lookup_errors)
{
    struct body b;
    const int64_t ids[4] = {0, 1, 2, 3};

    body_init(&b, 0);
    put_ids(&b, ids, 4);
    lookup_fails(&b, "2,3", NULL, STATUS_INVALID_ARGUMENT,
                 "body: has 32 bytes, expected 48 for X-Embedding-Shape \"2,3\" (6 int64 ids)");
    lookup_fails(&b, "3", NULL, STATUS_INVALID_ARGUMENT, "has 32 bytes, expected 24");
    lookup_fails(&b, "", NULL, STATUS_INVALID_ARGUMENT, "has 32 bytes, expected 8");
    lookup_fails(&b, "2,a", NULL, STATUS_INVALID_ARGUMENT, "X-Embedding-Shape \"2,a\"");
    lookup_fails(&b, "4", "0.1", STATUS_INVALID_ARGUMENT,
                 "X-Embedding-Lr: only gradient steps take a learning rate");
    b.len = 13;
    lookup_fails(&b, NULL, NULL, STATUS_INVALID_ARGUMENT,
                 "body: has 13 bytes, not a whole number of int64 ids (8 bytes each; "
                 "expected 8 or 16)");

    /* ids out of range name their index in the shape */
    const int64_t bad[4] = {0, 1, 5, -1};
    body_init(&b, 0);
    put_ids(&b, bad, 4);
    lookup_fails(&b, "2,2", NULL, STATUS_OUT_OF_RANGE, "ids[1][0]: id 5 is out of range [0, 5)");
    lookup_fails(&b, NULL, NULL, STATUS_OUT_OF_RANGE, "ids[2]: id 5 is out of range");
    const int64_t neg[2] = {-1, INT64_MIN};
    body_init(&b, 0);
    put_ids(&b, neg, 2);
    lookup_fails(&b, NULL, NULL, STATUS_OUT_OF_RANGE, "ids[0]: id -1 is out of range [0, 5)");
    lookup_fails(&b, "1,1,2", NULL, STATUS_OUT_OF_RANGE, "ids[0][0][0]: id -1");

    /* max_batch (8): 413, checked from the shape before the body's length */
    body_init(&b, 0);
    lookup_fails(&b, "3,3", NULL, STATUS_PAYLOAD_TOO_LARGE, "ids: 9 ids exceed max_batch 8");
    b.len = 9 * 8;
    lookup_fails(&b, NULL, NULL, STATUS_PAYLOAD_TOO_LARGE, "ids: 9 ids exceed max_batch 8");
    lookup_fails(&b, "1099511627776,1099511627776", NULL, STATUS_PAYLOAD_TOO_LARGE,
                 "ids: too many elements");
}
END_TEST

/* ---- gradients ---- */

static void gradients_fails(const struct body *b, const char *shape, const char *lr,
                            enum status_code want, const char *fragment)
{
    struct binary_headers h = {shape, lr};
    struct gradients_request r;
    check_fail(binary_parse_gradients(data(b), b->len, &h, &LIM, &r, err, sizeof err), want,
               fragment, shape ? shape : "(no shape)");
    ck_assert_ptr_null(r.ids.ids);
    ck_assert_ptr_null(r.grads);
    ck_assert(!r.grads_borrowed && !r.has_lr);
    request_gradients_deinit(&r);
}

START_TEST(gradients_in_place_and_copied)
{
    const int64_t ids[3] = {4, 0, 4};
    const float g[9] = {0.5f, -1.0f, 0.25f, 1e-30f, 3.0f, -0.0f, FLT_MAX, -FLT_MIN, 1.5f};
    struct binary_headers h = {"3,3", NULL};
    struct gradients_request r;
    struct body b;

    body_init(&b, 0);
    put_ids(&b, ids, 3);
    put_floats(&b, g, 9);
    ck_assert_int_eq(binary_parse_gradients(data(&b), b.len, &h, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.ids.ndim, 1);
    ck_assert_uint_eq(r.ids.n, 3);
    ck_assert_mem_eq(r.ids.ids, ids, sizeof ids);
    ck_assert(!r.has_lr);
    /* the floats are the body's own bytes, not a copy */
    ck_assert(r.grads_borrowed);
    ck_assert_ptr_eq(r.grads, (const void *)(data(&b) + sizeof ids));
    ck_assert_mem_eq(r.grads, g, sizeof g);

    /* the same struct contents as the JSON form of the same numbers */
    const char *json = "{\"ids\": [4, 0, 4], \"grads\": [[0.5, -1, 0.25], [1e-30, 3, -0.0], "
                       "[3.4028234663852886e38, -1.1754943508222875e-38, 1.5]]}";
    struct gradients_request j;
    ck_assert_int_eq(request_parse_gradients(json, strlen(json), &LIM, &j, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(j.ids.n, r.ids.n);
    ck_assert_mem_eq(j.ids.ids, r.ids.ids, sizeof ids);
    ck_assert_mem_eq(j.grads, r.grads, sizeof g);
    ck_assert(!j.grads_borrowed);
    request_gradients_deinit(&j);
    request_gradients_deinit(&r); /* does not free the body's bytes */
    ck_assert_mem_eq(data(&b) + sizeof ids, g, sizeof g);

    /* misaligned floats are copied, bit for bit */
    body_init(&b, 1);
    put_ids(&b, ids, 3);
    put_floats(&b, g, 9);
    ck_assert_int_eq(binary_parse_gradients(data(&b), b.len, &h, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert(!r.grads_borrowed);
    ck_assert_ptr_ne(r.grads, (const void *)(data(&b) + sizeof ids));
    ck_assert_mem_eq(r.grads, g, sizeof g);
    ck_assert_mem_eq(r.ids.ids, ids, sizeof ids);
    request_gradients_deinit(&r);
}
END_TEST

START_TEST(gradients_lr_header)
{
    const int64_t ids[1] = {2};
    const float g[3] = {1, 2, 3};
    struct gradients_request r;
    struct body b;

    body_init(&b, 0);
    put_ids(&b, ids, 1);
    put_floats(&b, g, 3);
    const char *good[] = {"0.05", " 1e-3 ", "2", "0.1\t"};
    const double want[] = {0.05, 1e-3, 2, 0.1};
    for (size_t i = 0; i < 4; i++) {
        struct binary_headers h = {"1,3", good[i]};
        ck_assert_int_eq(binary_parse_gradients(data(&b), b.len, &h, &LIM, &r, err, sizeof err),
                         STATUS_OK);
        ck_assert(r.has_lr);
        ck_assert(r.lr == want[i]); /* strtod, as the JSON number */
        request_gradients_deinit(&r);
    }
    gradients_fails(&b, "1,3", "0", STATUS_INVALID_ARGUMENT,
                    "X-Embedding-Lr: lr must be finite and > 0, got 0");
    gradients_fails(&b, "1,3", "-0.5", STATUS_INVALID_ARGUMENT, "got -0.5");
    gradients_fails(&b, "1,3", "nan", STATUS_INVALID_ARGUMENT, "got nan");
    gradients_fails(&b, "1,3", "inf", STATUS_INVALID_ARGUMENT, "got inf");
    gradients_fails(&b, "1,3", "1e999", STATUS_INVALID_ARGUMENT, "got inf");
    gradients_fails(&b, "1,3", "fast", STATUS_INVALID_ARGUMENT,
                    "X-Embedding-Lr \"fast\": not a number");
    gradients_fails(&b, "1,3", "", STATUS_INVALID_ARGUMENT, "not a number");
    gradients_fails(&b, "1,3", "0.1 0.2", STATUS_INVALID_ARGUMENT, "not a number");
}
END_TEST

START_TEST(gradients_errors)
{
    const int64_t ids[2] = {1, 2};
    float g[6] = {1, 2, 3, 4, 5, 6};
    struct body b;

    body_init(&b, 0);
    put_ids(&b, ids, 2);
    put_floats(&b, g, 6);
    gradients_fails(&b, NULL, NULL, STATUS_INVALID_ARGUMENT,
                    "X-Embedding-Shape: missing; a binary gradients body needs n,D (n ids, D = "
                    "embedding_dim 3)");
    gradients_fails(&b, "6", NULL, STATUS_INVALID_ARGUMENT,
                    "X-Embedding-Shape \"6\": expected n,D (2 numbers) for gradients, got 1");
    gradients_fails(&b, "1,2,3", NULL, STATUS_INVALID_ARGUMENT, "got 3");
    gradients_fails(&b, "", NULL, STATUS_INVALID_ARGUMENT, "got 0");
    gradients_fails(&b, "2,4", NULL, STATUS_INVALID_ARGUMENT,
                    "X-Embedding-Shape \"2,4\": D is 4, expected the table's embedding_dim 3");
    gradients_fails(&b, "2;3", NULL, STATUS_INVALID_ARGUMENT, "X-Embedding-Shape \"2;3\"");
    gradients_fails(&b, "0,3", NULL, STATUS_INVALID_ARGUMENT, "ids: must not be empty");
    gradients_fails(&b, "9,3", NULL, STATUS_PAYLOAD_TOO_LARGE, "ids: 9 ids exceed max_batch 8");
    gradients_fails(&b, "3,3", NULL, STATUS_INVALID_ARGUMENT,
                    "body: has 40 bytes, expected 60 for X-Embedding-Shape \"3,3\" (3 int64 "
                    "ids, then 3 x 3 float32)");
    gradients_fails(&b, "1,3", NULL, STATUS_INVALID_ARGUMENT, "has 40 bytes, expected 20");
    b.len--;
    gradients_fails(&b, "2,3", NULL, STATUS_INVALID_ARGUMENT, "has 39 bytes, expected 40");
    b.len++;

    /* ids out of range, then floats that are not finite, by index */
    const int64_t bad_ids[2] = {1, 5};
    struct body c;
    body_init(&c, 0);
    put_ids(&c, bad_ids, 2);
    put_floats(&c, g, 6);
    gradients_fails(&c, "2,3", NULL, STATUS_OUT_OF_RANGE, "ids[1]: id 5 is out of range [0, 5)");
    const float specials[] = {NAN, INFINITY, -INFINITY, -NAN};
    const char *names[] = {"nan", "inf", "-inf", "nan"};
    for (size_t i = 0; i < 4; i++) {
        char want[64];
        body_init(&c, 0);
        put_ids(&c, ids, 2);
        g[4] = specials[i];
        put_floats(&c, g, 6);
        snprintf(want, sizeof want, "grads[1][1]: %s is not a finite float32", names[i]);
        gradients_fails(&c, "2,3", NULL, STATUS_INVALID_ARGUMENT, want);
    }
}
END_TEST

/* The finite check works sixteen floats at a time, then the tail: a bad
 * value anywhere in a long body (first or last of a block, in the tail) is
 * found at its own index. */
START_TEST(gradients_non_finite_anywhere)
{
    static const struct request_limits wide = {
        .num_embeddings = 5, .dim = 301, .max_batch = 8, .max_k = 10};
    size_t n = 4, count = n * 301, len = n * 8 + count * 4; /* 1204: a tail of 4 */
    unsigned char *body = aligned_alloc(16, len);
    const size_t spots[] = {0, 15, 16, 255, 700, count - 5, count - 4, count - 1};

    ck_assert_ptr_nonnull(body);
    memset(body, 0, n * 8); /* ids 0 */
    for (size_t s = 0; s < sizeof spots / sizeof spots[0]; s++) {
        float *g = (float *)(void *)(body + n * 8);
        char want[64];
        struct gradients_request r;
        struct binary_headers h = {"4,301", NULL};
        for (size_t i = 0; i < count; i++)
            g[i] = (float)i * 0.5f;
        g[spots[s]] = INFINITY;
        if (spots[s] + 7 < count)
            g[spots[s] + 7] = NAN; /* a later one does not matter */
        snprintf(want, sizeof want, "grads[%zu][%zu]: inf", spots[s] / 301, spots[s] % 301);
        check_fail(binary_parse_gradients((const char *)body, len, &h, &wide, &r, err, sizeof err),
                   STATUS_INVALID_ARGUMENT, want, "long body");
        request_gradients_deinit(&r);
    }
    free(body);
}
END_TEST

/* ---- rows ---- */

START_TEST(rows_parse_and_errors)
{
    const int64_t ids[2] = {3, 3};
    float v[6] = {1, 2, 3, -4, -5, -6};
    struct binary_headers h = {"2,3", NULL};
    struct rows_request r;
    struct body b;

    body_init(&b, 0);
    put_ids(&b, ids, 2);
    put_floats(&b, v, 6);
    ck_assert_int_eq(binary_parse_rows(data(&b), b.len, &h, &LIM, &r, err, sizeof err),
                     STATUS_OK);
    ck_assert_uint_eq(r.ids.n, 2);
    ck_assert_mem_eq(r.ids.ids, ids, sizeof ids);
    ck_assert(r.vectors_borrowed);
    ck_assert_mem_eq(r.vectors, v, sizeof v);
    request_rows_deinit(&r);

    struct binary_headers with_lr = {"2,3", "0.1"}, no_shape = {NULL, NULL},
                          wrong_d = {"3,2", NULL};
    ck_assert_int_eq(binary_parse_rows(data(&b), b.len, &with_lr, &LIM, &r, err, sizeof err),
                     STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "X-Embedding-Lr: only gradient steps take a learning "
                                      "rate, not row assignments"));
    request_rows_deinit(&r);
    ck_assert_int_eq(binary_parse_rows(data(&b), b.len, &no_shape, &LIM, &r, err, sizeof err),
                     STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "a binary rows body needs n,D"));
    request_rows_deinit(&r);
    ck_assert_int_eq(binary_parse_rows(data(&b), b.len, &wrong_d, &LIM, &r, err, sizeof err),
                     STATUS_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(err, "D is 2, expected the table's embedding_dim 3"));
    ck_assert_ptr_null(r.vectors);
    request_rows_deinit(&r);

    body_init(&b, 0);
    put_ids(&b, ids, 2);
    v[5] = NAN;
    put_floats(&b, v, 6);
    ck_assert_int_eq(binary_parse_rows(data(&b), b.len, &h, &LIM, &r, err, sizeof err),
                     STATUS_INVALID_ARGUMENT);
    ck_assert_str_eq(err, "vectors[1][2]: nan is not a finite float32");
    ck_assert_ptr_null(r.vectors);
    ck_assert(!r.vectors_borrowed);
    request_rows_deinit(&r);

    /* the deinit of a zeroed or failed struct is safe twice */
    struct rows_request z = {0};
    request_rows_deinit(&z);
    request_rows_deinit(&z);
}
END_TEST

static Suite *proto_binary_suite(void)
{
    Suite *s = suite_create("proto_binary");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, shape_header);
    tcase_add_test(tc, lookup_shapes);
    tcase_add_test(tc, lookup_errors);
    tcase_add_test(tc, gradients_in_place_and_copied);
    tcase_add_test(tc, gradients_lr_header);
    tcase_add_test(tc, gradients_errors);
    tcase_add_test(tc, gradients_non_finite_anywhere);
    tcase_add_test(tc, rows_parse_and_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_binary_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
