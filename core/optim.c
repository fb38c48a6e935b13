/* optim.c - one training step on a table: the backward of nn.Embedding
 * (sparse=True) followed by one step of torch.optim.SGD, SparseAdam or
 * Adagrad, with torch 1.13's float32 arithmetic operation for operation.
 *
 * What torch does, and so what this file does (checked against torch 1.13
 * by tests/fixtures/optim, made by scripts/gen_optim_fixtures.py):
 *  - The embedding backward makes an uncoalesced sparse gradient: one entry
 *    per non-padding id, in order of appearance.
 *  - SGD adds that gradient entry by entry: p = fma(g, -lr, p) for every
 *    occurrence in order (ATen's dense += sparse with alpha uses fmadd).
 *  - SparseAdam and Adagrad first coalesce it. Coalescing sorts the ids with
 *    an *unstable* std::sort and sums duplicates in the order the sort left
 *    them; beyond 16 ids that order differs from the order of appearance and
 *    so can the float32 sums. When an id occurs 3 times or more we sort with
 *    a replica of libstdc++'s introsort (torch_sort below) to sum in the
 *    very same order; otherwise order cannot matter (a + b == b + a) and a
 *    hash groups the ids faster.
 *  - scale_grad_by_freq is refused by torch with sparse gradients; we define
 *    it, for every optimizer, as the dense gradient torch would build:
 *    g_row = fma(g_i, (float)(1 / count), g_row) over occurrences in order of
 *    appearance, starting from zero, then one optimizer step on those rows.
 *
 * Writers: the caller's request is validated whole before the table's write
 * lock is taken; rows change only under that lock, each inside the
 * seqlock section of its stripe together with its cached norm.
 *
 * Speed: a batch's rows are scattered over a large table, so a step is
 * bound by memory latency; rows a few groups ahead are prefetched, and the
 * row kernels are AVX-512 where the build allows (bench/optim.c measures it
 * against torch).
 */
#include "optim.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "table_internal.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define HAVE_SIMD 1
#else
#define HAVE_SIMD 0
#endif

/* Torch fuses exactly where it calls fmadd and nowhere else; a compiler that
 * contracted a * b + c on its own would change the last bit. ISO C mode
 * already means no contraction in gcc; say it for any other build mode. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---- configuration ------------------------------------------------------ */

static const char *const kind_names[] = {
    [OPTIM_SGD] = "sgd",
    [OPTIM_SPARSE_ADAM] = "sparse_adam",
    [OPTIM_ADAGRAD] = "adagrad",
};

#define DEFAULT_SGD_LR 0.01

void optim_config_defaults(struct optim_config *c, enum optim_kind kind)
{
    memset(c, 0, sizeof(*c));
    c->kind = kind;
    switch (kind) {
    case OPTIM_SGD:
        c->lr = DEFAULT_SGD_LR;
        break;
    case OPTIM_SPARSE_ADAM:
        c->lr = 1e-3;
        c->beta1 = 0.9;
        c->beta2 = 0.999;
        c->eps = 1e-8;
        break;
    case OPTIM_ADAGRAD:
        c->lr = 1e-2;
        c->lr_decay = 0.0;
        c->initial_accumulator_value = 0.0;
        c->eps = 1e-10;
        break;
    }
}

bool optim_kind_parse(const char *name, enum optim_kind *kind)
{
    for (size_t i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
        if (strcmp(name, kind_names[i]) == 0) {
            *kind = (enum optim_kind)i;
            return true;
        }
    }
    return false;
}

const char *optim_kind_name(enum optim_kind kind)
{
    if ((size_t)kind >= sizeof(kind_names) / sizeof(kind_names[0]))
        return "unknown";
    return kind_names[kind];
}

/* The ranges torch's constructors accept, with our stricter "finite". */
int optim_config_check(const struct optim_config *c, char *err, size_t errlen)
{
    if ((size_t)c->kind >= sizeof(kind_names) / sizeof(kind_names[0]))
        return core_fail(err, errlen, CORE_EINVAL, "optimizer.name: unknown optimizer %d",
                         (int)c->kind);
    if (!isfinite(c->lr) || !(c->lr > 0))
        return core_fail(err, errlen, CORE_EINVAL, "optimizer.lr must be finite and > 0 (got %g)",
                         c->lr);
    if (c->kind == OPTIM_SPARSE_ADAM) {
        if (!(c->beta1 >= 0 && c->beta1 < 1))
            return core_fail(err, errlen, CORE_EINVAL,
                             "optimizer.betas[0] must be in [0, 1) (got %g)", c->beta1);
        if (!(c->beta2 >= 0 && c->beta2 < 1))
            return core_fail(err, errlen, CORE_EINVAL,
                             "optimizer.betas[1] must be in [0, 1) (got %g)", c->beta2);
        if (!isfinite(c->eps) || !(c->eps > 0))
            return core_fail(err, errlen, CORE_EINVAL,
                             "optimizer.eps must be finite and > 0 (got %g)", c->eps);
    }
    if (c->kind == OPTIM_ADAGRAD) {
        if (!isfinite(c->lr_decay) || !(c->lr_decay >= 0))
            return core_fail(err, errlen, CORE_EINVAL,
                             "optimizer.lr_decay must be finite and >= 0 (got %g)", c->lr_decay);
        if (!isfinite(c->initial_accumulator_value) || !(c->initial_accumulator_value >= 0))
            return core_fail(err, errlen, CORE_EINVAL,
                             "optimizer.initial_accumulator_value must be finite and >= 0 (got %g)",
                             c->initial_accumulator_value);
        if (!isfinite(c->eps) || !(c->eps >= 0))
            return core_fail(err, errlen, CORE_EINVAL,
                             "optimizer.eps must be finite and >= 0 (got %g)", c->eps);
    }
    return CORE_OK;
}

