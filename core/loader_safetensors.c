/* loader_safetensors.c - safetensors files: an 8-byte little-endian header
 * length N, N bytes of JSON naming each tensor's dtype, shape and
 * data_offsets (relative to the byte after the header), then the data.
 *
 * The header is read by a small strict JSON reader of our own (core/ uses
 * no JSON library): duplicate keys, unknown tensor fields, bad escapes and
 * trailing bytes other than the space padding are errors. Every tensor's
 * offsets are checked against the file and against dtype * shape before a
 * byte of data is read. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "loader_internal.h"

/* Real headers are a few MB at most (the reference reader caps at 100 MB). */
#define ST_MAX_HEADER (100u << 20)
#define ST_MAX_DIMS 8
#define ST_MAX_DEPTH 64

/* Every dtype the format defines, with its size, and our element type for
 * the ones a table can be made of. */
static const struct {
    const char *name;
    size_t size;
    bool loadable;
    enum loader_dtype t;
} st_dtypes[] = {
    {"F32", 4, true, LOADER_F32},   {"F16", 2, true, LOADER_F16},
    {"BF16", 2, true, LOADER_BF16}, {"F64", 8, true, LOADER_F64},
    {"BOOL", 1, false, 0},          {"U8", 1, false, 0},
    {"I8", 1, false, 0},            {"F8_E5M2", 1, false, 0},
    {"F8_E4M3", 1, false, 0},       {"I16", 2, false, 0},
    {"U16", 2, false, 0},           {"I32", 4, false, 0},
    {"U32", 4, false, 0},           {"I64", 8, false, 0},
    {"U64", 8, false, 0},
};
#define ST_NDTYPES (sizeof(st_dtypes) / sizeof(st_dtypes[0]))

struct st_tensor {
    char *name;
    size_t name_len;
    uint64_t key_off; /* file offset of the entry, for messages */
    int dtype;        /* index into st_dtypes, -1 until read */
    int ndim;         /* -1 until read */
    uint64_t shape[ST_MAX_DIMS];
    bool has_offsets;
    uint64_t begin, end;
};

struct st_json {
    const char *s, *p, *end;
    const char *path;
    struct st_tensor *t;
    size_t nt, capt;
    int depth;
    char *err;
    size_t errlen;
};

/* ---- the JSON reader ---------------------------------------------------- */

static uint64_t at(const struct st_json *j)
{
    return 8 + (uint64_t)(j->p - j->s);
}

static int json_fail(struct st_json *j, const char *why)
{
    return core_fail(j->err, j->errlen, CORE_EFORMAT, "%s: offset %llu: header JSON: %s",
                     j->path, (unsigned long long)at(j), why);
}

static void ws(struct st_json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static bool eat(struct st_json *j, char c)
{
    ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return true;
    }
    return false;
}

static int hex4(struct st_json *j, uint32_t *v)
{
    if (j->end - j->p < 4)
        return json_fail(j, "short \\u escape");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *j->p++;
        uint32_t d = c >= '0' && c <= '9'   ? (uint32_t)(c - '0')
                     : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (uint32_t)(c - 'A' + 10)
                                            : 16u;
        if (d == 16)
            return json_fail(j, "bad \\u escape");
        *v = *v << 4 | d;
    }
    return CORE_OK;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* One \uXXXX escape (a surrogate pair takes two) as UTF-8. */
static int unicode_escape(struct st_json *j, char *o, size_t *n)
{
    uint32_t cp;
    int rc = hex4(j, &cp);
    if (rc != CORE_OK)
        return rc;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return json_fail(j, "lone low surrogate");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        uint32_t lo;
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
            return json_fail(j, "high surrogate without its pair");
        j->p += 2;
        if ((rc = hex4(j, &lo)) != CORE_OK)
            return rc;
        if (lo < 0xdc00 || lo > 0xdfff)
            return json_fail(j, "high surrogate without its pair");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (cp == 0)
        return json_fail(j, "\\u0000 in a string");
    *n = put_utf8(o, cp);
    return CORE_OK;
}

/* A string, decoded into a malloc'd NUL-terminated buffer when out is
 * non-NULL (decoding never grows the text, so its raw length suffices). */
