/* json.c - a strict RFC 8259 validator run over request bodies before
 * cJSON sees them.
 *
 * One recursive-descent pass over the raw bytes, depth bounded by the
 * caller. Keys of the objects still open are decoded into one arena used as
 * a stack, so duplicates are found however they are spelled ("a" and
 * "\u0061" are the same key) and each object costs memory only while open. */
#include "json.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cJSON copies a number into a 64-byte buffer before strtod and silently
 * cuts longer ones, so longer numbers are refused here instead. */
#define NUMBER_MAX_CHARS 63
/* Objects with few keys are checked pairwise; larger ones are sorted. */
#define PAIRWISE_KEYS 8

struct key_span {
    size_t off;      /* into the key arena */
    size_t len;
    size_t at;       /* byte offset of the key in the input */
    const char *ptr; /* set just before comparing */
};

struct scan {
    const unsigned char *s;
    size_t len;
    size_t pos;
    size_t depth;
    size_t max_depth;
    char *keys; /* decoded keys of the open objects */
    size_t keys_len, keys_cap;
    struct key_span *spans;
    size_t nspans, spans_cap;
    enum status_code code;
    size_t at;      /* byte offset of the problem */
    char what[160]; /* what is wrong there, without the offset */
};

static bool fail(struct scan *sc, enum status_code code, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(struct scan *sc, enum status_code code, size_t at, const char *fmt, ...)
{
    if (sc->code != STATUS_OK)
        return false;
    sc->code = code;
    sc->at = at;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sc->what, sizeof sc->what, fmt, ap);
    va_end(ap);
    return false;
}

static bool syntax(struct scan *sc, size_t at, const char *what)
{
    return fail(sc, STATUS_INVALID_JSON, at, "%s", what);
}

static bool out_of_memory(struct scan *sc)
{
    return fail(sc, STATUS_INTERNAL, sc->pos, "out of memory while reading JSON");
}

static void skip_ws(struct scan *sc)
{
    while (sc->pos < sc->len) {
        unsigned char c = sc->s[sc->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        sc->pos++;
    }
}

static bool at_end(const struct scan *sc)
{
    return sc->pos >= sc->len;
}

static bool expect(struct scan *sc, char c, const char *what)
{
    skip_ws(sc);
    if (at_end(sc) || sc->s[sc->pos] != (unsigned char)c)
        return syntax(sc, sc->pos, what);
    sc->pos++;
    return true;
}

/* ---- key arena (only keys are decoded; values are just checked) ---- */

static bool key_putc(struct scan *sc, char c)
{
    if (sc->keys_len == sc->keys_cap) {
        size_t cap = sc->keys_cap ? sc->keys_cap * 2 : 256;
        char *p = realloc(sc->keys, cap);
        if (p == NULL)
            return out_of_memory(sc);
        sc->keys = p;
        sc->keys_cap = cap;
    }
    sc->keys[sc->keys_len++] = c;
    return true;
}

static bool key_push_span(struct scan *sc, size_t off, size_t at)
{
    if (sc->nspans == sc->spans_cap) {
        size_t cap = sc->spans_cap ? sc->spans_cap * 2 : 16;
        struct key_span *p = realloc(sc->spans, cap * sizeof *p);
        if (p == NULL)
            return out_of_memory(sc);
        sc->spans = p;
        sc->spans_cap = cap;
    }
    sc->spans[sc->nspans++] = (struct key_span){off, sc->keys_len - off, at, NULL};
    return true;
}

/* ---- strings ---- */

size_t json_utf8_len(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80, hi = 0xBF;
    size_t need;

    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0) {
        need = 2;
    } else if (c < 0xF0) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c < 0xF5) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (avail < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return need;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits of a \u escape; sc->pos is just after the 'u'. */
static bool read_hex4(struct scan *sc, uint32_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        if (sc->pos + i >= sc->len)
            return syntax(sc, sc->pos + i, "truncated \\u escape");
        int h = hex_value(sc->s[sc->pos + i]);
        if (h < 0)
            return syntax(sc, sc->pos + i, "\\u escape needs 4 hex digits");
        v = v * 16 + (uint32_t)h;
    }
    sc->pos += 4;
    *out = v;
    return true;
}

static bool put_utf8(struct scan *sc, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    for (size_t i = 0; i < n; i++)
        if (!key_putc(sc, b[i]))
            return false;
    return true;
}

