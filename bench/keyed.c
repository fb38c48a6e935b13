/* keyed.c - keyed tables against dense ones, in one run: lookups of 16
 * keys on a keyed table vs 16 ids on a dense table of the same size (short
 * alternating rounds, the median of their ratios: this machine's speed
 * drifts by 20% between long measurements), inserts/s of new keys through
 * gradient steps (core, no log; the median of three fresh tables), and the
 * key map's bytes per key. Prints figures and ratios. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "error.h"
#include "table.h"

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

int main(void)
{
    char err[256];
    struct table_settings s;
    table_settings_init(&s);
    struct table *dense = NULL, *keyed = NULL;
    if (table_new_init(&dense, "dense", ROWS, DIM, 1, &s, err, sizeof err) != CORE_OK)
        return fprintf(stderr, "%s\n", err), 1;
    struct table_keyed_settings k;
    table_keyed_settings_init(&k);
    k.capacity = ROWS;
    if (table_new_keyed(&keyed, "keyed", DIM, &k, &s, err, sizeof err) != CORE_OK)
        return fprintf(stderr, "%s\n", err), 1;

    /* inserts: every key new, steps of 1024 keys through the log's apply path */
    struct optim_config cfg;
    optim_config_defaults(&cfg, OPTIM_SGD);
    enum { STEP = 1024 };
    int64_t *keys = malloc(ROWS * sizeof *keys);
    float *grads = calloc(STEP * DIM, sizeof *grads);
    for (size_t i = 0; i < ROWS; i++)
        keys[i] = (int64_t)(next() >> 1) - (INT64_MAX / 2);
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
    printf("  key map: %.1f bytes per key at %zu keys (target <= 16), raw floats %d bytes\n",
           (double)bytes / (double)ROWS, inserted, DIM * 4);
    table_free(dense);
    table_free(keyed);
    free(keys);
    free(rows);
    free(grads);
    return 0;
}
