/* binary.c - binary request bodies into request.h's structs; see binary.h.
 *
 * Each parser names its steps: read the headers (shape, lr), check the
 * shape against the table and the limits, check the body's length against
 * the shape, then one pass over the ids (range) and one over the floats
 * (finite). Messages follow request.c's wording so a client sees the same
 * sentence for the same mistake in either form. */
#include "binary.h"

#include <errno.h>
#include <math.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "response.h"

/* How many bytes of a header a message quotes. */
#define QUOTE_MAX 48
/* Largest single number of a shape: keeps products of two from overflowing
 * before they are checked. */
#define SHAPE_DIM_MAX ((size_t)1 << 40)

#define ID_BYTES sizeof(int64_t)
#define FLOAT_BYTES sizeof(float)

struct ctx {
    const struct request_limits *lim;
    enum status_code code;
    char *err;
    size_t errlen;
};

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

/* A header value for a message: printable ASCII only (anything else becomes
 * '?'), cut at QUOTE_MAX bytes with "..." after. */
static const char *quoted(const char *s, char out[QUOTE_MAX + 4])
{
    size_t i = 0;
    for (; s[i] != '\0' && i < QUOTE_MAX; i++)
        out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (s[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

/* ---- little-endian loads ---- */

static int64_t load_i64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return (int64_t)v;
}

static uint32_t load_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static bool bits_finite(uint32_t bits)
{
    return (bits & 0x7f800000u) != 0x7f800000u;
}

/* ---- headers ---- */

static const char *skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

enum status_code binary_parse_shape(const char *text, size_t shape[REQUEST_MAX_DIMS],
                                    size_t *ndim, char *err, size_t errlen)
{
    struct ctx c = {NULL, STATUS_OK, err, errlen};
    char q[QUOTE_MAX + 4];
    const char *s = skip_blanks(text);

    *ndim = 0;
    if (*s == '\0')
        return STATUS_OK; /* a 0-d input: one id */
    for (;;) {
        size_t v = 0;
        if (*s < '0' || *s > '9') {
            fail(&c, STATUS_INVALID_ARGUMENT,
                 "%s \"%s\": expected comma-separated non-negative integers (\"2,5\")",
                 BINARY_SHAPE_HEADER, quoted(text, q));
            return c.code;
        }
        while (*s >= '0' && *s <= '9') {
            v = v * 10 + (size_t)(*s++ - '0');
            if (v > SHAPE_DIM_MAX) {
                fail(&c, STATUS_INVALID_ARGUMENT, "%s \"%s\": a dimension is larger than %zu",
                     BINARY_SHAPE_HEADER, quoted(text, q), SHAPE_DIM_MAX);
                return c.code;
            }
        }
        if (*ndim == REQUEST_MAX_DIMS) {
            fail(&c, STATUS_INVALID_ARGUMENT, "%s \"%s\": more than %d dimensions",
                 BINARY_SHAPE_HEADER, quoted(text, q), REQUEST_MAX_DIMS);
            return c.code;
        }
        shape[(*ndim)++] = v;
        s = skip_blanks(s);
        if (*s == '\0')
            return STATUS_OK;
        if (*s != ',') {
            fail(&c, STATUS_INVALID_ARGUMENT,
                 "%s \"%s\": expected comma-separated non-negative integers (\"2,5\")",
                 BINARY_SHAPE_HEADER, quoted(text, q));
            return c.code;
        }
        s = skip_blanks(s + 1);
    }
}

static bool read_shape(struct ctx *c, const char *text, size_t *shape, size_t *ndim)
{
    enum status_code code = binary_parse_shape(text, shape, ndim, c->err, c->errlen);
    if (code == STATUS_OK)
        return true;
    c->code = code;
    return false;
}

/* The n,D shape of a gradients or rows body; D must be the table's. */
static bool read_rows_shape(struct ctx *c, const struct binary_headers *h, const char *what,
                            size_t *n)
{
    size_t shape[REQUEST_MAX_DIMS], ndim;
    char q[QUOTE_MAX + 4];

    if (h->shape == NULL)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "%s: missing; a binary %s body needs n,D (n ids, D = embedding_dim %lld)",
                    BINARY_SHAPE_HEADER, what, (long long)c->lim->dim);
    if (!read_shape(c, h->shape, shape, &ndim))
        return false;
    if (ndim != 2)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "%s \"%s\": expected n,D (2 numbers) for %s, got %zu", BINARY_SHAPE_HEADER,
                    quoted(h->shape, q), what, ndim);
    if (shape[1] != (size_t)c->lim->dim)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "%s \"%s\": D is %zu, expected the table's embedding_dim %lld",
                    BINARY_SHAPE_HEADER, quoted(h->shape, q), shape[1], (long long)c->lim->dim);
    *n = shape[0];
    return true;
}

