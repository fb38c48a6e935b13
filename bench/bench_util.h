/* bench_util.h - what every benchmark program here needs besides its own
 * measurement: sorting and quantiles of samples, and emptying a scratch
 * folder. Time comes from core/clock.h (clock_mono_s). Header-only: each
 * bench is one program. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The p-quantile (0..1) of v[0..n), nearest rank; sorts v. 0 when empty. */
static inline double bench_pct(double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, bench_cmp_double);
    return v[(size_t)(p * (double)(n - 1) + 0.5)];
}

/* The median of v[0..n) (the mean of the middle two when n is even); sorts v. */
static inline double bench_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The process's resident anonymous memory in bytes (RssAnon), or 0. */
static inline double bench_rss_anon(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "RssAnon: %ld", &kb) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return (double)kb * 1024.0;
}

/* Removes the files of dir (not recursive), then dir. */
static inline void bench_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    rmdir(dir);
}

#endif
