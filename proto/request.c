/* request.c - request bodies into plain structs, every field checked.
 *
 * Each parser: strict JSON (json.c) -> the body must be an object of known
 * keys -> each field is read by a walker that checks the array shape level
 * by level and converts leaves (ids, tokens, floats) into flat arrays, so a
 * message can always name the exact index ("grads[1][0][3]"). Counts are
 * checked against max_batch before anything large is allocated. */
#include "request.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "response.h"

/* Default k for neighbors, as API.md. */
#define DEFAULT_K 10
/* How many bytes of a client's string a message quotes. */
#define QUOTE_MAX 48
/* Room for "field[i][j]..." in messages. */
#define PATH_MAX_TEXT 160

struct ctx {
    const struct request_limits *lim;
    enum status_code code;
    char *err;
    size_t errlen;
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

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsTrue(v))
        return "true";
    if (cJSON_IsFalse(v))
        return "false";
    return "null";
}

/* Bytes of s[0..n) to quote in a message: at most QUOTE_MAX, cut at the
 * start of a UTF-8 character so the message stays valid UTF-8. */
static int quote_len(const char *s, size_t n)
{
    if (n <= QUOTE_MAX)
        return (int)n;
    n = QUOTE_MAX;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return (int)n;
}

static bool wrong_type(struct ctx *c, const struct path *p, const char *want, const cJSON *v)
{
    char where[PATH_MAX_TEXT];
    return fail(c, STATUS_INVALID_ARGUMENT, "%s: expected %s, got %s",
                path_text(p, where, sizeof where), want, type_name(v));
}

/* ---- leaves ---- */

static bool leaf_id(struct ctx *c, const cJSON *v, const struct path *p, int64_t *out)
{
    char where[PATH_MAX_TEXT], num[RESPONSE_DOUBLE_MAX];
    double d;

    if (!cJSON_IsNumber(v))
        return wrong_type(c, p, "an integer id", v);
    d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) {
        response_format_double(d, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: %s is not an integer",
                    path_text(p, where, sizeof where), num);
    }
    if (d < 0 || d >= (double)c->lim->num_embeddings) {
        response_format_double(d, num);
        return fail(c, STATUS_OUT_OF_RANGE, "%s: id %s is out of range [0, %lld)",
                    path_text(p, where, sizeof where), num,
                    (long long)c->lim->num_embeddings);
    }
    *out = (int64_t)d;
    return true;
}

/* Tokens point into the cJSON tree until copy_tokens moves them. */
static bool leaf_token(struct ctx *c, const cJSON *v, const struct path *p,
                       const char **tok, size_t *len)
{
    if (!cJSON_IsString(v))
        return wrong_type(c, p, "a string token", v);
    *tok = v->valuestring;
    *len = strlen(v->valuestring); /* no NUL inside: json.c refuses \u0000 */
    return true;
}

static bool leaf_float(struct ctx *c, const cJSON *v, const struct path *p, float *out)
{
    char where[PATH_MAX_TEXT], num[RESPONSE_DOUBLE_MAX];
    double d;

    if (!cJSON_IsNumber(v))
        return wrong_type(c, p, "a number", v);
    d = v->valuedouble;
    /* rounding decides: a double just above FLT_MAX may still round to it */
    if (!isfinite(d) || !isfinite((float)d)) {
        response_format_double(d, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: %s is not a finite float32",
                    path_text(p, where, sizeof where), num);
    }
    *out = (float)d;
    return true;
}

/* ---- shapes ---- */

static size_t array_size(const cJSON *a)
{
    size_t n = 0;
    for (const cJSON *e = a->child; e != NULL; e = e->next)
        n++;
    return n;
}

/* The shape along the first element of every level: what a rectangular
 * array must have; walk() then checks every other element against it. */