/* A \uXXXX escape (sc->pos at the 'u'), pairing surrogates; the code point
 * goes to the key arena when decoding. */
static bool scan_unicode_escape(struct scan *sc, size_t esc_at, bool decode)
{
    uint32_t cp, lo;

    sc->pos++;
    if (!read_hex4(sc, &cp))
        return false;
    if (cp == 0)
        return fail(sc, STATUS_INVALID_ARGUMENT, esc_at,
                    "string holds \\u0000 at byte %zu; NUL characters are not allowed", esc_at);
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return syntax(sc, esc_at, "\\u escape is a lone low surrogate");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (sc->len - sc->pos < 2 || sc->s[sc->pos] != '\\' || sc->s[sc->pos + 1] != 'u')
            return syntax(sc, esc_at, "\\u escape is a high surrogate without a low one");
        sc->pos += 2;
        if (!read_hex4(sc, &lo))
            return false;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return syntax(sc, esc_at, "\\u escape is a high surrogate without a low one");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return decode ? put_utf8(sc, cp) : true;
}

static bool scan_escape(struct scan *sc, bool decode)
{
    static const char simple_in[] = "\"\\/bfnrt";
    static const char simple_out[] = "\"\\/\b\f\n\r\t";
    size_t esc_at = sc->pos - 1;
    const char *hit;

    if (at_end(sc))
        return syntax(sc, esc_at, "unterminated string");
    if (sc->s[sc->pos] == 'u')
        return scan_unicode_escape(sc, esc_at, decode);
    hit = sc->s[sc->pos] ? strchr(simple_in, sc->s[sc->pos]) : NULL;
    if (hit == NULL)
        return syntax(sc, esc_at, "invalid escape sequence");
    sc->pos++;
    return decode ? key_putc(sc, simple_out[hit - simple_in]) : true;
}

/* A string starting at sc->pos ('"'); its decoded bytes go to the key
 * arena when decode is set. */
static bool scan_string(struct scan *sc, bool decode)
{
    size_t start = sc->pos++;

    for (;;) {
        if (at_end(sc))
            return syntax(sc, start, "unterminated string");
        unsigned char c = sc->s[sc->pos];
        if (c == '"') {
            sc->pos++;
            return true;
        }
        if (c == '\\') {
            sc->pos++;
            if (!scan_escape(sc, decode))
                return false;
            continue;
        }
        if (c < 0x20)
            return syntax(sc, sc->pos, "control byte in string (must be escaped)");
        size_t n = json_utf8_len(sc->s + sc->pos, sc->len - sc->pos);
        if (n == 0)
            return syntax(sc, sc->pos, "invalid UTF-8 in string");
        if (decode)
            for (size_t i = 0; i < n; i++)
                if (!key_putc(sc, (char)sc->s[sc->pos + i]))
                    return false;
        sc->pos += n;
    }
}

/* ---- numbers and literals ---- */

static bool is_digit(const struct scan *sc)
{
    return !at_end(sc) && sc->s[sc->pos] >= '0' && sc->s[sc->pos] <= '9';
}

static bool scan_digits(struct scan *sc, const char *what)
{
    if (!is_digit(sc))
        return syntax(sc, sc->pos, what);
    while (is_digit(sc))
        sc->pos++;
    return true;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool scan_number(struct scan *sc)
{
    size_t start = sc->pos;

    if (sc->s[sc->pos] == '-')
        sc->pos++;
    if (!at_end(sc) && sc->s[sc->pos] == '0')
        sc->pos++;
    else if (!scan_digits(sc, "expected a digit"))
        return false;
    if (!at_end(sc) && sc->s[sc->pos] == '.') {
        sc->pos++;
        if (!scan_digits(sc, "expected a digit after '.'"))
            return false;
    }
    if (!at_end(sc) && (sc->s[sc->pos] == 'e' || sc->s[sc->pos] == 'E')) {
        sc->pos++;
        if (!at_end(sc) && (sc->s[sc->pos] == '+' || sc->s[sc->pos] == '-'))
            sc->pos++;
        if (!scan_digits(sc, "expected a digit in the exponent"))
            return false;
    }
    if (sc->pos - start > NUMBER_MAX_CHARS)
        return syntax(sc, start, "number longer than 63 characters");
    return true;
}

static bool scan_literal(struct scan *sc, const char *word)
{
    size_t n = strlen(word);
    if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0)
        return syntax(sc, sc->pos, "unexpected bytes (not a JSON value)");
    sc->pos += n;
    return true;
}

