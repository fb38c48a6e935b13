/* threads.h - the one thread budget of core/'s parallel loops (table
 * initialization and norms, top-k scans): how many threads one call may
 * start, including the caller's. */
#ifndef CORE_THREADS_H
#define CORE_THREADS_H

#define THREADS_MAX 8

/* Sets the budget (clamped to [1, THREADS_MAX]); 0 goes back to the
 * default, the online CPUs (at most THREADS_MAX). Call before serving, not
 * while a parallel loop runs. */
void threads_set_budget(int n);

/* The budget now, >= 1. Any thread. */
int threads_budget(void);

#endif
