/* test_table.c - settings validation, initialization, lookup, max_norm
 * renormalization, row assignment and token resolution of core/table.c.
 * Lookups and renorms are compared with real PyTorch results made by
 * scripts/gen_torch_fixtures.py: they must match to 0 ulp. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "table.h"
#include "table_internal.h"
#include "testutil.h"
#include "vocab.h"

/* ---- helpers ----------------------------------------------------------- */

static struct table *new_init(int64_t num, int64_t dim, uint64_t seed, const struct table_settings *s)
{
    struct table *t = NULL;
    char err[256] = "";
    int rc = table_new_init(&t, "t", num, dim, seed, s, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "table_new_init: %s", err);
    return t;
}

/* A table over a dense rows x dim float buffer. */
static struct table *new_from(const float *dense, int64_t rows, int64_t dim, const struct table_settings *s)
{
    struct matrix w;
    ck_assert_int_eq(matrix_init(&w, rows, dim), CORE_OK);
    for (int64_t i = 0; i < rows; i++)
        memcpy(matrix_row(&w, i), dense + i * dim, (size_t)dim * sizeof(float));
    struct table *t = NULL;
    char err[256] = "";
    int rc = table_new(&t, "fixture", &w, NULL, s, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "table_new: %s", err);
    ck_assert_ptr_null(w.data); /* adopted */
    return t;
}

static struct table *new_from_fixture(const char *name, int64_t rows, int64_t dim,
                                      const struct table_settings *s)
{
    size_t n;
    float *dense = fixture_f32(name, &n);
    ck_assert_uint_eq(n, (size_t)(rows * dim));
    struct table *t = new_from(dense, rows, dim, s);
    free(dense);
    return t;
}

/* Fails unless got[0..n) equals want[0..n) to max_ulp units in the last place. */
static void assert_close(const float *got, const float *want, size_t n, uint32_t max_ulp, const char *what)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(ulp_diff(got[i], want[i]) <= max_ulp, "%s[%zu]: got %.9g, torch %.9g (%u ulp)",
                      what, i, (double)got[i], (double)want[i], ulp_diff(got[i], want[i]));
}

static void assert_rows(struct table *t, const float *want, const char *what)
{
    int64_t dim = table_dim(t);
    float *row = malloc((size_t)dim * sizeof(float));
    for (int64_t i = 0; i < table_num_embeddings(t); i++) {
        table_read_row(t, i, row);
        assert_close(row, want + i * dim, (size_t)dim, 0, what);
    }
    free(row);
}

static int try_new(int64_t rows, const struct table_settings *s, const char *name, struct vocab *v,
                   char *err, size_t errlen)
{
    struct matrix w;
    ck_assert_int_eq(matrix_init(&w, rows, 3), CORE_OK);
    struct table *t = NULL;
    int rc = table_new(&t, name, &w, v, s, err, errlen);
    if (rc == CORE_OK) {
        table_free(t);
    } else {
        ck_assert_ptr_null(t);
        ck_assert_ptr_nonnull(w.data); /* untouched on failure */
        matrix_deinit(&w);
    }
    return rc;
}

/* ---- settings ---------------------------------------------------------- */

static void expect_rejected(const struct table_settings *s, const char *name, const char *needle)
{
    char err[256] = "";
    ck_assert_int_eq(try_new(10, s, name, NULL, err, sizeof(err)), CORE_EINVAL);
    ck_assert_msg(strstr(err, needle) != NULL, "error '%s' does not name '%s'", err, needle);
}

