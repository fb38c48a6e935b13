/* rng.c - xoshiro256** (Blackman and Vigna's design) seeded by splitmix64,
 * and Marsaglia and Tsang's ziggurat for normal draws: about 99% of draws
 * cost one 64-bit number and one multiply, which matters when a table of
 * 10^8 floats is initialized at startup. */
#include "rng.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#define ZIG_LAYERS 256
/* Right edge of the base layer for 256 layers (Marsaglia and Tsang 2000). */
#define ZIG_R 3.6541528853610088

static double zig_x[ZIG_LAYERS + 1]; /* layer i spans [0, zig_x[i]] */
static double zig_f[ZIG_LAYERS + 1]; /* exp(-x^2/2) at zig_x[i] */
static pthread_once_t zig_once = PTHREAD_ONCE_INIT;

static double gauss(double x)
{
    return exp(-0.5 * x * x);
}

/* Builds layers of equal area v: the base layer is the rectangle under
 * f(R) plus the tail beyond R, drawn as a rectangle of width v / f(R). */
static void zig_build(void)
{
    double v = ZIG_R * gauss(ZIG_R) + sqrt(M_PI / 2) * erfc(ZIG_R / sqrt(2.0));
    zig_x[0] = v / gauss(ZIG_R);
    zig_x[1] = ZIG_R;
    for (int i = 1; i < ZIG_LAYERS - 1; i++)
        zig_x[i + 1] = sqrt(-2.0 * log(v / zig_x[i] + gauss(zig_x[i])));
    zig_x[ZIG_LAYERS] = 0.0;
    for (int i = 0; i <= ZIG_LAYERS; i++)
        zig_f[i] = gauss(zig_x[i]);
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void rng_seed(struct rng *r, uint64_t seed, uint64_t stream)
{
    pthread_once(&zig_once, zig_build);
    uint64_t x = seed ^ splitmix64(&(uint64_t){stream});
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t rng_next(struct rng *r)
{
    return next(r);
}

double rng_uniform(struct rng *r)
{
    return (double)(next(r) >> 11) * 0x1p-53;
}

/* Draws from the normal tail beyond R (Marsaglia's method). */
static double zig_tail(struct rng *r)
{
    for (;;) {
        double a = -log(1.0 - rng_uniform(r)) / ZIG_R;
        double b = -log(1.0 - rng_uniform(r));
        if (b + b >= a * a)
            return ZIG_R + a;
    }
}

/* The ziggurat's slow paths: the base layer's tail and the wedges. Returns
 * the draw for a rejected fast path, looping on its own until it accepts. */
static double normal_slow(struct rng *r, uint64_t u)
{
    for (;;) {
        unsigned i = (unsigned)(u & (ZIG_LAYERS - 1));
        double sign = (u & ZIG_LAYERS) ? -1.0 : 1.0;
        double x = (double)(u >> 11) * 0x1p-53 * zig_x[i];
        if (x < zig_x[i + 1])
            return sign * x;
        if (i == 0)
            return sign * zig_tail(r);
        double y = zig_f[i] + rng_uniform(r) * (zig_f[i + 1] - zig_f[i]);
        if (y < gauss(x))
            return sign * x;
        u = next(r);
    }
}

/* Bit 8 of the draw becomes the sign bit of x: a branch on a random bit
 * would mispredict half the time. */
static inline double with_sign(double x, uint64_t u)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof(bits));
    bits ^= (u & ZIG_LAYERS) << (63 - 8);
    memcpy(&x, &bits, sizeof(x));
    return x;
}

/* Bits 0-7 pick the layer, bit 8 the sign, bits 11-63 the position: one
 * draw feeds all three without reusing bits. About 99% of draws end inside
 * their layer's rectangle: one number, one multiply, one compare. */
static inline double normal(struct rng *r)
{
    uint64_t u = next(r);
    unsigned i = (unsigned)(u & (ZIG_LAYERS - 1));
    double x = (double)(u >> 11) * 0x1p-53 * zig_x[i];
    if (__builtin_expect(x < zig_x[i + 1], 1))
        return with_sign(x, u);
    return normal_slow(r, u);
}

double rng_normal(struct rng *r)
{
    return normal(r);
}

/* normal() times scale, rounded to float, with the generator state in four
 * locals, spilled to *r only on the rare slow path, so the loop runs from
 * registers. Inlined into both fills, so the unscaled one keeps no
 * multiply (and x * 1.0 == x exactly anyway). */
static inline void fill(struct rng *r, float *out, size_t n, double scale)
{
    uint64_t s0 = r->s[0], s1 = r->s[1], s2 = r->s[2], s3 = r->s[3];
    for (size_t k = 0; k < n; k++) {
        uint64_t u = rotl(s1 * 5, 7) * 9;
        uint64_t t = s1 << 17;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = rotl(s3, 45);
        unsigned i = (unsigned)(u & (ZIG_LAYERS - 1));
        double x = (double)(u >> 11) * 0x1p-53 * zig_x[i];
        if (__builtin_expect(x < zig_x[i + 1], 1)) {
            out[k] = (float)(scale * with_sign(x, u));
            continue;
        }
        *r = (struct rng){{s0, s1, s2, s3}};
        out[k] = (float)(scale * normal_slow(r, u));
        s0 = r->s[0], s1 = r->s[1], s2 = r->s[2], s3 = r->s[3];
    }
    *r = (struct rng){{s0, s1, s2, s3}};
}

void rng_fill_normal(struct rng *r, float *out, size_t n)
{
    fill(r, out, n, 1.0);
}

void rng_fill_normal_scaled(struct rng *r, float *out, size_t n, double scale)
{
    fill(r, out, n, scale);
}
