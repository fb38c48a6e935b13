/* handlers.c - the endpoints of API.md; see handlers.h.
 *
 * Each handler has the same steps: parse the body with proto (strict JSON,
 * every field checked against the table's shape and the limits), resolve
 * tokens, compute with core, write the answer. Nothing changes in a table
 * before the whole request has been checked: proto validates everything it
 * can see, and core's write functions check ids and values before touching
 * a row. */
#include "handlers.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "binary.h"
#include "clock.h"
#include "cluster.h"
#include "cost.h"
#include "error.h"
#include "explorer.h"
#include "request.h"
#include "similarity.h"
#include "tokens.h"
#include "topk.h"
#include "vocab.h"

/* Largest buffer reserved up front for a JSON answer; bigger ones grow. */
#define JSON_RESERVE_MAX ((size_t)16 << 20)

#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"

void answer_init(struct answer *a)
{
    memset(a, 0, sizeof *a);
    a->http = 200;
    a->code = STATUS_OK;
    a->content_type = RESPONSE_JSON_TYPE;
    buf_init(&a->body, 0);
}

void answer_deinit(struct answer *a)
{
    buf_deinit(&a->body);
}

void answer_header(struct answer *a, const char *name, const char *value)
{
    if (a->nheaders < ANSWER_HEADERS_MAX)
        a->headers[a->nheaders++] = (struct answer_header){name, value};
}

