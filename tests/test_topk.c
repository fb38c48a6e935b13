/* test_topk.c - exact top-k search: the canonical kernels bit for bit,
 * gensim's most_similar top-10, numpy brute force (dot, l2, cosine; a padding
 * row, excluded rows, duplicate rows, k = 1000), ties by lower id, k larger
 * than the table, batches equal to single queries, thread splits, and no
 * torn rows while a writer runs. Fixtures: scripts/gen_similarity_fixtures.py. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels.h"
#include "similarity.h"
#include "threads.h"
#include "topk.h"
#include "table.h"
#include "testutil.h"

/* ---- helpers ----------------------------------------------------------- */

static struct table *table_from(const float *data, int64_t rows, int64_t dim, int64_t padding)
{
    struct matrix m;
    ck_assert_int_eq(matrix_init(&m, rows, dim), CORE_OK);
    for (int64_t r = 0; r < rows; r++)
        memcpy(matrix_row(&m, r), data + r * dim, (size_t)dim * sizeof(float));
    struct table_settings s;
    table_settings_init(&s);
    if (padding >= 0) {
        s.has_padding = true;
        s.padding_idx = padding;
    }
    struct table *t = NULL;
    char err[256];
    ck_assert_msg(table_new(&t, "t", &m, NULL, &s, err, sizeof(err)) == CORE_OK, "%s", err);
    return t;
}

/* Deterministic pseudo-random floats in [-1, 1). */
static float *random_floats(size_t n, uint64_t seed)
{
    float *v = malloc(n * sizeof(float));
    ck_assert_ptr_nonnull(v);
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return v;
}

struct results {
    struct topk_hit *hits;
    size_t *counts;
};

static struct results search(const struct table *t, const float *q, size_t nq,
                             const int64_t *exclude, size_t k, enum metric m)
{
    struct results r = {malloc(nq * k * sizeof(struct topk_hit)), malloc(nq * sizeof(size_t))};
    ck_assert_int_eq(topk_search(t, q, nq, exclude, k, m, r.hits, r.counts), CORE_OK);
    return r;
}

static void results_free(struct results *r)
{
    free(r->hits);
    free(r->counts);
}

/* ---- kernels ----------------------------------------------------------- */

