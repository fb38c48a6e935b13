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
 * Layout follows Python's repr() of a float with these digits: plain when the
 * decimal satisfies 1e-4 <= |x| < 1e16 ("0.0001", "123.5", "100.0" with ".0"
 * on integers, "0.0" and "-0.0"), otherwise d.ddde-XX with an exponent sign
 * and at least two exponent digits ("1e-05", "1.5e+16", "3.4028235e+38"). */
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

/* floor(q * log10(2)) and floor(q * log10(2) + log10(3/4)), exact for every
 * q of float32 (scripts/gen_f32fmt_pow10.py checks each one). Right shifts of
 * negative ints are arithmetic in gcc. */
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

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "f32fmt builds digit strings in little-endian registers"
#endif

/* The digits of a decimal as a string in a 16-byte register, byte i holding
 * digit i (so a plain store writes them in order), '0'-padded after n. */
struct digit_string {
    unsigned __int128 chars;
    int n;   /* significant digits, trailing zeros dropped */
    int exp; /* the value is the n digits, read as an integer, times 10^exp */
};

/* The 8 decimal digits of v < 10^8, first digit in byte 0, as values 0-9:
 * split into 4-digit, 2-digit then 1-digit lanes, dividing all lanes of a
 * word at once with multiply-shift (exact for these ranges). */
static inline uint64_t digits8(uint32_t v)
{
    uint64_t x = (v / 10000) | ((uint64_t)(v % 10000) << 32);
    uint64_t q = ((x * 10486) >> 20) & 0x0000007f0000007fu;
    x = q | ((x - q * 100) << 16);
    q = ((x * 103) >> 10) & 0x000f000f000f000fu;
    return q | ((x - q * 10) << 8);
}

static struct digit_string to_digits(struct decimal d)
{
    /* d.digits < 10 * 2^24 < 10^9: one digit in front of eight. */
    uint32_t top = d.digits / 100000000;
    unsigned __int128 raw = top | ((unsigned __int128)digits8(d.digits % 100000000) << 8);
    uint64_t lo = (uint64_t)raw;
    int lead = lo != 0 ? __builtin_ctzll(lo) / 8 : 8; /* leading zero digits */
    raw >>= 8 * lead;
    lo = (uint64_t)raw;
    /* The last nonzero byte ends the significant digits. */
    int n = (raw >> 64) != 0 ? 9 : (63 - __builtin_clzll(lo)) / 8 + 1;
    unsigned __int128 zeros = ((unsigned __int128)0x3030303030303030u << 64) | 0x3030303030303030u;
    return (struct digit_string){raw + zeros, n, d.exp + (9 - lead - n)};
}

/* The layouts store whole registers rather than exact lengths: bytes past the
 * returned length are scratch, and nothing lands past out[F32FMT_MAX - 1]. */

static inline void store16(char *out, unsigned __int128 v)
{
    memcpy(out, &v, 16);
}

static inline void store8(char *out, unsigned __int128 v)
{
    uint64_t w = (uint64_t)v;
    memcpy(out, &w, 8);
}

/* The digits with the decimal point after `point` of them, -4 < point <= 16. */
static size_t layout_plain(char *out, struct digit_string ds, int point)
{
    if (point <= 0) { /* 0.000ddd */
        memcpy(out, "0.000000", 8);
        store16(out + 2 - point, ds.chars);
        return (size_t)(2 - point + ds.n);
    }
    if (point < ds.n) { /* dd.ddd: point <= 8, at most 8 digits after it */
        store16(out, ds.chars);
        out[point] = '.';
        store8(out + point + 1, ds.chars >> (8 * point));
        return (size_t)(ds.n + 1);
    }
    store16(out, ds.chars); /* ddd000.0, zeros from the padding */
    memcpy(out + point, ".0", 2);
    return (size_t)(point + 2);
}

/* d.ddde-XX, |exp10| <= 45. */
static size_t layout_scientific(char *out, struct digit_string ds, int exp10)
{
    out[0] = (char)ds.chars;
    out[1] = '.';
    store8(out + 2, ds.chars >> 8);
    char *p = out + (ds.n > 1 ? ds.n + 1 : 1);
    memcpy(p, exp10 < 0 ? "e-" : "e+", 2);
    unsigned e = (unsigned)(exp10 < 0 ? -exp10 : exp10);
    p[2] = (char)('0' + e / 10);
    p[3] = (char)('0' + e % 10);
    return (size_t)(p + 4 - out);
}

static size_t format_decimal(char *out, struct decimal d)
{
    struct digit_string ds = to_digits(d);
    int point = ds.exp + ds.n;
    if (point > -4 && point <= 16)
        return layout_plain(out, ds, point);
    return layout_scientific(out, ds, point - 1);
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
    return sign + format_decimal(out + sign, d);
}
