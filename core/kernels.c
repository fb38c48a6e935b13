/* kernels.c - canonical-order dot products and distances (see kernels.h).
 *
 * The AVX-512 paths keep one 16-lane accumulator per (query, row) pair and
 * sum lanes with the canonical tree, done for 16 pairs at once by a transpose
 * (reduce16), so the vector code gives exactly the bits of the scalar code
 * below. The scalar code is the definition and the portable fallback; the
 * compiler may vectorize it (fmaf and IEEE adds round the same either way;
 * C11 mode compiles with -ffp-contract=off, so nothing is fused behind our
 * back). */
#include "kernels.h"

#include <math.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define KERN_AVX512 1
#endif

/* The canonical lane tree: ((l0+l8)+(l4+l12)) + ((l2+l10)+(l6+l14)) for
 * lane pair 0, and so on; see kernels.h. */
static float tree_sum(const float l[KERN_LANES])
{
    float s8[8], s4[4];
    for (int j = 0; j < 8; j++)
        s8[j] = l[j] + l[j + 8];
    for (int j = 0; j < 4; j++)
        s4[j] = s8[j] + s8[j + 4];
    float s2a = s4[0] + s4[2];
    float s2b = s4[1] + s4[3];
    return s2a + s2b;
}

static float scalar_reduce(const float *a, const float *b, int64_t n, bool l2)
{
    float acc[KERN_LANES] = {0};
    for (int64_t c = 0; c < n; c += KERN_LANES) {
        for (int j = 0; j < KERN_LANES; j++) {
            float x = c + j < n ? a[c + j] : 0.0f;
            float y = c + j < n ? b[c + j] : 0.0f;
            if (l2) {
                float d = x - y;
                acc[j] = fmaf(d, d, acc[j]);
            } else {
                acc[j] = fmaf(x, y, acc[j]);
            }
        }
    }
    return tree_sum(acc);
}

#ifdef KERN_AVX512

static inline __mmask16 tail_mask(int64_t left)
{
    return left >= KERN_LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

static inline __m512 step(__m512 acc, __m512 x, __m512 y, bool l2)
{
    if (l2) {
        __m512 d = _mm512_sub_ps(x, y);
        return _mm512_fmadd_ps(d, d, acc);
    }
    return _mm512_fmadd_ps(x, y, acc);
}

static inline float hsum1(__m512 v)
{
    __m256 lo = _mm512_castps512_ps256(v);
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 s8 = _mm256_add_ps(lo, hi);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

static inline float vec_reduce(const float *a, const float *b, int64_t n, bool l2)
{
    __m512 acc = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + KERN_LANES <= n; c += KERN_LANES)
        acc = step(acc, _mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), l2);
    if (c < n) {
        __mmask16 m = tail_mask(n - c);
        acc = step(acc, _mm512_maskz_loadu_ps(m, a + c), _mm512_maskz_loadu_ps(m, b + c), l2);
    }
    return hsum1(acc);
}

/* Halves of two accumulators added: lanes 0..7 get x[j] + x[j+8], lanes
 * 8..15 get y[j] + y[j+8] (tree level s8). */
static inline __m512 fold8(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
}

/* Two vectors each holding two s8 halves -> four s4 quarters. */
static inline __m512 fold4(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
}

static inline __m512 fold2(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
}