void optim_state_reset(struct optim *o)
{
    matrix_deinit(&o->exp_avg);
    matrix_deinit(&o->exp_avg_sq);
    matrix_deinit(&o->sum);
    o->step = 0;
}

static void effective_config(const struct optim *o, struct optim_config *out)
{
    if (o->configured)
        *out = o->cfg;
    else
        optim_config_defaults(out, OPTIM_SGD);
}

int table_set_optimizer(struct table *t, const struct optim_config *c, char *err, size_t errlen)
{
    int rc = optim_config_check(c, err, errlen);
    if (rc != CORE_OK)
        return rc;
    pthread_mutex_lock(&t->write_lock);
    struct optim_config old;
    effective_config(&t->optim, &old);
    if (old.kind != c->kind)
        optim_state_reset(&t->optim);
    t->optim.cfg = *c;
    t->optim.configured = true;
    pthread_mutex_unlock(&t->write_lock);
    return CORE_OK;
}

const struct optim *table_optimizer(const struct table *t)
{
    return &t->optim;
}

void table_optimizer_config(const struct table *t, struct optim_config *out)
{
    effective_config(&t->optim, out);
}

/* ---- torch's coalesce order ------------------------------------------- */

/* One entry of the sparse gradient: the row and where its gradient is. */
struct entry {
    int64_t id;
    size_t pos;
};

/* The rest of this section is libstdc++'s std::sort (introsort: median of
 * three quicksort down to 16 elements with a depth limit of 2 log2 n and a
 * heapsort fallback, then one insertion sort pass), step for step, comparing
 * ids only. Torch 1.13 coalesces with that sort, and equal ids end up in an
 * order only this exact algorithm reproduces. */
#define SORT_THRESHOLD 16

static inline bool less(const struct entry *a, const struct entry *b)
{
    return a->id < b->id;
}

static inline void swap(struct entry *a, struct entry *b)
{
    struct entry tmp = *a;
    *a = *b;
    *b = tmp;
}

static void move_median_to_first(struct entry *result, struct entry *a, struct entry *b,
                                 struct entry *c)
{
    if (less(a, b)) {
        if (less(b, c))
            swap(result, b);
        else if (less(a, c))
            swap(result, c);
        else
            swap(result, a);
    } else if (less(a, c)) {
        swap(result, a);
    } else if (less(b, c)) {
        swap(result, c);
    } else {
        swap(result, b);
    }
}

static struct entry *unguarded_partition(struct entry *first, struct entry *last,
                                         const struct entry *pivot)
{
    for (;;) {
        while (less(first, pivot))
            first++;
        last--;
        while (less(pivot, last))
            last--;
        if (!(first < last))
            return first;
        swap(first, last);
        first++;
    }
}