/* ---- containers ---- */

static bool scan_value(struct scan *sc);

static bool enter(struct scan *sc)
{
    if (++sc->depth > sc->max_depth)
        return fail(sc, STATUS_INVALID_JSON, sc->pos, "nested deeper than %zu levels",
                    sc->max_depth);
    sc->pos++;
    return true;
}

static int compare_keys(const void *a, const void *b)
{
    const struct key_span *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->ptr, y->ptr, n) : 0;
    if (c != 0)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->at < y->at ? -1 : (x->at > y->at);
}

int json_quote_len(const char *s, size_t n)
{
    if (n <= JSON_QUOTE_MAX)
        return (int)n;
    n = JSON_QUOTE_MAX;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return (int)n;
}

static bool duplicate_at(struct scan *sc, const struct key_span *k)
{
    return fail(sc, STATUS_INVALID_JSON, k->at, "duplicate key \"%.*s\"",
                json_quote_len(k->ptr, k->len), k->ptr);
}

static bool same_key(const struct key_span *a, const struct key_span *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

/* Checks the keys spans[first..nspans) of the object that just closed. */
static bool check_duplicates(struct scan *sc, size_t first)
{
    struct key_span *k = sc->spans + first;
    size_t n = sc->nspans - first;

    for (size_t i = 0; i < n; i++)
        k[i].ptr = sc->keys != NULL ? sc->keys + k[i].off : ""; /* all keys empty */
    if (n <= PAIRWISE_KEYS) {
        for (size_t j = 1; j < n; j++)
            for (size_t i = 0; i < j; i++)
                if (same_key(&k[i], &k[j]))
                    return duplicate_at(sc, &k[j]);
        return true;
    }
    qsort(k, n, sizeof *k, compare_keys);
    for (size_t i = 1; i < n; i++)
        if (same_key(&k[i - 1], &k[i]))
            return duplicate_at(sc, &k[i]);
    return true;
}

static bool scan_member(struct scan *sc)
{
    size_t off = sc->keys_len, at;

    skip_ws(sc);
    if (at_end(sc) || sc->s[sc->pos] != '"')
        return syntax(sc, sc->pos, "expected a string key");
    at = sc->pos;
    if (!scan_string(sc, true) || !key_push_span(sc, off, at))
        return false;
    if (!expect(sc, ':', "expected ':' after an object key"))
        return false;
    return scan_value(sc);
}

static bool scan_object(struct scan *sc)
{
    size_t first = sc->nspans, keys_mark = sc->keys_len, members = 0;

    if (!enter(sc))
        return false;
    skip_ws(sc);
    if (!at_end(sc) && sc->s[sc->pos] == '}') {
        sc->pos++;
    } else {
        for (;;) {
            if (++members > JSON_MAX_KEYS)
                return fail(sc, STATUS_INVALID_ARGUMENT, sc->pos,
                            "the object at byte %zu has more than %d keys", sc->pos,
                            JSON_MAX_KEYS);
            if (!scan_member(sc))
                return false;
            skip_ws(sc);
            if (!at_end(sc) && sc->s[sc->pos] == ',') {
                sc->pos++;
                continue;
            }
            if (!expect(sc, '}', "expected ',' or '}' in an object"))
                return false;
            break;
        }
        if (!check_duplicates(sc, first))
            return false;
    }
    sc->nspans = first;
    sc->keys_len = keys_mark;
    sc->depth--;
    return true;
}

static bool scan_array(struct scan *sc)
{
    if (!enter(sc))
        return false;
    skip_ws(sc);
    if (!at_end(sc) && sc->s[sc->pos] == ']') {
        sc->pos++;
        sc->depth--;
        return true;
    }
    for (;;) {
        if (!scan_value(sc))
            return false;
        skip_ws(sc);
        if (!at_end(sc) && sc->s[sc->pos] == ',') {
            sc->pos++;
            continue;
        }
        if (!expect(sc, ']', "expected ',' or ']' in an array"))
            return false;
        sc->depth--;
        return true;
    }
}

static bool scan_value(struct scan *sc)
{
    skip_ws(sc);
    if (at_end(sc))
        return syntax(sc, sc->pos, "unexpected end of input, expected a value");
    switch (sc->s[sc->pos]) {
    case '{':
        return scan_object(sc);
    case '[':
        return scan_array(sc);
    case '"':
        return scan_string(sc, false);
    case 't':
        return scan_literal(sc, "true");
    case 'f':
        return scan_literal(sc, "false");
    case 'n':
        return scan_literal(sc, "null");
    default:
        if (sc->s[sc->pos] == '-' || (sc->s[sc->pos] >= '0' && sc->s[sc->pos] <= '9'))
            return scan_number(sc);
        return syntax(sc, sc->pos, "unexpected byte, expected a value");
    }
}

enum status_code json_validate_where(const char *text, size_t len, size_t max_depth,
                                     size_t *at, char *what, size_t whatlen)
{
    struct scan sc = {
        .s = (const unsigned char *)text, .len = len, .max_depth = max_depth,
        .code = STATUS_OK,
    };

    if (text == NULL)
        sc.len = 0;
    skip_ws(&sc);
    if (at_end(&sc)) {
        syntax(&sc, sc.pos, "empty body, expected a JSON value");
    } else if (scan_value(&sc)) {
        skip_ws(&sc);
        if (!at_end(&sc))
            syntax(&sc, sc.pos, "trailing bytes after the JSON value");
    }
    free(sc.keys);
    free(sc.spans);
    if (at != NULL)
        *at = sc.code == STATUS_OK ? 0 : sc.at;
    if (what != NULL && whatlen > 0)
        snprintf(what, whatlen, "%s", sc.code == STATUS_OK ? "" : sc.what);
    return sc.code;
}

enum status_code json_validate(const char *text, size_t len, size_t max_depth,
                               char *err, size_t errlen)
{
    char what[160];
    size_t at;
    enum status_code code = json_validate_where(text, len, max_depth, &at, what, sizeof what);

    if (err == NULL || errlen == 0)
        return code;
    if (code == STATUS_INVALID_JSON)
        snprintf(err, errlen, "invalid JSON at byte %zu: %s", at, what);
    else
        snprintf(err, errlen, "%s", what);
    return code;
}

static enum status_code plain_fail(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", msg);
    return STATUS_INTERNAL;
}

enum status_code json_parse(const char *text, size_t len, struct cJSON **out,
                            char *err, size_t errlen)
{
    enum status_code code;
    const char *end = NULL;
    char *copy;

    *out = NULL;
    code = json_validate(text, len, JSON_MAX_DEPTH, err, errlen);
    if (code != STATUS_OK)
        return code;
    copy = malloc(len + 1);
    if (copy == NULL)
        return plain_fail(err, errlen, "out of memory copying the body");
    memcpy(copy, text, len);
    copy[len] = '\0';
    *out = cJSON_ParseWithLengthOpts(copy, len, &end, false);
    free(copy);
    if (*out == NULL) /* the validator accepted it: only memory can fail */
        return plain_fail(err, errlen, "out of memory building the JSON tree");
    return STATUS_OK;
}

/* ---- reading validated text in place ---- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && is_space(*p))
        p++;
    return p;
}

/* The byte after the string starting at p ('"'), or end. */
static const char *string_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return end;
}

