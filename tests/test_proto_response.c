/* test_proto_response.c - the answer writers of proto/response.c: exact
 * bytes for small answers, the binary layout, and round trips. */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "optim.h"
#include "request.h"
#include "response.h"
#include "testutil.h"
#include "vocab.h"

static struct buf b;

static void setup(void)
{
    buf_init(&b, 0);
}

static void teardown(void)
{
    buf_deinit(&b);
}

/* Compares the buffer with want exactly, then empties it. */
static void expect_bytes(const char *want)
{
    ck_assert(!b.failed);
    ck_assert_msg(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0,
                  "got  %.*s\nwant %s", (int)b.len, b.data ? b.data : "", want);
    b.len = 0;
}

static struct table *small_table(bool with_vocab, const struct table_settings *s)
{
    struct matrix w;
    struct vocab *v = NULL;
    struct table *t = NULL;
    char err[STATUS_ERR_MAX];
    static const char *const toks[] = {"king", "qu\"een", "\xC3\xA9t\xC3\xA9", "a\tb", "e"};

    ck_assert_int_eq(matrix_init(&w, 5, 3), CORE_OK);
    if (with_vocab) {
        ck_assert_int_eq(vocab_new(&v, 5), CORE_OK);
        for (int i = 0; i < 5; i++)
            ck_assert_int_eq(vocab_add(v, toks[i], strlen(toks[i]), NULL), CORE_OK);
    }
    ck_assert_int_eq(table_new(&t, "words", &w, v, s, err, sizeof err), CORE_OK);
    return t;
}

START_TEST(errors_and_status)
{
    response_error(&b, STATUS_INVALID_JSON, "invalid JSON at byte 3: trailing bytes");
    expect_bytes("{\"error\":{\"code\":\"invalid_json\","
                 "\"message\":\"invalid JSON at byte 3: trailing bytes\"}}");
    response_error(&b, STATUS_UNKNOWN_TOKEN, "tokens[1]: unknown token \"a\\b\"\n");
    expect_bytes("{\"error\":{\"code\":\"unknown_token\","
                 "\"message\":\"tokens[1]: unknown token \\\"a\\\\b\\\"\\n\"}}");
    /* a message cut inside a UTF-8 character still makes valid JSON */
    response_error(&b, STATUS_OUT_OF_RANGE, "x \xC3");
    expect_bytes("{\"error\":{\"code\":\"out_of_range\",\"message\":\"x ?\"}}");
    response_error(&b, STATUS_INTERNAL, NULL);
    expect_bytes("{\"error\":{\"code\":\"internal\",\"message\":\"\"}}");
    response_status(&b, "ok");
    expect_bytes("{\"status\":\"ok\"}");
    response_status(&b, "loading");
    expect_bytes("{\"status\":\"loading\"}");
}
END_TEST