START_TEST(settings_are_checked)
{
    struct table_settings s;
    table_settings_init(&s);
    ck_assert(s.norm_type == 2.0 && s.oov_id == -1 && !s.has_padding && !s.has_max_norm);
    s.has_padding = true;
    s.padding_idx = 10;
    expect_rejected(&s, "t", "padding_idx");
    s.padding_idx = -11;
    expect_rejected(&s, "t", "padding_idx");
    table_settings_init(&s);
    s.has_max_norm = true;
    s.max_norm = 0.0;
    expect_rejected(&s, "t", "max_norm");
    s.max_norm = NAN;
    expect_rejected(&s, "t", "max_norm");
    table_settings_init(&s);
    s.norm_type = -1.0;
    expect_rejected(&s, "t", "norm_type");
    s.norm_type = NAN;
    expect_rejected(&s, "t", "norm_type");
    table_settings_init(&s);
    s.oov_id = 10;
    expect_rejected(&s, "t", "oov");
    s.oov_id = -2;
    expect_rejected(&s, "t", "oov");
    table_settings_init(&s);
    expect_rejected(&s, "", "name");
    expect_rejected(&s, "_x", "name");
    expect_rejected(&s, "a b", "name");
    expect_rejected(&s, "a/b", "name");
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    expect_rejected(&s, long_name, "name");
    long_name[64] = '\0';
    char err[256];
    ck_assert_int_eq(try_new(10, &s, long_name, NULL, err, sizeof(err)), CORE_OK);
    ck_assert_int_eq(try_new(10, &s, "Glove.6B-300d_v2", NULL, err, sizeof(err)), CORE_OK);
    s.norm_type = INFINITY;
    s.oov_id = 9;
    ck_assert_int_eq(try_new(10, &s, "t", NULL, err, sizeof(err)), CORE_OK);
}
END_TEST

START_TEST(vocab_size_must_match_rows)
{
    struct table_settings s;
    table_settings_init(&s);
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 0), CORE_OK);
    ck_assert_int_eq(vocab_add(v, "a", 1, NULL), CORE_OK);
    ck_assert_int_eq(vocab_add(v, "b", 1, NULL), CORE_OK);
    char err[256] = "";
    ck_assert_int_eq(try_new(3, &s, "t", v, err, sizeof(err)), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "vocab"));
    ck_assert_int_eq(try_new(2, &s, "t", v, err, sizeof(err)), CORE_OK); /* adopted and freed */
}
END_TEST

START_TEST(padding_is_normalized)
{
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    s.padding_idx = -10;
    struct table *t = new_init(10, 4, 1, &s);
    ck_assert_int_eq(table_settings(t)->padding_idx, 0);
    ck_assert_str_eq(table_name(t), "t");
    ck_assert_int_eq(table_num_embeddings(t), 10);
    ck_assert_int_eq(table_dim(t), 4);
    ck_assert_ptr_null(table_vocab(t));
    ck_assert_uint_eq(table_version(t), 0);
    table_free(t);
    table_free(NULL);
}
END_TEST

START_TEST(init_shape_limits)
{
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = NULL;
    char err[256] = "";
    ck_assert_int_eq(table_new_init(&t, "t", -1, 4, 1, &s, err, sizeof(err)), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "num_embeddings"));
    ck_assert_int_eq(table_new_init(&t, "t", 1LL << 31, 4, 1, &s, err, sizeof(err)), CORE_EINVAL);
    ck_assert_int_eq(table_new_init(&t, "t", 4, 0, 1, &s, err, sizeof(err)), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "embedding_dim"));
    ck_assert_ptr_null(t);
    t = new_init(0, 1, 1, &s); /* empty tables are allowed */
    ck_assert_int_eq(table_num_embeddings(t), 0);
    table_free(t);
    t = new_init(3, 1, 1, &s);
    float x;
    table_read_row(t, 2, &x);
    ck_assert(x != 0.0f && isfinite(x));
    table_free(t);
}
END_TEST

/* ---- initialization ---------------------------------------------------- */

START_TEST(init_is_deterministic_and_pads)
{
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    s.padding_idx = -2;
    struct table *a = new_init(100, 7, 42, &s);
    struct table *b = new_init(100, 7, 42, &s);
    struct table *c = new_init(100, 7, 43, &s);
    ck_assert_int_eq(table_settings(a)->padding_idx, 98);
    float ra[7], rb[7], rc[7];
    int differs = 0;
    for (int64_t i = 0; i < 100; i++) {
        table_read_row(a, i, ra);
        table_read_row(b, i, rb);
        table_read_row(c, i, rc);
        ck_assert_mem_eq(ra, rb, sizeof(ra));
        differs += memcmp(ra, rc, sizeof(ra)) != 0;
        double sq = 0;
        for (int j = 0; j < 7; j++) {
            if (i == 98)
                ck_assert_float_eq(ra[j], 0.0f);
            sq += (double)ra[j] * ra[j];
        }
        ck_assert_double_eq_tol(a->norms[i], sqrt(sq), 1e-6 * (1 + sqrt(sq)));
    }
    ck_assert_int_eq(differs, 99);
    table_free(a);
    table_free(b);
    table_free(c);
}
END_TEST

