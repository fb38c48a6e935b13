/* request.c - request bodies into plain structs, every field checked.
 *
 * Each parser: strict JSON (json.c) -> the body must be an object of known
 * keys -> each field is read in place from the validated bytes (no tree)
 * by a walker that checks the array shape level by level and converts
 * leaves (ids, tokens, floats) into flat arrays, so a message can always
 * name the exact index ("grads[1][0][3]").
 *
 * Memory follows the body, not the other way round: arrays are counted
 * first and the request's cost (cost.h: max_batch, max_answer_bytes) is
 * checked before anything is allocated for them; ids and tokens are then
 * checked in a first pass and stored in a second, so a refused request
 * has allocated nothing but a few bytes. Floats (4 bytes each, at least 2
 * bytes of text) are checked and stored in one pass. */
#include "request.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost.h"
#include "error.h"
#include "json.h"
#include "response.h"

/* Default k for neighbors, as API.md. */
#define DEFAULT_K 10
/* Room for "field[i][j]..." in messages. */
#define PATH_MAX_TEXT 160
/* Integral numbers below this are printed as integers in messages
 * ("k: 100000 is outside", not "1e+05"). */
#define INTEGER_TEXT_MAX 1e17

struct ctx {
    const struct request_limits *lim;
    enum status_code code;
    char *err;
    size_t errlen;
    size_t body_len;
};

/* Where a value sits: field name plus one index per array level. */
struct path {
    const char *field;
    size_t depth;
    size_t idx[REQUEST_MAX_DIMS + 1];
};

enum leaf_kind { LEAF_ID, LEAF_TOKEN, LEAF_FLOAT };

static bool fail(struct ctx *c, enum status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(struct ctx *c, enum status_code code, const char *fmt, ...)
{
    if (c->code != STATUS_OK)
        return false;
    c->code = code;
    if (c->err != NULL && c->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return false;
}

static bool no_memory(struct ctx *c)
{
    return fail(c, STATUS_INTERNAL, "out of memory while reading the request");
}

/* ---- message helpers ---- */

static const char *path_text(const struct path *p, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "%s", p->field);
    for (size_t d = 0; d < p->depth && n < outlen; d++)
        n += (size_t)snprintf(out + n, outlen - n, "[%zu]", p->idx[d]);
    return out;
}

static const char *type_name(struct json_value v)
{
    return json_type_name(json_type_of(v));
}

/* The start of string v, decoded into out[JSON_QUOTE_MAX * 2] for a message;
 * returns the length to quote. */
static int quote_string(struct json_value v, char *out)
{
    struct json_value head = {v.p, v.len < JSON_QUOTE_MAX * 2 ? v.len : JSON_QUOTE_MAX * 2};
    size_t n = json_string_decode(head, out);
    return json_quote_len(out, n);
}

/* A number as a message shows it: integers as integers, others as the
 * shortest %g text that reads back. */
static const char *number_text(double d, char out[RESPONSE_DOUBLE_MAX])
{
    if (isfinite(d) && d == floor(d) && fabs(d) < INTEGER_TEXT_MAX)
        snprintf(out, RESPONSE_DOUBLE_MAX, "%.0f", d);
    else
        response_format_double(d, out);
    return out;
}

static bool wrong_type(struct ctx *c, const struct path *p, const char *want,
                       struct json_value v)
{
    char where[PATH_MAX_TEXT];
    return fail(c, STATUS_INVALID_ARGUMENT, "%s: expected %s, got %s",
                path_text(p, where, sizeof where), want, type_name(v));
}

/* ---- leaves ---- */

/* A plain integer ("123", "-4") is read exactly without strtod; anything
 * else (fractions, exponents, long numbers) goes through it. */
static double number_of(struct json_value v)
{
    const char *p = v.p, *end = v.p + v.len;
    bool neg = p < end && *p == '-';
    int64_t n = 0;

    if (neg)
        p++;
    if (p == end || end - p > 18)
        return json_number(v);
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return json_number(v);
        n = n * 10 + (*p - '0');
    }
    return neg ? -(double)n : (double)n;
}

/* A keyed table's key from the integer text itself: a double would round
 * keys above 2^53. Other number forms (1.0, 1e3) go through the double and
 * must be exact integers below 2^53. False when the text is not an int64
 * key (INT64_MIN marks free rows, so it is not one either). */
static bool key_of(struct json_value v, int64_t *out, bool *range)
{
    const char *p = v.p, *end = v.p + v.len;
    bool neg = p < end && *p == '-';
    uint64_t n = 0, limit = neg ? (uint64_t)INT64_MAX : (uint64_t)INT64_MAX;
    *range = false;
    if (neg)
        p++;
    const char *digits = p;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (limit - d) / 10) {
            *range = true;
            return false;
        }
        n = n * 10 + d;
    }
    if (p == end && p > digits) {
        *out = neg ? -(int64_t)n : (int64_t)n;
        return true;
    }
    double d = json_number(v);
    if (!isfinite(d) || d != floor(d))
        return false;
    if (fabs(d) >= 9007199254740992.0) { /* 2^53: no longer exact */
        *range = true;
        return false;
    }
    *out = (int64_t)d;
    return true;
}