void answer_error(struct answer *a, enum status_code code, const char *fmt, ...)
{
    char message[STATUS_ERR_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    buf_deinit(&a->body);
    buf_init(&a->body, 0);
    a->code = code;
    a->http = (unsigned)status_http(code);
    a->content_type = RESPONSE_JSON_TYPE;
    a->shape[0] = '\0';
    a->nheaders = 0;
    response_error(&a->body, code, message);
}

static struct request_limits limits_of(const struct handler_ctx *c)
{
    const struct config *cfg = c->srv->cfg;
    size_t max_k = cfg->max_k > 0 ? (size_t)cfg->max_k : 1;
    const struct vocab *v = table_vocab(c->table);
    return (struct request_limits){
        .num_embeddings = table_num_embeddings(c->table),
        .dim = table_dim(c->table),
        .max_batch = (size_t)cfg->max_batch,
        .max_k = max_k < TOPK_MAX ? max_k : TOPK_MAX,
        .max_answer_bytes = cfg->max_answer_bytes,
        .binary = c->binary,
        .max_token_len = v != NULL ? vocab_max_len(v) : 0,
        .keyed = table_is_keyed(c->table),
    };
}

/* ---- request bodies: binary or JSON ---------------------------------- */

/* The headers that describe a binary body mean nothing to a JSON one: they
 * are refused rather than ignored, so a client that thinks it set the
 * learning rate with X-Embedding-Lr is told it did not. */
static enum status_code binary_headers_only(const struct handler_ctx *c, char *err, size_t n)
{
    const char *name = c->lr_header ? BINARY_LR_HEADER : BINARY_SHAPE_HEADER;
    if (c->binary_body || (c->lr_header == NULL && c->shape_header == NULL))
        return STATUS_OK;
    snprintf(err, n, "%s describes binary bodies (Content-Type: %s); a JSON body carries its "
             "own shape and \"lr\"", name, BINARY_MEDIA_TYPE);
    return STATUS_INVALID_ARGUMENT;
}

static enum status_code parse_lookup(const struct handler_ctx *c,
                                     const struct request_limits *lim,
                                     struct lookup_request *rq, char *err, size_t n)
{
    struct binary_headers h = {c->shape_header, c->lr_header};
    enum status_code sc = binary_headers_only(c, err, n);
    if (sc != STATUS_OK)
        return sc;
    if (c->binary_body)
        return binary_parse_lookup(c->body, c->len, &h, lim, rq, err, n);
    return request_parse_lookup(c->body, c->len, lim, rq, err, n);
}

static enum status_code parse_gradients(const struct handler_ctx *c,
                                        const struct request_limits *lim,
                                        struct gradients_request *rq, char *err, size_t n)
{
    struct binary_headers h = {c->shape_header, c->lr_header};
    enum status_code sc = binary_headers_only(c, err, n);
    if (sc != STATUS_OK)
        return sc;
    if (c->binary_body)
        return binary_parse_gradients(c->body, c->len, &h, lim, rq, err, n);
    return request_parse_gradients(c->body, c->len, lim, rq, err, n);
}

static enum status_code parse_rows(const struct handler_ctx *c,
                                   const struct request_limits *lim, struct rows_request *rq,
                                   char *err, size_t n)
{
    struct binary_headers h = {c->shape_header, c->lr_header};
    enum status_code sc = binary_headers_only(c, err, n);
    if (sc != STATUS_OK)
        return sc;
    if (c->binary_body)
        return binary_parse_rows(c->body, c->len, &h, lim, rq, err, n);
    return request_parse_rows(c->body, c->len, lim, rq, err, n);
}

/* Float arrays sized by client input: refuse rather than overflow. */
static float *alloc_floats(size_t rows, int64_t dim)
{
    size_t d = (size_t)dim;
    if (d != 0 && rows > SIZE_MAX / sizeof(float) / d)
        return NULL;
    return malloc(rows * d * sizeof(float) + 1);
}

/* ---- health and introspection ---------------------------------------- */

static void handle_healthz(const struct handler_ctx *c, struct answer *a)
{
    (void)c;
    response_status(&a->body, "ok");
}

static void handle_readyz(const struct handler_ctx *c, struct answer *a)
{
    bool ready = registry_ready(&c->srv->tables);
    a->http = ready ? 200 : 503;
    a->code = ready ? STATUS_OK : STATUS_NOT_READY;
    response_status(&a->body, ready ? "ready" : "loading");
}

static void handle_metrics(const struct handler_ctx *c, struct answer *a)
{
    a->content_type = METRICS_TYPE;
    metrics_render(&c->srv->metrics, &c->srv->tables, &a->body);
}

/* The optimizer shown in <info>: the effective one of a trainable table,
 * the configured one of a frozen table, else none. */
static const struct optim_config *info_optimizer(const struct table *t,
                                                 struct optim_config *out)
{
    if (table_settings(t)->freeze && !table_optimizer(t)->configured)
        return NULL;
    table_optimizer_config(t, out);
    return out;
}

static void handle_tables(const struct handler_ctx *c, struct answer *a)
{
    struct registry *r = &c->srv->tables;
    if (!registry_ready(r)) {
        answer_error(a, STATUS_NOT_READY, "%s", "tables are still loading");
        return;
    }
    const struct table **tables = calloc(r->n + 1, sizeof *tables);
    const struct optim_config **opts = calloc(r->n + 1, sizeof *opts);
    struct optim_config *cfgs = calloc(r->n + 1, sizeof *cfgs);
    if (tables == NULL || opts == NULL || cfgs == NULL) {
        answer_error(a, STATUS_INTERNAL, "%s", "out of memory");
    } else {
        for (size_t i = 0; i < r->n; i++) {
            tables[i] = registry_table(&r->entries[i]);
            opts[i] = info_optimizer(tables[i], &cfgs[i]);
        }
        response_table_list(&a->body, tables, opts, r->n);
    }
    free(tables);
    free(opts);
    free(cfgs);
}

/* GET /v1/cluster */
static void handle_cluster(const struct handler_ctx *c, struct answer *a)
{
    if (c->srv->cluster == NULL) {
        answer_error(a, STATUS_NOT_FOUND, "%s",
                     "cluster mode is off (set cluster.nats to run replicas over NATS JetStream)");
        return;
    }
    cluster_render_info(c->srv->cluster, &c->srv->tables, &a->body);
}

static void handle_table(const struct handler_ctx *c, struct answer *a)
{
    struct optim_config cfg;
    response_table_info(&a->body, c->table, info_optimizer(c->table, &cfg));
}

/* ---- read-your-writes ------------------------------------------------ */

/* Parses X-Embedding-Min-Seq; false (with a 400) when it is not a number. */
static bool header_min_seq(const struct handler_ctx *c, uint64_t *seq, struct answer *a)
{
    *seq = 0;
    const char *s = c->min_seq_header;
    if (s == NULL || *s == '\0')
        return true;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno == ERANGE) {
        answer_error(a, STATUS_INVALID_ARGUMENT,
                     "X-Embedding-Min-Seq: expected a non-negative integer, got \"%.40s\"", s);
        return false;
    }
    *seq = v;
    return true;
}

/* A read with min_seq (body or header) waits until the table has applied
 * that record: up to cluster.wait_ms in cluster mode (replication is on
 * its way), not at all on a single server (an answered write is applied).
 * False with a 503 not_ready when it has not. */
static bool reached_min_seq(const struct handler_ctx *c, uint64_t body_seq, struct answer *a)
{
    uint64_t want = 0;
    if (!header_min_seq(c, &want, a))
        return false;
    if (body_seq > want)
        want = body_seq;
    if (want == 0 || table_log_seq(c->table) >= want)
        return true;
    int wait_ms = c->srv->cfg->cluster_wait_ms;
    if (c->entry->cluster != NULL && cluster_table_wait_seq(c->entry->cluster, want, wait_ms))
        return true;
    answer_error(a, STATUS_NOT_READY,
                 "min_seq: table \"%s\" has applied up to seq %llu, not %llu%s; retry",
                 table_name(c->table), (unsigned long long)table_log_seq(c->table),
                 (unsigned long long)want, c->entry->cluster ? " yet" : "");
    return false;
}

/* ---- lookup -------------------------------------------------------- */

