/* table.c - creation, settings, the row norm cache, and the forward passes
 * of nn.Embedding and nn.EmbeddingBag with torch 1.13's float32 arithmetic.
 *
 * Readers copy rows out under the stripe seqlocks (table_internal.h); every
 * change to a row (renormalization, assignment) happens under write_lock and
 * inside table_write_begin/end of its stripe, with norms[] updated in the
 * same bracket. */
#include "table.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "rng.h"
#include "table_internal.h"
#include "threads.h"

#define TABLE_MAX_ROWS 0x7fffffffLL /* 2^31 - 1, as the issue allows */
/* Rows per independent generator stream: the split between threads falls on
 * these boundaries, so the weights depend on the seed only. */
#define INIT_BLOCK_ROWS 1024
/* Below this many floats, threads cost more than they save. */
#define PARALLEL_MIN_FLOATS (1 << 22)
/* How far ahead a gather prefetches; ~8 rows hides DRAM latency for 512-byte
 * rows at ~30 M rows/s (PERFORMANCE.md). */
#define PREFETCH_AHEAD 8

/* ---- settings ---------------------------------------------------------- */

void table_settings_init(struct table_settings *s)
{
    memset(s, 0, sizeof(*s));
    s->has_padding = false;
    s->padding_idx = 0;
    s->has_max_norm = false;
    s->max_norm = 0.0;
    s->norm_type = 2.0;
    s->scale_grad_by_freq = false;
    s->freeze = false;
    s->oov_id = -1;
}

static bool name_char_ok(char c, bool first)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return !first && (c == '_' || c == '.' || c == '-');
}

static int check_name(const char *name, char *err, size_t errlen)
{
    size_t len = name != NULL ? strlen(name) : 0;
    if (len == 0 || len > TABLE_NAME_MAX)
        return core_fail(err, errlen, CORE_EINVAL, "name must have 1 to %d characters, got %zu",
                         TABLE_NAME_MAX, len);
    for (size_t i = 0; i < len; i++)
        if (!name_char_ok(name[i], i == 0))
            return core_fail(err, errlen, CORE_EINVAL,
                             "name '%s': character %zu is not allowed "
                             "(want [A-Za-z0-9][A-Za-z0-9_.-]*)",
                             name, i);
    return CORE_OK;
}

/* Checks *in against a table of `rows` rows and writes the normalized
 * settings (padding_idx made non-negative) to *out. */
static int check_settings(const struct table_settings *in, int64_t rows, struct table_settings *out,
                          char *err, size_t errlen)
{
    *out = *in;
    if (in->has_padding) {
        if (in->padding_idx < -rows || in->padding_idx >= rows)
            return core_fail(err, errlen, CORE_EINVAL,
                             "padding_idx %lld is out of range [%lld, %lld) for %lld rows",
                             (long long)in->padding_idx, -(long long)rows, (long long)rows,
                             (long long)rows);
        if (in->padding_idx < 0)
            out->padding_idx = rows + in->padding_idx;
    }
    if (in->has_max_norm && !(in->max_norm > 0.0))
        return core_fail(err, errlen, CORE_EINVAL, "max_norm must be > 0, got %g", in->max_norm);
    if (!(in->norm_type > 0.0))
        return core_fail(err, errlen, CORE_EINVAL, "norm_type must be > 0 (inf allowed), got %g",
                         in->norm_type);
    if (in->oov_id < -1 || in->oov_id >= rows)
        return core_fail(err, errlen, CORE_EINVAL,
                         "oov id %lld is out of range [0, %lld) (or -1 for errors)",
                         (long long)in->oov_id, (long long)rows);
    return CORE_OK;
}

static int check_shape(int64_t rows, int64_t dim, char *err, size_t errlen)
{
    if (rows < 0 || rows > TABLE_MAX_ROWS)
        return core_fail(err, errlen, CORE_EINVAL, "num_embeddings %lld is out of range [0, %lld]",
                         (long long)rows, TABLE_MAX_ROWS);
    if (dim < 1)
        return core_fail(err, errlen, CORE_EINVAL, "embedding_dim must be >= 1, got %lld",
                         (long long)dim);
    return CORE_OK;
}

/* ---- running a row range on both cores --------------------------------- */

typedef void (*row_fn)(void *ctx, int64_t begin, int64_t end);

struct row_job {
    row_fn fn;
    void *ctx;
    int64_t begin, end;
};

