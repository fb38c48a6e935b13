/* test_snapshot.c - core/snapshot.c: round trips of weights (every bit
 * pattern), vocabulary, settings, optimizer state, step, version and log
 * seq; training resumed from a snapshot equals training without the break;
 * names by seq never collide across runs; listing, pruning, cleaning and
 * falling back to an older snapshot; broken snapshots give clear errors; a
 * snapshot at the same seq is replaced atomically. */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "optim.h"
#include "snapshot.h"
#include "table.h"
#include "table_internal.h"
#include "testutil.h"
#include "vocab.h"

#define ROWS 50
#define DIM 7

static struct table *make_table(const char *name, enum optim_kind kind, bool with_vocab)
{
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    s.padding_idx = 3;
    s.has_max_norm = true;
    s.max_norm = 2.5;
    s.norm_type = INFINITY;
    s.scale_grad_by_freq = true;
    s.oov_id = with_vocab ? 0 : -1;
    struct table *t = NULL;
    char err[256] = "";
    ck_assert_msg(table_new_init(&t, name, ROWS, DIM, 11, &s, err, sizeof(err)) == CORE_OK, "%s",
                  err);
    if (with_vocab) {
        /* table_new_init has no vocabulary argument: build one around the rows */
        struct vocab *v;
        ck_assert_int_eq(vocab_new(&v, ROWS), CORE_OK);
        for (int i = 0; i < ROWS; i++) {
            char tok[32];
            int n = snprintf(tok, sizeof(tok), "tok%d-\xc3\xa9", i);
            ck_assert_int_eq(vocab_add(v, tok, (size_t)n, NULL), CORE_OK);
        }
        t->vocab = v;
    }
    struct optim_config c;
    optim_config_defaults(&c, kind);
    c.lr = 0.05;
    if (kind == OPTIM_ADAGRAD)
        c.initial_accumulator_value = 0.25;
    ck_assert_int_eq(table_set_optimizer(t, &c, NULL, 0), CORE_OK);
    return t;
}

/* Step s of a deterministic training run: 24 ids with duplicates and the
 * padding id, gradients that depend on s. */
static void train_step(struct table *t, int s)
{
    int64_t ids[24];
    float g[24 * DIM];
    for (int i = 0; i < 24; i++) {
        ids[i] = (s * 7 + i * 13) % 17 + (i % 3 == 0 ? 20 : 0);
        for (int j = 0; j < DIM; j++)
            g[i * DIM + j] = sinf((float)(s * 1000 + i * 10 + j)) * (float)(1 + i % 4);
    }
    ids[5] = 3; /* padding */
    double lr = s % 3 == 2 ? 0.125 : 0;
    ck_assert_int_eq(table_apply_gradients(t, ids, 24, g, lr, NULL, NULL, NULL), CORE_OK);
}

static void assert_matrix_eq(const struct matrix *a, const struct matrix *b, const char *what)
{
    ck_assert_msg((a->data == NULL) == (b->data == NULL), "%s: presence differs", what);
    if (a->data == NULL)
        return;
    ck_assert_int_eq(a->rows, b->rows);
    ck_assert_int_eq(a->dim, b->dim);
    for (int64_t r = 0; r < a->rows; r++)
        ck_assert_msg(memcmp(matrix_row(a, r), matrix_row(b, r),
                             (size_t)a->dim * sizeof(float)) == 0,
                      "%s: row %lld differs", what, (long long)r);
}

static void assert_tables_eq(const struct table *a, const struct table *b)
{
    assert_matrix_eq(&a->w, &b->w, "weight");
    assert_matrix_eq(&a->optim.exp_avg, &b->optim.exp_avg, "exp_avg");
    assert_matrix_eq(&a->optim.exp_avg_sq, &b->optim.exp_avg_sq, "exp_avg_sq");
    assert_matrix_eq(&a->optim.sum, &b->optim.sum, "sum");
    ck_assert_int_eq(a->optim.step, b->optim.step);
    ck_assert_uint_eq(table_version(a), table_version(b));
    ck_assert_int_eq(a->optim.configured, b->optim.configured);
    ck_assert_mem_eq(&a->optim.cfg, &b->optim.cfg, sizeof(a->optim.cfg));
    for (int64_t r = 0; r < a->w.rows; r++)
        ck_assert_float_eq(a->norms[r], b->norms[r]);
}

static struct table *load(const char *dir, const char *name)
{
    struct table *t = NULL;
    char err[512] = "";
    int rc = snapshot_load(dir, name, &t, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "snapshot_load %s: %s: %s", dir, core_errname(rc), err);
    return t;
}

static void write_snapshot(struct table *t, const char *data_dir, char *path, size_t len)
{
    char err[512] = "";
    struct snapshot_info info;
    int rc = snapshot_write(t, data_dir, path, len, &info, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "snapshot_write: %s: %s", core_errname(rc), err);
    ck_assert_uint_eq(info.version, table_version(t));
    ck_assert_uint_eq(info.log_seq, table_log_seq(t));
    ck_assert_uint_ge(info.total_us, info.lock_us);
    /* at least weight.npy's header and rows, and a manifest */
    ck_assert_uint_gt(info.bytes, 128 + (uint64_t)(t->w.rows * t->w.dim) * 4);
}

/* <data>/<name>/snapshot-<seq>, in a static buffer (one at a time). */
static const char *path_of(const char *data, const char *name, uint64_t seq)
{
    static char path[4096];
    ck_assert_int_eq(snapshot_path(data, name, seq, path, sizeof(path)), CORE_OK);
    return path;
}

static bool file_exists(const char *dir, const char *name)
{
    char p[8400];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void replace_file(const char *dir, const char *name, const char *text)
{
    free(testutil_write_file(dir, name, text, strlen(text)));
}

static void remove_file(const char *dir, const char *name)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    ck_assert_int_eq(unlink(p), 0);
}

/* Replaces `from` with `to` in manifest.json (which must contain it). */
static void edit_manifest(const char *dir, const char *from, const char *to)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/manifest.json", dir);
    char *text = testutil_read_file(p, NULL);
    char *at = strstr(text, from);
    ck_assert_msg(at != NULL, "manifest lacks %s", from);
    size_t out_len = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(out_len);
    snprintf(out, out_len, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    replace_file(dir, "manifest.json", out);
    free(out);
    free(text);
}

