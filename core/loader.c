/* loader.c - format names, format detection, the loader_load dispatcher and
 * the helpers every reader shares (see loader_internal.h). */
#include "loader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "loader_internal.h"

static const struct {
    enum loader_format f;
    const char *name;
} format_names[] = {
    {LOADER_AUTO, "auto"},
    {LOADER_WORD2VEC, "word2vec"},
    {LOADER_WORD2VEC_BINARY, "word2vec_binary"},
    {LOADER_GLOVE, "glove"},
    {LOADER_NPY, "npy"},
    {LOADER_SAFETENSORS, "safetensors"},
    {LOADER_SNAPSHOT, "snapshot"},
};

#define NFORMATS (sizeof(format_names) / sizeof(format_names[0]))

bool loader_format_parse(const char *name, enum loader_format *f)
{
    if (name == NULL)
        return false;
    for (size_t i = 0; i < NFORMATS; i++) {
        if (strcmp(name, format_names[i].name) == 0) {
            *f = format_names[i].f;
            return true;
        }
    }
    return false;
}

const char *loader_format_name(enum loader_format f)
{
    for (size_t i = 0; i < NFORMATS; i++) {
        if (format_names[i].f == f)
            return format_names[i].name;
    }
    return "unknown";
}

/* ---- shared helpers ---------------------------------------------------- */

int loader_open(const char *path, int *fd, uint64_t *size, char *err, size_t errlen)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        int e = errno;
        return core_fail(err, errlen, e == ENOENT ? CORE_ENOTFOUND : CORE_EIO,
                         "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(*fd, &st) != 0) {
        int e = errno;
        close(*fd);
        *fd = -1;
        return core_fail(err, errlen, CORE_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(*fd);
        *fd = -1;
        return core_fail(err, errlen, CORE_EINVAL, "%s: not a regular file", path);
    }
    *size = (uint64_t)st.st_size;
    return CORE_OK;
}

int64_t loader_pread(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        /* large reads are split so a single call never exceeds what the
         * kernel transfers at once (about 2 GB on Linux) */
        size_t want = n - got < (1u << 30) ? n - got : (1u << 30);
        ssize_t r = pread(fd, (char *)buf + got, want, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (int64_t)got;
}

void loader_progress_init(struct loader_progress *p, const struct loader_opts *o,
                          uint64_t total)
{
    p->cb = o != NULL ? o->progress : NULL;
    p->ud = o != NULL ? o->progress_ud : NULL;
    p->total = total;
    p->next = LOADER_PROGRESS_BYTES;
}

void loader_progress_done(struct loader_progress *p)
{
    if (p->cb != NULL)
        p->cb(p->ud, p->total, p->total);
}

/* True when one of the 256 floats at v is NaN or infinite. A fixed count
 * and a max over the magnitude bits let the compiler vectorize it at -O2:
 * checking is then a small part of a float32 load. */
static bool block_has_nonfinite(const float *v)
{
    uint32_t top = 0;
    for (int i = 0; i < 256; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof(u));
        u &= 0x7fffffffu;
        top = u > top ? u : top;
    }
    return top >= 0x7f800000u;
}

int64_t loader_find_nonfinite(const float *v, int64_t n)
{
    int64_t i = 0;
    for (; i + 256 <= n; i += 256) {
        if (block_has_nonfinite(v + i))
            break;
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], sizeof(u));
        if ((u & 0x7f800000u) == 0x7f800000u)
            return i;
    }
    return -1;
}

float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24 is exact in float */
        float mag = (float)mant * 0x1p-24f;
        memcpy(&bits, &mag, sizeof(bits));
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf, or NaN keeping its payload */
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

float bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* ---- detection ---------------------------------------------------------- */

/* Bytes of the file's start that detection looks at: a header line and
 * enough of the first row to tell text numbers from raw floats. */
#define DETECT_BYTES 4096

/* Reads an optionally signed decimal integer, saturating instead of
 * overflowing so an absurd header is reported as too large, not wrapped. */
static const char *scan_int(const char *p, const char *end, int64_t *v)
{
    bool neg = false;
    if (p < end && (*p == '-' || *p == '+'))
        neg = *p++ == '-';
    if (p >= end || *p < '0' || *p > '9')
        return NULL;
    int64_t x = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
        x = x > (INT64_MAX - 9) / 10 ? INT64_MAX : x * 10 + (*p - '0');
    *v = neg ? -x : x;
    return p;
}