static void adjust_heap(struct entry *first, ptrdiff_t hole, ptrdiff_t len, struct entry value)
{
    ptrdiff_t top = hole;
    ptrdiff_t child = hole;
    while (child < (len - 1) / 2) {
        child = 2 * (child + 1);
        if (less(&first[child], &first[child - 1]))
            child--;
        first[hole] = first[child];
        hole = child;
    }
    if ((len & 1) == 0 && child == (len - 2) / 2) {
        child = 2 * (child + 1);
        first[hole] = first[child - 1];
        hole = child - 1;
    }
    ptrdiff_t parent = (hole - 1) / 2;
    while (hole > top && less(&first[parent], &value)) {
        first[hole] = first[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    first[hole] = value;
}

static void heap_sort(struct entry *first, struct entry *last)
{
    ptrdiff_t len = last - first;
    if (len >= 2) {
        for (ptrdiff_t parent = (len - 2) / 2;; parent--) {
            adjust_heap(first, parent, len, first[parent]);
            if (parent == 0)
                break;
        }
    }
    while (last - first > 1) {
        last--;
        struct entry value = *last;
        *last = *first;
        adjust_heap(first, 0, last - first, value);
    }
}

static void introsort_loop(struct entry *first, struct entry *last, int depth)
{
    while (last - first > SORT_THRESHOLD) {
        if (depth == 0) {
            heap_sort(first, last);
            return;
        }
        depth--;
        struct entry *mid = first + (last - first) / 2;
        move_median_to_first(first, first + 1, mid, last - 1);
        struct entry *cut = unguarded_partition(first + 1, last, first);
        introsort_loop(cut, last, depth);
        last = cut;
    }
}

static void unguarded_linear_insert(struct entry *last)
{
    struct entry value = *last;
    struct entry *next = last - 1;
    while (less(&value, next)) {
        *last = *next;
        last = next;
        next--;
    }
    *last = value;
}

static void insertion_sort(struct entry *first, struct entry *last)
{
    if (first == last)
        return;
    for (struct entry *i = first + 1; i != last; i++) {
        if (less(i, first)) {
            struct entry value = *i;
            memmove(first + 1, first, (size_t)(i - first) * sizeof(*i));
            *first = value;
        } else {
            unguarded_linear_insert(i);
        }
    }
}

static int floor_log2(size_t n)
{
    int lg = 0;
    while (n >>= 1)
        lg++;
    return lg;
}

static void torch_sort(struct entry *a, size_t n)
{
    if (n == 0)
        return;
    introsort_loop(a, a + n, 2 * floor_log2(n));
    if (n > SORT_THRESHOLD) {
        insertion_sort(a, a + SORT_THRESHOLD);
        for (struct entry *i = a + SORT_THRESHOLD; i != a + n; i++)
            unguarded_linear_insert(i);
    } else {
        insertion_sort(a, a + n);
    }
}

/* ---- the step's plan: which rows, and in which order ------------------- */

struct plan {
    struct entry *e;    /* non-padding entries, grouped by id */
    size_t n;
    size_t *start;      /* group g is e[start[g] .. start[g + 1]) */
    size_t rows;        /* distinct ids = groups */
    float *buf;         /* one coalesced gradient row (dim floats) */
    /* grouping scratch */
    struct entry *seen; /* entries in order of appearance */
    size_t *group_of;   /* group of seen[k] */
    int64_t *group_id;  /* id of group g */
    size_t *fill;       /* counting sort cursors */
    size_t *slots;      /* hash of id -> group + 1; 0 = empty */
    size_t nslots;
};

static void plan_free(struct plan *p)
{
    free(p->e);
    free(p->start);
    free(p->buf);
    free(p->seen);
    free(p->group_of);
    free(p->group_id);
    free(p->fill);
    free(p->slots);
}

static int plan_alloc(struct plan *p, size_t n, int64_t dim)
{
    memset(p, 0, sizeof(*p));
    size_t n1 = n > 0 ? n : 1;
    p->nslots = 16;
    while (p->nslots < 2 * n)
        p->nslots *= 2;
    p->e = malloc(n1 * sizeof(*p->e));
    p->start = malloc((n + 1) * sizeof(*p->start));
    p->buf = malloc((size_t)dim * sizeof(float));
    p->seen = malloc(n1 * sizeof(*p->seen));
    p->group_of = malloc(n1 * sizeof(*p->group_of));
    p->group_id = malloc(n1 * sizeof(*p->group_id));
    p->fill = malloc((n + 1) * sizeof(*p->fill));
    p->slots = calloc(p->nslots, sizeof(*p->slots));
    if (p->e == NULL || p->start == NULL || p->buf == NULL || p->seen == NULL ||
        p->group_of == NULL || p->group_id == NULL || p->fill == NULL || p->slots == NULL) {
        plan_free(p);
        return CORE_ENOMEM;
    }
    return CORE_OK;
}

/* The group of id, created when new (open addressing, linear probing). */
static size_t group_find(struct plan *p, int64_t id)
{
    size_t mask = p->nslots - 1;
    size_t h = (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & mask;
    for (;; h = (h + 1) & mask) {
        size_t g = p->slots[h];
        if (g == 0) {
            p->group_id[p->rows] = id;
            p->slots[h] = ++p->rows;
            return p->rows - 1;
        }
        if (p->group_id[g - 1] == id)
            return g - 1;
    }
}

/* Lists the non-padding entries in order of appearance (seen[]) and finds
 * each one's group; p->rows becomes the number of distinct ids. */
static void hash_entries(struct plan *p, const struct table *t, const int64_t *ids, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->s.has_padding && ids[i] == t->s.padding_idx)
            continue;
        p->seen[m] = (struct entry){ids[i], i};
        p->group_of[m] = group_find(p, ids[i]);
        m++;
    }
    p->n = m;
}

/* A stable counting sort of seen[] by group: groups in order of first
 * appearance, each group's occurrences in order of appearance. Returns the
 * largest group's size. */
static size_t group_by_hash(struct plan *p)
{
    size_t m = p->n;
    memset(p->fill, 0, (p->rows + 1) * sizeof(*p->fill));
    for (size_t k = 0; k < m; k++)
        p->fill[p->group_of[k] + 1]++;
    size_t largest = 0;
    for (size_t g = 0; g < p->rows; g++) {
        if (p->fill[g + 1] > largest)
            largest = p->fill[g + 1];
        p->fill[g + 1] += p->fill[g];
    }
    memcpy(p->start, p->fill, (p->rows + 1) * sizeof(*p->start));
    for (size_t k = 0; k < m; k++)
        p->e[p->fill[p->group_of[k]]++] = p->seen[k];
    return largest;
}

/* Groups in torch's coalesce order: libstdc++'s sort of the entries. */
static void group_like_torch(struct plan *p, const struct table *t, const int64_t *ids, size_t n)
{
    p->n = 0;
    p->rows = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->s.has_padding && ids[i] == t->s.padding_idx)
            continue;
        p->e[p->n++] = (struct entry){ids[i], i};
    }
    torch_sort(p->e, p->n);
    for (size_t b = 0, e; b < p->n; b = e) {
        for (e = b + 1; e < p->n && p->e[e].id == p->e[b].id;)
            e++;
        p->start[p->rows++] = b;
    }
    p->start[p->rows] = p->n;
}