START_TEST(status_table)
{
    static const struct {
        enum status_code code;
        const char *name;
        int http;
    } want[] = {
        {STATUS_OK, "ok", 200},
        {STATUS_INVALID_JSON, "invalid_json", 400},
        {STATUS_INVALID_ARGUMENT, "invalid_argument", 400},
        {STATUS_OUT_OF_RANGE, "out_of_range", 400},
        {STATUS_UNKNOWN_TOKEN, "unknown_token", 404},
        {STATUS_NOT_FOUND, "not_found", 404},
        {STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", 405},
        {STATUS_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415},
        {STATUS_PAYLOAD_TOO_LARGE, "payload_too_large", 413},
        {STATUS_TABLE_FROZEN, "table_frozen", 409},
        {STATUS_UNAUTHORIZED, "unauthorized", 401},
        {STATUS_NOT_READY, "not_ready", 503},
        {STATUS_UNAVAILABLE, "unavailable", 503},
        {STATUS_INTERNAL, "internal", 500},
    };
    ck_assert_int_eq(sizeof want / sizeof want[0], STATUS_CODE_COUNT);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_str_eq(status_name(want[i].code), want[i].name);
        ck_assert_int_eq(status_http(want[i].code), want[i].http);
    }
    ck_assert_int_eq(status_http(STATUS_CODE_COUNT), 500);
    ck_assert_str_eq(status_name((enum status_code)-1), "internal");

    ck_assert_int_eq(status_from_core(CORE_OK), STATUS_OK);
    ck_assert_int_eq(status_from_core(CORE_EINVAL), STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(status_from_core(CORE_ERANGE), STATUS_OUT_OF_RANGE);
    ck_assert_int_eq(status_from_core(CORE_EFROZEN), STATUS_TABLE_FROZEN);
    ck_assert_int_eq(status_from_core(CORE_ENOTFOUND), STATUS_NOT_FOUND);
    ck_assert_int_eq(status_from_core(CORE_ETOOBIG), STATUS_PAYLOAD_TOO_LARGE);
    ck_assert_int_eq(status_from_core(CORE_EUNSUPPORTED), STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(status_from_core(CORE_ENOMEM), STATUS_INTERNAL);
    ck_assert_int_eq(status_from_core(CORE_EIO), STATUS_INTERNAL);
    ck_assert_int_eq(status_from_core(CORE_EFORMAT), STATUS_INTERNAL);
    ck_assert_int_eq(status_from_core(CORE_ERR_COUNT), STATUS_INTERNAL);
    ck_assert_int_eq(status_from_core(-4), STATUS_INTERNAL);
}
END_TEST

START_TEST(lookup_nests_as_the_input)
{
    const float rows[] = {1, 2, 3, 4.5f, -0.0f, 0.1f, 7, 8, 9, 10, 11, 12};

    size_t one[] = {2};
    response_lookup(&b, one, 1, 3, rows);
    expect_bytes("{\"shape\":[2,3],\"embeddings\":[[1.0,2.0,3.0],[4.5,-0.0,0.1]]}");

    response_lookup(&b, NULL, 0, 3, rows); /* a scalar id: one row */
    expect_bytes("{\"shape\":[3],\"embeddings\":[1.0,2.0,3.0]}");

    size_t three[] = {2, 1, 2};
    response_lookup(&b, three, 3, 3, rows);
    expect_bytes("{\"shape\":[2,1,2,3],\"embeddings\":[[[[1.0,2.0,3.0],[4.5,-0.0,0.1]]],"
                 "[[[7.0,8.0,9.0],[10.0,11.0,12.0]]]]}");

    size_t empty[] = {0};
    response_lookup(&b, empty, 1, 3, rows);
    expect_bytes("{\"shape\":[0,3],\"embeddings\":[]}");

    size_t empty_inner[] = {2, 0};
    response_lookup(&b, empty_inner, 2, 3, rows);
    expect_bytes("{\"shape\":[2,0,3],\"embeddings\":[[],[]]}");

    size_t bags[] = {4}; /* a bags answer is [B, D] */
    response_lookup(&b, bags, 1, 1, rows);
    expect_bytes("{\"shape\":[4,1],\"embeddings\":[[1.0],[2.0],[3.0],[4.5]]}");
}
END_TEST

START_TEST(lookup_round_trips_every_float)
{
    enum { N = 64, D = 37 };
    float *rows = malloc(N * D * sizeof *rows);
    ck_assert_ptr_nonnull(rows);
    uint32_t x = 12345;
    for (size_t i = 0; i < N * D; i++) {
        do { /* random finite bit patterns, denormals included */
            x = x * 1664525u + 1013904223u;
            memcpy(&rows[i], &x, sizeof x);
        } while (!isfinite(rows[i]));
    }
    size_t shape[] = {4, 16};
    response_lookup(&b, shape, 2, D, rows);
    ck_assert(!b.failed);
    /* the answer is JSON... */
    cJSON *root = cJSON_ParseWithLength(b.data, b.len);
    ck_assert_ptr_nonnull(root);
    const cJSON *emb = cJSON_GetObjectItemCaseSensitive(root, "embeddings");
    ck_assert_int_eq(cJSON_GetArraySize(emb), 4);
    ck_assert_int_eq(cJSON_GetArraySize(emb->child), 16);
    ck_assert_int_eq(cJSON_GetArraySize(emb->child->child), D);
    cJSON_Delete(root);
    /* ...and each number's text reads back with strtof to the same bits */
    const char *p = strstr(b.data, "\"embeddings\":") + strlen("\"embeddings\":");
    const char *end = b.data + b.len;
    size_t k = 0;
    while (p < end) {
        if (strchr("-0123456789", *p) == NULL) {
            p++;
            continue;
        }
        char *after;
        float back = strtof(p, &after);
        ck_assert_uint_lt(k, N * D);
        ck_assert_msg(memcmp(&back, &rows[k], sizeof back) == 0, "value %zu: %a read back as %a",
                      k, (double)rows[k], (double)back);
        k++;
        p = after;
    }
    ck_assert_uint_eq(k, N * D);
    free(rows);
}
END_TEST

START_TEST(binary_is_little_endian_float32)
{
    const float v[] = {1.0f, -2.0f, 0.15625f};
    response_binary(&b, v, 3);
    const unsigned char want[] = {0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0,
                                  0x00, 0x00, 0x20, 0x3E};
    ck_assert_uint_eq(b.len, sizeof want);
    ck_assert_mem_eq(b.data, want, sizeof want);
    b.len = 0;

    char text[RESPONSE_SHAPE_MAX];
    size_t shape[] = {2, 5};
    ck_assert_uint_eq(response_shape_text(text, sizeof text, shape, 2, 300), 7);
    ck_assert_str_eq(text, "2,5,300");
    ck_assert_uint_eq(response_shape_text(text, sizeof text, NULL, 0, 300), 3);
    ck_assert_str_eq(text, "300");
    ck_assert_uint_eq(response_shape_text(text, 7, shape, 2, 300), 0); /* no room for NUL */
    ck_assert_str_eq(text, "");
    size_t big[REQUEST_MAX_DIMS];
    for (size_t i = 0; i < REQUEST_MAX_DIMS; i++)
        big[i] = SIZE_MAX;
    ck_assert_uint_gt(response_shape_text(text, sizeof text, big, REQUEST_MAX_DIMS,
                                          SIZE_MAX), 0);
}
END_TEST

START_TEST(scores_and_neighbors)
{
    const float s[] = {0.5f, -1.0f, 0.333333343f};
    response_scores(&b, s, 3);
    expect_bytes("{\"scores\":[0.5,-1.0,0.33333334]}");
    response_scores(&b, s, 0);
    expect_bytes("{\"scores\":[]}");

    struct table_settings set;
    table_settings_init(&set);
    struct table *t = small_table(true, &set);
    const struct topk_hit hits[] = {{1, 0.875f}, {2, 0.5f}, {3, -0.25f}, {0, 0.0f}};
    const size_t counts[] = {2, 1};
    response_neighbors(&b, hits, counts, 2, 2, table_vocab(t));
    expect_bytes("{\"results\":[[{\"id\":1,\"token\":\"qu\\\"een\",\"score\":0.875},"
                 "{\"id\":2,\"token\":\"\xC3\xA9t\xC3\xA9\",\"score\":0.5}],"
                 "[{\"id\":3,\"token\":\"a\\tb\",\"score\":-0.25}]]}");
    response_neighbors(&b, hits, counts, 2, 2, NULL);
    expect_bytes("{\"results\":[[{\"id\":1,\"score\":0.875},{\"id\":2,\"score\":0.5}],"
                 "[{\"id\":3,\"score\":-0.25}]]}");
    const size_t none[] = {0};
    response_neighbors(&b, hits, none, 1, 4, NULL);
    expect_bytes("{\"results\":[[]]}");
    table_free(t);
}
END_TEST

START_TEST(tokens_in_order)
{
    struct table_settings set;
    table_settings_init(&set);
    struct table *t = small_table(true, &set); /* table_new indexed the vocabulary */
    const struct vocab *v = table_vocab(t);
    int64_t first, count;
    ck_assert_int_eq(vocab_prefix_range(v, "", 0, &first, &count), CORE_OK);
    response_tokens(&b, v, first, count);
    expect_bytes("{\"tokens\":[{\"id\":3,\"token\":\"a\\tb\"},{\"id\":4,\"token\":\"e\"},"
                 "{\"id\":0,\"token\":\"king\"},{\"id\":1,\"token\":\"qu\\\"een\"},"
                 "{\"id\":2,\"token\":\"\xC3\xA9t\xC3\xA9\"}]}");
    response_tokens(&b, v, 1, 2);
    expect_bytes("{\"tokens\":[{\"id\":4,\"token\":\"e\"},{\"id\":0,\"token\":\"king\"}]}");
    response_tokens(&b, v, 4, 3); /* past the end: skipped */
    expect_bytes("{\"tokens\":[{\"id\":2,\"token\":\"\xC3\xA9t\xC3\xA9\"}]}");
    response_tokens(&b, v, 2, 0);
    expect_bytes("{\"tokens\":[]}");
    table_free(t);
}
END_TEST

START_TEST(table_info_and_list)
{
    struct table_settings s;
    table_settings_init(&s);
    struct table *plain = small_table(false, &s);
    s.has_padding = true;
    s.padding_idx = -1;
    s.has_max_norm = true;
    s.max_norm = 1.5;
    s.norm_type = 1;
    s.scale_grad_by_freq = true;
    s.freeze = true;
    struct table *rich = small_table(true, &s);

    response_table_info(&b, plain, NULL);
    expect_bytes("{\"name\":\"words\",\"num_embeddings\":5,\"embedding_dim\":3,"
                 "\"dtype\":\"float32\",\"frozen\":false,\"padding_idx\":null,"
                 "\"max_norm\":null,\"norm_type\":2.0,\"scale_grad_by_freq\":false,"
                 "\"optimizer\":null,\"vocab\":false,\"version\":0,\"seq\":0}");

    struct optim_config sgd, adam, adagrad;
    optim_config_defaults(&sgd, OPTIM_SGD);
    optim_config_defaults(&adam, OPTIM_SPARSE_ADAM);
    optim_config_defaults(&adagrad, OPTIM_ADAGRAD);
    response_table_info(&b, rich, &adam);
    expect_bytes("{\"name\":\"words\",\"num_embeddings\":5,\"embedding_dim\":3,"
                 "\"dtype\":\"float32\",\"frozen\":true,\"padding_idx\":4,"
                 "\"max_norm\":1.5,\"norm_type\":1.0,\"scale_grad_by_freq\":true,"
                 "\"optimizer\":{\"name\":\"sparse_adam\",\"lr\":0.001,\"betas\":[0.9,0.999],"
                 "\"eps\":1e-08},\"vocab\":true,\"version\":0,\"seq\":0}");

    const struct table *tables[] = {plain, rich};
    const struct optim_config *opts[] = {&sgd, &adagrad};
    response_table_list(&b, tables, opts, 2);
    ck_assert(!b.failed);
    cJSON *root = cJSON_ParseWithLength(b.data, b.len);
    ck_assert_ptr_nonnull(root);
    char *flat = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "tables"), 0), "optimizer"));
    ck_assert_str_eq(flat, "{\"name\":\"sgd\",\"lr\":0.01}");
    free(flat);
    cJSON_Delete(root);
    ck_assert_ptr_nonnull(strstr(b.data, "\"optimizer\":{\"name\":\"adagrad\",\"lr\":0.01,"
                                         "\"lr_decay\":0.0,\"initial_accumulator_value\":0.0,"
                                         "\"eps\":1e-10}"));
    b.len = 0;
    response_table_list(&b, tables, NULL, 0);
    expect_bytes("{\"tables\":[]}");
    table_free(plain);
    table_free(rich);

    s.norm_type = INFINITY;
    s.has_max_norm = true;
    struct table *inf = small_table(false, &s);
    response_table_info(&b, inf, NULL);
    ck_assert_ptr_nonnull(strstr(b.data, "\"norm_type\":\"inf\""));
    b.len = 0;
    table_free(inf);
}
END_TEST

