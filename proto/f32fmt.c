/* f32fmt.c - shortest round-trip text for float32, in the Schubfach way.
 *
 * A finite nonzero float is v = c * 2^q. Every real in its rounding interval
 * R = [v - lo, v + hi] reads back as v (strtof rounds half to even, so R is
 * closed when c is even and open when c is odd); lo = hi = 2^(q-1), except
 * at a power of two, where the float below is twice as close (lo = 2^(q-2)).
 *
 * Choose k so that R is between 1 and 10 units of 10^k wide. Then R holds at
 * most one multiple of 10^(k+1): when it holds one, that is the shortest
 * text. Otherwise it holds at least one multiple of 10^k, and the one of
 * floor(v / 10^k), ceil(v / 10^k) that lies in R and is closer to v (even on
 * a tie) is shortest and closest.
 *
 * The scaled bounds 4 * (v or v-lo or v+hi) / 10^k are computed as integers
 * rounded to odd: the floor, with the lowest bit set when anything was cut
 * off. Rounding to odd keeps every comparison with an even integer exact, and
 * all comparisons below are against 4 * n or 4 * n + 2. The 64-bit table
 * value for 10^-k is one unit high at most; that error stays in the low 64
 * bits of the product, which are dropped. bench/f32fmt_verify.c checks the
 * result for all 2^32 bit patterns.
 *
 * Layout follows Python's repr(): plain digits when the decimal point falls
 * between 4 digits left of the first digit and 16 digits right of it (1e-4 <=
 * |x| < 1e16), a ".0" on integers; otherwise d.ddde-XX with a sign and at least
 * two exponent digits. */
#include "f32fmt.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "f32fmt_pow10.h"

/* A decimal digits * 10^exp. */
struct decimal {
    uint32_t digits;
    int exp;
};

/* floor(q * log10(2)) and floor(q * log10(2) + log10(3/4)) for the q of
 * float32 (checked exactly by scripts/gen_f32fmt_pow10.py and the tests).
 * Right shifts of negative ints are arithmetic in gcc. */
static inline int floor_log10_pow2(int q)
{
    return (q * 315653) >> 20;
}

static inline int floor_log10_pow2_3q(int q)
{
    return (q * 315653 - 131008) >> 20;
}

/* (g * cp) / 2^95 rounded to odd, from the high 64 bits of the product. */
static inline uint32_t round_to_odd(uint64_t g, uint64_t cp)
{
    uint64_t hi = (uint64_t)(((unsigned __int128)g * cp) >> 64);
    return (uint32_t)(hi >> 31) | ((hi & 0x7fffffffu) != 0);
}

static struct decimal shortest(uint32_t c, int q, bool at_pow2)
{
    uint32_t open = c & 1;
    uint64_t cb = (uint64_t)c << 2;
    uint64_t cbl = at_pow2 ? cb - 1 : cb - 2;
    uint64_t cbr = cb + 2;
    int k = at_pow2 ? floor_log10_pow2_3q(q) : floor_log10_pow2(q);
    const struct pow10 *p = &pow10_table[-k - POW10_MIN];
    /* Puts the binary point of (c << h) * g at bit 95. */
    int h = q + p->b + 95;
    uint32_t vb = round_to_odd(p->g, cb << h);
    uint32_t vbl = round_to_odd(p->g, cbl << h) + open;
    uint32_t vbr = round_to_odd(p->g, cbr << h) - open;

    uint32_t s = vb >> 2;
    uint32_t s10 = s / 10 * 10;
    bool s10_in = vbl <= s10 << 2;
    bool t10_in = (s10 + 10) << 2 <= vbr;
    if (s10_in != t10_in)
        return (struct decimal){s10_in ? s10 : s10 + 10, k};

    bool s_in = vbl <= s << 2;
    bool t_in = (s + 1) << 2 <= vbr;
    if (s_in != t_in)
        return (struct decimal){s_in ? s : s + 1, k};
    /* Both in: the closer to v, the even one on a tie. */
    uint32_t mid = (s << 2) + 2;
    bool take_s = vb < mid || (vb == mid && (s & 1) == 0);
    return (struct decimal){take_s ? s : s + 1, k};
}

static struct decimal strip_zeros(struct decimal d)
{
    while (d.digits % 10 == 0) {
        d.digits /= 10;
        d.exp++;
    }
    return d;
}

static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static int count_digits(uint32_t v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Writes the n decimal digits of v to out[0..n). */
static void write_digits(char *out, uint32_t v, int n)
{
    char *p = out + n;
    while (v >= 100) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10) {
        p -= 2;
        memcpy(p, digit_pairs + 2 * v, 2);
    } else {
        *--p = (char)('0' + v);
    }
}

/* digits[0..n) with the decimal point after `point` digits (may be <= 0 or
 * >= n). */
static size_t layout_plain(char *out, const char *digits, int n, int point)
{
    char *p = out;
    if (point <= 0) {
        memcpy(p, "0.0000", (size_t)(2 - point));
        p += 2 - point;
        memcpy(p, digits, (size_t)n);
        p += n;
    } else if (point < n) {
        memcpy(p, digits, (size_t)point);
        p += point;
        *p++ = '.';
        memcpy(p, digits + point, (size_t)(n - point));
        p += n - point;
    } else {
        memcpy(p, digits, (size_t)n);
        p += n;
        memset(p, '0', (size_t)(point - n));
        p += point - n;
        memcpy(p, ".0", 2);
        p += 2;
    }
    return (size_t)(p - out);
}

static size_t layout_scientific(char *out, const char *digits, int n, int exp10)
{
    char *p = out;
    *p++ = digits[0];
    if (n > 1) {
        *p++ = '.';
        memcpy(p, digits + 1, (size_t)(n - 1));
        p += n - 1;
    }
    *p++ = 'e';
    *p++ = exp10 < 0 ? '-' : '+';
    unsigned e = (unsigned)(exp10 < 0 ? -exp10 : exp10);
    memcpy(p, digit_pairs + 2 * e, 2); /* |exp10| <= 45 */
    return (size_t)(p + 2 - out);
}

static size_t format_decimal(char *out, struct decimal d)
{
    char digits[10];
    int n = count_digits(d.digits);
    write_digits(digits, d.digits, n);
    int point = d.exp + n;
    if (point > -4 && point <= 16)
        return layout_plain(out, digits, n, point);
    return layout_scientific(out, digits, n, point - 1);
}

size_t f32fmt(float f, char *out)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint32_t frac = bits & 0x7fffffu;
    uint32_t biased = (bits >> 23) & 0xffu;
    size_t sign = bits >> 31;

    if (biased == 0xff) {
        memcpy(out, "null", 4);
        return 4;
    }
    out[0] = '-';
    if (biased == 0 && frac == 0) {
        memcpy(out + sign, "0.0", 3);
        return sign + 3;
    }
    struct decimal d;
    if (biased == 0)
        d = shortest(frac, -149, false);
    else
        d = shortest(frac | 0x800000u, (int)biased - 150, frac == 0 && biased > 1);
    return sign + format_decimal(out + sign, strip_zeros(d));
}
