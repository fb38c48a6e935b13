/* fuzz_json.c - libFuzzer target: the strict JSON validator and every request
 * parser of proto/request.h on arbitrary bytes; when a parse succeeds, tokens
 * are resolved against a tiny table with a vocabulary and the matching answer
 * is written with proto/response.h on dummy rows of the parsed shape. Every
 * allocation is freed, so LeakSanitizer reports any leak as a crash.
 *
 * Two differential checks abort on disagreement: on valid JSON the in-place
 * reader of json.h walks the same tree as cJSON (every array's count, every
 * string's decoded bytes, every number), and on a body a parser accepts
 * the pre-scan of cost.h counts what the parser counted. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cost.h"
#include "json.h"
#include "matrix.h"
#include "request.h"
#include "response.h"
#include "table.h"
#include "vocab.h"

/* A 5 x 3 table, limits small enough that payload_too_large is reachable
 * (max_batch, and max_answer_bytes: a few dozen rows of JSON). */
static const struct request_limits LIM = {
    .num_embeddings = 5, .dim = 3, .max_batch = 16, .max_k = 4, .max_answer_bytes = 2048,
    .max_token_len = 1,
};

static struct table *g_table;

/* The table "t" with tokens a, b, c, d, e (oov id 0), built once. */
static struct table *fuzz_table(void)
{
    if (g_table != NULL)
        return g_table;
    static const char *const toks[] = {"a", "b", "c", "d", "e"};
    struct vocab *v = NULL;
    struct matrix w = {0};
    char why[256];
    if (vocab_new(&v, 5) != 0 || matrix_init(&w, 5, 3) != 0)
        abort();
    for (int i = 0; i < 5; i++)
        if (vocab_add(v, toks[i], 1, NULL) != 0)
            abort();
    struct table_settings s;
    table_settings_init(&s);
    s.oov_id = 0;
    if (table_new(&g_table, "t", &w, v, &s, why, sizeof(why)) != 0)
        abort();
    return g_table;
}

/* A zeroed float array of n floats (at least one, so malloc(0) is avoided). */
static float *dummy_floats(size_t n)
{
    float *f = calloc(n ? n : 1, sizeof(float));
    if (f == NULL)
        abort();
    return f;
}

static void write_lookup(const struct lookup_request *r)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    size_t rows = r->is_bags ? r->nbags : r->in.n;
    float *v = dummy_floats(rows * (size_t)LIM.dim);
    char shape[RESPONSE_SHAPE_MAX];
    if (r->is_bags) {
        size_t s1 = r->nbags;
        response_lookup(&b, &s1, 1, (size_t)LIM.dim, v);
        response_shape_text(shape, sizeof(shape), &s1, 1, (size_t)LIM.dim);
    } else {
        response_lookup(&b, r->in.shape, r->in.ndim, (size_t)LIM.dim, v);
        response_shape_text(shape, sizeof(shape), r->in.shape, r->in.ndim, (size_t)LIM.dim);
    }
    response_binary(&b, v, rows * (size_t)LIM.dim);
    free(v);
    buf_deinit(&b);
}

static void write_neighbors(const struct neighbors_request *r)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    struct topk_hit *hits = calloc(r->nq * r->k + 1, sizeof(*hits));
    size_t *counts = calloc(r->nq + 1, sizeof(*counts));
    if (hits == NULL || counts == NULL)
        abort();
    for (size_t q = 0; q < r->nq; q++) {
        counts[q] = r->k;
        for (size_t j = 0; j < r->k; j++)
            hits[q * r->k + j].id = (int64_t)(j % (size_t)LIM.num_embeddings);
    }
    response_neighbors(&b, hits, counts, r->nq, r->k, table_vocab(fuzz_table()));
    free(hits);
    free(counts);
    buf_deinit(&b);
}

static void write_scores(size_t n)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    float *s = dummy_floats(n);
    response_scores(&b, s, n);
    free(s);
    buf_deinit(&b);
}

static void write_result(size_t rows)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    response_write_result(&b, 7, rows, 7);
    buf_deinit(&b);
}

/* The in-place reader and cJSON agree on v and node, recursively. */
static void same_tree(struct json_value v, const cJSON *node)
{
    struct json_iter it;
    struct json_value key, val;
    const cJSON *child;

    switch (json_type_of(v)) {
    case JSON_ARRAY:
        if (!cJSON_IsArray(node) || json_array_count(v) != (size_t)cJSON_GetArraySize(node))
            abort();
        json_iter_begin(&it, v);
        for (child = node->child; json_array_next(&it, &val); child = child->next)
            same_tree(val, child);
        return;
    case JSON_OBJECT:
        if (!cJSON_IsObject(node))
            abort();
        json_iter_begin(&it, v);
        for (child = node->child; json_object_next(&it, &key, &val); child = child->next) {
            char *k = malloc(key.len);
            if (k == NULL)
                abort();
            size_t kn = json_string_decode(key, k);
            if (child == NULL || kn != strlen(child->string) || memcmp(k, child->string, kn))
                abort();
            free(k);
            same_tree(val, child);
        }
        if (child != NULL)
            abort();
        return;
    case JSON_STRING: {
        char *out = malloc(v.len);
        if (out == NULL)
            abort();
        size_t n = json_string_decode(v, out);
        if (!cJSON_IsString(node) || n != strlen(node->valuestring) ||
            memcmp(out, node->valuestring, n) != 0)
            abort();
        free(out);
        return;
    }
    case JSON_NUMBER:
        if (!cJSON_IsNumber(node) || (json_number(v) != node->valuedouble &&
                                      json_number(v) == json_number(v)))
            abort();
        return;
    case JSON_TRUE:
        if (!cJSON_IsTrue(node))
            abort();
        return;
    case JSON_FALSE:
        if (!cJSON_IsFalse(node))
            abort();
        return;
    case JSON_NULL:
        if (!cJSON_IsNull(node))
            abort();
        return;
    }
}