static bool leaf_key(struct ctx *c, struct json_value v, const struct path *p, int64_t *out)
{
    char where[PATH_MAX_TEXT];
    int64_t key = 0;
    bool range = false;
    if (key_of(v, &key, &range)) {
        if (out != NULL)
            *out = key;
        return true;
    }
    int n = v.len < 40 ? (int)v.len : 40;
    if (range)
        return fail(c, STATUS_OUT_OF_RANGE,
                    "%s: key %.*s is out of range: keys are int64 in [-2^63 + 1, 2^63 - 1], "
                    "written as plain integers", path_text(p, where, sizeof where), n, v.p);
    return fail(c, STATUS_INVALID_ARGUMENT, "%s: %.*s is not an integer key",
                path_text(p, where, sizeof where), n, v.p);
}

/* Checks id v; stores it when out is non-NULL. */
static bool leaf_id(struct ctx *c, struct json_value v, const struct path *p, int64_t *out)
{
    char where[PATH_MAX_TEXT], num[RESPONSE_DOUBLE_MAX];
    double d;

    if (json_type_of(v) != JSON_NUMBER)
        return wrong_type(c, p, "an integer id", v);
    if (c->lim->keyed)
        return leaf_key(c, v, p, out);
    d = number_of(v);
    if (!isfinite(d) || d != floor(d)) {
        response_format_double(d, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: %s is not an integer",
                    path_text(p, where, sizeof where), num);
    }
    if (d < 0 || d >= (double)c->lim->num_embeddings)
        return fail(c, STATUS_OUT_OF_RANGE, "%s: id %s is out of range [0, %lld)",
                    path_text(p, where, sizeof where), number_text(d, num),
                    (long long)c->lim->num_embeddings);
    if (out != NULL)
        *out = (int64_t)d;
    return true;
}

/* Checks float v; stores it when out is non-NULL. */
static bool leaf_float(struct ctx *c, struct json_value v, const struct path *p, float *out)
{
    char where[PATH_MAX_TEXT], num[RESPONSE_DOUBLE_MAX];
    double d;

    if (json_type_of(v) != JSON_NUMBER)
        return wrong_type(c, p, "a number", v);
    d = number_of(v);
    /* rounding decides: a double just above FLT_MAX may still round to it */
    if (!isfinite(d) || !isfinite((float)d)) {
        response_format_double(d, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: %s is not a finite float32",
                    path_text(p, where, sizeof where), num);
    }
    if (out != NULL)
        *out = (float)d;
    return true;
}

/* ---- shapes ---- */

/* The shape along the first element of every level: what a rectangular
 * array must have; walk() then checks every other element against it. */
static bool infer_shape(struct ctx *c, struct json_value v, const char *field, size_t *shape,
                        size_t *ndim)
{
    struct json_iter it;

    *ndim = 0;
    while (json_type_of(v) == JSON_ARRAY) {
        if (*ndim == REQUEST_MAX_DIMS)
            return fail(c, STATUS_INVALID_ARGUMENT, "%s: nested deeper than %d levels",
                        field, REQUEST_MAX_DIMS);
        shape[(*ndim)++] = json_array_count(v);
        if (!json_iter_begin(&it, v) || !json_array_next(&it, &v))
            break;
    }
    return true;
}

/* Product of shape[0..ndim), or false when it overflows. */
static bool shape_count(const size_t *shape, size_t ndim, size_t *n)
{
    size_t p = 1;
    for (size_t d = 0; d < ndim; d++) {
        if (shape[d] != 0 && p > SIZE_MAX / shape[d])
            return false;
        p *= shape[d];
    }
    *n = p;
    return true;
}

/* Arrays of an input of this shape: 1 + s0 + s0*s1 + ... (0 for a scalar). */
static uint64_t shape_arrays(const size_t *shape, size_t ndim)
{
    uint64_t total = 0, level = 1;
    for (size_t d = 0; d < ndim; d++) {
        total += level;
        level = shape[d] != 0 && level > UINT64_MAX / shape[d] ? UINT64_MAX : level * shape[d];
        if (total > UINT64_MAX / 2)
            return UINT64_MAX;
    }
    return total;
}

/* The cost check of cost.h, once a request's arrays are counted. */
static bool check_cost(struct ctx *c, const struct request_size *s)
{
    struct request_cost cost;
    struct request_size sized = *s;
    sized.body_bytes = c->body_len;
    request_cost(&sized, c->lim, &cost);
    enum status_code code = request_cost_check(&cost, &sized, c->lim, c->err, c->errlen);
    if (code == STATUS_OK)
        return true;
    c->code = code;
    return false;
}

/* ---- the walker: shape checks level by level, leaves into flat arrays ---- */

struct walk {
    struct ctx *c;
    struct path path;
    const size_t *shape;
    size_t ndim;
    bool inner_is_dim; /* the last level is a row of embedding_dim floats */
    bool store;        /* false: check only (ids and tokens, first pass) */
    enum leaf_kind kind;
    size_t flat;
    int64_t *ids;
    const char **tokens;
    size_t *lens;
    char *arena;       /* tokens' decoded bytes */
    size_t arena_len;  /* check pass: room the tokens need */
    float *floats;
};

static bool take_token(struct walk *w, struct json_value v, size_t i)
{
    if (json_type_of(v) != JSON_STRING)
        return wrong_type(w->c, &w->path, "a string token", v);
    if (!w->store) {
        w->arena_len += v.len;
        return true;
    }
    /* no NUL inside: json.c refuses \u0000 */
    w->tokens[i] = w->arena + w->arena_len;
    w->lens[i] = json_string_decode(v, w->arena + w->arena_len);
    w->arena_len += w->lens[i];
    return true;
}