/* The byte after the value starting at p, or end; containers are skipped
 * by counting brackets outside strings, which is exact on valid JSON. */
static const char *value_end(const char *p, const char *end)
{
    if (p >= end)
        return end;
    if (*p == '"')
        return string_end(p, end);
    if (*p == '[' || *p == '{') {
        size_t depth = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = string_end(p, end);
                continue;
            }
            if (c == '[' || c == '{')
                depth++;
            else if ((c == ']' || c == '}') && --depth == 0)
                return p + 1;
            p++;
        }
        return end;
    }
    while (p < end && *p != ',' && *p != ']' && *p != '}' && *p != ':' && !is_space(*p))
        p++;
    return p;
}

bool json_root(const char *text, size_t len, struct json_value *out)
{
    const char *end = text + len, *p = skip_space(text, end);
    if (text == NULL || p >= end)
        return false;
    out->p = p;
    out->len = (size_t)(value_end(p, end) - p);
    return true;
}

enum json_type json_type_of(struct json_value v)
{
    switch (v.len ? v.p[0] : 'n') {
    case '[':
        return JSON_ARRAY;
    case '{':
        return JSON_OBJECT;
    case '"':
        return JSON_STRING;
    case 't':
        return JSON_TRUE;
    case 'f':
        return JSON_FALSE;
    case 'n':
        return JSON_NULL;
    default:
        return JSON_NUMBER;
    }
}

