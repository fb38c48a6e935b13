/* loader_text.c - word2vec text (fastText .vec too) and GloVe files: a line
 * reader, an exact and fast decimal-to-float parser, and the row parser.
 *
 * Lines are "<token> <v1> ... <vdim>": the token is the exact bytes up to the
 * first space or tab, values are separated by spaces or tabs, trailing
 * blanks and "\r" are ignored. Blank lines are allowed only at the end. */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "loader_internal.h"

/* ---- the float parser --------------------------------------------------- */

/* Powers of ten exactly representable in a double, and the doubles nearest
 * their reciprocals. */
static const double pow10_exact[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};
static const double pow10_recip[] = {
    1e-0,  1e-1,  1e-2,  1e-3,  1e-4,  1e-5,  1e-6,  1e-7,  1e-8,  1e-9,  1e-10, 1e-11,
    1e-12, 1e-13, 1e-14, 1e-15, 1e-16, 1e-17, 1e-18, 1e-19, 1e-20, 1e-21, 1e-22,
};

static inline bool is_digit(char c)
{
    return (unsigned char)(c - '0') < 10;
}

static inline bool is_alnum_or_dot(char c)
{
    return is_digit(c) || c == '.' || ((unsigned char)((c | 0x20) - 'a') < 26);
}

/* The fast path and why it is exact. The decimal is x = w * 10^e with
 * w <= 2^53 and |e| <= 22, so w and 10^|e| are exact doubles and q below is
 * within 2 units in the last place (ulps) of x: one rounding when e >= 0
 * (exact factors), two when e < 0 (the reciprocal is rounded, then the
 * product; a multiplication, because a division costs a fifth of the whole
 * parse). Rounding to float only depends on which side of the midpoints
 * between adjacent floats a value lies, and every such midpoint is a double
 * whose 29 bits below float precision read 1000...0 (or sits on a power of
 * two, which is a float, not a midpoint). So when q's 29 low bits are more
 * than 4 ulps away from that pattern, no midpoint lies between x and q nor on
 * x, and (float)q is the float nearest x, as strtof gives. The rare rest goes
 * to strtof. Values here are >= 1e-22, far above the float subnormals, and
 * below 2^53 * 1e22 < FLT_MAX. */
static bool fast_value(uint64_t w, int64_t e, float *out)
{
    if (w > (UINT64_C(1) << 53) || e < -22 || e > 22)
        return false;
    double q = (double)w * (e < 0 ? pow10_recip[-e] : pow10_exact[e]);
    uint64_t bits;
    memcpy(&bits, &q, sizeof(bits));
    uint64_t low = bits & 0x1fffffffu;
    if (low - (0x10000000u - 4) <= 8)
        return false;
    *out = (float)q;
    return true;
}

/* Eight bytes at p as one little-endian word (the first byte lowest). */
static inline uint64_t load8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Digits are taken eight at a time from one 64-bit word, which saves the
 * branch per character that made the parse cost most of a text load. With
 * x = word - "00000000" byte-wise, a byte is a digit exactly when it is
 * below 10: bit 7 of x or of x + 0x76 flags the others (borrows and carries
 * only travel towards later characters, past the first non-digit). */
static inline int digit_run(uint64_t x)
{
    uint64_t flags = (x | (x + 0x7676767676767676u)) & 0x8080808080808080u;
    return flags == 0 ? 8 : __builtin_ctzll(flags) / 8;
}

/* The value of the n leading digit bytes of x (bytes 0..9, first digit in
 * the lowest byte): shifted up so they end the word, then pairs, quads and
 * octets are combined with one multiply each. */
static inline uint64_t digits_value(uint64_t x, int n)
{
    x <<= 8 * (8 - n); /* n >= 1 */
    x = (x * 10 + (x >> 8)) & 0x00ff00ff00ff00ffu;
    x = (x * 100 + (x >> 16)) & 0x0000ffff0000ffffu;
    return (x * 10000 + (x >> 32)) & 0xffffffffu;
}

/* The "C" locale for the strtof fallback: files use '.' whatever locale
 * the process runs in. Made once; (locale_t)0 if that failed. */