static bool take_leaf(struct walk *w, struct json_value v)
{
    size_t i = w->flat++;
    switch (w->kind) {
    case LEAF_ID:
        return leaf_id(w->c, v, &w->path, w->store ? &w->ids[i] : NULL);
    case LEAF_TOKEN:
        return take_token(w, v, i);
    case LEAF_FLOAT:
        return leaf_float(w->c, v, &w->path, w->store ? &w->floats[i] : NULL);
    }
    return false;
}

static bool wrong_length(struct walk *w, size_t got)
{
    char where[PATH_MAX_TEXT];
    size_t want = w->shape[w->path.depth];
    bool dim = w->inner_is_dim && w->path.depth + 1 == w->ndim;
    return fail(w->c, STATUS_INVALID_ARGUMENT, "%s: has %zu elements, expected %zu%s",
                path_text(&w->path, where, sizeof where), got, want,
                dim ? " (the table's embedding_dim)" : " (arrays must be rectangular)");
}

static bool walk_node(struct walk *w, struct json_value v)
{
    size_t d = w->path.depth, i = 0, n;
    struct json_iter it;
    struct json_value e;
    bool ok = true;

    if (d == w->ndim)
        return take_leaf(w, v);
    if (json_type_of(v) != JSON_ARRAY)
        return wrong_type(w->c, &w->path, "an array", v);
    /* the outermost level was counted by infer_shape */
    n = d == 0 ? w->shape[0] : json_array_count(v);
    if (n != w->shape[d])
        return wrong_length(w, n);
    json_iter_begin(&it, v);
    while (ok && json_array_next(&it, &e)) {
        w->path.idx[d] = i++;
        w->path.depth = d + 1;
        ok = walk_node(w, e);
        w->path.depth = d;
    }
    return ok;
}

static bool walk_field(struct ctx *c, struct json_value v, const char *field,
                       const size_t *shape, size_t ndim, struct walk *w)
{
    w->c = c;
    w->path.field = field;
    w->path.depth = 0;
    w->shape = shape;
    w->ndim = ndim;
    w->flat = 0;
    return walk_node(w, v);
}

/* ---- ids and tokens ---- */

static bool alloc_ids(struct ctx *c, struct request_ids *r, bool tokens, size_t token_bytes)
{
    size_t n = r->n ? r->n : 1;
    r->is_tokens = tokens;
    r->ids = calloc(n, sizeof *r->ids);
    if (tokens) {
        r->tokens = calloc(n, sizeof *r->tokens);
        r->lens = calloc(n, sizeof *r->lens);
        r->arena = malloc(token_bytes ? token_bytes : 1);
    }
    if (r->ids == NULL || (tokens && (r->tokens == NULL || r->lens == NULL || r->arena == NULL)))
        return no_memory(c);
    return true;
}

/* Checks every leaf of v (shape r->shape), then allocates r's arrays and
 * stores them: a refused request allocates nothing. */
static bool fill_ids(struct ctx *c, struct json_value v, const char *field,
                     struct request_ids *r, bool tokens)
{
    struct walk w = {.kind = tokens ? LEAF_TOKEN : LEAF_ID};

    if (!walk_field(c, v, field, r->shape, r->ndim, &w) ||
        !alloc_ids(c, r, tokens, w.arena_len))
        return false;
    w.store = true;
    w.ids = r->ids;
    w.tokens = r->tokens;
    w.lens = r->lens;
    w.arena = r->arena;
    w.arena_len = 0;
    return walk_field(c, v, field, r->shape, r->ndim, &w);
}

/* An ids/tokens input of any shape (a scalar too), as a lookup takes. */
static bool parse_any_shape(struct ctx *c, struct json_value v, const char *field, bool tokens,
                            enum request_kind kind, struct request_ids *r)
{
    if (!infer_shape(c, v, field, r->shape, &r->ndim))
        return false;
    if (!shape_count(r->shape, r->ndim, &r->n))
        return fail(c, STATUS_PAYLOAD_TOO_LARGE, "%s: too many elements", field);
    struct request_size s = {.kind = kind, .field = field, .ids = r->n,
                             .arrays = shape_arrays(r->shape, r->ndim)};
    if (!check_cost(c, &s))
        return false;
    return fill_ids(c, v, field, r, tokens);
}

/* A non-empty flat array of ids or tokens (neighbors, rows); s gives the
 * kind and the rest of the request's size for the cost check. */
static bool parse_list(struct ctx *c, struct json_value v, const char *field, bool tokens,
                       struct request_size s, struct request_ids *r)
{
    struct path p = {.field = field};