static void *row_job_run(void *arg)
{
    struct row_job *j = arg;
    j->fn(j->ctx, j->begin, j->end);
    return NULL;
}

/* Calls fn over [0, rows) split into INIT_BLOCK_ROWS-aligned ranges, one per
 * thread of the budget (threads.h), when the work is big enough; runs inline otherwise or when a
 * thread cannot be started. */
static void for_rows(row_fn fn, void *ctx, int64_t rows, int64_t dim)
{
    int nthreads = threads_budget();
    if (rows * dim < PARALLEL_MIN_FLOATS || nthreads == 1) {
        fn(ctx, 0, rows);
        return;
    }
    int64_t blocks = (rows + INIT_BLOCK_ROWS - 1) / INIT_BLOCK_ROWS;
    struct row_job jobs[THREADS_MAX];
    pthread_t tids[THREADS_MAX];
    bool started[THREADS_MAX] = {false};
    for (int i = 0; i < nthreads; i++) {
        int64_t b0 = blocks * i / nthreads, b1 = blocks * (i + 1) / nthreads;
        int64_t end = b1 * INIT_BLOCK_ROWS;
        jobs[i] = (struct row_job){fn, ctx, b0 * INIT_BLOCK_ROWS, end > rows ? rows : end};
    }
    for (int i = 1; i < nthreads; i++)
        started[i] = pthread_create(&tids[i], NULL, row_job_run, &jobs[i]) == 0;
    row_job_run(&jobs[0]);
    for (int i = 1; i < nthreads; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else
            row_job_run(&jobs[i]);
    }
}

/* ---- norms ------------------------------------------------------------- */

/* L2 norm over the whole stride (padding floats are zero), in 16 float lanes
 * so the compiler vectorizes it without reassociation flags. */
#ifdef __AVX512F__
/* The same sums in the same order as the portable version below (16 lane
 * accumulators, multiply then add, then halving tree), kept in registers:
 * through a stack array the reduction was ~30% of an SGD step. */