START_TEST(write_answers)
{
    response_write_result(&b, 7, 3, 9);
    expect_bytes("{\"version\":7,\"rows\":3,\"seq\":9}");
    response_write_result(&b, UINT64_MAX, 0, UINT64_MAX);
    expect_bytes("{\"version\":18446744073709551615,\"rows\":0,\"seq\":18446744073709551615}");
    response_snapshot(&b, "/data/words/snapshot-9", 7, 9);
    expect_bytes("{\"path\":\"/data/words/snapshot-9\",\"version\":7,\"seq\":9}");
}
END_TEST

START_TEST(limits_fail_the_buffer)
{
    struct buf small;
    const float rows[] = {1, 2, 3, 4, 5, 6};
    size_t shape[] = {2};
    buf_init(&small, 16);
    response_lookup(&small, shape, 1, 3, rows);
    ck_assert(small.failed);
    buf_deinit(&small);

    /* a limit that fits the answer exactly is not failed by a reserve */
    const char *want = "{\"shape\":[2,3],\"embeddings\":[[1.0,2.0,3.0],[4.0,5.0,6.0]]}";
    buf_init(&small, strlen(want));
    response_lookup(&small, shape, 1, 3, rows);
    ck_assert(!small.failed);
    ck_assert_uint_eq(small.len, strlen(want));
    ck_assert_mem_eq(small.data, want, small.len);
    buf_deinit(&small);
}
END_TEST

