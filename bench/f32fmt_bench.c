/* f32fmt_bench.c - ns per float to write JSON floats: f32fmt, f32fmt_array,
 * buf_put_f32_array, snprintf("%.9g") and cJSON (cJSON_CreateFloatArray + cJSON_PrintUnformatted).
 *
 * Usage: f32fmt_bench [count] [rounds]
 *
 * The floats look like embedding rows: 128-wide rows of normal values whose
 * scale varies per row over 10^-2.5 .. 10^0.5, from a fixed seed. Each method
 * runs `rounds` times over all floats and its best round is reported, with
 * the bytes per float it wrote and its ratio to f32fmt from the same run (the
 * machine is shared, so only ratios compare across runs). */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "f32fmt.h"

#define ROW 128

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t next_u64(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1du;
}

static double next_unit(void)
{
    return (double)((next_u64() >> 11) + 1) / 9007199254740993.0; /* (0, 1] */
}

static double next_normal(void)
{
    return sqrt(-2.0 * log(next_unit())) * cos(6.283185307179586 * next_unit());
}

static float *make_floats(size_t n)
{
    float *v = malloc(n * sizeof *v);
    if (v == NULL)
        return NULL;
    double scale = 1;
    for (size_t i = 0; i < n; i++) {
        if (i % ROW == 0)
            scale = pow(10.0, -2.5 + 3.0 * next_unit());
        v[i] = (float)(next_normal() * scale);
    }
    return v;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct result {
    const char *name;
    double best_ns; /* per float */
    double bytes;   /* per float, separators included */
};

typedef size_t (*method_fn)(const float *v, size_t n, char *scratch);

/* Each method returns the bytes it wrote, which also keeps the work alive. */
static size_t run_f32fmt(const float *v, size_t n, char *scratch)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += f32fmt(v[i], scratch) + 1;
        scratch[0] ^= (char)total; /* defeat hoisting */
    }
    return total;
}

static size_t run_f32fmt_array(const float *v, size_t n, char *scratch)
{
    (void)scratch;
    static char row[ROW * F32FMT_MAX];
    size_t total = 0;
    for (size_t i = 0; i < n; i += ROW)
        total += f32fmt_array(v + i, n - i < ROW ? n - i : ROW, row) + 2;
    return total;
}

static size_t run_buf_array(const float *v, size_t n, char *scratch)
{
    (void)scratch;
    struct buf b;
    buf_init(&b, 0);
    size_t total = 0;
    for (size_t i = 0; i < n; i += ROW) {
        b.len = 0;
        buf_put_f32_array(&b, v + i, n - i < ROW ? n - i : ROW);
        total += b.len;
    }
    buf_deinit(&b);
    return total;
}

static size_t run_snprintf(const float *v, size_t n, char *scratch)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (size_t)snprintf(scratch, 64, "%.9g", (double)v[i]) + 1;
    return total;
}

static size_t run_cjson(const float *v, size_t n, char *scratch)
{
    (void)scratch;
    size_t total = 0;
    for (size_t i = 0; i < n; i += ROW) {
        int m = (int)(n - i < ROW ? n - i : ROW);
        cJSON *arr = cJSON_CreateFloatArray(v + i, m);
        char *text = cJSON_PrintUnformatted(arr);
        if (text != NULL)
            total += strlen(text);
        free(text);
        cJSON_Delete(arr);
    }
    return total;
}

static struct result measure(const char *name, method_fn fn, const float *v, size_t n,
                             int rounds)
{
    char scratch[64] = {0};
    struct result r = {name, INFINITY, 0};
    for (int i = 0; i < rounds; i++) {
        double t0 = now_ns();
        size_t bytes = fn(v, n, scratch);
        double ns = (now_ns() - t0) / (double)n;
        if (ns < r.best_ns)
            r.best_ns = ns;
        r.bytes = (double)bytes / (double)n;
    }
    return r;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (n == 0 || rounds < 1) {
        fprintf(stderr, "usage: %s [count] [rounds]\n", argv[0]);
        return 2;
    }
    float *v = make_floats(n);
    if (v == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    printf("f32fmt_bench: %zu floats (rows of %d, scales 10^-2.5..10^0.5), best of %d\n", n,
           ROW, rounds);
    struct result r[] = {
        measure("f32fmt", run_f32fmt, v, n, rounds),
        measure("f32fmt_array", run_f32fmt_array, v, n, rounds),
        measure("buf_put_f32_array", run_buf_array, v, n, rounds),
        measure("snprintf %.9g", run_snprintf, v, n, rounds),
        measure("cJSON float array", run_cjson, v, n, rounds),
    };
    printf("%-20s %10s %12s %14s\n", "method", "ns/float", "bytes/float", "x f32fmt time");
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        printf("%-20s %10.1f %12.2f %14.2f\n", r[i].name, r[i].best_ns, r[i].bytes,
               r[i].best_ns / r[0].best_ns);
    free(v);
    return 0;
}