static bool infer_shape(struct ctx *c, const cJSON *v, const char *field, size_t *shape,
                        size_t *ndim)
{
    *ndim = 0;
    while (cJSON_IsArray(v)) {
        if (*ndim == REQUEST_MAX_DIMS)
            return fail(c, STATUS_INVALID_ARGUMENT, "%s: nested deeper than %d levels",
                        field, REQUEST_MAX_DIMS);
        shape[(*ndim)++] = array_size(v);
        v = v->child;
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

static bool check_batch(struct ctx *c, const char *field, size_t n, const char *what)
{
    if (n <= c->lim->max_batch)
        return true;
    return fail(c, STATUS_PAYLOAD_TOO_LARGE, "%s: %zu %s exceed max_batch %zu", field, n,
                what, c->lim->max_batch);
}

/* ---- the walker: shape checks level by level, leaves into flat arrays ---- */

struct walk {
    struct ctx *c;
    struct path path;
    const size_t *shape;
    size_t ndim;
    bool inner_is_dim; /* the last level is a row of embedding_dim floats */
    enum leaf_kind kind;
    size_t flat;
    int64_t *ids;
    const char **tokens;
    size_t *lens;
    float *floats;
};

static bool take_leaf(struct walk *w, const cJSON *v)
{
    size_t i = w->flat++;
    switch (w->kind) {
    case LEAF_ID:
        return leaf_id(w->c, v, &w->path, &w->ids[i]);
    case LEAF_TOKEN:
        return leaf_token(w->c, v, &w->path, &w->tokens[i], &w->lens[i]);
    case LEAF_FLOAT:
        return leaf_float(w->c, v, &w->path, &w->floats[i]);
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

static bool walk_node(struct walk *w, const cJSON *v)
{
    size_t d = w->path.depth, i = 0;
    bool ok = true;

    if (d == w->ndim)
        return take_leaf(w, v);
    if (!cJSON_IsArray(v))
        return wrong_type(w->c, &w->path, "an array", v);
    if (array_size(v) != w->shape[d])
        return wrong_length(w, array_size(v));
    for (const cJSON *e = v->child; e != NULL && ok; e = e->next, i++) {
        w->path.idx[d] = i;
        w->path.depth = d + 1;
        ok = walk_node(w, e);
        w->path.depth = d;
    }
    return ok;
}

static bool walk_field(struct ctx *c, const cJSON *v, const char *field, const size_t *shape,
                       size_t ndim, struct walk *w)
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

static bool alloc_ids(struct ctx *c, struct request_ids *r, bool tokens)
{
    size_t n = r->n ? r->n : 1;
    r->is_tokens = tokens;
    r->ids = calloc(n, sizeof *r->ids);
    if (tokens) {
        r->tokens = calloc(n, sizeof *r->tokens);
        r->lens = calloc(n, sizeof *r->lens);
    }
    if (r->ids == NULL || (tokens && (r->tokens == NULL || r->lens == NULL)))
        return no_memory(c);
    return true;
}

/* Moves the tokens out of the cJSON tree into one owned arena. */
static bool copy_tokens(struct ctx *c, struct request_ids *r)
{
    size_t total = 0, off = 0;

    if (!r->is_tokens)
        return true;
    for (size_t i = 0; i < r->n; i++)
        total += r->lens[i];
    r->arena = malloc(total ? total : 1);
    if (r->arena == NULL)
        return no_memory(c);
    for (size_t i = 0; i < r->n; i++) {
        memcpy(r->arena + off, r->tokens[i], r->lens[i]);
        r->tokens[i] = r->arena + off;
        off += r->lens[i];
    }
    return true;
}

static bool fill_ids(struct ctx *c, const cJSON *v, const char *field, struct request_ids *r,
                     bool tokens)
{
    struct walk w = {.kind = tokens ? LEAF_TOKEN : LEAF_ID};

    if (!alloc_ids(c, r, tokens))
        return false;
    w.ids = r->ids;
    w.tokens = r->tokens;
    w.lens = r->lens;
    if (!walk_field(c, v, field, r->shape, r->ndim, &w))
        return false;
    return copy_tokens(c, r);
}

/* An ids/tokens input of any shape (a scalar too), as a lookup takes. */
static bool parse_any_shape(struct ctx *c, const cJSON *v, const char *field, bool tokens,
                            struct request_ids *r)
{
    if (!infer_shape(c, v, field, r->shape, &r->ndim))
        return false;
    if (!shape_count(r->shape, r->ndim, &r->n))
        return fail(c, STATUS_PAYLOAD_TOO_LARGE, "%s: too many elements", field);
    if (!check_batch(c, field, r->n, tokens ? "tokens" : "ids"))
        return false;
    return fill_ids(c, v, field, r, tokens);
}

/* A non-empty flat array of ids or tokens (neighbors, rows). */
static bool parse_list(struct ctx *c, const cJSON *v, const char *field, bool tokens,
                       struct request_ids *r)
{
    struct path p = {.field = field};

    if (!cJSON_IsArray(v))
        return wrong_type(c, &p, tokens ? "an array of tokens" : "an array of ids", v);
    r->ndim = 1;
    r->shape[0] = r->n = array_size(v);
    if (r->n == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: must not be empty", field);
    if (!check_batch(c, field, r->n, tokens ? "tokens" : "ids"))
        return false;
    return fill_ids(c, v, field, r, tokens);
}

/* n x dim floats (grads rows, vectors) of the given shape into *out. */
static bool parse_floats(struct ctx *c, const cJSON *v, const char *field, const size_t *shape,
                         size_t ndim, float **out)
{
    struct walk w = {.kind = LEAF_FLOAT, .inner_is_dim = true};
    size_t n;

    if (!shape_count(shape, ndim, &n) || n > SIZE_MAX / sizeof(float))
        return fail(c, STATUS_PAYLOAD_TOO_LARGE, "%s: too many values", field);
    *out = malloc(n ? n * sizeof(float) : 1);
    if (*out == NULL)
        return no_memory(c);
    w.floats = *out;
    return walk_field(c, v, field, shape, ndim, &w);
}

/* ---- the body object and its keys ---- */

struct key_slot {
    const char *name;
    const cJSON *value;
};

static bool parse_root(struct ctx *c, const char *body, size_t len, cJSON **root)
{
    enum status_code code = json_parse(body, len, root, c->err, c->errlen);
    if (code != STATUS_OK) {
        c->code = code;
        return false;
    }
    if (!cJSON_IsObject(*root))
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

/* Fills slots[i].value with the member named slots[i].name (or NULL);
 * refuses any other key. Keys are unique: json.c checked. */
static bool match_keys(struct ctx *c, const cJSON *root, struct key_slot *slots, size_t n)
{
    for (const cJSON *m = root->child; m != NULL; m = m->next) {
        size_t i = 0;
        while (i < n && strcmp(m->string, slots[i].name) != 0)
            i++;
        if (i == n) {
            char names[160];
            list_names(slots, n, names, sizeof names);
            return fail(c, STATUS_INVALID_ARGUMENT, "body: unknown key \"%.*s\" (expected %s)",
                        quote_len(m->string, strlen(m->string)), m->string, names);
        }
        slots[i].value = m;
    }
    return true;
}

/* Exactly one of two alternative keys ("ids" / "tokens"); *which gets 0/1. */
static bool one_of(struct ctx *c, const cJSON *a, const cJSON *b, const char *na,
                   const char *nb, int *which)
{
    if (a != NULL && b != NULL)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: give either \"%s\" or \"%s\", not both",
                    na, nb);
    if (a == NULL && b == NULL)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"%s\" (or \"%s\")", na, nb);
    *which = a != NULL ? 0 : 1;
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

/* Reads field's value, one of words[0..n), into *out; absent keeps *out.
 * `expected` lists the words for the message. */
static bool parse_word(struct ctx *c, const cJSON *v, const char *field, const struct word *words,
                       size_t n, const char *expected, int *out)
{
    struct path p = {.field = field};

    if (v == NULL)
        return true;
    if (!cJSON_IsString(v))
        return wrong_type(c, &p, "a string", v);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v->valuestring, words[i].name) == 0) {
            *out = words[i].value;
            return true;
        }
    }
    return fail(c, STATUS_INVALID_ARGUMENT, "%s: unknown %s \"%.*s\" (expected %s)", field, field,
                quote_len(v->valuestring, strlen(v->valuestring)), v->valuestring, expected);
}

static bool parse_metric(struct ctx *c, const cJSON *v, enum metric *m)
{
    int value = METRIC_COSINE;
    bool ok = parse_word(c, v, "metric", metrics, sizeof metrics / sizeof metrics[0],
                         "cosine, dot or l2", &value);
    *m = (enum metric)value;
    return ok;
}

/* "min_seq": a non-negative integer, the seq a read waits for (cluster
 * mode's read-your-writes); absent is 0. */
static bool parse_min_seq(struct ctx *c, const cJSON *v, uint64_t *seq)
{
    struct path p = {.field = "min_seq"};
    *seq = 0;
    if (v == NULL)
        return true;
    if (!cJSON_IsNumber(v))
        return wrong_type(c, &p, "an integer", v);
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < 0 || d > 9007199254740992.0)
        return fail(c, STATUS_INVALID_ARGUMENT, "min_seq: must be an integer >= 0");
    *seq = (uint64_t)d;
    return true;
}

/* ---- lookup ---- */

static bool parse_mode(struct ctx *c, const cJSON *v, enum bag_mode *mode)
{
    int value = BAG_MEAN; /* nn.EmbeddingBag's default */
    bool ok = parse_word(c, v, "mode", bag_modes, sizeof bag_modes / sizeof bag_modes[0],
                         "sum, mean or max", &value);
    *mode = (enum bag_mode)value;
    return ok;
}

/* Checks bags is an array of arrays, counts its ids and sets offsets. */
static bool measure_bags(struct ctx *c, const cJSON *bags, struct lookup_request *r)
{
    struct path p = {.field = "bags", .depth = 1};
    size_t b = 0, total = 0;

    if (!cJSON_IsArray(bags))
        return wrong_type(c, &(struct path){.field = "bags"}, "an array of bags", bags);
    r->nbags = array_size(bags);
    if (r->nbags == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "bags: must hold at least one bag");
    r->offsets = malloc((r->nbags + 1) * sizeof *r->offsets);
    if (r->offsets == NULL)
        return no_memory(c);
    for (const cJSON *bag = bags->child; bag != NULL; bag = bag->next, b++) {
        p.idx[0] = b;
        if (!cJSON_IsArray(bag))
            return wrong_type(c, &p, "an array of ids", bag);
        r->offsets[b] = total;
        total += array_size(bag);
    }
    r->offsets[b] = total;
    r->in.ndim = 1;
    r->in.shape[0] = r->in.n = total;
    return check_batch(c, "bags", total, "ids");
}

static const cJSON *first_bag_element(const cJSON *bags)
{
    for (const cJSON *bag = bags->child; bag != NULL; bag = bag->next)
        if (bag->child != NULL)
            return bag->child;
    return NULL;
}

static bool fill_bags(struct ctx *c, const cJSON *bags, struct lookup_request *r)
{
    const cJSON *first = first_bag_element(bags);
    bool tokens = first != NULL && cJSON_IsString(first);
    struct walk w = {.c = c, .path = {.field = "bags", .depth = 2},
                     .kind = tokens ? LEAF_TOKEN : LEAF_ID};
    size_t b = 0;

    if (!alloc_ids(c, &r->in, tokens))
        return false;
    w.ids = r->in.ids;
    w.tokens = r->in.tokens;
    w.lens = r->in.lens;
    for (const cJSON *bag = bags->child; bag != NULL; bag = bag->next, b++) {
        size_t j = 0;
        for (const cJSON *e = bag->child; e != NULL; e = e->next, j++) {
            w.path.idx[0] = b;
            w.path.idx[1] = j;
            if (!take_leaf(&w, e))
                return false;
        }
    }
    return copy_tokens(c, &r->in);
}

/* per_sample_weights: one array per bag, of the same lengths. */
static bool parse_weights(struct ctx *c, const cJSON *v, struct lookup_request *r)
{
    struct walk w = {.c = c, .path = {.field = "per_sample_weights"}, .kind = LEAF_FLOAT};
    size_t b = 0;

    if (r->mode != BAG_SUM)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "per_sample_weights: only supported with mode \"sum\"");
    if (!cJSON_IsArray(v))
        return wrong_type(c, &w.path, "an array of arrays", v);
    if (array_size(v) != r->nbags)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "per_sample_weights: has %zu arrays, expected %zu (one per bag)",
                    array_size(v), r->nbags);
    r->per_sample_weights = malloc(r->in.n ? r->in.n * sizeof(float) : 1);
    if (r->per_sample_weights == NULL)
        return no_memory(c);
    w.floats = r->per_sample_weights;
    for (const cJSON *row = v->child; row != NULL; row = row->next, b++) {
        size_t want = r->offsets[b + 1] - r->offsets[b], j = 0;
        w.path.depth = 1;
        w.path.idx[0] = b;
        if (!cJSON_IsArray(row))
            return wrong_type(c, &w.path, "an array of numbers", row);
        if (array_size(row) != want)
            return fail(c, STATUS_INVALID_ARGUMENT,
                        "per_sample_weights[%zu]: has %zu weights, expected %zu (bags[%zu] "
                        "has %zu ids)", b, array_size(row), want, b, want);
        w.path.depth = 2;
        for (const cJSON *e = row->child; e != NULL; e = e->next, j++) {
            w.path.idx[1] = j;
            if (!take_leaf(&w, e))
                return false;
        }
    }
    return true;
}