/* 10^5 draws: mean and standard deviation within ~5 standard errors of
 * N(0, 1), and the tail beyond the ziggurat's base (|x| > 3.654, drawn by a
 * separate path) at its expected rate. */
START_TEST(init_is_standard_normal)
{
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = new_init(1000, 100, 7, &s);
    double sum = 0, sq = 0;
    long over2 = 0, tail = 0;
    float row[100];
    for (int64_t i = 0; i < 1000; i++) {
        table_read_row(t, i, row);
        for (int j = 0; j < 100; j++) {
            sum += row[j];
            sq += (double)row[j] * row[j];
            over2 += fabsf(row[j]) > 2.0f;
            tail += fabsf(row[j]) > 3.6541529f;
        }
    }
    double mean = sum / 1e5, sd = sqrt(sq / 1e5 - mean * mean);
    ck_assert_msg(fabs(mean) < 0.016, "mean %g", mean);
    ck_assert_msg(fabs(sd - 1.0) < 0.012, "sd %g", sd);
    ck_assert_msg(labs(over2 - 4550) < 340, "P(|x|>2) count %ld, want ~4550", over2);
    ck_assert_msg(tail >= 6 && tail <= 55, "tail count %ld, want ~26", tail);
    table_free(t);
}
END_TEST

/* A large table is filled on several threads; its rows must equal those of a
 * small table filled on one thread from the same seed. */
START_TEST(init_does_not_depend_on_threads)
{
    struct table_settings s;
    table_settings_init(&s);
    struct table *big = new_init(5000, 1000, 99, &s);   /* 5M floats: threaded */
    struct table *small = new_init(2100, 1000, 99, &s); /* 2.1M: one thread */
    float *a = malloc(1000 * sizeof(float)), *b = malloc(1000 * sizeof(float));
    for (int64_t i = 0; i < 2100; i += 7) {
        table_read_row(big, i, a);
        table_read_row(small, i, b);
        ck_assert_mem_eq(a, b, 1000 * sizeof(float));
    }
    free(a);
    free(b);
    table_free(big);
    table_free(small);
}
END_TEST

/* ---- lookup ------------------------------------------------------------ */

START_TEST(lookup_matches_torch_with_padding)
{
    size_t n;
    int64_t *meta = fixture_i64("torch/fwd_meta.i64", &n);
    int64_t rows = meta[0], dim = meta[1];
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    s.padding_idx = -4;
    struct table *t = new_from_fixture("torch/fwd_weight.f32", rows, dim, &s);
    ck_assert_int_eq(table_settings(t)->padding_idx, meta[2]);
    int64_t *ids = fixture_i64("torch/fwd_ids.i64", &n);
    float *want = fixture_f32("torch/fwd_out.f32", &n);
    ck_assert_uint_eq(n, 15 * (size_t)dim);
    float *out = malloc(n * sizeof(float));
    ck_assert_int_eq(table_lookup(t, ids, 15, out, NULL), CORE_OK);
    assert_close(out, want, n, 0, "lookup");
    for (int64_t j = 0; j < dim; j++) /* torch zeroed the padding row at init */
        ck_assert_float_eq(out[1 * dim + j], 0.0f);
    free(out);
    free(want);
    free(ids);
    free(meta);
    table_free(t);
}
END_TEST

START_TEST(lookup_any_ids)
{
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = new_init(300, 33, 5, &s); /* several stripes, odd width */
    int64_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = (i * 97) % 300;
    ids[5] = 299;
    ids[6] = 0;
    ids[7] = 0;
    float out[64 * 33], row[33];
    ck_assert_int_eq(table_lookup(t, ids, 64, out, NULL), CORE_OK);
    for (int i = 0; i < 64; i++) {
        table_read_row(t, ids[i], row);
        ck_assert_mem_eq(out + i * 33, row, sizeof(row));
    }
    ck_assert_int_eq(table_lookup(t, ids, 0, out, NULL), CORE_OK);
    table_free(t);
}
END_TEST