static bool read_lr(struct ctx *c, const char *text, struct gradients_request *r)
{
    char q[QUOTE_MAX + 4], num[RESPONSE_DOUBLE_MAX];
    const char *s = skip_blanks(text);
    char *end = NULL;
    double lr;

    errno = 0;
    lr = strtod(s, &end);
    if (end == s || *skip_blanks(end) != '\0')
        return fail(c, STATUS_INVALID_ARGUMENT, "%s \"%s\": not a number", BINARY_LR_HEADER,
                    quoted(text, q));
    if (!isfinite(lr) || !(lr > 0)) {
        response_format_double(lr, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "%s: lr must be finite and > 0, got %s",
                    BINARY_LR_HEADER, num);
    }
    r->has_lr = true;
    r->lr = lr;
    return true;
}

static bool no_lr(struct ctx *c, const struct binary_headers *h, const char *what)
{
    if (h->lr == NULL)
        return true;
    return fail(c, STATUS_INVALID_ARGUMENT, "%s: only gradient steps take a learning rate, not %s",
                BINARY_LR_HEADER, what);
}

/* ---- counts and lengths ---- */

static bool check_batch(struct ctx *c, size_t n)
{
    if (n <= c->lim->max_batch)
        return true;
    return fail(c, STATUS_PAYLOAD_TOO_LARGE, "ids: %zu ids exceed max_batch %zu", n,
                c->lim->max_batch);
}

static void shape_text(const size_t *shape, size_t ndim, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t d = 0; d < ndim && used < outlen; d++)
        used += (size_t)snprintf(out + used, outlen - used, "%s%zu", d ? "," : "", shape[d]);
}

/* ---- the body: ids, then floats ---- */

/* n int64 ids from p into r->ids, each in [0, num_embeddings). */
static bool read_ids(struct ctx *c, const unsigned char *p, struct request_ids *r)
{
    uint64_t limit = (uint64_t)c->lim->num_embeddings;
    char where[160];

    r->ids = malloc(r->n ? r->n * sizeof *r->ids : 1);
    if (r->ids == NULL)
        return no_memory(c);
    for (size_t i = 0; i < r->n; i++) {
        int64_t id = load_i64(p + i * ID_BYTES);
        if ((uint64_t)id >= limit) /* negative ids wrap past the limit */
            return fail(c, STATUS_OUT_OF_RANGE, "%s: id %lld is out of range [0, %lld)",
                        request_index_name(r, "ids", i, where, sizeof where), (long long)id,
                        (long long)limit);
        r->ids[i] = id;
    }
    return true;
}

/* 1 when some float32 of p[0..count) is NaN or infinite (exponent all
 * ones). Sixteen floats a step in vector registers (GCC/clang vector
 * types: SSE2 or NEON without -march flags); -O2 alone does not vectorize
 * the plain loop, and this check runs over every gradient value. */
typedef uint32_t u32x4 __attribute__((vector_size(16)));

static unsigned any_non_finite(const unsigned char *p, size_t count)
{
    const u32x4 exp = {0x7f800000u, 0x7f800000u, 0x7f800000u, 0x7f800000u};
    u32x4 acc = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        u32x4 v[4];
        memcpy(v, p + i * FLOAT_BYTES, sizeof v);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++)
                v[k][j] = __builtin_bswap32(v[k][j]);
#endif
        for (int k = 0; k < 4; k++)
            acc |= (u32x4)((v[k] & exp) == exp);
    }
    unsigned any = (acc[0] | acc[1] | acc[2] | acc[3]) != 0;
    for (; i < count; i++)
        any |= (load_u32(p + i * FLOAT_BYTES) & 0x7f800000u) == 0x7f800000u;
    return any;
}

/* Index of the first non-finite float32 of p[0..count), or count. */
static size_t first_non_finite(const unsigned char *p, size_t count)
{
    if (!any_non_finite(p, count))
        return count;
    for (size_t i = 0; i < count; i++)
        if (!bits_finite(load_u32(p + i * FLOAT_BYTES)))
            return i;
    return count;
}

/* n x dim float32 values from p, finite, into *out: borrowed in place when
 * the bytes are already native floats, else copied. */
static bool read_floats(struct ctx *c, const unsigned char *p, size_t n, const char *field,
                        float **out, bool *borrowed)
{
    size_t dim = (size_t)c->lim->dim, count = n * dim;
    size_t bad = first_non_finite(p, count);

    if (bad < count) {
        float f;
        char num[RESPONSE_DOUBLE_MAX];
        memcpy(&f, &(uint32_t){load_u32(p + bad * FLOAT_BYTES)}, sizeof f);
        response_format_double((double)f, num);
        return fail(c, STATUS_INVALID_ARGUMENT, "%s[%zu][%zu]: %s is not a finite float32",
                    field, bad / dim, bad % dim, num);
    }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if ((uintptr_t)p % alignof(float) == 0) {
        /* never written through: the struct's type is shared with the
         * JSON parser's owned arrays */
        *out = (float *)(uintptr_t)p;
        *borrowed = true;
        return true;
    }
#endif
    *out = malloc(count ? count * sizeof **out : 1);
    if (*out == NULL)
        return no_memory(c);
    for (size_t i = 0; i < count; i++) {
        uint32_t bits = load_u32(p + i * FLOAT_BYTES);
        memcpy(*out + i, &bits, sizeof bits);
    }
    return true;
}

