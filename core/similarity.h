/* similarity.h - metrics and pair scores over a table (top-k search is
 * topk.h).
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

/* torch.nn.functional.cosine_similarity's default eps, as float32 (each
 * norm is clamped to it, as clamp_min_ on a float tensor). */
#define SIMILARITY_COSINE_EPS 1e-8f

/* Parses "cosine" | "dot" | "l2"; false for anything else. */
bool metric_parse(const char *name, enum metric *m);
const char *metric_name(enum metric m);

/* Score of two dim-float vectors under m. */
float similarity_vec(const float *x, const float *y, int64_t dim, enum metric m);

/* scores[i] = score of rows pairs[2i] and pairs[2i+1]. CORE_ERANGE with
 * *bad = index into pairs (element index, 0..2n) for an out-of-range id. */
int similarity_pairs(const struct table *t, const int64_t *pairs, size_t n,
                     enum metric m, float *scores, size_t *bad);

#endif