START_TEST(out_of_range_ids_change_nothing)
{
    float w[4 * 2] = {3, 4, 30, 40, 0.1f, 0.1f, -6, 8};
    struct table_settings s;
    table_settings_init(&s);
    s.has_max_norm = true;
    s.max_norm = 1.0;
    struct table *t = new_from(w, 4, 2, &s);
    int64_t ids[] = {0, 1, 3, 4};
    float out[8] = {0};
    size_t bad = 99;
    ck_assert_int_eq(table_lookup(t, ids, 4, out, &bad), CORE_ERANGE);
    ck_assert_uint_eq(bad, 3);
    int64_t neg[] = {1, -1};
    ck_assert_int_eq(table_lookup(t, neg, 2, out, &bad), CORE_ERANGE);
    ck_assert_uint_eq(bad, 1);
    size_t offsets[] = {0, 2, 4};
    ck_assert_int_eq(table_bag(t, ids, offsets, 2, NULL, BAG_SUM, out, &bad), CORE_ERANGE);
    ck_assert_uint_eq(bad, 3);
    assert_rows(t, w, "weights after rejected lookups");
    for (int i = 0; i < 8; i++)
        ck_assert_float_eq(out[i], 0.0f);
    /* and the valid ids of the same call do renormalize when asked properly */
    ck_assert_int_eq(table_lookup(t, ids, 3, out, &bad), CORE_OK);
    ck_assert_float_eq_tol(out[0], 0.6f, 1e-6f);
    ck_assert_float_eq_tol(t->norms[3], 1.0f, 1e-6f);
    table_free(t);
}
END_TEST

/* ---- max_norm ---------------------------------------------------------- */

/* Replays a fixture's sequence of lookups and compares every output and the
 * final weights with torch's, bit for bit. */
static void replay_renorm(const char *tag)
{
    char name[128];
    size_t n;
    snprintf(name, sizeof(name), "torch/%s_meta.i64", tag);
    int64_t *meta = fixture_i64(name, &n);
    int64_t rows = meta[0], dim = meta[1], calls = meta[2];
    snprintf(name, sizeof(name), "torch/%s_maxnorm.f32", tag);
    float *mp = fixture_f32(name, &n);
    struct table_settings s;
    table_settings_init(&s);
    s.has_max_norm = true;
    s.max_norm = mp[0];
    s.norm_type = mp[1];
    snprintf(name, sizeof(name), "torch/%s_w0.f32", tag);
    struct table *t = new_from_fixture(name, rows, dim, &s);
    snprintf(name, sizeof(name), "torch/%s_ids.i64", tag);
    int64_t *ids = fixture_i64(name, &n);
    snprintf(name, sizeof(name), "torch/%s_out.f32", tag);
    float *want = fixture_f32(name, &n);
    float *out = malloc(n * sizeof(float));
    size_t at = 0;
    for (int64_t c = 0; c < calls; c++) {
        size_t len = (size_t)meta[3 + c];
        ck_assert_int_eq(table_lookup(t, ids + at, len, out + at * (size_t)dim, NULL), CORE_OK);
        at += len;
    }
    ck_assert_uint_eq(at * (size_t)dim, n);
    assert_close(out, want, n, 0, tag);
    snprintf(name, sizeof(name), "torch/%s_wfinal.f32", tag);
    float *wfinal = fixture_f32(name, &n);
    assert_rows(t, wfinal, tag);
    for (int64_t i = 0; i < rows; i++) { /* the norm cache follows the rows */
        double sq = 0;
        for (int64_t j = 0; j < dim; j++)
            sq += (double)wfinal[i * dim + j] * wfinal[i * dim + j];
        ck_assert_double_eq_tol(t->norms[i], sqrt(sq), 1e-5 * sqrt(sq));
    }
    ck_assert_uint_eq(table_version(t), 0); /* renorm is not a write batch */
    free(wfinal);
    free(out);
    free(want);
    free(ids);
    free(mp);
    free(meta);
    table_free(t);
}

