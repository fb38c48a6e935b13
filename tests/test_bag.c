/* test_bag.c - table_bag, the forward of nn.EmbeddingBag, against
 * F.embedding_bag results from real PyTorch (scripts/gen_torch_fixtures.py):
 * sum, mean, max, per_sample_weights, padding inside bags, an all-padding
 * bag, empty bags, and max_norm. Tolerance: 0 ulp (table_bag adds in torch's
 * order and rounds the weight product before adding, as torch's axpy does). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "table.h"
#include "table_internal.h"
#include "testutil.h"

struct bag_fixture {
    int64_t rows, dim, pad, nbags;
    int64_t *ids;
    size_t *offsets;
    float *psw;
    struct table *t;
};

static struct table *new_from(const float *dense, int64_t rows, int64_t dim, const struct table_settings *s)
{
    struct matrix w;
    ck_assert_int_eq(matrix_init(&w, rows, dim), CORE_OK);
    for (int64_t i = 0; i < rows; i++)
        memcpy(matrix_row(&w, i), dense + i * dim, (size_t)dim * sizeof(float));
    struct table *t = NULL;
    char err[256] = "";
    ck_assert_msg(table_new(&t, "bags", &w, NULL, s, err, sizeof(err)) == CORE_OK, "%s", err);
    return t;
}

/* Loads the bag fixture into a table with torch's padding_idx and, when
 * max_norm > 0, that max_norm (p = 2). */
static void load(struct bag_fixture *f, double max_norm)
{
    size_t n;
    int64_t *meta = fixture_i64("torch/bag_meta.i64", &n);
    f->rows = meta[0];
    f->dim = meta[1];
    f->pad = meta[2];
    f->nbags = meta[3];
    free(meta);
    f->ids = fixture_i64("torch/bag_ids.i64", &n);
    size_t nids = n;
    int64_t *off = fixture_i64("torch/bag_offsets.i64", &n);
    ck_assert_uint_eq(n, (size_t)f->nbags + 1);
    ck_assert_int_eq(off[f->nbags], (int64_t)nids);
    f->offsets = malloc(n * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        f->offsets[i] = (size_t)off[i];
    free(off);
    f->psw = fixture_f32("torch/bag_psw.f32", &n);
    ck_assert_uint_eq(n, nids);
    float *w = fixture_f32("torch/bag_weight.f32", &n);
    ck_assert_uint_eq(n, (size_t)(f->rows * f->dim));
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    s.padding_idx = f->pad;
    if (max_norm > 0) {
        s.has_max_norm = true;
        s.max_norm = max_norm;
    }
    f->t = new_from(w, f->rows, f->dim, &s);
    free(w);
}

static void unload(struct bag_fixture *f)
{
    free(f->ids);
    free(f->offsets);
    free(f->psw);
    table_free(f->t);
}

static void assert_matches(const float *got, const char *fixture, size_t n_expected)
{
    size_t n;
    float *want = fixture_f32(fixture, &n);
    ck_assert_uint_eq(n, n_expected);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ulp_diff(got[i], want[i]) == 0, "%s[%zu]: got %.9g, torch %.9g (%u ulp)", fixture,
                      i, (double)got[i], (double)want[i], ulp_diff(got[i], want[i]));
    free(want);
}

static void check_mode(enum bag_mode mode, bool weighted, const char *fixture)
{
    struct bag_fixture f;
    load(&f, 0);
    size_t n = (size_t)(f.nbags * f.dim);
    float *out = malloc(n * sizeof(float));
    memset(out, 0xff, n * sizeof(float)); /* NaNs: every float must be written */
    ck_assert_int_eq(table_bag(f.t, f.ids, f.offsets, (size_t)f.nbags, weighted ? f.psw : NULL, mode,
                               out, NULL),
                     CORE_OK);
    assert_matches(out, fixture, n);
    /* empty bags (1 and 5) and the all-padding bag (4) are zeros */
    for (int64_t j = 0; j < f.dim; j++) {
        ck_assert_float_eq(out[1 * f.dim + j], 0.0f);
        ck_assert_float_eq(out[4 * f.dim + j], 0.0f);
        ck_assert_float_eq(out[5 * f.dim + j], 0.0f);
    }
    free(out);
    unload(&f);
}

START_TEST(sum_matches_torch)
{
    check_mode(BAG_SUM, false, "torch/bag_sum.f32");
}
END_TEST

START_TEST(mean_matches_torch)
{
    check_mode(BAG_MEAN, false, "torch/bag_mean.f32");
}
END_TEST

START_TEST(max_matches_torch)
{
    check_mode(BAG_MAX, false, "torch/bag_max.f32");
}
END_TEST