static bool parse_bags(struct ctx *c, const cJSON *bags, const cJSON *mode,
                       const cJSON *weights, struct lookup_request *r)
{
    r->is_bags = true;
    if (!parse_mode(c, mode, &r->mode) || !measure_bags(c, bags, r) || !fill_bags(c, bags, r))
        return false;
    return weights == NULL || parse_weights(c, weights, r);
}

static bool parse_lookup(struct ctx *c, const cJSON *root, struct lookup_request *r)
{
    struct key_slot k[] = {{"ids", NULL}, {"tokens", NULL}, {"bags", NULL},
                           {"mode", NULL}, {"per_sample_weights", NULL}, {"min_seq", NULL}};
    int which = 0;

    if (!match_keys(c, root, k, 6) || !parse_min_seq(c, k[5].value, &r->min_seq))
        return false;
    if (k[2].value != NULL) {
        if (k[0].value != NULL || k[1].value != NULL)
            return fail(c, STATUS_INVALID_ARGUMENT,
                        "body: give \"bags\" or \"%s\", not both", k[0].value ? "ids" : "tokens");
        return parse_bags(c, k[2].value, k[3].value, k[4].value, r);
    }
    if (k[3].value != NULL || k[4].value != NULL)
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: only valid with \"bags\"",
                    k[3].value ? "mode" : "per_sample_weights");
    if (!one_of(c, k[0].value, k[1].value, "ids", "tokens", &which))
        return false;
    return parse_any_shape(c, k[which].value, k[which].name, which == 1, &r->in);
}