START_TEST(renorm_l2_matches_torch)
{
    replay_renorm("renorm_p2");
    replay_renorm("renorm_p2_d300");
}
END_TEST

START_TEST(renorm_l1_matches_torch)
{
    replay_renorm("renorm_p1");
}
END_TEST

START_TEST(renorm_p3_matches_torch)
{
    replay_renorm("renorm_p3");
}
END_TEST

START_TEST(renorm_inf_matches_torch)
{
    replay_renorm("renorm_pinf");
}
END_TEST

START_TEST(renorm_p05_matches_torch)
{
    replay_renorm("renorm_p05");
}
END_TEST

/* ---- assignment -------------------------------------------------------- */

START_TEST(assign_rows_later_duplicate_wins)
{
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    s.padding_idx = 0;
    s.freeze = true;
    struct table *t = new_init(70, 3, 1, &s);
    int64_t ids[] = {65, 0, 65};
    float v[] = {1, 2, 2, 5, 5, 5, 0, 3, 4};
    uint64_t version = 0;
    ck_assert_int_eq(table_assign_rows(t, ids, 3, v, NULL, &version), CORE_OK);
    ck_assert_uint_eq(version, 1);
    ck_assert_uint_eq(table_version(t), 1);
    float row[3];
    table_read_row(t, 65, row);
    ck_assert_mem_eq(row, v + 6, sizeof(row));
    ck_assert_float_eq_tol(t->norms[65], 5.0f, 1e-6f);
    table_read_row(t, 0, row); /* the padding row can be assigned */
    ck_assert_mem_eq(row, v + 3, sizeof(row));
    ck_assert_float_eq_tol(t->norms[0], sqrtf(75.0f), 1e-5f);
    ck_assert_int_eq(table_assign_rows(t, ids, 0, v, NULL, &version), CORE_OK);
    ck_assert_uint_eq(version, 2);
    table_free(t);
}
END_TEST

START_TEST(assign_rows_checks_everything_first)
{
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = new_init(10, 2, 1, &s);
    float before[10 * 2];
    for (int i = 0; i < 10; i++)
        table_read_row(t, i, before + 2 * i);
    int64_t ids[] = {1, 2, 10};
    float v[] = {1, 1, 2, 2, 3, 3};
    size_t bad = 99;
    ck_assert_int_eq(table_assign_rows(t, ids, 3, v, &bad, NULL), CORE_ERANGE);
    ck_assert_uint_eq(bad, 2);
    ids[2] = 3;
    v[3] = INFINITY;
    ck_assert_int_eq(table_assign_rows(t, ids, 3, v, &bad, NULL), CORE_EINVAL);
    ck_assert_uint_eq(bad, 1);
    v[3] = NAN;
    ck_assert_int_eq(table_assign_rows(t, ids, 3, v, &bad, NULL), CORE_EINVAL);
    assert_rows(t, before, "weights after rejected assignments");
    ck_assert_uint_eq(table_version(t), 0);
    table_free(t);
}
END_TEST

/* A reader copying rows while a writer rewrites them must never see a row
 * mixing two writes: every written row holds one value repeated. */
struct race {
    struct table *t;
    _Atomic int stop;
    long torn;
};

static void *race_reader(void *arg)
{
    struct race *r = arg;
    float row[40];
    while (!atomic_load(&r->stop)) {
        for (int64_t i = 0; i < 8; i++) {
            table_read_row(r->t, i, row);
            for (int j = 1; j < 40; j++)
                r->torn += row[j] != row[0];
        }
    }
    return NULL;
}

START_TEST(readers_never_see_torn_rows)
{
    struct table_settings s;
    table_settings_init(&s);
    float zero[8 * 40] = {0};
    struct race r = {.t = new_from(zero, 8, 40, &s)};
    pthread_t tid;
    ck_assert_int_eq(pthread_create(&tid, NULL, race_reader, &r), 0);
    float v[40];
    for (int k = 1; k <= 20000; k++) {
        for (int j = 0; j < 40; j++)
            v[j] = (float)k;
        int64_t id = k % 8;
        ck_assert_int_eq(table_assign_rows(r.t, &id, 1, v, NULL, NULL), CORE_OK);
    }
    atomic_store(&r.stop, 1);
    pthread_join(tid, NULL);
    ck_assert_int_eq(r.torn, 0);
    ck_assert_uint_eq(table_version(r.t), 20000);
    table_free(r.t);
}
END_TEST

