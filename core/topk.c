/* topk.c - exact top-k neighbour search over every row of a table.
 *
 * The scan: queries are taken in groups of up to QUERY_GROUP; for each group
 * the table is streamed once, one seqlock stripe (BLOCK_ROWS rows) at a time.
 * A block's scores for the whole group are computed by kern_block (so each
 * row is read once per group and its arithmetic is the canonical order of
 * kernels.h), validated against the stripe's sequence counter (a block that
 * moved under a writer is scored again), turned into ranking keys (higher is
 * better; l2 ranks by minus the distance), and only then offered to each
 * query's heap through a vectorized threshold gate: after the first few
 * blocks almost no score passes it, so selection costs next to nothing.
 *
 * Large tables are scanned by several threads, each with its own heaps,
 * taking chunks of blocks from a shared counter (so a thread slowed down by
 * a busy core does not hold the others up); the per-thread lists are merged
 * at the end. Because
 * every score is computed in one fixed order, a batch answers exactly what
 * single queries answer, whatever the split, and equal scores are true ties,
 * broken by lower id. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "kernels.h"
#include "table_internal.h"
#include "threads.h"
#include "topk.h"

/* Queries scored together per pass: enough to make the scan compute-bound
 * (64 x 128 floats stay in L1/L2 beside one block of rows). */
#define QUERY_GROUP 64
/* One seqlock stripe per block, so a block validates with one counter. */
#define BLOCK_ROWS TABLE_STRIPE_ROWS
/* Blocks a thread takes at a time: 1024 rows, few enough counter updates,
 * small enough to balance threads on a busy machine. */
#define CHUNK_BLOCKS 16
/* Below this many row floats per thread, starting a thread costs more than
 * it saves (~50 us against ~30 GB/s of streaming). */
#define PARALLEL_MIN_FLOATS (1 << 20)
/* Optimistic (seqlock) attempts at a block before taking the write lock. */
#define OPTIMISTIC_TRIES 4

_Static_assert(BLOCK_ROWS <= 64, "kern_gate masks at most 64 rows");


/* ---- heaps ------------------------------------------------------------- */

/* A bounded min-heap of hits keyed by ranking key (score field), the worst
 * hit on top, so the top is the threshold a new row has to beat. */
struct heap {
    struct topk_hit *h;
    size_t n, cap;
};

/* Worse: lower key, or an equal key with a higher id (ties by lower id). */
static inline bool worse(const struct topk_hit *a, const struct topk_hit *b)
{
    return a->score < b->score || (a->score == b->score && a->id > b->id);
}

static float heap_threshold(const struct heap *hp)
{
    return hp->n < hp->cap ? -INFINITY : hp->h[0].score;
}

static void sift_down(struct heap *hp, size_t i)
{
    struct topk_hit *h = hp->h;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < hp->n && worse(&h[l], &h[w]))
            w = l;
        if (r < hp->n && worse(&h[r], &h[w]))
            w = r;
        if (w == i)
            return;
        struct topk_hit tmp = h[i];
        h[i] = h[w];
        h[w] = tmp;
        i = w;
    }
}

static void heap_push(struct heap *hp, float key, int64_t id)
{
    /* NaN (from overflowing arithmetic) ranks below everything */
    struct topk_hit c = {.id = id, .score = isnan(key) ? -INFINITY : key};
    struct topk_hit *h = hp->h;
    if (hp->n < hp->cap) {
        size_t i = hp->n++;
        while (i > 0 && worse(&c, &h[(i - 1) / 2])) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = c;
        return;
    }
    if (!worse(&h[0], &c))
        return;
    h[0] = c;
    sift_down(hp, 0);
}

static int better_first(const void *pa, const void *pb)
{
    const struct topk_hit *a = pa, *b = pb;
    if (worse(b, a))
        return -1;
    return worse(a, b) ? 1 : 0;
}

/* ---- one thread's scan ------------------------------------------------- */

/* What one thread scans: chunks of CHUNK_BLOCKS blocks taken from *next
 * until all nblocks are done, for nq queries. */
struct scan {
    const struct table *t;
    const float *queries; /* nq * dim, dense */
    const float *qnorms;  /* clamped query norms (cosine) */
    const int64_t *exclude;
    int nq;
    int64_t padding; /* or -1 */
    enum metric m;
    _Atomic int64_t *next; /* next block to take, shared by the threads */
    int64_t nblocks;
    struct heap *heaps;  /* nq heaps */
    float *scores;       /* nq * BLOCK_ROWS */
    float norms[BLOCK_ROWS];
};

static void score_rows(struct scan *sc, int64_t b, int nrows)
{
    const struct table *t = sc->t;
    kern_block(sc->queries, t->w.dim, sc->nq, matrix_row(&t->w, b), t->w.stride, nrows,
               t->w.dim, sc->m == METRIC_L2, sc->scores, BLOCK_ROWS);
    if (sc->m == METRIC_COSINE)
        memcpy(sc->norms, t->norms + b, (size_t)nrows * sizeof(float));
}