static struct request_size prescanned(enum request_kind kind, const char *d, size_t n)
{
    struct request_size s;
    request_prescan(kind, d, n, &s);
    struct request_cost c;
    request_cost(&s, &LIM, &c);
    (void)request_cost_heavy(&c);
    return s;
}

static void fuzz_lookup(const char *d, size_t n, char *err)
{
    struct lookup_request r;
    if (request_parse_lookup(d, n, &LIM, &r, err, STATUS_ERR_MAX) == STATUS_OK) {
        struct request_size s = prescanned(REQUEST_LOOKUP, d, n);
        if (s.ids != r.in.n || s.bags != r.nbags ||
            s.kind != (r.is_bags ? REQUEST_BAGS : REQUEST_LOOKUP))
            abort();
        if (request_resolve_lookup(fuzz_table(), &r, err, STATUS_ERR_MAX) == STATUS_OK)
            write_lookup(&r);
    } else {
        prescanned(REQUEST_LOOKUP, d, n);
    }
    request_lookup_deinit(&r);
}

static void fuzz_similarity(const char *d, size_t n, char *err)
{
    struct similarity_request r;
    if (request_parse_similarity(d, n, &LIM, &r, err, STATUS_ERR_MAX) == STATUS_OK) {
        if (prescanned(REQUEST_SIMILARITY, d, n).ids != 2 * (uint64_t)r.npairs)
            abort();
        if (request_resolve(fuzz_table(), &r.pairs, true, "pairs", err, STATUS_ERR_MAX) ==
            STATUS_OK)
            write_scores(r.npairs);
    }
    request_similarity_deinit(&r);
}

static void fuzz_neighbors(const char *d, size_t n, char *err)
{
    struct neighbors_request r;
    if (request_parse_neighbors(d, n, &LIM, &r, err, STATUS_ERR_MAX) == STATUS_OK) {
        if (prescanned(REQUEST_NEIGHBORS, d, n).ids != r.nq)
            abort();
        if (request_resolve(fuzz_table(), &r.queries, true, "tokens", err, STATUS_ERR_MAX) ==
            STATUS_OK)
            write_neighbors(&r);
    }
    request_neighbors_deinit(&r);
}

static void fuzz_gradients(const char *d, size_t n, char *err)
{
    struct gradients_request r;
    if (request_parse_gradients(d, n, &LIM, &r, err, STATUS_ERR_MAX) == STATUS_OK &&
        prescanned(REQUEST_GRADIENTS, d, n).ids != r.ids.n)
        abort();
    if (r.grads != NULL &&
        request_resolve(fuzz_table(), &r.ids, false, "tokens", err, STATUS_ERR_MAX) ==
            STATUS_OK) {
        char name[128];
        request_index_name(&r.ids, "ids", r.ids.n - 1, name, sizeof(name));
        write_result(r.ids.n);
    }
    request_gradients_deinit(&r);
}

static void fuzz_rows(const char *d, size_t n, char *err)
{
    struct rows_request r;
    if (request_parse_rows(d, n, &LIM, &r, err, STATUS_ERR_MAX) == STATUS_OK) {
        if (prescanned(REQUEST_ROWS, d, n).ids != r.ids.n)
            abort();
        if (request_resolve(fuzz_table(), &r.ids, false, "tokens", err, STATUS_ERR_MAX) ==
            STATUS_OK)
            write_result(r.ids.n);
    }
    request_rows_deinit(&r);
}

/* The error answer quotes client bytes: write it for every failure message. */
static void write_error(const char *err)
{
    struct buf b;
    buf_init(&b, 1 << 16);
    response_error(&b, STATUS_INVALID_ARGUMENT, err);
    buf_deinit(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    char err[STATUS_ERR_MAX];
    err[0] = '\0';
    json_validate(d, size, JSON_MAX_DEPTH, err, sizeof(err));
    struct cJSON *root = NULL;
    if (json_parse(d, size, &root, err, sizeof(err)) == STATUS_OK) {
        struct json_value v;
        if (!json_root(d, size, &v))
            abort();
        same_tree(v, root);
        cJSON_Delete(root);
    }
    fuzz_lookup(d, size, err);
    write_error(err);
    fuzz_similarity(d, size, err);
    fuzz_neighbors(d, size, err);
    fuzz_gradients(d, size, err);
    fuzz_rows(d, size, err);
    write_error(err);
    return 0;
}