/* How a step walks its entries. */
enum walk {
    WALK_ENTRIES,     /* sparse SGD: entry by entry in order, as ATen adds */
    WALK_IN_ORDER,    /* groups, occurrences in order (scale_grad_by_freq) */
    WALK_COALESCED,   /* groups summed in torch's coalesce order */
};

/* Groups the entries by id as the walk needs, into p fresh from plan_alloc
 * for n ids or more (nothing here can fail). Torch's coalesce order only
 * matters for an id seen 3 times or more (a + b == b + a exactly), so the
 * libstdc++ replica runs only then. */
static void plan_build(struct plan *p, const struct table *t, const int64_t *ids, size_t n,
                       enum walk walk)
{
    hash_entries(p, t, ids, n);
    if (walk == WALK_ENTRIES)
        return;
    size_t largest = group_by_hash(p);
    if (walk == WALK_COALESCED && largest >= 3)
        group_like_torch(p, t, ids, n);
}

/* ---- validation --------------------------------------------------------- */

/* Index of the first NaN or infinity in v[0..count), or count. A float is
 * not finite exactly when its exponent bits are all ones. */
static size_t first_nonfinite(const float *v, size_t count)
{
    size_t i = 0;
#if defined(__AVX512F__)
    const __m512i exp_mask = _mm512_set1_epi32(0x7f800000);
    for (; i + 16 <= count; i += 16) {
        __m512i x = _mm512_and_si512(_mm512_loadu_si512(v + i), exp_mask);
        if (_mm512_cmpeq_epi32_mask(x, exp_mask) != 0)
            break;
    }
#endif
    for (; i < count; i++)
        if (!isfinite(v[i]))
            return i;
    return count;
}

static int check_grads(const float *grads, size_t count, size_t *bad)
{
    size_t i = first_nonfinite(grads, count);
    if (i < count) {
        if (bad != NULL)
            *bad = i;
        return CORE_EINVAL;
    }
    return CORE_OK;
}

static int check_request(const struct table *t, const int64_t *ids, size_t n, const float *grads,
                         double lr, size_t *bad)
{
    if (t->s.freeze)
        return CORE_EFROZEN;
    if (!isfinite(lr)) {
        if (bad != NULL)
            *bad = SIZE_MAX;
        return CORE_EINVAL;
    }
    int rc = table_check_ids(t, ids, n, bad);
    if (rc == CORE_OK)
        rc = check_grads(grads, n * (size_t)t->w.dim, bad);
    return rc;
}

/* ---- state -------------------------------------------------------------- */

static int ensure_matrix(struct matrix *m, const struct matrix *w, float fill)
{
    if (m->data != NULL)
        return CORE_OK;
    int rc = matrix_init(m, w->rows, w->dim);
    if (rc != CORE_OK)
        return rc;
    /* matrix_init asked for huge pages: rows of a step are scattered */
    if (fill == 0.0f)
        return CORE_OK;
    for (int64_t r = 0; r < m->rows; r++) {
        float *row = matrix_row(m, r);
        for (int64_t j = 0; j < m->dim; j++)
            row[j] = fill;
    }
    return CORE_OK;
}