static float l2_norm(const float *row, int64_t stride)
{
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < stride; i += MATRIX_ALIGN_FLOATS) {
        __m512 x = _mm512_load_ps(row + i);
        acc = _mm512_add_ps(acc, _mm512_mul_ps(x, x));
    }
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
    __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(acc), hi);
    __m128 h4 = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
    __m128 h2 = _mm_add_ps(h4, _mm_movehl_ps(h4, h4));
    __m128 h1 = _mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1));
    return sqrtf(_mm_cvtss_f32(h1));
}
#else
static float l2_norm(const float *row, int64_t stride)
{
    float acc[MATRIX_ALIGN_FLOATS] = {0};
    for (int64_t i = 0; i < stride; i += MATRIX_ALIGN_FLOATS)
        for (int k = 0; k < MATRIX_ALIGN_FLOATS; k++)
            acc[k] += row[i + k] * row[i + k];
    for (int w = MATRIX_ALIGN_FLOATS / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return sqrtf(acc[0]);
}
#endif

static void norms_range(void *ctx, int64_t begin, int64_t end)
{
    struct table *t = ctx;
    for (int64_t r = begin; r < end; r++)
        t->norms[r] = l2_norm(matrix_row(&t->w, r), t->w.stride);
}

void table_update_norm(struct table *t, int64_t row)
{
    t->norms[row] = l2_norm(matrix_row(&t->w, row), t->w.stride);
}

/* ---- lifetime ---------------------------------------------------------- */

/* Builds the table around already-checked parts. */
static int create(struct table **out, const char *name, struct matrix *w, struct vocab *vocab,
                  const struct table_settings *s, char *err, size_t errlen)
{
    struct table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return core_fail(err, errlen, CORE_ENOMEM, "table '%s': out of memory", name);
    int64_t rows = w->rows;
    t->nstripes = (rows + TABLE_STRIPE_ROWS - 1) / TABLE_STRIPE_ROWS;
    t->seq = calloc((size_t)(t->nstripes > 0 ? t->nstripes : 1), sizeof(*t->seq));
    t->norms = malloc((size_t)(rows > 0 ? rows : 1) * sizeof(float));
    if (t->seq == NULL || t->norms == NULL || pthread_mutex_init(&t->write_lock, NULL) != 0) {
        free(t->seq);
        free(t->norms);
        free(t);
        return core_fail(err, errlen, CORE_ENOMEM, "table '%s': out of memory for %lld rows",
                         name, (long long)rows);
    }
    strcpy(t->name, name);
    t->s = *s;
    t->vocab = vocab;
    atomic_init(&t->version, 0);
    t->optim.configured = false;
    matrix_move(&t->w, w);
    for_rows(norms_range, t, rows, t->w.dim);
    *out = t;
    return CORE_OK;
}

int table_new(struct table **out, const char *name, struct matrix *weights, struct vocab *vocab,
              const struct table_settings *s, char *err, size_t errlen)
{
    *out = NULL;
    struct table_settings norm;
    int rc = check_name(name, err, errlen);
    if (rc == CORE_OK && weights->data == NULL)
        rc = core_fail(err, errlen, CORE_EINVAL, "table '%s': no weights", name);
    if (rc == CORE_OK)
        rc = check_shape(weights->rows, weights->dim, err, errlen);
    if (rc == CORE_OK)
        rc = check_settings(s, weights->rows, &norm, err, errlen);
    if (rc == CORE_OK && vocab != NULL && vocab_size(vocab) != weights->rows)
        rc = core_fail(err, errlen, CORE_EINVAL, "vocab has %lld tokens but the table has %lld rows",
                       (long long)vocab_size(vocab), (long long)weights->rows);
    /* the vocabulary is read-only from here on: index it for prefix queries */
    if (rc == CORE_OK && vocab != NULL && !vocab_has_index(vocab) &&
        vocab_build_index(vocab) != CORE_OK)
        rc = core_fail(err, errlen, CORE_ENOMEM, "table '%s': out of memory sorting %lld tokens",
                       name, (long long)vocab_size(vocab));
    if (rc != CORE_OK)
        return rc;
    return create(out, name, weights, vocab, &norm, err, errlen);
}

struct fill_ctx {
    struct matrix *w;
    uint64_t seed;
};

static void fill_range(void *ctx, int64_t begin, int64_t end)
{
    struct fill_ctx *c = ctx;
    struct rng r;
    for (int64_t row = begin; row < end; row++) {
        if (row == begin || row % INIT_BLOCK_ROWS == 0)
            rng_seed(&r, c->seed, (uint64_t)(row / INIT_BLOCK_ROWS));
        rng_fill_normal(&r, matrix_row(c->w, row), (size_t)c->w->dim);
    }
}

int table_new_init(struct table **out, const char *name, int64_t num, int64_t dim, uint64_t seed,
                   const struct table_settings *s, char *err, size_t errlen)
{
    *out = NULL;
    struct table_settings norm;
    int rc = check_name(name, err, errlen);
    if (rc == CORE_OK)
        rc = check_shape(num, dim, err, errlen);
    if (rc == CORE_OK)
        rc = check_settings(s, num, &norm, err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct matrix w;
    rc = matrix_init(&w, num, dim);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "table '%s': cannot allocate %lld x %lld floats: %s",
                         name, (long long)num, (long long)dim, core_strerror(rc));
    for_rows(fill_range, &(struct fill_ctx){&w, seed}, num, dim);
    if (norm.has_padding)
        memset(matrix_row(&w, norm.padding_idx), 0, (size_t)dim * sizeof(float));
    rc = create(out, name, &w, NULL, &norm, err, errlen);
    if (rc != CORE_OK)
        matrix_deinit(&w);
    return rc;
}

void table_free(struct table *t)
{
    if (t == NULL)
        return;
    matrix_deinit(&t->optim.exp_avg);
    matrix_deinit(&t->optim.exp_avg_sq);
    matrix_deinit(&t->optim.sum);
    matrix_deinit(&t->w);
    vocab_free(t->vocab);
    pthread_mutex_destroy(&t->write_lock);
    free((void *)t->seq);
    free(t->norms);
    free(t);
}

/* ---- getters ----------------------------------------------------------- */

const char *table_name(const struct table *t)
{
    return t->name;
}

int64_t table_num_embeddings(const struct table *t)
{
    return t->w.rows;
}

int64_t table_dim(const struct table *t)
{
    return t->w.dim;
}

const struct table_settings *table_settings(const struct table *t)
{
    return &t->s;
}

const struct vocab *table_vocab(const struct table *t)
{
    return t->vocab;
}

uint64_t table_version(const struct table *t)
{
    return atomic_load_explicit(&t->version, memory_order_acquire);
}

uint64_t table_log_seq(const struct table *t)
{
    return atomic_load_explicit(&t->log_seq, memory_order_acquire);
}

/* ---- reading rows ------------------------------------------------------ */

static inline void copy_row(const struct table *t, int64_t id, float *dst)
{
    int64_t stripe = table_stripe_of(id);
    const float *src = matrix_row(&t->w, id);
    size_t bytes = (size_t)t->w.dim * sizeof(float);
    uint32_t s;
    do {
        s = table_read_begin(t, stripe);
        memcpy(dst, src, bytes);
    } while (table_read_retry(t, stripe, s));
}

void table_read_row(const struct table *t, int64_t id, float *out)
{
    assert(id >= 0 && id < t->w.rows);
    copy_row(t, id, out);
}

static inline void prefetch_row(const struct table *t, int64_t id)
{
    const char *p = (const char *)matrix_row(&t->w, id);
    size_t bytes = (size_t)t->w.dim * sizeof(float);
    for (size_t off = 0; off < bytes; off += 64)
        __builtin_prefetch(p + off, 0, 0);
}

static void gather_rows(const struct table *t, const int64_t *ids, size_t n, float *out)
{
    size_t dim = (size_t)t->w.dim;
    /* the first rows are requested together, not one miss after another */
    for (size_t i = 0; i < n && i < PREFETCH_AHEAD; i++)
        prefetch_row(t, ids[i]);
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n)
            prefetch_row(t, ids[i + PREFETCH_AHEAD]);
        copy_row(t, ids[i], out + i * dim);
    }
}

