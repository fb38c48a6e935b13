/* matrix.c - aligned, zeroed storage for tables and optimizer state. */
#include "matrix.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "error.h"

/* Below this the allocator's own pages are fine; above it mmap gives zeroed,
 * lazily-committed memory and returns it to the system on free. */
#define MMAP_THRESHOLD (1u << 20)

int64_t matrix_stride_for(int64_t dim)
{
    return (dim + MATRIX_ALIGN_FLOATS - 1) / MATRIX_ALIGN_FLOATS * MATRIX_ALIGN_FLOATS;
}

void *matrix_zalloc(size_t bytes)
{
    if (bytes < MMAP_THRESHOLD) {
        void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (p != NULL)
            memset(p, 0, bytes);
        return p;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* The one huge-page hint of core/: random row gathers, sparse steps and
     * key probes are TLB-bound, and transparent huge pages asked for before
     * the first touch made gathers 1.3-2.4x and steps 2-3x faster here. A
     * refusal only costs speed. */
    (void)madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

void matrix_zfree(void *p, size_t bytes)
{
    if (p == NULL)
        return;
    if (bytes >= MMAP_THRESHOLD)
        munmap(p, bytes);
    else
        free(p);
}

int matrix_init(struct matrix *m, int64_t rows, int64_t dim)
{
    memset(m, 0, sizeof(*m));
    if (rows < 0 || dim < 1)
        return CORE_EINVAL;
    int64_t stride = matrix_stride_for(dim);
    if (rows > 0 && stride > (int64_t)(SIZE_MAX / sizeof(float)) / rows)
        return CORE_ETOOBIG;
    size_t bytes = (size_t)rows * (size_t)stride * sizeof(float);
    if (bytes == 0)
        bytes = 64; /* a valid, aligned pointer even for an empty table */
    void *p = matrix_zalloc(bytes);
    if (p == NULL)
        return CORE_ENOMEM;
    m->data = p;
    m->rows = rows;
    m->dim = dim;
    m->stride = stride;
    m->bytes = bytes;
    return CORE_OK;
}

void matrix_deinit(struct matrix *m)
{
    matrix_zfree(m->data, m->bytes);
    memset(m, 0, sizeof(*m));
}

void matrix_move(struct matrix *dst, struct matrix *src)
{
    *dst = *src;
    memset(src, 0, sizeof(*src));
}
