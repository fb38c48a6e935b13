/* test_optim.c - core/optim.c: gradient steps of SGD, SparseAdam and Adagrad
 * against real PyTorch 1.13 runs (tests/fixtures/optim, made by
 * scripts/gen_optim_fixtures.py), to 0 ulp; validation before any change;
 * optimizer configuration. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "optim.h"
#include "table.h"
#include "table_internal.h"
#include "testutil.h"

/* The settings of each scenario of scripts/gen_optim_fixtures.py; keep in
 * step with its SCENARIOS. padding -1 = none. */
struct scenario {
    const char *name;
    enum optim_kind kind;
    double lr, beta1, beta2, eps, lr_decay, initial;
    int64_t padding;
    bool scale;
};

static const struct scenario scenarios[] = {
    {"sgd", OPTIM_SGD, 0.1, 0, 0, 0, 0, 0, 2, false},
    {"sgd_scale", OPTIM_SGD, 0.1, 0, 0, 0, 0, 0, 2, true},
    {"adam", OPTIM_SPARSE_ADAM, 0.01, 0.9, 0.999, 1e-8, 0, 0, 0, false},
    {"adam_betas", OPTIM_SPARSE_ADAM, 0.002, 0.8, 0.95, 1e-6, 0, 0, -1, false},
    {"adam_scale", OPTIM_SPARSE_ADAM, 0.01, 0.9, 0.999, 1e-8, 0, 0, 0, true},
    {"adagrad", OPTIM_ADAGRAD, 0.05, 0, 0, 1e-10, 0.01, 0.1, 39, false},
    {"adagrad_default", OPTIM_ADAGRAD, 0.01, 0, 0, 1e-10, 0, 0, -1, false},
    {"adagrad_scale", OPTIM_ADAGRAD, 0.05, 0, 0, 1e-10, 0.01, 0.1, 39, true},
};
#define NSCENARIOS ((int)(sizeof(scenarios) / sizeof(scenarios[0])))

struct fixture {
    float *w0, *lr, *grads, *w, *state;
    int64_t *ids;
    size_t nw0, nlr, ngrads, nw, nstate, nids;
};

static float *load_f32(const char *scn, const char *what, size_t *n)
{
    char name[128];
    snprintf(name, sizeof(name), "optim/%s_%s", scn, what);
    return fixture_f32(name, n);
}

static void fixture_load(struct fixture *f, const char *scn)
{
    char name[128];
    f->w0 = load_f32(scn, "w0.f32", &f->nw0);
    f->lr = load_f32(scn, "lr.f32", &f->nlr);
    f->grads = load_f32(scn, "grads.f32", &f->ngrads);
    f->w = load_f32(scn, "w.f32", &f->nw);
    f->state = load_f32(scn, "state.f32", &f->nstate);
    snprintf(name, sizeof(name), "optim/%s_ids.i64", scn);
    f->ids = fixture_i64(name, &f->nids);
}

static void fixture_free(struct fixture *f)
{
    free(f->w0);
    free(f->lr);
    free(f->grads);
    free(f->w);
    free(f->state);
    free(f->ids);
}

static struct table *table_from(const float *w, int64_t rows, int64_t dim, int64_t padding,
                                bool scale)
{
    struct matrix m;
    ck_assert_int_eq(matrix_init(&m, rows, dim), CORE_OK);
    for (int64_t r = 0; r < rows; r++)
        memcpy(matrix_row(&m, r), w + r * dim, (size_t)dim * sizeof(float));
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = padding >= 0;
    s.padding_idx = padding;
    s.scale_grad_by_freq = scale;
    s.freeze = false;
    struct table *t = NULL;
    char err[256] = "";
    ck_assert_msg(table_new(&t, "t", &m, NULL, &s, err, sizeof(err)) == CORE_OK, "%s", err);
    return t;
}

static struct optim_config config_of(const struct scenario *sc)
{
    struct optim_config c;
    optim_config_defaults(&c, sc->kind);
    c.lr = sc->lr;
    c.beta1 = sc->beta1;
    c.beta2 = sc->beta2;
    c.eps = sc->eps;
    c.lr_decay = sc->lr_decay;
    c.initial_accumulator_value = sc->initial;
    return c;
}

/* Largest ulp distance between a matrix and dense expected values. */
static uint32_t max_ulp(const struct matrix *m, const float *expect, int64_t *where)
{
    uint32_t worst = 0;
    for (int64_t r = 0; r < m->rows; r++) {
        for (int64_t j = 0; j < m->dim; j++) {
            uint32_t d = ulp_diff(matrix_row(m, r)[j], expect[r * m->dim + j]);
            if (d > worst) {
                worst = d;
                *where = r * m->dim + j;
            }
        }
    }
    return worst;
}