static int read_string(struct st_json *j, char **out, size_t *out_len)
{
    ws(j);
    if (j->p >= j->end || *j->p != '"')
        return json_fail(j, "expected a string");
    const char *q = ++j->p;
    while (q < j->end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    if (q >= j->end)
        return json_fail(j, "unterminated string");
    char *o = malloc((size_t)(q - j->p) + 1);
    if (o == NULL)
        return core_fail(j->err, j->errlen, CORE_ENOMEM, "%s: out of memory", j->path);
    size_t n = 0;
    while (*j->p != '"') {
        unsigned char c = (unsigned char)*j->p++;
        if (c < 0x20) {
            free(o);
            j->p--;
            return json_fail(j, "control character in a string");
        }
        if (c != '\\') {
            o[n++] = (char)c;
            continue;
        }
        static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
        const char *e = memchr(from, *j->p, sizeof(from) - 1);
        if (e != NULL) {
            o[n++] = to[e - from];
            j->p++;
            continue;
        }
        size_t k = 0;
        int rc = *j->p == 'u' ? (j->p++, unicode_escape(j, o + n, &k)) : json_fail(j, "bad escape");
        if (rc != CORE_OK) {
            free(o);
            return rc;
        }
        n += k;
    }
    j->p++;
    o[n] = '\0';
    if (out != NULL) {
        *out = o;
        *out_len = n;
    } else {
        free(o);
    }
    return CORE_OK;
}

/* A non-negative integer without sign, fraction or exponent. */
static int read_uint(struct st_json *j, uint64_t *v)
{
    ws(j);
    const char *s = j->p;
    uint64_t x = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = (unsigned)(*j->p - '0');
        if (x > (UINT64_MAX - d) / 10)
            return json_fail(j, "integer too large");
        x = x * 10 + d;
        j->p++;
    }
    if (j->p == s || (j->p - s > 1 && *s == '0'))
        return json_fail(j, "expected a non-negative integer");
    if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
        return json_fail(j, "expected an integer, not a fraction");
    *v = x;
    return CORE_OK;
}

static int skip_value(struct st_json *j);

static int skip_container(struct st_json *j, char close, bool keyed)
{
    if (++j->depth > ST_MAX_DEPTH)
        return json_fail(j, "nesting too deep");
    if (!eat(j, close)) {
        do {
            int rc = keyed ? read_string(j, NULL, NULL) : CORE_OK;
            if (rc == CORE_OK && keyed && !eat(j, ':'))
                rc = json_fail(j, "expected ':'");
            if (rc == CORE_OK)
                rc = skip_value(j);
            if (rc != CORE_OK)
                return rc;
        } while (eat(j, ','));
        if (!eat(j, close))
            return json_fail(j, keyed ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    j->depth--;
    return CORE_OK;
}

static int skip_number(struct st_json *j)
{
    const char *p = j->p;
    if (p < j->end && *p == '-')
        p++;
    const char *d = p;
    while (p < j->end && *p >= '0' && *p <= '9')
        p++;
    if (p == d || (p - d > 1 && *d == '0'))
        return json_fail(j, "bad number");
    if (p < j->end && *p == '.') {
        d = ++p;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return json_fail(j, "bad number");
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        d = p;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return json_fail(j, "bad number");
    }
    j->p = p;
    return CORE_OK;
}

static bool eat_word(struct st_json *j, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) >= n && memcmp(j->p, w, n) == 0) {
        j->p += n;
        return true;
    }
    return false;
}

static int skip_value(struct st_json *j)
{
    ws(j);
    if (j->p >= j->end)
        return json_fail(j, "expected a value");
    switch (*j->p) {
    case '{':
        j->p++;
        return skip_container(j, '}', true);
    case '[':
        j->p++;
        return skip_container(j, ']', false);
    case '"':
        return read_string(j, NULL, NULL);
    default:
        if (eat_word(j, "true") || eat_word(j, "false") || eat_word(j, "null"))
            return CORE_OK;
        return skip_number(j);
    }
}

/* ---- tensor entries ----------------------------------------------------- */

static int read_dtype(struct st_json *j, struct st_tensor *t)
{
    char *s;
    size_t n;
    int rc = read_string(j, &s, &n);
    if (rc != CORE_OK)
        return rc;
    for (size_t i = 0; i < ST_NDTYPES && t->dtype < 0; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0)
            t->dtype = (int)i;
    }
    if (t->dtype < 0)
        rc = core_fail(j->err, j->errlen, CORE_EFORMAT,
                       "%s: offset %llu: tensor \"%s\": unknown dtype \"%.16s\"", j->path,
                       (unsigned long long)t->key_off, t->name, s);
    free(s);
    return rc;
}

