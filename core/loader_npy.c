/* loader_npy.c - numpy .npy files (format versions 1, 2 and 3): reading a
 * 2-D float32/float64/float16 C-order array into a matrix, and writing a
 * matrix as float32 .npy (for snapshots).
 *
 * The header is a Python dict literal; we read exactly the three keys numpy
 * writes and refuse anything else, as numpy does. The data is read by
 * loader_read_dense: float32 straight into the matrix, other dtypes
 * converted exactly; big-endian ('>') arrays are byte-swapped. Pretrained
 * files (npy_load) must be finite; snapshot files (npy_load_exact) keep
 * whatever training made of them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "loader_internal.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
/* Bigger headers than this are not numpy's: a 2-D header is about 128 B. */
#define NPY_MAX_HEADER (1u << 20)
/* Rows gathered per write() by npy_write_fd for padded rows. */
#define NPY_WRITE_CHUNK_BYTES (8u << 20)

struct npy_header {
    enum loader_dtype dtype;
    size_t esize;
    bool big_endian;
    bool has_descr, has_fortran, has_shape;
    bool fortran;
    int ndim;
    int64_t shape[8];
    uint64_t data_off;
};

/* ---- header dict -------------------------------------------------------- */

struct dict_cursor {
    const char *p, *end;
};

static void skip_ws(struct dict_cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool eat(struct dict_cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes (numpy never needs any here). */
static bool read_str(struct dict_cursor *c, const char **s, size_t *n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return false;
    char q = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != q && *c->p != '\\')
        c->p++;
    if (c->p >= c->end || *c->p != q)
        return false;
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return true;
}

static bool read_word(struct dict_cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) {
        c->p += n;
        return true;
    }
    return false;
}

/* "(3, 4)", "(3,)", "()": at most 8 dimensions kept, the count is exact. */
static bool read_shape(struct dict_cursor *c, struct npy_header *h)
{
    if (!eat(c, '('))
        return false;
    h->ndim = 0;
    for (;;) {
        if (eat(c, ')'))
            return true;
        skip_ws(c);
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return false;
        int64_t v = 0;
        for (; c->p < c->end && *c->p >= '0' && *c->p <= '9'; c->p++)
            v = v > (INT64_MAX - 9) / 10 ? INT64_MAX : v * 10 + (*c->p - '0');
        if (c->p < c->end && *c->p == 'L') /* Python 2 longs */
            c->p++;
        if (h->ndim < 8)
            h->shape[h->ndim] = v;
        h->ndim++;
        if (!eat(c, ',')) {
            return eat(c, ')');
        }
    }
}

static int parse_descr(const char *path, const char *s, size_t n, struct npy_header *h,
                       char *err, size_t errlen)
{
    static const struct {
        const char *code;
        enum loader_dtype t;
        size_t size;
    } kinds[] = {{"f2", LOADER_F16, 2}, {"f4", LOADER_F32, 4}, {"f8", LOADER_F64, 8}};
    if (n == 3 && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=')) {
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
            if (memcmp(s + 1, kinds[i].code, 2) == 0) {
                h->dtype = kinds[i].t;
                h->esize = kinds[i].size;
                h->big_endian = s[0] == '>';
                return CORE_OK;
            }
        }
    }
    return core_fail(err, errlen, CORE_EUNSUPPORTED,
                     "%s: dtype '%.*s' is not supported: float32 ('<f4'), float64 ('<f8') or "
                     "float16 ('<f2') expected",
                     path, (int)(n > 16 ? 16 : n), s);
}

static int bad_dict(const char *path, const struct dict_cursor *c, const char *start,
                    uint64_t base, const char *why, char *err, size_t errlen)
{
    return core_fail(err, errlen, CORE_EFORMAT, "%s: offset %llu: header dict: %s", path,
                     (unsigned long long)(base + (uint64_t)(c->p - start)), why);
}

/* One "'key': value" entry of the dict. */
static int parse_entry(const char *path, struct dict_cursor *c, const char *start,
                       uint64_t base, struct npy_header *h, char *err, size_t errlen)
{
    const char *k;
    size_t kn;
    if (!read_str(c, &k, &kn) || !eat(c, ':'))
        return bad_dict(path, c, start, base, "expected 'key': value", err, errlen);
    if (kn == 5 && memcmp(k, "descr", 5) == 0 && !h->has_descr) {
        const char *s;
        size_t n;
        if (!read_str(c, &s, &n))
            return bad_dict(path, c, start, base,
                            "'descr' is not a plain dtype string (structured arrays are not "
                            "supported)", err, errlen);
        h->has_descr = true;
        return parse_descr(path, s, n, h, err, errlen);
    }
    if (kn == 13 && memcmp(k, "fortran_order", 13) == 0 && !h->has_fortran) {
        h->has_fortran = true;
        if (read_word(c, "True"))
            h->fortran = true;
        else if (!read_word(c, "False"))
            return bad_dict(path, c, start, base, "'fortran_order' is not True or False",
                            err, errlen);
        return CORE_OK;
    }
    if (kn == 5 && memcmp(k, "shape", 5) == 0 && !h->has_shape) {
        h->has_shape = true;
        if (!read_shape(c, h))
            return bad_dict(path, c, start, base, "'shape' is not a tuple of integers", err,
                            errlen);
        return CORE_OK;
    }
    return bad_dict(path, c, start, base, "unexpected or repeated key", err, errlen);
}

