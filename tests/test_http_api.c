/* test_http_api.c - black-box tests of every endpoint and error code of
 * API.md against the real binary, auth off.
 *
 * One server serves the whole suite (started once, in the parent process;
 * each test runs in a forked child and talks to it over loopback). Tables,
 * written by the suite itself:
 *   words   word2vec text, 6 x 4, vocabulary, padding_idx 0, trainable (sgd lr 0.5)
 *   words2  the same file, frozen, oov falls back to id 0
 *   items   init 100 x 8 (seed 7), padding_idx 3, max_norm 1.0, adagrad
 *   frozen  .npy 10 x 3 (value 3i + j), frozen
 * Tests that write use rows no other test reads, so their order does not
 * matter. */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "http_client.h"
#include "testutil.h"

static struct test_server srv;

static const char words_txt[] = "6 4\n"
                                "<pad> 0 0 0 0\n"
                                "king 1 0.5 0 0\n"
                                "queen 0.9 0.6 0.1 0\n"
                                "man 0 1 0 0.5\n"
                                "woman 0 0.9 0.1 0.6\n"
                                "apple 0 0 1 0\n";

static const float words[6][4] = {
    {0, 0, 0, 0}, {1, 0.5f, 0, 0}, {0.9f, 0.6f, 0.1f, 0}, {0, 1, 0, 0.5f}, {0, 0.9f, 0.1f, 0.6f},
    {0, 0, 1, 0},
};

#define MAX_BODY 4096
#define MAX_BATCH 64

static const char config_fmt[] =
    "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},\n"
    " \"data_dir\": \"%s/data\",\n"
    " \"limits\": {\"max_body_bytes\": %d, \"max_batch\": %d, \"max_k\": 5},\n"
    " \"snapshot\": {\"on_shutdown\": false},\n"
    " \"tables\": [\n"
    "  {\"name\": \"words\", \"path\": \"words.txt\", \"format\": \"word2vec\", \"freeze\": false,\n"
    "   \"padding_idx\": 0, \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.5}},\n"
    "  {\"name\": \"words2\", \"path\": \"words.txt\", \"oov\": 0},\n"
    "  {\"name\": \"items\", \"init\": {\"num_embeddings\": 100, \"embedding_dim\": 8, \"seed\": 7},\n"
    "   \"padding_idx\": 3, \"max_norm\": 1.0, \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.1}},\n"
    "  {\"name\": \"frozen\", \"path\": \"frozen.npy\"}\n"
    " ]}\n";

static void start_server(void)
{
    test_server_prepare(&srv);
    free(testutil_write_file(srv.dir, "words.txt", words_txt, strlen(words_txt)));
    float frozen[10 * 3];
    for (int i = 0; i < 30; i++)
        frozen[i] = (float)i;
    write_npy_f32(srv.dir, "frozen.npy", frozen, 10, 3);
    char config[4096];
    snprintf(config, sizeof config, config_fmt, srv.dir, MAX_BODY, MAX_BATCH);
    test_server_start(&srv, config, NULL, true);
}

static void stop_server(void)
{
    test_server_cleanup(&srv);
}

/* ---- helpers ------------------------------------------------------------- */

static cJSON *parse_body(const struct reply *r)
{
    cJSON *root = cJSON_ParseWithLength(r->body, r->len);
    ck_assert_msg(root != NULL, "not JSON: %.300s", r->body);
    return root;
}

static cJSON *item(const cJSON *obj, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    ck_assert_msg(v != NULL, "no \"%s\" in %.300s", key, cJSON_PrintUnformatted(obj));
    return v;
}

/* Flattens a nested array of numbers into out (at most max); returns count. */
static size_t flatten(const cJSON *v, float *out, size_t max)
{
    if (cJSON_IsNumber(v)) {
        ck_assert_uint_gt(max, 0);
        out[0] = (float)v->valuedouble;
        return 1;
    }
    ck_assert(cJSON_IsArray(v));
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) n += flatten(e, out + n, max - n);
    return n;
}

