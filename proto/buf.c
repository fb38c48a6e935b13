/* buf.c - see buf.h. Growth doubles the capacity (at least 256 bytes) and is
 * capped at the limit. The first refused append makes the buffer fail for
 * good: text appended after a gap would look like a whole answer, so writers
 * append unchecked and test `failed` once at the end. */
#include "buf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "f32fmt.h"
#include "json.h"

#define BUF_MIN_CAP 256

void buf_init(struct buf *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit;
    b->failed = false;
    b->over_limit = false;
}

void buf_deinit(struct buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

static size_t effective_limit(const struct buf *b)
{
    return b->limit == 0 ? SIZE_MAX : b->limit;
}

static bool fail(struct buf *b)
{
    b->failed = true;
    return false;
}

/* The new capacity for a need of `need` bytes: doubling amortizes appends,
 * the limit bounds it. */
static size_t grown_cap(size_t cap, size_t need, size_t limit)
{
    size_t next = cap < BUF_MIN_CAP ? BUF_MIN_CAP : cap;
    while (next < need && next <= SIZE_MAX / 2)
        next *= 2;
    if (next < need)
        next = need;
    return next > limit ? limit : next;
}

bool buf_reserve(struct buf *b, size_t n)
{
    if (b->failed)
        return false;
    size_t limit = effective_limit(b);
    if (n > limit - b->len) {
        b->over_limit = true;
        return fail(b);
    }
    size_t need = b->len + n;
    if (need <= b->cap)
        return true;
    size_t cap = grown_cap(b->cap, need, limit);
    char *data = realloc(b->data, cap);
    if (data == NULL)
        return fail(b);
    b->data = data;
    b->cap = cap;
    return true;
}

void buf_append(struct buf *b, const void *data, size_t n)
{
    if (n == 0 || !buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

void buf_putc(struct buf *b, char c)
{
    if (!buf_reserve(b, 1))
        return;
    b->data[b->len++] = c;
}

void buf_puts(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    char small[128];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        fail(b);
        return;
    }
    if ((size_t)n < sizeof small) {
        buf_append(b, small, (size_t)n);
        return;
    }
    /* Too long for the stack copy: format again straight into the buffer. */
    if (!buf_reserve(b, (size_t)n + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Writes the decimal digits of v ending at end; returns the first digit. */
static char *u64_digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

void buf_put_u64(struct buf *b, uint64_t v)
{
    char tmp[20];
    char *p = u64_digits(tmp + sizeof tmp, v);
    buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

void buf_put_i64(struct buf *b, int64_t v)
{
    char tmp[21];
    /* Negating in unsigned arithmetic covers INT64_MIN. */
    uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    char *p = u64_digits(tmp + sizeof tmp, mag);
    if (v < 0)
        *--p = '-';
    buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

void buf_put_f32(struct buf *b, float f)
{
    char tmp[F32FMT_MAX];
    buf_append(b, tmp, f32fmt(f, tmp));
}

void buf_put_f32_array(struct buf *b, const float *v, size_t n)
{
    /* One reservation for the worst case: every float at its longest plus a
     * comma, and the brackets. Over-reserving is harmless; a short buffer
     * near its limit falls back to exact per-float appends. */
    size_t worst = n <= (SIZE_MAX - 2) / F32FMT_MAX ? n * F32FMT_MAX + 2 : SIZE_MAX;
    size_t limit = effective_limit(b);
    if (!b->failed && worst <= limit - b->len) {
        if (!buf_reserve(b, worst))
            return;
        char *p = b->data + b->len;
        *p++ = '[';
        /* n * F32FMT_MAX bytes remain after the '[', as f32fmt_array needs. */
        p += f32fmt_array(v, n, p);
        *p++ = ']';
        b->len = (size_t)(p - b->data);
        return;
    }
    buf_putc(b, '[');
    for (size_t i = 0; i < n && !b->failed; i++) {
        if (i > 0)
            buf_putc(b, ',');
        buf_put_f32(b, v[i]);
    }
    buf_putc(b, ']');
}

/* The escape for byte c, or NULL when c is copied as it is. Control bytes
 * without a short form become \u00XX. */
static const char *json_escape(unsigned char c, char tmp[7])
{
    static const char hex[] = "0123456789abcdef";
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\b': return "\\b";
    case '\f': return "\\f";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default: break;
    }
    if (c >= 0x20)
        return NULL;
    memcpy(tmp, "\\u00", 4);
    tmp[4] = hex[c >> 4];
    tmp[5] = hex[c & 15];
    tmp[6] = '\0';
    return tmp;
}

void buf_put_json_string(struct buf *b, const char *s, size_t n)
{
    buf_putc(b, '"');
    if (n == 0) {
        buf_putc(b, '"');
        return;
    }
    size_t run = 0; /* start of the bytes not yet written */
    for (size_t i = 0; i < n;) {
        char tmp[7];
        unsigned char c = (unsigned char)s[i];
        const char *esc;
        size_t used = 1;
        if (c >= 0x80) {
            /* a byte that starts no valid UTF-8 sequence (a token cut by a
             * byte limit) becomes U+FFFD, so the answer is valid JSON */
            used = json_utf8_len((const unsigned char *)s + i, n - i);
            esc = used == 0 ? "\\ufffd" : NULL;
            used += used == 0;
        } else {
            esc = json_escape(c, tmp);
        }
        if (esc != NULL) {
            buf_append(b, s + run, i - run);
            buf_puts(b, esc);
            run = i + used;
        }
        i += used;
    }
    buf_append(b, s + run, n - run);
    buf_putc(b, '"');
}

char *buf_steal(struct buf *b, size_t *len)
{
    if (b->failed || b->data == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    char *data = b->data;
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return data;
}
