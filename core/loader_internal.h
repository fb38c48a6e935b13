/* loader_internal.h - pieces shared by the loader files (loader*.c): opening
 * a file with its size, whole reads at an offset, progress reports, the
 * non-finite check, the exact decimal float parser and the text line reader.
 * Only core/loader*.c and the loader tests include this. */
#ifndef CORE_LOADER_INTERNAL_H
#define CORE_LOADER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loader.h"

/* Report progress about every this many bytes. */
#define LOADER_PROGRESS_BYTES (64u << 20)

/* Largest row count a table may have (num_embeddings up to 2^31-1). */
#define LOADER_MAX_ROWS INT64_C(2147483647)

/* Opens path read-only and gets its size. On failure fills err naming the
 * path: CORE_ENOTFOUND when it does not exist, CORE_EINVAL for a directory,
 * CORE_EIO otherwise. The caller closes *fd. */
int loader_open(const char *path, int *fd, uint64_t *size, char *err, size_t errlen);

/* Reads exactly n bytes at offset off (retrying short reads). Returns the
 * bytes read: less than n only at end of file; -1 on a read error (errno). */
int64_t loader_pread(int fd, void *buf, size_t n, uint64_t off);

/* Progress reporting for one load: calls o->progress every
 * LOADER_PROGRESS_BYTES of input and once at the end. */
struct loader_progress {
    loader_progress_cb cb;
    void *ud;
    uint64_t total;
    uint64_t next;
};
void loader_progress_init(struct loader_progress *p, const struct loader_opts *o,
                          uint64_t total);
static inline void loader_progress_tick(struct loader_progress *p, uint64_t done)
{
    if (p->cb != NULL && done >= p->next) {
        p->cb(p->ud, done, p->total);
        p->next = done + LOADER_PROGRESS_BYTES;
    }
}
void loader_progress_done(struct loader_progress *p);

/* Turns n little-endian float32 values read from a file into host floats
 * (nothing to do on the little-endian machines we build for). */
static inline void loader_f32_from_le(float *v, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        __builtin_memcpy(&u, &v[i], 4);
        u = __builtin_bswap32(u);
        __builtin_memcpy(&v[i], &u, 4);
    }
#else
    (void)v;
    (void)n;
#endif
}

/* Element types of dense arrays (.npy, safetensors). */
enum loader_dtype { LOADER_F16, LOADER_BF16, LOADER_F32, LOADER_F64 };

/* Bytes per element of t. */
size_t loader_dtype_size(enum loader_dtype t);

/* True on a big-endian host. */
bool loader_host_big_endian(void);

/* Reverses the bytes of each esize-byte element of p[0..n). */
void loader_swap_bytes(void *p, size_t n, size_t esize);

/* How loader_read_dense treats NaN and infinities. */
enum loader_finite {
    LOADER_FINITE_ONLY, /* pretrained files: CORE_EFORMAT naming offset and [row, col] */
    LOADER_ANY_BITS,    /* the service's own snapshots: every value kept, bit for bit */
};

/* Reads m->rows x m->dim elements of type t, stored C-order from file offset
 * off (little-endian, or big-endian when big_endian), into the initialized
 * matrix m, converting exactly (float64 rounds to nearest; float32 keeps its
 * bits, NaN payloads too). float32 in host order with rows exactly a stride
 * wide is read straight into m; the rest passes through a bounce buffer.
 * With LOADER_FINITE_ONLY, non-finite results (NaN, inf, a float64 beyond
 * float32) are CORE_EFORMAT naming the byte offset and [row, col]. The
 * caller has checked that the file holds the data. */
int loader_read_dense(const char *path, int fd, uint64_t off, enum loader_dtype t,
                      bool big_endian, enum loader_finite finite, struct matrix *m,
                      struct loader_progress *prog, char *err, size_t errlen);

/* Returns the index of the first NaN or infinity in v[0..n), or -1. */
int64_t loader_find_nonfinite(const float *v, int64_t n);

/* Bytes loader_parse_f32 may read past the NUL that ends its text (it
 * reads digits eight at a time). */
#define LOADER_PARSE_PAD 8

/* Parses one decimal number at p, exactly as strtof would (the float nearest
 * the decimal, ties to even, the same accepted syntax), with a fast exact
 * path for the common forms. p points into NUL-terminated text followed by
 * LOADER_PARSE_PAD readable bytes. Returns the end of the number, or NULL
 * when p does not start with a number. Overflow gives an infinity (as
 * strtof). */
const char *loader_parse_f32(const char *p, float *out);

/* Parses a word2vec header line "<rows> <dim>" (spaces or tabs between,
 * optional "\r") at the start of s[0..n), ending at a "\n" or at s + n.
 * Returns false when s does not start with such a line; else sets *rows,
 * *dim (saturated at INT64_MAX, possibly negative: the caller validates) and
 * *len, the bytes through the "\n". */
bool loader_parse_header(const char *s, size_t n, int64_t *rows, int64_t *dim, size_t *len);

/* Largest text line accepted (a 1M-dim row of long numbers fits). */
#define LOADER_MAX_LINE (256u << 20)

/* Reads a file as lines through one growing buffer. Each line handed out is
 * NUL-terminated in place (the '\n' is replaced), followed by at least
 * LOADER_PARSE_PAD readable bytes, and lives until the next call. Line
 * numbers count from 1. */
struct loader_lines {
    int fd;
    char *buf;
    size_t cap;
    size_t start;    /* first unconsumed byte in buf */
    size_t len;      /* bytes held in buf */
    uint64_t offset; /* file offset of buf[0] */
    bool eof;
    int64_t lineno;  /* number of the line last returned */
};

/* Starts reading fd from offset 0. CORE_OK or CORE_ENOMEM. */
int loader_lines_init(struct loader_lines *r, int fd);
void loader_lines_deinit(struct loader_lines *r);
/* Rewinds to offset 0 (for a second pass). */
void loader_lines_rewind(struct loader_lines *r);
/* Hands out the next line without its "\n" (a "\r" before it is kept):
 * CORE_OK with *line and *len set, or *line NULL at end of file; or a core error
 * (CORE_EIO, CORE_ENOMEM, CORE_ETOOBIG for a line over LOADER_MAX_LINE). */
int loader_lines_next(struct loader_lines *r, char **line, size_t *len);
/* File offset just past the last line handed out. */
static inline uint64_t loader_lines_pos(const struct loader_lines *r)
{
    return r->offset + r->start;
}

#endif
