/* matrix.h - a dense float32 row-major block with SIMD-friendly rows.
 *
 * Rows start on 64-byte boundaries: stride is dim rounded up to a multiple of
 * MATRIX_ALIGN_FLOATS, and the padding floats of every row are zero and must
 * stay zero (so kernels may run over the whole stride). Plain data: the
 * fields are read directly; only matrix_init/matrix_deinit allocate.
 *
 * matrix_zalloc is the storage behind every matrix, and core/'s one place
 * for memory that is read at random (the keyed tables' key map too). */
#ifndef CORE_MATRIX_H
#define CORE_MATRIX_H

#include <stddef.h>
#include <stdint.h>

#define MATRIX_ALIGN_FLOATS 16 /* 64 bytes */

struct matrix {
    float *data;    /* rows * stride floats, 64-byte aligned, owned */
    int64_t rows;
    int64_t dim;    /* logical width, >= 1 */
    int64_t stride; /* floats between row starts, multiple of 16, >= dim */
    size_t bytes;   /* size of the allocation behind data */
};

/* bytes (>= 1) of zeroed, 64-byte-aligned memory, or NULL. From 1 MiB up:
 * anonymous mmap (untouched pages cost nothing, freed to the system) with
 * the huge-page hint. Free with matrix_zfree and the same bytes. */
void *matrix_zalloc(size_t bytes);
void matrix_zfree(void *p, size_t bytes);

/* Allocates a zero-filled rows x dim matrix (large ones with anonymous mmap,
 * so untouched pages cost nothing). Returns CORE_OK, CORE_EINVAL (rows < 0,
 * dim < 1), CORE_ETOOBIG (size overflows) or CORE_ENOMEM; *m is left empty
 * on failure. */
int matrix_init(struct matrix *m, int64_t rows, int64_t dim);

/* Frees the storage and empties *m. Safe on an empty or zeroed matrix. */
void matrix_deinit(struct matrix *m);

/* Moves src into dst (dst must be empty); src is left empty. */
void matrix_move(struct matrix *dst, struct matrix *src);

/* Returns the stride for dim: dim rounded up to MATRIX_ALIGN_FLOATS. */
int64_t matrix_stride_for(int64_t dim);

static inline float *matrix_row(const struct matrix *m, int64_t i)
{
    return m->data + i * m->stride;
}

#endif