/* ---- similarity ---- */

static bool parse_pairs(struct ctx *c, const cJSON *v, struct similarity_request *r)
{
    struct path p = {.field = "pairs"};
    struct request_ids *ids = &r->pairs;
    bool tokens;

    if (!cJSON_IsArray(v))
        return wrong_type(c, &p, "an array of pairs", v);
    r->npairs = array_size(v);
    if (r->npairs == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "pairs: must not be empty");
    if (r->npairs > c->lim->max_batch / 2)
        return fail(c, STATUS_PAYLOAD_TOO_LARGE,
                    "pairs: %zu pairs (%zu ids) exceed max_batch %zu", r->npairs,
                    r->npairs * 2, c->lim->max_batch);
    ids->ndim = 2;
    ids->shape[0] = r->npairs;
    ids->shape[1] = 2;
    ids->n = r->npairs * 2;
    tokens = cJSON_IsArray(v->child) && cJSON_IsString(v->child->child);
    return fill_ids(c, v, "pairs", ids, tokens);
}

static bool parse_similarity(struct ctx *c, const cJSON *root, struct similarity_request *r)
{
    struct key_slot k[] = {{"pairs", NULL}, {"metric", NULL}, {"min_seq", NULL}};

    if (!match_keys(c, root, k, 3) || !parse_min_seq(c, k[2].value, &r->min_seq))
        return false;
    if (k[0].value == NULL)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"pairs\"");
    return parse_pairs(c, k[0].value, r) && parse_metric(c, k[1].value, &r->metric);
}