const char *json_type_name(enum json_type t)
{
    static const char *const names[] = {
        [JSON_NULL] = "null",       [JSON_FALSE] = "false",     [JSON_TRUE] = "true",
        [JSON_NUMBER] = "a number", [JSON_STRING] = "a string", [JSON_ARRAY] = "an array",
        [JSON_OBJECT] = "an object",
    };
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "null";
}

bool json_iter_begin(struct json_iter *it, struct json_value v)
{
    enum json_type t = json_type_of(v);
    if (t != JSON_ARRAY && t != JSON_OBJECT)
        return false;
    it->p = v.p + 1;
    it->end = v.p + v.len;
    return true;
}

/* The value at it->p, moving past it and the comma after it. */
static bool next_value(struct json_iter *it, struct json_value *out)
{
    const char *p = skip_space(it->p, it->end), *e;
    if (p >= it->end || *p == ']' || *p == '}') {
        it->p = it->end;
        return false;
    }
    e = value_end(p, it->end);
    if (e == p) { /* not a value start: only on invalid text */
        it->p = it->end;
        return false;
    }
    out->p = p;
    out->len = (size_t)(e - p);
    p = skip_space(e, it->end);
    if (p < it->end && (*p == ',' || *p == ':'))
        p++;
    it->p = p;
    return true;
}

bool json_array_next(struct json_iter *it, struct json_value *elem)
{
    return next_value(it, elem);
}

bool json_object_next(struct json_iter *it, struct json_value *key, struct json_value *val)
{
    return next_value(it, key) && next_value(it, val);
}

size_t json_array_count(struct json_value v)
{
    struct json_iter it;
    struct json_value e;
    size_t n = 0;
    if (json_type_of(v) != JSON_ARRAY || !json_iter_begin(&it, v))
        return 0;
    while (json_array_next(&it, &e))
        n++;
    return n;
}

double json_number(struct json_value v)
{
    char text[NUMBER_MAX_CHARS + 1];
    size_t n = v.len < NUMBER_MAX_CHARS ? v.len : NUMBER_MAX_CHARS;
    memcpy(text, v.p, n);
    text[n] = '\0';
    return strtod(text, NULL);
}

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value((unsigned char)p[i]);
        v = v * 16 + (unsigned)(h < 0 ? 0 : h);
    }
    return v;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One escape at p[0] == '\\' (end bounds it): its bytes go to out, the
 * escape's length to *used. */
static size_t decode_escape(const char *p, const char *end, char *out, size_t *used)
{
    static const char simple_in[] = "\"\\/bfnrt";
    static const char simple_out[] = "\"\\/\b\f\n\r\t";
    const char *hit;

    if (end - p < 2) {
        *used = (size_t)(end - p);
        return 0;
    }
    if (p[1] != 'u') {
        hit = p[1] ? strchr(simple_in, p[1]) : NULL;
        *used = 2;
        if (hit == NULL)
            return 0;
        out[0] = simple_out[hit - simple_in];
        return 1;
    }
    if (end - p < 6) {
        *used = (size_t)(end - p);
        return 0;
    }
    uint32_t cp = hex4(p + 2);
    *used = 6;
    if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 12 && p[6] == '\\' && p[7] == 'u') {
        uint32_t lo = hex4(p + 8);
        if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            *used = 12;
        }
    }
    return utf8_encode(cp, out);
}

size_t json_string_decode(struct json_value v, char *out)
{
    const char *p = v.p + 1, *end = v.p + v.len;
    size_t n = 0;

    if (v.len >= 2 && end[-1] == '"')
        end--;
    while (p < end) {
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        size_t run = (size_t)((bs ? bs : end) - p), used;
        memcpy(out + n, p, run);
        n += run;
        p += run;
        if (bs == NULL)
            break;
        n += decode_escape(p, end, out + n, &used);
        p += used;
    }
    return n;
}

bool json_string_is(struct json_value v, const char *lit)
{
    size_t want = strlen(lit);
    char small[256];

    if (json_type_of(v) != JSON_STRING || v.len < 2)
        return false;
    if (memchr(v.p, '\\', v.len) == NULL)
        return v.len - 2 == want && memcmp(v.p + 1, lit, want) == 0;
    /* each decoded byte takes at most 6 bytes of text ("\u0061") */
    if ((v.len - 2) / 6 > want || v.len > sizeof small)
        return false;
    size_t n = json_string_decode(v, small);
    return n == want && memcmp(small, lit, want) == 0;
}
