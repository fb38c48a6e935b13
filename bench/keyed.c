/* keyed.c - keyed tables against dense ones, in one run: lookups of 16
 * keys on a keyed table vs 16 ids on a dense table of the same size, in
 * core and, given the server's path, through the real server over HTTP
 * (short alternating rounds, the median of their ratios: this machine's
 * speed drifts by 20% between long measurements); inserts/s of new keys
 * through gradient steps (core, no log; the median of three fresh tables,
 * and into the full table, where each one evicts); and the key map's bytes
 * per key. Prints figures and ratios.
 *
 *   keyed [build/embedding-server [SECONDS-PER-ROUND [ROUNDS]]] */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "bench_http.h"
#include "bench_util.h"
#include "error.h"
#include "keymap.h"
#include "table.h"
#include "table_internal.h"

#define ROWS 1000000
#define DIM 64
#define BATCH 16
#define LOOKUPS 20000 /* per round */
#define ROUNDS 41

static uint64_t rnd = 88172645463325252ull;
static uint64_t next(void)
{
    rnd ^= rnd << 13;
    rnd ^= rnd >> 7;
    rnd ^= rnd << 17;
    return rnd;
}

static double lookup_rate(struct table *t, const int64_t *pool, size_t npool)
{
    float out[BATCH * DIM];
    int64_t ids[BATCH];
    double t0 = clock_mono_s();
    for (int it = 0; it < LOOKUPS; it++) {
        for (int i = 0; i < BATCH; i++)
            ids[i] = pool[next() % npool];
        if (table_lookup(t, ids, BATCH, out, NULL) != CORE_OK)
            abort();
    }
    return LOOKUPS / (clock_mono_s() - t0);
}

/* ---- through the server -------------------------------------------------- */

/* A binary lookup of BATCH ids (int64, from pool) on table, binary answer. */
static char *lookup_request(const char *table, const int64_t *pool, size_t npool, size_t *len)
{
    int64_t ids[BATCH];
    for (int i = 0; i < BATCH; i++)
        ids[i] = pool[next() % npool];
    char path[96];
    snprintf(path, sizeof path, "/v1/tables/%s/lookup", table);
    return bench_request("POST", path, "application/octet-stream", ids, sizeof ids,
                         "Accept: application/octet-stream\r\n", len);
}

#define HTTP_CLIENTS 2
#define HTTP_REQS 256 /* distinct requests per client, sent round-robin */

struct client {
    int fd;
    char *reqs[HTTP_REQS];
    size_t lens[HTTP_REQS];
    double seconds;
    uint64_t done;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    int fd = c->fd;
    char *buf = malloc(1 << 16);
    double end = clock_mono_s() + c->seconds;
    for (size_t i = 0; clock_mono_s() < end; i++) {
        int st = bench_roundtrip(fd, c->reqs[i % HTTP_REQS], c->lens[i % HTTP_REQS], buf, 1 << 16);
        if (st != 200) {
            fprintf(stderr, "keyed: a lookup was answered %d: %s\n", st, buf);
            exit(1);
        }
        c->done++;
    }
    free(buf);
    return NULL;
}

/* Lookups/s of HTTP_CLIENTS keep-alive clients, on connections fds, for
 * seconds on table. Both tables are asked on the same connections: which
 * of the server's threads a connection lands on moves a round's rate by
 * 2x (two on one thread share it). */
static double http_rate(const int *fds, const char *table, const int64_t *pool, size_t npool,
                        double seconds)
{
    struct client cl[HTTP_CLIENTS];
    pthread_t th[HTTP_CLIENTS];
    for (int i = 0; i < HTTP_CLIENTS; i++) {
        cl[i] = (struct client){.fd = fds[i], .seconds = seconds};
        for (int r = 0; r < HTTP_REQS; r++)
            cl[i].reqs[r] = lookup_request(table, pool, npool, &cl[i].lens[r]);
    }
    double t0 = clock_mono_s();
    for (int i = 0; i < HTTP_CLIENTS; i++)
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    uint64_t done = 0;
    for (int i = 0; i < HTTP_CLIENTS; i++) {
        pthread_join(th[i], NULL);
        done += cl[i].done;
        for (int r = 0; r < HTTP_REQS; r++)
            free(cl[i].reqs[r]);
    }
    return (double)done / (clock_mono_s() - t0);
}

