/* kernels.h - the float arithmetic of neighbour search, in one canonical
 * order.
 *
 * Every score top-k search ranks is computed in the same order whatever the
 * path (one query, a batch, how rows are split between threads, which
 * instruction set), so a batch answers bit for bit what single queries
 * answer and ties are real ties. The order: lane j (0..15) accumulates, over
 * chunks c = 0, 1, ... in turn, fmaf(a[16c+j], b[16c+j], acc_j) for a dot
 * product, or fmaf(d, d, acc_j) with d = a[16c+j] - b[16c+j] for a squared
 * distance; positions past n count as zeros; then the 16 lanes are summed by
 * the fixed tree s8[j] = l[j] + l[j+8], s4[j] = s8[j] + s8[j+4],
 * s2[j] = s4[j] + s4[j+2], sum = s2[0] + s2[1].
 *
 * Pure functions of their inputs; any thread may call them. */
#ifndef CORE_KERNELS_H
#define CORE_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#define KERN_LANES 16

/* Canonical dot product of a and b (n >= 0 floats each). */
float kern_dot(const float *a, const float *b, int64_t n);

/* Canonical squared L2 distance of a and b. */
float kern_l2sq(const float *a, const float *b, int64_t n);

/* out[i * ldo + j] = kern_dot (or kern_l2sq when l2) of query i
 * (queries + i * qstride) and row j (rows + j * rstride), dim floats each,
 * for i < nq and j < nrows: a tile of the score matrix, bit-identical to the
 * scalar forms above. Reads exactly dim floats of every vector. */
void kern_block(const float *queries, int64_t qstride, int nq, const float *rows,
                int64_t rstride, int nrows, int64_t dim, bool l2, float *out, int64_t ldo);

/* Bit i of the result is set when s[i] >= thr or s[i] is NaN, for
 * i < n <= 64: the cheap gate in front of a top-k heap. */
uint64_t kern_gate(const float *s, int n, float thr);

/* s[i] = s[i] / (cq * max(norms[i], eps)) for i < n: cosine from a dot
 * product and the rows' cached norms (cq already clamped by the caller). */
void kern_cosine(float *s, const float *norms, int n, float cq, float eps);

/* s[i] = -sqrtf(s[i]) for i < n: squared distances to ranking keys, where
 * higher is better, as for the other metrics. */
void kern_neg_sqrt(float *s, int n);

#endif
