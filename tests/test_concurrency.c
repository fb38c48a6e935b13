/* test_concurrency.c - readers never see a half-written row.
 *
 * Every row of the table always holds one value in all its elements. Writer
 * threads keep it so: one assigns whole rows to an increasing counter
 * (table_assign_rows), one adds 1 to rows by SGD steps (table_apply_gradients
 * with gradient -1 and lr 1: exact in float32 for these integers), one takes
 * snapshots. Reader threads look rows up (table_lookup, table_read_row,
 * table_bag) and search (topk_search), and fail on any row that is not
 * uniform. A torn read mixes two values in one row, which these checks see.
 * A last test shows the checks do see tears: without the seqlock they do.
 * Each test is bounded in time (about a second) and in iterations. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "optim.h"
#include "similarity.h"
#include "topk.h"
#include "snapshot.h"
#include "table.h"
#include "table_internal.h"
#include "testutil.h"

#define ROWS 4096
#define DIM 64
#define RUN_SECONDS 1.0
#define MAX_ITERATIONS 2000000

struct shared {
    struct table *t;
    _Atomic bool stop;
    _Atomic long torn;      /* non-uniform rows seen */
    _Atomic long rows_read; /* rows checked */
    _Atomic long writes;    /* write batches applied */
    char *snap_dir;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static bool uniform(const float *row, int64_t dim)
{
    for (int64_t j = 1; j < dim; j++)
        if (row[j] != row[0])
            return false;
    return true;
}

static void check_rows(struct shared *sh, const float *rows, size_t n)
{
    long torn = 0;
    for (size_t i = 0; i < n; i++)
        torn += !uniform(rows + i * DIM, DIM);
    atomic_fetch_add(&sh->torn, torn);
    atomic_fetch_add(&sh->rows_read, (long)n);
}

/* ---- writers ------------------------------------------------------------ */

static void *assign_writer(void *arg)
{
    struct shared *sh = arg;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    float counter = 1;
    int64_t ids[16];
    static float vecs[16 * DIM];
    for (long it = 0; it < MAX_ITERATIONS && !atomic_load(&sh->stop); it++) {
        for (int i = 0; i < 16; i++) {
            ids[i] = (int64_t)(next_rand(&seed) % ROWS);
            for (int j = 0; j < DIM; j++)
                vecs[i * DIM + j] = counter;
            counter = counter < 100000.0f ? counter + 1 : 1; /* exact sums in topk_reader */
        }
        ck_assert_int_eq(table_assign_rows(sh->t, ids, 16, vecs, NULL, NULL), CORE_OK);
        atomic_fetch_add(&sh->writes, 1);
    }
    return NULL;
}

static void *gradient_writer(void *arg)
{
    struct shared *sh = arg;
    uint64_t seed = 0x1234567ull;
    int64_t ids[32];
    static float grads[32 * DIM];
    for (int i = 0; i < 32 * DIM; i++)
        grads[i] = -1.0f;
    for (long it = 0; it < MAX_ITERATIONS && !atomic_load(&sh->stop); it++) {
        for (int i = 0; i < 32; i++)
            ids[i] = (int64_t)(next_rand(&seed) % ROWS);
        ck_assert_int_eq(table_apply_gradients(sh->t, ids, 32, grads, 1.0, NULL, NULL, NULL),
                         CORE_OK);
        atomic_fetch_add(&sh->writes, 1);
    }
    return NULL;
}

/* Snapshots taken while the others write must hold whole rows too. */
static void *snapshot_writer(void *arg)
{
    struct shared *sh = arg;
    for (int it = 0; it < 20 && !atomic_load(&sh->stop); it++) {
        char path[4096], err[256] = "";
        ck_assert_msg(snapshot_write(sh->t, sh->snap_dir, path, sizeof(path), NULL, err,
                                     sizeof(err)) == CORE_OK, "%s", err);
        struct table *copy = NULL;
        ck_assert_msg(snapshot_load(path, NULL, &copy, err, sizeof(err)) == CORE_OK, "%s", err);
        for (int64_t r = 0; r < ROWS; r++)
            check_rows(sh, matrix_row(&copy->w, r), 1);
        table_free(copy);
    }
    return NULL;
}

/* ---- readers ------------------------------------------------------------ */

static void *lookup_reader(void *arg)
{
    struct shared *sh = arg;
    uint64_t seed = (uint64_t)(uintptr_t)&seed | 1;
    int64_t ids[64];
    static _Thread_local float out[64 * DIM];
    for (long it = 0; it < MAX_ITERATIONS && !atomic_load(&sh->stop); it++) {
        for (int i = 0; i < 64; i++)
            ids[i] = (int64_t)(next_rand(&seed) % ROWS);
        ck_assert_int_eq(table_lookup(sh->t, ids, 64, out, NULL), CORE_OK);
        check_rows(sh, out, 64);
    }
    return NULL;
}

static void *read_row_reader(void *arg)
{
    struct shared *sh = arg;
    float row[DIM];
    for (long it = 0; it < MAX_ITERATIONS && !atomic_load(&sh->stop); it++) {
        table_read_row(sh->t, it % ROWS, row);
        check_rows(sh, row, 1);
    }
    return NULL;
}