/* ---- max_norm ---------------------------------------------------------- */

/* Sum of squares as torch 1.13's p = 2 kernel computes it in Debian's build
 * (AVX2 dispatch, fp-contract on): eight lanes of fused multiply-adds over
 * whole groups of 8, the lanes folded left to right, then the remainder
 * with its products rounded in groups of 4 (the compiler vectorized those
 * multiplies) and the last 0-3 fused. Matched bit for bit against torch in
 * tests/test_table.c. This file is ISO C11, so gcc contracts nothing on its
 * own: every fusion here is an explicit fmaf. */
static float torch_sum_squares(const float *x, int64_t n)
{
    float lane[8] = {0};
    int64_t d = 0;
    for (; d + 8 <= n; d += 8)
        for (int k = 0; k < 8; k++)
            lane[k] = fmaf(x[d + k], x[d + k], lane[k]);
    float acc = lane[0];
    for (int k = 1; k < 8; k++)
        acc += lane[k];
    for (int64_t quads = d + (n - d) / 4 * 4; d < quads; d++) {
        float sq = x[d] * x[d];
        acc += sq;
    }
    for (; d < n; d++)
        acc = fmaf(x[d], x[d], acc);
    return acc;
}

/* row.norm(p) as torch 1.13 computes it for a float32 row on the CPU: p is
 * narrowed to float first; p = 1, 2 and inf have their own kernels; any
 * other p accumulates powf(|x|, p) in order and takes powf(acc, 1/p). */
static float torch_row_norm(const float *row, int64_t dim, double p)
{
    float fp = (float)p;
    float acc = 0.0f;
    if (fp == 2.0f)
        return sqrtf(torch_sum_squares(row, dim));
    if (fp == 1.0f) {
        for (int64_t j = 0; j < dim; j++)
            acc += fabsf(row[j]);
        return acc;
    }
    if (isinf(fp)) {
        for (int64_t j = 0; j < dim; j++)
            acc = fmaxf(acc, fabsf(row[j]));
        return acc;
    }
    for (int64_t j = 0; j < dim; j++)
        acc += powf(fabsf(row[j]), fp);
    return powf(acc, 1.0f / fp);
}

/* The cached L2 norm below which a row cannot exceed max_norm in the
 * table's p-norm: ||x||_p <= ||x||_2 for p >= 2 and <= dim^(1/p - 1/2)
 * ||x||_2 below, with a margin well above the rounding of either norm. Lets
 * a lookup of rows that are already short skip the write lock. */
static double l2_limit(const struct table *t)
{
    double p = (float)t->s.norm_type, dim = (double)t->w.dim;
    double factor = p >= 2.0 ? 1.0 : pow(dim, 1.0 / p - 0.5);
    double margin = 1.0 + 1e-4 + 4.0 * dim * FLT_EPSILON;
    return t->s.max_norm / (factor * margin);
}