static int read_shape(struct st_json *j, struct st_tensor *t)
{
    if (!eat(j, '['))
        return json_fail(j, "\"shape\" is not an array");
    t->ndim = 0;
    if (eat(j, ']'))
        return CORE_OK;
    do {
        if (t->ndim == ST_MAX_DIMS)
            return json_fail(j, "\"shape\" has too many dimensions");
        int rc = read_uint(j, &t->shape[t->ndim]);
        if (rc != CORE_OK)
            return rc;
        t->ndim++;
    } while (eat(j, ','));
    return eat(j, ']') ? CORE_OK : json_fail(j, "expected ',' or ']' in \"shape\"");
}

static int read_offsets(struct st_json *j, struct st_tensor *t)
{
    int rc;
    if (!eat(j, '['))
        return json_fail(j, "\"data_offsets\" is not an array");
    if ((rc = read_uint(j, &t->begin)) != CORE_OK)
        return rc;
    if (!eat(j, ','))
        return json_fail(j, "\"data_offsets\" needs [begin, end]");
    if ((rc = read_uint(j, &t->end)) != CORE_OK)
        return rc;
    if (!eat(j, ']'))
        return json_fail(j, "\"data_offsets\" needs exactly [begin, end]");
    t->has_offsets = true;
    return CORE_OK;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, nothing else. */
static int read_tensor(struct st_json *j, struct st_tensor *t)
{
    if (!eat(j, '{'))
        return json_fail(j, "a tensor entry is not an object");
    if (eat(j, '}'))
        return json_fail(j, "empty tensor entry");
    do {
        char *k;
        size_t kn;
        int rc = read_string(j, &k, &kn);
        if (rc != CORE_OK)
            return rc;
        bool is_dtype = strcmp(k, "dtype") == 0, is_shape = strcmp(k, "shape") == 0,
             is_off = strcmp(k, "data_offsets") == 0;
        free(k);
        if (!eat(j, ':'))
            return json_fail(j, "expected ':'");
        if (is_dtype && t->dtype < 0)
            rc = read_dtype(j, t);
        else if (is_shape && t->ndim < 0)
            rc = read_shape(j, t);
        else if (is_off && !t->has_offsets)
            rc = read_offsets(j, t);
        else
            rc = json_fail(j, "unknown or repeated key in a tensor entry");
        if (rc != CORE_OK)
            return rc;
    } while (eat(j, ','));
    if (!eat(j, '}'))
        return json_fail(j, "expected ',' or '}'");
    if (t->dtype < 0 || t->ndim < 0 || !t->has_offsets)
        return core_fail(j->err, j->errlen, CORE_EFORMAT,
                         "%s: offset %llu: tensor \"%s\" needs dtype, shape and data_offsets",
                         j->path, (unsigned long long)t->key_off, t->name);
    return CORE_OK;
}

static int add_entry(struct st_json *j, char *name, size_t n, uint64_t key_off)
{
    for (size_t i = 0; i < j->nt; i++) {
        if (j->t[i].name_len == n && memcmp(j->t[i].name, name, n) == 0) {
            free(name);
            return core_fail(j->err, j->errlen, CORE_EFORMAT,
                             "%s: offset %llu: header JSON: duplicate key \"%s\"", j->path,
                             (unsigned long long)key_off, j->t[i].name);
        }
    }
    if (j->nt == j->capt) {
        size_t cap = j->capt ? j->capt * 2 : 8;
        struct st_tensor *nt = realloc(j->t, cap * sizeof(*nt));
        if (nt == NULL) {
            free(name);
            return core_fail(j->err, j->errlen, CORE_ENOMEM, "%s: out of memory", j->path);
        }
        j->t = nt;
        j->capt = cap;
    }
    j->t[j->nt++] = (struct st_tensor){.name = name, .name_len = n, .key_off = key_off,
                                       .dtype = -1, .ndim = -1};
    return CORE_OK;
}

/* The top-level object: "__metadata__" (skipped) and tensor entries. */
static int read_header_json(struct st_json *j)
{
    if (!eat(j, '{'))
        return json_fail(j, "the header is not a JSON object");
    bool seen_meta = false;
    if (!eat(j, '}')) {
        do {
            ws(j);
            uint64_t key_off = at(j);
            char *k;
            size_t kn;
            int rc = read_string(j, &k, &kn);
            if (rc != CORE_OK)
                return rc;
            if (!eat(j, ':')) {
                free(k);
                return json_fail(j, "expected ':'");
            }
            if (strcmp(k, "__metadata__") == 0) {
                free(k);
                if (seen_meta)
                    return json_fail(j, "duplicate key \"__metadata__\"");
                seen_meta = true;
                if (!eat(j, '{'))
                    return json_fail(j, "\"__metadata__\" is not an object");
                rc = skip_container(j, '}', true);
            } else {
                rc = add_entry(j, k, kn, key_off);
                if (rc == CORE_OK)
                    rc = read_tensor(j, &j->t[j->nt - 1]);
            }
            if (rc != CORE_OK)
                return rc;
        } while (eat(j, ','));
        if (!eat(j, '}'))
            return json_fail(j, "expected ',' or '}'");
    }
    ws(j); /* writers pad the header with spaces */
    return j->p == j->end ? CORE_OK : json_fail(j, "bytes after the header object");
}

/* ---- checks and selection ----------------------------------------------- */

/* Offsets within the data and matching dtype * shape, for every tensor. */
static int check_tensor(struct st_json *j, const struct st_tensor *t, uint64_t data_bytes)
{
    uint64_t n = st_dtypes[t->dtype].size;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] != 0 && n > UINT64_MAX / t->shape[d])
            return core_fail(j->err, j->errlen, CORE_EFORMAT,
                             "%s: offset %llu: tensor \"%s\": shape overflows", j->path,
                             (unsigned long long)t->key_off, t->name);
        n *= t->shape[d];
    }
    if (t->begin > t->end || t->end > data_bytes)
        return core_fail(j->err, j->errlen, CORE_EFORMAT,
                         "%s: offset %llu: tensor \"%s\": data_offsets [%llu, %llu] outside the "
                         "%llu data bytes",
                         j->path, (unsigned long long)t->key_off, t->name,
                         (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)data_bytes);
    if (t->end - t->begin != n)
        return core_fail(j->err, j->errlen, CORE_EFORMAT,
                         "%s: offset %llu: tensor \"%s\": data_offsets span %llu bytes but %s "
                         "times the shape is %llu",
                         j->path, (unsigned long long)t->key_off, t->name,
                         (unsigned long long)(t->end - t->begin), st_dtypes[t->dtype].name,
                         (unsigned long long)n);
    return CORE_OK;
}