/* Scores rows [b, b + nrows) of one stripe into sc->scores, rescoring while
 * a writer moves the stripe underneath, so no torn row is ever ranked. A
 * writer that keeps hitting the stripe could starve the scan, so after a
 * few misses the block is scored under the write lock instead (a writer
 * waits for one block, ~microseconds). */
static void score_block(struct scan *sc, int64_t b, int nrows)
{
    const struct table *t = sc->t;
    int64_t stripe = table_stripe_of(b);
    for (int tries = 0; tries < OPTIMISTIC_TRIES; tries++) {
        uint32_t seq = table_read_begin(t, stripe);
        score_rows(sc, b, nrows);
        if (!table_read_retry(t, stripe, seq))
            return;
    }
    /* the table is const to readers; the lock is the one mutable part */
    pthread_mutex_t *lock = (pthread_mutex_t *)&t->write_lock;
    pthread_mutex_lock(lock);
    score_rows(sc, b, nrows);
    pthread_mutex_unlock(lock);
}

static void keys_from_scores(struct scan *sc, int nrows)
{
    for (int q = 0; q < sc->nq; q++) {
        float *s = sc->scores + (size_t)q * BLOCK_ROWS;
        if (sc->m == METRIC_COSINE)
            kern_cosine(s, sc->norms, nrows, sc->qnorms[q], SIMILARITY_COSINE_EPS);
        else if (sc->m == METRIC_L2)
            kern_neg_sqrt(s, nrows);
    }
}

static void select_block(struct scan *sc, int64_t b, int nrows)
{
    for (int q = 0; q < sc->nq; q++) {
        struct heap *hp = &sc->heaps[q];
        const float *s = sc->scores + (size_t)q * BLOCK_ROWS;
        int64_t skip = sc->exclude != NULL ? sc->exclude[q] : -1;
        uint64_t pass = kern_gate(s, nrows, heap_threshold(hp));
        while (pass != 0) {
            int i = __builtin_ctzll(pass);
            pass &= pass - 1;
            int64_t id = b + i;
            if (id != skip && id != sc->padding)
                heap_push(hp, s[i], id);
        }
    }
}

static void scan_rows(struct scan *sc)
{
    int64_t rows = sc->t->w.rows;
    for (;;) {
        int64_t first = atomic_fetch_add(sc->next, CHUNK_BLOCKS);
        if (first >= sc->nblocks)
            return;
        int64_t last = first + CHUNK_BLOCKS < sc->nblocks ? first + CHUNK_BLOCKS : sc->nblocks;
        for (int64_t blk = first; blk < last; blk++) {
            int64_t b = blk * BLOCK_ROWS;
            int nrows = (int)(rows - b < BLOCK_ROWS ? rows - b : BLOCK_ROWS);
            score_block(sc, b, nrows);
            keys_from_scores(sc, nrows);
            select_block(sc, b, nrows);
        }
    }
}

static void *scan_thread(void *arg)
{
    scan_rows(arg);
    return NULL;
}

/* ---- one group of queries ---------------------------------------------- */

struct group {
    struct scan *scans;          /* one per thread */
    struct heap *heaps;          /* nthreads * nq */
    struct topk_hit *hit_store;  /* nthreads * nq * k */
    float *score_store;          /* nthreads * nq * BLOCK_ROWS */
    struct topk_hit *merge;      /* nthreads * k */
    int nthreads;
    _Atomic int64_t next;        /* next block to scan */
};

static void group_free(struct group *g)
{
    free(g->scans);
    free(g->heaps);
    free(g->hit_store);
    free(g->score_store);
    free(g->merge);
}

static int group_alloc(struct group *g, int nthreads, int nq, size_t k)
{
    memset(g, 0, sizeof(*g));
    size_t nh = (size_t)nthreads * (size_t)nq;
    g->nthreads = nthreads;
    g->scans = calloc((size_t)nthreads, sizeof(*g->scans));
    g->heaps = calloc(nh, sizeof(*g->heaps));
    g->hit_store = malloc(nh * k * sizeof(*g->hit_store));
    g->score_store = aligned_alloc(64, nh * BLOCK_ROWS * sizeof(float));
    g->merge = malloc((size_t)nthreads * k * sizeof(*g->merge));
    if (g->scans == NULL || g->heaps == NULL || g->hit_store == NULL ||
        g->score_store == NULL || g->merge == NULL) {
        group_free(g);
        return CORE_ENOMEM;
    }
    return CORE_OK;
}

/* How many threads a scan of this table deserves: one per
 * PARALLEL_MIN_FLOATS of rows, within the budget, never more than blocks. */