    if (json_type_of(v) != JSON_ARRAY)
        return wrong_type(c, &p, tokens ? "an array of tokens" : "an array of ids", v);
    r->ndim = 1;
    r->shape[0] = r->n = json_array_count(v);
    if (r->n == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: must not be empty", field);
    s.field = field;
    s.ids = r->n;
    if (!check_cost(c, &s))
        return false;
    return fill_ids(c, v, field, r, tokens);
}

/* n x dim floats (grads rows, vectors) of the given shape into *out. */
static bool parse_floats(struct ctx *c, struct json_value v, const char *field,
                         const size_t *shape, size_t ndim, float **out)
{
    struct walk w = {.kind = LEAF_FLOAT, .inner_is_dim = true, .store = true};
    size_t n;

    if (!shape_count(shape, ndim, &n) || n > SIZE_MAX / sizeof(float))
        return fail(c, STATUS_PAYLOAD_TOO_LARGE, "%s: too many values", field);
    /* n floats take at least 2n - 1 bytes of text ("0,0"): a shape taken
     * from the first elements that promises more is ragged, and a check
     * pass says where before anything is allocated for it */
    if (n > c->body_len / 2 + 1) {
        w.store = false;
        if (!walk_field(c, v, field, shape, ndim, &w))
            return false;
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: %zu values cannot fit in the body", field,
                    n);
    }
    *out = malloc(n ? n * sizeof(float) : 1);
    if (*out == NULL)
        return no_memory(c);
    w.floats = *out;
    return walk_field(c, v, field, shape, ndim, &w);
}

/* ---- the body object and its keys ---- */

struct key_slot {
    const char *name;
    struct json_value value;
    bool present;
};

static bool parse_root(struct ctx *c, const char *body, size_t len, struct json_value *root)
{
    enum status_code code = json_validate(body, len, JSON_MAX_DEPTH, c->err, c->errlen);
    if (code != STATUS_OK) {
        c->code = code;
        return false;
    }
    json_root(body, len, root); /* a valid text holds one value */
    if (json_type_of(*root) != JSON_OBJECT)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: expected a JSON object, got %s",
                    type_name(*root));
    return true;
}

static void list_names(const struct key_slot *slots, size_t n, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n && used < outlen; i++)
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", i ? ", " : "",
                                 slots[i].name);
}

/* Fills slots[i].value with the member named slots[i].name; refuses any
 * other key. Keys are unique: json.c checked. */
static bool match_keys(struct ctx *c, struct json_value root, struct key_slot *slots, size_t n)
{
    struct json_iter it;
    struct json_value key, val;

    json_iter_begin(&it, root);
    while (json_object_next(&it, &key, &val)) {
        size_t i = 0;
        while (i < n && !json_string_is(key, slots[i].name))
            i++;
        if (i == n) {
            char names[160], quoted[JSON_QUOTE_MAX * 2];
            int q = quote_string(key, quoted);
            list_names(slots, n, names, sizeof names);
            return fail(c, STATUS_INVALID_ARGUMENT, "body: unknown key \"%.*s\" (expected %s)",
                        q, quoted, names);
        }
        slots[i].value = val;
        slots[i].present = true;
    }
    return true;
}

/* Exactly one of two alternative keys ("ids" / "tokens"); *which gets 0/1. */
static bool one_of(struct ctx *c, const struct key_slot *a, const struct key_slot *b,
                   int *which)
{
    if (a->present && b->present)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: give either \"%s\" or \"%s\", not both",
                    a->name, b->name);
    if (!a->present && !b->present)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"%s\" (or \"%s\")", a->name,
                    b->name);
    *which = a->present ? 0 : 1;
    return true;
}

/* The words a request may use for a choice, with their values: the metrics
 * and the bag modes, side by side so every word is visible in this file. */
struct word {
    const char *name;
    int value;
};

static const struct word metrics[] = {
    {"cosine", METRIC_COSINE}, {"dot", METRIC_DOT}, {"l2", METRIC_L2}};
static const struct word bag_modes[] = {{"sum", BAG_SUM}, {"mean", BAG_MEAN}, {"max", BAG_MAX}};

/* Reads slot's value, one of words[0..n), into *out; absent keeps *out.
 * `expected` lists the words for the message. */
static bool parse_word(struct ctx *c, const struct key_slot *slot, const struct word *words,
                       size_t n, const char *expected, int *out)
{
    struct path p = {.field = slot->name};
    char quoted[JSON_QUOTE_MAX * 2];

    if (!slot->present)
        return true;
    if (json_type_of(slot->value) != JSON_STRING)
        return wrong_type(c, &p, "a string", slot->value);
    for (size_t i = 0; i < n; i++) {
        if (json_string_is(slot->value, words[i].name)) {
            *out = words[i].value;
            return true;
        }
    }
    int q = quote_string(slot->value, quoted);
    return fail(c, STATUS_INVALID_ARGUMENT, "%s: unknown %s \"%.*s\" (expected %s)", slot->name,
                slot->name, q, quoted, expected);
}

static bool parse_metric(struct ctx *c, const struct key_slot *slot, enum metric *m)
{
    int value = METRIC_COSINE;
    bool ok = parse_word(c, slot, metrics, sizeof metrics / sizeof metrics[0],
                         "cosine, dot or l2", &value);
    *m = (enum metric)value;
    return ok;
}

/* "min_seq": a non-negative integer, the seq a read waits for (cluster
 * mode's read-your-writes); absent is 0. */
static bool parse_min_seq(struct ctx *c, const struct key_slot *slot, uint64_t *seq)
{
    struct path p = {.field = "min_seq"};
    *seq = 0;
    if (!slot->present)
        return true;
    if (json_type_of(slot->value) != JSON_NUMBER)
        return wrong_type(c, &p, "an integer", slot->value);
    double d = number_of(slot->value);
    if (!isfinite(d) || d != floor(d) || d < 0 || d > 9007199254740992.0)
        return fail(c, STATUS_INVALID_ARGUMENT, "min_seq: must be an integer >= 0");
    *seq = (uint64_t)d;
    return true;
}