/* "a" (F32 [3, 4]), "b" (F16 [7]) ... for messages, truncated to fit. */
static void list_tensors(const struct st_json *j, bool only_2d, char *out, size_t n)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < j->nt && used + 1 < n; i++) {
        const struct st_tensor *t = &j->t[i];
        if (only_2d && t->ndim != 2)
            continue;
        int w = snprintf(out + used, n - used, "%s\"%s\" (%s, %d-D)", used ? ", " : "",
                         t->name, st_dtypes[t->dtype].name, t->ndim);
        used += w > 0 ? (size_t)w : 0;
    }
    if (used >= n && n > 4)
        memcpy(out + n - 4, "...", 4);
}

static int pick_tensor(struct st_json *j, const char *want, const struct st_tensor **out)
{
    char names[512];
    if (want != NULL) {
        for (size_t i = 0; i < j->nt; i++) {
            if (strlen(want) == j->t[i].name_len && strcmp(want, j->t[i].name) == 0) {
                *out = &j->t[i];
                return CORE_OK;
            }
        }
        list_tensors(j, false, names, sizeof(names));
        return core_fail(j->err, j->errlen, CORE_ENOTFOUND,
                         "%s: no tensor named \"%s\"; the file holds: %s", j->path, want,
                         j->nt ? names : "no tensors");
    }
    size_t count = 0;
    for (size_t i = 0; i < j->nt; i++) {
        if (j->t[i].ndim == 2) {
            *out = &j->t[i];
            count++;
        }
    }
    if (count == 1)
        return CORE_OK;
    list_tensors(j, count > 1, names, sizeof(names));
    if (count == 0)
        return core_fail(j->err, j->errlen, CORE_ENOTFOUND,
                         "%s: no 2-D tensor in the file (it holds: %s)", j->path,
                         j->nt ? names : "no tensors");
    return core_fail(j->err, j->errlen, CORE_EINVAL,
                     "%s: %zu 2-D tensors, name one with \"tensor\": %s", j->path, count, names);
}