/* ---- neighbors ---- */

static bool parse_k(struct ctx *c, const cJSON *v, size_t *k)
{
    struct path p = {.field = "k"};
    char num[RESPONSE_DOUBLE_MAX];
    size_t max_k = c->lim->max_k;
    double d;

    *k = max_k < DEFAULT_K ? max_k : DEFAULT_K;
    if (v == NULL)
        return true;
    if (!cJSON_IsNumber(v))
        return wrong_type(c, &p, "an integer", v);
    d = v->valuedouble;
    response_format_double(d, num);
    if (!isfinite(d) || d != floor(d))
        return fail(c, STATUS_INVALID_ARGUMENT, "k: %s is not an integer", num);
    if (d < 1 || d > (double)max_k)
        return fail(c, STATUS_INVALID_ARGUMENT, "k: %s is outside [1, %zu] (max_k)", num, max_k);
    *k = (size_t)d;
    return true;
}

static bool parse_vectors(struct ctx *c, const cJSON *v, size_t want_rows, float **out,
                          size_t *rows)
{
    struct path p = {.field = "vectors"};
    size_t shape[2];

    if (!cJSON_IsArray(v))
        return wrong_type(c, &p, "an array of vectors", v);
    shape[0] = array_size(v);
    shape[1] = (size_t)c->lim->dim;
    if (shape[0] == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "vectors: must not be empty");
    if (want_rows != 0 && shape[0] != want_rows)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "vectors: has %zu vectors, expected %zu (one per id)", shape[0], want_rows);
    if (!check_batch(c, "vectors", shape[0], "vectors"))
        return false;
    *rows = shape[0];
    return parse_floats(c, v, "vectors", shape, 2, out);
}