/* ---- lookup ---- */

static bool parse_mode(struct ctx *c, const struct key_slot *slot, enum bag_mode *mode)
{
    int value = BAG_MEAN; /* nn.EmbeddingBag's default */
    bool ok = parse_word(c, slot, bag_modes, sizeof bag_modes / sizeof bag_modes[0],
                         "sum, mean or max", &value);
    *mode = (enum bag_mode)value;
    return ok;
}

/* Checks bags is an array of arrays and counts its bags and ids; the cost
 * check counts every bag, empty or not, toward max_batch. */
static bool measure_bags(struct ctx *c, struct json_value bags, struct lookup_request *r)
{
    struct path p = {.field = "bags", .depth = 1};
    struct json_iter it;
    struct json_value bag;
    size_t b = 0, total = 0;

    if (json_type_of(bags) != JSON_ARRAY)
        return wrong_type(c, &(struct path){.field = "bags"}, "an array of bags", bags);
    json_iter_begin(&it, bags);
    while (json_array_next(&it, &bag)) {
        p.idx[0] = b++;
        if (json_type_of(bag) != JSON_ARRAY)
            return wrong_type(c, &p, "an array of ids", bag);
        total += json_array_count(bag);
    }
    if (b == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "bags: must hold at least one bag");
    r->nbags = b;
    r->in.ndim = 1;
    r->in.shape[0] = r->in.n = total;
    struct request_size s = {.kind = REQUEST_BAGS, .field = "bags", .ids = total, .bags = b};
    return check_cost(c, &s);
}

/* The first id or token of any bag, to tell ids from tokens. */
static bool first_bag_element(struct json_value bags, struct json_value *out)
{
    struct json_iter it, in;
    struct json_value bag;

    json_iter_begin(&it, bags);
    while (json_array_next(&it, &bag)) {
        json_iter_begin(&in, bag);
        if (json_array_next(&in, out))
            return true;
    }
    return false;
}

/* One pass over every bag's elements: check (w->store false) or store,
 * with offsets set when storing. */
static bool walk_bags(struct walk *w, struct json_value bags, size_t *offsets)
{
    struct json_iter it, in;
    struct json_value bag, e;
    size_t b = 0;

    w->flat = 0;
    json_iter_begin(&it, bags);
    while (json_array_next(&it, &bag)) {
        size_t j = 0;
        if (offsets != NULL)
            offsets[b] = w->flat;
        json_iter_begin(&in, bag);
        while (json_array_next(&in, &e)) {
            w->path.idx[0] = b;
            w->path.idx[1] = j++;
            if (!take_leaf(w, e))
                return false;
        }
        b++;
    }
    if (offsets != NULL)
        offsets[b] = w->flat;
    return true;
}

static bool fill_bags(struct ctx *c, struct json_value bags, struct lookup_request *r)
{
    struct json_value first;
    bool tokens = first_bag_element(bags, &first) && json_type_of(first) == JSON_STRING;
    struct walk w = {.c = c, .path = {.field = "bags", .depth = 2},
                     .kind = tokens ? LEAF_TOKEN : LEAF_ID};

    if (!walk_bags(&w, bags, NULL) || !alloc_ids(c, &r->in, tokens, w.arena_len))
        return false;
    r->offsets = malloc((r->nbags + 1) * sizeof *r->offsets);
    if (r->offsets == NULL)
        return no_memory(c);
    w.store = true;
    w.ids = r->in.ids;
    w.tokens = r->in.tokens;
    w.lens = r->in.lens;
    w.arena = r->in.arena;
    w.arena_len = 0;
    return walk_bags(&w, bags, r->offsets);
}

/* per_sample_weights: one array per bag, of the same lengths. */
static bool parse_weights(struct ctx *c, struct json_value v, struct lookup_request *r)
{
    struct walk w = {.c = c, .path = {.field = "per_sample_weights"}, .kind = LEAF_FLOAT,
                     .store = true};
    struct json_iter it, in;
    struct json_value row, e;
    size_t b = 0;

    if (r->mode != BAG_SUM)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "per_sample_weights: only supported with mode \"sum\"");
    if (json_type_of(v) != JSON_ARRAY)
        return wrong_type(c, &w.path, "an array of arrays", v);
    size_t rows = json_array_count(v);
    if (rows != r->nbags)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "per_sample_weights: has %zu arrays, expected %zu (one per bag)", rows,
                    r->nbags);
    r->per_sample_weights = malloc(r->in.n ? r->in.n * sizeof(float) : 1);
    if (r->per_sample_weights == NULL)
        return no_memory(c);
    w.floats = r->per_sample_weights;
    json_iter_begin(&it, v);
    while (json_array_next(&it, &row)) {
        size_t want = r->offsets[b + 1] - r->offsets[b], j = 0;
        w.path.depth = 1;
        w.path.idx[0] = b;
        if (json_type_of(row) != JSON_ARRAY)
            return wrong_type(c, &w.path, "an array of numbers", row);
        size_t got = json_array_count(row);
        if (got != want)
            return fail(c, STATUS_INVALID_ARGUMENT,
                        "per_sample_weights[%zu]: has %zu weights, expected %zu (bags[%zu] "
                        "has %zu ids)", b, got, want, b, want);
        w.path.depth = 2;
        json_iter_begin(&in, row);
        while (json_array_next(&in, &e)) {
            w.path.idx[1] = j++;
            if (!take_leaf(&w, e))
                return false;
        }
        b++;
    }
    return true;
}

