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
 * The scaled bounds 4 * (v or v-lo or v+hi) / 10^k are the high words of
 * 64x64-bit products, with the binary point at bit 31 of the word. Only
 * comparisons with 4 * n and 4 * n + 2 are needed, and on these words they
 * are exact (as if the bounds were rounded to odd). The 64-bit table value
 * for 10^-k is one unit high at most; that error stays in the low 64 bits of
 * the product, which are dropped. bench/f32fmt_verify.c checks the result for
 * all 2^32 bit patterns.
 *
 * Random data makes every data-dependent branch a coin flip, so the choice
 * of digits and the layout of the common fractions ("0.0123", "-1.5") are
 * computed with masks instead of branches; rare shapes (scientific, whole
 * numbers, subnormals, powers of two) branch off.
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

/* floor(q * log10(2) + log10(3/4)), exact for every q of float32
 * (scripts/gen_f32fmt_pow10.py checks each one; scale_table holds
 * floor(q * log10(2)) for the other floats). Right shifts of negative ints
 * are arithmetic in gcc. */
static inline int floor_log10_pow2_3q(int q)
{
    return (q * 315653 - 131008) >> 20;
}

/* The high 64 bits of g * x: a scaled bound times 2^31, so 4 * n compares
 * with it as n << 33. */
static inline uint64_t mul_hi(uint64_t g, uint64_t x)
{
    return (uint64_t)(((unsigned __int128)g * x) >> 64);
}

/* Picks a when take is true, b otherwise, without a branch: the choice
 * depends on the digits of random data, which no predictor guesses. */
static inline uint32_t pick(bool take, uint32_t a, uint32_t b)
{
    uint32_t mask = 0u - (uint32_t)take;
    return (a & mask) | (b & ~mask);
}

/* The shortest decimal in the rounding interval [cbl, cb + 2] / 4 * 2^q
 * (closed when c is even), given c << 2 = cb, 10^-k ~ g and the shift h that
 * puts the binary point of (x << h) * g at bit 95. */
static inline struct decimal shortest(uint64_t cb, uint64_t cbl, uint64_t g, int h, int k)
{
    uint64_t open = (cb >> 2) & 1;
    uint64_t v = mul_hi(g, cb << h);
    /* 4 * n is in the interval when (low bound) <= n << 33 <= (high bound)
     * on these words, exactly as if the bounds were rounded to odd; open
     * bounds move in by one unit. So the integers in the interval, in units
     * of 10^k, are [lo, hi]. */
    uint64_t lo = (mul_hi(g, cbl << h) + open + ((UINT64_C(1) << 33) - 1)) >> 33;
    uint64_t hi = (mul_hi(g, (cb + 2) << h) - open) >> 33;
    uint64_t s = v >> 33;

    /* The interval is under 10 units wide: it holds at most one multiple of
     * 10, and if it holds one, that is the largest one <= hi. */
    uint32_t s10 = (uint32_t)hi / 10 * 10;
    /* Otherwise s or s + 1, whichever is in; both in: the closer to v, the
     * even one on a tie (v's fraction against one half). */
    bool tie_up = (v & ((UINT64_C(1) << 33) - 1)) + (s & 1) > UINT64_C(1) << 32;
    uint64_t up = (s < lo) | ((s + 1 <= hi) & tie_up);
    uint32_t digits = pick(s10 >= lo, s10, (uint32_t)(s + up));
    return (struct decimal){digits, k};
}

/* A power of two above the smallest normal: the float below is twice as
 * close as the one above. */