/* Allocates the optimizer's state on its first step, as torch does. */
static int ensure_state(struct table *t, const struct optim_config *c)
{
    struct optim *o = &t->optim;
    if (c->kind == OPTIM_SPARSE_ADAM) {
        int rc = ensure_matrix(&o->exp_avg, &t->w, 0.0f);
        if (rc == CORE_OK)
            rc = ensure_matrix(&o->exp_avg_sq, &t->w, 0.0f);
        return rc;
    }
    if (c->kind == OPTIM_ADAGRAD)
        return ensure_matrix(&o->sum, &t->w, (float)c->initial_accumulator_value);
    return CORE_OK;
}

/* ---- kernels: one row, torch's operations in torch's order --------------- */

/* The per-step scalars, rounded where torch rounds them. */
struct step_consts {
    float neg_lr;       /* sgd: (float)-lr */
    float one_minus_b1; /* sparse_adam: (float)(1 - beta1) */
    float one_minus_b2;
    float neg_step_size; /* sparse_adam: (float)-(lr * sqrt(bc2) / bc1) */
    float eps;
    float neg_clr;      /* adagrad: (float)-(lr / (1 + (step - 1) * lr_decay)) */
};

static void step_consts_init(struct step_consts *k, const struct optim_config *c, double lr,
                             int64_t step)
{
    memset(k, 0, sizeof(*k));
    k->neg_lr = (float)-lr;
    k->eps = (float)c->eps;
    if (c->kind == OPTIM_SPARSE_ADAM) {
        /* sparse_adam: python floats (double) for the bias corrections */
        double bc1 = 1.0 - pow(c->beta1, (double)step);
        double bc2 = 1.0 - pow(c->beta2, (double)step);
        double step_size = lr * sqrt(bc2) / bc1;
        k->one_minus_b1 = (float)(1.0 - c->beta1);
        k->one_minus_b2 = (float)(1.0 - c->beta2);
        k->neg_step_size = (float)-step_size;
    } else if (c->kind == OPTIM_ADAGRAD) {
        double clr = lr / (1.0 + ((double)step - 1.0) * c->lr_decay);
        k->neg_clr = (float)-clr;
    }
}

/* Each kernel exists twice: portable loops, and AVX-512 with masked tails
 * where the build targets it. Both do the same IEEE operations on each
 * element (add, sub, mul, div, sqrt correctly rounded; fma where torch
 * fuses), so they give identical bits; the vector one is only faster.
 * optim_set_simd(false) lets the tests run the portable one here too. */

static bool use_simd = HAVE_SIMD;

void optim_set_simd(bool enabled)
{
    use_simd = enabled && HAVE_SIMD;
}

/* exp_avg.add_((g - m) * (1 - b1)); exp_avg_sq likewise with g^2; then
 * p += -step_size * ((upd_m + m) / (sqrt(upd_v + v) + eps)). */
static void adam_row_scalar(float *restrict p, float *restrict m, float *restrict v,
                            const float *restrict g, int64_t dim, const struct step_consts *k)
{
    for (int64_t j = 0; j < dim; j++) {
        float om = m[j], ov = v[j], gj = g[j];
        float um = (gj - om) * k->one_minus_b1;
        float g2 = gj * gj;
        float uv = (g2 - ov) * k->one_minus_b2;
        m[j] = om + um;
        v[j] = ov + uv;
        float numer = um + om;
        float denom = sqrtf(uv + ov) + k->eps;
        float q = numer / denom;
        p[j] = p[j] + k->neg_step_size * q;
    }
}

/* state_sum.add_(g^2); std = sqrt(sum) + eps; p.add_(g / std, alpha=-clr). */
static void adagrad_row_scalar(float *restrict p, float *restrict s, const float *restrict g,
                               int64_t dim, const struct step_consts *k)
{
    for (int64_t j = 0; j < dim; j++) {
        float gj = g[j];
        float g2 = gj * gj;
        float sj = s[j] + g2;
        s[j] = sj;
        float std = sqrtf(sj) + k->eps;
        float q = gj / std;
        p[j] = fmaf(q, k->neg_clr, p[j]);
    }
}

/* p.add_(g, alpha=a) in ATen: fmadd. Also the dense gradient's
 * grad_weight[k].add_(grad[i], scale). */
static void axpy_scalar(float *restrict p, const float *restrict g, int64_t dim, float a)
{
    for (int64_t j = 0; j < dim; j++)
        p[j] = fmaf(g[j], a, p[j]);
}

/* coalesce's axpy with alpha 1: a plain add. */
static void add_scalar(float *restrict p, const float *restrict g, int64_t dim)
{
    for (int64_t j = 0; j < dim; j++)
        p[j] = p[j] + g[j];
}