/* Gathers n rows (or pools nbags bags) into out. */
static int gather(const struct handler_ctx *c, struct lookup_request *rq, float *out,
                  size_t *bad)
{
    if (rq->is_bags)
        return table_bag(c->table, rq->in.ids, rq->offsets, rq->nbags,
                         rq->per_sample_weights, rq->mode, out, bad);
    return table_lookup(c->table, rq->in.ids, rq->in.n, out, bad);
}

/* A failed lookup: an unknown key of a keyed table (missing: error) is
 * 404 unknown_key naming it; anything else as core says. */
static void lookup_failed(const struct handler_ctx *c, const struct request_ids *in,
                          const char *field, int rc, size_t bad, struct answer *a)
{
    if (rc == CORE_ENOTFOUND && table_is_keyed(c->table) && bad < in->n) {
        char where[96];
        request_index_name(in, field, bad, where, sizeof where);
        answer_error(a, STATUS_UNKNOWN_KEY,
                     "%s: unknown key %lld (never written, deleted, evicted or expired)", where,
                     (long long)in->ids[bad]);
        return;
    }
    answer_error(a, status_from_core(rc), "lookup failed at index %zu: %s", bad,
                 core_strerror(rc));
}

struct lookup_fetch {
    struct table *table;
    const struct lookup_request *rq;
    size_t *offsets; /* bags: a chunk's offsets, rebased to 0 */
    size_t offsets_cap;
    int rc;
    size_t bad;
};

/* Rows [first, first + n) of the answer: looked-up rows, or pooled bags. */
static bool fetch_rows(void *ctx, size_t first, size_t n, float *out)
{
    struct lookup_fetch *f = ctx;
    const struct lookup_request *rq = f->rq;
    if (!rq->is_bags) {
        f->rc = table_lookup(f->table, rq->in.ids + first, n, out, &f->bad);
        f->bad += first;
        return f->rc == CORE_OK;
    }
    if (n + 1 > f->offsets_cap) {
        size_t *p = realloc(f->offsets, (n + 1) * sizeof *p);
        if (p == NULL) {
            f->rc = CORE_ENOMEM;
            return false;
        }
        f->offsets = p;
        f->offsets_cap = n + 1;
    }
    size_t base = rq->offsets[first];
    for (size_t b = 0; b <= n; b++)
        f->offsets[b] = rq->offsets[first + b] - base;
    const float *w = rq->per_sample_weights ? rq->per_sample_weights + base : NULL;
    f->rc = table_bag(f->table, rq->in.ids + base, f->offsets, n, w, rq->mode, out, &f->bad);
    f->bad += base;
    return f->rc == CORE_OK;
}

/* A JSON lookup or bags answer from a table without max_norm is gathered
 * (or pooled) a chunk at a time while it is written, so its memory is the
 * answer's text and not the rows' floats too (rows are read one at a time
 * under their seqlocks either way). max_norm renormalizes the request's
 * rows together, so those keep the one gather of write_lookup. */
static void write_lookup_chunked(const struct handler_ctx *c, struct lookup_request *rq,
                                 const size_t *shape, size_t ndim, struct answer *a)
{
    struct lookup_fetch f = {.table = c->table, .rq = rq, .rc = CORE_OK};
    if (response_lookup_rows(&a->body, shape, ndim, (size_t)table_dim(c->table), fetch_rows,
                             &f)) {
        atomic_fetch_add_explicit(&c->entry->rows_served, rq->in.n, memory_order_relaxed);
    } else if (f.rc != CORE_OK) {
        lookup_failed(c, &rq->in, "ids", f.rc, f.bad, a);
    }
    free(f.offsets);
}

/* Binary answers are gathered straight into the answer buffer: the bytes
 * libmicrohttpd sends are the ones the table copy wrote. */
static void write_lookup(const struct handler_ctx *c, struct lookup_request *rq,
                         const size_t *shape, size_t ndim, size_t nrows, struct answer *a)
{
    int64_t dim = table_dim(c->table);
    size_t bytes = nrows * (size_t)dim * sizeof(float);
    float *rows = NULL;
    bool in_place = c->binary && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
    if (in_place) {
        if (!buf_reserve(&a->body, bytes + 1)) {
            answer_error(a, STATUS_INTERNAL, "out of memory for %zu rows", nrows);
            return;
        }
        rows = (float *)(void *)(a->body.data + a->body.len);
    } else {
        /* about 12 bytes per float: sized once rather than grown by copies */
        size_t text = nrows * (size_t)dim * 12 + 64;
        buf_reserve(&a->body, text < JSON_RESERVE_MAX ? text : JSON_RESERVE_MAX);
        rows = alloc_floats(nrows, dim);
        if (rows == NULL) {
            answer_error(a, STATUS_INTERNAL, "out of memory for %zu rows", nrows);
            return;
        }
    }
    size_t bad = 0;
    int rc = gather(c, rq, rows, &bad);
    if (rc != CORE_OK) {
        lookup_failed(c, &rq->in, rq->is_bags ? "bags" : "ids", rc, bad, a);
    } else if (c->binary) {
        if (in_place)
            a->body.len += bytes;
        else
            response_binary(&a->body, rows, nrows * (size_t)dim);
        a->content_type = RESPONSE_BINARY_TYPE;
        response_shape_text(a->shape, sizeof a->shape, shape, ndim, (size_t)dim);
    } else {
        response_lookup(&a->body, shape, ndim, (size_t)dim, rows);
    }
    if (!in_place)
        free(rows);
    if (rc == CORE_OK)
        atomic_fetch_add_explicit(&c->entry->rows_served, rq->in.n, memory_order_relaxed);
}