static size_t distinct_rows(const int64_t *ids, size_t n, int64_t padding)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = ids[i] == padding;
        for (size_t k = 0; k < i && !seen; k++)
            seen = ids[k] == ids[i];
        count += !seen;
    }
    return count;
}

/* Replays one torch run step by step; every weight and the final state must
 * be bit-identical (0 ulp). */
/* _i runs over the scenarios twice: vector kernels, then portable ones. */
START_TEST(matches_torch)
{
    const struct scenario *sc = &scenarios[_i % NSCENARIOS];
    optim_set_simd(_i < NSCENARIOS);
    struct fixture f;
    fixture_load(&f, sc->name);
    size_t steps = (size_t)f.ids[0];
    ck_assert_uint_eq(f.nlr, steps);
    const int64_t *counts = f.ids + 1, *ids = f.ids + 1 + steps;
    size_t total_ids = 0;
    for (size_t s = 0; s < steps; s++)
        total_ids += (size_t)counts[s];
    ck_assert_uint_eq(f.nids, 1 + steps + total_ids);
    int64_t dim = (int64_t)(f.ngrads / total_ids);
    int64_t rows = (int64_t)(f.nw0 / (size_t)dim);
    ck_assert_uint_eq(f.nw, steps * f.nw0);

    struct table *t = table_from(f.w0, rows, dim, sc->padding, sc->scale);
    struct optim_config c = config_of(sc);
    char err[256] = "";
    ck_assert_msg(table_set_optimizer(t, &c, err, sizeof(err)) == CORE_OK, "%s", err);
    const float *g = f.grads;
    for (size_t s = 0; s < steps; s++) {
        size_t n = (size_t)counts[s], bad = 0, nrows = 0;
        uint64_t version = 0;
        int rc = table_apply_gradients(t, ids, n, g, f.lr[s], &bad, &version, &nrows);
        ck_assert_msg(rc == CORE_OK, "%s step %zu: %s (bad %zu)", sc->name, s, core_errname(rc),
                      bad);
        ck_assert_uint_eq(version, s + 1);
        ck_assert_uint_eq(nrows, distinct_rows(ids, n, sc->padding));
        int64_t where = -1;
        uint32_t ulp = max_ulp(&t->w, f.w + s * f.nw0, &where);
        ck_assert_msg(ulp == 0, "%s (%s kernels) step %zu: weight [%lld][%lld] off by %u ulp",
                      sc->name, _i < NSCENARIOS ? "vector" : "portable", s,
                      (long long)(where / dim), (long long)(where % dim), ulp);
        ids += n;
        g += n * (size_t)dim;
    }
    ck_assert_int_eq(table_optimizer(t)->step, (int64_t)steps);
    ck_assert_uint_eq(table_version(t), steps);
    int64_t where = -1;
    if (sc->kind == OPTIM_SPARSE_ADAM) {
        ck_assert_uint_eq(f.nstate, 2 * f.nw0);
        ck_assert_uint_eq(max_ulp(&t->optim.exp_avg, f.state, &where), 0);
        ck_assert_uint_eq(max_ulp(&t->optim.exp_avg_sq, f.state + f.nw0, &where), 0);
    } else if (sc->kind == OPTIM_ADAGRAD) {
        ck_assert_uint_eq(f.nstate, f.nw0);
        ck_assert_uint_eq(max_ulp(&t->optim.sum, f.state, &where), 0);
    } else {
        ck_assert_uint_eq(f.nstate, 0);
    }
    for (int64_t r = 0; r < rows; r++) {
        float norm = 0;
        for (int64_t j = 0; j < dim; j++)
            norm += matrix_row(&t->w, r)[j] * matrix_row(&t->w, r)[j];
        ck_assert_float_eq_tol(t->norms[r], sqrtf(norm), 1e-5f * (1 + sqrtf(norm)));
    }
    table_free(t);
    fixture_free(&f);
}
END_TEST

/* ---- validation --------------------------------------------------------- */

static struct table *small_table(bool freeze, enum optim_kind kind)
{
    float w[6 * 3];
    for (int i = 0; i < 18; i++)
        w[i] = (float)i * 0.25f - 2.0f;
    struct table *t = table_from(w, 6, 3, 1, false);
    t->s.freeze = freeze;
    struct optim_config c;
    optim_config_defaults(&c, kind);
    ck_assert_int_eq(table_set_optimizer(t, &c, NULL, 0), CORE_OK);
    return t;
}