/* ---- tokens ------------------------------------------------------------ */

static struct table *table_with_vocab(int64_t oov_id)
{
    struct vocab *v;
    ck_assert_int_eq(vocab_new(&v, 4), CORE_OK);
    const char *words[] = {"<unk>", "the", "cat", "über"};
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(vocab_add(v, words[i], strlen(words[i]), NULL), CORE_OK);
    struct matrix w;
    ck_assert_int_eq(matrix_init(&w, 4, 2), CORE_OK);
    struct table_settings s;
    table_settings_init(&s);
    s.oov_id = oov_id;
    struct table *t;
    char err[128];
    ck_assert_int_eq(table_new(&t, "words", &w, v, &s, err, sizeof(err)), CORE_OK);
    return t;
}

START_TEST(resolve_tokens_policies)
{
    const char *toks[] = {"cat", "über", "dog", "the"};
    size_t lens[] = {3, 5, 3, 3};
    int64_t ids[4];
    size_t bad = 99;
    struct table *strict = table_with_vocab(-1);
    ck_assert_int_eq(table_resolve_tokens(strict, toks, lens, 2, true, ids, &bad), CORE_OK);
    ck_assert_int_eq(ids[0], 2);
    ck_assert_int_eq(ids[1], 3);
    ck_assert_int_eq(table_resolve_tokens(strict, toks, lens, 4, true, ids, &bad), CORE_ENOTFOUND);
    ck_assert_uint_eq(bad, 2);
    table_free(strict);

    struct table *lenient = table_with_vocab(0);
    ck_assert_int_eq(table_resolve_tokens(lenient, toks, lens, 4, true, ids, &bad), CORE_OK);
    ck_assert_int_eq(ids[2], 0);
    ck_assert_int_eq(ids[3], 1);
    bad = 99;
    ck_assert_int_eq(table_resolve_tokens(lenient, toks, lens, 4, false, ids, &bad), CORE_ENOTFOUND);
    ck_assert_uint_eq(bad, 2);
    ck_assert_int_eq(vocab_size(table_vocab(lenient)), 4);
    table_free(lenient);

    struct table_settings s;
    table_settings_init(&s);
    struct table *plain = new_init(4, 2, 1, &s);
    ck_assert_int_eq(table_resolve_tokens(plain, toks, lens, 1, true, ids, &bad), CORE_EUNSUPPORTED);
    table_free(plain);
}
END_TEST

static Suite *table_suite(void)
{
    Suite *s = suite_create("table");
    TCase *tc = tcase_create("settings");
    tcase_add_test(tc, settings_are_checked);
    tcase_add_test(tc, vocab_size_must_match_rows);
    tcase_add_test(tc, padding_is_normalized);
    tcase_add_test(tc, init_shape_limits);
    suite_add_tcase(s, tc);
    tc = tcase_create("init");
    tcase_add_test(tc, init_is_deterministic_and_pads);
    tcase_add_test(tc, init_is_standard_normal);
    tcase_add_test(tc, init_does_not_depend_on_threads);
    suite_add_tcase(s, tc);
    tc = tcase_create("lookup");
    tcase_add_test(tc, lookup_matches_torch_with_padding);
    tcase_add_test(tc, lookup_any_ids);
    tcase_add_test(tc, out_of_range_ids_change_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("renorm");
    tcase_add_test(tc, renorm_l2_matches_torch);
    tcase_add_test(tc, renorm_l1_matches_torch);
    tcase_add_test(tc, renorm_p3_matches_torch);
    tcase_add_test(tc, renorm_inf_matches_torch);
    tcase_add_test(tc, renorm_p05_matches_torch);
    suite_add_tcase(s, tc);
    tc = tcase_create("write");
    tcase_add_test(tc, assign_rows_later_duplicate_wins);
    tcase_add_test(tc, assign_rows_checks_everything_first);
    tcase_add_test(tc, readers_never_see_torn_rows);
    tcase_add_test(tc, resolve_tokens_policies);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(table_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