START_TEST(weighted_sum_matches_torch)
{
    check_mode(BAG_SUM, true, "torch/bag_sum_psw.f32");
}
END_TEST

START_TEST(max_norm_renormalizes_first)
{
    struct bag_fixture f;
    load(&f, 2.5);
    size_t n = (size_t)(f.nbags * f.dim);
    float *out = malloc(n * sizeof(float));
    ck_assert_int_eq(table_bag(f.t, f.ids, f.offsets, (size_t)f.nbags, NULL, BAG_MEAN, out, NULL),
                     CORE_OK);
    assert_matches(out, "torch/bag_mean_maxnorm.f32", n);
    size_t nw;
    float *wfinal = fixture_f32("torch/bag_mean_maxnorm_wfinal.f32", &nw);
    float *row = malloc((size_t)f.dim * sizeof(float));
    for (int64_t i = 0; i < f.rows; i++) {
        table_read_row(f.t, i, row);
        ck_assert_mem_eq(row, wfinal + i * f.dim, (size_t)f.dim * sizeof(float));
    }
    free(row);
    free(wfinal);
    free(out);
    unload(&f);
}
END_TEST

START_TEST(bad_arguments_are_refused)
{
    struct bag_fixture f;
    load(&f, 0);
    float out[2 * 19];
    size_t bad = 99;
    ck_assert_int_eq(table_bag(f.t, f.ids, f.offsets, 2, f.psw, BAG_MEAN, out, &bad), CORE_EINVAL);
    ck_assert_int_eq(table_bag(f.t, f.ids, f.offsets, 2, f.psw, BAG_MAX, out, &bad), CORE_EINVAL);
    size_t backwards[] = {0, 3, 2};
    ck_assert_int_eq(table_bag(f.t, f.ids, backwards, 2, NULL, BAG_SUM, out, &bad), CORE_EINVAL);
    size_t late_start[] = {1, 3};
    ck_assert_int_eq(table_bag(f.t, f.ids, late_start, 1, NULL, BAG_SUM, out, &bad), CORE_EINVAL);
    int64_t ids[] = {0, 1, 25};
    size_t offsets[] = {0, 1, 3};
    ck_assert_int_eq(table_bag(f.t, ids, offsets, 2, NULL, BAG_SUM, out, &bad), CORE_ERANGE);
    ck_assert_uint_eq(bad, 2);
    size_t none[] = {0};
    ck_assert_int_eq(table_bag(f.t, ids, none, 0, NULL, BAG_SUM, out, &bad), CORE_OK);
    unload(&f);
}
END_TEST

/* One bag of one id is that row; a weight of 0.5 halves it exactly. */
START_TEST(single_id_bags)
{
    float w[3 * 4] = {1, -2, 3, -4, 0.5f, 0.25f, -8, 16, 0, 0, 0, 0};
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = new_from(w, 3, 4, &s);
    int64_t ids[] = {1, 0, 1};
    size_t offsets[] = {0, 1, 3};
    float psw[] = {0.5f, 1.0f, -1.0f};
    float out[2 * 4];
    ck_assert_int_eq(table_bag(t, ids, offsets, 2, psw, BAG_SUM, out, NULL), CORE_OK);
    float want[] = {0.25f, 0.125f, -4, 8, 0.5f, -2.25f, 11, -20};
    ck_assert_mem_eq(out, want, sizeof(want));
    ck_assert_int_eq(table_bag(t, ids, offsets, 2, NULL, BAG_MAX, out, NULL), CORE_OK);
    float want_max[] = {0.5f, 0.25f, -8, 16, 1, 0.25f, 3, 16};
    ck_assert_mem_eq(out, want_max, sizeof(want_max));
    ck_assert_int_eq(table_bag(t, ids, offsets, 2, NULL, BAG_MEAN, out, NULL), CORE_OK);
    float want_mean[] = {0.5f, 0.25f, -8, 16, 0.75f, -0.875f, -2.5f, 6};
    ck_assert_mem_eq(out, want_mean, sizeof(want_mean));
    table_free(t);
}
END_TEST

static Suite *bag_suite(void)
{
    Suite *s = suite_create("bag");
    TCase *tc = tcase_create("torch");
    tcase_add_test(tc, sum_matches_torch);
    tcase_add_test(tc, mean_matches_torch);
    tcase_add_test(tc, max_matches_torch);
    tcase_add_test(tc, weighted_sum_matches_torch);
    tcase_add_test(tc, max_norm_renormalizes_first);
    suite_add_tcase(s, tc);
    tc = tcase_create("edges");
    tcase_add_test(tc, bad_arguments_are_refused);
    tcase_add_test(tc, single_id_bags);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bag_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