static float read_norm(const struct table *t, int64_t id)
{
    int64_t stripe = table_stripe_of(id);
    uint32_t s;
    float v;
    do {
        s = table_read_begin(t, stripe);
        v = t->norms[id];
    } while (table_read_retry(t, stripe, s));
    return v;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Scales row id by max_norm / (norm + 1e-7) when its norm exceeds max_norm:
 * the scale is computed in double and applied as a float, as torch's
 * `row *= scale` does. Caller holds write_lock. */
static void renorm_row(struct table *t, int64_t id)
{
    float *row = matrix_row(&t->w, id);
    double norm = torch_row_norm(row, t->w.dim, t->s.norm_type);
    if (!(norm > t->s.max_norm))
        return;
    float scale = (float)(t->s.max_norm / (norm + 1e-7));
    int64_t stripe = table_stripe_of(id);
    table_write_begin(t, stripe);
    for (int64_t j = 0; j < t->w.dim; j++)
        row[j] *= scale;
    table_update_norm(t, id);
    table_write_end(t, stripe);
}

/* Sorts ids[0..m) and drops duplicates; returns the new count. */
static size_t sort_distinct(int64_t *ids, size_t m)
{
    qsort(ids, m, sizeof(*ids), cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (i == 0 || ids[i] != ids[k - 1])
            ids[k++] = ids[i];
    return k;
}

int table_renorm(struct table *t, const int64_t *ids, size_t m)
{
    if (!t->s.has_max_norm)
        return CORE_EINVAL;
    int rc = table_check_ids(t, ids, m, NULL);
    if (rc != CORE_OK)
        return rc;
    int64_t *sorted = malloc(m * sizeof(*sorted) + 1);
    if (sorted == NULL)
        return CORE_ENOMEM;
    memcpy(sorted, ids, m * sizeof(*sorted));
    m = sort_distinct(sorted, m);
    pthread_mutex_lock(&t->write_lock);
    for (size_t i = 0; i < m; i++)
        renorm_row(t, sorted[i]);
    atomic_fetch_add_explicit(&t->log_seq, 1, memory_order_acq_rel);
    pthread_mutex_unlock(&t->write_lock);
    free(sorted);
    return CORE_OK;
}

void table_set_log_seq(struct table *t, uint64_t seq)
{
    atomic_store_explicit(&t->log_seq, seq, memory_order_release);
}

void table_set_renorm_hook(struct table *t, table_renorm_hook fn, void *ud)
{
    pthread_mutex_lock(&t->write_lock);
    t->renorm_fn = fn;
    t->renorm_ud = ud;
    pthread_mutex_unlock(&t->write_lock);
}

/* True when row id's norm_type-norm exceeds max_norm now: the exact test of
 * renorm_row on a consistent copy, so that a renormalization is logged only
 * for rows it will change (the norm cache is only a conservative filter). */
static bool needs_renorm(const struct table *t, int64_t id, float *tmp)
{
    copy_row(t, id, tmp);
    return torch_row_norm(tmp, t->w.dim, t->s.norm_type) > t->s.max_norm;
}

/* torch.embedding_renorm_ over candidate ids: each distinct id that needs
 * it, once, in one write (through the journal's hook when there is one, so
 * the renormalization takes its place in the log). Sorts cand in place. */
static int renorm_distinct(struct table *t, int64_t *cand, size_t m)
{
    m = sort_distinct(cand, m);
    float *tmp = malloc((size_t)t->w.dim * sizeof(float) + 1);
    if (tmp == NULL)
        return CORE_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (needs_renorm(t, cand[i], tmp))
            cand[k++] = cand[i];
    free(tmp);
    if (k == 0)
        return CORE_OK;
    table_renorm_hook fn = t->renorm_fn;
    return fn != NULL ? fn(t->renorm_ud, cand, k) : table_renorm(t, cand, k);
}

/* Renormalizes the rows of ids that need it, picking candidates from the
 * norm cache so that the common case (every row already short) takes no
 * lock. A row assigned by another thread after the check may be read
 * unscaled; the next lookup of it scales it, as if the assignment had landed
 * between renormalization and gather. */
static int renorm_ids(struct table *t, const int64_t *ids, size_t n)
{
    double limit = l2_limit(t);
    size_t m = 0;
    int64_t *cand = NULL;
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n)
            __builtin_prefetch(&t->norms[ids[i + PREFETCH_AHEAD]], 0, 0);
        if (!(read_norm(t, ids[i]) > limit))
            continue;
        if (cand == NULL && (cand = malloc((n - i) * sizeof(*cand))) == NULL)
            return CORE_ENOMEM;
        cand[m++] = ids[i];
    }
    int rc = m > 0 ? renorm_distinct(t, cand, m) : CORE_OK;
    free(cand);
    return rc;
}