#if HAVE_SIMD
/* Lanes [j, j + 16) that are inside the row. */
static inline __mmask16 lanes(int64_t j, int64_t dim)
{
    int64_t left = dim - j;
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

static void adam_row_simd(float *restrict p, float *restrict m, float *restrict v,
                          const float *restrict g, int64_t dim, const struct step_consts *k)
{
    const __m512 c1 = _mm512_set1_ps(k->one_minus_b1), c2 = _mm512_set1_ps(k->one_minus_b2);
    const __m512 eps = _mm512_set1_ps(k->eps), nss = _mm512_set1_ps(k->neg_step_size);
    for (int64_t j = 0; j < dim; j += 16) {
        __mmask16 l = lanes(j, dim);
        __m512 om = _mm512_maskz_loadu_ps(l, m + j), ov = _mm512_maskz_loadu_ps(l, v + j);
        __m512 gj = _mm512_maskz_loadu_ps(l, g + j), pj = _mm512_maskz_loadu_ps(l, p + j);
        __m512 um = _mm512_mul_ps(_mm512_sub_ps(gj, om), c1);
        __m512 uv = _mm512_mul_ps(_mm512_sub_ps(_mm512_mul_ps(gj, gj), ov), c2);
        _mm512_mask_storeu_ps(m + j, l, _mm512_add_ps(om, um));
        _mm512_mask_storeu_ps(v + j, l, _mm512_add_ps(ov, uv));
        __m512 numer = _mm512_add_ps(um, om);
        __m512 denom = _mm512_add_ps(_mm512_sqrt_ps(_mm512_add_ps(uv, ov)), eps);
        __m512 q = _mm512_div_ps(numer, denom);
        _mm512_mask_storeu_ps(p + j, l, _mm512_add_ps(pj, _mm512_mul_ps(nss, q)));
    }
}

static void adagrad_row_simd(float *restrict p, float *restrict s, const float *restrict g,
                             int64_t dim, const struct step_consts *k)
{
    const __m512 eps = _mm512_set1_ps(k->eps), nclr = _mm512_set1_ps(k->neg_clr);
    for (int64_t j = 0; j < dim; j += 16) {
        __mmask16 l = lanes(j, dim);
        __m512 gj = _mm512_maskz_loadu_ps(l, g + j), pj = _mm512_maskz_loadu_ps(l, p + j);
        __m512 sj = _mm512_add_ps(_mm512_maskz_loadu_ps(l, s + j), _mm512_mul_ps(gj, gj));
        _mm512_mask_storeu_ps(s + j, l, sj);
        __m512 std = _mm512_add_ps(_mm512_sqrt_ps(sj), eps);
        __m512 q = _mm512_div_ps(gj, std);
        _mm512_mask_storeu_ps(p + j, l, _mm512_fmadd_ps(q, nclr, pj));
    }
}

static void axpy_simd(float *restrict p, const float *restrict g, int64_t dim, float a)
{
    const __m512 av = _mm512_set1_ps(a);
    for (int64_t j = 0; j < dim; j += 16) {
        __mmask16 l = lanes(j, dim);
        __m512 r = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(l, g + j), av,
                                   _mm512_maskz_loadu_ps(l, p + j));
        _mm512_mask_storeu_ps(p + j, l, r);
    }
}

static void add_simd(float *restrict p, const float *restrict g, int64_t dim)
{
    for (int64_t j = 0; j < dim; j += 16) {
        __mmask16 l = lanes(j, dim);
        __m512 r = _mm512_add_ps(_mm512_maskz_loadu_ps(l, p + j), _mm512_maskz_loadu_ps(l, g + j));
        _mm512_mask_storeu_ps(p + j, l, r);
    }
}
#define PICK(name) (use_simd ? name##_simd : name##_scalar)
#else
#define PICK(name) name##_scalar
#endif

static void adam_row(float *p, float *m, float *v, const float *g, int64_t dim,
                     const struct step_consts *k)
{
    PICK(adam_row)(p, m, v, g, dim, k);
}

static void adagrad_row(float *p, float *s, const float *g, int64_t dim,
                        const struct step_consts *k)
{
    PICK(adagrad_row)(p, s, g, dim, k);
}

static void axpy(float *p, const float *g, int64_t dim, float a)
{
    PICK(axpy)(p, g, dim, a);
}

static void add(float *p, const float *g, int64_t dim)
{
    PICK(add)(p, g, dim);
}

/* Sums a group's gradients as coalesce does (axpy with alpha 1: plain adds)
 * and returns the row to use: the gradient itself for a single occurrence. */
static const float *coalesce_group(const struct entry *e, size_t count, const float *grads,
                                   int64_t dim, float *buf)
{
    const float *first = grads + e[0].pos * (size_t)dim;
    if (count == 1)
        return first;
    memcpy(buf, first, (size_t)dim * sizeof(float));
    for (size_t k = 1; k < count; k++)
        add(buf, grads + e[k].pos * (size_t)dim, dim);
    return buf;
}

