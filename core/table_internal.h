/* table_internal.h - the fields of struct table and the seqlock, for the
 * core modules that work on a table's storage (table.c, similarity.c,
 * topk.c, optim.c, snapshot.c). Nothing outside core/ includes this. */
#ifndef CORE_TABLE_INTERNAL_H
#define CORE_TABLE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "error.h"
#include "keymap.h"
#include "optim.h"
#include "table.h"

/* Rows per seqlock stripe. Contiguous stripes let a scan validate a block of
 * rows with a handful of counter reads. */
#define TABLE_STRIPE_ROWS 64

struct table {
    char name[TABLE_NAME_MAX + 1];
    struct matrix w;            /* the weights */
    float *norms;               /* L2 norm of each row, kept by writers */
    struct vocab *vocab;        /* or NULL */
    struct table_settings s;    /* normalized */
    pthread_mutex_t write_lock; /* one writer at a time */
    _Atomic uint32_t *seq;      /* one counter per stripe; odd = being written */
    int64_t nstripes;
    _Atomic uint64_t version;   /* applied write batches */
    /* seq of the last journal record applied (journal.h): gradient steps,
     * row assignments and max_norm renormalizations; restored with a
     * snapshot. Written under write_lock. */
    _Atomic uint64_t log_seq;
    table_renorm_hook renorm_fn; /* or NULL: renormalize directly */
    void *renorm_ud;
    struct optim optim;         /* optimizer config + state (optim.h) */
    /* keyed tables (keyed.c): the key map, or NULL for a dense table */
    struct keymap *km;
    struct table_keyed_settings ks;
};

static inline int64_t table_stripe_of(int64_t row)
{
    return row / TABLE_STRIPE_ROWS;
}

/* Reader side: returns the counter to validate against, waiting while a
 * writer holds the stripe. */
static inline uint32_t table_read_begin(const struct table *t, int64_t stripe)
{
    for (;;) {
        uint32_t s = atomic_load_explicit(&t->seq[stripe], memory_order_acquire);
        if ((s & 1u) == 0)
            return s;
    }
}

/* Reader side: true when the data read since table_read_begin may be torn. */
static inline bool table_read_retry(const struct table *t, int64_t stripe, uint32_t s)
{
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&t->seq[stripe], memory_order_relaxed) != s;
}

/* Writer side, under write_lock: bracket every change to rows of a stripe. */
static inline void table_write_begin(struct table *t, int64_t stripe)
{
    uint32_t s = atomic_load_explicit(&t->seq[stripe], memory_order_relaxed);
    atomic_store_explicit(&t->seq[stripe], s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static inline void table_write_end(struct table *t, int64_t stripe)
{
    uint32_t s = atomic_load_explicit(&t->seq[stripe], memory_order_relaxed);
    atomic_store_explicit(&t->seq[stripe], s + 1, memory_order_release);
}

/* CORE_OK when every id is in [0, N); else CORE_ERANGE with *bad (may be
 * NULL) the index of the first one outside. Checked before any change. */
static inline int table_check_ids(const struct table *t, const int64_t *ids, size_t n,
                                  size_t *bad)
{
    if (t->km != NULL) { /* keys: every int64 but KEYMAP_NO_KEY */
        for (size_t i = 0; i < n; i++) {
            if (ids[i] == KEYMAP_NO_KEY) {
                if (bad != NULL)
                    *bad = i;
                return CORE_ERANGE;
            }
        }
        return CORE_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->w.rows) {
            if (bad != NULL)
                *bad = i;
            return CORE_ERANGE;
        }
    }
    return CORE_OK;
}

/* The gradient step of optim.c on rows ids[0..n) (checked), with the write
 * lock already held. CORE_ENOMEM changes nothing. */
int table_step_locked(struct table *t, const struct optim_config *cfg, const int64_t *ids,
                      size_t n, const float *grads, uint64_t *version_out, size_t *rows_out);

/* The same step in two parts, for a caller that changes the table between
 * them and must not fail after it did (a keyed step inserts its new keys
 * first): table_step_prepare takes, under the write lock, all that the step
 * allocates for up to n ids (its plan, the optimizer's state on a first
 * step) and fails with CORE_ENOMEM having changed nothing; table_step_run
 * then cannot fail, and frees the plan; table_step_discard frees an unused
 * one (NULL is a no-op). */
struct step_plan;
int table_step_prepare(struct table *t, const struct optim_config *cfg, size_t n,
                       struct step_plan **out);
void table_step_run(struct table *t, const struct optim_config *cfg, struct step_plan *sp,
                    const int64_t *ids, size_t n, const float *grads, uint64_t *version_out,
                    size_t *rows_out);
void table_step_discard(struct step_plan *sp);

/* The forward of a keyed table (keyed.c): rows of keys[0..n) into out,
 * missing keys by the table's policy (CORE_ENOTFOUND, *bad, for "error"). */
int table_keyed_lookup(const struct table *t, const int64_t *keys, size_t n, float *out,
                       size_t *bad);

/* table_assign_rows on checked rows with the write lock held. */
uint64_t table_assign_locked(struct table *t, const int64_t *ids, size_t n,
                             const float *vectors);

/* Recomputes norms[row] from the stored row; writer side. */
void table_update_norm(struct table *t, int64_t row);

#endif