static bool parse_bags(struct ctx *c, const struct key_slot *bags, const struct key_slot *mode,
                       const struct key_slot *weights, struct lookup_request *r)
{
    r->is_bags = true;
    if (!parse_mode(c, mode, &r->mode) || !measure_bags(c, bags->value, r) ||
        !fill_bags(c, bags->value, r))
        return false;
    return !weights->present || parse_weights(c, weights->value, r);
}

static bool parse_lookup(struct ctx *c, struct json_value root, struct lookup_request *r)
{
    struct key_slot k[] = {{.name = "ids"}, {.name = "tokens"}, {.name = "bags"},
                           {.name = "mode"}, {.name = "per_sample_weights"},
                           {.name = "min_seq"}};
    int which = 0;

    if (!match_keys(c, root, k, 6) || !parse_min_seq(c, &k[5], &r->min_seq))
        return false;
    if (k[2].present) {
        if (k[0].present || k[1].present)
            return fail(c, STATUS_INVALID_ARGUMENT,
                        "body: give \"bags\" or \"%s\", not both", k[0].present ? "ids" : "tokens");
        return parse_bags(c, &k[2], &k[3], &k[4], r);
    }
    if (k[3].present || k[4].present)
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: only valid with \"bags\"",
                    k[3].present ? "mode" : "per_sample_weights");
    if (!one_of(c, &k[0], &k[1], &which))
        return false;
    return parse_any_shape(c, k[which].value, k[which].name, which == 1, REQUEST_LOOKUP,
                           &r->in);
}

/* ---- similarity ---- */

static bool parse_pairs(struct ctx *c, struct json_value v, struct similarity_request *r)
{
    struct path p = {.field = "pairs"};
    struct request_ids *ids = &r->pairs;
    struct json_iter it, in;
    struct json_value first, e;
    bool tokens = false;

    if (json_type_of(v) != JSON_ARRAY)
        return wrong_type(c, &p, "an array of pairs", v);
    r->npairs = json_array_count(v);
    if (r->npairs == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "pairs: must not be empty");
    struct request_size s = {.kind = REQUEST_SIMILARITY, .field = "pairs",
                             .ids = (uint64_t)r->npairs * 2};
    if (!check_cost(c, &s))
        return false;
    ids->ndim = 2;
    ids->shape[0] = r->npairs;
    ids->shape[1] = 2;
    ids->n = r->npairs * 2;
    json_iter_begin(&it, v);
    if (json_array_next(&it, &first) && json_iter_begin(&in, first) && json_array_next(&in, &e))
        tokens = json_type_of(e) == JSON_STRING;
    return fill_ids(c, v, "pairs", ids, tokens);
}

static bool parse_similarity(struct ctx *c, struct json_value root, struct similarity_request *r)
{
    struct key_slot k[] = {{.name = "pairs"}, {.name = "metric"}, {.name = "min_seq"}};

    if (!match_keys(c, root, k, 3) || !parse_min_seq(c, &k[2], &r->min_seq))
        return false;
    if (!k[0].present)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"pairs\"");
    return parse_pairs(c, k[0].value, r) && parse_metric(c, &k[1], &r->metric);
}

/* ---- neighbors ---- */

static bool parse_k(struct ctx *c, const struct key_slot *slot, size_t *k)
{
    struct path p = {.field = "k"};
    char num[RESPONSE_DOUBLE_MAX];
    size_t max_k = c->lim->max_k;
    double d;

    *k = max_k < DEFAULT_K ? max_k : DEFAULT_K;
    if (!slot->present)
        return true;
    if (json_type_of(slot->value) != JSON_NUMBER)
        return wrong_type(c, &p, "an integer", slot->value);
    d = number_of(slot->value);
    number_text(d, num);
    if (!isfinite(d) || d != floor(d))
        return fail(c, STATUS_INVALID_ARGUMENT, "k: %s is not an integer", num);
    if (d < 1 || d > (double)max_k)
        return fail(c, STATUS_INVALID_ARGUMENT, "k: %s is outside [1, %zu] (max_k)", num, max_k);
    *k = (size_t)d;
    return true;
}

/* want_rows: 0 for neighbour queries (any count, cost-checked here), else
 * the ids' count the vectors must match (rows). */
static bool parse_vectors(struct ctx *c, struct json_value v, size_t want_rows,
                          struct request_size s, float **out, size_t *rows)
{
    struct path p = {.field = "vectors"};
    size_t shape[2];

    if (json_type_of(v) != JSON_ARRAY)
        return wrong_type(c, &p, "an array of vectors", v);
    shape[0] = json_array_count(v);
    shape[1] = (size_t)c->lim->dim;
    if (shape[0] == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "vectors: must not be empty");
    if (want_rows != 0 && shape[0] != want_rows)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "vectors: has %zu vectors, expected %zu (one per id)", shape[0], want_rows);
    s.field = "vectors";
    s.ids = shape[0];
    if (want_rows == 0 && !check_cost(c, &s))
        return false;
    *rows = shape[0];
    return parse_floats(c, v, "vectors", shape, 2, out);
}

