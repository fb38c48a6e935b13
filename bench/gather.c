/* gather.c - rows/s of table_lookup gathering 1M random rows (D = 128) from
 * a 1M x 128 table, against a plain memcpy of the same number of bytes
 * measured in the same run (target: gather within 2x of memcpy). Also
 * prints the cost of the max_norm check when no row needs renormalizing,
 * small-batch lookups, table initialization, and vocabulary build/find
 * rates for 1M tokens.
 *
 * Usage: gather [rows] [repeats]   (defaults 1000000 and 7) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "error.h"
#include "table.h"
#include "table_internal.h"
#include "vocab.h"

#define DIM 128

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static struct table *make_table(int64_t rows, bool max_norm)
{
    struct table_settings s;
    table_settings_init(&s);
    if (max_norm) {
        s.has_max_norm = true;
        s.max_norm = 1e6; /* no N(0,1) row of 128 floats comes near it */
    }
    struct table *t = NULL;
    char err[256];
    if (table_new_init(&t, "bench", rows, DIM, 1, &s, err, sizeof(err)) != CORE_OK) {
        fprintf(stderr, "gather: %s\n", err);
        exit(1);
    }
    return t;
}

/* Time of one pass of lookups over all ids, in batches of `batch` ids. */
static double time_lookup(struct table *t, const int64_t *ids, size_t n, size_t batch, float *out)
{
    double t0 = clock_mono_s();
    for (size_t i = 0; i < n; i += batch) {
        size_t m = n - i < batch ? n - i : batch;
        if (table_lookup(t, ids + i, m, out + i * DIM, NULL) != CORE_OK) {
            fprintf(stderr, "gather: lookup failed\n");
            exit(1);
        }
    }
    return clock_mono_s() - t0;
}

static double time_memcpy(float *dst, const float *src, size_t bytes)
{
    double t0 = clock_mono_s();
    memcpy(dst, src, bytes);
    return clock_mono_s() - t0;
}

static double minimum(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

/* Huge pages decide the gather rate (one TLB miss per row without them):
 * print how much of the process's memory got them. */
static void print_huge_pages(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "AnonHugePages:", 14) == 0)
            printf("huge pages in use: %s", line + 14);
    if (f != NULL)
        fclose(f);
}

static void bench_vocab(int n)
{
    char (*toks)[24] = malloc((size_t)n * sizeof(*toks));
    size_t *lens = malloc((size_t)n * sizeof(size_t));
    for (int i = 0; i < n; i++)
        lens[i] = (size_t)snprintf(toks[i], sizeof(toks[i]), "w%x_%d", (unsigned)(i * 2654435761u), i);
    struct vocab *v;
    double t0 = clock_mono_s();
    if (vocab_new(&v, (size_t)n) != CORE_OK)
        exit(1);
    for (int i = 0; i < n; i++)
        vocab_add(v, toks[i], lens[i], NULL);
    double build = clock_mono_s() - t0;
    uint64_t s = 88172645463325252ull;
    long found = 0;
    t0 = clock_mono_s();
    for (int i = 0; i < n; i++) {
        uint64_t k = next_random(&s) % (uint64_t)n;
        found += vocab_find(v, toks[k], lens[k]) == (int64_t)k;
    }
    double find = clock_mono_s() - t0;
    printf("vocab: %d tokens added in %.3f s (%.1f M/s), %d random finds in %.3f s (%.1f M/s), %ld ok\n",
           n, build, n / build / 1e6, n, find, n / find / 1e6, found);
    vocab_free(v);
    free(toks);
    free(lens);
}

#define MAX_REPEATS 64

/* The machine is shared and noisy: each round times every variant back to
 * back, and the ratios printed are medians of per-round ratios. */
int main(int argc, char **argv)
{
    int64_t rows = argc > 1 ? atoll(argv[1]) : 1000000;
    int repeats = argc > 2 ? atoi(argv[2]) : 7;
    if (rows < 1 || repeats < 1 || repeats > MAX_REPEATS) {
        fprintf(stderr, "usage: gather [rows >= 1] [repeats 1..%d]\n", MAX_REPEATS);
        return 2;
    }
    size_t n = (size_t)rows;
    size_t bytes = n * DIM * sizeof(float);

    double t0 = clock_mono_s();
    struct table *t = make_table(rows, false);
    double init = clock_mono_s() - t0;
    printf("init: %lld x %d N(0,1) table with norms in %.3f s (%.1f M floats/s)\n", (long long)rows,
           DIM, init, (double)rows * DIM / init / 1e6);
    struct table *tn = make_table(rows, true);
    print_huge_pages();

    int64_t *ids = malloc(n * sizeof(int64_t));
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++)
        ids[i] = (int64_t)(next_random(&s) % (uint64_t)rows);
    float *out = malloc(bytes);
    memset(out, 0, bytes); /* fault the pages in before timing */

    double g[MAX_REPEATS], c[MAX_REPEATS], b32[MAX_REPEATS], mn[MAX_REPEATS];
    double r_copy[MAX_REPEATS], r_b32[MAX_REPEATS], r_mn[MAX_REPEATS];
    for (int r = 0; r < repeats; r++) {
        g[r] = time_lookup(t, ids, n, n, out);
        c[r] = time_memcpy(out, t->w.data, bytes);
        b32[r] = time_lookup(t, ids, n, 32, out);
        mn[r] = time_lookup(tn, ids, n, n, out);
        r_copy[r] = g[r] / c[r];
        r_b32[r] = b32[r] / g[r];
        r_mn[r] = mn[r] / g[r];
    }
    printf("gather: %zu random rows of %d floats: best %.1f M rows/s (%.1f GB/s)\n", n, DIM,
           n / minimum(g, repeats) / 1e6, bytes / minimum(g, repeats) / 1e9);
    printf("memcpy: same %zu bytes contiguous:    best %.1f M rows/s (%.1f GB/s)\n", bytes,
           n / minimum(c, repeats) / 1e6, bytes / minimum(c, repeats) / 1e9);
    printf("ratio:  gather / memcpy time, median of %d rounds: %.2fx (best rounds: %.2fx; target <= 2x)\n",
           repeats, bench_median(r_copy, repeats), minimum(g, repeats) / minimum(c, repeats));
    printf("batches of 32 ids per call: best %.1f M rows/s, median %.2fx one big call\n",
           n / minimum(b32, repeats) / 1e6, bench_median(r_b32, repeats));
    printf("max_norm set, no row over it: best %.1f M rows/s, median %.2fx plain gather\n",
           n / minimum(mn, repeats) / 1e6, bench_median(r_mn, repeats));
    table_free(tn);
    table_free(t);

    bench_vocab(1000000);
    free(out);
    free(ids);
    return 0;
}