/* The JSON parsers check a request's cost as soon as they have counted it;
 * a binary body's parser checks max_batch only, so the rest (the answer's
 * bound) is checked here, once its ids are counted. */
static enum status_code check_binary_cost(const struct handler_ctx *c,
                                          const struct request_limits *lim,
                                          const struct lookup_request *rq, char *err, size_t n)
{
    struct request_size size;
    struct request_cost cost;
    if (!c->binary_body)
        return STATUS_OK;
    request_size_of_lookup(rq, &size);
    size.body_bytes = c->len;
    request_cost(&size, lim, &cost);
    return request_cost_check(&cost, &size, lim, err, n);
}

static void handle_lookup(const struct handler_ctx *c, struct answer *a)
{
    struct request_limits lim = limits_of(c);
    struct lookup_request rq = {0};
    char err[STATUS_ERR_MAX];
    enum status_code sc = parse_lookup(c, &lim, &rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = check_binary_cost(c, &lim, &rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = request_resolve_lookup(c->table, &rq, err, sizeof err);
    if (sc != STATUS_OK) {
        answer_error(a, sc, "%s", err);
    } else if (!reached_min_seq(c, rq.min_seq, a)) {
        /* answered */
    } else if (rq.is_bags) {
        size_t shape[1] = {rq.nbags};
        if (!c->binary && !table_settings(c->table)->has_max_norm)
            write_lookup_chunked(c, &rq, shape, 1, a);
        else
            write_lookup(c, &rq, shape, 1, rq.nbags, a);
    } else if (!c->binary && !table_settings(c->table)->has_max_norm) {
        write_lookup_chunked(c, &rq, rq.in.shape, rq.in.ndim, a);
    } else {
        write_lookup(c, &rq, rq.in.shape, rq.in.ndim, rq.in.n, a);
    }
    request_lookup_deinit(&rq);
}

/* ---- similarity and neighbours ------------------------------------- */

/* similarity_pairs on a keyed table: the rows of both keys (missing ones
 * by the table's policy), then the same score. */
static int keyed_pairs(struct table *t, const int64_t *keys, size_t npairs, enum metric m,
                       float *scores, size_t *bad)
{
    int64_t dim = table_dim(t);
    float *rows = alloc_floats(2 * npairs, dim);
    if (rows == NULL)
        return CORE_ENOMEM;
    int rc = table_lookup(t, keys, 2 * npairs, rows, bad);
    for (size_t i = 0; rc == CORE_OK && i < npairs; i++)
        scores[i] = similarity_vec(rows + 2 * i * (size_t)dim, rows + (2 * i + 1) * (size_t)dim,
                                   dim, m);
    free(rows);
    return rc;
}

static void handle_similarity(const struct handler_ctx *c, struct answer *a)
{
    struct request_limits lim = limits_of(c);
    struct similarity_request rq = {0};
    char err[STATUS_ERR_MAX];
    enum status_code sc = request_parse_similarity(c->body, c->len, &lim, &rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = request_resolve(c->table, &rq.pairs, true, "pairs", err, sizeof err);
    if (sc != STATUS_OK || !reached_min_seq(c, rq.min_seq, a)) {
        if (sc != STATUS_OK)
            answer_error(a, sc, "%s", err);
        request_similarity_deinit(&rq);
        return;
    }
    float *scores = malloc(rq.npairs * sizeof *scores + 1);
    size_t bad = 0;
    int rc = !scores ? CORE_ENOMEM
             : table_is_keyed(c->table)
                 ? keyed_pairs(c->table, rq.pairs.ids, rq.npairs, rq.metric, scores, &bad)
                 : similarity_pairs(c->table, rq.pairs.ids, rq.npairs, rq.metric, scores, &bad);
    if (rc == CORE_ENOTFOUND) {
        lookup_failed(c, &rq.pairs, "pairs", rc, bad, a);
        free(scores);
        request_similarity_deinit(&rq);
        return;
    }
    if (rc == CORE_OK) {
        response_scores(&a->body, scores, rq.npairs);
    } else {
        char where[96];
        request_index_name(&rq.pairs, "pairs", bad, where, sizeof where);
        answer_error(a, status_from_core(rc), "%s: %s", where, core_strerror(rc));
    }
    free(scores);
    request_similarity_deinit(&rq);
}

/* Query vectors for id or token queries: the rows as stored. */
static float *query_rows(const struct handler_ctx *c, const struct neighbors_request *rq)
{
    int64_t dim = table_dim(c->table);
    float *q = alloc_floats(rq->nq, dim);
    if (q == NULL)
        return NULL;
    for (size_t i = 0; i < rq->nq; i++)
        table_read_row(c->table, rq->queries.ids[i], q + i * (size_t)dim);
    return q;
}

/* A keyed table's query rows by key (missing keys by its policy; NULL with
 * *missing the index of one when the policy is error) and each key's row
 * to leave out (-1 for a missing key). */
static float *keyed_query_rows(const struct handler_ctx *c, const struct neighbors_request *rq,
                               int64_t *exclude, size_t *missing)
{
    int64_t dim = table_dim(c->table);
    float *q = alloc_floats(rq->nq, dim);
    uint64_t now = clock_wall_ms();
    for (size_t i = 0; q != NULL && i < rq->nq; i++) {
        if (!table_keyed_read(c->table, rq->queries.ids[i], now, q + i * (size_t)dim,
                              &exclude[i])) {
            *missing = i;
            free(q);
            return NULL;
        }
    }
    return q;
}

/* Hits of a keyed table name keys, not rows. */
static void hits_to_keys(const struct table *t, struct topk_hit *hits, const size_t *counts,
                         size_t nq, size_t k)
{
    for (size_t q = 0; q < nq; q++)
        for (size_t i = 0; i < counts[q]; i++)
            hits[q * k + i].id = table_keyed_key_of(t, hits[q * k + i].id);
}

static void search(const struct handler_ctx *c, struct neighbors_request *rq,
                   struct answer *a)
{
    bool keyed = table_is_keyed(c->table);
    int64_t *rows = NULL;
    size_t missing = SIZE_MAX;
    if (keyed && !rq->by_vectors) {
        rows = malloc(rq->nq * sizeof *rows + 1);
        float *q = rows != NULL ? keyed_query_rows(c, rq, rows, &missing) : NULL;
        if (q == NULL) {
            if (missing != SIZE_MAX)
                lookup_failed(c, &rq->queries, "ids", CORE_ENOTFOUND, missing, a);
            else
                answer_error(a, STATUS_INTERNAL, "%s", "out of memory");
            free(rows);
            return;
        }
        free(rq->vectors);
        rq->vectors = q;
        rq->by_vectors = true; /* the query rows are vectors now; rows are excluded below */
    }
    float *queries = rq->by_vectors ? rq->vectors : query_rows(c, rq);
    const int64_t *exclude = rows != NULL ? rows : rq->by_vectors ? NULL : rq->queries.ids;
    struct topk_hit *hits = NULL;
    size_t *counts = NULL;
    if (queries != NULL && rq->k <= SIZE_MAX / sizeof *hits / rq->nq) {
        hits = malloc(rq->nq * rq->k * sizeof *hits);
        counts = malloc(rq->nq * sizeof *counts);
    }
    int rc = hits && counts ? topk_search(c->table, queries, rq->nq, exclude, rq->k, rq->metric,
                                          hits, counts)
                            : CORE_ENOMEM;
    uint64_t limit = c->srv->cfg->max_answer_bytes;
    if (rc == CORE_OK && keyed)
        hits_to_keys(c->table, hits, counts, rq->nq, rq->k);
    if (rc == CORE_OK) {
        /* the cost check bounded tokens by their bytes; escapes (control
         * bytes, U+FFFD for broken UTF-8) can still make them longer */
        a->body.limit = limit < SIZE_MAX ? (size_t)limit : 0;
        response_neighbors(&a->body, hits, counts, rq->nq, rq->k, table_vocab(c->table));
        if (a->body.over_limit)
            answer_error(a, STATUS_PAYLOAD_TOO_LARGE,
                         "the answer passed max_answer_bytes %llu (its tokens need escapes); "
                         "send fewer queries or a smaller k", (unsigned long long)limit);
    } else
        answer_error(a, status_from_core(rc), "neighbour search failed: %s", core_strerror(rc));
    if (!rq->by_vectors)
        free(queries);
    free(rows);
    free(hits);
    free(counts);
}

static void handle_neighbors(const struct handler_ctx *c, struct answer *a)
{
    struct request_limits lim = limits_of(c);
    struct neighbors_request rq = {0};
    char err[STATUS_ERR_MAX];
    enum status_code sc = request_parse_neighbors(c->body, c->len, &lim, &rq, err, sizeof err);
    if (sc == STATUS_OK && !rq.by_vectors &&
        (!table_is_keyed(c->table) || rq.queries.is_tokens))
        sc = request_resolve(c->table, &rq.queries, true,
                             rq.queries.is_tokens ? "tokens" : "ids", err, sizeof err);
    if (sc != STATUS_OK)
        answer_error(a, sc, "%s", err);
    else if (reached_min_seq(c, rq.min_seq, a))
        search(c, &rq, a);
    request_neighbors_deinit(&rq);
}

/* ---- writes -------------------------------------------------------- */

/* Writes are refused while shutting down (every answered write must be in
 * the log or the final snapshot) and on frozen tables where asked. */
static bool writes_open(const struct handler_ctx *c, bool need_trainable, struct answer *a)
{
    if (atomic_load(&c->srv->draining)) {
        answer_error(a, STATUS_UNAVAILABLE, "%s", "the server is shutting down; retry elsewhere");
        return false;
    }
    if (need_trainable && table_settings(c->table)->freeze) {
        answer_error(a, STATUS_TABLE_FROZEN,
                     "table \"%s\" is frozen; configure \"freeze\": false to train it",
                     table_name(c->table));
        return false;
    }
    return true;
}

static const char *capacity_message(const struct table *t)
{
    return table_keyed_settings(t)->evict == TABLE_EVICT_NONE
               ? "the keyed table is full and evicts nothing (evict: none): the request's new "
                 "keys do not fit; nothing was changed"
               : "the request holds more distinct keys than the table's capacity; nothing was "
                 "changed";
}

static void gradient_error(const struct handler_ctx *c, const struct gradients_request *rq,
                           int rc, size_t bad, struct answer *a)
{
    char where[96];
    switch (rc) {
    case CORE_EFROZEN:
        answer_error(a, STATUS_TABLE_FROZEN, "table \"%s\" is frozen", table_name(c->table));
        return;
    case CORE_ECAPACITY:
        answer_error(a, STATUS_CAPACITY_EXCEEDED, "%s", capacity_message(c->table));
        return;
    case CORE_ERANGE:
        request_index_name(&rq->ids, rq->ids.is_tokens ? "tokens" : "ids", bad, where,
                           sizeof where);
        answer_error(a, STATUS_OUT_OF_RANGE, "%s: id out of range", where);
        return;
    case CORE_EINVAL:
        if (bad == SIZE_MAX)
            answer_error(a, STATUS_INVALID_ARGUMENT, "%s", "lr: must be finite and > 0");
        else
            answer_error(a, STATUS_INVALID_ARGUMENT, "grads (flat index %zu): not finite", bad);
        return;
    default:
        answer_error(a, status_from_core(rc), "the gradient step failed: %s",
                     core_strerror(rc));
    }
}

static int compare_ids(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

/* Distinct ids of a row assignment: the rows it changed. */
static size_t count_distinct(const int64_t *ids, size_t n)
{
    int64_t *sorted = malloc(n * sizeof *sorted + 1);
    if (sorted == NULL)
        return n;
    memcpy(sorted, ids, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, compare_ids);
    size_t distinct = n ? 1 : 0;
    for (size_t i = 1; i < n; i++)
        distinct += sorted[i] != sorted[i - 1];
    free(sorted);
    return distinct;
}

/* A validated write on its way through the journal; owns the parsed
 * request until the journal is done with it. */
struct pending_write {
    struct journal_write w;
    struct registry_entry *entry;
    struct answer *a;
    void (*complete)(void *io);
    void *io;
    size_t rows; /* distinct rows of a row assignment */
    bool is_rows;
    bool is_delete; /* keyed tables */
    bool keyed;
    union {
        struct gradients_request grads;
        struct rows_request rows;
        struct delete_request del;
    } rq;
};

/* A pending write for a handler to fill, or NULL having answered 500. */
static struct pending_write *pending_new(struct answer *a)
{
    struct pending_write *p = calloc(1, sizeof *p);
    if (p == NULL)
        answer_error(a, STATUS_INTERNAL, "%s", "out of memory");
    return p;
}

/* Frees p and its parsed request (whole, partly parsed or not at all). */
static void pending_free(struct pending_write *p)
{
    if (p->is_delete)
        request_delete_deinit(&p->rq.del);
    else if (p->is_rows)
        request_rows_deinit(&p->rq.rows);
    else
        request_gradients_deinit(&p->rq.grads);
    free(p);
}

/* The journal's callback: the write is durable and applied, or failed
 * having changed nothing. Runs on the journal's thread. */
static void write_done(struct journal_write *w)
{
    struct pending_write *p = (struct pending_write *)(void *)w;
    struct answer *a = p->a;
    if (w->rc == CORE_OK) {
        size_t rows = p->is_rows && !p->keyed ? p->rows : w->rows;
        atomic_fetch_add_explicit(&p->entry->updates, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->entry->rows_updated, rows, memory_order_relaxed);
        if (p->is_delete)
            response_keyed_result(&a->body, w->version, rows, w->seq, "deleted", w->rows);
        else if (p->keyed)
            response_keyed_result(&a->body, w->version, rows, w->seq, "inserted", w->inserted);
        else
            response_write_result(&a->body, w->version, rows, w->seq);
    } else if (w->rc == CORE_ECAPACITY) {
        answer_error(a, STATUS_CAPACITY_EXCEEDED, "%s", w->err);
    } else {
        answer_error(a, status_from_core(w->rc), "the write was not applied: %s",
                     w->err[0] ? w->err : core_strerror(w->rc));
    }
    void (*complete)(void *io) = p->complete;
    void *io = p->io;
    pending_free(p);
    complete(io); /* last: the request and its answer may be gone after it */
}

/* Hands p to the table's journal; the answer comes through write_done. */
static void submit_write(const struct handler_ctx *c, struct pending_write *p,
                         struct answer *a)
{
    p->entry = c->entry;
    p->keyed = table_is_keyed(c->table);
    p->a = a;
    p->complete = c->complete;
    p->io = c->io;
    p->w.done = write_done;
    *c->deferred = true;
    c->defer(c->io);
    registry_submit(c->entry, &p->w);
}

static void handle_gradients(const struct handler_ctx *c, struct answer *a)
{
    if (!writes_open(c, true, a))
        return;
    struct request_limits lim = limits_of(c);
    struct pending_write *p = pending_new(a);
    if (p == NULL)
        return;
    struct gradients_request *rq = &p->rq.grads;
    char err[STATUS_ERR_MAX];
    enum status_code sc = parse_gradients(c, &lim, rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = request_resolve(c->table, &rq->ids, false, "tokens", err, sizeof err);
    size_t bad = 0;
    int rc = sc == STATUS_OK ? table_check_gradients(c->table, rq->ids.ids, rq->ids.n, rq->grads,
                                                     rq->has_lr ? rq->lr : 0.0, &bad)
                             : CORE_OK;
    if (sc == STATUS_OK && rc == CORE_OK && table_is_keyed(c->table))
        rc = table_keyed_check(c->table, rq->ids.ids, rq->ids.n, &bad);
    if (sc != STATUS_OK || rc != CORE_OK) {
        if (sc != STATUS_OK)
            answer_error(a, sc, "%s", err);
        else
            gradient_error(c, rq, rc, bad, a);
        pending_free(p);
        return;
    }
    p->w = (struct journal_write){.op = JOURNAL_GRADIENTS, .ids = rq->ids.ids, .n = rq->ids.n,
                                  .values = rq->grads, .lr = rq->has_lr ? rq->lr : 0.0};
    submit_write(c, p, a);
}

static void handle_rows(const struct handler_ctx *c, struct answer *a)
{
    if (!writes_open(c, false, a))
        return;
    struct request_limits lim = limits_of(c);
    struct pending_write *p = pending_new(a);
    if (p == NULL)
        return;
    p->is_rows = true;
    struct rows_request *rq = &p->rq.rows;
    char err[STATUS_ERR_MAX];
    enum status_code sc = parse_rows(c, &lim, rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = request_resolve(c->table, &rq->ids, false, "tokens", err, sizeof err);
    size_t bad = 0;
    int rc = sc == STATUS_OK ? table_check_rows(c->table, rq->ids.ids, rq->ids.n, rq->vectors,
                                                &bad)
                             : CORE_OK;
    if (sc == STATUS_OK && rc == CORE_OK && table_is_keyed(c->table))
        rc = table_keyed_check(c->table, rq->ids.ids, rq->ids.n, &bad);
    if (sc != STATUS_OK || rc != CORE_OK) {
        if (sc != STATUS_OK) {
            answer_error(a, sc, "%s", err);
        } else if (rc == CORE_ECAPACITY) {
            answer_error(a, STATUS_CAPACITY_EXCEEDED, "%s", capacity_message(c->table));
        } else {
            char where[96];
            request_index_name(&rq->ids, rq->ids.is_tokens ? "tokens" : "ids", bad, where,
                               sizeof where);
            answer_error(a, status_from_core(rc), "%s: %s", where, core_strerror(rc));
        }
        pending_free(p);
        return;
    }
    p->rows = count_distinct(rq->ids.ids, rq->ids.n);
    p->w = (struct journal_write){.op = JOURNAL_ROWS, .ids = rq->ids.ids, .n = rq->ids.n,
                                  .values = rq->vectors};
    submit_write(c, p, a);
}

/* DELETE /v1/tables/{t}/rows: keys out of a keyed table, through the log. */
static void handle_delete_rows(const struct handler_ctx *c, struct answer *a)
{
    if (!writes_open(c, false, a))
        return;
    if (!table_is_keyed(c->table)) {
        answer_error(a, STATUS_INVALID_ARGUMENT,
                     "table \"%s\" is not keyed: only keyed tables (\"keys\": \"int64\") "
                     "delete rows", table_name(c->table));
        return;
    }
    struct request_limits lim = limits_of(c);
    struct pending_write *p = pending_new(a);
    if (p == NULL)
        return;
    p->is_delete = true;
    struct delete_request *rq = &p->rq.del;
    char err[STATUS_ERR_MAX];
    enum status_code sc = request_parse_delete(c->body, c->len, &lim, rq, err, sizeof err);
    if (sc != STATUS_OK) {
        answer_error(a, sc, "%s", err);
        pending_free(p);
        return;
    }
    p->w = (struct journal_write){.op = JOURNAL_DELETE, .ids = rq->ids.ids, .n = rq->ids.n};
    submit_write(c, p, a);
}

static size_t skip_space(const char *s, size_t i, size_t len)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* A snapshot request takes no parameters: no body, or an empty object. */
static bool empty_object(const char *body, size_t len)
{
    size_t i = skip_space(body, 0, len);
    if (i == len)
        return true;
    if (body[i] != '{')
        return false;
    i = skip_space(body, i + 1, len);
    if (i == len || body[i] != '}')
        return false;
    return skip_space(body, i + 1, len) == len;
}

static void handle_snapshot(const struct handler_ctx *c, struct answer *a)
{
    if (!writes_open(c, false, a))
        return;
    if (!empty_object(c->body, c->len)) {
        answer_error(a, STATUS_INVALID_ARGUMENT, "%s",
                     "snapshot takes no parameters: send no body or {}");
        return;
    }
    char path[4096], err[512] = "";
    uint64_t version = 0, seq = 0;
    int rc = registry_snapshot(&c->srv->tables, c->entry, "requested", path, sizeof path,
                               &version, &seq, err, sizeof err);
    if (rc == CORE_OK)
        response_snapshot(&a->body, path, version, seq);
    else if (rc == CORE_EEXISTS)
        answer_error(a, STATUS_UNAVAILABLE, "%s; retry", err);
    else
        answer_error(a, STATUS_INTERNAL, "snapshot failed: %s", err[0] ? err : core_strerror(rc));
}

/* ---- dispatch ------------------------------------------------------ */

typedef void (*handler_fn)(const struct handler_ctx *c, struct answer *a);

static const handler_fn handlers[ROUTE_COUNT] = {
    [ROUTE_HEALTHZ] = handle_healthz,       [ROUTE_READYZ] = handle_readyz,
    [ROUTE_METRICS] = handle_metrics,       [ROUTE_TABLES] = handle_tables,
    [ROUTE_TABLE] = handle_table,           [ROUTE_LOOKUP] = handle_lookup,
    [ROUTE_SIMILARITY] = handle_similarity, [ROUTE_NEIGHBORS] = handle_neighbors,
    [ROUTE_GRADIENTS] = handle_gradients,   [ROUTE_ROWS] = handle_rows,
    [ROUTE_SNAPSHOT] = handle_snapshot,     [ROUTE_DELETE_ROWS] = handle_delete_rows,
    [ROUTE_TOKENS] = tokens_handle,
    [ROUTE_EXPLORER] = explorer_handle,     [ROUTE_EXPLORER_ASSET] = explorer_handle,
    [ROUTE_CLUSTER] = handle_cluster,
};

void handler_run(const struct handler_ctx *c, struct answer *a)
{
    handler_fn fn = c->route < ROUTE_COUNT ? handlers[c->route] : NULL;
    if (fn == NULL) {
        answer_error(a, STATUS_NOT_FOUND, "%s", "no such endpoint");
        return;
    }
    fn(c, a);
    if (c->deferred != NULL && *c->deferred)
        return; /* the journal answers; a may be gone already */
    if (a->body.failed)
        answer_error(a, STATUS_INTERNAL, "%s", "the answer did not fit in memory");
}

/* The routes whose cost follows from their body, with the kind cost.h
 * knows them by. */
static bool request_kind_of(enum route_id route, enum request_kind *kind)
{
    switch (route) {
    case ROUTE_LOOKUP: *kind = REQUEST_LOOKUP; return true;
    case ROUTE_SIMILARITY: *kind = REQUEST_SIMILARITY; return true;
    case ROUTE_NEIGHBORS: *kind = REQUEST_NEIGHBORS; return true;
    case ROUTE_GRADIENTS: *kind = REQUEST_GRADIENTS; return true;
    case ROUTE_ROWS: *kind = REQUEST_ROWS; return true;
    default: return false;
    }
}

bool handler_is_heavy(const struct handler_ctx *c)
{
    enum request_kind kind;
    struct request_size size = {.body_bytes = c->len};
    struct request_cost cost;

    if (c->route == ROUTE_SNAPSHOT)
        return true;
    if (c->table == NULL || !request_kind_of(c->route, &kind))
        return false;
    struct request_limits lim = limits_of(c);
    size.kind = kind;
    request_cost(&size, &lim, &cost); /* a big body is heavy before it is read */
    if (request_cost_heavy(&cost))
        return true;
    if (c->binary_body)
        request_prescan_binary(kind, c->len, lim.dim, &size);
    else
        request_prescan(kind, c->body, c->len, &size);
    request_cost(&size, &lim, &cost);
    return request_cost_heavy(&cost);
}
