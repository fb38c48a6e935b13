/* snapshot_bench.c - what a snapshot costs the service: latency of lookups
 * (64 random rows per call) from one thread and of row assignments (one row
 * per call) from another, while the main thread writes a snapshot of a large
 * table, against the same calls with no snapshot running, measured in the
 * same run; and how long the snapshot held the table's write lock.
 *
 * Environment:
 *   SNAPSHOT_BENCH_MB   weights size in MiB (default 1024; D = 128)
 *   SNAPSHOT_BENCH_DIR  data directory to write into (default /tmp); the
 *                       snapshot is removed afterwards
 *   SNAPSHOT_BENCH_OPTIM  sgd (default) | sparse_adam | adagrad: with state,
 *                       the copy and the files grow by one or two tables
 *
 * Prints p50 / p99 / max for each kind of call in both phases, their ratio,
 * and the snapshot's lock hold, total time and bytes. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "error.h"
#include "optim.h"
#include "snapshot.h"
#include "table.h"

#define DIM 128
#define LOOKUP_ROWS 64
#define MAX_SAMPLES (1u << 22)
#define BASELINE_SECONDS 2.0

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Latencies of one kind of call, in ns. */
struct samples {
    uint32_t *ns;
    size_t n;
};

static void record(struct samples *s, uint64_t ns)
{
    if (s->n < MAX_SAMPLES)
        s->ns[s->n++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

struct stats {
    double p50, p99, max; /* microseconds */
    size_t n;
};

static struct stats summarize(struct samples *s)
{
    struct stats r = {0, 0, 0, s->n};
    if (s->n == 0)
        return r;
    qsort(s->ns, s->n, sizeof(s->ns[0]), cmp_u32);
    r.p50 = s->ns[s->n / 2] / 1e3;
    r.p99 = s->ns[s->n * 99 / 100] / 1e3;
    r.max = s->ns[s->n - 1] / 1e3;
    return r;
}

struct worker {
    struct table *t;
    _Atomic bool stop;
    _Atomic bool recording;
    struct samples lat;
    uint64_t seed;
};

static void *lookup_loop(void *arg)
{
    struct worker *w = arg;
    int64_t rows = table_num_embeddings(w->t), ids[LOOKUP_ROWS];
    float *out = malloc(sizeof(float) * LOOKUP_ROWS * DIM);
    while (!atomic_load(&w->stop)) {
        for (int i = 0; i < LOOKUP_ROWS; i++)
            ids[i] = (int64_t)(next_random(&w->seed) % (uint64_t)rows);
        uint64_t t0 = now_ns();
        table_lookup(w->t, ids, LOOKUP_ROWS, out, NULL);
        if (atomic_load(&w->recording))
            record(&w->lat, now_ns() - t0);
    }
    free(out);
    return NULL;
}

static void *assign_loop(void *arg)
{
    struct worker *w = arg;
    int64_t rows = table_num_embeddings(w->t);
    float v[DIM];
    for (int j = 0; j < DIM; j++)
        v[j] = 0.5f;
    while (!atomic_load(&w->stop)) {
        int64_t id = (int64_t)(next_random(&w->seed) % (uint64_t)rows);
        uint64_t t0 = now_ns();
        table_assign_rows(w->t, &id, 1, v, NULL, NULL);
        if (atomic_load(&w->recording))
            record(&w->lat, now_ns() - t0);
        usleep(50); /* a steady trickle of writes, not a lock hog */
    }
    return NULL;
}

static void set_recording(struct worker *w, int n, bool on)
{
    for (int i = 0; i < n; i++) {
        if (on)
            w[i].lat.n = 0;
        atomic_store(&w[i].recording, on);
    }
}

static void print_row(const char *what, struct stats base, struct stats during)
{
    printf("%-8s  no snapshot: p50 %8.1f us  p99 %8.1f us  max %9.1f us  (%zu calls)\n", what,
           base.p50, base.p99, base.max, base.n);
    printf("%-8s  snapshot:    p50 %8.1f us  p99 %8.1f us  max %9.1f us  (%zu calls)\n", what,
           during.p50, during.p99, during.max, during.n);
    printf("%-8s  ratio:       p50 %8.2fx    p99 %8.2fx    max %9.2fx\n", what,
           base.p50 > 0 ? during.p50 / base.p50 : 0, base.p99 > 0 ? during.p99 / base.p99 : 0,
           base.max > 0 ? during.max / base.max : 0);
}

static struct table *make_table(int64_t rows, const char *optim)
{
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = NULL;
    char err[256] = "";
    if (table_new_init(&t, "bench", rows, DIM, 1, &s, err, sizeof(err)) != CORE_OK) {
        fprintf(stderr, "snapshot_bench: %s\n", err);
        exit(1);
    }
    enum optim_kind kind;
    if (!optim_kind_parse(optim, &kind)) {
        fprintf(stderr, "snapshot_bench: unknown optimizer %s\n", optim);
        exit(1);
    }
    struct optim_config c;
    optim_config_defaults(&c, kind);
    table_set_optimizer(t, &c, NULL, 0);
    if (kind != OPTIM_SGD) { /* a step allocates the state, all rows of it */
        int64_t id = 0;
        float g[DIM] = {0};
        table_apply_gradients(t, &id, 1, g, 0, NULL, NULL, NULL);
    }
    return t;
}

int main(void)
{
    const char *mb_env = getenv("SNAPSHOT_BENCH_MB");
    const char *dir = getenv("SNAPSHOT_BENCH_DIR");
    const char *optim = getenv("SNAPSHOT_BENCH_OPTIM");
    long mb = mb_env != NULL ? atol(mb_env) : 1024;
    if (mb < 1)
        mb = 1;
    dir = dir != NULL ? dir : "/tmp";
    optim = optim != NULL ? optim : "sgd";
    int64_t rows = (int64_t)mb * (1 << 20) / (DIM * (int64_t)sizeof(float));
    printf("table: %lld x %d float32 (%ld MiB), optimizer %s, data dir %s\n", (long long)rows, DIM,
           mb, optim, dir);
    struct table *t = make_table(rows, optim);

    struct worker w[2] = {{.t = t, .seed = 0x9e3779b97f4a7c15u}, {.t = t, .seed = 12345}};
    for (int i = 0; i < 2; i++)
        w[i].lat.ns = malloc(sizeof(uint32_t) * MAX_SAMPLES);
    pthread_t th[2];
    pthread_create(&th[0], NULL, lookup_loop, &w[0]);
    pthread_create(&th[1], NULL, assign_loop, &w[1]);

    usleep(200000); /* warm up */
    set_recording(w, 2, true);
    usleep((useconds_t)(BASELINE_SECONDS * 1e6));
    set_recording(w, 2, false);
    struct stats base_lookup = summarize(&w[0].lat), base_assign = summarize(&w[1].lat);

    char path[4096], err[512] = "";
    struct snapshot_info info;
    set_recording(w, 2, true);
    int rc = snapshot_write(t, dir, path, sizeof(path), &info, err, sizeof(err));
    set_recording(w, 2, false);
    for (int i = 0; i < 2; i++)
        atomic_store(&w[i].stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    if (rc != CORE_OK) {
        fprintf(stderr, "snapshot_bench: %s\n", err);
        return 1;
    }
    struct stats snap_lookup = summarize(&w[0].lat), snap_assign = summarize(&w[1].lat);

    printf("snapshot: %s, %.1f MiB in %.3f s (%.0f MiB/s), write lock held %.1f ms "
           "(%.2f%% of the snapshot)\n",
           path, (double)info.bytes / (1 << 20), info.total_us / 1e6,
           (double)info.bytes / (1 << 20) / (info.total_us / 1e6), info.lock_us / 1e3,
           100.0 * (double)info.lock_us / (double)info.total_us);
    print_row("lookup", base_lookup, snap_lookup);
    print_row("assign", base_assign, snap_assign);
    bench_remove_dir(path);
    char table_dir[4200];
    snprintf(table_dir, sizeof(table_dir), "%s/bench", dir);
    rmdir(table_dir);
    for (int i = 0; i < 2; i++)
        free(w[i].lat.ns);
    table_free(t);
    return 0;
}