static bool parse_neighbors(struct ctx *c, struct json_value root, struct neighbors_request *r)
{
    struct key_slot k[] = {{.name = "ids"}, {.name = "tokens"}, {.name = "vectors"},
                           {.name = "k"}, {.name = "metric"}, {.name = "min_seq"}};
    int which = 0;

    if (!match_keys(c, root, k, 6) || !parse_min_seq(c, &k[5], &r->min_seq))
        return false;
    if (k[2].present && (k[0].present || k[1].present))
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "body: give one of \"ids\", \"tokens\" or \"vectors\", not several");
    if (!k[2].present && !one_of(c, &k[0], &k[1], &which))
        return false;
    /* k and metric first: the answer's size depends on k */
    if (!parse_k(c, &k[3], &r->k) || !parse_metric(c, &k[4], &r->metric))
        return false;
    struct request_size s = {.kind = REQUEST_NEIGHBORS, .k = r->k};
    if (k[2].present) {
        r->by_vectors = true;
        return parse_vectors(c, k[2].value, 0, s, &r->vectors, &r->nq);
    }
    if (!parse_list(c, k[which].value, k[which].name, which == 1, s, &r->queries))
        return false;
    r->nq = r->queries.n;
    return true;
}

/* ---- gradients ---- */

static bool parse_lr(struct ctx *c, const struct key_slot *slot, struct gradients_request *r)
{
    struct path p = {.field = "lr"};
    char num[RESPONSE_DOUBLE_MAX];
    double lr;

    if (!slot->present)
        return true;
    if (json_type_of(slot->value) != JSON_NUMBER)
        return wrong_type(c, &p, "a number", slot->value);
    lr = number_of(slot->value);
    if (!isfinite(lr) || !(lr > 0)) {
        response_format_double(lr, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "lr: must be finite and > 0, got %s", num);
    }
    r->has_lr = true;
    r->lr = lr;
    return true;
}

static void shape_text(const size_t *shape, size_t ndim, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "[");
    for (size_t d = 0; d < ndim && n < outlen; d++)
        n += (size_t)snprintf(out + n, outlen - n, "%s%zu", d ? "," : "", shape[d]);
    if (n < outlen)
        snprintf(out + n, outlen - n, "]");
}

/* grads must have ids' shape plus [D]; checked along the first elements
 * before allocating, then element by element by the walker. */
static bool parse_grads(struct ctx *c, struct json_value v, struct gradients_request *r)
{
    size_t want[REQUEST_MAX_DIMS + 1], got[REQUEST_MAX_DIMS], gnd, nd = r->ids.ndim;
    char a[96], b[96];

    memcpy(want, r->ids.shape, nd * sizeof *want);
    want[nd] = (size_t)c->lim->dim;
    if (!infer_shape(c, v, "grads", got, &gnd))
        return false;
    if (gnd != nd + 1 || memcmp(got, want, gnd * sizeof *got) != 0) {
        shape_text(got, gnd, a, sizeof a);
        shape_text(r->ids.shape, nd, b, sizeof b);
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "grads: shape %s does not match the ids' shape %s plus embedding_dim %lld",
                    a, b, (long long)c->lim->dim);
    }
    return parse_floats(c, v, "grads", want, nd + 1, &r->grads);
}

static bool parse_gradients(struct ctx *c, struct json_value root, struct gradients_request *r)
{
    struct key_slot k[] = {{.name = "ids"}, {.name = "tokens"}, {.name = "grads"}, {.name = "lr"}};
    int which = 0;

    if (!match_keys(c, root, k, 4) || !one_of(c, &k[0], &k[1], &which))
        return false;
    if (!k[2].present)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"grads\"");
    if (!parse_any_shape(c, k[which].value, k[which].name, which == 1, REQUEST_GRADIENTS,
                         &r->ids))
        return false;
    if (r->ids.n == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: must not be empty", k[which].name);
    return parse_grads(c, k[2].value, r) && parse_lr(c, &k[3], r);
}

/* ---- rows ---- */

static bool parse_rows(struct ctx *c, struct json_value root, struct rows_request *r)
{
    struct key_slot k[] = {{.name = "ids"}, {.name = "tokens"}, {.name = "vectors"}};
    struct request_size s = {.kind = REQUEST_ROWS};
    size_t rows;
    int which = 0;

    if (!match_keys(c, root, k, 3) || !one_of(c, &k[0], &k[1], &which))
        return false;
    if (!k[2].present)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"vectors\"");
    if (!parse_list(c, k[which].value, k[which].name, which == 1, s, &r->ids))
        return false;
    return parse_vectors(c, k[2].value, r->ids.n, s, &r->vectors, &rows);
}

/* ---- delete (keyed tables) ---- */

static bool parse_delete(struct ctx *c, struct json_value root, struct delete_request *r)
{
    struct key_slot k[] = {{.name = "ids"}};
    struct request_size s = {.kind = REQUEST_ROWS};

    if (!match_keys(c, root, k, 1))
        return false;
    if (!k[0].present)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"ids\"");
    return parse_list(c, k[0].value, "ids", false, s, &r->ids);
}

/* ---- public entry points: parse, clean up on failure ---- */

