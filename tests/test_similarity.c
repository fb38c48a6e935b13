/* test_similarity.c - pair scores against real torch 1.13 (fixtures from
 * scripts/gen_similarity_fixtures.py): cosine with zero vectors and norms
 * around eps, dot, l2; metric names; range errors. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "similarity.h"
#include "table.h"
#include "testutil.h"

/* Builds a table from a fixture holding rows x dim float32 values. */
static struct table *table_from(const float *data, int64_t rows, int64_t dim)
{
    struct matrix m;
    ck_assert_int_eq(matrix_init(&m, rows, dim), CORE_OK);
    for (int64_t r = 0; r < rows; r++)
        memcpy(matrix_row(&m, r), data + r * dim, (size_t)dim * sizeof(float));
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = NULL;
    char err[256];
    ck_assert_msg(table_new(&t, "pairs", &m, NULL, &s, err, sizeof(err)) == CORE_OK, "%s", err);
    return t;
}

struct pairs_fixture {
    int64_t rows, dim;
    size_t npairs;
    float *table;
    int64_t *ids;
};

static void pairs_load(struct pairs_fixture *f)
{
    size_t n;
    int64_t *shape = fixture_i64("similarity/pairs_shape.i64", &n);
    ck_assert_uint_eq(n, 3);
    f->rows = shape[0];
    f->dim = shape[1];
    f->npairs = (size_t)shape[2];
    free(shape);
    f->table = fixture_f32("similarity/pairs_table.f32", &n);
    ck_assert_uint_eq(n, (size_t)(f->rows * f->dim));
    f->ids = fixture_i64("similarity/pairs_ids.i64", &n);
    ck_assert_uint_eq(n, 2 * f->npairs);
}

static void pairs_free(struct pairs_fixture *f)
{
    free(f->table);
    free(f->ids);
}

/* torch sums in float32 (a cascade of vector lanes), we sum in double and
 * round once: equal to a few units in the last place, or, where the sum
 * cancels to nearly nothing, to a few ulps of the terms' size. */
static void assert_close(float got, float want, float scale, size_t i)
{
    uint32_t ulps = ulp_diff(got, want);
    float abs_err = fabsf(got - want);
    ck_assert_msg(ulps <= 4 || abs_err <= 4 * 6e-8f * scale,
                  "pair %zu: got %.9g, torch %.9g (%u ulps)", i, (double)got, (double)want,
                  ulps);
}

static float vec_norm(const float *x, int64_t dim)
{
    double s = 0;
    for (int64_t i = 0; i < dim; i++)
        s += (double)x[i] * x[i];
    return (float)sqrt(s);
}

static void check_metric(enum metric m, const char *expected_file)
{
    struct pairs_fixture f;
    pairs_load(&f);
    size_t n;
    float *want = fixture_f32(expected_file, &n);
    ck_assert_uint_eq(n, f.npairs);
    struct table *t = table_from(f.table, f.rows, f.dim);
    float *got = malloc(f.npairs * sizeof(float));
    size_t bad = 99;
    ck_assert_int_eq(similarity_pairs(t, f.ids, f.npairs, m, got, &bad), CORE_OK);
    for (size_t i = 0; i < f.npairs; i++) {
        const float *x = f.table + f.ids[2 * i] * f.dim;
        const float *y = f.table + f.ids[2 * i + 1] * f.dim;
        float scale = 1.0f;
        if (m == METRIC_DOT)
            scale = vec_norm(x, f.dim) * vec_norm(y, f.dim);
        else if (m == METRIC_L2)
            scale = vec_norm(x, f.dim) + vec_norm(y, f.dim);
        assert_close(got[i], want[i], scale, i);
        /* the vector form is the same arithmetic */
        float v = similarity_vec(x, y, f.dim, m);
        ck_assert_msg(memcmp(&v, &got[i], sizeof(v)) == 0, "pair %zu: vec %.9g vs pairs %.9g", i,
                      (double)v, (double)got[i]);
    }
    free(got);
    free(want);
    table_free(t);
    pairs_free(&f);
}