static void snapshot_rows(const struct table *t, float *out)
{
    for (int64_t r = 0; r < t->w.rows; r++)
        memcpy(out + r * t->w.dim, matrix_row(&t->w, r), (size_t)t->w.dim * sizeof(float));
}

START_TEST(invalid_requests_change_nothing)
{
    struct table *t = small_table(false, OPTIM_SPARSE_ADAM);
    float before[18], after[18];
    snapshot_rows(t, before);
    int64_t ids[3] = {0, 5, 2};
    float g[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    size_t bad = 0;

    int64_t far[3] = {0, 6, 2};
    ck_assert_int_eq(table_apply_gradients(t, far, 3, g, 0, &bad, NULL, NULL), CORE_ERANGE);
    ck_assert_uint_eq(bad, 1);
    int64_t neg[3] = {0, 1, -1};
    ck_assert_int_eq(table_apply_gradients(t, neg, 3, g, 0, &bad, NULL, NULL), CORE_ERANGE);
    ck_assert_uint_eq(bad, 2);

    g[7] = NAN;
    ck_assert_int_eq(table_apply_gradients(t, ids, 3, g, 0, &bad, NULL, NULL), CORE_EINVAL);
    ck_assert_uint_eq(bad, 7);
    g[7] = -INFINITY;
    ck_assert_int_eq(table_apply_gradients(t, ids, 3, g, 0, &bad, NULL, NULL), CORE_EINVAL);
    ck_assert_uint_eq(bad, 7);
    g[7] = 8;

    bad = 0;
    ck_assert_int_eq(table_apply_gradients(t, ids, 3, g, NAN, &bad, NULL, NULL), CORE_EINVAL);
    ck_assert_uint_eq(bad, SIZE_MAX);
    ck_assert_int_eq(table_apply_gradients(t, ids, 3, g, INFINITY, NULL, NULL, NULL), CORE_EINVAL);

    snapshot_rows(t, after);
    ck_assert_mem_eq(before, after, sizeof(before));
    ck_assert_uint_eq(table_version(t), 0);
    ck_assert_int_eq(table_optimizer(t)->step, 0);
    ck_assert_ptr_null(t->optim.exp_avg.data);

    /* and the same request, valid, does change the rows */
    size_t rows = 0;
    uint64_t v = 0;
    ck_assert_int_eq(table_apply_gradients(t, ids, 3, g, 0, &bad, &v, &rows), CORE_OK);
    ck_assert_uint_eq(v, 1);
    ck_assert_uint_eq(rows, 3);
    snapshot_rows(t, after);
    ck_assert_int_ne(memcmp(before, after, sizeof(before)), 0);
    table_free(t);
}
END_TEST

START_TEST(frozen_table_is_refused)
{
    struct table *t = small_table(true, OPTIM_SGD);
    int64_t ids[1] = {0};
    float g[3] = {1, 1, 1};
    ck_assert_int_eq(table_apply_gradients(t, ids, 1, g, 0, NULL, NULL, NULL), CORE_EFROZEN);
    ck_assert_uint_eq(table_version(t), 0);
    table_free(t);
}
END_TEST

/* Padding never changes; zero gradients still make a row part of the step
 * (SparseAdam then moves it by its moments); an all-padding batch is a step
 * of zero rows. */
START_TEST(rows_of_a_step)
{
    struct table *t = small_table(false, OPTIM_SPARSE_ADAM);
    float before[18], after[18];
    int64_t ids[4] = {1, 3, 1, 4};
    float g[12] = {5, 5, 5, 1, 2, 3, 5, 5, 5, 0, 0, 0};
    size_t rows = 0;
    ck_assert_int_eq(table_apply_gradients(t, ids, 4, g, 0, NULL, NULL, &rows), CORE_OK);
    ck_assert_uint_eq(rows, 2);
    snapshot_rows(t, after);
    for (int j = 0; j < 3; j++)
        ck_assert_float_eq(after[3 + j], -1.25f + 0.25f * (float)j);
    /* row 4 got a zero gradient: moments stay zero, the row does not move */
    ck_assert_float_eq(matrix_row(&t->optim.exp_avg, 4)[0], 0.0f);

    snapshot_rows(t, before);
    int64_t again[2] = {3, 4};
    float zero[6] = {0};
    ck_assert_int_eq(table_apply_gradients(t, again, 2, zero, 0, NULL, NULL, &rows), CORE_OK);
    ck_assert_uint_eq(rows, 2);
    snapshot_rows(t, after);
    /* row 3 keeps moving on its first moment although its gradient is 0 */
    ck_assert_float_ne(after[9], before[9]);
    ck_assert_float_eq(after[12], before[12]);

    int64_t pads[2] = {1, 1};
    uint64_t v = 0;
    ck_assert_int_eq(table_apply_gradients(t, pads, 2, g, 0, NULL, &v, &rows), CORE_OK);
    ck_assert_uint_eq(rows, 0);
    ck_assert_uint_eq(v, 3);
    ck_assert_int_eq(table_optimizer(t)->step, 3);
    ck_assert_int_eq(table_apply_gradients(t, NULL, 0, NULL, 0, NULL, &v, &rows), CORE_OK);
    ck_assert_uint_eq(v, 4);
    ck_assert_uint_eq(rows, 0);
    table_free(t);
}
END_TEST

/* A trainable table with no optimizer configured steps as sgd lr 0.01. */
START_TEST(default_optimizer_is_sgd)
{
    float w[6 * 3];
    for (int i = 0; i < 18; i++)
        w[i] = (float)i * 0.1f;
    struct table *t = table_from(w, 6, 3, -1, false);
    ck_assert(!table_optimizer(t)->configured);
    struct optim_config c;
    table_optimizer_config(t, &c);
    ck_assert_int_eq(c.kind, OPTIM_SGD);
    ck_assert_double_eq(c.lr, 0.01);
    int64_t ids[2] = {2, 2};
    float g[6] = {1, 2, 3, 0.5f, 0.25f, 0.125f};
    ck_assert_int_eq(table_apply_gradients(t, ids, 2, g, 0, NULL, NULL, NULL), CORE_OK);
    for (int j = 0; j < 3; j++) {
        float expect = fmaf(g[3 + j], -0.01f, fmaf(g[j], -0.01f, w[6 + j]));
        ck_assert_float_eq(matrix_row(&t->w, 2)[j], expect);
    }
    /* lr override */
    int64_t one[1] = {0};
    ck_assert_int_eq(table_apply_gradients(t, one, 1, g, 2.0, NULL, NULL, NULL), CORE_OK);
    ck_assert_float_eq(matrix_row(&t->w, 0)[1], fmaf(2.0f, -2.0f, w[1]));
    table_free(t);
}
END_TEST

/* ---- configuration ------------------------------------------------------ */

START_TEST(config_defaults_and_names)
{
    struct optim_config c;
    optim_config_defaults(&c, OPTIM_SPARSE_ADAM);
    ck_assert_double_eq(c.lr, 1e-3);
    ck_assert_double_eq(c.beta1, 0.9);
    ck_assert_double_eq(c.beta2, 0.999);
    ck_assert_double_eq(c.eps, 1e-8);
    optim_config_defaults(&c, OPTIM_ADAGRAD);
    ck_assert_double_eq(c.lr, 1e-2);
    ck_assert_double_eq(c.lr_decay, 0);
    ck_assert_double_eq(c.initial_accumulator_value, 0);
    ck_assert_double_eq(c.eps, 1e-10);
    optim_config_defaults(&c, OPTIM_SGD);
    ck_assert_double_eq(c.lr, 0.01);
    enum optim_kind k;
    ck_assert(optim_kind_parse("sparse_adam", &k) && k == OPTIM_SPARSE_ADAM);
    ck_assert(optim_kind_parse("adagrad", &k) && k == OPTIM_ADAGRAD);
    ck_assert(optim_kind_parse("sgd", &k) && k == OPTIM_SGD);
    ck_assert(!optim_kind_parse("adam", &k));
    ck_assert(!optim_kind_parse("SGD", &k));
    ck_assert_str_eq(optim_kind_name(OPTIM_SPARSE_ADAM), "sparse_adam");
}
END_TEST

START_TEST(config_check_names_the_key)
{
    struct optim_config c;
    char err[256];
    static const struct {
        enum optim_kind kind;
        int field;
        double value;
        const char *key;
    } cases[] = {
        {OPTIM_SGD, 0, 0.0, "optimizer.lr"},
        {OPTIM_SGD, 0, -1.0, "optimizer.lr"},
        {OPTIM_SGD, 0, INFINITY, "optimizer.lr"},
        {OPTIM_SPARSE_ADAM, 1, 1.0, "optimizer.betas[0]"},
        {OPTIM_SPARSE_ADAM, 2, -0.1, "optimizer.betas[1]"},
        {OPTIM_SPARSE_ADAM, 3, 0.0, "optimizer.eps"},
        {OPTIM_ADAGRAD, 3, -1e-10, "optimizer.eps"},
        {OPTIM_ADAGRAD, 4, -0.5, "optimizer.lr_decay"},
        {OPTIM_ADAGRAD, 5, NAN, "optimizer.initial_accumulator_value"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        optim_config_defaults(&c, cases[i].kind);
        ck_assert_int_eq(optim_config_check(&c, NULL, 0), CORE_OK);
        double *fields[] = {&c.lr, &c.beta1, &c.beta2, &c.eps, &c.lr_decay,
                            &c.initial_accumulator_value};
        *fields[cases[i].field] = cases[i].value;
        err[0] = '\0';
        ck_assert_int_eq(optim_config_check(&c, err, sizeof(err)), CORE_EINVAL);
        ck_assert_msg(strncmp(err, cases[i].key, strlen(cases[i].key)) == 0, "case %zu: %s", i,
                      err);
    }
    optim_config_defaults(&c, OPTIM_ADAGRAD);
    c.eps = 0; /* torch's Adagrad accepts eps = 0 */
    ck_assert_int_eq(optim_config_check(&c, NULL, 0), CORE_OK);
}
END_TEST

/* Same kind: new hyperparameters, state kept (as editing a param_group).
 * Another kind: state dropped. An invalid config changes nothing. */
START_TEST(set_optimizer_keeps_or_drops_state)
{
    struct table *t = small_table(false, OPTIM_ADAGRAD);
    int64_t ids[1] = {2};
    float g[3] = {1, 2, 3};
    ck_assert_int_eq(table_apply_gradients(t, ids, 1, g, 0, NULL, NULL, NULL), CORE_OK);
    ck_assert_ptr_nonnull(t->optim.sum.data);
    ck_assert_float_eq(matrix_row(&t->optim.sum, 2)[2], 9.0f);

    struct optim_config c;
    optim_config_defaults(&c, OPTIM_ADAGRAD);
    c.lr = 0.5;
    ck_assert_int_eq(table_set_optimizer(t, &c, NULL, 0), CORE_OK);
    ck_assert_ptr_nonnull(t->optim.sum.data);
    ck_assert_int_eq(table_optimizer(t)->step, 1);
    ck_assert_double_eq(table_optimizer(t)->cfg.lr, 0.5);

    c.lr = -1;
    char err[128] = "";
    ck_assert_int_eq(table_set_optimizer(t, &c, err, sizeof(err)), CORE_EINVAL);
    ck_assert_double_eq(table_optimizer(t)->cfg.lr, 0.5);
    ck_assert_ptr_nonnull(strstr(err, "optimizer.lr"));

    optim_config_defaults(&c, OPTIM_SPARSE_ADAM);
    ck_assert_int_eq(table_set_optimizer(t, &c, NULL, 0), CORE_OK);
    ck_assert_ptr_null(t->optim.sum.data);
    ck_assert_int_eq(table_optimizer(t)->step, 0);
    ck_assert_int_eq(table_optimizer(t)->cfg.kind, OPTIM_SPARSE_ADAM);
    table_free(t);
}
END_TEST

/* Adagrad's sum starts at initial_accumulator_value for every row. */
START_TEST(adagrad_state_filled)
{
    struct table *t = small_table(false, OPTIM_ADAGRAD);
    struct optim_config c;
    optim_config_defaults(&c, OPTIM_ADAGRAD);
    c.initial_accumulator_value = 0.1;
    ck_assert_int_eq(table_set_optimizer(t, &c, NULL, 0), CORE_OK);
    int64_t ids[1] = {0};
    float g[3] = {1, 1, 1};
    ck_assert_int_eq(table_apply_gradients(t, ids, 1, g, 0, NULL, NULL, NULL), CORE_OK);
    ck_assert_float_eq(matrix_row(&t->optim.sum, 5)[2], 0.1f);
    ck_assert_float_eq(matrix_row(&t->optim.sum, 0)[0], 0.1f + 1.0f);
    table_free(t);
}
END_TEST

static Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("torch");
    tcase_add_loop_test(tc, matches_torch, 0, 2 * NSCENARIOS);
    suite_add_tcase(s, tc);
    tc = tcase_create("validation");
    tcase_add_test(tc, invalid_requests_change_nothing);
    tcase_add_test(tc, frozen_table_is_refused);
    tcase_add_test(tc, rows_of_a_step);
    tcase_add_test(tc, default_optimizer_is_sgd);
    suite_add_tcase(s, tc);
    tc = tcase_create("config");
    tcase_add_test(tc, config_defaults_and_names);
    tcase_add_test(tc, config_check_names_the_key);
    tcase_add_test(tc, set_optimizer_keeps_or_drops_state);
    tcase_add_test(tc, adagrad_state_filled);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(optim_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
