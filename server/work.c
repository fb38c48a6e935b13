/* work.c - see work.h. One mutex and one condition variable: jobs are
 * milliseconds long, so the queue is never the contended part. */
#include "work.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The pool threads' nice value: CFS then gives a runnable HTTP thread about
 * ten times their share of a core. */
#define WORKER_NICE 10

static void *worker_main(void *arg)
{
    struct work_pool *p = arg;
    /* heavy jobs yield the CPU to the threads that accept and answer:
     * /healthz stays quick while every core searches (Linux nice is per
     * thread; failing to set it only costs that preference) */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WORKER_NICE);
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->head == NULL && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        struct work_job *job = p->head;
        if (job == NULL)
            break; /* stopping and nothing left to run */
        p->head = job->next;
        if (p->head == NULL)
            p->tail = NULL;
        p->queued--;
        p->running++;
        pthread_mutex_unlock(&p->lock);
        job->run(job);
        pthread_mutex_lock(&p->lock);
        p->running--;
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int work_init(struct work_pool *p, size_t nthreads)
{
    *p = (struct work_pool){0};
    if (nthreads < 1)
        nthreads = 1;
    p->threads = calloc(nthreads, sizeof *p->threads);
    if (p->threads == NULL)
        return ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    for (size_t i = 0; i < nthreads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0) {
            work_deinit(p);
            return rc;
        }
        p->nthreads++;
    }
    return 0;
}

bool work_submit(struct work_pool *p, struct work_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        return false;
    }
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->queued++;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    return true;
}

size_t work_pending(struct work_pool *p)
{
    pthread_mutex_lock(&p->lock);
    size_t n = p->queued + p->running;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void work_stop(struct work_pool *p)
{
    if (p->threads == NULL || p->stopping_done)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    p->stopping_done = true;
}

void work_deinit(struct work_pool *p)
{
    if (p->threads == NULL)
        return;
    work_stop(p);
    free(p->threads);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    *p = (struct work_pool){0};
}