/* The server with a dense table and a keyed one of ROWS rows each, the
 * keyed one filled with keys[0..n) through binary gradient steps of zeros;
 * then alternating rounds of lookups of 16 on each. */
static void http_compare(const char *bin, const int64_t *keys, size_t n, double seconds,
                         int rounds)
{
    char dir[] = "/tmp/es-bench-keyed-XXXXXX";
    if (mkdtemp(dir) == NULL)
        bench_http_die("mkdtemp");
    char config[96], log[96];
    snprintf(config, sizeof config, "%s/config.json", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    FILE *f = fopen(config, "w");
    if (f == NULL)
        bench_http_die(config);
    fprintf(f, "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0}, \"data_dir\": \"%s/data\","
               " \"snapshot\": {\"on_shutdown\": false}, \"tables\": ["
               "{\"name\": \"dense\", \"init\": {\"num_embeddings\": %d, \"embedding_dim\": %d}},"
               "{\"name\": \"keyed\", \"keys\": \"int64\", \"capacity\": %d,"
               " \"init\": {\"embedding_dim\": %d}}]}",
            dir, ROWS, DIM, ROWS, DIM);
    fclose(f);
    pid_t pid;
    int port = bench_server_start(bin, config, log, &pid);
    enum { FILL = 8192 };
    size_t blen = FILL * 8 + (size_t)FILL * DIM * 4;
    char *body = calloc(1, blen), *buf = malloc(1 << 16);
    int fd = bench_connect(port);
    double t0 = clock_mono_s();
    for (size_t i = 0; i < n; i += FILL) {
        size_t m = n - i < FILL ? n - i : FILL;
        char shape[64];
        snprintf(shape, sizeof shape, "X-Embedding-Shape: %zu,%d\r\n", m, DIM);
        memcpy(body, keys + i, m * 8);
        memset(body + m * 8, 0, m * DIM * 4);
        size_t len;
        char *req = bench_request("POST", "/v1/tables/keyed/gradients", "application/octet-stream",
                                  body, m * 8 + m * DIM * 4, shape, &len);
        int st = bench_roundtrip(fd, req, len, buf, 1 << 16);
        free(req);
        if (st != 200) {
            fprintf(stderr, "keyed: inserting keys was answered %d: %s\n", st, buf);
            exit(1);
        }
    }
    close(fd);
    double fill_s = clock_mono_s() - t0;
    int64_t *rows = malloc(ROWS * sizeof *rows);
    for (size_t i = 0; i < ROWS; i++)
        rows[i] = (int64_t)i;
    double *d = malloc((size_t)rounds * sizeof *d), *k = malloc((size_t)rounds * sizeof *k),
           *ratio = malloc((size_t)rounds * sizeof *ratio);
    int fds[HTTP_CLIENTS];
    for (int i = 0; i < HTTP_CLIENTS; i++)
        fds[i] = bench_connect(port);
    for (int r = 0; r < rounds; r++) {
        d[r] = http_rate(fds, "dense", rows, ROWS, seconds);
        k[r] = http_rate(fds, "keyed", keys, n, seconds);
        ratio[r] = k[r] / d[r];
    }
    for (int i = 0; i < HTTP_CLIENTS; i++)
        close(fds[i]);
    printf("  through the server (binary lookups of %d, %d keep-alive clients, medians of %d "
           "alternating rounds of %.1f s): dense %.0f/s, keyed %.0f/s: keyed/dense %.2fx "
           "(target >= 0.8x; %zu keys inserted over HTTP in %.1f s first)\n",
           BATCH, HTTP_CLIENTS, rounds, seconds, bench_median(d, rounds),
           bench_median(k, rounds), bench_median(ratio, rounds), n, fill_s);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    bench_remove_dir(dir);
    free(body);
    free(buf);
    free(rows);
    free(d);
    free(k);
    free(ratio);
}

int main(int argc, char **argv)
{
    char err[256];
    struct table_settings s;
    table_settings_init(&s);
    struct table *dense = NULL, *keyed = NULL;
    /* resident memory, as a check of the key map's own count: the dense
     * table's (every row written by its init), then the last keyed one's */
    double rss0 = bench_rss_anon();
    if (table_new_init(&dense, "dense", ROWS, DIM, 1, &s, err, sizeof err) != CORE_OK)
        return fprintf(stderr, "%s\n", err), 1;
    double dense_rss = bench_rss_anon() - rss0, keyed_rss = 0;
    /* inserts: every key new, steps of 1024 keys through the log's apply path */
    struct optim_config cfg;
    optim_config_defaults(&cfg, OPTIM_SGD);
    enum { STEP = 1024 };
    int64_t *keys = malloc(ROWS * sizeof *keys);
    float *grads = calloc(STEP * DIM, sizeof *grads);
    for (size_t i = 0; i < ROWS; i++)
        keys[i] = (int64_t)(next() >> 1) - (INT64_MAX / 2);
    struct table_keyed_settings k;
    table_keyed_settings_init(&k);
    k.capacity = ROWS;
    rss0 = bench_rss_anon();
    if (table_new_keyed(&keyed, "keyed", DIM, &k, &s, err, sizeof err) != CORE_OK)
        return fprintf(stderr, "%s\n", err), 1;

    /* three fresh tables, the median: a fresh table's first touches of its
     * pages (huge pages, compacted for on demand) vary by 2x from run to run */
    double insert_rates[3];
    size_t inserted = 0;
    for (int round = 0; round < 3; round++) {
        if (round > 0) {
            table_free(keyed);
            keyed = NULL;
            if (table_new_keyed(&keyed, "keyed", DIM, &k, &s, err, sizeof err) != CORE_OK)
                return fprintf(stderr, "%s\n", err), 1;
        }
        double t0 = clock_mono_s();
        inserted = 0;
        for (size_t i = 0; i + STEP <= ROWS; i += STEP) {
            struct table_keyed_result r;
            if (table_keyed_apply(keyed, TABLE_KEYED_GRADIENTS, &cfg, 0, keys + i, STEP, grads,
                                  NULL, &r) != CORE_OK)
                abort();
            inserted += r.inserted;
        }
        insert_rates[round] = (double)inserted / (clock_mono_s() - t0);
        if (round == 0) /* later tables reuse the freed heap: their deltas count less */
            keyed_rss = bench_rss_anon() - rss0;
    }
    double insert_rate = bench_median(insert_rates, 3);

    int64_t *rows = malloc(ROWS * sizeof *rows);
    for (size_t i = 0; i < ROWS; i++)
        rows[i] = (int64_t)i;
    /* alternating rounds, medians: the machine's drift between two long
     * measurements would otherwise be most of the ratio */
    double dense_r[ROUNDS], keyed_r[ROUNDS], ratio[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        dense_r[r] = lookup_rate(dense, rows, ROWS);
        keyed_r[r] = lookup_rate(keyed, keys, inserted);
        ratio[r] = keyed_r[r] / dense_r[r];
    }
    double dense_rate = bench_median(dense_r, ROUNDS), keyed_rate = bench_median(keyed_r, ROUNDS);
    double keyed_dense = bench_median(ratio, ROUNDS);
    size_t bytes = table_keyed_bytes(keyed);
    printf("keyed tables, %d rows x %d floats\n", ROWS, DIM);
    printf("  lookups of %d (medians of %d alternating rounds): dense %.0f/s, keyed %.0f/s: "
           "keyed/dense %.2fx (the median of the rounds' ratios; target >= 0.8x)\n",
           BATCH, ROUNDS, dense_rate, keyed_rate, keyed_dense);
    printf("  inserts through gradient steps of %d new keys: %.2f M keys/s (the median of 3 "
           "fresh tables; target >= 1M)\n", STEP, insert_rate / 1e6);
    struct keymap_parts parts;
    keymap_parts(keyed->km, &parts);
    double per = 1.0 / (double)ROWS;
    printf("  key map: %.2f bytes per key at %zu keys (target <= 16), raw floats %d bytes; "
           "per row of capacity: "
           "index %.2f (load <= 6/7), keys %.2f, write order for lru %.2f, write times for "
           "ttl %.2f, free-row bitmap %.2f (the default settings: lru, no ttl)\n",
           (double)bytes / (double)inserted, inserted, DIM * 4, (double)parts.index * per,
           (double)parts.keys * per, (double)parts.order * per, (double)parts.times * per,
           (double)parts.other * per);
    /* the parts a table keeps follow its settings: the same map without
     * lru eviction and ttl, and with a ttl */
    struct table *other = NULL;
    double per_none = 0, per_ttl = 0;
    k.evict = TABLE_EVICT_NONE;
    if (table_new_keyed(&other, "none", DIM, &k, &s, err, sizeof err) != CORE_OK)
        return fprintf(stderr, "%s\n", err), 1;
    per_none = (double)table_keyed_bytes(other) * per;
    table_free(other);
    k.evict = TABLE_EVICT_LRU;
    k.ttl_seconds = 86400;
    if (table_new_keyed(&other, "ttl", DIM, &k, &s, err, sizeof err) != CORE_OK)
        return fprintf(stderr, "%s\n", err), 1;
    per_ttl = (double)table_keyed_bytes(other) * per;
    table_free(other);
    printf("  key map of the same capacity with \"evict\": \"none\" and no ttl: %.1f bytes per key; "
           "with lru and a ttl: %.1f\n", per_none, per_ttl);
    double keyed_per = keyed_rss / (double)inserted, dense_per = dense_rss / ROWS;
    printf("  resident memory (RssAnon; the first keyed table): the dense table %.2f bytes per "
           "row, the keyed one %.2f per key, %.2f over the dense one's (target <= 16)\n",
           dense_per, keyed_per, keyed_per - dense_per);
    /* the full table: every new key evicts the least recently written one
     * (the write order's buffer of the oldest rows refilled by scans) */
    uint64_t evicted0 = 0, evicted1 = 0;
    table_keyed_counts(keyed, &(int64_t){0}, &evicted0);
    double t0 = clock_mono_s();
    size_t churned = 0;
    for (size_t i = 0; i + STEP <= ROWS / 2; i += STEP) {
        int64_t fresh[STEP];
        for (size_t j = 0; j < STEP; j++)
            fresh[j] = (int64_t)(next() >> 1);
        struct table_keyed_result r;
        if (table_keyed_apply(keyed, TABLE_KEYED_GRADIENTS, &cfg, 0, fresh, STEP, grads, NULL,
                              &r) != CORE_OK)
            abort();
        churned += r.inserted;
    }
    double churn_rate = (double)churned / (clock_mono_s() - t0);
    table_keyed_counts(keyed, &(int64_t){0}, &evicted1);
    printf("  inserts into the full table, each new key evicting the least recently written: "
           "%.2f M keys/s (%zu keys, %llu evictions)\n", churn_rate / 1e6,
           churned, (unsigned long long)(evicted1 - evicted0));
    table_free(dense);
    table_free(keyed);
    if (argc > 1)
        http_compare(argv[1], keys, inserted, argc > 2 ? atof(argv[2]) : 1.0,
                     argc > 3 ? atoi(argv[3]) : 9);
    free(keys);
    free(rows);
    free(grads);
    return 0;
}