static locale_t c_locale_obj;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void)
{
    c_locale_obj = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

static locale_t c_locale(void)
{
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale_obj;
}

static const uint64_t pow10_u64[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000,
                                     100000000};

/* Appends the run of digits at *pp to *w, advancing *pp; *count gets the
 * digits read. False when w would pass 19 digits (the caller falls back). */
static inline bool read_digits(const char **pp, uint64_t *w, int *count)
{
    const char *p = *pp;
    *count = 0;
    for (;;) {
        uint64_t x = load8(p) - 0x3030303030303030u;
        int n = digit_run(x);
        if (n == 0)
            break;
        if (*w >= UINT64_C(100000000000)) /* w * 10^8 + 10^8 - 1 must stay < 10^19 */
            return false;
        *w = *w * pow10_u64[n] + digits_value(x, n);
        p += n;
        *count += n;
        if (n < 8)
            break;
    }
    *pp = p;
    return true;
}

const char *loader_parse_f32(const char *p, float *out)
{
    const char *start = p;
    bool neg = false;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    uint64_t w = 0;
    int64_t e = 0; /* decimal exponent of w's last digit */
    int nint, nfrac = 0;
    if (!read_digits(&p, &w, &nint))
        goto slow;
    if (*p == '.') {
        p++;
        if (!read_digits(&p, &w, &nfrac))
            goto slow;
        e = -nfrac;
    }
    if (nint + nfrac == 0)
        goto slow; /* "inf", "nan", ".", garbage: strtof decides */
    if ((*p == 'e' || *p == 'E') &&
        (is_digit(p[1]) || ((p[1] == '-' || p[1] == '+') && is_digit(p[2])))) {
        p++;
        bool eneg = false;
        if (*p == '-' || *p == '+')
            eneg = *p++ == '-';
        int64_t x = 0;
        for (; is_digit(*p); p++)
            x = x < 100000 ? x * 10 + (*p - '0') : x;
        e += eneg ? -x : x;
    }
    /* A letter, digit or dot right after means a form strtof reads
     * differently ("0x1p3", "1e", "1.2.3"): let it decide where it ends. */
    if (is_alnum_or_dot(*p))
        goto slow;
    if (w == 0) {
        *out = neg ? -0.0f : 0.0f;
        return p;
    }
    float f;
    if (!fast_value(w, e, &f))
        goto slow;
    *out = neg ? -f : f;
    return p;
slow:;
    if (*start == ' ' || *start == '\t' || *start == '\n' || *start == '\r' ||
        *start == '\f' || *start == '\v')
        return NULL; /* strtof would skip blanks; a field never starts with one */
    char *end;
    locale_t c = c_locale();
    float v = c != (locale_t)0 ? strtof_l(start, &end, c) : strtof(start, &end);
    if (end == start)
        return NULL;
    *out = v;
    return end;
}

/* ---- the line reader ---------------------------------------------------- */

#define LINES_INITIAL_CAP (4u << 20)

int loader_lines_init(struct loader_lines *r, int fd)
{
    memset(r, 0, sizeof(*r));
    r->fd = fd;
    r->cap = LINES_INITIAL_CAP;
    /* + 1: room to NUL-terminate a last line; the pad for the parser */
    r->buf = malloc(r->cap + 1 + LOADER_PARSE_PAD);
    return r->buf != NULL ? CORE_OK : CORE_ENOMEM;
}

void loader_lines_deinit(struct loader_lines *r)
{
    free(r->buf);
    r->buf = NULL;
}

void loader_lines_rewind(struct loader_lines *r)
{
    r->start = r->len = 0;
    r->offset = 0;
    r->eof = false;
    r->lineno = 0;
}

/* Moves the unconsumed tail to the front and reads more after it, growing
 * the buffer when one line fills it. */
static int lines_fill(struct loader_lines *r)
{
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->len - r->start);
        r->offset += r->start;
        r->len -= r->start;
        r->start = 0;
    }
    if (r->len == r->cap) {
        if (r->cap >= LOADER_MAX_LINE)
            return CORE_ETOOBIG;
        char *nb = realloc(r->buf, r->cap * 2 + 1 + LOADER_PARSE_PAD);
        if (nb == NULL)
            return CORE_ENOMEM;
        r->buf = nb;
        r->cap *= 2;
    }
    int64_t n = loader_pread(r->fd, r->buf + r->len, r->cap - r->len, r->offset + r->len);
    if (n < 0)
        return CORE_EIO;
    if (n == 0)
        r->eof = true;
    r->len += (size_t)n;
    /* defined bytes after the data, for the parser's eight-byte reads */
    memset(r->buf + r->len, 0, 1 + LOADER_PARSE_PAD);
    return CORE_OK;
}