static inline __m512 fold1(__m512 x, __m512 y)
{
    return _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Sums each of 16 accumulators by the canonical tree; returns the 16 sums
 * in natural order (lane i = sum of a[i]). The folds leave sum a[4m + l] in
 * lane 4l + m, a 4x4 transpose that one permute undoes. */
static inline __m512 reduce16(const __m512 a[16])
{
    __m512 b[8], c[4], d[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        b[i] = fold8(a[2 * i], a[2 * i + 1]);
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        c[i] = fold4(b[2 * i], b[2 * i + 1]);
    d[0] = fold2(c[0], c[1]);
    d[1] = fold2(c[2], c[3]);
    __m512 e = fold1(d[0], d[1]);
    const __m512i untranspose =
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(untranspose, e);
}

/* One chunk of 16 positions for a 4 x 4 tile (queries q + i * qs, rows
 * r + j * rs), m masking a short last chunk. Base and stride rather than
 * pointer arrays keep the pointers in general registers, leaving all 32
 * vector registers to accumulators and operands. */
static inline __attribute__((always_inline)) void chunk4x4(__m512 acc[16], const float *q,
                                                           int64_t qs, const float *r, int64_t rs,
                                                           __mmask16 m, bool l2)
{
    __m512 qv[4], rv[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        qv[i] = _mm512_maskz_loadu_ps(m, q + i * qs);
        rv[i] = _mm512_maskz_loadu_ps(m, r + i * rs);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            acc[4 * i + j] = step(acc[4 * i + j], qv[i], rv[j], l2);
    }
}

/* 4 queries x 4 rows; out[4 * i + j] = score of query i and row j. */
static inline __attribute__((always_inline)) void tile4x4(const float *q, int64_t qs,
                                                          const float *r, int64_t rs,
                                                          int64_t dim, bool l2, float out[16])
{
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        acc[i] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + KERN_LANES <= dim; c += KERN_LANES)
        chunk4x4(acc, q + c, qs, r + c, rs, (__mmask16)0xFFFF, l2);
    if (c < dim)
        chunk4x4(acc, q + c, qs, r + c, rs, tail_mask(dim - c), l2);
    _mm512_storeu_ps(out, reduce16(acc));
}

static inline __attribute__((always_inline)) void chunk1x16(__m512 acc[16], const float *q,
                                                            const float *r, int64_t rs,
                                                            __mmask16 m, bool l2)
{
    __m512 qv = _mm512_maskz_loadu_ps(m, q);
#pragma GCC unroll 16
    for (int j = 0; j < 16; j++)
        acc[j] = step(acc[j], qv, _mm512_maskz_loadu_ps(m, r + j * rs), l2);
}

/* 1 query x 16 rows; out[j] = score of q and row j. */
static inline __attribute__((always_inline)) void tile1x16(const float *q, const float *r,
                                                           int64_t rs, int64_t dim, bool l2,
                                                           float out[16])
{
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        acc[i] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + KERN_LANES <= dim; c += KERN_LANES)
        chunk1x16(acc, q + c, r + c, rs, (__mmask16)0xFFFF, l2);
    if (c < dim)
        chunk1x16(acc, q + c, r + c, rs, tail_mask(dim - c), l2);
    _mm512_storeu_ps(out, reduce16(acc));
}

/* Rows left over after the last whole tile: one pair at a time, same bits. */
static void block_pairs(const float *q, const float *rows, int64_t rstride, int j0, int nrows,
                        int64_t dim, bool l2, float *out)
{
    for (int j = j0; j < nrows; j++)
        out[j] = vec_reduce(q, rows + (int64_t)j * rstride, dim, l2);
}

static void block_4x4(const float *queries, int64_t qstride, int nq, const float *rows,
                      int64_t rstride, int nrows, int64_t dim, bool l2, float *out, int64_t ldo)
{
    int whole = nrows / 4 * 4;
    for (int i0 = 0; i0 + 4 <= nq; i0 += 4) {
        const float *q = queries + (int64_t)i0 * qstride;
        float *o = out + (int64_t)i0 * ldo;
        for (int j0 = 0; j0 < whole; j0 += 4) {
            float t[16];
            if (l2)
                tile4x4(q, qstride, rows + (int64_t)j0 * rstride, rstride, dim, true, t);
            else
                tile4x4(q, qstride, rows + (int64_t)j0 * rstride, rstride, dim, false, t);
            for (int i = 0; i < 4; i++)
                memcpy(o + (int64_t)i * ldo + j0, t + 4 * i, 4 * sizeof(float));
        }
        for (int i = 0; i < 4; i++)
            block_pairs(q + (int64_t)i * qstride, rows, rstride, whole, nrows, dim, l2,
                        o + (int64_t)i * ldo);
    }
}