/* copy_row that also reads the row's cached L2 norm in the same seqlock
 * bracket, so the pair is consistent. */
static inline float copy_row_norm(const struct table *t, int64_t id, float *dst)
{
    int64_t stripe = table_stripe_of(id);
    const float *src = matrix_row(&t->w, id);
    size_t bytes = (size_t)t->w.dim * sizeof(float);
    uint32_t s;
    float norm;
    do {
        s = table_read_begin(t, stripe);
        memcpy(dst, src, bytes);
        norm = t->norms[id];
    } while (table_read_retry(t, stripe, s));
    return norm;
}

/* The max_norm lookup in one pass: gathers every row together with its
 * cached norm (prefetched with the row; a separate pass over norms[] would
 * cost a second round of cache misses, and measuring each copy lengthens
 * the dependency chain enough to halve the gather rate). The cached norm is
 * only a filter: rows that may exceed max_norm are then renormalized as
 * torch does, under the lock, and copied again, which gives the output of
 * renormalize-then-gather. */
static int lookup_renorm(struct table *t, const int64_t *ids, size_t n, float *out)
{
    size_t dim = (size_t)t->w.dim, m = 0;
    double limit = l2_limit(t);
    size_t *pos = NULL;
    for (size_t i = 0; i < n && i < PREFETCH_AHEAD; i++)
        prefetch_row(t, ids[i]);
    for (size_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) {
            prefetch_row(t, ids[i + PREFETCH_AHEAD]);
            __builtin_prefetch(&t->norms[ids[i + PREFETCH_AHEAD]], 0, 0);
        }
        if (!(copy_row_norm(t, ids[i], out + i * dim) > limit))
            continue;
        if (pos == NULL && (pos = malloc((n - i) * sizeof(*pos))) == NULL)
            return CORE_ENOMEM;
        pos[m++] = i;
    }
    if (m == 0)
        return CORE_OK;
    int64_t *cand = malloc(m * sizeof(*cand));
    if (cand == NULL) {
        free(pos);
        return CORE_ENOMEM;
    }
    for (size_t k = 0; k < m; k++)
        cand[k] = ids[pos[k]];
    int rc = renorm_distinct(t, cand, m);
    for (size_t k = 0; rc == CORE_OK && k < m; k++)
        copy_row(t, ids[pos[k]], out + pos[k] * dim);
    free(cand);
    free(pos);
    return rc;
}

/* ---- forward ----------------------------------------------------------- */

int table_lookup(struct table *t, const int64_t *ids, size_t n, float *out, size_t *bad)
{
    int rc = table_check_ids(t, ids, n, bad);
    if (rc != CORE_OK)
        return rc;
    if (t->s.has_max_norm)
        return lookup_renorm(t, ids, n, out);
    gather_rows(t, ids, n, out);
    return CORE_OK;
}

static int check_offsets(const size_t *offsets, size_t nbags)
{
    if (offsets[0] != 0)
        return CORE_EINVAL;
    for (size_t b = 0; b < nbags; b++)
        if (offsets[b + 1] < offsets[b])
            return CORE_EINVAL;
    return CORE_OK;
}

/* Pools one bag into out (dim floats, zeroed by the caller). Sum adds rows in
 * id order from zero, as torch's index_select_add; a weight multiplies and
 * rounds before the add (no fusion), as the axpy of Debian's torch build;
 * mean divides by the count kept. Max keeps the first row and replaces on
 * strictly greater, as embedding_bag_cpu_max_out. All bit-exact against
 * torch in tests/test_bag.c. */
