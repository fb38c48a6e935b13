/* response.c - answers written straight into a struct buf: no JSON tree,
 * floats through f32fmt (via buf_put_f32*), doubles of the configuration
 * through the shortest "%.*g" that reads back. */
#include "response.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* Typical bytes per float in a JSON row ("-0.12345678,"), to reserve once
 * instead of growing the buffer many times on large answers. */
#define BYTES_PER_FLOAT 12
/* Never reserve more than this up front; past it the buffer grows. */
#define RESERVE_MAX ((size_t)64 << 20)
/* Floats fetched at a time by response_lookup_rows (256 KB). */
#define LOOKUP_CHUNK_FLOATS ((size_t)64 << 10)

size_t response_format_double(double d, char *out)
{
    int n = 0;

    if (isnan(d))
        return (size_t)snprintf(out, RESPONSE_DOUBLE_MAX, "nan");
    if (isinf(d))
        return (size_t)snprintf(out, RESPONSE_DOUBLE_MAX, d > 0 ? "inf" : "-inf");
    for (int prec = 1; prec <= 17; prec++) {
        n = snprintf(out, RESPONSE_DOUBLE_MAX, "%.*g", prec, d);
        if (strtod(out, NULL) == d)
            break;
    }
    return (size_t)n;
}

/* A double as JSON the way Python's repr prints a float ("2.0", "0.001",
 * "1e-08"), so settings read back as floats, like the f32fmt rows. */
static void put_double(struct buf *b, double d)
{
    char text[RESPONSE_DOUBLE_MAX];
    size_t n;

    if (!isfinite(d)) {
        buf_puts(b, "null");
        return;
    }
    n = response_format_double(d, text);
    buf_append(b, text, n);
    if (strpbrk(text, ".e") == NULL)
        buf_puts(b, ".0");
}

/* Reserves about `want` bytes, capped so an estimate never fails a buffer
 * whose limit the real answer would fit. */
static void reserve_about(struct buf *b, size_t want)
{
    size_t room = b->limit ? (b->limit > b->len ? b->limit - b->len : 0) : SIZE_MAX;
    if (want > RESERVE_MAX)
        want = RESERVE_MAX;
    if (want > room)
        want = room;
    if (want > 0)
        buf_reserve(b, want);
}

/* Appends s as a JSON string, with any invalid UTF-8 (a message cut short
 * by its buffer) replaced by '?', so the answer always parses. */
static void put_safe_string(struct buf *b, const char *s)
{
    size_t n = strlen(s), i = 0;
    char *copy = malloc(n + 1);

    if (copy == NULL) {
        buf_put_json_string(b, "", 0);
        return;
    }
    while (i < n) {
        size_t k = json_utf8_len((const unsigned char *)s + i, n - i);
        if (k == 0) {
            copy[i++] = '?';
            continue;
        }
        memcpy(copy + i, s + i, k);
        i += k;
    }
    buf_put_json_string(b, copy, n);
    free(copy);
}

void response_error(struct buf *b, enum status_code code, const char *message)
{
    buf_puts(b, "{\"error\":{\"code\":\"");
    buf_puts(b, status_name(code));
    buf_puts(b, "\",\"message\":");
    put_safe_string(b, message != NULL ? message : "");
    buf_puts(b, "}}");
}

void response_status(struct buf *b, const char *status)
{
    buf_puts(b, "{\"status\":");
    put_safe_string(b, status);
    buf_putc(b, '}');
}

/* ---- lookups ---- */

static void put_shape(struct buf *b, const size_t *shape, size_t ndim, size_t dim)
{
    buf_putc(b, '[');
    for (size_t d = 0; d < ndim; d++) {
        buf_put_u64(b, shape[d]);
        buf_putc(b, ',');
    }
    buf_put_u64(b, dim);
    buf_putc(b, ']');
}

/* Where the rows of a lookup answer come from: one array, or chunks that
 * fetch() fills on demand into chunk (chunk_rows rows at a time). */
struct row_cursor {
    size_t dim;
    const float *rows;  /* the next row */
    size_t avail;       /* rows left at rows */
    size_t next;        /* index of the first row not fetched yet */
    size_t total;
    float *chunk;
    size_t chunk_rows;
    response_rows_fn fetch;
    void *ctx;
    bool failed;
};

static const float *next_row(struct row_cursor *c)
{
    if (c->avail == 0) {
        size_t n = c->total - c->next < c->chunk_rows ? c->total - c->next : c->chunk_rows;
        if (c->failed || c->fetch == NULL || n == 0 || !c->fetch(c->ctx, c->next, n, c->chunk)) {
            c->failed = true;
            return NULL;
        }
        c->rows = c->chunk;
        c->avail = n;
        c->next += n;
    }
    const float *row = c->rows;
    c->rows += c->dim;
    c->avail--;
    return row;
}