static bool parse_neighbors(struct ctx *c, const cJSON *root, struct neighbors_request *r)
{
    struct key_slot k[] = {{"ids", NULL}, {"tokens", NULL}, {"vectors", NULL},
                           {"k", NULL}, {"metric", NULL}, {"min_seq", NULL}};
    int which = 0;

    if (!match_keys(c, root, k, 6) || !parse_min_seq(c, k[5].value, &r->min_seq))
        return false;
    if (k[2].value != NULL) {
        if (k[0].value != NULL || k[1].value != NULL)
            return fail(c, STATUS_INVALID_ARGUMENT,
                        "body: give one of \"ids\", \"tokens\" or \"vectors\", not several");
        r->by_vectors = true;
        if (!parse_vectors(c, k[2].value, 0, &r->vectors, &r->nq))
            return false;
    } else {
        if (!one_of(c, k[0].value, k[1].value, "ids", "tokens", &which) ||
            !parse_list(c, k[which].value, k[which].name, which == 1, &r->queries))
            return false;
        r->nq = r->queries.n;
    }
    return parse_k(c, k[3].value, &r->k) && parse_metric(c, k[4].value, &r->metric);
}

/* ---- gradients ---- */

static bool parse_lr(struct ctx *c, const cJSON *v, struct gradients_request *r)
{
    struct path p = {.field = "lr"};
    char num[RESPONSE_DOUBLE_MAX];

    if (v == NULL)
        return true;
    if (!cJSON_IsNumber(v))
        return wrong_type(c, &p, "a number", v);
    if (!isfinite(v->valuedouble) || !(v->valuedouble > 0)) {
        response_format_double(v->valuedouble, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "lr: must be finite and > 0, got %s", num);
    }
    r->has_lr = true;
    r->lr = v->valuedouble;
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
static bool parse_grads(struct ctx *c, const cJSON *v, struct gradients_request *r)
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

static bool parse_gradients(struct ctx *c, const cJSON *root, struct gradients_request *r)
{
    struct key_slot k[] = {{"ids", NULL}, {"tokens", NULL}, {"grads", NULL}, {"lr", NULL}};
    int which = 0;

    if (!match_keys(c, root, k, 4) || !one_of(c, k[0].value, k[1].value, "ids", "tokens", &which))
        return false;
    if (k[2].value == NULL)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"grads\"");
    if (!parse_any_shape(c, k[which].value, k[which].name, which == 1, &r->ids))
        return false;
    if (r->ids.n == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: must not be empty", k[which].name);
    return parse_grads(c, k[2].value, r) && parse_lr(c, k[3].value, r);
}

/* ---- rows ---- */

static bool parse_rows(struct ctx *c, const cJSON *root, struct rows_request *r)
{
    struct key_slot k[] = {{"ids", NULL}, {"tokens", NULL}, {"vectors", NULL}};
    size_t rows;
    int which = 0;

    if (!match_keys(c, root, k, 3) || !one_of(c, k[0].value, k[1].value, "ids", "tokens", &which))
        return false;
    if (k[2].value == NULL)
        return fail(c, STATUS_INVALID_ARGUMENT, "body: missing \"vectors\"");
    if (!parse_list(c, k[which].value, k[which].name, which == 1, &r->ids))
        return false;
    return parse_vectors(c, k[2].value, r->ids.n, &r->vectors, &rows);
}

/* ---- public entry points: parse, clean up on failure ---- */

#define DEFINE_PARSER(kind, type)                                                        \
    enum status_code request_parse_##kind(const char *body, size_t len,                 \
                                          const struct request_limits *lim,             \
                                          struct type *out, char *err, size_t errlen)   \
    {                                                                                    \
        struct ctx c = {lim, STATUS_OK, err, errlen};                                    \
        cJSON *root = NULL;                                                              \
        memset(out, 0, sizeof *out);                                                     \
        if (err != NULL && errlen > 0)                                                   \
            err[0] = '\0';                                                               \
        if (parse_root(&c, body, len, &root))                                            \
            parse_##kind(&c, root, out);                                                 \
        cJSON_Delete(root);                                                              \
        if (c.code != STATUS_OK)                                                         \
            request_##kind##_deinit(out);                                                \
        return c.code;                                                                   \
    }

DEFINE_PARSER(lookup, lookup_request)
DEFINE_PARSER(similarity, similarity_request)
DEFINE_PARSER(neighbors, neighbors_request)
DEFINE_PARSER(gradients, gradients_request)
DEFINE_PARSER(rows, rows_request)

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
    struct ctx c = {NULL, STATUS_OK, err, errlen};

    if (rc == CORE_EUNSUPPORTED)
        fail(&c, STATUS_INVALID_ARGUMENT, "%s: table \"%s\" has no vocabulary; send ids",
             where, table_name(t));
    else if (rc == CORE_ENOTFOUND)
        fail(&c, STATUS_UNKNOWN_TOKEN, "%s: unknown token \"%.*s\"", where,
             quote_len(r->tokens[bad], r->lens[bad]), r->tokens[bad]);
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
    free(r->grads);
    memset(r, 0, sizeof *r);
}

void request_rows_deinit(struct rows_request *r)
{
    request_ids_deinit(&r->ids);
    free(r->vectors);
    memset(r, 0, sizeof *r);
}
