/* rng.h - a small seeded generator for table initialization: xoshiro256**
 * seeded through splitmix64, with N(0, 1) draws by a 256-layer ziggurat.
 * Deterministic per seed on every platform; not torch's stream. One state
 * per thread: nothing here is shared. */
#ifndef CORE_RNG_H
#define CORE_RNG_H

#include <stddef.h>
#include <stdint.h>

struct rng {
    uint64_t s[4];
};

/* Seeds *r from seed and a stream number, so independent blocks of a table
 * (filled by different threads) get independent, reproducible streams. */
void rng_seed(struct rng *r, uint64_t seed, uint64_t stream);

/* Returns 64 uniformly random bits. */
uint64_t rng_next(struct rng *r);

/* Returns a uniform double in [0, 1) with 53 random bits. */
double rng_uniform(struct rng *r);

/* Returns a standard normal draw. */
double rng_normal(struct rng *r);

/* Writes n standard normal draws, rounded to float, to out: the same values
 * as n calls of rng_normal, with the state kept in registers. */
void rng_fill_normal(struct rng *r, float *out, size_t n);

/* Writes (float)(scale * rng_normal(r)) n times to out: the same values as
 * that loop, bit for bit (the product is taken in double, as there). */
void rng_fill_normal_scaled(struct rng *r, float *out, size_t n, double scale);

#endif
