/* metrics.h - Prometheus counters and histograms for the server.
 *
 * Requests are counted by route label and status, with a latency histogram
 * per route; per-table counters (rows served, updates applied) live in the
 * registry entries and table versions are read at scrape time. Every
 * update is a relaxed atomic add, so any thread records without locks; a
 * scrape sees each counter at some recent value. */
#ifndef SERVER_METRICS_H
#define SERVER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "buf.h"
#include "registry.h"
#include "route.h"

/* The statuses the server answers with; anything else counts as "other". */
#define METRICS_STATUS_MAP(X) \
    X(200) X(400) X(401) X(404) X(405) X(409) X(413) X(415) X(500) X(503)
#define METRICS_NSTATUS 11 /* the ten above + other */
#define METRICS_NBUCKETS 15 /* finite buckets; +Inf is the count */

struct metrics {
    _Atomic uint64_t requests[ROUTE_COUNT][METRICS_NSTATUS];
    _Atomic uint64_t buckets[ROUTE_COUNT][METRICS_NBUCKETS]; /* not cumulative */
    _Atomic uint64_t duration_ns[ROUTE_COUNT];
    _Atomic uint64_t count[ROUTE_COUNT];
    _Atomic int64_t in_flight;
};

/* Zeroes every counter. */
void metrics_init(struct metrics *m);

/* Records one answered request. */
void metrics_observe(struct metrics *m, enum route_id route, unsigned status,
                     uint64_t duration_ns);

/* Writes the text exposition format (version 0.0.4) of m and the tables of
 * r into b. Any thread. */
void metrics_render(struct metrics *m, struct registry *r, struct buf *b);

#endif