static int threads_for(const struct table *t)
{
    int64_t floats = t->w.rows * t->w.stride;
    int64_t want = floats / PARALLEL_MIN_FLOATS;
    int64_t blocks = (t->w.rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
    int n = threads_budget();
    if (want < n)
        n = want < 1 ? 1 : (int)want;
    if (blocks < n)
        n = blocks < 1 ? 1 : (int)blocks;
    return n;
}

/* Prepares each thread's scan with its own heaps and score buffer; the
 * block counter is shared. */
static void group_setup(struct group *g, const struct scan *proto, size_t k)
{
    atomic_init(&g->next, 0);
    for (int i = 0; i < g->nthreads; i++) {
        struct scan *sc = &g->scans[i];
        *sc = *proto;
        sc->next = &g->next;
        sc->nblocks = (proto->t->w.rows + BLOCK_ROWS - 1) / BLOCK_ROWS;
        sc->heaps = g->heaps + (size_t)i * (size_t)proto->nq;
        sc->scores = g->score_store + (size_t)i * (size_t)proto->nq * BLOCK_ROWS;
        for (int q = 0; q < proto->nq; q++) {
            struct heap *hp = &sc->heaps[q];
            hp->h = g->hit_store + ((size_t)i * (size_t)proto->nq + (size_t)q) * k;
            hp->n = 0;
            hp->cap = k;
        }
    }
}

/* Runs scans 1.. on their own threads and scan 0 here; a thread that cannot
 * be started just leaves its share to the others (its heaps stay empty), so
 * the answer never depends on it. */
static void group_run(struct group *g)
{
    pthread_t tid[THREADS_MAX];
    bool started[THREADS_MAX] = {false};
    for (int i = 1; i < g->nthreads; i++)
        started[i] = pthread_create(&tid[i], NULL, scan_thread, &g->scans[i]) == 0;
    scan_rows(&g->scans[0]);
    for (int i = 1; i < g->nthreads; i++)
        if (started[i])
            pthread_join(tid[i], NULL);
}

/* Merges the threads' heaps of query q into hits (best first); returns the
 * count. Keys become reported scores: l2 keys are minus the distance. */
static size_t group_collect(struct group *g, int q, size_t k, enum metric m,
                            struct topk_hit *hits)
{
    size_t n = 0;
    for (int i = 0; i < g->nthreads; i++) {
        const struct heap *hp = &g->scans[i].heaps[q];
        memcpy(g->merge + n, hp->h, hp->n * sizeof(*hp->h));
        n += hp->n;
    }
    qsort(g->merge, n, sizeof(*g->merge), better_first);
    if (n > k)
        n = k;
    for (size_t j = 0; j < n; j++) {
        hits[j] = g->merge[j];
        if (m == METRIC_L2)
            hits[j].score = -hits[j].score;
    }
    return n;
}

/* max(|q|, eps) as cosine_similarity clamps it; the norm is summed in
 * double so it is the correctly rounded float32 norm in practice. */
static float clamped_norm(const float *q, int64_t dim)
{
    double s = 0.0;
    for (int64_t i = 0; i < dim; i++)
        s += (double)q[i] * (double)q[i];
    float n = (float)sqrt(s);
    return n > SIMILARITY_COSINE_EPS ? n : SIMILARITY_COSINE_EPS;
}

static int search_group(const struct table *t, const float *queries, int nq,
                        const int64_t *exclude, size_t k, enum metric m,
                        struct topk_hit *hits, size_t *counts)
{
    struct group g;
    int nthreads = threads_for(t);
    if (group_alloc(&g, nthreads, nq, k) != CORE_OK)
        return CORE_ENOMEM;
    float qnorms[QUERY_GROUP];
    for (int q = 0; q < nq; q++)
        qnorms[q] = clamped_norm(queries + (size_t)q * (size_t)t->w.dim, t->w.dim);
    struct scan proto = {
        .t = t,
        .queries = queries,
        .qnorms = qnorms,
        .exclude = exclude,
        .nq = nq,
        .padding = t->s.has_padding ? t->s.padding_idx : -1,
        .m = m,
    };
    group_setup(&g, &proto, k);
    group_run(&g);
    for (int q = 0; q < nq; q++)
        counts[q] = group_collect(&g, q, k, m, hits + (size_t)q * k);
    group_free(&g);
    return CORE_OK;
}

int topk_search(const struct table *t, const float *queries, size_t nq,
                const int64_t *exclude, size_t k, enum metric m,
                struct topk_hit *hits, size_t *counts)
{
    if (t == NULL || (nq > 0 && (queries == NULL || hits == NULL || counts == NULL)))
        return CORE_EINVAL;
    if (k < 1 || k > TOPK_MAX)
        return CORE_EINVAL;
    if (m != METRIC_COSINE && m != METRIC_DOT && m != METRIC_L2)
        return CORE_EINVAL;
    size_t dim = (size_t)t->w.dim;
    for (size_t q0 = 0; q0 < nq; q0 += QUERY_GROUP) {
        int n = (int)(nq - q0 < QUERY_GROUP ? nq - q0 : QUERY_GROUP);
        int rc = search_group(t, queries + q0 * dim, n, exclude != NULL ? exclude + q0 : NULL,
                              k, m, hits + q0 * k, counts + q0);
        if (rc != CORE_OK)
            return rc;
    }
    return CORE_OK;
}
