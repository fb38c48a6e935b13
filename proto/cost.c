/* cost.c - a request's cost from its sizes, the limits that refuse it, and
 * the pre-scan that finds the sizes in a raw body; see cost.h.
 *
 * Answer bounds follow the writers of response.c byte for byte where that
 * is cheap (brackets, commas, keys) and take the longest text where it is
 * not: a float is at most 19 characters of f32fmt, an id at most as many
 * digits as the table's largest, a token at most the table's longest. */
#include "cost.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

/* f32fmt writes at most 19 characters; one more for the comma. */
#define FLOAT_TEXT 20
/* {"shape":[...],"embeddings":...}: the keys and REQUEST_MAX_DIMS + 1
 * numbers of at most 20 digits and a comma each. */
#define LOOKUP_FRAME (32 + (REQUEST_MAX_DIMS + 1) * 21)
/* {"id":,"score":}, and a comma: the fixed bytes of one neighbour hit. */
#define HIT_FRAME 17
/* ,"token":"" around a hit's token. */
#define HIT_TOKEN_FRAME 11
/* {"version":n,"rows":m} and the like. */
#define SMALL_ANSWER 96

/* Above any of these a request goes to the work pool: each is about a
 * millisecond on this machine kind (a body of floats parses at ~20 ns a
 * byte, ~12 ns a float is written, a table scan runs at ~10 G floats/s). */
#define HEAVY_BODY_BYTES ((uint64_t)64 << 10)
#define HEAVY_ANSWER_BYTES ((uint64_t)1 << 20)
#define HEAVY_WORK ((uint64_t)1 << 23)

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

