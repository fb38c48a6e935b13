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

#include "cluster.h"
#include "error.h"
#include "request.h"
#include "similarity.h"

/* Requests above these sizes are moved to the work pool (see http.c). */
#define HEAVY_BODY_BYTES (1u << 20)       /* ~ms of JSON parsing */
#define HEAVY_SCAN_FLOATS ((int64_t)1 << 21) /* a scan of ~8 MB of rows */

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
    response_error(&a->body, code, message);
}

static struct request_limits limits_of(const struct handler_ctx *c)
{
    const struct config *cfg = c->srv->cfg;
    size_t max_k = cfg->max_k > 0 ? (size_t)cfg->max_k : 1;
    return (struct request_limits){
        .num_embeddings = table_num_embeddings(c->table),
        .dim = table_dim(c->table),
        .max_batch = (size_t)cfg->max_batch,
        .max_k = max_k < TOPK_MAX ? max_k : TOPK_MAX,
    };
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
        answer_error(a, status_from_core(rc), "lookup failed at index %zu: %s", bad,
                     core_strerror(rc));
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

static void handle_lookup(const struct handler_ctx *c, struct answer *a)
{
    struct request_limits lim = limits_of(c);
    struct lookup_request rq = {0};
    char err[STATUS_ERR_MAX];
    enum status_code sc = request_parse_lookup(c->body, c->len, &lim, &rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = request_resolve_lookup(c->table, &rq, err, sizeof err);
    if (sc != STATUS_OK) {
        answer_error(a, sc, "%s", err);
    } else if (!reached_min_seq(c, rq.min_seq, a)) {
        /* answered */
    } else if (rq.is_bags) {
        size_t shape[1] = {rq.nbags};
        write_lookup(c, &rq, shape, 1, rq.nbags, a);
    } else {
        write_lookup(c, &rq, rq.in.shape, rq.in.ndim, rq.in.n, a);
    }
    request_lookup_deinit(&rq);
}

/* ---- similarity and neighbours ------------------------------------- */

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
    int rc = scores ? similarity_pairs(c->table, rq.pairs.ids, rq.npairs, rq.metric, scores,
                                       &bad)
                    : CORE_ENOMEM;
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

static void search(const struct handler_ctx *c, struct neighbors_request *rq,
                   struct answer *a)
{
    float *queries = rq->by_vectors ? rq->vectors : query_rows(c, rq);
    const int64_t *exclude = rq->by_vectors ? NULL : rq->queries.ids;
    struct topk_hit *hits = NULL;
    size_t *counts = NULL;
    if (queries != NULL && rq->k <= SIZE_MAX / sizeof *hits / rq->nq) {
        hits = malloc(rq->nq * rq->k * sizeof *hits);
        counts = malloc(rq->nq * sizeof *counts);
    }
    int rc = hits && counts ? topk_search(c->table, queries, rq->nq, exclude, rq->k, rq->metric,
                                          hits, counts)
                            : CORE_ENOMEM;
    if (rc == CORE_OK)
        response_neighbors(&a->body, hits, counts, rq->nq, rq->k, table_vocab(c->table));
    else
        answer_error(a, status_from_core(rc), "neighbour search failed: %s", core_strerror(rc));
    if (!rq->by_vectors)
        free(queries);
    free(hits);
    free(counts);
}

static void handle_neighbors(const struct handler_ctx *c, struct answer *a)
{
    struct request_limits lim = limits_of(c);
    struct neighbors_request rq = {0};
    char err[STATUS_ERR_MAX];
    enum status_code sc = request_parse_neighbors(c->body, c->len, &lim, &rq, err, sizeof err);
    if (sc == STATUS_OK && !rq.by_vectors)
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

static void gradient_error(const struct handler_ctx *c, const struct gradients_request *rq,
                           int rc, size_t bad, struct answer *a)
{
    char where[96];
    switch (rc) {
    case CORE_EFROZEN:
        answer_error(a, STATUS_TABLE_FROZEN, "table \"%s\" is frozen", table_name(c->table));
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
    union {
        struct gradients_request grads;
        struct rows_request rows;
    } rq;
};

/* The journal's callback: the write is durable and applied, or failed
 * having changed nothing. Runs on the journal's thread. */
static void write_done(struct journal_write *w)
{
    struct pending_write *p = (struct pending_write *)(void *)w;
    struct answer *a = p->a;
    if (w->rc == CORE_OK) {
        size_t rows = p->is_rows ? p->rows : w->rows;
        atomic_fetch_add_explicit(&p->entry->updates, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->entry->rows_updated, rows, memory_order_relaxed);
        response_write_result(&a->body, w->version, rows, w->seq);
    } else {
        answer_error(a, status_from_core(w->rc), "the write was not applied: %s",
                     w->err[0] ? w->err : core_strerror(w->rc));
    }
    if (p->is_rows)
        request_rows_deinit(&p->rq.rows);
    else
        request_gradients_deinit(&p->rq.grads);
    void (*complete)(void *io) = p->complete;
    void *io = p->io;
    free(p);
    complete(io); /* last: the request and its answer may be gone after it */
}

/* Hands p to the table's journal; the answer comes through write_done. */
static void submit_write(const struct handler_ctx *c, struct pending_write *p,
                         struct answer *a)
{
    p->entry = c->entry;
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
    struct pending_write *p = calloc(1, sizeof *p);
    if (p == NULL) {
        answer_error(a, STATUS_INTERNAL, "%s", "out of memory");
        return;
    }
    struct gradients_request *rq = &p->rq.grads;
    char err[STATUS_ERR_MAX];
    enum status_code sc = request_parse_gradients(c->body, c->len, &lim, rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = request_resolve(c->table, &rq->ids, false, "tokens", err, sizeof err);
    size_t bad = 0;
    int rc = sc == STATUS_OK ? table_check_gradients(c->table, rq->ids.ids, rq->ids.n, rq->grads,
                                                     rq->has_lr ? rq->lr : 0.0, &bad)
                             : CORE_OK;
    if (sc != STATUS_OK || rc != CORE_OK) {
        if (sc != STATUS_OK)
            answer_error(a, sc, "%s", err);
        else
            gradient_error(c, rq, rc, bad, a);
        request_gradients_deinit(rq);
        free(p);
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
    struct pending_write *p = calloc(1, sizeof *p);
    if (p == NULL) {
        answer_error(a, STATUS_INTERNAL, "%s", "out of memory");
        return;
    }
    p->is_rows = true;
    struct rows_request *rq = &p->rq.rows;
    char err[STATUS_ERR_MAX];
    enum status_code sc = request_parse_rows(c->body, c->len, &lim, rq, err, sizeof err);
    if (sc == STATUS_OK)
        sc = request_resolve(c->table, &rq->ids, false, "tokens", err, sizeof err);
    size_t bad = 0;
    int rc = sc == STATUS_OK ? table_check_rows(c->table, rq->ids.ids, rq->ids.n, rq->vectors,
                                                &bad)
                             : CORE_OK;
    if (sc != STATUS_OK || rc != CORE_OK) {
        if (sc != STATUS_OK) {
            answer_error(a, sc, "%s", err);
        } else {
            char where[96];
            request_index_name(&rq->ids, rq->ids.is_tokens ? "tokens" : "ids", bad, where,
                               sizeof where);
            answer_error(a, status_from_core(rc), "%s: %s", where, core_strerror(rc));
        }
        request_rows_deinit(rq);
        free(p);
        return;
    }
    p->rows = count_distinct(rq->ids.ids, rq->ids.n);
    p->w = (struct journal_write){.op = JOURNAL_ROWS, .ids = rq->ids.ids, .n = rq->ids.n,
                                  .values = rq->vectors};
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
    [ROUTE_SNAPSHOT] = handle_snapshot,
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
    if (a->body.failed)
        answer_error(a, STATUS_INTERNAL, "%s", "the answer did not fit in memory");
}

bool handler_is_heavy(const struct handler_ctx *c)
{
    if (c->route == ROUTE_SNAPSHOT)
        return true;
    if (c->len >= HEAVY_BODY_BYTES)
        return true;
    if (c->route == ROUTE_NEIGHBORS && c->table != NULL)
        return table_num_embeddings(c->table) * table_dim(c->table) >= HEAVY_SCAN_FLOATS;
    return false;
}
