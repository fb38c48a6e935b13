/* optim.c - training throughput: rows/s of table_apply_gradients for
 * batches of 1024 random ids x D = 64 on a 1M-row table with each optimizer,
 * against PyTorch doing the same sparse step (bench/optim_peer.py, run in
 * the same invocation so the ratio is measured under the same load).
 * Target: at least 5x torch's rows/s. Also: lookup latency (p50/p99 of
 * 16-id table_lookup) with and without a thread applying SparseAdam steps.
 *
 * Usage: optim [rows] [batches] [repeats] [--no-peer]
 *        (defaults 1000000, 200, 3) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "error.h"
#include "optim.h"
#include "table.h"

#define DIM 64
#define BATCH 1024
#define LOOKUP_IDS 16

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

/* CPU time of the whole process: the steps run on this one thread. */
static double cpu_now(void)
{
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* Rows per second measured by wall clock and by CPU time. */
struct rate {
    double wall, cpu;
};

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

struct workload {
    int64_t rows;
    int batches, repeats;
    int64_t *ids;  /* batches x BATCH */
    float *grads;  /* BATCH x DIM, reused by every batch */
};

static void workload_init(struct workload *w)
{
    uint64_t seed = 0x2545F4914F6CDD1Dull;
    w->ids = malloc((size_t)w->batches * BATCH * sizeof(int64_t));
    w->grads = malloc((size_t)BATCH * DIM * sizeof(float));
    if (w->ids == NULL || w->grads == NULL) {
        fprintf(stderr, "optim: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < (size_t)w->batches * BATCH; i++)
        w->ids[i] = (int64_t)(next_random(&seed) % (uint64_t)w->rows);
    for (size_t i = 0; i < (size_t)BATCH * DIM; i++)
        w->grads[i] = (float)((double)(next_random(&seed) % 2001) / 1000.0 - 1.0);
}

static void step_or_die(struct table *t, const int64_t *ids, size_t n, const float *grads)
{
    int rc = table_apply_gradients(t, ids, n, grads, 0, NULL, NULL, NULL);
    if (rc != CORE_OK) {
        fprintf(stderr, "optim: step failed: %s\n", core_strerror(rc));
        exit(1);
    }
}

/* Touches every row's optimizer state once, as torch's eager zeros_like
 * does, so page faults of lazily mapped state are not timed. */
static void warm_up(struct table *t, const struct workload *w)
{
    int64_t *all = malloc(BATCH * sizeof(int64_t));
    float *zeros = calloc((size_t)BATCH * DIM, sizeof(float));
    for (int64_t base = 0; base < w->rows; base += BATCH) {
        size_t n = 0;
        for (int64_t r = base; r < w->rows && n < BATCH; r++)
            all[n++] = r;
        step_or_die(t, all, n, zeros);
    }
    free(all);
    free(zeros);
}

static struct rate rows_per_second(struct table *t, const struct workload *w)
{
    double best_wall = 1e30, best_cpu = 1e30;
    for (int r = 0; r < w->repeats; r++) {
        double w0 = now(), c0 = cpu_now();
        for (int b = 0; b < w->batches; b++)
            step_or_die(t, w->ids + (size_t)b * BATCH, BATCH, w->grads);
        double dw = now() - w0, dc = cpu_now() - c0;
        best_wall = dw < best_wall ? dw : best_wall;
        best_cpu = dc < best_cpu ? dc : best_cpu;
    }
    double rows = (double)w->batches * BATCH;
    return (struct rate){rows / best_wall, rows / best_cpu};
}

/* ---- the peer ----------------------------------------------------------- */

/* The script sits next to this file; OPTIM_PEER overrides its path. */
static void peer_path(char *out, size_t len)
{
    const char *env = getenv("OPTIM_PEER");
    if (env != NULL) {
        snprintf(out, len, "%s", env);
        return;
    }
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    int dir_len = slash != NULL ? (int)(slash - file) : 1;
    snprintf(out, len, "%.*s/optim_peer.py", dir_len, slash != NULL ? file : ".");
}

/* Fills torch[i] with the peer's rows/s for optimizer i (0 when missing). */
static void run_peer(const struct workload *w, struct rate torch[3])
{
    static const char *names[3] = {"sgd", "sparse_adam", "adagrad"};
    char script[4096], cmd[8192], line[256];
    peer_path(script, sizeof(script));
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 '%s' %lld %d %d %d %d", script,
             (long long)w->rows, DIM, BATCH, w->batches, w->repeats);
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        perror("optim: popen");
        return;
    }
    while (fgets(line, sizeof(line), p) != NULL) {
        if (line[0] == '#') {
            printf("%s", line);
            continue;
        }
        char name[64];
        double wall, cpu;
        if (sscanf(line, "%63s %lf %lf", name, &wall, &cpu) != 3)
            continue;
        for (int i = 0; i < 3; i++)
            if (strcmp(name, names[i]) == 0)
                torch[i] = (struct rate){wall, cpu};
    }
    if (pclose(p) != 0)
        fprintf(stderr, "optim: peer %s failed\n", script);
}

/* ---- lookups under updates ---------------------------------------------- */

struct updater {
    struct table *t;
    const struct workload *w;
    _Atomic bool stop;
    long steps;
};

static void *update_loop(void *arg)
{
    struct updater *u = arg;
    for (int b = 0; !atomic_load(&u->stop); b = (b + 1) % u->w->batches, u->steps++)
        step_or_die(u->t, u->w->ids + (size_t)b * BATCH, BATCH, u->w->grads);
    return NULL;
}

/* p50 and p99 in microseconds of `count` lookups of LOOKUP_IDS random ids. */
static void lookup_latency(struct table *t, int64_t rows, int count, double *p50, double *p99)
{
    double *lat = malloc((size_t)count * sizeof(double));
    uint64_t seed = 99;
    int64_t ids[LOOKUP_IDS];
    float out[LOOKUP_IDS * DIM];
    for (int i = 0; i < count; i++) {
        for (int k = 0; k < LOOKUP_IDS; k++)
            ids[k] = (int64_t)(next_random(&seed) % (uint64_t)rows);
        double t0 = now();
        table_lookup(t, ids, LOOKUP_IDS, out, NULL);
        lat[i] = (now() - t0) * 1e6;
    }
    qsort(lat, (size_t)count, sizeof(double), bench_cmp_double);
    *p50 = lat[count / 2];
    *p99 = lat[count * 99 / 100];
    free(lat);
}

static void latency_under_updates(struct table *t, const struct workload *w)
{
    struct optim_config c;
    optim_config_defaults(&c, OPTIM_SPARSE_ADAM);
    table_set_optimizer(t, &c, NULL, 0);
    warm_up(t, w);
    double p50, p99, u50, u99;
    lookup_latency(t, w->rows, 200000, &p50, &p99);
    struct updater u = {.t = t, .w = w};
    pthread_t th;
    pthread_create(&th, NULL, update_loop, &u);
    lookup_latency(t, w->rows, 200000, &u50, &u99);
    atomic_store(&u.stop, true);
    pthread_join(th, NULL);
    printf("\nlookup of %d ids, 200k calls: p50 %.2f us, p99 %.2f us alone; "
           "p50 %.2f us, p99 %.2f us while sparse_adam steps run (%ld steps); p99 ratio %.2f\n",
           LOOKUP_IDS, p50, p99, u50, u99, u.steps, u99 / p99);
}

int main(int argc, char **argv)
{
    struct workload w = {.rows = 1000000, .batches = 200, .repeats = 3};
    bool peer = true;
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-peer") == 0)
            peer = false;
        else if (pos == 0 && ++pos)
            w.rows = atoll(argv[i]);
        else if (pos == 1 && ++pos)
            w.batches = atoi(argv[i]);
        else if (pos == 2 && ++pos)
            w.repeats = atoi(argv[i]);
    }
    if (w.rows < BATCH || w.batches < 1 || w.repeats < 1) {
        fprintf(stderr, "usage: optim [rows >= %d] [batches] [repeats] [--no-peer]\n", BATCH);
        return 2;
    }
    workload_init(&w);
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = NULL;
    char err[256];
    if (table_new_init(&t, "bench", w.rows, DIM, 1, &s, err, sizeof(err)) != CORE_OK) {
        fprintf(stderr, "optim: %s\n", err);
        return 1;
    }
    printf("table %lld x %d, batches of %d random ids, %d batches, best of %d\n",
           (long long)w.rows, DIM, BATCH, w.batches, w.repeats);
    static const enum optim_kind kinds[3] = {OPTIM_SGD, OPTIM_SPARSE_ADAM, OPTIM_ADAGRAD};
    struct rate ours[3];
    for (int i = 0; i < 3; i++) {
        struct optim_config c;
        optim_config_defaults(&c, kinds[i]);
        table_set_optimizer(t, &c, NULL, 0);
        warm_up(t, &w);
        ours[i] = rows_per_second(t, &w);
    }
    struct rate torch[3] = {{0, 0}, {0, 0}, {0, 0}};
    if (peer)
        run_peer(&w, torch);
    printf("\n%-12s %13s %13s %6s   %13s %13s %6s\n", "optimizer", "ours wall", "torch wall",
           "ratio", "ours cpu", "torch cpu", "ratio");
    for (int i = 0; i < 3; i++) {
        printf("%-12s %13.0f %13.0f %6.1f   %13.0f %13.0f %6.1f\n", optim_kind_name(kinds[i]),
               ours[i].wall, torch[i].wall, torch[i].wall > 0 ? ours[i].wall / torch[i].wall : 0,
               ours[i].cpu, torch[i].cpu, torch[i].cpu > 0 ? ours[i].cpu / torch[i].cpu : 0);
    }
    printf("(rows/s; wall = elapsed time, cpu = the process's CPU time)\n");
    latency_under_updates(t, &w);
    table_free(t);
    free(w.ids);
    free(w.grads);
    return 0;
}