static uint64_t digits(uint64_t v)
{
    uint64_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static uint64_t dim_of(const struct request_limits *lim)
{
    return lim->dim > 0 ? (uint64_t)lim->dim : 0;
}

static uint64_t rows_of(const struct request_limits *lim)
{
    return lim->num_embeddings > 0 ? (uint64_t)lim->num_embeddings : 0;
}

/* Rows of dim floats, as JSON arrays or raw float32. */
static uint64_t rows_bytes(const struct request_limits *lim, uint64_t rows)
{
    uint64_t floats = sat_mul(rows, dim_of(lim));
    if (lim->binary)
        return sat_mul(floats, sizeof(float));
    return sat_add(sat_mul(floats, FLOAT_TEXT), sat_mul(rows, 3));
}

static void cost_lookup(const struct request_size *s, const struct request_limits *lim,
                        struct request_cost *c)
{
    uint64_t rows = s->kind == REQUEST_BAGS ? s->bags : s->ids;
    c->ids_in = s->kind == REQUEST_BAGS ? sat_add(s->ids, s->bags) : s->ids;
    c->floats_out = sat_mul(rows, dim_of(lim));
    c->answer_bytes = rows_bytes(lim, rows);
    if (!lim->binary)
        c->answer_bytes = sat_add(c->answer_bytes, sat_add(LOOKUP_FRAME, sat_mul(s->arrays, 3)));
    c->work = sat_mul(sat_add(s->ids, rows), dim_of(lim));
}

static void cost_neighbors(const struct request_size *s, const struct request_limits *lim,
                           struct request_cost *c)
{
    uint64_t rows = rows_of(lim), hits = s->k < rows ? s->k : rows;
    uint64_t hit = HIT_FRAME + FLOAT_TEXT + digits(rows ? rows - 1 : 0);
    if (lim->max_token_len > 0)
        hit = sat_add(hit, HIT_TOKEN_FRAME + (uint64_t)lim->max_token_len);
    c->ids_in = s->ids;
    c->floats_out = sat_mul(s->ids, hits);
    c->answer_bytes = sat_add(SMALL_ANSWER, sat_mul(s->ids, sat_add(3, sat_mul(hits, hit))));
    c->work = sat_mul(sat_mul(s->ids, rows), dim_of(lim));
}

void request_cost(const struct request_size *s, const struct request_limits *lim,
                  struct request_cost *out)
{
    *out = (struct request_cost){.body_bytes = s->body_bytes};
    switch (s->kind) {
    case REQUEST_LOOKUP:
    case REQUEST_BAGS:
        cost_lookup(s, lim, out);
        return;
    case REQUEST_SIMILARITY:
        out->ids_in = s->ids;
        out->floats_out = s->ids / 2;
        out->answer_bytes = sat_add(SMALL_ANSWER, sat_mul(s->ids / 2, FLOAT_TEXT));
        out->work = sat_mul(s->ids, dim_of(lim));
        return;
    case REQUEST_NEIGHBORS:
        cost_neighbors(s, lim, out);
        return;
    case REQUEST_GRADIENTS:
    case REQUEST_ROWS:
        out->ids_in = s->ids;
        out->answer_bytes = SMALL_ANSWER;
        out->work = sat_mul(s->ids, dim_of(lim));
        return;
    }
}

static enum status_code too_large(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum status_code too_large(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return STATUS_PAYLOAD_TOO_LARGE;
}

static enum status_code batch_too_large(const struct request_cost *c,
                                        const struct request_size *s,
                                        const struct request_limits *lim, char *err,
                                        size_t errlen)
{
    const char *field = s->field ? s->field : "ids";
    switch (s->kind) {
    case REQUEST_BAGS:
        return too_large(err, errlen,
                         "bags: %" PRIu64 " bags and %" PRIu64 " ids count %" PRIu64
                         " toward max_batch %zu (every bag counts, empty or not)",
                         s->bags, s->ids, c->ids_in, lim->max_batch);
    case REQUEST_SIMILARITY:
        return too_large(err, errlen,
                         "pairs: %" PRIu64 " pairs (%" PRIu64 " ids) exceed max_batch %zu",
                         s->ids / 2, s->ids, lim->max_batch);
    default:
        return too_large(err, errlen, "%s: %" PRIu64 " %s exceed max_batch %zu", field,
                         c->ids_in, field, lim->max_batch);
    }
}

static enum status_code answer_too_large(const struct request_cost *c,
                                         const struct request_size *s,
                                         const struct request_limits *lim, char *err,
                                         size_t errlen)
{
    const char *field = s->field ? s->field : "ids";
    switch (s->kind) {
    case REQUEST_NEIGHBORS:
        return too_large(err, errlen,
                         "%s: %" PRIu64 " queries with k %" PRIu64 " make an answer of up to %"
                         PRIu64 " bytes, over max_answer_bytes %" PRIu64
                         "; send fewer queries or a smaller k",
                         field, s->ids, s->k, c->answer_bytes, lim->max_answer_bytes);
    case REQUEST_LOOKUP:
    case REQUEST_BAGS:
        return too_large(err, errlen,
                         "%s: %" PRIu64 " rows of %" PRId64 " floats make an answer of up to %"
                         PRIu64 " bytes, over max_answer_bytes %" PRIu64 "; ask for fewer rows%s",
                         field, s->kind == REQUEST_BAGS ? s->bags : s->ids, lim->dim,
                         c->answer_bytes, lim->max_answer_bytes,
                         lim->binary ? "" : " or send Accept: application/octet-stream "
                                            "(4 bytes a float)");
    default:
        return too_large(err, errlen,
                         "%s: the answer would take up to %" PRIu64
                         " bytes, over max_answer_bytes %" PRIu64,
                         field, c->answer_bytes, lim->max_answer_bytes);
    }
}

enum status_code request_cost_check(const struct request_cost *c, const struct request_size *s,
                                    const struct request_limits *lim, char *err, size_t errlen)
{
    if (c->ids_in > lim->max_batch)
        return batch_too_large(c, s, lim, err, errlen);
    if (lim->max_answer_bytes > 0 && c->answer_bytes > lim->max_answer_bytes)
        return answer_too_large(c, s, lim, err, errlen);
    return STATUS_OK;
}

bool request_cost_heavy(const struct request_cost *c)
{
    return c->body_bytes >= HEAVY_BODY_BYTES || c->answer_bytes >= HEAVY_ANSWER_BYTES ||
           c->work >= HEAVY_WORK;
}

/* ---- the pre-scan ---- */

/* Leaves (scalars) and arrays of a nested array v in one pass over its
 * bytes: every array but the outermost is an element of another, and an
 * array of m > 0 elements holds m - 1 commas, so the leaves are the commas
 * plus one, less the empty arrays. Strings are skipped whole. */
static void count_leaves(struct json_value v, uint64_t *leaves, uint64_t *arrays)
{
    const char *p = v.p, *end = v.p + v.len;
    uint64_t commas = 0, empty = 0;

    if (json_type_of(v) != JSON_ARRAY) {
        *leaves = 1;
        *arrays = 0;
        return;
    }
    *arrays = 0;
    while (p < end) {
        char c = *p++;
        if (c == '"') {
            while (p < end && *p != '"')
                p += *p == '\\' ? 2 : 1;
            p++;
        } else if (c == ',') {
            commas++;
        } else if (c == '[') {
            const char *q = p;
            (*arrays)++;
            while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
                q++;
            empty += q < end && *q == ']';
        }
    }
    *leaves = commas + 1 > empty ? commas + 1 - empty : 0;
}

static void prescan_bags(struct json_value v, struct request_size *out)
{
    struct json_iter it;
    struct json_value bag;

    out->kind = REQUEST_BAGS;
    out->field = "bags";
    if (!json_iter_begin(&it, v))
        return;
    while (json_array_next(&it, &bag)) {
        out->bags++;
        out->ids += json_array_count(bag);
    }
}

/* The value of "k", when it is a plain number within reason. */
static void prescan_k(struct json_value v, struct request_size *out)
{
    double k;
    if (json_type_of(v) != JSON_NUMBER)
        return;
    k = json_number(v);
    if (k >= 1 && k <= 1e9)
        out->k = (uint64_t)k;
}

static void prescan_member(struct json_value key, struct json_value v, struct request_size *out)
{
    bool ids = json_string_is(key, "ids"), tokens = !ids && json_string_is(key, "tokens");

    if (out->kind == REQUEST_NEIGHBORS) {
        if (ids || tokens || json_string_is(key, "vectors")) {
            out->field = ids ? "ids" : tokens ? "tokens" : "vectors";
            out->ids = json_array_count(v);
        } else if (json_string_is(key, "k")) {
            prescan_k(v, out);
        }
        return;
    }
    if (out->kind == REQUEST_SIMILARITY) {
        if (json_string_is(key, "pairs"))
            out->ids = 2 * (uint64_t)json_array_count(v);
        return;
    }
    if (out->kind == REQUEST_LOOKUP && json_string_is(key, "bags")) {
        prescan_bags(v, out);
        return;
    }
    if (ids || tokens) {
        uint64_t leaves, arrays;
        count_leaves(v, &leaves, &arrays);
        out->field = ids ? "ids" : "tokens";
        out->ids = leaves;
        out->arrays = arrays;
    }
}

void request_prescan(enum request_kind kind, const char *body, size_t len,
                     struct request_size *out)
{
    static const char *const fields[] = {
        [REQUEST_LOOKUP] = "ids", [REQUEST_BAGS] = "bags", [REQUEST_SIMILARITY] = "pairs",
        [REQUEST_NEIGHBORS] = "ids", [REQUEST_GRADIENTS] = "ids", [REQUEST_ROWS] = "ids",
    };
    struct json_value root, key, v;
    struct json_iter it;

    *out = (struct request_size){.kind = kind, .field = fields[kind], .body_bytes = len,
                                 .k = 10};
    if (!json_root(body, len, &root) || json_type_of(root) != JSON_OBJECT ||
        !json_iter_begin(&it, root))
        return;
    while (json_object_next(&it, &key, &v))
        prescan_member(key, v, out);
}

void request_prescan_binary(enum request_kind kind, size_t len, int64_t dim,
                            struct request_size *out)
{
    uint64_t per_id = sizeof(int64_t);
    if (kind == REQUEST_GRADIENTS || kind == REQUEST_ROWS)
        per_id += (dim > 0 ? (uint64_t)dim : 0) * sizeof(float);
    *out = (struct request_size){.kind = kind, .field = "ids", .ids = len / per_id,
                                 .arrays = 1 + len / per_id, .body_bytes = len};
}

void request_size_of_lookup(const struct lookup_request *r, struct request_size *out)
{
    uint64_t arrays = 0, level = 1;
    for (size_t d = 0; d < r->in.ndim; d++) {
        arrays = sat_add(arrays, level);
        level = sat_mul(level, r->in.shape[d]);
    }
    *out = (struct request_size){
        .kind = r->is_bags ? REQUEST_BAGS : REQUEST_LOOKUP,
        .field = r->is_bags ? "bags" : r->in.is_tokens ? "tokens" : "ids",
        .ids = r->in.n,
        .bags = r->nbags,
        .arrays = r->is_bags ? 1 : arrays,
    };
}