int loader_lines_next(struct loader_lines *r, char **line, size_t *len)
{
    for (;;) {
        char *s = r->buf + r->start;
        char *nl = memchr(s, '\n', r->len - r->start);
        if (nl != NULL) {
            *nl = '\0';
            *line = s;
            *len = (size_t)(nl - s);
            r->start = (size_t)(nl + 1 - r->buf);
            r->lineno++;
            return CORE_OK;
        }
        if (r->eof) {
            if (r->start == r->len) {
                *line = NULL;
                *len = 0;
                return CORE_OK;
            }
            /* a last line without "\n" */
            r->buf[r->len] = '\0';
            *line = s;
            *len = r->len - r->start;
            r->start = r->len;
            r->lineno++;
            return CORE_OK;
        }
        int rc = lines_fill(r);
        if (rc != CORE_OK)
            return rc;
    }
}

/* ---- rows --------------------------------------------------------------- */

static inline bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Cuts trailing blanks and "\r" off a NUL-terminated line; returns the new
 * length. */
static size_t trim_right(char *s, size_t n)
{
    while (n > 0 && (is_blank(s[n - 1]) || s[n - 1] == '\r'))
        n--;
    s[n] = '\0';
    return n;
}

/* Counts blank-separated fields of a trimmed line. */
static int64_t count_fields(const char *s)
{
    int64_t n = 0;
    while (*s != '\0') {
        while (is_blank(*s))
            s++;
        if (*s == '\0')
            break;
        n++;
        while (*s != '\0' && !is_blank(*s))
            s++;
    }
    return n;
}

/* State of one text load, so the steps can share it and its messages. */
struct text_load {
    const char *path;
    bool has_header;
    int fd;
    uint64_t size;
    struct loader_lines lines;
    int64_t rows, dim;
    int64_t first_row_line; /* line number of row 0 */
    struct matrix *m;
    struct vocab *vocab;
    char *err;
    size_t errlen;
};

static int lines_error(struct text_load *t, int rc)
{
    switch (rc) {
    case CORE_ETOOBIG:
        return core_fail(t->err, t->errlen, rc, "%s: line %lld: longer than %u bytes", t->path,
                         (long long)t->lines.lineno + 1, LOADER_MAX_LINE);
    case CORE_ENOMEM:
        return core_fail(t->err, t->errlen, rc, "%s: out of memory reading line %lld", t->path,
                         (long long)t->lines.lineno + 1);
    default:
        return core_fail(t->err, t->errlen, CORE_EIO, "%s: read error near line %lld: %s",
                         t->path, (long long)t->lines.lineno + 1, strerror(errno));
    }
}

/* word2vec: "<rows> <dim>" on line 1, checked against what the file could
 * hold (each row needs a token byte and a blank plus a digit per value)
 * before anything is allocated. */
static int read_header(struct text_load *t)
{
    char *line;
    size_t len;
    int rc = loader_lines_next(&t->lines, &line, &len);
    if (rc != CORE_OK)
        return lines_error(t, rc);
    if (line == NULL)
        return core_fail(t->err, t->errlen, CORE_EFORMAT, "%s: file is empty", t->path);
    size_t hl;
    if (!loader_parse_header(line, len, &t->rows, &t->dim, &hl))
        return core_fail(t->err, t->errlen, CORE_EFORMAT,
                         "%s: line 1: expected a header \"<rows> <dim>\"", t->path);
    if (t->rows < 1 || t->dim < 1)
        return core_fail(t->err, t->errlen, CORE_EFORMAT,
                         "%s: line 1: header says %lld rows of %lld values; both must be >= 1",
                         t->path, (long long)t->rows, (long long)t->dim);
    uint64_t body = t->size - loader_lines_pos(&t->lines);
    uint64_t per_row = (uint64_t)t->dim > body / 2 ? UINT64_MAX : 2 * (uint64_t)t->dim + 1;
    if (t->rows > LOADER_MAX_ROWS || per_row == UINT64_MAX ||
        (uint64_t)t->rows > (body + 1) / per_row)
        return core_fail(t->err, t->errlen,
                         t->rows > LOADER_MAX_ROWS ? CORE_ETOOBIG : CORE_EFORMAT,
                         "%s: line 1: header says %lld rows of %lld values, more than the "
                         "%llu-byte file can hold (truncated file or wrong header)",
                         t->path, (long long)t->rows, (long long)t->dim,
                         (unsigned long long)t->size);
    t->first_row_line = 2;
    return CORE_OK;
}

