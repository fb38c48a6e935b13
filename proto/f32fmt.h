/* f32fmt.h - shortest round-trip text for float32.
 *
 * f32fmt writes the shortest decimal that strtof() reads back to the
 * identical float (ties broken toward the value closest to the exact
 * binary value), in JSON-compatible form: "-0.0" style signs kept,
 * plain digits for moderate exponents ("0.001", "123.5", "1e+21" style
 * scientific otherwise). NaN and infinities are not JSON: the writer emits
 * "null" for them, and callers avoid producing them.
 * Moderate means 1e-4 <= |x| < 1e16, Python's repr() rule: "100.0", "0.0001",
 * "-0.0", "1e-05", "1.5e+16", "3.4028235e+38" (at most 19 characters). */
#ifndef PROTO_F32FMT_H
#define PROTO_F32FMT_H

#include <stddef.h>

/* Longest output, including a terminating NUL. */
#define F32FMT_MAX 24

/* Writes the text for f to out (at least F32FMT_MAX bytes) and returns its
 * length (no NUL is written; bytes of out past the length may be
 * overwritten). Thread-safe, no allocation. */
size_t f32fmt(float f, char *out);

/* Writes the n floats as f32fmt text separated by commas (no brackets, no
 * spaces) to out, which must hold at least n * F32FMT_MAX bytes, and returns
 * the length (0 for n == 0; bytes of out past the length may be
 * overwritten). The same text as calling f32fmt per float, a little faster:
 * one call for a whole row. Thread-safe, no allocation. */
size_t f32fmt_array(const float *v, size_t n, char *out);

#endif