/* The dense gradient of a scale_grad_by_freq embedding: zeros, then
 * grad_weight[k].add_(grad[i], 1.0 / count) for each occurrence in order. */
static const float *scaled_group(const struct entry *e, size_t count, const float *grads,
                                 int64_t dim, float *buf)
{
    float scale = (float)(1.0 / (double)count);
    memset(buf, 0, (size_t)dim * sizeof(float));
    for (size_t k = 0; k < count; k++)
        axpy(buf, grads + e[k].pos * (size_t)dim, dim, scale);
    return buf;
}

/* ---- the step ------------------------------------------------------------ */

struct step {
    struct table *t;
    const struct optim_config *cfg;
    struct step_consts k;
    const float *grads;
    bool scale;
};

/* Updates one row (one group of entries) inside its stripe's write section,
 * with its norm. */
static void apply_group(struct step *s, const struct entry *e, size_t count, float *buf)
{
    struct table *t = s->t;
    int64_t dim = t->w.dim, id = e[0].id;
    float *p = matrix_row(&t->w, id);
    int64_t stripe = table_stripe_of(id);
    table_write_begin(t, stripe);
    const float *g = s->scale ? scaled_group(e, count, s->grads, dim, buf)
                              : coalesce_group(e, count, s->grads, dim, buf);
    if (s->cfg->kind == OPTIM_SGD)
        axpy(p, g, dim, s->k.neg_lr);
    else if (s->cfg->kind == OPTIM_SPARSE_ADAM)
        adam_row(p, matrix_row(&t->optim.exp_avg, id), matrix_row(&t->optim.exp_avg_sq, id), g,
                 dim, &s->k);
    else
        adagrad_row(p, matrix_row(&t->optim.sum, id), g, dim, &s->k);
    table_update_norm(t, id);
    table_write_end(t, stripe);
}

/* Rows of a batch are scattered over the table: ask for those a few groups
 * ahead so their cache misses overlap with the arithmetic of this one. */
#define PREFETCH_GROUPS 8
/* An SGD entry is a few instructions, so it needs a longer lead (measured
 * on a 1M x 64 table: 16 beat 8 and 24). */
#define PREFETCH_ENTRIES 16

/* always_inline: as separate functions holding only prefetches, gcc's
 * pure/const analysis finds them side-effect free and deletes the calls. */
static inline __attribute__((always_inline)) void prefetch_row(const struct matrix *m,
                                                               int64_t id)
{
    if (m->data == NULL)
        return;
    const char *row = (const char *)matrix_row(m, id);
    for (int64_t off = 0; off < m->dim * (int64_t)sizeof(float); off += 64)
        __builtin_prefetch(row + off, 1, 3);
}

static inline __attribute__((always_inline)) void prefetch_group(const struct step *s,
                                                                 int64_t id)
{
    prefetch_row(&s->t->w, id);
    __builtin_prefetch(&s->t->norms[id], 1, 3);
    if (s->cfg->kind == OPTIM_SPARSE_ADAM) {
        prefetch_row(&s->t->optim.exp_avg, id);
        prefetch_row(&s->t->optim.exp_avg_sq, id);
    } else if (s->cfg->kind == OPTIM_ADAGRAD) {
        prefetch_row(&s->t->optim.sum, id);
    }
}

/* Sparse SGD: p.add_(grad, alpha=-lr) with an uncoalesced gradient adds
 * entry by entry, so duplicates update the row one after the other. */
static void apply_entries(struct step *s, const struct plan *p)
{
    struct table *t = s->t;
    int64_t dim = t->w.dim;
    for (size_t k = 0; k < p->n && k < PREFETCH_ENTRIES; k++)
        prefetch_group(s, p->seen[k].id);
    for (size_t k = 0; k < p->n; k++) {
        if (k + PREFETCH_ENTRIES < p->n)
            prefetch_group(s, p->seen[k + PREFETCH_ENTRIES].id);
        int64_t id = p->seen[k].id, stripe = table_stripe_of(id);
        table_write_begin(t, stripe);
        axpy(matrix_row(&t->w, id), s->grads + p->seen[k].pos * (size_t)dim, dim, s->k.neg_lr);
        table_update_norm(t, id);
        table_write_end(t, stripe);
    }
}

static void apply_plan(struct step *s, const struct plan *p)
{
    for (size_t g = 0; g < p->rows && g < PREFETCH_GROUPS; g++)
        prefetch_group(s, p->e[p->start[g]].id);
    for (size_t g = 0; g < p->rows; g++) {
        if (g + PREFETCH_GROUPS < p->rows)
            prefetch_group(s, p->e[p->start[g + PREFETCH_GROUPS]].id);
        apply_group(s, p->e + p->start[g], p->start[g + 1] - p->start[g], p->buf);
    }
}