static void pool_bag(const struct table *t, const int64_t *ids, size_t n, const float *weights,
                     enum bag_mode mode, float *row, float *out)
{
    int64_t dim = t->w.dim;
    bool has_pad = t->s.has_padding;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (has_pad && ids[i] == t->s.padding_idx)
            continue;
        if (i + PREFETCH_AHEAD < n)
            prefetch_row(t, ids[i + PREFETCH_AHEAD]);
        copy_row(t, ids[i], row);
        if (mode == BAG_MAX) {
            for (int64_t j = 0; j < dim; j++)
                if (kept == 0 || row[j] > out[j])
                    out[j] = row[j];
        } else if (weights != NULL) {
            for (int64_t j = 0; j < dim; j++)
                out[j] += weights[i] * row[j];
        } else {
            for (int64_t j = 0; j < dim; j++)
                out[j] += row[j];
        }
        kept++;
    }
    if (mode == BAG_MEAN && kept > 0)
        for (int64_t j = 0; j < dim; j++)
            out[j] /= (float)kept;
}

int table_bag(struct table *t, const int64_t *ids, const size_t *offsets, size_t nbags,
              const float *per_sample_weights, enum bag_mode mode, float *out, size_t *bad)
{
    if (per_sample_weights != NULL && mode != BAG_SUM)
        return CORE_EINVAL;
    if (mode != BAG_SUM && mode != BAG_MEAN && mode != BAG_MAX)
        return CORE_EINVAL;
    if (check_offsets(offsets, nbags) != CORE_OK)
        return CORE_EINVAL;
    size_t n = offsets[nbags];
    int rc = table_check_ids(t, ids, n, bad);
    if (rc != CORE_OK)
        return rc;
    if (t->s.has_max_norm && (rc = renorm_ids(t, ids, n)) != CORE_OK)
        return rc;
    size_t dim = (size_t)t->w.dim;
    float *row = malloc(dim * sizeof(float));
    if (row == NULL)
        return CORE_ENOMEM;
    memset(out, 0, nbags * dim * sizeof(float));
    for (size_t b = 0; b < nbags; b++) {
        const float *w = per_sample_weights != NULL ? per_sample_weights + offsets[b] : NULL;
        pool_bag(t, ids + offsets[b], offsets[b + 1] - offsets[b], w, mode, row, out + b * dim);
    }
    free(row);
    return CORE_OK;
}

/* ---- tokens and assignment --------------------------------------------- */

int table_resolve_tokens(const struct table *t, const char *const *tokens, const size_t *lens,
                         size_t n, bool allow_oov, int64_t *ids, size_t *bad)
{
    if (t->vocab == NULL)
        return CORE_EUNSUPPORTED;
    for (size_t i = 0; i < n; i++) {
        int64_t id = vocab_find(t->vocab, tokens[i], lens[i]);
        if (id < 0 && allow_oov && t->s.oov_id >= 0)
            id = t->s.oov_id;
        if (id < 0) {
            if (bad != NULL)
                *bad = i;
            return CORE_ENOTFOUND;
        }
        ids[i] = id;
    }
    return CORE_OK;
}

static int check_finite(const float *v, size_t n, size_t dim, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < dim; j++) {
            if (!isfinite(v[i * dim + j])) {
                if (bad != NULL)
                    *bad = i;
                return CORE_EINVAL;
            }
        }
    }
    return CORE_OK;
}

int table_check_rows(const struct table *t, const int64_t *ids, size_t n, const float *vectors,
                     size_t *bad)
{
    int rc = table_check_ids(t, ids, n, bad);
    if (rc == CORE_OK)
        rc = check_finite(vectors, n, (size_t)t->w.dim, bad);
    return rc;
}

int table_assign_rows(struct table *t, const int64_t *ids, size_t n, const float *vectors,
                      size_t *bad, uint64_t *version_out)
{
    size_t dim = (size_t)t->w.dim;
    int rc = table_check_rows(t, ids, n, vectors, bad);
    if (rc != CORE_OK)
        return rc;
    pthread_mutex_lock(&t->write_lock);
    for (size_t i = 0; i < n; i++) {
        int64_t stripe = table_stripe_of(ids[i]);
        table_write_begin(t, stripe);
        memcpy(matrix_row(&t->w, ids[i]), vectors + i * dim, dim * sizeof(float));
        table_update_norm(t, ids[i]);
        table_write_end(t, stripe);
    }
    uint64_t v = atomic_fetch_add_explicit(&t->version, 1, memory_order_acq_rel) + 1;
    atomic_fetch_add_explicit(&t->log_seq, 1, memory_order_acq_rel);
    pthread_mutex_unlock(&t->write_lock);
    if (version_out != NULL)
        *version_out = v;
    return CORE_OK;
}
