/* loader_w2vbin.c - word2vec binary files, as gensim and word2vec.c write
 * them: a text header line "<rows> <dim>\n", then per row the token bytes, a
 * space and dim little-endian float32 values; word2vec.c adds a "\n" after
 * each row, gensim does not, so one "\n" before a token is skipped. Errors
 * name the byte offset. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "loader_internal.h"

#define BIN_BUF_BYTES (4u << 20)

/* A forward-only buffered reader over the file. */
struct bin_reader {
    int fd;
    char *buf;
    size_t pos, len;
    uint64_t offset; /* file offset of buf[0] */
    bool eof;
};

static inline uint64_t br_tell(const struct bin_reader *r)
{
    return r->offset + r->pos;
}

static inline size_t br_avail(const struct bin_reader *r)
{
    return r->len - r->pos;
}

/* Makes at least need bytes available unless the file ends first. */
static int br_ensure(struct bin_reader *r, size_t need)
{
    while (br_avail(r) < need && !r->eof) {
        if (r->pos > 0) {
            memmove(r->buf, r->buf + r->pos, r->len - r->pos);
            r->offset += r->pos;
            r->len -= r->pos;
            r->pos = 0;
        }
        int64_t n = loader_pread(r->fd, r->buf + r->len, BIN_BUF_BYTES - r->len,
                                 r->offset + r->len);
        if (n < 0)
            return CORE_EIO;
        if (n == 0)
            r->eof = true;
        r->len += (size_t)n;
    }
    return CORE_OK;
}

/* Copies n bytes to dst; returns the bytes copied (fewer at end of file) or
 * -1 on a read error. */
static int64_t br_read(struct bin_reader *r, void *dst, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (br_avail(r) == 0) {
            if (br_ensure(r, 1) != CORE_OK)
                return -1;
            if (br_avail(r) == 0)
                break;
        }
        size_t take = br_avail(r) < n - got ? br_avail(r) : n - got;
        memcpy((char *)dst + got, r->buf + r->pos, take);
        r->pos += take;
        got += take;
    }
    return (int64_t)got;
}

struct bin_load {
    const char *path;
    uint64_t size;
    struct bin_reader r;
    int64_t rows, dim;
    struct matrix *m;
    struct vocab *vocab;
    char *err;
    size_t errlen;
};

static int read_error(struct bin_load *b)
{
    return core_fail(b->err, b->errlen, CORE_EIO, "%s: offset %llu: read error: %s", b->path,
                     (unsigned long long)br_tell(&b->r), strerror(errno));
}

/* The header line, checked against what the file could hold (each row needs
 * a token byte, a space and 4 bytes per value) before anything is
 * allocated. */
static int read_header(struct bin_load *b)
{
    if (br_ensure(&b->r, 128) != CORE_OK)
        return read_error(b);
    if (br_avail(&b->r) == 0)
        return core_fail(b->err, b->errlen, CORE_EFORMAT, "%s: file is empty", b->path);
    const char *s = b->r.buf + b->r.pos;
    const char *nl = memchr(s, '\n', br_avail(&b->r));
    size_t hl;
    if (nl == NULL || !loader_parse_header(s, (size_t)(nl + 1 - s), &b->rows, &b->dim, &hl))
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset 0: expected a header line \"<rows> <dim>\"", b->path);
    b->r.pos += hl;
    if (b->rows < 1 || b->dim < 1)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset 0: header says %lld rows of %lld values; both must be >= 1",
                         b->path, (long long)b->rows, (long long)b->dim);
    uint64_t body = b->size - hl;
    uint64_t per_row = (uint64_t)b->dim > body / 4 ? UINT64_MAX : 4 * (uint64_t)b->dim + 2;
    if (b->rows > LOADER_MAX_ROWS || per_row == UINT64_MAX ||
        (uint64_t)b->rows > body / per_row)
        return core_fail(b->err, b->errlen,
                         b->rows > LOADER_MAX_ROWS ? CORE_ETOOBIG : CORE_EFORMAT,
                         "%s: offset 0: header says %lld rows of %lld float32 values, more than "
                         "the %llu-byte file can hold (truncated file or wrong header)",
                         b->path, (long long)b->rows, (long long)b->dim,
                         (unsigned long long)b->size);
    return CORE_OK;
}

/* One token: an optional "\n" left by the previous row, then bytes up to a
 * space. */