/* ---- round trips -------------------------------------------------------- */

START_TEST(round_trip_everything)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("words", OPTIM_SPARSE_ADAM, true);
    for (int s = 0; s < 4; s++)
        train_step(t, s);
    char path[4096], err[512] = "";
    struct snapshot_info info;
    ck_assert_int_eq(snapshot_write(t, data, path, sizeof(path), &info, err, sizeof(err)),
                     CORE_OK);
    char expect[4096];
    snprintf(expect, sizeof(expect), "%s/words/snapshot-4", data);
    ck_assert_str_eq(path, expect);
    ck_assert_uint_eq(info.version, 4);
    ck_assert_uint_eq(info.log_seq, 4);
    const char *files[] = {"weight.npy", "vocab.txt", "exp_avg.npy", "exp_avg_sq.npy",
                           "manifest.json"};
    uint64_t bytes = 0;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char p[4200];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", path, files[i]);
        ck_assert_msg(stat(p, &st) == 0, "%s missing", files[i]);
        bytes += (uint64_t)st.st_size;
    }
    ck_assert_uint_eq(info.bytes, bytes);
    ck_assert(!file_exists(path, "sum.npy"));

    struct table *u = load(path, NULL);
    ck_assert_str_eq(table_name(u), "words");
    assert_tables_eq(t, u);
    const struct table_settings *a = table_settings(t), *b = table_settings(u);
    ck_assert(b->has_padding && b->padding_idx == 3);
    ck_assert(b->has_max_norm && b->max_norm == 2.5);
    ck_assert(isinf(b->norm_type));
    ck_assert(b->scale_grad_by_freq == a->scale_grad_by_freq && !b->freeze);
    ck_assert_int_eq(b->oov_id, 0);
    ck_assert_int_eq(vocab_size(table_vocab(u)), ROWS);
    for (int64_t i = 0; i < ROWS; i++) {
        size_t la, lb;
        const char *ta = vocab_token(table_vocab(t), i, &la);
        const char *tb = vocab_token(table_vocab(u), i, &lb);
        ck_assert_uint_eq(la, lb);
        ck_assert(memcmp(ta, tb, la) == 0);
    }
    table_free(u);

    u = load(path, "renamed");
    ck_assert_str_eq(table_name(u), "renamed");
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* weight.npy is a plain numpy file: the loaders read it as any .npy. */
START_TEST(weight_is_plain_npy)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("plain", OPTIM_ADAGRAD, false);
    train_step(t, 0);
    char path[4096], file[4200];
    write_snapshot(t, data, path, sizeof(path));
    ck_assert(file_exists(path, "sum.npy"));
    ck_assert(!file_exists(path, "vocab.txt"));
    snprintf(file, sizeof(file), "%s/weight.npy", path);
    struct matrix m;
    struct loader_opts o = {.format = LOADER_NPY};
    char err[256] = "";
    ck_assert_msg(npy_load(file, &o, &m, err, sizeof(err)) == CORE_OK, "%s", err);
    assert_matrix_eq(&m, &t->w, "weight.npy");
    matrix_deinit(&m);
    snprintf(file, sizeof(file), "%s/sum.npy", path);
    ck_assert_msg(npy_load(file, &o, &m, err, sizeof(err)) == CORE_OK, "%s", err);
    assert_matrix_eq(&m, &t->optim.sum, "sum.npy");
    matrix_deinit(&m);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* N steps, snapshot, load, M steps == N + M steps, for every optimizer. */
START_TEST(resume_equals_uninterrupted)
{
    static const enum optim_kind kinds[] = {OPTIM_SGD, OPTIM_SPARSE_ADAM, OPTIM_ADAGRAD};
    char *data = testutil_tmpdir();
    struct table *straight = make_table("resume", kinds[_i], false);
    struct table *first = make_table("resume", kinds[_i], false);
    for (int s = 0; s < 5; s++) {
        train_step(straight, s);
        train_step(first, s);
    }
    char path[4096];
    write_snapshot(first, data, path, sizeof(path));
    table_free(first);
    struct table *resumed = load(path, NULL);
    for (int s = 5; s < 9; s++) {
        train_step(straight, s);
        train_step(resumed, s);
    }
    assert_tables_eq(straight, resumed);
    ck_assert_uint_eq(table_version(resumed), 9);
    table_free(straight);
    table_free(resumed);
    testutil_rmtree(data);
}
END_TEST

/* A table that never had an optimizer configured (default sgd) and a frozen
 * table round-trip too; the frozen one stays frozen. */