/* GloVe: no header, so a first pass counts the non-blank lines and takes the
 * width from the first one. */
static int count_glove(struct text_load *t)
{
    char *line;
    size_t len;
    int rc;
    t->rows = 0;
    t->dim = 0;
    while ((rc = loader_lines_next(&t->lines, &line, &len)) == CORE_OK && line != NULL) {
        len = trim_right(line, len);
        if (len == 0)
            continue;
        if (t->rows == 0) {
            t->dim = count_fields(line) - 1;
            if (t->dim < 1 || is_blank(line[0]))
                return core_fail(t->err, t->errlen, CORE_EFORMAT,
                                 "%s: line %lld: expected \"<token> <values...>\"", t->path,
                                 (long long)t->lines.lineno);
        }
        if (++t->rows > LOADER_MAX_ROWS)
            return core_fail(t->err, t->errlen, CORE_ETOOBIG, "%s: more than %lld rows",
                             t->path, (long long)LOADER_MAX_ROWS);
    }
    if (rc != CORE_OK)
        return lines_error(t, rc);
    if (t->rows == 0)
        return core_fail(t->err, t->errlen, CORE_EFORMAT, "%s: no vectors in file", t->path);
    loader_lines_rewind(&t->lines);
    t->first_row_line = 1;
    return CORE_OK;
}

static int add_token(struct text_load *t, const char *tok, size_t n)
{
    int64_t id;
    int rc = vocab_add(t->vocab, tok, n, &id);
    if (rc == CORE_OK)
        return CORE_OK;
    long long line = (long long)t->lines.lineno;
    if (rc == CORE_EEXISTS)
        return core_fail(t->err, t->errlen, CORE_EFORMAT,
                         "%s: line %lld: duplicated token \"%.*s\" (first on line %lld)",
                         t->path, line, (int)(n > 64 ? 64 : n), tok,
                         (long long)(id + t->first_row_line));
    if (rc == CORE_EINVAL)
        return core_fail(t->err, t->errlen, CORE_EFORMAT,
                         "%s: line %lld: token of %zu bytes (at most %d allowed)", t->path,
                         line, n, VOCAB_MAX_TOKEN_BYTES);
    return core_fail(t->err, t->errlen, rc, "%s: line %lld: cannot add token: %s", t->path,
                     line, core_strerror(rc));
}

static int bad_value(struct text_load *t, int64_t j, const char *p, const char *why)
{
    size_t n = 0;
    while (p[n] != '\0' && !is_blank(p[n]) && n < 40)
        n++;
    return core_fail(t->err, t->errlen, CORE_EFORMAT, "%s: line %lld, value %lld: \"%.*s\" %s",
                     t->path, (long long)t->lines.lineno, (long long)j + 1, (int)n, p, why);
}

/* Parses the dim values after the token into row. */
static int parse_values(struct text_load *t, const char *p, float *row)
{
    for (int64_t j = 0; j < t->dim; j++) {
        while (is_blank(*p))
            p++;
        if (*p == '\0')
            return core_fail(t->err, t->errlen, CORE_EFORMAT,
                             "%s: line %lld: %lld values, expected %lld", t->path,
                             (long long)t->lines.lineno, (long long)j, (long long)t->dim);
        float v;
        const char *q = loader_parse_f32(p, &v);
        if (q == NULL || (*q != '\0' && !is_blank(*q)))
            return bad_value(t, j, p, "is not a number");
        if (!isfinite(v))
            return bad_value(t, j, p, "is not a finite float32 value");
        row[j] = v;
        p = q;
    }
    while (is_blank(*p))
        p++;
    if (*p != '\0')
        return core_fail(t->err, t->errlen, CORE_EFORMAT,
                         "%s: line %lld: %lld values, expected %lld", t->path,
                         (long long)t->lines.lineno, (long long)(t->dim + count_fields(p)),
                         (long long)t->dim);
    return CORE_OK;
}