static void block_1x16(const float *q, const float *rows, int64_t rstride, int nrows,
                       int64_t dim, bool l2, float *out)
{
    int whole = nrows / 16 * 16;
    for (int j0 = 0; j0 < whole; j0 += 16) {
        const float *r = rows + (int64_t)j0 * rstride;
        if (l2)
            tile1x16(q, r, rstride, dim, true, out + j0);
        else
            tile1x16(q, r, rstride, dim, false, out + j0);
    }
    block_pairs(q, rows, rstride, whole, nrows, dim, l2, out);
}

#endif /* KERN_AVX512 */

float kern_dot(const float *a, const float *b, int64_t n)
{
#ifdef KERN_AVX512
    return vec_reduce(a, b, n, false);
#else
    return scalar_reduce(a, b, n, false);
#endif
}

float kern_l2sq(const float *a, const float *b, int64_t n)
{
#ifdef KERN_AVX512
    return vec_reduce(a, b, n, true);
#else
    return scalar_reduce(a, b, n, true);
#endif
}

void kern_block(const float *queries, int64_t qstride, int nq, const float *rows,
                int64_t rstride, int nrows, int64_t dim, bool l2, float *out, int64_t ldo)
{
    int done = 0;
#ifdef KERN_AVX512
    if (nq >= 2) {
        done = nq / 4 * 4;
        block_4x4(queries, qstride, done, rows, rstride, nrows, dim, l2, out, ldo);
    }
    for (int i = done; i < nq; i++)
        block_1x16(queries + (int64_t)i * qstride, rows, rstride, nrows, dim, l2,
                   out + (int64_t)i * ldo);
    done = nq;
#endif
    for (int i = done; i < nq; i++)
        for (int j = 0; j < nrows; j++)
            out[(int64_t)i * ldo + j] = scalar_reduce(queries + (int64_t)i * qstride,
                                                      rows + (int64_t)j * rstride, dim, l2);
}

uint64_t kern_gate(const float *s, int n, float thr)
{
    uint64_t mask = 0;
#ifdef KERN_AVX512
    __m512 t = _mm512_set1_ps(thr);
    for (int i = 0; i < n; i += KERN_LANES) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, s + i);
        __mmask16 hit = _mm512_mask_cmp_ps_mask(m, v, t, _CMP_NLT_UQ);
        mask |= (uint64_t)hit << i;
    }
#else
    for (int i = 0; i < n; i++)
        if (!(s[i] < thr))
            mask |= (uint64_t)1 << i;
#endif
    return mask;
}

void kern_cosine(float *s, const float *norms, int n, float cq, float eps)
{
    int i = 0;
#ifdef KERN_AVX512
    /* the same IEEE operations 16 at a time (division is the cost here) */
    __m512 vq = _mm512_set1_ps(cq), ve = _mm512_set1_ps(eps);
    for (; i + KERN_LANES <= n; i += KERN_LANES) {
        __m512 cr = _mm512_max_ps(_mm512_loadu_ps(norms + i), ve);
        _mm512_storeu_ps(s + i, _mm512_div_ps(_mm512_loadu_ps(s + i), _mm512_mul_ps(vq, cr)));
    }
#endif
    for (; i < n; i++) {
        float cr = norms[i] > eps ? norms[i] : eps;
        s[i] = s[i] / (cq * cr);
    }
}

void kern_neg_sqrt(float *s, int n)
{
    int i = 0;
#ifdef KERN_AVX512
    for (; i + KERN_LANES <= n; i += KERN_LANES)
    {
        /* flip the sign bit, as unary minus does (0 - x would turn -0 into +0) */
        __m512i r = _mm512_castps_si512(_mm512_sqrt_ps(_mm512_loadu_ps(s + i)));
        r = _mm512_xor_si512(r, _mm512_set1_epi32((int)0x80000000u));
        _mm512_storeu_ps(s + i, _mm512_castsi512_ps(r));
    }
#endif
    for (; i < n; i++)
        s[i] = -sqrtf(s[i]);
}