bool loader_parse_header(const char *s, size_t n, int64_t *rows, int64_t *dim, size_t *len)
{
    const char *p = s, *end = s + n;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    p = scan_int(p, end, rows);
    if (p == NULL || p >= end || (*p != ' ' && *p != '\t'))
        return false;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    p = scan_int(p, end, dim);
    if (p == NULL)
        return false;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
        p++;
    if (p < end && *p != '\n')
        return false;
    *len = (size_t)(p - s) + (p < end);
    return true;
}

/* After a word2vec header: true when the first row reads as text ("token
 * 0.1 -0.2 ...\n"), false when the bytes after the token are raw floats.
 * Text rows hold only printable ASCII after the token; a row of float32
 * bytes almost surely holds a control or high byte somewhere. */
static bool first_row_is_text(const char *p, size_t n)
{
    const char *end = p + n;
    const char *sp = memchr(p, ' ', n);
    if (sp == NULL)
        return true; /* no token end in sight: cannot be binary rows */
    bool digit = false;
    for (const char *q = sp + 1; q < end && *q != '\n'; q++) {
        unsigned char c = (unsigned char)*q;
        if ((c < 0x20 || c > 0x7e) && c != '\t' && c != '\r')
            return false;
        digit |= c >= '0' && c <= '9';
    }
    return digit;
}