static int check_chosen(struct st_json *j, const struct st_tensor *t)
{
    if (t->ndim != 2)
        return core_fail(j->err, j->errlen, CORE_EUNSUPPORTED,
                         "%s: tensor \"%s\" is %d-D; a 2-D (rows, dim) tensor is expected",
                         j->path, t->name, t->ndim);
    if (!st_dtypes[t->dtype].loadable)
        return core_fail(j->err, j->errlen, CORE_EUNSUPPORTED,
                         "%s: tensor \"%s\" has dtype %s; F32, F16, BF16 or F64 expected",
                         j->path, t->name, st_dtypes[t->dtype].name);
    if (t->shape[0] < 1 || t->shape[1] < 1)
        return core_fail(j->err, j->errlen, CORE_EFORMAT, "%s: tensor \"%s\" is empty",
                         j->path, t->name);
    if (t->shape[0] > (uint64_t)LOADER_MAX_ROWS)
        return core_fail(j->err, j->errlen, CORE_ETOOBIG, "%s: tensor \"%s\" has over %lld rows",
                         j->path, t->name, (long long)LOADER_MAX_ROWS);
    return CORE_OK;
}

/* ---- the load ----------------------------------------------------------- */

static int read_header_bytes(const char *path, int fd, uint64_t size, char **hdr, uint64_t *n,
                             char *err, size_t errlen)
{
    unsigned char len8[8];
    int64_t got = loader_pread(fd, len8, 8, 0);
    if (got < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: read error: %s", path, strerror(errno));
    if (got < 8)
        return core_fail(err, errlen, CORE_EFORMAT,
                         "%s: offset 0: %lld bytes, too short for a safetensors header", path,
                         (long long)got);
    *n = 0;
    for (int i = 7; i >= 0; i--)
        *n = *n << 8 | len8[i];
    if (*n > size - 8 || *n > ST_MAX_HEADER)
        return core_fail(err, errlen, CORE_EFORMAT,
                         "%s: offset 0: header length %llu runs past the end of the %llu-byte "
                         "file",
                         path, (unsigned long long)*n, (unsigned long long)size);
    *hdr = malloc(*n + 1);
    if (*hdr == NULL)
        return core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", path);
    if (loader_pread(fd, *hdr, *n, 8) != (int64_t)*n)
        return core_fail(err, errlen, CORE_EIO, "%s: read error in the header", path);
    return CORE_OK;
}

static int st_steps(struct st_json *j, int fd, uint64_t size, uint64_t hlen,
                    const struct loader_opts *o, struct matrix *m)
{
    int rc = read_header_json(j);
    uint64_t data_off = 8 + hlen;
    for (size_t i = 0; i < j->nt && rc == CORE_OK; i++)
        rc = check_tensor(j, &j->t[i], size - data_off);
    const struct st_tensor *t = NULL;
    if (rc == CORE_OK)
        rc = pick_tensor(j, o != NULL ? o->tensor : NULL, &t);
    if (rc == CORE_OK)
        rc = check_chosen(j, t);
    if (rc != CORE_OK)
        return rc;
    rc = matrix_init(m, (int64_t)t->shape[0], (int64_t)t->shape[1]);
    if (rc != CORE_OK)
        return core_fail(j->err, j->errlen, rc, "%s: cannot allocate %llu x %llu: %s", j->path,
                         (unsigned long long)t->shape[0], (unsigned long long)t->shape[1],
                         core_strerror(rc));
    struct loader_progress prog;
    loader_progress_init(&prog, o, size);
    rc = loader_read_dense(j->path, fd, data_off + t->begin, st_dtypes[t->dtype].t, false,
                           LOADER_FINITE_ONLY, m, &prog, j->err, j->errlen);
    if (rc == CORE_OK)
        loader_progress_done(&prog);
    return rc;
}

int safetensors_load(const char *path, const struct loader_opts *o, struct matrix *m,
                     char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    int fd;
    uint64_t size, hlen = 0;
    int rc = loader_open(path, &fd, &size, err, errlen);
    if (rc != CORE_OK)
        return rc;
    char *hdr = NULL;
    rc = read_header_bytes(path, fd, size, &hdr, &hlen, err, errlen);
    struct st_json j = {.path = path, .err = err, .errlen = errlen};
    if (rc == CORE_OK) {
        j.s = j.p = hdr;
        j.end = hdr + hlen;
        rc = st_steps(&j, fd, size, hlen, o, m);
    }
    for (size_t i = 0; i < j.nt; i++)
        free(j.t[i].name);
    free(j.t);
    free(hdr);
    close(fd);
    if (rc != CORE_OK)
        matrix_deinit(m);
    return rc;
}