/* One level of the nested answer. */
static void put_level(struct buf *b, const size_t *shape, size_t ndim, struct row_cursor *cur)
{
    if (ndim == 0) {
        const float *row = next_row(cur);
        if (row != NULL)
            buf_put_f32_array(b, row, cur->dim);
        return;
    }
    buf_putc(b, '[');
    for (size_t i = 0; i < shape[0] && !cur->failed; i++) {
        if (i > 0)
            buf_putc(b, ',');
        put_level(b, shape + 1, ndim - 1, cur);
    }
    buf_putc(b, ']');
}

static void put_lookup(struct buf *b, const size_t *shape, size_t ndim, struct row_cursor *cur)
{
    buf_puts(b, "{\"shape\":");
    put_shape(b, shape, ndim, cur->dim);
    buf_puts(b, ",\"embeddings\":");
    put_level(b, shape, ndim, cur);
    buf_putc(b, '}');
    if (cur->failed)
        b->failed = true;
}

static size_t count_rows(const size_t *shape, size_t ndim)
{
    size_t n = 1;
    for (size_t d = 0; d < ndim; d++)
        n *= shape[d];
    return n;
}

void response_lookup(struct buf *b, const size_t *shape, size_t ndim, size_t dim,
                     const float *rows)
{
    size_t n = count_rows(shape, ndim);
    struct row_cursor cur = {.dim = dim, .rows = rows, .avail = n, .total = n};

    reserve_about(b, 64 + n * dim * BYTES_PER_FLOAT);
    put_lookup(b, shape, ndim, &cur);
}

bool response_lookup_rows(struct buf *b, const size_t *shape, size_t ndim, size_t dim,
                          response_rows_fn fetch, void *ctx)
{
    size_t n = count_rows(shape, ndim);
    size_t chunk_rows = dim > 0 && dim < LOOKUP_CHUNK_FLOATS ? LOOKUP_CHUNK_FLOATS / dim : 1;
    struct row_cursor cur = {.dim = dim, .total = n, .chunk_rows = chunk_rows, .fetch = fetch,
                             .ctx = ctx};

    cur.chunk = malloc((chunk_rows * dim + 1) * sizeof(float));
    if (cur.chunk == NULL) {
        b->failed = true;
        return false;
    }
    reserve_about(b, 64 + n * dim * BYTES_PER_FLOAT);
    put_lookup(b, shape, ndim, &cur);
    free(cur.chunk);
    return !cur.failed;
}

void response_binary(struct buf *b, const float *v, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    buf_append(b, v, n * sizeof *v);
#else
    if (!buf_reserve(b, n * sizeof *v))
        return;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        unsigned char le[4];
        memcpy(&u, &v[i], sizeof u);
        for (int k = 0; k < 4; k++)
            le[k] = (unsigned char)(u >> (8 * k));
        buf_append(b, le, sizeof le);
    }
#endif
}

size_t response_shape_text(char *out, size_t outlen, const size_t *shape, size_t ndim,
                           size_t dim)
{
    size_t used = 0;

    for (size_t d = 0; d <= ndim; d++) {
        int n = snprintf(out + used, outlen - used, "%s%zu", d ? "," : "",
                         d < ndim ? shape[d] : dim);
        if (n < 0 || (size_t)n >= outlen - used) {
            if (outlen > 0)
                out[0] = '\0';
            return 0;
        }
        used += (size_t)n;
    }
    return used;
}

/* ---- similarity ---- */

void response_scores(struct buf *b, const float *scores, size_t n)
{
    reserve_about(b, 16 + n * BYTES_PER_FLOAT);
    buf_puts(b, "{\"scores\":");
    buf_put_f32_array(b, scores, n);
    buf_putc(b, '}');
}

static void put_hit(struct buf *b, const struct topk_hit *h, const struct vocab *vocab)
{
    size_t len = 0;
    const char *tok;

    buf_puts(b, "{\"id\":");
    buf_put_i64(b, h->id);
    if (vocab != NULL && (tok = vocab_token(vocab, h->id, &len)) != NULL) {
        buf_puts(b, ",\"token\":");
        buf_put_json_string(b, tok, len);
    }
    buf_puts(b, ",\"score\":");
    buf_put_f32(b, h->score);
    buf_putc(b, '}');
}

void response_neighbors(struct buf *b, const struct topk_hit *hits, const size_t *counts,
                        size_t nq, size_t k, const struct vocab *vocab)
{
    reserve_about(b, 16 + nq * k * 48);
    buf_puts(b, "{\"results\":[");
    for (size_t q = 0; q < nq; q++) {
        const struct topk_hit *list = hits + q * k;
        if (q > 0)
            buf_putc(b, ',');
        buf_putc(b, '[');
        for (size_t i = 0; i < counts[q] && i < k; i++) {
            if (i > 0)
                buf_putc(b, ',');
            put_hit(b, &list[i], vocab);
        }
        buf_putc(b, ']');
    }
    buf_puts(b, "]}");
}