/* Bytes of an n,D body: n ids and n x D floats; false when that overflows. */
static bool rows_body_bytes(size_t n, size_t dim, size_t *bytes)
{
    size_t per_row = ID_BYTES + dim * FLOAT_BYTES; /* dim <= SHAPE_DIM_MAX */
    if (n > SIZE_MAX / per_row)
        return false;
    *bytes = n * per_row;
    return true;
}

/* Shared by gradients and rows: the n,D shape, its length, the ids. */
static bool read_rows_body(struct ctx *c, const char *body, size_t len,
                           const struct binary_headers *h, const char *what,
                           struct request_ids *ids)
{
    size_t n = 0, want = 0, dim = (size_t)c->lim->dim;

    if (!read_rows_shape(c, h, what, &n))
        return false;
    if (n == 0)
        return fail(c, STATUS_INVALID_ARGUMENT, "ids: must not be empty");
    if (!check_batch(c, n))
        return false;
    if (!rows_body_bytes(n, dim, &want))
        return fail(c, STATUS_PAYLOAD_TOO_LARGE, "%s: too many values", BINARY_SHAPE_HEADER);
    if (len != want)
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "body: has %zu bytes, expected %zu for %s \"%zu,%zu\" (%zu int64 ids, "
                    "then %zu x %zu float32)", len, want, BINARY_SHAPE_HEADER, n, dim, n, n, dim);
    ids->ndim = 1;
    ids->shape[0] = ids->n = n;
    return read_ids(c, (const unsigned char *)body, ids);
}

/* ---- the three bodies ---- */

static bool parse_lookup(struct ctx *c, const char *body, size_t len,
                         const struct binary_headers *h, struct lookup_request *r)
{
    struct request_ids *in = &r->in;
    char text[RESPONSE_SHAPE_MAX];

    if (!no_lr(c, h, "lookups"))
        return false;
    if (h->shape == NULL) {
        if (len % ID_BYTES != 0)
            return fail(c, STATUS_INVALID_ARGUMENT,
                        "body: has %zu bytes, not a whole number of int64 ids (8 bytes each; "
                        "expected %zu or %zu)", len, len / ID_BYTES * ID_BYTES,
                        (len / ID_BYTES + 1) * ID_BYTES);
        in->ndim = 1;
        in->shape[0] = len / ID_BYTES;
    } else if (!read_shape(c, h->shape, in->shape, &in->ndim)) {
        return false;
    }
    in->n = 1;
    for (size_t d = 0; d < in->ndim; d++) {
        if (in->shape[d] != 0 && in->n > SIZE_MAX / ID_BYTES / in->shape[d])
            return fail(c, STATUS_PAYLOAD_TOO_LARGE, "ids: too many elements");
        in->n *= in->shape[d];
    }
    if (!check_batch(c, in->n))
        return false;
    if (len != in->n * ID_BYTES) {
        shape_text(in->shape, in->ndim, text, sizeof text);
        return fail(c, STATUS_INVALID_ARGUMENT,
                    "body: has %zu bytes, expected %zu for %s \"%s\" (%zu int64 ids)", len,
                    in->n * ID_BYTES, BINARY_SHAPE_HEADER, text, in->n);
    }
    return read_ids(c, (const unsigned char *)body, in);
}

static bool parse_gradients(struct ctx *c, const char *body, size_t len,
                            const struct binary_headers *h, struct gradients_request *r)
{
    if (!read_rows_body(c, body, len, h, "gradients", &r->ids))
        return false;
    if (h->lr != NULL && !read_lr(c, h->lr, r))
        return false;
    return read_floats(c, (const unsigned char *)body + r->ids.n * ID_BYTES, r->ids.n, "grads",
                       &r->grads, &r->grads_borrowed);
}

static bool parse_rows(struct ctx *c, const char *body, size_t len,
                       const struct binary_headers *h, struct rows_request *r)
{
    if (!no_lr(c, h, "row assignments") || !read_rows_body(c, body, len, h, "rows", &r->ids))
        return false;
    return read_floats(c, (const unsigned char *)body + r->ids.n * ID_BYTES, r->ids.n,
                       "vectors", &r->vectors, &r->vectors_borrowed);
}

/* ---- public entry points: parse, clean up on failure ---- */

#define DEFINE_PARSER(kind, type)                                                         \
    enum status_code binary_parse_##kind(const char *body, size_t len,                   \
                                         const struct binary_headers *h,                 \
                                         const struct request_limits *lim,               \
                                         struct type *out, char *err, size_t errlen)     \
    {                                                                                     \
        struct ctx c = {lim, STATUS_OK, err, errlen};                                     \
        memset(out, 0, sizeof *out);                                                      \
        if (err != NULL && errlen > 0)                                                    \
            err[0] = '\0';                                                                \
        parse_##kind(&c, body, len, h, out);                                              \
        if (c.code != STATUS_OK)                                                          \
            request_##kind##_deinit(out);                                                 \
        return c.code;                                                                    \
    }

DEFINE_PARSER(lookup, lookup_request)
DEFINE_PARSER(gradients, gradients_request)
DEFINE_PARSER(rows, rows_request)