static void check_shape(const cJSON *root, const int *want, size_t n)
{
    const cJSON *shape = item(root, "shape");
    ck_assert_int_eq(cJSON_GetArraySize(shape), (int)n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(cJSON_GetArrayItem(shape, (int)i)->valueint, want[i]);
}

/* Looks up ids (a JSON text) in table and returns the flat floats. */
static size_t lookup_floats(const char *table, const char *ids_json, float *out, size_t max)
{
    char path[128], body[1024];
    snprintf(path, sizeof path, "/v1/tables/%s/lookup", table);
    snprintf(body, sizeof body, "{\"ids\": %s}", ids_json);
    struct reply r;
    http_json(&srv, "POST", path, body, &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    size_t n = flatten(item(root, "embeddings"), out, max);
    cJSON_Delete(root);
    reply_free(&r);
    return n;
}

static uint64_t table_version_of(const char *table)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tables/%s", table);
    struct reply r;
    http_get(&srv, path, &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    uint64_t v = (uint64_t)item(root, "version")->valuedouble;
    cJSON_Delete(root);
    reply_free(&r);
    return v;
}

static void expect(const char *method, const char *path, const char *body, long status,
                   const char *code)
{
    struct reply r;
    if (body)
        http_json(&srv, method, path, body, &r);
    else
        http_do(&srv, method, path, NULL, NULL, 0, NULL, &r);
    ck_reply(&r, status, code);
    reply_free(&r);
}

/* ---- health and introspection ------------------------------------------- */

START_TEST(healthz_and_readyz)
{
    struct reply r;
    http_get(&srv, "/healthz", &r);
    ck_reply(&r, 200, NULL);
    ck_assert_str_eq(r.body, "{\"status\":\"ok\"}");
    char *ct = reply_header(&r, "Content-Type");
    ck_assert_str_eq(ct, "application/json");
    free(ct);
    reply_free(&r);

    http_get(&srv, "/readyz", &r);
    ck_reply(&r, 200, NULL);
    ck_assert_str_eq(r.body, "{\"status\":\"ready\"}");
    reply_free(&r);

    http_do(&srv, "HEAD", "/healthz", NULL, NULL, 0, NULL, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_eq(r.len, 0);
    reply_free(&r);
}
END_TEST

START_TEST(table_list_and_info)
{
    struct reply r;
    http_get(&srv, "/v1/tables", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    cJSON *tables = item(root, "tables");
    ck_assert_int_eq(cJSON_GetArraySize(tables), 4);
    const char *names[] = {"words", "words2", "items", "frozen"};
    for (int i = 0; i < 4; i++)
        ck_assert_str_eq(item(cJSON_GetArrayItem(tables, i), "name")->valuestring, names[i]);
    cJSON_Delete(root);
    reply_free(&r);

    http_get(&srv, "/v1/tables/items", &r);
    ck_reply(&r, 200, NULL);
    root = parse_body(&r);
    ck_assert_str_eq(item(root, "name")->valuestring, "items");
    ck_assert_int_eq(item(root, "num_embeddings")->valueint, 100);
    ck_assert_int_eq(item(root, "embedding_dim")->valueint, 8);
    ck_assert_str_eq(item(root, "dtype")->valuestring, "float32");
    ck_assert(cJSON_IsFalse(item(root, "frozen")));
    ck_assert_int_eq(item(root, "padding_idx")->valueint, 3);
    ck_assert_double_eq(item(root, "max_norm")->valuedouble, 1.0);
    ck_assert(cJSON_IsFalse(item(root, "vocab")));
    cJSON *opt = item(root, "optimizer");
    ck_assert_str_eq(item(opt, "name")->valuestring, "adagrad");
    ck_assert_double_eq_tol(item(opt, "lr")->valuedouble, 0.1, 1e-12);
    cJSON_Delete(root);
    reply_free(&r);

    http_get(&srv, "/v1/tables/frozen", &r);
    ck_reply(&r, 200, NULL);
    root = parse_body(&r);
    ck_assert(cJSON_IsTrue(item(root, "frozen")));
    ck_assert(cJSON_IsNull(item(root, "padding_idx")));
    ck_assert(cJSON_IsNull(item(root, "max_norm")));
    ck_assert(cJSON_IsNull(item(root, "optimizer")));
    ck_assert_int_eq(item(root, "num_embeddings")->valueint, 10);
    cJSON_Delete(root);
    reply_free(&r);

    http_get(&srv, "/v1/tables/words2", &r);
    root = parse_body(&r);
    ck_assert(cJSON_IsTrue(item(root, "vocab")));
    cJSON_Delete(root);
    reply_free(&r);
}
END_TEST

START_TEST(metrics_exposition)
{
    expect("POST", "/v1/tables/words2/lookup", "{\"ids\": [1, 2]}", 200, NULL);
    expect("GET", "/nowhere", NULL, 404, "not_found");
    expect("PUT", "/v1/tables/items/rows",
           "{\"ids\": [50], \"vectors\": [[0, 0, 0, 0, 0, 0, 0, 0.5]]}", 200, NULL);
    struct reply r;
    http_get(&srv, "/metrics", &r);
    ck_reply(&r, 200, NULL);
    char *ct = reply_header(&r, "Content-Type");
    ck_assert_ptr_nonnull(strstr(ct, "text/plain"));
    free(ct);
    const char *want[] = {
        "# TYPE embedding_server_requests_total counter",
        "embedding_server_requests_total{route=\"/v1/tables/{t}/lookup\",status=\"200\"} ",
        "embedding_server_requests_total{route=\"unmatched\",status=\"404\"} ",
        "# TYPE embedding_server_request_duration_seconds histogram",
        "embedding_server_request_duration_seconds_bucket{route=\"/v1/tables/{t}/lookup\",le=\"+Inf\"} ",
        "embedding_server_request_duration_seconds_count{route=\"/v1/tables/{t}/lookup\"} ",
        "embedding_server_rows_served_total{table=\"words2\"} ",
        "embedding_server_updates_applied_total{table=\"words\"} ",
        "embedding_server_table_version{table=\"items\"} ",
        "embedding_server_table_seq{table=\"items\"} ",
        "embedding_server_log_sync_seconds_total{table=\"items\"} ",
        "embedding_server_log_broken{table=\"items\"} 0",
        "embedding_server_ready 1",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(r.body, want[i]) != NULL, "missing \"%s\" in\n%s", want[i], r.body);
    /* rows served counts the two rows just looked up (at least) */
    const char *p = strstr(r.body, "embedding_server_rows_served_total{table=\"words2\"} ");
    ck_assert_int_ge(atoi(strchr(p, '}') + 2), 2);
    /* the row assignment went through the log: one sync at least */
    p = strstr(r.body, "embedding_server_log_syncs_total{table=\"items\"} ");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_ge(atoi(strchr(p, '}') + 2), 1);
    p = strstr(r.body, "embedding_server_log_records_total{table=\"items\"} ");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_ge(atoi(strchr(p, '}') + 2), 1);
    reply_free(&r);
}
END_TEST

/* ---- lookup -------------------------------------------------------------- */

START_TEST(lookup_ids_any_shape)
{
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/words2/lookup", "{\"ids\": [[1, 2], [5, 1]]}", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    check_shape(root, (const int[]){2, 2, 4}, 3);
    float v[16];
    ck_assert_uint_eq(flatten(item(root, "embeddings"), v, 16), 16);
    const int ids[] = {1, 2, 5, 1};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            ck_assert_float_eq(v[i * 4 + j], words[ids[i]][j]);
    /* nesting follows the input: [2][2][4] */
    cJSON *e = item(root, "embeddings");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetArrayItem(e, 1), 0)), 4);
    cJSON_Delete(root);
    reply_free(&r);

    /* a scalar id answers one row of shape [D] */
    http_json(&srv, "POST", "/v1/tables/words2/lookup", "{\"ids\": 2}", &r);
    ck_reply(&r, 200, NULL);
    root = parse_body(&r);
    check_shape(root, (const int[]){4}, 1);
    ck_assert_uint_eq(flatten(item(root, "embeddings"), v, 16), 4);
    ck_assert_float_eq(v[1], 0.6f);
    cJSON_Delete(root);
    reply_free(&r);

    /* floats read back to the identical float32 */
    ck_assert_uint_eq(lookup_floats("frozen", "[9]", v, 16), 3);
    ck_assert_float_eq(v[0], 27.0f);
    ck_assert_float_eq(v[2], 29.0f);
}
END_TEST

START_TEST(lookup_tokens_and_oov)
{
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/words2/lookup", "{\"tokens\": [\"queen\", \"apple\"]}", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    float v[8];
    ck_assert_uint_eq(flatten(item(root, "embeddings"), v, 8), 8);
    ck_assert_float_eq(v[0], 0.9f);
    ck_assert_float_eq(v[6], 1.0f);
    cJSON_Delete(root);
    reply_free(&r);

    /* words2 falls back to id 0 for unknown tokens */
    http_json(&srv, "POST", "/v1/tables/words2/lookup", "{\"tokens\": [\"zebra\"]}", &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);

    /* words answers 404 unknown_token, naming the token */
    http_json(&srv, "POST", "/v1/tables/words/lookup", "{\"tokens\": [\"king\", \"zebra\"]}", &r);
    ck_reply(&r, 404, "unknown_token");
    ck_assert_ptr_nonnull(strstr(r.body, "zebra"));
    reply_free(&r);

    /* a table with no vocabulary cannot take tokens */
    expect("POST", "/v1/tables/frozen/lookup", "{\"tokens\": [\"a\"]}", 400, "invalid_argument");
}
END_TEST

START_TEST(lookup_binary)
{
    const char *hdrs[] = {"Accept: application/octet-stream", NULL};
    const char *body = "{\"ids\": [[1, 2], [5, 3]]}";
    struct reply r;
    http_do(&srv, "POST", "/v1/tables/words2/lookup", "application/json", body, strlen(body),
            hdrs, &r);
    ck_reply(&r, 200, NULL);
    char *ct = reply_header(&r, "Content-Type");
    char *shape = reply_header(&r, "X-Embedding-Shape");
    ck_assert_str_eq(ct, "application/octet-stream");
    ck_assert_str_eq(shape, "2,2,4");
    ck_assert_uint_eq(r.len, 16 * sizeof(float));
    const int ids[] = {1, 2, 5, 3};
    float v[16];
    memcpy(v, r.body, sizeof v);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            ck_assert_float_eq(v[i * 4 + j], words[ids[i]][j]);
    free(ct);
    free(shape);
    reply_free(&r);

    /* bags answer in binary too */
    body = "{\"bags\": [[1, 2], [5]], \"mode\": \"sum\"}";
    http_do(&srv, "POST", "/v1/tables/words2/lookup", "application/json", body, strlen(body),
            hdrs, &r);
    ck_reply(&r, 200, NULL);
    shape = reply_header(&r, "X-Embedding-Shape");
    ck_assert_str_eq(shape, "2,4");
    ck_assert_uint_eq(r.len, 8 * sizeof(float));
    memcpy(v, r.body, 8 * sizeof(float));
    ck_assert_float_eq(v[0], 1.0f + 0.9f);
    ck_assert_float_eq(v[6], 1.0f);
    free(shape);
    reply_free(&r);
}
END_TEST

START_TEST(lookup_bags)
{
    struct reply r;
    /* mean by default; words2 has no padding, so all ids count */
    http_json(&srv, "POST", "/v1/tables/words2/lookup", "{\"bags\": [[1, 2], [5], []]}", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    check_shape(root, (const int[]){3, 4}, 2);
    float v[12];
    ck_assert_uint_eq(flatten(item(root, "embeddings"), v, 12), 12);
    ck_assert_float_eq(v[0], (1.0f + 0.9f) / 2);
    ck_assert_float_eq(v[6], 1.0f);
    for (int j = 8; j < 12; j++)
        ck_assert_float_eq(v[j], 0.0f); /* empty bag: zeros */
    cJSON_Delete(root);
    reply_free(&r);

    http_json(&srv, "POST", "/v1/tables/words2/lookup",
              "{\"bags\": [[1, 3]], \"mode\": \"max\"}", &r);
    root = parse_body(&r);
    ck_assert_uint_eq(flatten(item(root, "embeddings"), v, 12), 4);
    ck_assert_float_eq(v[0], 1.0f);
    ck_assert_float_eq(v[1], 1.0f);
    ck_assert_float_eq(v[3], 0.5f);
    cJSON_Delete(root);
    reply_free(&r);

    http_json(&srv, "POST", "/v1/tables/words2/lookup",
              "{\"bags\": [[1, 5]], \"mode\": \"sum\", \"per_sample_weights\": [[2, 0.5]]}", &r);
    ck_reply(&r, 200, NULL);
    root = parse_body(&r);
    flatten(item(root, "embeddings"), v, 12);
    ck_assert_float_eq(v[0], 2.0f);
    ck_assert_float_eq(v[2], 0.5f);
    cJSON_Delete(root);
    reply_free(&r);

    /* weights need mode sum */
    expect("POST", "/v1/tables/words2/lookup",
           "{\"bags\": [[1]], \"mode\": \"mean\", \"per_sample_weights\": [[2]]}", 400,
           "invalid_argument");

    /* padding ids are left out of the pooling (words: padding_idx 0) */
    http_json(&srv, "POST", "/v1/tables/words/lookup", "{\"bags\": [[0, 1]]}", &r);
    root = parse_body(&r);
    flatten(item(root, "embeddings"), v, 12);
    ck_assert_float_eq(v[0], 1.0f); /* mean over the one id kept */
    cJSON_Delete(root);
    reply_free(&r);
}
END_TEST

START_TEST(lookup_padding_and_max_norm)
{
    float v[16];
    /* the padding row of an initialized table is zeros */
    ck_assert_uint_eq(lookup_floats("items", "[3]", v, 16), 8);
    for (int j = 0; j < 8; j++)
        ck_assert_float_eq(v[j], 0.0f);

    /* rows of N(0,1) x 8 have norms near sqrt(8) > 1: renormalized to 1 */
    ck_assert_uint_eq(lookup_floats("items", "[40, 40]", v, 16), 16);
    double norm = 0;
    for (int j = 0; j < 8; j++)
        norm += (double)v[j] * v[j];
    ck_assert_double_le(sqrt(norm), 1.0 + 1e-6);
    ck_assert_double_ge(sqrt(norm), 0.999);

    /* in place: similarity, which reads rows as stored, sees the new norm */
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/items/similarity",
              "{\"pairs\": [[40, 40]], \"metric\": \"dot\"}", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    ck_assert_double_eq_tol(cJSON_GetArrayItem(item(root, "scores"), 0)->valuedouble, 1.0, 1e-5);
    cJSON_Delete(root);
    reply_free(&r);
}
END_TEST

/* ---- similarity and neighbours ------------------------------------------ */

static double ref_score(const float *x, const float *y, const char *metric)
{
    double dot = 0, nx = 0, ny = 0, d2 = 0;
    for (int j = 0; j < 4; j++) {
        dot += (double)x[j] * y[j];
        nx += (double)x[j] * x[j];
        ny += (double)y[j] * y[j];
        d2 += ((double)x[j] - y[j]) * ((double)x[j] - y[j]);
    }
    if (strcmp(metric, "dot") == 0)
        return dot;
    if (strcmp(metric, "l2") == 0)
        return sqrt(d2);
    return dot / (fmax(sqrt(nx), 1e-8) * fmax(sqrt(ny), 1e-8));
}

START_TEST(similarity_metrics)
{
    const char *metrics[] = {"cosine", "dot", "l2"};
    for (int m = 0; m < 3; m++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"pairs\": [[\"king\", \"queen\"], [\"man\", \"apple\"], [\"<pad>\", \"king\"]],"
                 " \"metric\": \"%s\"}", metrics[m]);
        struct reply r;
        http_json(&srv, "POST", "/v1/tables/words2/similarity", body, &r);
        ck_reply(&r, 200, NULL);
        cJSON *root = parse_body(&r);
        cJSON *scores = item(root, "scores");
        ck_assert_int_eq(cJSON_GetArraySize(scores), 3);
        const int pairs[3][2] = {{1, 2}, {3, 5}, {0, 1}};
        for (int i = 0; i < 3; i++)
            ck_assert_double_eq_tol(cJSON_GetArrayItem(scores, i)->valuedouble,
                                    ref_score(words[pairs[i][0]], words[pairs[i][1]], metrics[m]),
                                    1e-6);
        cJSON_Delete(root);
        reply_free(&r);
    }
    /* ids work as well; cosine is the default */
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/words2/similarity", "{\"pairs\": [[1, 2]]}", &r);
    cJSON *root = parse_body(&r);
    ck_assert_double_eq_tol(cJSON_GetArrayItem(item(root, "scores"), 0)->valuedouble,
                            ref_score(words[1], words[2], "cosine"), 1e-6);
    cJSON_Delete(root);
    reply_free(&r);
    expect("POST", "/v1/tables/words2/similarity", "{\"pairs\": [[1, 2]], \"metric\": \"manhattan\"}",
           400, "invalid_argument");
    expect("POST", "/v1/tables/words2/similarity", "{\"pairs\": [[1, 6]]}", 400, "out_of_range");
}
END_TEST

START_TEST(neighbors_queries)
{
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/words2/neighbors", "{\"tokens\": [\"king\", \"man\"], \"k\": 2}", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    cJSON *results = item(root, "results");
    ck_assert_int_eq(cJSON_GetArraySize(results), 2);
    cJSON *first = cJSON_GetArrayItem(cJSON_GetArrayItem(results, 0), 0);
    ck_assert_int_eq(item(first, "id")->valueint, 2);
    ck_assert_str_eq(item(first, "token")->valuestring, "queen");
    ck_assert_double_eq_tol(item(first, "score")->valuedouble, ref_score(words[1], words[2], "cosine"),
                            1e-6);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(results, 0)), 2);
    cJSON *man = cJSON_GetArrayItem(cJSON_GetArrayItem(results, 1), 0);
    ck_assert_str_eq(item(man, "token")->valuestring, "woman");
    cJSON_Delete(root);
    reply_free(&r);

    /* a vector query does not exclude the row equal to it; no tokens without
     * a vocabulary */
    http_json(&srv, "POST", "/v1/tables/frozen/neighbors",
              "{\"vectors\": [[3, 4, 5]], \"k\": 1, \"metric\": \"l2\"}", &r);
    ck_reply(&r, 200, NULL);
    root = parse_body(&r);
    first = cJSON_GetArrayItem(cJSON_GetArrayItem(item(root, "results"), 0), 0);
    ck_assert_int_eq(item(first, "id")->valueint, 1);
    ck_assert_double_eq_tol(item(first, "score")->valuedouble, 0.0, 1e-6);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(first, "token"));
    cJSON_Delete(root);
    reply_free(&r);

    /* id queries exclude themselves and the padding row */
    http_json(&srv, "POST", "/v1/tables/words/neighbors", "{\"ids\": [5], \"k\": 5}", &r);
    ck_reply(&r, 200, NULL);
    root = parse_body(&r);
    cJSON *list = cJSON_GetArrayItem(item(root, "results"), 0);
    ck_assert_int_eq(cJSON_GetArraySize(list), 4);
    cJSON *h;
    cJSON_ArrayForEach(h, list)
    {
        ck_assert_int_ne(item(h, "id")->valueint, 5);
        ck_assert_int_ne(item(h, "id")->valueint, 0);
    }
    cJSON_Delete(root);
    reply_free(&r);

    expect("POST", "/v1/tables/words2/neighbors", "{\"ids\": [1], \"k\": 6}", 400, "invalid_argument");
    expect("POST", "/v1/tables/words2/neighbors", "{\"ids\": [1], \"k\": 0}", 400, "invalid_argument");
    expect("POST", "/v1/tables/words2/neighbors", "{\"vectors\": [[1, 2]]}", 400, "invalid_argument");
}
END_TEST

/* ---- writes -------------------------------------------------------------- */

START_TEST(gradients_sgd_step)
{
    uint64_t v0 = table_version_of("words");
    /* row 4 (woman): two occurrences summed, lr 0.5: w -= 0.5 * (g1 + g2) */
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/words/gradients",
              "{\"ids\": [[4], [4]], \"grads\": [[[0.25, 0, 0, 0]], [[0.25, 0, 0, 1]]]}", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    ck_assert_int_eq(item(root, "rows")->valueint, 1);
    ck_assert_int_eq((int)item(root, "version")->valuedouble, (int)v0 + 1);
    cJSON_Delete(root);
    reply_free(&r);

    float v[4];
    lookup_floats("words", "[4]", v, 4);
    ck_assert_float_eq(v[0], -0.25f);
    ck_assert_float_eq(v[1], 0.9f);
    ck_assert_float_eq(v[3], 0.6f - 0.5f);

    /* lr override, and the padding row never changes */
    http_json(&srv, "POST", "/v1/tables/words/gradients",
              "{\"ids\": [0, 4], \"grads\": [[1, 1, 1, 1], [0, 1, 0, 0]], \"lr\": 0.125}", &r);
    ck_reply(&r, 200, NULL);
    root = parse_body(&r);
    ck_assert_int_eq(item(root, "rows")->valueint, 1);
    cJSON_Delete(root);
    reply_free(&r);
    lookup_floats("words", "[0]", v, 4);
    for (int j = 0; j < 4; j++)
        ck_assert_float_eq(v[j], 0.0f);
    lookup_floats("words", "[4]", v, 4);
    ck_assert_float_eq(v[1], 0.9f - 0.125f);
}
END_TEST

START_TEST(gradients_on_frozen_table)
{
    expect("POST", "/v1/tables/frozen/gradients", "{\"ids\": [1], \"grads\": [[1, 1, 1]]}", 409,
           "table_frozen");
    expect("POST", "/v1/tables/words2/gradients", "{\"tokens\": [\"king\"], \"grads\": [[1, 1, 1, 1]]}",
           409, "table_frozen");
}
END_TEST

START_TEST(rows_assignment)
{
    uint64_t v0 = table_version_of("frozen");
    struct reply r;
    /* allowed on frozen tables; a later duplicate wins */
    http_json(&srv, "PUT", "/v1/tables/frozen/rows",
              "{\"ids\": [7, 8, 7], \"vectors\": [[1, 1, 1], [2, 2, 2], [0.5, -1.5, 1e-3]]}", &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    ck_assert_int_eq(item(root, "rows")->valueint, 2);
    ck_assert_int_eq((int)item(root, "version")->valuedouble, (int)v0 + 1);
    cJSON_Delete(root);
    reply_free(&r);
    float v[6];
    lookup_floats("frozen", "[7, 8]", v, 6);
    ck_assert_float_eq(v[0], 0.5f);
    ck_assert_float_eq(v[1], -1.5f);
    ck_assert_float_eq(v[2], 1e-3f);
    ck_assert_float_eq(v[3], 2.0f);
    ck_assert_uint_eq(table_version_of("frozen"), v0 + 1);

    /* tokens work for writes, but never fall back to the oov id */
    http_json(&srv, "PUT", "/v1/tables/words2/rows",
              "{\"tokens\": [\"zebra\"], \"vectors\": [[1, 1, 1, 1]]}", &r);
    ck_reply(&r, 404, "unknown_token");
    reply_free(&r);
}
END_TEST

START_TEST(failed_write_changes_nothing)
{
    uint64_t v0 = table_version_of("words");
    float before[8], after[8];
    lookup_floats("words", "[1, 2]", before, 8);
    /* the second id is out of range: the first must not be applied */
    expect("POST", "/v1/tables/words/gradients",
           "{\"ids\": [1, 6], \"grads\": [[1, 1, 1, 1], [1, 1, 1, 1]]}", 400, "out_of_range");
    /* a float over float32's range */
    expect("POST", "/v1/tables/words/gradients",
           "{\"ids\": [1, 2], \"grads\": [[1, 1, 1, 1], [1, 1e39, 1, 1]]}", 400, NULL);
    /* a ragged grads array */
    expect("POST", "/v1/tables/words/gradients",
           "{\"ids\": [1, 2], \"grads\": [[1, 1, 1, 1], [1, 1, 1]]}", 400, "invalid_argument");
    expect("POST", "/v1/tables/words/gradients",
           "{\"ids\": [1], \"grads\": [[1, 1, 1, 1]], \"lr\": 0}", 400, "invalid_argument");
    expect("PUT", "/v1/tables/words/rows",
           "{\"ids\": [1, 2], \"vectors\": [[9, 9, 9, 9], [9, 9, 9]]}", 400, "invalid_argument");
    expect("PUT", "/v1/tables/words/rows",
           "{\"tokens\": [\"king\", \"zebra\"], \"vectors\": [[9, 9, 9, 9], [9, 9, 9, 9]]}", 404,
           "unknown_token");
    lookup_floats("words", "[1, 2]", after, 8);
    ck_assert_mem_eq(before, after, sizeof before);
    ck_assert_uint_eq(table_version_of("words"), v0);
}
END_TEST

START_TEST(snapshot_writes_directory)
{
    struct reply r;
    http_do(&srv, "POST", "/v1/tables/items/snapshot", NULL, NULL, 0, NULL, &r);
    ck_reply(&r, 200, NULL);
    cJSON *root = parse_body(&r);
    const char *path = item(root, "path")->valuestring;
    uint64_t seq = (uint64_t)item(root, "seq")->valuedouble;
    ck_assert_uint_ge(seq, (uint64_t)item(root, "version")->valuedouble);
    char want[1024];
    snprintf(want, sizeof want, "%s/data/items/snapshot-%llu", srv.dir, (unsigned long long)seq);
    ck_assert_str_eq(path, want);
    const char *files[] = {"weight.npy", "manifest.json"};
    for (int i = 0; i < 2; i++) {
        char f[1200];
        struct stat st;
        snprintf(f, sizeof f, "%s/%s", path, files[i]);
        ck_assert_msg(stat(f, &st) == 0, "%s missing", f);
    }
    cJSON_Delete(root);
    reply_free(&r);

    /* an empty object is fine too; parameters are not */
    expect("POST", "/v1/tables/words/snapshot", "{}", 200, NULL);
    expect("POST", "/v1/tables/words/snapshot", "{\"path\": \"/tmp\"}", 400, "invalid_argument");
}
END_TEST

/* ---- errors and limits ---------------------------------------------------- */

START_TEST(route_errors)
{
    expect("GET", "/nope", NULL, 404, "not_found");
    expect("GET", "/v1/tables/nope", NULL, 404, "not_found");
    expect("POST", "/v1/tables/nope/lookup", "{\"ids\": [1]}", 404, "not_found");
    expect("GET", "/v1/tables/bad%20name", NULL, 404, "not_found");
    expect("GET", "/v1/tables/words/unknown", NULL, 404, "not_found");

    struct reply r;
    http_get(&srv, "/v1/tables/words/lookup", &r);
    ck_reply(&r, 405, "method_not_allowed");
    char *allow = reply_header(&r, "Allow");
    ck_assert_str_eq(allow, "POST");
    free(allow);
    reply_free(&r);

    http_json(&srv, "DELETE", "/healthz", "{}", &r);
    ck_reply(&r, 405, "method_not_allowed");
    allow = reply_header(&r, "Allow");
    ck_assert_str_eq(allow, "GET, HEAD");
    free(allow);
    reply_free(&r);

    http_json(&srv, "POST", "/v1/tables/words/rows", "{}", &r);
    ck_reply(&r, 405, "method_not_allowed");
    allow = reply_header(&r, "Allow");
    ck_assert_str_eq(allow, "PUT");
    free(allow);
    reply_free(&r);
}
END_TEST

START_TEST(content_type_errors)
{
    const char *body = "{\"ids\": [1]}";
    struct reply r;
    http_do(&srv, "POST", "/v1/tables/words2/lookup", "text/plain", body, strlen(body), NULL, &r);
    ck_reply(&r, 415, "unsupported_media_type");
    reply_free(&r);
    http_do(&srv, "POST", "/v1/tables/words2/lookup", NULL, body, strlen(body), NULL, &r);
    ck_reply(&r, 415, "unsupported_media_type");
    reply_free(&r);
    /* what curl -d sends: the message says how to fix the command */
    http_do(&srv, "POST", "/v1/tables/words2/lookup", "application/x-www-form-urlencoded", body,
            strlen(body), NULL, &r);
    ck_reply(&r, 415, "unsupported_media_type");
    ck_assert_ptr_nonnull(strstr(r.body, "add -H 'Content-Type: application/json'"));
    reply_free(&r);
    http_do(&srv, "POST", "/v1/tables/words2/lookup", "application/json; charset=utf-8", body,
            strlen(body), NULL, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    http_do(&srv, "POST", "/v1/tables/words2/lookup", "Application/JSON;charset=\"UTF-8\"", body,
            strlen(body), NULL, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    http_do(&srv, "POST", "/v1/tables/words2/lookup", "application/json; charset=latin1", body,
            strlen(body), NULL, &r);
    ck_reply(&r, 415, "unsupported_media_type");
    reply_free(&r);
}
END_TEST

START_TEST(body_errors)
{
    const char *p = "/v1/tables/words2/lookup";
    expect("POST", p, "{\"ids\": [1]} x", 400, "invalid_json");
    expect("POST", p, "{\"ids\": [1], \"ids\": [2]}", 400, "invalid_json");
    expect("POST", p, "{\"ids\": [1", 400, "invalid_json");
    expect("POST", p, "", 400, NULL);
    expect("POST", p, "{\"ids\": [1.5]}", 400, "invalid_argument");
    expect("POST", p, "{\"ids\": [true]}", 400, "invalid_argument");
    expect("POST", p, "{\"ids\": [\"3\"]}", 400, "invalid_argument");
    expect("POST", p, "{\"ids\": [-1]}", 400, "out_of_range");
    expect("POST", p, "{\"ids\": [6]}", 400, "out_of_range");
    expect("POST", p, "{\"ids\": [[1, 2], [3]]}", 400, "invalid_argument");
    expect("POST", p, "{\"tokens\": [\"a\\u0000b\"]}", 400, "invalid_argument");
    expect("POST", p, "{\"idz\": [1]}", 400, "invalid_argument");
    const char bad_utf8[] = "{\"tokens\": [\"\xff\"]}";
    expect("POST", p, bad_utf8, 400, "invalid_json");
}
END_TEST

START_TEST(size_limits)
{
    /* Content-Length over max_body_bytes: refused before reading */
    size_t n = MAX_BODY + 100;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = '\0';
    expect("POST", "/v1/tables/words2/lookup", big, 413, "payload_too_large");

    /* the same body chunked: counted as it arrives */
    struct reply r;
    http_chunked(&srv, "/v1/tables/words2/lookup", big, n, 512, &r);
    ck_reply(&r, 413, "payload_too_large");
    reply_free(&r);

    /* a chunked body under the limit is served */
    const char *ok = "{\"ids\": [1, 2, 3]}";
    http_chunked(&srv, "/v1/tables/words2/lookup", ok, strlen(ok), 4, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    free(big);

    /* max_batch: ids over it are 413, and pairs count twice */
    char body[2048] = "{\"ids\": [";
    for (int i = 0; i <= MAX_BATCH; i++)
        strcat(body, i ? ",1" : "1");
    strcat(body, "]}");
    expect("POST", "/v1/tables/words2/lookup", body, 413, "payload_too_large");
    strcpy(body, "{\"pairs\": [");
    for (int i = 0; i <= MAX_BATCH / 2; i++)
        strcat(body, i ? ",[1,2]" : "[1,2]");
    strcat(body, "]}");
    expect("POST", "/v1/tables/words2/similarity", body, 413, "payload_too_large");
}
END_TEST

START_TEST(framing_errors)
{
    char out[4096];
    const char dup_cl[] = "POST /v1/tables/words2/lookup HTTP/1.1\r\nHost: x\r\n"
                          "Content-Type: application/json\r\nContent-Length: 12\r\n"
                          "Content-Length: 12\r\n\r\n{\"ids\": [1]}";
    ck_assert_int_eq(http_raw(&srv, dup_cl, sizeof dup_cl - 1, out, sizeof out), 400);
    ck_assert_ptr_nonnull(strstr(out, "Content-Length"));

    const char cl_te[] = "POST /v1/tables/words2/lookup HTTP/1.1\r\nHost: x\r\n"
                         "Content-Type: application/json\r\nContent-Length: 17\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"
                         "c\r\n{\"ids\": [1]}\r\n0\r\n\r\n";
    ck_assert_int_eq(http_raw(&srv, cl_te, sizeof cl_te - 1, out, sizeof out), 400);
    ck_assert_ptr_nonnull(strstr(out, "Transfer-Encoding"));

    /* a well-framed raw request works, and keeps the connection open */
    const char fine[] = "POST /v1/tables/words2/lookup HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"
                        "{\"ids\": [1]}";
    ck_assert_int_eq(http_raw(&srv, fine, sizeof fine - 1, out, sizeof out), 200);
    ck_assert_ptr_null(strcasestr(out, "Connection: close"));
}
END_TEST

static Suite *http_api_suite(void)
{
    Suite *s = suite_create("http_api");
    TCase *tc = tcase_create("api");
    tcase_add_unchecked_fixture(tc, start_server, stop_server);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, healthz_and_readyz);
    tcase_add_test(tc, table_list_and_info);
    tcase_add_test(tc, lookup_ids_any_shape);
    tcase_add_test(tc, lookup_tokens_and_oov);
    tcase_add_test(tc, lookup_binary);
    tcase_add_test(tc, lookup_bags);
    tcase_add_test(tc, lookup_padding_and_max_norm);
    tcase_add_test(tc, similarity_metrics);
    tcase_add_test(tc, neighbors_queries);
    tcase_add_test(tc, gradients_sgd_step);
    tcase_add_test(tc, gradients_on_frozen_table);
    tcase_add_test(tc, rows_assignment);
    tcase_add_test(tc, failed_write_changes_nothing);
    tcase_add_test(tc, snapshot_writes_directory);
    tcase_add_test(tc, route_errors);
    tcase_add_test(tc, content_type_errors);
    tcase_add_test(tc, body_errors);
    tcase_add_test(tc, size_limits);
    tcase_add_test(tc, framing_errors);
    tcase_add_test(tc, metrics_exposition);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_api_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
