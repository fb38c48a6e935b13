/* work.h - a small pool of threads for CPU-heavy or blocking jobs
 * (neighbour searches over big tables, large gradient batches, snapshots),
 * so that libmicrohttpd's threads keep accepting and answering light
 * requests while those run (pool threads run at a lower priority, nice 10). Jobs run in submission order, each exactly
 * once; work_stop runs every job still queued before it returns. */
#ifndef SERVER_WORK_H
#define SERVER_WORK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct work_job {
    void (*run)(struct work_job *job); /* runs on a pool thread */
    struct work_job *next;             /* owned by the queue */
};

struct work_pool {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct work_job *head, *tail;
    size_t queued;  /* jobs waiting */
    size_t running; /* jobs being run */
    bool stopping;      /* no more submissions; threads finish the queue */
    bool stopping_done; /* threads joined */
    size_t nthreads;
    pthread_t *threads;
};

/* Starts nthreads (>= 1) threads. Returns 0 or an errno value. */
int work_init(struct work_pool *p, size_t nthreads);

/* Queues job; the caller keeps ownership of its memory, which must live
 * until job->run returns (run may free it). Any thread. False after
 * work_deinit has begun. */
bool work_submit(struct work_pool *p, struct work_job *job);

/* Jobs queued or running right now (for draining and metrics). */
size_t work_pending(struct work_pool *p);

/* Runs what is queued, then stops and joins the threads; later
 * work_submit calls return false. Safe on a zeroed pool and twice. */
void work_stop(struct work_pool *p);

/* work_stop, then frees the pool. No thread may use p afterwards. */
void work_deinit(struct work_pool *p);

#endif