/* Bytes that are not UTF-8 (a token cut inside a character) become
 * U+FFFD, one per byte; valid sequences and escapes are kept. */
START_TEST(broken_utf8_becomes_replacement)
{
    buf_put_json_string(&b, "caf\xC3", 4);
    expect_bytes("\"caf\\ufffd\"");
    buf_put_json_string(&b, "x\xE2\x82", 3);
    expect_bytes("\"x\\ufffd\\ufffd\"");
    buf_put_json_string(&b, "\xC3\xA9\x01\xFF\"\xF0\x9F\x98\x80", 9);
    expect_bytes("\"\xC3\xA9\\u0001\\ufffd\\\"\xF0\x9F\x98\x80\"");
    buf_put_json_string(&b, "\xED\xA0\x80", 3); /* a surrogate's encoding */
    expect_bytes("\"\\ufffd\\ufffd\\ufffd\"");
}
END_TEST

struct fetch_ctx {
    const float *rows;
    size_t dim, calls, fail_at;
};

static bool fetch(void *ctx, size_t first, size_t n, float *out)
{
    struct fetch_ctx *f = ctx;
    if (++f->calls == f->fail_at)
        return false;
    memcpy(out, f->rows + first * f->dim, n * f->dim * sizeof(float));
    return true;
}