/* ---- table info ---- */

static void put_key(struct buf *b, const char *key)
{
    buf_putc(b, ',');
    buf_putc(b, '"');
    buf_puts(b, key);
    buf_puts(b, "\":");
}

static void put_bool(struct buf *b, bool v)
{
    buf_puts(b, v ? "true" : "false");
}

static void put_optimizer(struct buf *b, const struct optim_config *o)
{
    if (o == NULL) {
        buf_puts(b, "null");
        return;
    }
    buf_puts(b, "{\"name\":");
    buf_put_json_string(b, optim_kind_name(o->kind), strlen(optim_kind_name(o->kind)));
    put_key(b, "lr");
    put_double(b, o->lr);
    switch (o->kind) {
    case OPTIM_SGD:
        break;
    case OPTIM_SPARSE_ADAM:
        put_key(b, "betas");
        buf_putc(b, '[');
        put_double(b, o->beta1);
        buf_putc(b, ',');
        put_double(b, o->beta2);
        buf_putc(b, ']');
        put_key(b, "eps");
        put_double(b, o->eps);
        break;
    case OPTIM_ADAGRAD:
        put_key(b, "lr_decay");
        put_double(b, o->lr_decay);
        put_key(b, "initial_accumulator_value");
        put_double(b, o->initial_accumulator_value);
        put_key(b, "eps");
        put_double(b, o->eps);
        break;
    }
    buf_putc(b, '}');
}

static void put_settings(struct buf *b, const struct table_settings *s)
{
    put_key(b, "frozen");
    put_bool(b, s->freeze);
    put_key(b, "padding_idx");
    if (s->has_padding)
        buf_put_i64(b, s->padding_idx);
    else
        buf_puts(b, "null");
    put_key(b, "max_norm");
    if (s->has_max_norm)
        put_double(b, s->max_norm);
    else
        buf_puts(b, "null");
    put_key(b, "norm_type");
    if (isinf(s->norm_type))
        buf_puts(b, "\"inf\"");
    else
        put_double(b, s->norm_type);
    put_key(b, "scale_grad_by_freq");
    put_bool(b, s->scale_grad_by_freq);
}

void response_table_info(struct buf *b, const struct table *t, const struct optim_config *opt)
{
    const char *name = table_name(t);

    buf_puts(b, "{\"name\":");
    buf_put_json_string(b, name, strlen(name));
    put_key(b, "num_embeddings");
    buf_put_i64(b, table_num_embeddings(t));
    put_key(b, "embedding_dim");
    buf_put_i64(b, table_dim(t));
    put_key(b, "dtype");
    buf_puts(b, "\"float32\"");
    put_settings(b, table_settings(t));
    put_key(b, "optimizer");
    put_optimizer(b, opt);
    put_key(b, "vocab");
    put_bool(b, table_vocab(t) != NULL);
    put_key(b, "version");
    buf_put_u64(b, table_version(t));
    put_key(b, "seq");
    buf_put_u64(b, table_log_seq(t));
    buf_putc(b, '}');
}

void response_table_list(struct buf *b, const struct table *const *tables,
                         const struct optim_config *const *opts, size_t n)
{
    buf_puts(b, "{\"tables\":[");
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            buf_putc(b, ',');
        response_table_info(b, tables[i], opts != NULL ? opts[i] : NULL);
    }
    buf_puts(b, "]}");
}

/* ---- tokens ---- */

void response_tokens(struct buf *b, const struct vocab *v, int64_t first, int64_t count)
{
    buf_puts(b, "{\"tokens\":[");
    bool comma = false;
    for (int64_t pos = first; pos < first + count; pos++) {
        int64_t id = vocab_sorted_id(v, pos);
        size_t len = 0;
        const char *tok = id >= 0 ? vocab_token(v, id, &len) : NULL;
        if (tok == NULL)
            continue;
        buf_puts(b, comma ? ",{\"id\":" : "{\"id\":");
        buf_put_i64(b, id);
        buf_puts(b, ",\"token\":");
        buf_put_json_string(b, tok, len);
        buf_putc(b, '}');
        comma = true;
    }
    buf_puts(b, "]}");
}

/* ---- writes ---- */

void response_write_result(struct buf *b, uint64_t version, size_t rows, uint64_t seq)
{
    buf_puts(b, "{\"version\":");
    buf_put_u64(b, version);
    buf_puts(b, ",\"rows\":");
    buf_put_u64(b, rows);
    buf_puts(b, ",\"seq\":");
    buf_put_u64(b, seq);
    buf_putc(b, '}');
}

void response_snapshot(struct buf *b, const char *path, uint64_t version, uint64_t seq)
{
    buf_puts(b, "{\"path\":");
    put_safe_string(b, path);
    buf_puts(b, ",\"version\":");
    buf_put_u64(b, version);
    buf_puts(b, ",\"seq\":");
    buf_put_u64(b, seq);
    buf_putc(b, '}');
}
