/* similarity.h - pair scores and exact top-k neighbour search over a table.
 *
 * cosine(x, y) = x.y / (max(|x|, 1e-8) * max(|y|, 1e-8)), as
 * torch.nn.functional.cosine_similarity; dot = x.y; l2 = |x - y|_2 (a
 * distance: lower is closer). Reads rows as stored (never renormalizes),
 * consistently under the table's seqlock. Safe to call from any number of
 * threads concurrently with a writer. */
#ifndef CORE_SIMILARITY_H
#define CORE_SIMILARITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "table.h"

enum metric { METRIC_COSINE, METRIC_DOT, METRIC_L2 };

#define TOPK_MAX 1000

/* Parses "cosine" | "dot" | "l2"; false for anything else. */
bool metric_parse(const char *name, enum metric *m);
const char *metric_name(enum metric m);

/* Score of two dim-float vectors under m. */
float similarity_vec(const float *x, const float *y, int64_t dim, enum metric m);

/* scores[i] = score of rows pairs[2i] and pairs[2i+1]. CORE_ERANGE with
 * *bad = index into pairs (element index, 0..2n) for an out-of-range id. */
int similarity_pairs(const struct table *t, const int64_t *pairs, size_t n,
                     enum metric m, float *scores, size_t *bad);

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
 * each row is read once per batch, and large tables use both cores. */
int topk_search(const struct table *t, const float *queries, size_t nq,
                const int64_t *exclude, size_t k, enum metric m,
                struct topk_hit *hits, size_t *counts);

/* Sets how many threads topk_search may use (default: online CPUs, at most
 * 8). Call before serving; not thread-safe against running searches. */
void topk_set_threads(int n);

#endif