static int parse_dict(const char *path, const char *s, size_t n, uint64_t base,
                      struct npy_header *h, char *err, size_t errlen)
{
    struct dict_cursor c = {s, s + n};
    if (!eat(&c, '{'))
        return bad_dict(path, &c, s, base, "does not start with '{'", err, errlen);
    while (!eat(&c, '}')) {
        int rc = parse_entry(path, &c, s, base, h, err, errlen);
        if (rc != CORE_OK)
            return rc;
        if (!eat(&c, ',')) {
            if (!eat(&c, '}'))
                return bad_dict(path, &c, s, base, "expected ',' or '}'", err, errlen);
            break;
        }
    }
    skip_ws(&c);
    if (c.p != c.end)
        return bad_dict(path, &c, s, base, "bytes after the closing '}'", err, errlen);
    if (!h->has_descr || !h->has_fortran || !h->has_shape)
        return bad_dict(path, &c, s, base, "needs 'descr', 'fortran_order' and 'shape'", err,
                        errlen);
    return CORE_OK;
}

/* ---- header checks ------------------------------------------------------ */

/* Reads the magic, version, header length and dict. */
static int read_header(const char *path, int fd, uint64_t size, struct npy_header *h,
                       char *err, size_t errlen)
{
    unsigned char pre[12];
    int64_t n = loader_pread(fd, pre, sizeof(pre), 0);
    if (n < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: read error: %s", path, strerror(errno));
    if (n < 10 || memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return core_fail(err, errlen, CORE_EFORMAT,
                         "%s: offset 0: not a .npy file (no \\x93NUMPY magic)", path);
    unsigned major = pre[6];
    uint64_t hlen, hstart;
    if (major == 1) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        hstart = 10;
    } else if ((major == 2 || major == 3) && n == 12) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
               (uint64_t)pre[11] << 24;
        hstart = 12;
    } else {
        return core_fail(err, errlen, CORE_EUNSUPPORTED,
                         "%s: offset 6: .npy format version %u.%u is not supported", path, major,
                         (unsigned)pre[7]);
    }
    if (hlen > NPY_MAX_HEADER || hstart + hlen > size)
        return core_fail(err, errlen, CORE_EFORMAT,
                         "%s: offset 8: header length %llu runs past the end of the %llu-byte "
                         "file",
                         path, (unsigned long long)hlen, (unsigned long long)size);
    char *dict = malloc(hlen + 1);
    if (dict == NULL)
        return core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", path);
    int rc = CORE_OK;
    if (loader_pread(fd, dict, hlen, hstart) != (int64_t)hlen)
        rc = core_fail(err, errlen, CORE_EIO, "%s: read error in the header", path);
    else
        rc = parse_dict(path, dict, hlen, hstart, h, err, errlen);
    free(dict);
    h->data_off = hstart + hlen;
    return rc;
}

static int check_shape(const char *path, uint64_t size, struct npy_header *h, char *err,
                       size_t errlen)
{
    if (h->fortran)
        return core_fail(err, errlen, CORE_EUNSUPPORTED,
                         "%s: fortran_order is True; save a C-order array "
                         "(np.ascontiguousarray)", path);
    if (h->ndim != 2)
        return core_fail(err, errlen, CORE_EUNSUPPORTED,
                         "%s: array is %d-D; a 2-D (rows, dim) array is expected", path, h->ndim);
    int64_t rows = h->shape[0], dim = h->shape[1];
    if (rows < 1 || dim < 1)
        return core_fail(err, errlen, CORE_EFORMAT, "%s: shape (%lld, %lld) is empty", path,
                         (long long)rows, (long long)dim);
    if (rows > LOADER_MAX_ROWS)
        return core_fail(err, errlen, CORE_ETOOBIG, "%s: %lld rows, more than %lld", path,
                         (long long)rows, (long long)LOADER_MAX_ROWS);
    uint64_t avail = size - h->data_off;
    uint64_t row_bytes = (uint64_t)dim > avail / h->esize ? UINT64_MAX : (uint64_t)dim * h->esize;
    if (row_bytes == UINT64_MAX || (uint64_t)rows > avail / row_bytes)
        return core_fail(err, errlen, CORE_EFORMAT,
                         "%s: offset %llu: data shorter than shape (%lld, %lld) needs: the file "
                         "holds %llu bytes of data",
                         path, (unsigned long long)h->data_off, (long long)rows, (long long)dim,
                         (unsigned long long)avail);
    return CORE_OK;
}