static int parse_row(struct text_load *t, char *line, int64_t row)
{
    if (is_blank(line[0]))
        return core_fail(t->err, t->errlen, CORE_EFORMAT,
                         "%s: line %lld: starts with a blank instead of a token", t->path,
                         (long long)t->lines.lineno);
    const char *p = line;
    while (*p != '\0' && !is_blank(*p))
        p++;
    int rc = add_token(t, line, (size_t)(p - line));
    if (rc != CORE_OK)
        return rc;
    return parse_values(t, p, matrix_row(t->m, row));
}

static int parse_rows(struct text_load *t, const struct loader_opts *o)
{
    struct loader_progress prog;
    loader_progress_init(&prog, o, t->size);
    int64_t row = 0, blank_line = 0;
    char *line;
    size_t len;
    int rc;
    while ((rc = loader_lines_next(&t->lines, &line, &len)) == CORE_OK && line != NULL) {
        if (memchr(line, '\0', len) != NULL)
            return core_fail(t->err, t->errlen, CORE_EFORMAT,
                             "%s: line %lld: holds a NUL byte (a binary file read as text?)",
                             t->path, (long long)t->lines.lineno);
        if (trim_right(line, len) == 0) {
            if (blank_line == 0)
                blank_line = t->lines.lineno;
            continue;
        }
        if (blank_line != 0)
            return core_fail(t->err, t->errlen, CORE_EFORMAT, "%s: line %lld: empty line",
                             t->path, (long long)blank_line);
        if (row == t->rows)
            return core_fail(t->err, t->errlen, CORE_EFORMAT,
                             "%s: line %lld: more rows than the %lld the header announced",
                             t->path, (long long)t->lines.lineno, (long long)t->rows);
        rc = parse_row(t, line, row);
        if (rc != CORE_OK)
            return rc;
        row++;
        loader_progress_tick(&prog, loader_lines_pos(&t->lines));
    }
    if (rc != CORE_OK)
        return lines_error(t, rc);
    if (row < t->rows)
        return core_fail(t->err, t->errlen, CORE_EFORMAT,
                         "%s: line %lld: file ends after %lld rows; the header announced %lld",
                         t->path, (long long)t->lines.lineno, (long long)row,
                         (long long)t->rows);
    loader_progress_done(&prog);
    return CORE_OK;
}

static int text_load_steps(struct text_load *t, const struct loader_opts *o)
{
    int rc = t->has_header ? read_header(t) : count_glove(t);
    if (rc != CORE_OK)
        return rc;
    rc = matrix_init(t->m, t->rows, t->dim);
    if (rc != CORE_OK)
        return core_fail(t->err, t->errlen, rc, "%s: cannot allocate %lld x %lld: %s", t->path,
                         (long long)t->rows, (long long)t->dim, core_strerror(rc));
    rc = vocab_new(&t->vocab, (size_t)t->rows);
    if (rc != CORE_OK)
        return core_fail(t->err, t->errlen, rc, "%s: cannot allocate the vocabulary", t->path);
    return parse_rows(t, o);
}

int w2v_text_load(const char *path, bool has_header, const struct loader_opts *o,
                  struct matrix *m, struct vocab **vocab, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    *vocab = NULL;
    struct text_load t = {.path = path, .has_header = has_header, .m = m,
                          .err = err, .errlen = errlen};
    int rc = loader_open(path, &t.fd, &t.size, err, errlen);
    if (rc != CORE_OK)
        return rc;
    rc = loader_lines_init(&t.lines, t.fd);
    if (rc == CORE_OK)
        rc = text_load_steps(&t, o);
    else
        rc = core_fail(err, errlen, rc, "%s: cannot allocate a read buffer", path);
    loader_lines_deinit(&t.lines);
    close(t.fd);
    if (rc != CORE_OK) {
        matrix_deinit(m);
        vocab_free(t.vocab);
        return rc;
    }
    *vocab = t.vocab;
    return CORE_OK;
}