START_TEST(cosine_matches_torch)
{
    check_metric(METRIC_COSINE, "similarity/pairs_cosine.f32");
}
END_TEST

START_TEST(dot_matches_torch)
{
    check_metric(METRIC_DOT, "similarity/pairs_dot.f32");
}
END_TEST

START_TEST(l2_matches_torch)
{
    check_metric(METRIC_L2, "similarity/pairs_l2.f32");
}
END_TEST

/* The fixture's rows 0..3: zero, norm 5e-9 (clamped to eps), norm 1e-8,
 * 2e-8, all along row 9. torch 1.13 divides each vector by max(norm, eps)
 * first, so a vector below eps scores norm/eps against its own direction. */
START_TEST(cosine_eps_semantics)
{
    struct pairs_fixture f;
    pairs_load(&f);
    struct table *t = table_from(f.table, f.rows, f.dim);
    int64_t pairs[] = {0, 9, 0, 0, 1, 9, 1, 1, 3, 9, 3, 3};
    float s[6];
    ck_assert_int_eq(similarity_pairs(t, pairs, 6, METRIC_COSINE, s, NULL), CORE_OK);
    ck_assert_float_eq(s[0], 0.0f);
    ck_assert_float_eq(s[1], 0.0f);
    ck_assert_float_eq_tol(s[2], 0.5f, 1e-6f);
    ck_assert_float_eq_tol(s[3], 0.25f, 1e-6f);
    ck_assert_float_eq_tol(s[4], 1.0f, 1e-6f);
    ck_assert_float_eq_tol(s[5], 1.0f, 1e-6f);
    table_free(t);
    pairs_free(&f);
}
END_TEST

START_TEST(pairs_range_errors)
{
    struct pairs_fixture f;
    pairs_load(&f);
    struct table *t = table_from(f.table, f.rows, f.dim);
    float s[3] = {7, 7, 7};
    size_t bad = 99;
    int64_t high[] = {0, 1, 2, 40, 3, 4};
    ck_assert_int_eq(similarity_pairs(t, high, 3, METRIC_DOT, s, &bad), CORE_ERANGE);
    ck_assert_uint_eq(bad, 3);
    int64_t neg[] = {-1, 1};
    ck_assert_int_eq(similarity_pairs(t, neg, 1, METRIC_DOT, s, &bad), CORE_ERANGE);
    ck_assert_uint_eq(bad, 0);
    ck_assert_float_eq(s[0], 7.0f); /* nothing written on failure */
    int64_t ok[] = {0, 1};
    ck_assert_int_eq(similarity_pairs(t, ok, 1, (enum metric)7, s, &bad), CORE_EINVAL);
    ck_assert_int_eq(similarity_pairs(t, NULL, 0, METRIC_L2, s, &bad), CORE_OK);
    table_free(t);
    pairs_free(&f);
}
END_TEST

START_TEST(metric_names_round_trip)
{
    enum metric m;
    const char *names[] = {"cosine", "dot", "l2"};
    for (int i = 0; i < 3; i++) {
        ck_assert(metric_parse(names[i], &m));
        ck_assert_int_eq(m, i);
        ck_assert_str_eq(metric_name(m), names[i]);
    }
    m = METRIC_DOT;
    ck_assert(!metric_parse("Cosine", &m));
    ck_assert(!metric_parse("l2 ", &m));
    ck_assert(!metric_parse("", &m));
    ck_assert(!metric_parse(NULL, &m));
    ck_assert_int_eq(m, METRIC_DOT);
    ck_assert_str_eq(metric_name((enum metric)9), "unknown");
}
END_TEST

static Suite *similarity_suite(void)
{
    Suite *s = suite_create("similarity");
    TCase *tc = tcase_create("pairs");
    tcase_add_test(tc, cosine_matches_torch);
    tcase_add_test(tc, dot_matches_torch);
    tcase_add_test(tc, l2_matches_torch);
    tcase_add_test(tc, cosine_eps_semantics);
    tcase_add_test(tc, pairs_range_errors);
    tcase_add_test(tc, metric_names_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(similarity_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