static int load(const char *path, const struct loader_opts *o, enum loader_finite finite,
                struct matrix *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    int fd;
    uint64_t size;
    int rc = loader_open(path, &fd, &size, err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct npy_header h = {0};
    rc = read_header(path, fd, size, &h, err, errlen);
    if (rc == CORE_OK)
        rc = check_shape(path, size, &h, err, errlen);
    if (rc == CORE_OK) {
        rc = matrix_init(m, h.shape[0], h.shape[1]);
        if (rc != CORE_OK)
            rc = core_fail(err, errlen, rc, "%s: cannot allocate %lld x %lld: %s", path,
                           (long long)h.shape[0], (long long)h.shape[1], core_strerror(rc));
    }
    if (rc == CORE_OK) {
        struct loader_progress prog;
        loader_progress_init(&prog, o, size);
        rc = loader_read_dense(path, fd, h.data_off, h.dtype, h.big_endian, finite, m, &prog,
                               err, errlen);
        if (rc == CORE_OK)
            loader_progress_done(&prog);
    }
    close(fd);
    if (rc != CORE_OK)
        matrix_deinit(m);
    return rc;
}

int npy_load(const char *path, const struct loader_opts *o, struct matrix *m, char *err,
             size_t errlen)
{
    return load(path, o, LOADER_FINITE_ONLY, m, err, errlen);
}

int npy_load_exact(const char *path, const struct loader_opts *o, struct matrix *m, char *err,
                   size_t errlen)
{
    return load(path, o, LOADER_ANY_BITS, m, err, errlen);
}

/* ---- writing ------------------------------------------------------------ */

static int write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return CORE_EIO;
        }
        b += w;
        n -= (size_t)w;
    }
    return CORE_OK;
}

/* Version 1.0 header padded with spaces so the data starts on a multiple of
 * 64 bytes, as numpy writes it. */
static int write_header(int fd, int64_t rows, int64_t dim)
{
    char dict[160];
    int n = snprintf(dict, sizeof(dict),
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)rows, (long long)dim);
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    char head[256];
    memcpy(head, NPY_MAGIC, NPY_MAGIC_LEN);
    head[6] = 1;
    head[7] = 0;
    size_t hlen = padded - 10;
    head[8] = (char)(hlen & 0xff);
    head[9] = (char)(hlen >> 8);
    memcpy(head + 10, dict, (size_t)n);
    memset(head + 10 + n, ' ', padded - total);
    head[padded - 1] = '\n';
    return write_all(fd, head, padded);
}

int npy_write_fd(int fd, const float *data, int64_t rows, int64_t dim, int64_t stride)
{
    if (fd < 0 || rows < 0 || dim < 1 || stride < dim || (rows > 0 && data == NULL))
        return CORE_EINVAL;
    int rc = write_header(fd, rows, dim);
    if (rc != CORE_OK)
        return rc;
    size_t row_bytes = (size_t)dim * sizeof(float);
    if (stride == dim && !loader_host_big_endian())
        return write_all(fd, data, (size_t)rows * row_bytes);
    /* padded rows: gather whole rows into a buffer, then write it */
    int64_t per_chunk = row_bytes >= NPY_WRITE_CHUNK_BYTES
                            ? 1
                            : (int64_t)(NPY_WRITE_CHUNK_BYTES / row_bytes);
    if (per_chunk > rows)
        per_chunk = rows > 0 ? rows : 1;
    char *buf = malloc((size_t)per_chunk * row_bytes);
    if (buf == NULL)
        return CORE_ENOMEM;
    for (int64_t r = 0; r < rows && rc == CORE_OK; r += per_chunk) {
        int64_t count = rows - r < per_chunk ? rows - r : per_chunk;
        for (int64_t i = 0; i < count; i++)
            memcpy(buf + (size_t)i * row_bytes, data + (r + i) * stride, row_bytes);
        if (loader_host_big_endian())
            loader_swap_bytes(buf, (size_t)count * row_bytes, 4);
        rc = write_all(fd, buf, (size_t)count * row_bytes);
    }
    free(buf);
    return rc;
}
