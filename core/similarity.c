/* similarity.c - pair scores with torch 1.13's arithmetic, and the metric
 * names.
 *
 * cosine follows ATen's cosine_similarity (1.13): each vector is divided by
 * max(its norm, eps) in float32 before the products are summed, rather than
 * the dot product being divided afterwards; the difference shows for norms
 * near eps. Sums are taken in double and rounded once, which lands on
 * torch's float32 result or next to it. */
#include "similarity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "table_internal.h"


static const char *const metric_names[] = {
    [METRIC_COSINE] = "cosine",
    [METRIC_DOT] = "dot",
    [METRIC_L2] = "l2",
};

bool metric_parse(const char *name, enum metric *m)
{
    if (name == NULL)
        return false;
    for (size_t i = 0; i < sizeof(metric_names) / sizeof(metric_names[0]); i++) {
        if (strcmp(name, metric_names[i]) == 0) {
            *m = (enum metric)i;
            return true;
        }
    }
    return false;
}

const char *metric_name(enum metric m)
{
    if ((unsigned)m >= sizeof(metric_names) / sizeof(metric_names[0]))
        return "unknown";
    return metric_names[m];
}

/* linalg_vector_norm(x, 2) as float32. */
static float norm2(const float *x, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return (float)sqrt(s);
}

static float cosine(const float *x, const float *y, int64_t n)
{
    float nx = norm2(x, n), ny = norm2(y, n);
    float cx = nx > SIMILARITY_COSINE_EPS ? nx : SIMILARITY_COSINE_EPS;
    float cy = ny > SIMILARITY_COSINE_EPS ? ny : SIMILARITY_COSINE_EPS;
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float p = (x[i] / cx) * (y[i] / cy); /* float32 elementwise, as ATen */
        s += (double)p;
    }
    return (float)s;
}

static float dot(const float *x, const float *y, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * (double)y[i];
    return (float)s;
}

/* torch.dist(x, y): the difference is taken in float32, its norm summed. */
static float l2(const float *x, const float *y, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float d = x[i] - y[i];
        s += (double)d * (double)d;
    }
    return (float)sqrt(s);
}

float similarity_vec(const float *x, const float *y, int64_t dim, enum metric m)
{
    switch (m) {
    case METRIC_COSINE:
        return cosine(x, y, dim);
    case METRIC_DOT:
        return dot(x, y, dim);
    case METRIC_L2:
        return l2(x, y, dim);
    }
    return NAN;
}

int similarity_pairs(const struct table *t, const int64_t *pairs, size_t n,
                     enum metric m, float *scores, size_t *bad)
{
    if (t == NULL || (n > 0 && (pairs == NULL || scores == NULL)))
        return CORE_EINVAL;
    if (m != METRIC_COSINE && m != METRIC_DOT && m != METRIC_L2)
        return CORE_EINVAL;
    int64_t rows = t->w.rows;
    for (size_t i = 0; i < 2 * n; i++) {
        if (pairs[i] < 0 || pairs[i] >= rows) {
            if (bad != NULL)
                *bad = i;
            return CORE_ERANGE;
        }
    }
    size_t dim = (size_t)t->w.dim;
    float *x = malloc(2 * dim * sizeof(float));
    if (x == NULL)
        return CORE_ENOMEM;
    float *y = x + dim;
    for (size_t i = 0; i < n; i++) {
        /* table_read_row copies under the stripe seqlock: never a torn row */
        table_read_row(t, pairs[2 * i], x);
        table_read_row(t, pairs[2 * i + 1], y);
        scores[i] = similarity_vec(x, y, (int64_t)dim, m);
    }
    free(x);
    return CORE_OK;
}