static struct decimal shortest_pow2(int q)
{
    int k = floor_log10_pow2_3q(q);
    const struct pow10 *p = &pow10_table[-k - POW10_MIN];
    uint64_t cb = UINT64_C(1) << 25;
    return shortest(cb, cb - 1, p->g, q + p->b + 95, k);
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

/* The digits as a string without leading zeros, from the first digit (0 or
 * 1) and the characters of the other eight (see last8_chars). */
static struct digit_string to_digits(uint32_t first_digit, uint64_t last8, int exp)
{
    /* Digit values, the first in byte 0; every byte of last8 is >= '0', so
     * the subtraction borrows nowhere. */
    unsigned __int128 raw = first_digit | ((unsigned __int128)(last8 - 0x3030303030303030u) << 8);
    uint64_t lo = (uint64_t)raw;
    int lead = lo != 0 ? __builtin_ctzll(lo) / 8 : 8; /* leading zero digits */
    raw >>= 8 * lead;
    lo = (uint64_t)raw;
    /* The last nonzero byte ends the significant digits. */
    int n = (raw >> 64) != 0 ? 9 : (63 - __builtin_clzll(lo)) / 8 + 1;
    unsigned __int128 zeros = ((unsigned __int128)0x3030303030303030u << 64) | 0x3030303030303030u;
    return (struct digit_string){raw + zeros, n, exp + (9 - lead - n)};
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

/* "00" to "99", two digit characters per entry in memory order. */
static const char digit_pairs[201] =
    "0001020304050607080910111213141516171819"
    "2021222324252627282930313233343536373839"
    "4041424344454647484950515253545556575859"
    "6061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static inline uint64_t pair_chars(uint32_t pair)
{
    uint16_t two;
    memcpy(&two, digit_pairs + 2 * pair, 2);
    return two;
}

/* The 9 digits of d < 2 * 10^8 as characters, first to last in memory order:
 * the first one alone (its value is 0 or 1) and the other eight in a word.
 * The quotients are independent, so each pair costs one multiply instead of
 * a chain of divisions. */
static inline uint64_t last8_chars(uint32_t d, uint32_t first_digit)
{
    uint32_t q2 = d / 100, q4 = d / 10000, q6 = d / 1000000;
    return pair_chars(q6 - first_digit * 100) | pair_chars(q4 - q6 * 100) << 16 |
           pair_chars(q2 - q4 * 100) << 32 | pair_chars(d - q2 * 100) << 48;
}

/* The plain layouts of a fraction, "0.000ddd" and "dd.ddd" with the point
 * after at most 7 digits, built in one register with no branch: which of the
 * two applies depends on the magnitude of random data.
 *
 * r holds the 9 digit characters of the decimal in bytes 7..15 (first digit
 * in byte 7), first and last are its first and last nonzero digit, point the
 * position of the decimal point in the digits without leading zeros. The
 * digits are shifted so that the point falls after byte `at`, with '0'
 * padding in front ("00000ddd" for "0.000ddd", "0dd ddd" for "dd.ddd"), then
 * the bytes before the point move down one to make room for it. */
static inline size_t layout_fraction(char *out, unsigned __int128 r, int k, int first, int last,
                                     int point)
{
    /* Bytes to shift right: drop leading zeros, or keep as many zero digits
     * as "0.000" needs. */
    int drop = first - 1 < k + 14 ? first - 1 : k + 14;
    int at = point > 1 ? point : 1;
    unsigned __int128 w = r >> (8 * drop);
    uint64_t lo = (uint64_t)w | 0x3030303030303030u;
    uint64_t hi = (uint64_t)(w >> 64) | 0x3030303030303030u;
    uint64_t before = (UINT64_C(1) << (8 * at)) - 1;
    uint64_t through = (before << 8) | 0xff;
    lo = ((lo >> 8) & before) | ((uint64_t)'.' << (8 * at)) | (lo & ~through);
    memcpy(out, &lo, 8);
    memcpy(out + 8, &hi, 8);
    return (size_t)(last - drop + 1);
}

static inline size_t format_decimal(char *out, struct decimal d)
{
    /* d.digits < 10 * 2^24 < 2 * 10^8: a digit 0 or 1 in front of eight. */
    uint32_t first_digit = d.digits >= 100000000;
    uint64_t last8 = last8_chars(d.digits, first_digit);
    uint64_t top = (uint64_t)('0' + first_digit) << 56;
    /* First and last nonzero digit in bytes 7..15, without branches on
     * the digit count (the sign bits of d - 10^8 and d - 10^7, d < 2^31).
     * Normal floats have at least 7 digits; fewer go the general way. */
    int first = 7 + (int)((d.digits - 100000000u) >> 31) + (int)((d.digits - 10000000u) >> 31);
    uint64_t zeros = last8 ^ 0x3030303030303030u;
    int last = 7 + (63 - __builtin_clzll(zeros | 1)) / 8 + (zeros != 0);
    int point = d.exp + 16 - first;
    bool fraction = (d.digits >= 1000000) & ((unsigned)(point + 3) <= 10) & (last > d.exp + 15);
    if (__builtin_expect(fraction, 1))
        return layout_fraction(out, ((unsigned __int128)last8 << 64) | top, d.exp, first, last,
                               point);
    struct digit_string ds = to_digits(first_digit, last8, d.exp);
    point = ds.exp + ds.n;
    if (point > -4 && point <= 16)
        return layout_plain(out, ds, point);
    return layout_scientific(out, ds, point - 1);
}

/* The decimal of a finite nonzero float (biased exponent below 0xff). */
static inline __attribute__((always_inline)) struct decimal decimal_of(uint32_t bits)
{
    uint32_t frac = bits & 0x7fffffu;
    uint32_t biased = (bits >> 23) & 0xffu;
    if (__builtin_expect(frac == 0 && biased > 1, 0))
        return shortest_pow2((int)biased - 150);
    /* Subnormals (biased 0) share the exponent of the smallest normals. */
    const struct scale *sc = &scale_table[biased];
    uint64_t cb = (uint64_t)(biased != 0 ? frac | 0x800000u : frac) << 2;
    return shortest(cb, cb - 2, sc->g, sc->h, sc->k);
}

/* NaN, infinities and zeros, which have no decimal to shorten. */
static inline bool is_special(uint32_t bits)
{
    return ((bits >> 23) & 0xffu) == 0xff || (bits & 0x7fffffffu) == 0;
}

static inline size_t format_special(uint32_t bits, char *out)
{
    if (((bits >> 23) & 0xffu) == 0xff) {
        memcpy(out, "null", 4);
        return 4;
    }
    size_t sign = bits >> 31;
    out[0] = '-';
    memcpy(out + sign, "0.0", 3);
    return sign + 3;
}

static inline __attribute__((always_inline)) size_t format_bits(uint32_t bits, char *out)
{
    if (is_special(bits))
        return format_special(bits, out);
    size_t sign = bits >> 31;
    out[0] = '-';
    return sign + format_decimal(out + sign, decimal_of(bits));
}

size_t f32fmt(float f, char *out)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return format_bits(bits, out);
}

/* A float that is not special, from its decimal, then a comma. */
static inline __attribute__((always_inline)) char *put_decimal(uint32_t bits, struct decimal d,
                                                               char *p)
{
    *p = '-';
    p += bits >> 31;
    p += format_decimal(p, d);
    *p = ',';
    return p + 1;
}

/* Any float, then a comma. */
static inline __attribute__((always_inline)) char *put_bits(uint32_t bits, char *p)
{
    p += format_bits(bits, p);
    *p = ',';
    return p + 1;
}

/* Two floats at a time: both decimals first, so that their independent
 * multiply chains overlap in the core (one at a time, the formatting of one
 * float stalled the next one's multiplies); only the output offset is
 * serial. About 15 -> 12 ns/float in f32fmt_bench. */
static inline __attribute__((always_inline)) char *put_pair(uint32_t a, uint32_t b, char *p)
{
    if (__builtin_expect((int)is_special(a) | (int)is_special(b), 0))
        return put_bits(b, put_bits(a, p));
    struct decimal da = decimal_of(a), db = decimal_of(b);
    return put_decimal(b, db, put_decimal(a, da, p));
}

size_t f32fmt_array(const float *v, size_t n, char *out)
{
    char *p = out;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        uint32_t bits[2];
        memcpy(bits, v + i, sizeof bits);
        p = put_pair(bits[0], bits[1], p);
    }
    if (i < n) {
        uint32_t bits;
        memcpy(&bits, v + i, sizeof bits);
        p = put_bits(bits, p);
    }
    return (size_t)(p - out) - (n > 0);
}