static bool looks_safetensors(const unsigned char *h, size_t n, uint64_t size)
{
    if (n < 9 || size < 9)
        return false;
    uint64_t len = 0;
    for (int i = 7; i >= 0; i--)
        len = len << 8 | h[i];
    return h[8] == '{' && len <= size - 8;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int loader_detect(const char *path, enum loader_format *f, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        int e = errno;
        return core_fail(err, errlen, e == ENOENT ? CORE_ENOTFOUND : CORE_EIO,
                         "%s: cannot open: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        *f = LOADER_SNAPSHOT;
        return CORE_OK;
    }
    int fd;
    uint64_t size;
    int rc = loader_open(path, &fd, &size, err, errlen);
    if (rc != CORE_OK)
        return rc;
    char buf[DETECT_BYTES];
    int64_t n = loader_pread(fd, buf, sizeof(buf), 0);
    int e = errno;
    close(fd);
    if (n < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: read error: %s", path, strerror(e));
    if (n == 0)
        return core_fail(err, errlen, CORE_EFORMAT, "%s: file is empty", path);
    size_t len = (size_t)n;
    int64_t rows, dim;
    size_t hdr;
    if (len >= 6 && memcmp(buf, "\x93NUMPY", 6) == 0)
        *f = LOADER_NPY;
    else if (looks_safetensors((const unsigned char *)buf, len, size))
        *f = LOADER_SAFETENSORS;
    else if (has_suffix(path, ".npy"))
        *f = LOADER_NPY; /* without its magic: let the npy reader say so */
    else if (has_suffix(path, ".safetensors"))
        *f = LOADER_SAFETENSORS;
    else if (loader_parse_header(buf, len, &rows, &dim, &hdr))
        *f = first_row_is_text(buf + hdr, len - hdr) ? LOADER_WORD2VEC : LOADER_WORD2VEC_BINARY;
    else
        *f = LOADER_GLOVE;
    return CORE_OK;
}

/* ---- dispatch ----------------------------------------------------------- */

static int attach_vocab(const char *path, const struct loader_opts *o, struct matrix *m,
                        struct vocab **vocab, char *err, size_t errlen)
{
    if (o->vocab_path == NULL)
        return CORE_OK;
    int rc = vocab_load_file(vocab, o->vocab_path, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (vocab_size(*vocab) != m->rows) {
        rc = core_fail(err, errlen, CORE_EINVAL,
                       "%s: vocabulary has %lld tokens but %s has %lld rows", o->vocab_path,
                       (long long)vocab_size(*vocab), path, (long long)m->rows);
        vocab_free(*vocab);
        *vocab = NULL;
    }
    return rc;
}

int loader_load(const char *path, const struct loader_opts *opts, struct matrix *m,
                struct vocab **vocab, char *err, size_t errlen)
{
    static const struct loader_opts defaults = {.format = LOADER_AUTO};
    const struct loader_opts *o = opts != NULL ? opts : &defaults;
    memset(m, 0, sizeof(*m));
    *vocab = NULL;
    enum loader_format f = o->format;
    if (f == LOADER_AUTO) {
        int rc = loader_detect(path, &f, err, errlen);
        if (rc != CORE_OK)
            return rc;
    }
    bool tokens_in_file = f == LOADER_WORD2VEC || f == LOADER_WORD2VEC_BINARY ||
                          f == LOADER_GLOVE;
    if (tokens_in_file && o->vocab_path != NULL)
        return core_fail(err, errlen, CORE_EINVAL,
                         "%s: a vocab file is only for npy and safetensors; this %s file "
                         "carries its own tokens",
                         path, loader_format_name(f));
    int rc;
    switch (f) {
    case LOADER_WORD2VEC:
        return w2v_text_load(path, true, o, m, vocab, err, errlen);
    case LOADER_GLOVE:
        return w2v_text_load(path, false, o, m, vocab, err, errlen);
    case LOADER_WORD2VEC_BINARY:
        return w2v_bin_load(path, o, m, vocab, err, errlen);
    case LOADER_NPY:
        rc = npy_load(path, o, m, err, errlen);
        break;
    case LOADER_SAFETENSORS:
        rc = safetensors_load(path, o, m, err, errlen);
        break;
    case LOADER_SNAPSHOT:
        return core_fail(err, errlen, CORE_EUNSUPPORTED,
                         "%s: snapshot directories are loaded by the snapshot module", path);
    default:
        return core_fail(err, errlen, CORE_EINVAL, "%s: unknown format %d", path, (int)f);
    }
    if (rc == CORE_OK)
        rc = attach_vocab(path, o, m, vocab, err, errlen);
    if (rc != CORE_OK)
        matrix_deinit(m);
    return rc;
}

/* ---- dense arrays (.npy, safetensors) ----------------------------------- */

/* Bytes converted per bounce-buffer pass, and read per direct chunk. */
#define DENSE_CHUNK_BYTES (8u << 20)
#define DENSE_DIRECT_CHUNK_BYTES (4u << 20)

size_t loader_dtype_size(enum loader_dtype t)
{
    switch (t) {
    case LOADER_F16:
    case LOADER_BF16:
        return 2;
    case LOADER_F32:
        return 4;
    case LOADER_F64:
        return 8;
    }
    return 0;
}

bool loader_host_big_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 0;
}

void loader_swap_bytes(void *p, size_t n, size_t esize)
{
    unsigned char *b = p;
    for (size_t i = 0; i + esize <= n; i += esize) {
        for (size_t a = 0, z = esize - 1; a < z; a++, z--) {
            unsigned char t = b[i + a];
            b[i + a] = b[i + z];
            b[i + z] = t;
        }
    }
}

/* Converts one row of file bytes (already in host byte order) to floats. */
static void convert_row(enum loader_dtype t, const unsigned char *src, float *dst, int64_t dim)
{
    switch (t) {
    case LOADER_F32:
        memcpy(dst, src, (size_t)dim * 4);
        break;
    case LOADER_F64:
        for (int64_t j = 0; j < dim; j++) {
            double d;
            memcpy(&d, src + 8 * j, 8);
            dst[j] = (float)d;
        }
        break;
    case LOADER_F16:
        for (int64_t j = 0; j < dim; j++) {
            uint16_t u;
            memcpy(&u, src + 2 * j, 2);
            dst[j] = half_to_float(u);
        }
        break;
    case LOADER_BF16:
        for (int64_t j = 0; j < dim; j++) {
            uint16_t u;
            memcpy(&u, src + 2 * j, 2);
            dst[j] = bf16_to_float(u);
        }
        break;
    }
}

struct dense_read {
    const char *path;
    int fd;
    uint64_t off;
    enum loader_dtype t;
    size_t esize;
    bool swap;
    bool check; /* refuse non-finite values */
    struct matrix *m;
    struct loader_progress *prog;
    char *err;
    size_t errlen;
};

static int dense_nonfinite(const struct dense_read *d, int64_t row, int64_t col)
{
    uint64_t at = d->off + ((uint64_t)row * (uint64_t)d->m->dim + (uint64_t)col) * d->esize;
    return core_fail(d->err, d->errlen, CORE_EFORMAT,
                     "%s: offset %llu: element [%lld, %lld] is not finite as float32", d->path,
                     (unsigned long long)at, (long long)row, (long long)col);
}

static int dense_short(const struct dense_read *d, uint64_t at, int64_t got)
{
    return core_fail(d->err, d->errlen, got < 0 ? CORE_EIO : CORE_EFORMAT, "%s: offset %llu: %s",
                     d->path, (unsigned long long)at,
                     got < 0 ? strerror(errno) : "the file ends inside the data");
}

/* The file's bytes are the matrix's bytes: read() them straight in, chunk
 * by chunk, checking each chunk (when asked) for non-finite values while it
 * is still in the cache. */
static int dense_direct(const struct dense_read *d)
{
    struct matrix *m = d->m;
    uint64_t total = (uint64_t)m->rows * (uint64_t)m->dim * 4, done = 0;
    char *dst = (char *)m->data;
    while (done < total) {
        size_t n = total - done < DENSE_DIRECT_CHUNK_BYTES ? (size_t)(total - done)
                                                           : DENSE_DIRECT_CHUNK_BYTES;
        int64_t got = loader_pread(d->fd, dst + done, n, d->off + done);
        if (got != (int64_t)n)
            return dense_short(d, d->off + done + (got > 0 ? (uint64_t)got : 0), got);
        const float *chunk = (const float *)(dst + done);
        int64_t bad = d->check ? loader_find_nonfinite(chunk, (int64_t)(n / 4)) : -1;
        if (bad >= 0) {
            int64_t at = (int64_t)(done / 4) + bad;
            return dense_nonfinite(d, at / m->dim, at % m->dim);
        }
        done += n;
        loader_progress_tick(d->prog, d->off + done);
    }
    return CORE_OK;
}

/* Chunks of whole rows through a bounce buffer, converted into the rows. */
static int dense_converted(const struct dense_read *d)
{
    struct matrix *m = d->m;
    size_t row_bytes = (size_t)m->dim * d->esize;
    int64_t per_chunk = row_bytes >= DENSE_CHUNK_BYTES ? 1 : (int64_t)(DENSE_CHUNK_BYTES / row_bytes);
    if (per_chunk > m->rows)
        per_chunk = m->rows;
    unsigned char *buf = malloc((size_t)per_chunk * row_bytes);
    if (buf == NULL)
        return core_fail(d->err, d->errlen, CORE_ENOMEM, "%s: out of memory", d->path);
    int rc = CORE_OK;
    for (int64_t r = 0; r < m->rows && rc == CORE_OK; r += per_chunk) {
        int64_t count = m->rows - r < per_chunk ? m->rows - r : per_chunk;
        size_t n = (size_t)count * row_bytes;
        uint64_t at = d->off + (uint64_t)r * row_bytes;
        int64_t got = loader_pread(d->fd, buf, n, at);
        if (got != (int64_t)n) {
            rc = dense_short(d, at + (got > 0 ? (uint64_t)got : 0), got);
            break;
        }
        if (d->swap)
            loader_swap_bytes(buf, n, d->esize);
        for (int64_t i = 0; i < count && rc == CORE_OK; i++) {
            float *row = matrix_row(m, r + i);
            convert_row(d->t, buf + (size_t)i * row_bytes, row, m->dim);
            int64_t j = d->check ? loader_find_nonfinite(row, m->dim) : -1;
            if (j >= 0)
                rc = dense_nonfinite(d, r + i, j);
        }
        loader_progress_tick(d->prog, at + n);
    }
    free(buf);
    return rc;
}

int loader_read_dense(const char *path, int fd, uint64_t off, enum loader_dtype t,
                      bool big_endian, enum loader_finite finite, struct matrix *m,
                      struct loader_progress *prog, char *err, size_t errlen)
{
    struct dense_read d = {
        .path = path, .fd = fd, .off = off, .t = t, .esize = loader_dtype_size(t),
        .swap = big_endian != loader_host_big_endian() && loader_dtype_size(t) > 1,
        .check = finite == LOADER_FINITE_ONLY,
        .m = m, .prog = prog, .err = err, .errlen = errlen,
    };
    bool direct = t == LOADER_F32 && !d.swap && m->stride == m->dim;
    return direct ? dense_direct(&d) : dense_converted(&d);
}
