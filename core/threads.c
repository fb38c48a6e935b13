/* threads.c - see threads.h. */
#include "threads.h"

#include <stdatomic.h>
#include <unistd.h>

static atomic_int configured; /* 0 = online CPUs */

void threads_set_budget(int n)
{
    atomic_store(&configured, n <= 0 ? 0 : n > THREADS_MAX ? THREADS_MAX : n);
}

int threads_budget(void)
{
    int n = atomic_load(&configured);
    if (n > 0)
        return n;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        return 1;
    return cpus > THREADS_MAX ? THREADS_MAX : (int)cpus;
}