/* Chunked rows write the same bytes as one array, in chunks. */
START_TEST(lookup_rows_in_chunks)
{
    enum { ROWS = 3000, DIM = 50 }; /* chunks of 1310 rows: three of them */
    float *rows = malloc(ROWS * DIM * sizeof(float));
    for (size_t i = 0; i < (size_t)ROWS * DIM; i++)
        rows[i] = (float)i * 0.25f - 7;
    size_t shape[2] = {ROWS / 10, 10};
    response_lookup(&b, shape, 2, DIM, rows);
    char *want = malloc(b.len);
    size_t want_len = b.len;
    memcpy(want, b.data, b.len);
    b.len = 0;
    struct fetch_ctx f = {rows, DIM, 0, 0};
    ck_assert(response_lookup_rows(&b, shape, 2, DIM, fetch, &f));
    ck_assert_uint_eq(f.calls, 3);
    ck_assert_uint_eq(b.len, want_len);
    ck_assert_mem_eq(b.data, want, want_len);
    b.len = 0;
    /* a scalar input: one row */
    f.calls = 0;
    ck_assert(response_lookup_rows(&b, shape, 0, 2, fetch, &f));
    expect_bytes("{\"shape\":[2],\"embeddings\":[-7.0,-6.75]}");
    /* a fetch that fails fails the answer */
    f = (struct fetch_ctx){rows, DIM, 0, 2};
    ck_assert(!response_lookup_rows(&b, shape, 2, DIM, fetch, &f));
    ck_assert(b.failed);
    free(want);
    free(rows);
}
END_TEST

START_TEST(format_double_is_shortest)
{
    char t[RESPONSE_DOUBLE_MAX];
    ck_assert_uint_eq(response_format_double(0.1, t), 3);
    ck_assert_str_eq(t, "0.1");
    response_format_double(1e-8, t);
    ck_assert_str_eq(t, "1e-08");
    response_format_double(5, t);
    ck_assert_str_eq(t, "5");
    response_format_double(1.0 / 3, t);
    ck_assert_str_eq(t, "0.3333333333333333");
    ck_assert_double_eq(strtod(t, NULL), 1.0 / 3);
    response_format_double(-INFINITY, t);
    ck_assert_str_eq(t, "-inf");
    response_format_double(NAN, t);
    ck_assert_str_eq(t, "nan");
}
END_TEST

static Suite *proto_response_suite(void)
{
    Suite *s = suite_create("proto_response");
    TCase *tc = tcase_create("write");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, errors_and_status);
    tcase_add_test(tc, status_table);
    tcase_add_test(tc, lookup_nests_as_the_input);
    tcase_add_test(tc, lookup_round_trips_every_float);
    tcase_add_test(tc, binary_is_little_endian_float32);
    tcase_add_test(tc, scores_and_neighbors);
    tcase_add_test(tc, tokens_in_order);
    tcase_add_test(tc, table_info_and_list);
    tcase_add_test(tc, write_answers);
    tcase_add_test(tc, limits_fail_the_buffer);
    tcase_add_test(tc, format_double_is_shortest);
    tcase_add_test(tc, broken_utf8_becomes_replacement);
    tcase_add_test(tc, lookup_rows_in_chunks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_response_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