static float tree(const float l[16])
{
    float s8[8], s4[4];
    for (int j = 0; j < 8; j++)
        s8[j] = l[j] + l[j + 8];
    for (int j = 0; j < 4; j++)
        s4[j] = s8[j] + s8[j + 4];
    return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* The canonical order of kernels.h, written out plainly. */
static float reference(const float *a, const float *b, int64_t n, bool l2)
{
    float acc[16] = {0};
    for (int64_t c = 0; c < n; c += 16)
        for (int j = 0; j < 16; j++) {
            float x = c + j < n ? a[c + j] : 0.0f, y = c + j < n ? b[c + j] : 0.0f;
            float d = x - y;
            acc[j] = l2 ? fmaf(d, d, acc[j]) : fmaf(x, y, acc[j]);
        }
    return tree(acc);
}

START_TEST(kernels_match_canonical_order)
{
    int64_t nr = 37, ld = 41;
    for (int64_t dim = 1; dim <= 70; dim++) {
        int64_t st = dim + 3;
        float *q = random_floats((size_t)(9 * st), (uint64_t)dim);
        float *r = random_floats((size_t)(nr * st), (uint64_t)dim + 100);
        float *out = malloc((size_t)(9 * ld) * sizeof(float));
        for (int nq = 1; nq <= 9; nq++) {
            for (int l2 = 0; l2 < 2; l2++) {
                kern_block(q, st, nq, r, st, (int)nr, dim, l2, out, ld);
                for (int i = 0; i < nq; i++) {
                    for (int64_t j = 0; j < nr; j++) {
                        float want = reference(q + i * st, r + j * st, dim, l2);
                        float one = l2 ? kern_l2sq(q + i * st, r + j * st, dim)
                                       : kern_dot(q + i * st, r + j * st, dim);
                        ck_assert_msg(memcmp(&want, &out[i * ld + j], 4) == 0 &&
                                          memcmp(&want, &one, 4) == 0,
                                      "dim %lld nq %d (%d,%lld) l2 %d: %a %a %a", (long long)dim,
                                      nq, i, (long long)j, l2, (double)want,
                                      (double)out[i * ld + j], (double)one);
                    }
                }
            }
        }
        free(q);
        free(r);
        free(out);
    }
}
END_TEST

START_TEST(gate_and_transforms)
{
    float s[20];
    for (int i = 0; i < 20; i++)
        s[i] = (float)i;
    s[3] = NAN;
    uint64_t m = kern_gate(s, 20, 17.0f);
    ck_assert_uint_eq(m, (1ull << 3) | (1ull << 17) | (1ull << 18) | (1ull << 19));
    ck_assert_uint_eq(kern_gate(s, 5, -INFINITY), 0x1f);
    float d[18] = {0};
    d[1] = 4.0f;
    d[17] = 9.0f;
    kern_neg_sqrt(d, 18);
    ck_assert(signbit(d[0]) && signbit(d[16]) && d[0] == 0.0f);
    ck_assert_float_eq(d[1], -2.0f);
    ck_assert_float_eq(d[17], -3.0f);
    float c[2] = {1.0f, 1.0f}, norms[2] = {4.0f, 0.0f};
    kern_cosine(c, norms, 2, 0.5f, 1e-8f);
    ck_assert_float_eq(c[0], 0.5f);
    ck_assert_float_eq(c[1], 1.0f / (0.5f * 1e-8f));
}
END_TEST

/* ---- against gensim and numpy ------------------------------------------ */

START_TEST(gensim_most_similar_top10)
{
    size_t n;
    int64_t *shape = fixture_i64("similarity/gensim_shape.i64", &n);
    int64_t rows = shape[0], dim = shape[1], nq = shape[2], topn = shape[3];
    float *w = fixture_f32("similarity/gensim_table.f32", &n);
    ck_assert_uint_eq(n, (size_t)(rows * dim));
    int64_t *qids = fixture_i64("similarity/gensim_queries.i64", &n);
    int64_t *ids = fixture_i64("similarity/gensim_ids.i64", &n);
    float *scores = fixture_f32("similarity/gensim_scores.f32", &n);
    ck_assert_uint_eq(n, (size_t)(nq * topn));
    struct table *t = table_from(w, rows, dim, -1);

    /* id queries as the service makes them: the row, excluding itself */
    float *q = malloc((size_t)(nq * dim) * sizeof(float));
    for (int64_t i = 0; i < nq; i++)
        table_read_row(t, qids[i], q + i * dim);
    struct results r = search(t, q, (size_t)nq, qids, (size_t)topn, METRIC_COSINE);
    for (int64_t i = 0; i < nq; i++) {
        ck_assert_uint_eq(r.counts[i], (size_t)topn);
        for (int64_t j = 0; j < topn; j++) {
            struct topk_hit h = r.hits[i * topn + j];
            ck_assert_msg(h.id == ids[i * topn + j], "query %lld rank %lld: id %lld, gensim %lld",
                          (long long)qids[i], (long long)j, (long long)h.id,
                          (long long)ids[i * topn + j]);
            ck_assert_float_eq_tol(h.score, scores[i * topn + j], 1e-6f);
        }
    }
    results_free(&r);
    table_free(t);
    free(q);
    free(shape);
    free(w);
    free(qids);
    free(ids);
    free(scores);
}
END_TEST

/* Integer-valued table and queries: every dot product and squared distance
 * is exact, so the numpy order, ties by lower id, must be matched exactly. */
static void check_brute(enum metric m, const char *ids_file, const char *scores_file, size_t k)
{
    size_t n;
    int64_t *shape = fixture_i64("similarity/brute_shape.i64", &n);
    int64_t rows = shape[0], dim = shape[1], padding = shape[2], nq = shape[3], kk = shape[4];
    float *w = fixture_f32("similarity/brute_table.f32", &n);
    float *q = fixture_f32("similarity/brute_queries.f32", &n);
    int64_t *exclude = fixture_i64("similarity/brute_exclude.i64", &n);
    int64_t *ids = fixture_i64(ids_file, &n);
    float *scores = fixture_f32(scores_file, &n);
    ck_assert_uint_eq(n, (size_t)(nq * kk));
    struct table *t = table_from(w, rows, dim, padding);
    struct results r = search(t, q, (size_t)nq, exclude, k, m);
    for (int64_t i = 0; i < nq; i++) {
        ck_assert_uint_eq(r.counts[i], k);
        for (size_t j = 0; j < k; j++) {
            struct topk_hit h = r.hits[(size_t)i * k + j];
            ck_assert_msg(h.id == ids[i * kk + (int64_t)j],
                          "%s query %lld rank %zu: id %lld score %g, numpy %lld %g",
                          metric_name(m), (long long)i, j, (long long)h.id, (double)h.score,
                          (long long)ids[i * kk + (int64_t)j], (double)scores[i * kk + (int64_t)j]);
            ck_assert_float_eq(h.score, scores[i * kk + (int64_t)j]);
            ck_assert_int_ne(h.id, padding);
            ck_assert_int_ne(h.id, exclude[i]);
        }
    }
    results_free(&r);
    table_free(t);
    free(shape);
    free(w);
    free(q);
    free(exclude);
    free(ids);
    free(scores);
}

START_TEST(numpy_dot_k1000_exact)
{
    check_brute(METRIC_DOT, "similarity/brute_dot_ids.i64", "similarity/brute_dot_scores.f32", 1000);
}
END_TEST

START_TEST(numpy_l2_k1000_exact)
{
    check_brute(METRIC_L2, "similarity/brute_l2_ids.i64", "similarity/brute_l2_scores.f32", 1000);
}
END_TEST

START_TEST(numpy_k10_is_prefix)
{
    check_brute(METRIC_DOT, "similarity/brute_dot_ids.i64", "similarity/brute_dot_scores.f32", 10);
    check_brute(METRIC_L2, "similarity/brute_l2_ids.i64", "similarity/brute_l2_scores.f32", 10);
}
END_TEST

static void check_float(enum metric m, const char *ids_file, const char *scores_file)
{
    size_t n;
    int64_t *shape = fixture_i64("similarity/float_shape.i64", &n);
    int64_t rows = shape[0], dim = shape[1], nq = shape[2], k = shape[3];
    float *w = fixture_f32("similarity/float_table.f32", &n);
    float *q = fixture_f32("similarity/float_queries.f32", &n);
    int64_t *ids = fixture_i64(ids_file, &n);
    float *scores = fixture_f32(scores_file, &n);
    struct table *t = table_from(w, rows, dim, -1);
    struct results r = search(t, q, (size_t)nq, NULL, (size_t)k, m);
    for (int64_t i = 0; i < nq * k; i++) {
        ck_assert_int_eq(r.hits[i].id, ids[i]);
        float want = scores[i];
        ck_assert_msg(fabsf(r.hits[i].score - want) <= 1e-6f * fmaxf(1.0f, fabsf(want)),
                      "%s hit %lld: %.9g vs numpy %.9g", metric_name(m), (long long)i,
                      (double)r.hits[i].score, (double)want);
    }
    results_free(&r);
    table_free(t);
    free(shape);
    free(w);
    free(q);
    free(ids);
    free(scores);
}

START_TEST(numpy_float_top10)
{
    check_float(METRIC_DOT, "similarity/float_dot_ids.i64", "similarity/float_dot_scores.f32");
    check_float(METRIC_L2, "similarity/float_l2_ids.i64", "similarity/float_l2_scores.f32");
    check_float(METRIC_COSINE, "similarity/float_cosine_ids.i64",
                "similarity/float_cosine_scores.f32");
}
END_TEST

/* ---- edges ------------------------------------------------------------- */

START_TEST(ties_go_to_lower_ids)
{
    int64_t rows = 200, dim = 19;
    float *w = malloc((size_t)(rows * dim) * sizeof(float));
    for (int64_t i = 0; i < rows * dim; i++)
        w[i] = (float)(i % dim) * 0.25f - 1.0f; /* every row the same */
    struct table *t = table_from(w, rows, dim, 3);
    int64_t exclude[1] = {6};
    for (int m = METRIC_COSINE; m <= METRIC_L2; m++) {
        struct results r = search(t, w, 1, exclude, 50, (enum metric)m);
        ck_assert_uint_eq(r.counts[0], 50);
        int64_t want = 0;
        for (size_t j = 0; j < 50; j++, want++) {
            while (want == 3 || want == 6)
                want++;
            ck_assert_int_eq(r.hits[j].id, want);
            ck_assert(r.hits[j].score == r.hits[0].score);
        }
        results_free(&r);
    }
    table_free(t);
    free(w);
}
END_TEST

START_TEST(k_larger_than_table_and_bad_arguments)
{
    int64_t rows = 6, dim = 3;
    float w[18];
    for (int i = 0; i < 18; i++)
        w[i] = (float)(i / 3 + 1); /* row r is (r+1, r+1, r+1) */
    struct table *t = table_from(w, rows, dim, 2);
    float q[3] = {1, 1, 1};
    int64_t exclude[1] = {4};
    struct results r = search(t, q, 1, exclude, 1000, METRIC_DOT);
    ck_assert_uint_eq(r.counts[0], 4); /* 6 rows less padding 2 and row 4 */
    int64_t order[4] = {5, 3, 1, 0};
    for (int j = 0; j < 4; j++) {
        ck_assert_int_eq(r.hits[j].id, order[j]);
        ck_assert_float_eq(r.hits[j].score, 3.0f * (float)(order[j] + 1));
    }
    results_free(&r);

    r = search(t, q, 1, NULL, 1000, METRIC_L2); /* no exclude: 5 rows */
    ck_assert_uint_eq(r.counts[0], 5);
    ck_assert_int_eq(r.hits[0].id, 0);
    ck_assert_float_eq(r.hits[0].score, 0.0f);
    ck_assert_float_eq_tol(r.hits[4].score, sqrtf(75.0f), 1e-6f);
    results_free(&r);

    struct topk_hit h[2];
    size_t c[2];
    ck_assert_int_eq(topk_search(t, q, 1, NULL, 0, METRIC_DOT, h, c), CORE_EINVAL);
    ck_assert_int_eq(topk_search(t, q, 1, NULL, TOPK_MAX + 1, METRIC_DOT, h, c), CORE_EINVAL);
    ck_assert_int_eq(topk_search(t, q, 1, NULL, 1, (enum metric)5, h, c), CORE_EINVAL);
    ck_assert_int_eq(topk_search(NULL, q, 1, NULL, 1, METRIC_DOT, h, c), CORE_EINVAL);
    ck_assert_int_eq(topk_search(t, NULL, 0, NULL, 1, METRIC_DOT, NULL, NULL), CORE_OK);
    /* an exclude id outside the table excludes nothing */
    int64_t far[1] = {1000};
    ck_assert_int_eq(topk_search(t, q, 1, far, 2, METRIC_DOT, h, c), CORE_OK);
    ck_assert_uint_eq(c[0], 2);
    ck_assert_int_eq(h[0].id, 5);
    ck_assert_int_eq(h[1].id, 4);
    table_free(t);
}
END_TEST

static void assert_same_hits(const struct results *a, const struct results *b, size_t nq,
                             size_t k)
{
    for (size_t i = 0; i < nq; i++) {
        ck_assert_uint_eq(a->counts[i], b->counts[i]);
        for (size_t j = 0; j < a->counts[i]; j++) {
            const struct topk_hit *x = &a->hits[i * k + j], *y = &b->hits[i * k + j];
            ck_assert_msg(x->id == y->id && memcmp(&x->score, &y->score, 4) == 0,
                          "query %zu rank %zu: %lld %a vs %lld %a", i, j, (long long)x->id,
                          (double)x->score, (long long)y->id, (double)y->score);
        }
    }
}

/* 70 queries span two query groups; every answer must equal, bit for bit,
 * the answer to the same query asked alone. */
START_TEST(batch_equals_single_queries)
{
    int64_t rows = 3001, dim = 50; /* a short last block, a 16-float tail */
    size_t nq = 70, k = 25;
    float *w = random_floats((size_t)(rows * dim), 7);
    float *q = random_floats(nq * (size_t)dim, 8);
    int64_t *exclude = malloc(nq * sizeof(int64_t));
    for (size_t i = 0; i < nq; i++) {
        exclude[i] = i % 3 == 0 ? -1 : (int64_t)(i * 41 % (size_t)rows);
        if (i % 5 == 0 && exclude[i] >= 0) /* an id query: its own row */
            memcpy(q + i * (size_t)dim, w + exclude[i] * dim, (size_t)dim * sizeof(float));
    }
    struct table *t = table_from(w, rows, dim, 17);
    for (int m = METRIC_COSINE; m <= METRIC_L2; m++) {
        struct results batch = search(t, q, nq, exclude, k, (enum metric)m);
        struct results one = {malloc(nq * k * sizeof(struct topk_hit)),
                              malloc(nq * sizeof(size_t))};
        for (size_t i = 0; i < nq; i++)
            ck_assert_int_eq(topk_search(t, q + i * (size_t)dim, 1, exclude + i, k,
                                         (enum metric)m, one.hits + i * k, one.counts + i),
                             CORE_OK);
        assert_same_hits(&batch, &one, nq, k);
        results_free(&batch);
        results_free(&one);
    }
    table_free(t);
    free(w);
    free(q);
    free(exclude);
}
END_TEST

/* A table big enough to be split between threads answers the same with one
 * thread and with several. */
START_TEST(thread_split_changes_nothing)
{
    int64_t rows = 20000, dim = 128;
    size_t nq = 5, k = 40;
    float *w = random_floats((size_t)(rows * dim), 11);
    float *q = random_floats(nq * (size_t)dim, 12);
    struct table *t = table_from(w, rows, dim, -1);
    for (int m = METRIC_COSINE; m <= METRIC_L2; m++) {
        threads_set_budget(1);
        struct results one = search(t, q, nq, NULL, k, (enum metric)m);
        struct results single_q = search(t, q, 1, NULL, k, (enum metric)m);
        threads_set_budget(3);
        struct results many = search(t, q, nq, NULL, k, (enum metric)m);
        struct results single_many = search(t, q, 1, NULL, k, (enum metric)m);
        assert_same_hits(&one, &many, nq, k);
        assert_same_hits(&single_q, &single_many, 1, k);
        assert_same_hits(&single_q, &one, 1, k);
        results_free(&one);
        results_free(&many);
        results_free(&single_q);
        results_free(&single_many);
    }
    threads_set_budget(2);
    table_free(t);
    free(w);
    free(q);
}
END_TEST

/* ---- concurrency -------------------------------------------------------- */

/* Rows are uniform (all dim elements equal v, v a small integer) and dim is
 * prime, so a dot product with the all-ones query is dim * v exactly; a torn
 * row (a elements of v1, dim - a of v2, 0 < a < dim) would give
 * dim * v2 + a (v1 - v2), never a multiple of dim for |v1 - v2| < dim. */
#define TORN_DIM 509 /* prime; long rows keep a write in flight longer */
#define TORN_ROWS 512
#define TORN_ROUNDS 200

struct writer_ctx {
    struct table *t;
    atomic_bool stop;
};

static void *writer(void *arg)
{
    struct writer_ctx *c = arg;
    float v[8 * TORN_DIM];
    int64_t ids[8];
    uint64_t x = 99;
    while (!atomic_load(&c->stop)) {
        for (int i = 0; i < 8; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (int64_t)((x >> 33) % TORN_ROWS);
            float val = (float)((x >> 20) % 40) - 20.0f;
            for (int d = 0; d < TORN_DIM; d++)
                v[i * TORN_DIM + d] = val;
        }
        ck_assert_int_eq(table_assign_rows(c->t, ids, 8, v, NULL, NULL), CORE_OK);
    }
    return NULL;
}

START_TEST(no_torn_rows_under_writes)
{
    float *w = calloc(TORN_ROWS * TORN_DIM, sizeof(float));
    struct table *t = table_from(w, TORN_ROWS, TORN_DIM, -1);
    struct writer_ctx c = {.t = t};
    atomic_init(&c.stop, false);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, writer, &c), 0);
    float q[4 * TORN_DIM];
    for (int i = 0; i < 4 * TORN_DIM; i++)
        q[i] = 1.0f;
    size_t k = TORN_ROWS; /* every row is checked */
    for (int round = 0; round < TORN_ROUNDS; round++) {
        size_t nq = round % 2 == 0 ? 1 : 4;
        struct results r = search(t, q, nq, NULL, k, round % 4 == 1 ? METRIC_L2 : METRIC_DOT);
        for (size_t i = 0; i < nq * k; i++) {
            float s = r.hits[i].score;
            if (round % 4 == 1)
                s = s * s; /* l2 against ones: sqrt(dim) * |v - 1| */
            float per = s / TORN_DIM;
            ck_assert_msg(fabsf(per - nearbyintf(per)) < 1e-3f, "round %d hit %zu: score %g torn",
                          round, i, (double)r.hits[i].score);
        }
        results_free(&r);
    }
    atomic_store(&c.stop, true);
    pthread_join(th, NULL);
    table_free(t);
    free(w);
}
END_TEST

static Suite *topk_suite(void)
{
    Suite *s = suite_create("topk");
    TCase *tc = tcase_create("kernels");
    tcase_add_test(tc, kernels_match_canonical_order);
    tcase_add_test(tc, gate_and_transforms);
    suite_add_tcase(s, tc);
    tc = tcase_create("reference");
    tcase_add_test(tc, gensim_most_similar_top10);
    tcase_add_test(tc, numpy_dot_k1000_exact);
    tcase_add_test(tc, numpy_l2_k1000_exact);
    tcase_add_test(tc, numpy_k10_is_prefix);
    tcase_add_test(tc, numpy_float_top10);
    suite_add_tcase(s, tc);
    tc = tcase_create("edges");
    tcase_add_test(tc, ties_go_to_lower_ids);
    tcase_add_test(tc, k_larger_than_table_and_bad_arguments);
    tcase_add_test(tc, batch_equals_single_queries);
    tcase_add_test(tc, thread_split_changes_nothing);
    tcase_add_test(tc, no_torn_rows_under_writes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(topk_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