START_TEST(unconfigured_and_frozen)
{
    char *data = testutil_tmpdir();
    struct table_settings s;
    table_settings_init(&s);
    s.freeze = true;
    struct table *t = NULL;
    ck_assert_int_eq(table_new_init(&t, "frozen", 10, 4, 1, &s, NULL, 0), CORE_OK);
    int64_t ids[1] = {2};
    float v[4] = {1, 2, 3, 4};
    ck_assert_int_eq(table_assign_rows(t, ids, 1, v, NULL, NULL), CORE_OK);
    char path[4096];
    write_snapshot(t, data, path, sizeof(path));
    struct table *u = load(path, NULL);
    assert_tables_eq(t, u);
    ck_assert(table_settings(u)->freeze);
    ck_assert(!table_optimizer(u)->configured);
    ck_assert_uint_eq(table_version(u), 1);
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* ---- latest ------------------------------------------------------------- */

START_TEST(find_latest_picks_highest_complete)
{
    char *data = testutil_tmpdir();
    char path[4096], err[256];
    ck_assert_int_eq(snapshot_find_latest(data, "t", path, sizeof(path), err, sizeof(err)),
                     CORE_ENOTFOUND);
    struct table *t = make_table("t", OPTIM_SGD, false);
    for (int s = 0; s < 10; s++) {
        train_step(t, s);
        if (s == 1 || s == 8)
            write_snapshot(t, data, path, sizeof(path));
    }
    /* decoys: a bigger version without manifest, a temp dir, a bad name */
    char decoy[4200];
    const char *names[] = {"snapshot-100", ".tmp-snapshot-200-1", "snapshot-12x", "snapshot-"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(decoy, sizeof(decoy), "%s/t/%s", data, names[i]);
        ck_assert_int_eq(mkdir(decoy, 0755), 0);
    }
    ck_assert_int_eq(snapshot_find_latest(data, "t", path, sizeof(path), err, sizeof(err)),
                     CORE_OK);
    char expect[4096];
    snprintf(expect, sizeof(expect), "%s/t/snapshot-9", data);
    ck_assert_str_eq(path, expect);
    ck_assert_int_eq(snapshot_find_latest(data, "t", path, 10, err, sizeof(err)), CORE_ETOOBIG);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

START_TEST(prune_keeps_newest)
{
    char *data = testutil_tmpdir();
    char path[4096], table_dir[4200], err[256] = "";
    size_t removed = 99;
    ck_assert_int_eq(snapshot_prune(data, "p", 2, &removed, NULL, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 0);
    ck_assert_int_eq(snapshot_prune(data, "p", 0, NULL, NULL, err, sizeof(err)), CORE_EINVAL);
    struct table *t = make_table("p", OPTIM_SGD, false);
    for (int s = 0; s < 5; s++) {
        train_step(t, s);
        write_snapshot(t, data, path, sizeof(path));
    }
    snprintf(table_dir, sizeof(table_dir), "%s/p", data);
    /* a write in progress */
    char other[4300];
    snprintf(other, sizeof(other), "%s/.tmp-snapshot-1-1", table_dir);
    ck_assert_int_eq(mkdir(other, 0755), 0);
    ck_assert_int_eq(snapshot_prune(data, "p", 2, &removed, NULL, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 3);
    ck_assert(file_exists(table_dir, "snapshot-5"));
    ck_assert(file_exists(table_dir, "snapshot-4"));
    ck_assert(!file_exists(table_dir, "snapshot-3"));
    ck_assert(!file_exists(table_dir, "snapshot-1"));
    ck_assert(file_exists(table_dir, ".tmp-snapshot-1-1"));
    ck_assert_int_eq(snapshot_find_latest(data, "p", path, sizeof(path), err, sizeof(err)),
                     CORE_OK);
    ck_assert_ptr_nonnull(strstr(path, "snapshot-5"));
    table_free(load(path, NULL));
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* ---- defects: seq, names across runs, every bit pattern ------------------ */

/* Stands in for the journal: the lead's recovery keeps log seqs going up
 * across runs, so a table can be at seq s whatever its version. */
static void set_log_seq(struct table *t, uint64_t seq)
{
    pthread_mutex_lock(&t->write_lock);
    atomic_store(&t->log_seq, seq);
    pthread_mutex_unlock(&t->write_lock);
}

START_TEST(log_seq_round_trips)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("seq", OPTIM_ADAGRAD, false);
    set_log_seq(t, 40);
    train_step(t, 0);
    char path[4096];
    write_snapshot(t, data, path, sizeof(path));
    struct table *u = load(path, NULL);
    ck_assert_uint_eq(table_log_seq(u), 41);
    ck_assert_uint_eq(table_version(u), 1);
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* A second run that starts fresh (resume false) has low versions but, the
 * log going on, higher seqs: its snapshots must neither replace the first
 * run's nor be pruned in their favour. */
START_TEST(new_run_never_collides_and_is_kept)
{
    char *data = testutil_tmpdir();
    char path[4096], table_dir[4200], err[256] = "";
    struct table *a = make_table("runs", OPTIM_SGD, false);
    for (int s = 0; s < 5; s++) {
        train_step(a, s);
        write_snapshot(a, data, path, sizeof(path));
    }
    struct table *b = make_table("runs", OPTIM_SGD, false);
    set_log_seq(b, table_log_seq(a));
    train_step(b, 100);
    write_snapshot(b, data, path, sizeof(path));
    snprintf(table_dir, sizeof(table_dir), "%s/runs", data);
    char expect[4300];
    snprintf(expect, sizeof(expect), "%s/snapshot-6", table_dir);
    ck_assert_str_eq(path, expect);
    ck_assert(file_exists(table_dir, "snapshot-1"));
    size_t removed = 0;
    ck_assert_int_eq(snapshot_prune(data, "runs", 2, &removed, NULL, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 4);
    ck_assert(file_exists(table_dir, "snapshot-6"));
    ck_assert(file_exists(table_dir, "snapshot-5"));
    ck_assert_int_eq(snapshot_find_latest(data, "runs", path, sizeof(path), err, sizeof(err)),
                     CORE_OK);
    ck_assert_str_eq(path, expect);
    struct table *u = load(path, NULL);
    assert_tables_eq(b, u);
    table_free(u);
    table_free(a);
    table_free(b);
    testutil_rmtree(data);
}
END_TEST

/* Writes a snapshot of t at seq (set first), returning nothing. */
static void snapshot_at(struct table *t, uint64_t seq, const char *data)
{
    char path[4096];
    set_log_seq(t, seq);
    write_snapshot(t, data, path, sizeof(path));
}

/* Turns the snapshot at seq into what format 1 wrote, named num. */
static void make_legacy(const char *data, const char *name, uint64_t seq, uint64_t num)
{
    char from[4096], to[4096], needle[64];
    ck_assert_int_eq(snapshot_path(data, name, seq, from, sizeof(from)), CORE_OK);
    ck_assert_int_eq(snapshot_path(data, name, num, to, sizeof(to)), CORE_OK);
    edit_manifest(from, "\"format_version\": 2", "\"format_version\": 1");
    snprintf(needle, sizeof(needle), "  \"log_seq\": %llu,\n", (unsigned long long)seq);
    edit_manifest(from, needle, "");
    ck_assert_int_eq(rename(from, to), 0);
}

static void mkdir_in(const char *data, const char *table, const char *sub)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/%s/%s", data, table, sub);
    ck_assert_int_eq(mkdir(p, 0755), 0);
}

START_TEST(list_is_newest_first)
{
    char *data = testutil_tmpdir();
    char err[256] = "";
    uint64_t *seqs = (uint64_t *)0x1;
    size_t n = 9;
    ck_assert_int_eq(snapshot_list(data, "l", &seqs, &n, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(seqs);
    struct table *t = make_table("l", OPTIM_SGD, false);
    snapshot_at(t, 3, data);
    snapshot_at(t, 10, data);
    snapshot_at(t, 7, data);
    snapshot_at(t, 0, data);
    /* a format-1 snapshot named by a bigger version is still the oldest */
    snapshot_at(t, 5, data);
    make_legacy(data, "l", 5, 50);
    /* not snapshots: no manifest, being written, being replaced, bad names */
    static const char *const decoys[] = {"snapshot-100", ".tmp-snapshot-200-1",
                                         ".tmp-snapshot-200-2.old", "snapshot-12x", "snapshot-",
                                         "snapshot-99999999999999999999"};
    for (size_t i = 0; i < sizeof(decoys) / sizeof(decoys[0]); i++)
        mkdir_in(data, "l", decoys[i]);
    ck_assert_int_eq(snapshot_list(data, "l", &seqs, &n, err, sizeof(err)), CORE_OK);
    static const uint64_t want[] = {10, 7, 3, 0, 50};
    ck_assert_uint_eq(n, 5);
    for (size_t i = 0; i < n; i++)
        ck_assert_uint_eq(seqs[i], want[i]);
    free(seqs);
    char path[4096], expect[4096];
    ck_assert_int_eq(snapshot_find_latest(data, "l", path, sizeof(path), err, sizeof(err)),
                     CORE_OK);
    snprintf(expect, sizeof(expect), "%s/l/snapshot-10", data);
    ck_assert_str_eq(path, expect);
    /* the format-1 one loads, at seq 0 */
    ck_assert_int_eq(snapshot_path(data, "l", 50, path, sizeof(path)), CORE_OK);
    struct table *u = load(path, NULL);
    ck_assert_uint_eq(table_log_seq(u), 0);
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

START_TEST(path_is_formed_or_too_long)
{
    char path[64];
    ck_assert_int_eq(snapshot_path("/d", "words", 18446744073709551615u, path, sizeof(path)),
                     CORE_OK);
    ck_assert_str_eq(path, "/d/words/snapshot-18446744073709551615");
    ck_assert_int_eq(snapshot_path("/d", "words", 42, path, 20), CORE_ETOOBIG);
}
END_TEST

START_TEST(prune_reports_oldest_kept)
{
    char *data = testutil_tmpdir();
    char err[256] = "";
    size_t removed = 9;
    uint64_t oldest = 9;
    ck_assert_int_eq(snapshot_prune(data, "o", 3, &removed, &oldest, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(oldest, 0);
    struct table *t = make_table("o", OPTIM_SGD, false);
    for (uint64_t seq = 11; seq <= 15; seq++)
        snapshot_at(t, seq, data);
    ck_assert_int_eq(snapshot_prune(data, "o", 10, &removed, &oldest, err, sizeof(err)),
                     CORE_OK);
    ck_assert_uint_eq(removed, 0);
    ck_assert_uint_eq(oldest, 11);
    ck_assert_int_eq(snapshot_prune(data, "o", 2, &removed, &oldest, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 3);
    ck_assert_uint_eq(oldest, 14);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* Upgrading: format-1 snapshots named by versions above the new seqs must
 * neither win find_latest nor make pruning drop the new ones; while one of
 * them stays, no log record may go (oldest kept seq 0). */
START_TEST(format_1_snapshots_are_older)
{
    char *data = testutil_tmpdir();
    char err[256] = "", path[4096], table_dir[4200];
    struct table *t = make_table("up", OPTIM_SGD, false);
    snapshot_at(t, 1, data);
    make_legacy(data, "up", 1, 40);
    snapshot_at(t, 2, data);
    make_legacy(data, "up", 2, 41);
    snapshot_at(t, 3, data);
    size_t removed = 0;
    uint64_t oldest = 9;
    ck_assert_int_eq(snapshot_prune(data, "up", 2, &removed, &oldest, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 1);
    ck_assert_uint_eq(oldest, 0);
    snprintf(table_dir, sizeof(table_dir), "%s/up", data);
    ck_assert(file_exists(table_dir, "snapshot-3"));
    ck_assert(file_exists(table_dir, "snapshot-41"));
    ck_assert(!file_exists(table_dir, "snapshot-40"));
    ck_assert_int_eq(snapshot_find_latest(data, "up", path, sizeof(path), err, sizeof(err)),
                     CORE_OK);
    ck_assert_ptr_nonnull(strstr(path, "/snapshot-3"));
    ck_assert_int_eq(snapshot_prune(data, "up", 1, &removed, &oldest, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(oldest, 3);
    ck_assert(!file_exists(table_dir, "snapshot-41"));
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

START_TEST(clean_tmp_removes_leftovers)
{
    char *data = testutil_tmpdir();
    char err[256] = "", table_dir[4200];
    size_t removed = 9;
    ck_assert_int_eq(snapshot_clean_tmp(data, "c", &removed, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 0);
    struct table *t = make_table("c", OPTIM_SPARSE_ADAM, true);
    train_step(t, 0);
    snapshot_at(t, 4, data);
    snprintf(table_dir, sizeof(table_dir), "%s/c", data);
    /* a crash mid-write (some files), mid-replace, and an empty one */
    mkdir_in(data, "c", ".tmp-snapshot-77-0");
    char sub[4300];
    snprintf(sub, sizeof(sub), "%s/.tmp-snapshot-77-0", table_dir);
    free(testutil_write_file(sub, "weight.npy", "partial", 7));
    mkdir_in(data, "c", ".tmp-snapshot-77-1.old");
    snprintf(sub, sizeof(sub), "%s/.tmp-snapshot-77-1.old", table_dir);
    free(testutil_write_file(sub, "manifest.json", "{}", 2));
    mkdir_in(data, "c", ".tmp-snapshot-78-3");
    mkdir_in(data, "c", ".keep-me");
    ck_assert_int_eq(snapshot_clean_tmp(data, "c", &removed, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 3);
    ck_assert(!file_exists(table_dir, ".tmp-snapshot-77-0"));
    ck_assert(!file_exists(table_dir, ".tmp-snapshot-77-1.old"));
    ck_assert(!file_exists(table_dir, ".tmp-snapshot-78-3"));
    ck_assert(file_exists(table_dir, ".keep-me"));
    ck_assert(file_exists(table_dir, "snapshot-4"));
    char path[4096];
    ck_assert_int_eq(snapshot_path(data, "c", 4, path, sizeof(path)), CORE_OK);
    table_free(load(path, NULL));
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

struct skips {
    int n;
    char path[4096];
    int rc;
};

static void on_skip(void *ud, const char *path, int rc, const char *why)
{
    struct skips *s = ud;
    ck_assert_ptr_nonnull(strstr(why, path));
    s->n++;
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->rc = rc;
}

/* A damaged newest snapshot must not stop a start when an older one loads;
 * when none loads the newest one's error comes back, never "not found". */
START_TEST(load_newest_falls_back)
{
    char *data = testutil_tmpdir();
    char err[512] = "", path[4096], newest[4096];
    struct table *u = NULL;
    ck_assert_int_eq(snapshot_load_newest(data, "f", &u, path, sizeof(path), NULL, NULL, err,
                                          sizeof(err)),
                     CORE_ENOTFOUND);
    struct table *t = make_table("f", OPTIM_ADAGRAD, false);
    train_step(t, 0);
    snapshot_at(t, 20, data);
    struct table *older = load(path_of(data, "f", 20), NULL);
    train_step(t, 1);
    snapshot_at(t, 30, data);
    ck_assert_int_eq(snapshot_path(data, "f", 30, newest, sizeof(newest)), CORE_OK);
    replace_file(newest, "sum.npy", "torn");

    struct skips sk = {0};
    ck_assert_int_eq(snapshot_load_newest(data, "f", &u, path, sizeof(path), on_skip, &sk, err,
                                          sizeof(err)),
                     CORE_OK);
    ck_assert_int_eq(sk.n, 1);
    ck_assert_str_eq(sk.path, newest);
    ck_assert_int_eq(sk.rc, CORE_EFORMAT);
    ck_assert_ptr_nonnull(strstr(path, "/snapshot-20"));
    ck_assert_uint_eq(table_log_seq(u), 20);
    assert_tables_eq(older, u);
    table_free(u);

    /* both damaged: the newest's error; a missing file is not "no snapshot" */
    char oldest[4096];
    ck_assert_int_eq(snapshot_path(data, "f", 20, oldest, sizeof(oldest)), CORE_OK);
    remove_file(oldest, "weight.npy");
    remove_file(newest, "weight.npy");
    memset(&sk, 0, sizeof(sk));
    u = (struct table *)0x1;
    int rc = snapshot_load_newest(data, "f", &u, NULL, 0, on_skip, &sk, err, sizeof(err));
    ck_assert_int_eq(rc, CORE_EFORMAT);
    ck_assert_ptr_null(u);
    ck_assert_int_eq(sk.n, 2);
    ck_assert_int_eq(sk.rc, CORE_ENOTFOUND);
    ck_assert_ptr_nonnull(strstr(err, newest));
    table_free(older);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Bit patterns a float32 can hold: NaNs with payloads (quiet, signalling,
 * negative), infinities, signed zeros, denormals, extremes. */
static const uint32_t odd_bits[] = {
    0x7fc00000u, 0x7fc00001u, 0x7fa12345u, 0xffc0beefu, 0xff800001u, 0x7f800000u,
    0xff800000u, 0x80000000u, 0x00000000u, 0x00000001u, 0x807fffffu, 0x7f7fffffu,
    0x00800000u, 0x3f800000u,
};
#define NODD (sizeof(odd_bits) / sizeof(odd_bits[0]))

/* Fills every float of m with the odd patterns, in a rotation that depends
 * on salt; caller holds the write lock (or owns the table alone). */
static void fill_odd(struct matrix *m, unsigned salt)
{
    for (int64_t r = 0; r < m->rows; r++)
        for (int64_t j = 0; j < m->dim; j++)
            matrix_row(m, r)[j] = from_bits(odd_bits[((size_t)(r * m->dim + j) + salt) % NODD]);
}

static void assert_bits_eq(const struct matrix *a, const struct matrix *b, const char *what)
{
    ck_assert_msg(a->data != NULL && b->data != NULL, "%s: missing", what);
    for (int64_t r = 0; r < a->rows; r++)
        for (int64_t j = 0; j < a->dim; j++) {
            uint32_t x, y;
            memcpy(&x, &matrix_row(a, r)[j], 4);
            memcpy(&y, &matrix_row(b, r)[j], 4);
            ck_assert_msg(x == y, "%s[%lld][%lld]: saved %08x, loaded %08x", what, (long long)r,
                          (long long)j, x, y);
        }
}

static const enum optim_kind bit_kinds[] = {OPTIM_SGD, OPTIM_SPARSE_ADAM, OPTIM_ADAGRAD};

START_TEST(every_bit_pattern_round_trips)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("bits", bit_kinds[_i], false);
    train_step(t, 0); /* allocates the optimizer state */
    pthread_mutex_lock(&t->write_lock);
    fill_odd(&t->w, 0);
    for (int64_t r = 0; r < t->w.rows; r++)
        table_update_norm(t, r);
    if (t->optim.exp_avg.data != NULL) {
        fill_odd(&t->optim.exp_avg, 3);
        fill_odd(&t->optim.exp_avg_sq, 5);
    }
    if (t->optim.sum.data != NULL)
        fill_odd(&t->optim.sum, 7);
    pthread_mutex_unlock(&t->write_lock);
    char path[4096];
    write_snapshot(t, data, path, sizeof(path));
    struct table *u = load(path, NULL);
    assert_bits_eq(&t->w, &u->w, "weight");
    if (t->optim.exp_avg.data != NULL) {
        assert_bits_eq(&t->optim.exp_avg, &u->optim.exp_avg, "exp_avg");
        assert_bits_eq(&t->optim.exp_avg_sq, &u->optim.exp_avg_sq, "exp_avg_sq");
    }
    if (t->optim.sum.data != NULL)
        assert_bits_eq(&t->optim.sum, &u->optim.sum, "sum");
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* The way it happens in service: a valid (finite) gradient of 1e20 makes
 * Adagrad's sum infinite; the server must still start from that snapshot. */
START_TEST(adagrad_overflow_snapshot_loads)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("overflow", OPTIM_ADAGRAD, false);
    int64_t ids[2] = {1, 2};
    float g[2 * DIM];
    for (int j = 0; j < 2 * DIM; j++)
        g[j] = 1e20f;
    ck_assert_int_eq(table_apply_gradients(t, ids, 2, g, 0, NULL, NULL, NULL), CORE_OK);
    ck_assert(isinf(matrix_row(&t->optim.sum, 1)[0]));
    char path[4096];
    write_snapshot(t, data, path, sizeof(path));
    struct table *u = load(path, NULL);
    assert_bits_eq(&t->optim.sum, &u->optim.sum, "sum");
    assert_bits_eq(&t->w, &u->w, "weight");
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* ---- broken snapshots --------------------------------------------------- */

static char *good_snapshot(char **data_out, enum optim_kind kind, bool vocab)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("b", kind, vocab);
    train_step(t, 0);
    train_step(t, 1);
    char path[4096];
    write_snapshot(t, data, path, sizeof(path));
    table_free(t);
    *data_out = data;
    return strdup(path);
}

static void expect_load_error(const char *dir, int code, const char *needle1, const char *needle2)
{
    struct table *t = (struct table *)0x1;
    char err[512] = "";
    int rc = snapshot_load(dir, NULL, &t, err, sizeof(err));
    ck_assert_msg(rc == code, "expected %s, got %s (%s)", core_errname(code), core_errname(rc),
                  err);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, needle1) != NULL, "'%s' not in: %s", needle1, err);
    if (needle2 != NULL)
        ck_assert_msg(strstr(err, needle2) != NULL, "'%s' not in: %s", needle2, err);
}

struct broken_case {
    const char *what;
    const char *from, *to;    /* manifest edit, or NULL */
    const char *remove;       /* file to delete, or NULL */
    const char *file, *text;  /* file to overwrite, or NULL */
    int code;
    const char *needle1, *needle2;
};

static const struct broken_case broken_cases[] = {
    {"no manifest", NULL, NULL, "manifest.json", NULL, NULL, CORE_ENOTFOUND, "manifest.json", NULL},
    {"no weight", NULL, NULL, "weight.npy", NULL, NULL, CORE_ENOTFOUND, "weight.npy", NULL},
    {"no exp_avg_sq", NULL, NULL, "exp_avg_sq.npy", NULL, NULL, CORE_ENOTFOUND, "exp_avg_sq.npy", NULL},
    {"no vocab", NULL, NULL, "vocab.txt", NULL, NULL, CORE_ENOTFOUND, "vocab.txt", NULL},
    {"truncated manifest", NULL, NULL, NULL, "manifest.json", "{\"format\": \"embedding-server",
     CORE_EFORMAT, "manifest.json", "offset"},
    {"manifest not an object", NULL, NULL, NULL, "manifest.json", "[1, 2]", CORE_EFORMAT,
     "manifest.json", "object"},
    {"empty manifest", NULL, NULL, NULL, "manifest.json", "", CORE_EFORMAT, "manifest.json",
     NULL},
    {"trailing bytes", "\n}\n", "\n} x", NULL, NULL, NULL, CORE_EFORMAT, "manifest.json",
     "trailing"},
    {"duplicate key", "\"step\":", "\"dtype\": \"float32\", \"step\":", NULL, NULL, NULL,
     CORE_EFORMAT, "manifest.json", "duplicate"},
    {"wrong format", "embedding-server snapshot", "something else", NULL, NULL, NULL,
     CORE_EFORMAT, "manifest.json", "format"},
    {"future version", "\"format_version\": 2", "\"format_version\": 3", NULL, NULL, NULL,
     CORE_EUNSUPPORTED, "format_version 3", NULL},
    {"format version 0", "\"format_version\": 2", "\"format_version\": 0", NULL, NULL, NULL,
     CORE_EUNSUPPORTED, "format_version 0", NULL},
    {"no log_seq", "  \"log_seq\": 2,\n", "", NULL, NULL, NULL, CORE_EFORMAT, "\"log_seq\"",
     "missing"},
    {"log_seq negative", "\"log_seq\": 2", "\"log_seq\": -2", NULL, NULL, NULL, CORE_EFORMAT,
     "\"log_seq\"", NULL},
    {"log_seq not integer", "\"log_seq\": 2", "\"log_seq\": 2e3", NULL, NULL, NULL,
     CORE_EFORMAT, "\"log_seq\"", NULL},
    {"shape mismatch", "\"shape\": [50, 7]", "\"shape\": [50, 8]", NULL, NULL, NULL,
     CORE_EFORMAT, "weight.npy", "(50, 8)"},
    {"shape not a pair", "\"shape\": [50, 7]", "\"shape\": [50]", NULL, NULL, NULL, CORE_EFORMAT,
     "manifest.json", "\"shape\""},
    {"step not integer", "\"step\": 2", "\"step\": 2.5", NULL, NULL, NULL, CORE_EFORMAT,
     "\"step\"", NULL},
    {"version negative", "\"version\": 2", "\"version\": -2", NULL, NULL, NULL, CORE_EFORMAT,
     "\"version\"", NULL},
    {"bad lr", "\"lr\": ", "\"lr\": -1, \"x\": ", NULL, NULL, NULL, CORE_EFORMAT, "optimizer.lr",
     NULL},
    {"lr string", "\"lr\": ", "\"lr\": \"fast\", \"x\": ", NULL, NULL, NULL, CORE_EFORMAT,
     "optimizer.lr", NULL},
    {"unknown optimizer", "\"sparse_adam\"", "\"rmsprop\"", NULL, NULL, NULL, CORE_EFORMAT,
     "optimizer.name", NULL},
    {"state of another optimizer", "\"exp_avg.npy\", \"exp_avg_sq.npy\"", "\"sum.npy\"", NULL,
     NULL, NULL, CORE_EFORMAT, "\"state\"", NULL},
    {"half adam state", "\"exp_avg.npy\", \"exp_avg_sq.npy\"", "\"exp_avg.npy\"", NULL, NULL,
     NULL, CORE_EFORMAT, "\"state\"", NULL},
    {"padding out of range", "\"padding_idx\": 3", "\"padding_idx\": 50", NULL, NULL, NULL,
     CORE_EINVAL, "padding_idx", NULL},
    {"freeze not bool", "\"freeze\": false", "\"freeze\": 0", NULL, NULL, NULL, CORE_EFORMAT,
     "settings.freeze", NULL},
    {"missing settings key", "\"scale_grad_by_freq\": true, ", "", NULL, NULL, NULL,
     CORE_EFORMAT, "settings.scale_grad_by_freq", "missing"},
    {"vocab short", NULL, NULL, NULL, "vocab.txt", "a\nb\nc\n", CORE_EFORMAT, "vocab.txt",
     "tokens"},
    {"weight not npy", NULL, NULL, NULL, "weight.npy", "not a numpy file at all", CORE_EFORMAT,
     "weight.npy", NULL},
    {"deep nesting", "\"dtype\"", "\"x\": [[[[[[[[[[1]]]]]]]]]], \"dtype\"", NULL, NULL, NULL,
     CORE_EFORMAT, "nested", NULL},
};

/* Snapshots written before log seqs (format 1) still load, at log seq 0. */
START_TEST(format_1_loads_at_seq_0)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("old", OPTIM_SPARSE_ADAM, true);
    for (int s = 0; s < 3; s++)
        train_step(t, s);
    char path[4096];
    write_snapshot(t, data, path, sizeof(path));
    edit_manifest(path, "\"format_version\": 2", "\"format_version\": 1");
    edit_manifest(path, "  \"log_seq\": 3,\n", "");
    struct table *u = load(path, NULL);
    assert_tables_eq(t, u);
    ck_assert_uint_eq(table_version(u), 3);
    ck_assert_uint_eq(table_log_seq(u), 0);
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

START_TEST(broken_snapshot_is_a_clear_error)
{
    const struct broken_case *c = &broken_cases[_i];
    char *data;
    char *dir = good_snapshot(&data, OPTIM_SPARSE_ADAM, true);
    if (c->from != NULL)
        edit_manifest(dir, c->from, c->to);
    if (c->remove != NULL)
        remove_file(dir, c->remove);
    if (c->file != NULL)
        replace_file(dir, c->file, c->text);
    expect_load_error(dir, c->code, c->needle1, c->needle2);
    free(dir);
    testutil_rmtree(data);
}
END_TEST

/* A state file of the right name but the wrong shape. */
START_TEST(state_shape_mismatch)
{
    char *data;
    char *dir = good_snapshot(&data, OPTIM_ADAGRAD, false);
    char p[4200];
    snprintf(p, sizeof(p), "%s/sum.npy", dir);
    int fd = open(p, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    float zeros[6 * 5] = {0};
    ck_assert_int_eq(npy_write_fd(fd, zeros, 6, 5, 5), CORE_OK);
    close(fd);
    expect_load_error(dir, CORE_EFORMAT, "sum.npy", "(6, 5)");
    free(dir);
    testutil_rmtree(data);
}
END_TEST

/* ---- atomic replace ------------------------------------------------------ */

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int count_hidden(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Sets every weight to x without a version or seq bump (as a renorm by
 * lookup does today), under the table's rules. */
static void fill_weights(struct table *t, float x)
{
    pthread_mutex_lock(&t->write_lock);
    for (int64_t r = 0; r < t->w.rows; r++) {
        table_write_begin(t, table_stripe_of(r));
        for (int64_t j = 0; j < t->w.dim; j++)
            matrix_row(&t->w, r)[j] = x;
        table_update_norm(t, r);
        table_write_end(t, table_stripe_of(r));
    }
    pthread_mutex_unlock(&t->write_lock);
}

struct reader_ctx {
    const char *dir;
    _Atomic bool stop;
    int loads, mixed, failed;
};

/* Loads the snapshot over and over; every load must hold one uniform value
 * (one snapshot, never a mix of two). */
static void *reader(void *arg)
{
    struct reader_ctx *c = arg;
    while (!atomic_load(&c->stop)) {
        struct table *t = NULL;
        if (snapshot_load(c->dir, NULL, &t, NULL, 0) != CORE_OK) {
            c->failed++;
            continue;
        }
        float first = matrix_row(&t->w, 0)[0];
        for (int64_t r = 0; r < t->w.rows; r++)
            for (int64_t j = 0; j < t->w.dim; j++)
                c->mixed += matrix_row(&t->w, r)[j] != first;
        c->loads++;
        table_free(t);
    }
    return NULL;
}

START_TEST(same_seq_is_replaced_atomically)
{
    char *data = testutil_tmpdir();
    struct table *t = make_table("r", OPTIM_SGD, false);
    fill_weights(t, 1.0f);
    char path[4096], table_dir[4200];
    write_snapshot(t, data, path, sizeof(path));
    snprintf(table_dir, sizeof(table_dir), "%s/r", data);

    struct reader_ctx c = {.dir = path};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, reader, &c), 0);
    for (int i = 2; i < 40; i++) {
        fill_weights(t, (float)i);
        char again[4096];
        write_snapshot(t, data, again, sizeof(again));
        ck_assert_str_eq(again, path);
    }
    atomic_store(&c.stop, true);
    pthread_join(th, NULL);
    ck_assert_int_gt(c.loads, 0);
    ck_assert_int_eq(c.mixed, 0);
    /* a load that keeps losing the race reports an error, never a mix */
    ck_assert_int_lt(c.failed, c.loads);

    struct table *u = load(path, NULL);
    ck_assert_float_eq(matrix_row(&u->w, 7)[3], 39.0f);
    table_free(u);
    ck_assert_int_eq(count_entries(table_dir), 1);
    ck_assert_int_eq(count_hidden(table_dir), 0);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* A failed write (an unwritable data directory) reports the path and leaves
 * nothing behind. */
START_TEST(write_error_names_path)
{
    if (geteuid() == 0) {
        /* root ignores permissions: use a path under a regular file instead */
        char *data = testutil_tmpdir();
        free(testutil_write_file(data, "file", "x", 1));
        char bad[4200];
        snprintf(bad, sizeof(bad), "%s/file/sub", data);
        struct table *t = make_table("w", OPTIM_SGD, false);
        char err[512] = "";
        ck_assert_int_eq(snapshot_write(t, bad, NULL, 0, NULL, err, sizeof(err)), CORE_EIO);
        ck_assert_ptr_nonnull(strstr(err, bad));
        table_free(t);
        testutil_rmtree(data);
        return;
    }
    char *data = testutil_tmpdir();
    ck_assert_int_eq(chmod(data, 0500), 0);
    struct table *t = make_table("w", OPTIM_SGD, false);
    char err[512] = "";
    ck_assert_int_eq(snapshot_write(t, data, NULL, 0, NULL, err, sizeof(err)), CORE_EIO);
    ck_assert_ptr_nonnull(strstr(err, data));
    chmod(data, 0700);
    ck_assert_int_eq(count_entries(data), 0);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

/* ---- writers do not wait for the disk ------------------------------------ */

#define BIG_ROWS 131072 /* x 256 floats: 128 MiB of weights */
#define BIG_DIM 256

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* A tmpfs folder when there is one with room (a container's /dev/shm may
 * have 64 MiB): there a snapshot's time is the copy and the file writing,
 * no disk to wait for, so a lock held for the writing shows as a lock held
 * for nearly all of it, whatever the machine's load. Elsewhere fsync makes
 * the snapshot longer, which only widens the margin of the checks. */
static char *fast_tmpdir(void)
{
    struct statvfs fs;
    char tmpl[] = "/dev/shm/es-test-XXXXXX";
    if (statvfs("/dev/shm", &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize >= (1ull << 30) &&
        mkdtemp(tmpl) != NULL)
        return strdup(tmpl);
    return testutil_tmpdir();
}

struct assigner {
    struct table *t;
    _Atomic bool stop;
    _Atomic uint64_t calls;
    uint64_t max_wait_us;
};

/* Call k (from 1) sets row (k - 1) % BIG_ROWS to k: the snapshot's rows
 * then tell which calls it holds. */
static void *assign_loop(void *arg)
{
    struct assigner *a = arg;
    float *row = malloc(BIG_DIM * sizeof(float));
    for (uint64_t k = 1; !atomic_load(&a->stop); k++) {
        for (int j = 0; j < BIG_DIM; j++)
            row[j] = (float)k;
        int64_t id = (int64_t)((k - 1) % BIG_ROWS);
        uint64_t t0 = now_us();
        ck_assert_int_eq(table_assign_rows(a->t, &id, 1, row, NULL, NULL), CORE_OK);
        uint64_t waited = now_us() - t0;
        if (waited > a->max_wait_us)
            a->max_wait_us = waited;
        atomic_store(&a->calls, k);
    }
    free(row);
    return NULL;
}

START_TEST(writers_do_not_wait_for_the_disk)
{
    char *data = fast_tmpdir();
    struct matrix w;
    ck_assert_int_eq(matrix_init(&w, BIG_ROWS, BIG_DIM), CORE_OK);
    for (int64_t r = 0; r < BIG_ROWS; r++)
        memset(matrix_row(&w, r), 0, BIG_DIM * sizeof(float)); /* faulted in, as a real table */
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = NULL;
    ck_assert_int_eq(table_new(&t, "big", &w, NULL, &s, NULL, 0), CORE_OK);

    struct assigner a = {.t = t};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, assign_loop, &a), 0);
    while (atomic_load(&a.calls) < 100)
        usleep(100);
    char path[4096], err[512] = "";
    struct snapshot_info info;
    int rc = snapshot_write(t, data, path, sizeof(path), &info, err, sizeof(err));
    uint64_t calls_at_end = atomic_load(&a.calls);
    atomic_store(&a.stop, true);
    pthread_join(th, NULL);
    ck_assert_msg(rc == CORE_OK, "%s", err);
    ck_assert_uint_lt(info.lock_us, info.total_us);

    /* and the copy is one moment of the table: exactly the first K calls */
    struct table *u = load(path, NULL);
    uint64_t k = table_version(u);
    ck_assert_uint_eq(table_log_seq(u), k);
    ck_assert_uint_ge(k, 100);
    /* writes went on while the 128 MiB were written out: a lock held for
     * the writing would leave the writer blocked from call k + 1 until the
     * return (no assertion on time: the count holds on a loaded machine) */
    ck_assert_msg(calls_at_end >= k + 100, "the writer made %llu calls while the snapshot at "
                  "%llu was written (lock held %llu us of %llu us, longest wait %llu us)",
                  (unsigned long long)(calls_at_end - k), (unsigned long long)k,
                  (unsigned long long)info.lock_us, (unsigned long long)info.total_us,
                  (unsigned long long)a.max_wait_us);
    for (int64_t r = 0; r < BIG_ROWS; r++) {
        uint64_t last = 0; /* the last call <= k that wrote row r */
        if (k >= (uint64_t)r + 1)
            last = (uint64_t)r + 1 + (k - (uint64_t)r - 1) / BIG_ROWS * BIG_ROWS;
        const float *row = matrix_row(&u->w, r);
        ck_assert_msg(row[0] == (float)last && row[BIG_DIM - 1] == (float)last,
                      "row %lld holds %g, want %g (snapshot at %llu)", (long long)r, row[0],
                      (double)(float)last, (unsigned long long)k);
    }
    table_free(u);
    table_free(t);
    testutil_rmtree(data);
}
END_TEST

static Suite *snapshot_suite(void)
{
    Suite *s = suite_create("snapshot");
    TCase *tc = tcase_create("round_trip");
    tcase_add_test(tc, round_trip_everything);
    tcase_add_test(tc, weight_is_plain_npy);
    tcase_add_loop_test(tc, resume_equals_uninterrupted, 0, 3);
    tcase_add_test(tc, unconfigured_and_frozen);
    tcase_add_test(tc, find_latest_picks_highest_complete);
    tcase_add_test(tc, prune_keeps_newest);
    tcase_add_test(tc, list_is_newest_first);
    tcase_add_test(tc, path_is_formed_or_too_long);
    tcase_add_test(tc, prune_reports_oldest_kept);
    tcase_add_test(tc, clean_tmp_removes_leftovers);
    tcase_add_test(tc, load_newest_falls_back);
    suite_add_tcase(s, tc);
    tc = tcase_create("defects");
    tcase_add_test(tc, log_seq_round_trips);
    tcase_add_test(tc, new_run_never_collides_and_is_kept);
    tcase_add_test(tc, format_1_snapshots_are_older);
    tcase_add_loop_test(tc, every_bit_pattern_round_trips, 0, 3);
    tcase_add_test(tc, adagrad_overflow_snapshot_loads);
    suite_add_tcase(s, tc);
    tc = tcase_create("errors");
    tcase_add_loop_test(tc, broken_snapshot_is_a_clear_error, 0,
                        (int)(sizeof(broken_cases) / sizeof(broken_cases[0])));
    tcase_add_test(tc, state_shape_mismatch);
    tcase_add_test(tc, format_1_loads_at_seq_0);
    tcase_add_test(tc, write_error_names_path);
    suite_add_tcase(s, tc);
    tc = tcase_create("atomic");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, same_seq_is_replaced_atomically);
    tcase_add_test(tc, writers_do_not_wait_for_the_disk);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(snapshot_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