int table_check_gradients(const struct table *t, const int64_t *ids, size_t n,
                          const float *grads, double lr, size_t *bad)
{
    return check_request(t, ids, n, grads, lr, bad);
}

/* What a step allocates (see table_internal.h): the plan's arrays and the
 * optimizer's state on its first step. */
struct step_plan {
    struct plan plan;
    size_t n;
};

int table_step_prepare(struct table *t, const struct optim_config *cfg, size_t n,
                       struct step_plan **out)
{
    *out = NULL;
    struct step_plan *sp = malloc(sizeof *sp);
    if (sp == NULL)
        return CORE_ENOMEM;
    int rc = plan_alloc(&sp->plan, n, t->w.dim);
    if (rc != CORE_OK) {
        free(sp);
        return rc;
    }
    rc = ensure_state(t, cfg);
    if (rc != CORE_OK) {
        table_step_discard(sp);
        return rc;
    }
    sp->n = n;
    *out = sp;
    return CORE_OK;
}

void table_step_discard(struct step_plan *sp)
{
    if (sp == NULL)
        return;
    plan_free(&sp->plan);
    free(sp);
}

void table_step_run(struct table *t, const struct optim_config *cfg_in, struct step_plan *sp,
                    const int64_t *ids, size_t n, const float *grads, uint64_t *version_out,
                    size_t *rows_out)
{
    assert(n <= sp->n);
    struct plan *plan = &sp->plan;
    struct optim_config cfg = *cfg_in;
    enum walk walk = t->s.scale_grad_by_freq ? WALK_IN_ORDER
                     : cfg.kind == OPTIM_SGD ? WALK_ENTRIES
                                             : WALK_COALESCED;
    plan_build(plan, t, ids, n, walk);
    struct step s = {.t = t, .cfg = &cfg, .grads = grads, .scale = t->s.scale_grad_by_freq};
    t->optim.step++;
    step_consts_init(&s.k, &cfg, cfg.lr, t->optim.step);
    if (walk == WALK_ENTRIES)
        apply_entries(&s, plan);
    else
        apply_plan(&s, plan);
    uint64_t version = atomic_fetch_add_explicit(&t->version, 1, memory_order_acq_rel) + 1;
    atomic_fetch_add_explicit(&t->log_seq, 1, memory_order_acq_rel);
    if (version_out != NULL)
        *version_out = version;
    if (rows_out != NULL)
        *rows_out = plan->rows;
    table_step_discard(sp);
}

int table_step_locked(struct table *t, const struct optim_config *cfg, const int64_t *ids,
                      size_t n, const float *grads, uint64_t *version_out, size_t *rows_out)
{
    struct step_plan *sp;
    int rc = table_step_prepare(t, cfg, n, &sp);
    if (rc == CORE_OK)
        table_step_run(t, cfg, sp, ids, n, grads, version_out, rows_out);
    return rc;
}

/* The step itself, after validation; cfg is the optimizer to step with (lr
 * included), or NULL for the table's effective one with lr > 0 overriding
 * its lr. Takes the write lock. */
static int apply_step(struct table *t, const struct optim_config *cfg_in, double lr,
                      uint64_t *version_out, size_t *rows_out, const int64_t *ids, size_t n,
                      const float *grads)
{
    pthread_mutex_lock(&t->write_lock);
    struct optim_config cfg;
    if (cfg_in != NULL) {
        cfg = *cfg_in;
    } else {
        effective_config(&t->optim, &cfg);
        if (lr > 0)
            cfg.lr = lr;
    }
    int rc = table_step_locked(t, &cfg, ids, n, grads, version_out, rows_out);
    pthread_mutex_unlock(&t->write_lock);
    return rc;
}

int table_apply_gradients(struct table *t, const int64_t *ids, size_t n, const float *grads,
                          double lr, size_t *bad, uint64_t *version_out, size_t *rows_out)
{
    int rc = check_request(t, ids, n, grads, lr, bad);
    if (rc != CORE_OK)
        return rc;
    return apply_step(t, NULL, lr, version_out, rows_out, ids, n, grads);
}

int table_apply_logged_gradients(struct table *t, const struct optim_config *cfg,
                                 const int64_t *ids, size_t n, const float *grads,
                                 size_t *bad, uint64_t *version_out, size_t *rows_out)
{
    int rc = optim_config_check(cfg, NULL, 0);
    if (rc != CORE_OK) {
        if (bad != NULL)
            *bad = SIZE_MAX;
        return rc;
    }
    rc = table_check_ids(t, ids, n, bad);
    if (rc == CORE_OK)
        rc = check_grads(grads, n * (size_t)t->w.dim, bad);
    if (rc != CORE_OK)
        return rc;
    return apply_step(t, cfg, 0.0, version_out, rows_out, ids, n, grads);
}