/* Pooling uniform rows (sum, mean, max) gives a uniform row. */
static void *bag_reader(void *arg)
{
    struct shared *sh = arg;
    uint64_t seed = 77;
    int64_t ids[40];
    size_t offsets[5] = {0, 10, 20, 30, 40};
    float out[4 * DIM];
    static const enum bag_mode modes[] = {BAG_SUM, BAG_MEAN, BAG_MAX};
    for (long it = 0; it < MAX_ITERATIONS && !atomic_load(&sh->stop); it++) {
        for (int i = 0; i < 40; i++)
            ids[i] = (int64_t)(next_rand(&seed) % ROWS);
        ck_assert_int_eq(table_bag(sh->t, ids, offsets, 4, NULL, modes[it % 3], out, NULL),
                         CORE_OK);
        check_rows(sh, out, 4);
    }
    return NULL;
}

/* With q = (+1 x D/2, -1 x D/2) the dot product of a uniform row with
 * integer elements is exactly 0, and a row torn into a prefix of value a and
 * the rest of value b scores (a - b) * min(L, D - L) != 0. */
static void *topk_reader(void *arg)
{
    struct shared *sh = arg;
    float q[DIM];
    for (int j = 0; j < DIM; j++)
        q[j] = j < DIM / 2 ? 1.0f : -1.0f;
    struct topk_hit hits[8];
    size_t count = 0;
    for (long it = 0; it < 200 && !atomic_load(&sh->stop); it++) {
        ck_assert_int_eq(topk_search(sh->t, q, 1, NULL, 8, METRIC_DOT, hits, &count), CORE_OK);
        ck_assert_uint_eq(count, 8);
        long torn = 0;
        for (size_t i = 0; i < count; i++)
            torn += hits[i].score != 0.0f;
        atomic_fetch_add(&sh->torn, torn);
        atomic_fetch_add(&sh->rows_read, ROWS);
    }
    return NULL;
}

/* ---- harness ------------------------------------------------------------ */

static struct table *uniform_table(void)
{
    struct table_settings s;
    table_settings_init(&s);
    s.freeze = false;
    struct matrix m;
    ck_assert_int_eq(matrix_init(&m, ROWS, DIM), CORE_OK);
    for (int64_t r = 0; r < ROWS; r++)
        for (int j = 0; j < DIM; j++)
            matrix_row(&m, r)[j] = (float)(r % 1000);
    struct table *t = NULL;
    ck_assert_int_eq(table_new(&t, "c", &m, NULL, &s, NULL, 0), CORE_OK);
    struct optim_config c;
    optim_config_defaults(&c, OPTIM_SGD);
    ck_assert_int_eq(table_set_optimizer(t, &c, NULL, 0), CORE_OK);
    return t;
}

typedef void *(*thread_fn)(void *);

static void run_threads(struct shared *sh, const thread_fn *fns, int n)
{
    pthread_t th[16];
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, fns[i], sh), 0);
    double end = now() + RUN_SECONDS;
    while (now() < end) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&sh->stop, true);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

START_TEST(readers_see_whole_rows)
{
    struct shared sh = {.t = uniform_table(), .snap_dir = testutil_tmpdir()};
    static const thread_fn fns[] = {assign_writer, gradient_writer, snapshot_writer,
                                    lookup_reader, read_row_reader, bag_reader, topk_reader};
    run_threads(&sh, fns, (int)(sizeof(fns) / sizeof(fns[0])));
    long torn = atomic_load(&sh.torn), read = atomic_load(&sh.rows_read);
    long writes = atomic_load(&sh.writes);
    fprintf(stderr, "concurrency: %ld rows read, %ld write batches, %ld torn\n", read, writes, torn);
    ck_assert_msg(torn == 0, "%ld torn rows among %ld read", torn, read);
    ck_assert_msg(read > 10000 && writes > 100, "too little happened: %ld reads, %ld writes",
                  read, writes);
    ck_assert_uint_eq(table_version(sh.t), (uint64_t)writes);
    for (int64_t r = 0; r < ROWS; r++)
        ck_assert(uniform(matrix_row(&sh.t->w, r), DIM));
    table_free(sh.t);
    testutil_rmtree(sh.snap_dir);
}
END_TEST

/* The checks can fail: a writer that skips the seqlock and stores a row
 * element by element gets caught by the same readers. */
static void *unsafe_writer(void *arg)
{
    struct shared *sh = arg;
    float v = 1;
    for (long it = 0; it < 50 * MAX_ITERATIONS && !atomic_load(&sh->stop); it++) {
        float *row = matrix_row(&sh->t->w, it % 8);
        for (int j = 0; j < DIM; j++)
            atomic_store_explicit((_Atomic float *)&row[j], v, memory_order_relaxed);
        v = v < 100000.0f ? v + 1 : 1;
    }
    return NULL;
}

static void *narrow_reader(void *arg)
{
    struct shared *sh = arg;
    float row[DIM];
    for (long it = 0; it < 50 * MAX_ITERATIONS && !atomic_load(&sh->stop); it++) {
        for (int j = 0; j < DIM; j++)
            row[j] = atomic_load_explicit((_Atomic float *)&matrix_row(&sh->t->w, it % 8)[j],
                                          memory_order_relaxed);
        check_rows(sh, row, 1);
        if (atomic_load(&sh->torn) > 0)
            break;
    }
    return NULL;
}

START_TEST(unprotected_writes_are_caught)
{
    struct shared sh = {.t = uniform_table()};
    static const thread_fn fns[] = {unsafe_writer, narrow_reader};
    run_threads(&sh, fns, 2);
    ck_assert_int_gt(atomic_load(&sh.torn), 0);
    table_free(sh.t);
}
END_TEST

static Suite *concurrency_suite(void)
{
    Suite *s = suite_create("concurrency");
    TCase *tc = tcase_create("seqlock");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, readers_see_whole_rows);
    tcase_add_test(tc, unprotected_writes_are_caught);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(concurrency_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