static int read_token(struct bin_load *b, int64_t row)
{
    if (br_ensure(&b->r, VOCAB_MAX_TOKEN_BYTES + 2) != CORE_OK)
        return read_error(b);
    if (br_avail(&b->r) > 0 && b->r.buf[b->r.pos] == '\n')
        b->r.pos++;
    uint64_t at = br_tell(&b->r);
    size_t avail = br_avail(&b->r);
    if (avail == 0)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: file ends after %lld rows; the header announced %lld",
                         b->path, (unsigned long long)at, (long long)row, (long long)b->rows);
    const char *s = b->r.buf + b->r.pos;
    size_t look = avail < VOCAB_MAX_TOKEN_BYTES + 1 ? avail : VOCAB_MAX_TOKEN_BYTES + 1;
    const char *sp = memchr(s, ' ', look);
    if (sp == NULL && avail <= VOCAB_MAX_TOKEN_BYTES)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: row %lld: the file ends inside the token", b->path,
                         (unsigned long long)at, (long long)row);
    if (sp == NULL)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: row %lld: no space ending the token within %d bytes",
                         b->path, (unsigned long long)at, (long long)row, VOCAB_MAX_TOKEN_BYTES);
    size_t n = (size_t)(sp - s);
    int64_t id;
    int rc = vocab_add(b->vocab, s, n, &id);
    if (rc == CORE_EEXISTS)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: row %lld: duplicated token \"%.*s\" (first in row %lld)",
                         b->path, (unsigned long long)at, (long long)row,
                         (int)(n > 64 ? 64 : n), s, (long long)id);
    if (rc == CORE_EINVAL)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: row %lld: token of %zu bytes is empty or holds a "
                         "newline",
                         b->path, (unsigned long long)at, (long long)row, n);
    if (rc != CORE_OK)
        return core_fail(b->err, b->errlen, rc, "%s: offset %llu: cannot add token: %s", b->path,
                         (unsigned long long)at, core_strerror(rc));
    b->r.pos += n + 1;
    return CORE_OK;
}

static int read_values(struct bin_load *b, int64_t row)
{
    float *dst = matrix_row(b->m, row);
    uint64_t at = br_tell(&b->r);
    size_t want = (size_t)b->dim * sizeof(float);
    int64_t got = br_read(&b->r, dst, want);
    if (got < 0)
        return read_error(b);
    if ((size_t)got < want)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: row %lld needs %zu bytes of float32 values, the file "
                         "ends after %lld",
                         b->path, (unsigned long long)at, (long long)row, want, (long long)got);
    loader_f32_from_le(dst, (size_t)b->dim);
    int64_t j = loader_find_nonfinite(dst, b->dim);
    if (j >= 0)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: row %lld, value %lld is not finite", b->path,
                         (unsigned long long)(at + 4 * (uint64_t)j), (long long)row,
                         (long long)j + 1);
    return CORE_OK;
}

/* After the announced rows only a final "\n" may follow. */
static int check_end(struct bin_load *b)
{
    if (br_ensure(&b->r, 2) != CORE_OK)
        return read_error(b);
    if (br_avail(&b->r) > 0 && b->r.buf[b->r.pos] == '\n')
        b->r.pos++;
    if (br_avail(&b->r) > 0)
        return core_fail(b->err, b->errlen, CORE_EFORMAT,
                         "%s: offset %llu: data after the %lld rows the header announced",
                         b->path, (unsigned long long)br_tell(&b->r), (long long)b->rows);
    return CORE_OK;
}

static int bin_load_steps(struct bin_load *b, const struct loader_opts *o)
{
    int rc = read_header(b);
    if (rc != CORE_OK)
        return rc;
    rc = matrix_init(b->m, b->rows, b->dim);
    if (rc != CORE_OK)
        return core_fail(b->err, b->errlen, rc, "%s: cannot allocate %lld x %lld: %s", b->path,
                         (long long)b->rows, (long long)b->dim, core_strerror(rc));
    rc = vocab_new(&b->vocab, (size_t)b->rows);
    if (rc != CORE_OK)
        return core_fail(b->err, b->errlen, rc, "%s: cannot allocate the vocabulary", b->path);
    struct loader_progress prog;
    loader_progress_init(&prog, o, b->size);
    for (int64_t row = 0; row < b->rows; row++) {
        rc = read_token(b, row);
        if (rc == CORE_OK)
            rc = read_values(b, row);
        if (rc != CORE_OK)
            return rc;
        loader_progress_tick(&prog, br_tell(&b->r));
    }
    rc = check_end(b);
    if (rc == CORE_OK)
        loader_progress_done(&prog);
    return rc;
}

int w2v_bin_load(const char *path, const struct loader_opts *o, struct matrix *m,
                 struct vocab **vocab, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    *vocab = NULL;
    struct bin_load b = {.path = path, .m = m, .err = err, .errlen = errlen};
    int rc = loader_open(path, &b.r.fd, &b.size, err, errlen);
    if (rc != CORE_OK)
        return rc;
    b.r.buf = malloc(BIN_BUF_BYTES);
    if (b.r.buf == NULL)
        rc = core_fail(err, errlen, CORE_ENOMEM, "%s: cannot allocate a read buffer", path);
    else
        rc = bin_load_steps(&b, o);
    free(b.r.buf);
    close(b.r.fd);
    if (rc != CORE_OK) {
        matrix_deinit(m);
        vocab_free(b.vocab);
        return rc;
    }
    *vocab = b.vocab;
    return CORE_OK;
}