#define DEFINE_PARSER(kind, type)                                                        \
    enum status_code request_parse_##kind(const char *body, size_t len,                 \
                                          const struct request_limits *lim,             \
                                          struct type *out, char *err, size_t errlen)   \
    {                                                                                    \
        struct ctx c = {lim, STATUS_OK, err, errlen, len};                               \
        struct json_value root;                                                          \
        memset(out, 0, sizeof *out);                                                     \
        if (err != NULL && errlen > 0)                                                   \
            err[0] = '\0';                                                               \
        if (parse_root(&c, body, len, &root))                                            \
            parse_##kind(&c, root, out);                                                 \
        if (c.code != STATUS_OK)                                                         \
            request_##kind##_deinit(out);                                                \
        return c.code;                                                                   \
    }

DEFINE_PARSER(lookup, lookup_request)
DEFINE_PARSER(similarity, similarity_request)
DEFINE_PARSER(neighbors, neighbors_request)
DEFINE_PARSER(gradients, gradients_request)
DEFINE_PARSER(rows, rows_request)
DEFINE_PARSER(delete, delete_request)

/* ---- tokens to ids ---- */

char *request_index_name(const struct request_ids *r, const char *field, size_t flat,
                         char *out, size_t outlen)
{
    struct path p = {.field = field, .depth = r->ndim};

    for (size_t d = r->ndim; d-- > 0;) {
        size_t dim = r->shape[d] ? r->shape[d] : 1;
        p.idx[d] = flat % dim;
        flat /= dim;
    }
    path_text(&p, out, outlen);
    return out;
}

static enum status_code resolve_failed(const struct table *t, const struct request_ids *r,
                                       int rc, size_t bad, const char *where,
                                       char *err, size_t errlen)
{
    struct ctx c = {.code = STATUS_OK, .err = err, .errlen = errlen};

    if (rc == CORE_EUNSUPPORTED)
        fail(&c, STATUS_INVALID_ARGUMENT, "%s: table \"%s\" has no vocabulary; send ids",
             where, table_name(t));
    else if (rc == CORE_ENOTFOUND)
        fail(&c, STATUS_UNKNOWN_TOKEN, "%s: unknown token \"%.*s\"", where,
             json_quote_len(r->tokens[bad], r->lens[bad]), r->tokens[bad]);
    else
        fail(&c, status_from_core(rc), "%s: %s", where, core_strerror(rc));
    return c.code;
}

static int resolve(const struct table *t, struct request_ids *r, bool allow_oov, size_t *bad)
{
    *bad = 0;
    return table_resolve_tokens(t, r->tokens, r->lens, r->n, allow_oov, r->ids, bad);
}

enum status_code request_resolve(const struct table *t, struct request_ids *r, bool allow_oov,
                                 const char *field, char *err, size_t errlen)
{
    char where[PATH_MAX_TEXT];
    size_t bad;
    int rc;

    if (!r->is_tokens || r->n == 0)
        return STATUS_OK;
    rc = resolve(t, r, allow_oov, &bad);
    if (rc == CORE_OK)
        return STATUS_OK;
    if (rc == CORE_ENOTFOUND)
        request_index_name(r, field, bad, where, sizeof where);
    else
        snprintf(where, sizeof where, "%s", field);
    return resolve_failed(t, r, rc, bad, where, err, errlen);
}

enum status_code request_resolve_lookup(const struct table *t, struct lookup_request *r,
                                        char *err, size_t errlen)
{
    char where[PATH_MAX_TEXT];
    size_t bad, b = 0;
    int rc;

    if (!r->is_bags)
        return request_resolve(t, &r->in, true, r->in.is_tokens ? "tokens" : "ids", err,
                               errlen);
    if (!r->in.is_tokens || r->in.n == 0)
        return STATUS_OK;
    rc = resolve(t, &r->in, true, &bad);
    if (rc == CORE_OK)
        return STATUS_OK;
    if (rc == CORE_ENOTFOUND) {
        while (b + 1 < r->nbags && r->offsets[b + 1] <= bad)
            b++;
        snprintf(where, sizeof where, "bags[%zu][%zu]", b, bad - r->offsets[b]);
    } else {
        snprintf(where, sizeof where, "bags");
    }
    return resolve_failed(t, &r->in, rc, bad, where, err, errlen);
}

/* ---- cleanup ---- */

void request_ids_deinit(struct request_ids *r)
{
    free(r->ids);
    free(r->tokens);
    free(r->lens);
    free(r->arena);
    memset(r, 0, sizeof *r);
}

void request_lookup_deinit(struct lookup_request *r)
{
    request_ids_deinit(&r->in);
    free(r->offsets);
    free(r->per_sample_weights);
    memset(r, 0, sizeof *r);
}

void request_similarity_deinit(struct similarity_request *r)
{
    request_ids_deinit(&r->pairs);
    memset(r, 0, sizeof *r);
}

void request_neighbors_deinit(struct neighbors_request *r)
{
    request_ids_deinit(&r->queries);
    free(r->vectors);
    memset(r, 0, sizeof *r);
}

void request_gradients_deinit(struct gradients_request *r)
{
    request_ids_deinit(&r->ids);
    if (!r->grads_borrowed)
        free(r->grads);
    memset(r, 0, sizeof *r);
}

void request_delete_deinit(struct delete_request *r)
{
    request_ids_deinit(&r->ids);
}

void request_rows_deinit(struct rows_request *r)
{
    request_ids_deinit(&r->ids);
    if (!r->vectors_borrowed)
        free(r->vectors);
    memset(r, 0, sizeof *r);
}
