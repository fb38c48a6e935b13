/* topk.h - exact top-k neighbour search over every row of a table, under
 * the metrics of similarity.h; reads rows as stored, consistently under the
 * table's seqlock, from any number of threads alongside a writer. */
#ifndef CORE_TOPK_H
#define CORE_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "similarity.h"
#include "table.h"

#define TOPK_MAX 1000

struct topk_hit {
    int64_t id;
    float score;
};

/* Exact top-k over every row for nq query vectors (queries: nq * dim
 * floats, dense). exclude[q] is a row id to leave out for query q (its own
 * row) or -1; exclude may be NULL. The padding row is always left out.
 * hits: nq * k entries; query q's list starts at hits + q * k, best first
 * (highest cosine/dot, lowest l2), ties by lower id; counts[q] receives how
 * many were found (< k only when the table has fewer eligible rows).
 * k in [1, TOPK_MAX] else CORE_EINVAL. Batches are scanned block by block so
 * each row is read once per batch, and large tables use the threads of
 * the budget (threads.h). */
int topk_search(const struct table *t, const float *queries, size_t nq,
                const int64_t *exclude, size_t k, enum metric m,
                struct topk_hit *hits, size_t *counts);

#endif
