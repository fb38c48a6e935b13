/* f32fmt_ref.h - a slow, independent judge of f32fmt output, shared by
 * tests/test_f32fmt.c and bench/f32fmt_verify.c (header-only, all static).
 *
 * It does not reimplement the algorithm. For a float f and a text t it checks:
 *   syntax     t is a JSON number (RFC 8259 grammar), or "null" iff f is not
 *              finite;
 *   roundtrip  strtof(t) has the bits of f (sign of zero included);
 *   shortest   no decimal with fewer significant digits reads back as f.
 *              If one did, then (the set reading back as f being an interval
 *              holding t) one of the two multiples of 10^(e+1) around t would
 *              too, where t = d * 10^e with d free of trailing zeros; both
 *              are tried with strtof;
 *   closest    no other decimal with as many digits reads back as f and lies
 *              closer to the exact value of f, or equally close with t's
 *              last digit odd. By the same interval argument only d - 1 and
 *              d + 1 (and 9 * 10^(e-1) when d = 1) can, so each that reads
 *              back is compared with f exactly in big-integer arithmetic.
 * strtof is glibc's correctly rounded parser and the definition of the
 * round trip. */
#ifndef TESTS_F32FMT_REF_H
#define TESTS_F32FMT_REF_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum f32ref_verdict {
    F32REF_OK,
    F32REF_SYNTAX,    /* not a JSON number, or null for a finite float */
    F32REF_ROUNDTRIP, /* strtof reads back other bits */
    F32REF_LONGER,    /* a shorter decimal reads back too */
    F32REF_FARTHER,   /* an equally short decimal is closer (or a tie lost) */
};

static inline const char *f32ref_verdict_name(enum f32ref_verdict v)
{
    static const char *const names[] = {"ok", "syntax", "roundtrip", "longer", "farther"};
    return names[v];
}

/* A JSON number split into sign, significant digits (no trailing zeros, 0
 * for zero) and decimal exponent: value = digits * 10^exp. */
struct f32ref_number {
    bool neg;
    uint64_t digits;
    int ndigits;
    int exp;
};

static inline bool f32ref_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Leading zeros carry no significant digits. */
static inline void f32ref_take_digit(struct f32ref_number *num, char c)
{
    if (num->digits == 0 && c == '0')
        return;
    num->digits = num->digits * 10 + (uint64_t)(c - '0');
    num->ndigits++;
}

/* Parses s[0..n) as a JSON number with at most 19 significant digits;
 * false on any deviation from the grammar. */
static inline bool f32ref_parse(const char *s, size_t n, struct f32ref_number *num)
{
    size_t i = 0;
    int frac_digits = 0;
    memset(num, 0, sizeof *num);
    if (i < n && s[i] == '-') {
        num->neg = true;
        i++;
    }
    if (i >= n || !f32ref_is_digit(s[i]))
        return false;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && f32ref_is_digit(s[i]))
            f32ref_take_digit(num, s[i++]);
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !f32ref_is_digit(s[i]))
            return false;
        while (i < n && f32ref_is_digit(s[i])) {
            f32ref_take_digit(num, s[i++]);
            frac_digits++;
        }
    }
    int exp = 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        bool eneg = false;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            eneg = s[i++] == '-';
        if (i >= n || !f32ref_is_digit(s[i]))
            return false;
        while (i < n && f32ref_is_digit(s[i])) {
            if (exp > 10000)
                return false;
            exp = exp * 10 + (s[i++] - '0');
        }
        if (eneg)
            exp = -exp;
    }
    if (i != n || num->ndigits > 19)
        return false;
    num->exp = exp - frac_digits;
    while (num->digits != 0 && num->digits % 10 == 0) {
        num->digits /= 10;
        num->exp++;
        num->ndigits--;
    }
    if (num->digits == 0)
        num->ndigits = 0;
    return true;
}

static inline uint32_t f32ref_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* strtof of "[-]digits e exp" compared with f's bits. */
static inline bool f32ref_reads_back(float f, bool neg, uint64_t digits, int exp)
{
    char text[48];
    char tmp[24];
    char *p = text;
    int n = 0;
    if (neg)
        *p++ = '-';
    do {
        tmp[n++] = (char)('0' + digits % 10);
        digits /= 10;
    } while (digits != 0);
    while (n > 0)
        *p++ = tmp[--n];
    *p++ = 'e';
    if (exp < 0) {
        *p++ = '-';
        exp = -exp;
    }
    do {
        tmp[n++] = (char)('0' + exp % 10);
        exp /= 10;
    } while (exp != 0);
    while (n > 0)
        *p++ = tmp[--n];
    *p = '\0';
    return f32ref_bits(strtof(text, NULL)) == f32ref_bits(f);
}

/* Little-endian base-2^32 integers, big enough for 2^25 * 5^46 * 2^160. */
struct f32ref_big {
    uint32_t w[16];
    int n;
};

static inline void f32ref_big_set(struct f32ref_big *b, uint64_t v)
{
    memset(b, 0, sizeof *b);
    b->w[0] = (uint32_t)v;
    b->w[1] = (uint32_t)(v >> 32);
    b->n = 2;
}

static inline void f32ref_big_mul(struct f32ref_big *b, uint32_t m)
{
    uint64_t carry = 0;
    for (int i = 0; i < b->n; i++) {
        uint64_t t = (uint64_t)b->w[i] * m + carry;
        b->w[i] = (uint32_t)t;
        carry = t >> 32;
    }
    if (carry != 0)
        b->w[b->n++] = (uint32_t)carry;
}

static inline void f32ref_big_shl(struct f32ref_big *b, int bits)
{
    for (; bits >= 32; bits -= 32) {
        memmove(b->w + 1, b->w, sizeof b->w[0] * (size_t)b->n);
        b->w[0] = 0;
        b->n++;
    }
    if (bits == 0)
        return;
    uint32_t carry = 0;
    for (int i = 0; i < b->n; i++) {
        uint32_t w = b->w[i];
        b->w[i] = (w << bits) | carry;
        carry = w >> (32 - bits);
    }
    if (carry != 0)
        b->w[b->n++] = carry;
}

static inline int f32ref_big_cmp(const struct f32ref_big *a, const struct f32ref_big *b)
{
    int n = a->n > b->n ? a->n : b->n;
    for (int i = n - 1; i >= 0; i--) {
        uint32_t x = i < a->n ? a->w[i] : 0;
        uint32_t y = i < b->n ? b->w[i] : 0;
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* Sign of |f| - m * 10^e / 2, exactly (f finite and nonzero). */
static inline int f32ref_cmp_half_decimal(float f, uint64_t m, int e)
{
    uint32_t bits = f32ref_bits(f);
    uint32_t biased = (bits >> 23) & 0xff;
    uint64_t c = bits & 0x7fffff;
    int q = -149;
    if (biased != 0) {
        c |= 0x800000;
        q = (int)biased - 150;
    }
    /* 2c * 2^q against m * 5^e * 2^e; a negative e moves 5^-e to the left. */
    struct f32ref_big left, right;
    f32ref_big_set(&left, 2 * c);
    f32ref_big_set(&right, m);
    for (int i = 0; i < (e < 0 ? -e : e); i++)
        f32ref_big_mul(e < 0 ? &left : &right, 5);
    if (q > e)
        f32ref_big_shl(&left, q - e);
    else
        f32ref_big_shl(&right, e - q);
    return f32ref_big_cmp(&left, &right);
}

static inline uint64_t f32ref_pow10(int n)
{
    uint64_t p = 1;
    while (n-- > 0)
        p *= 10;
    return p;
}

/* Whether the candidate n * 10^en (reading back as f) loses to ours,
 * d * 10^ed: ours must be strictly closer to f, or as close with d even. */
static inline bool f32ref_ours_wins(float f, uint64_t d, int ed, uint64_t n, int en)
{
    int emin = ed < en ? ed : en;
    uint64_t mid2 = d * f32ref_pow10(ed - emin) + n * f32ref_pow10(en - emin);
    int side = f32ref_cmp_half_decimal(f, mid2, emin); /* |f| against the midpoint */
    bool ours_above = d * f32ref_pow10(ed - emin) > n * f32ref_pow10(en - emin);
    if (side == 0)
        return d % 2 == 0;
    return ours_above ? side > 0 : side < 0;
}

/* Judges the text s[0..n) that f32fmt wrote for f. */
static inline enum f32ref_verdict f32ref_check(float f, const char *s, size_t n)
{
    if (!isfinite(f))
        return n == 4 && memcmp(s, "null", 4) == 0 ? F32REF_OK : F32REF_SYNTAX;
    struct f32ref_number num;
    char text[64];
    if (n >= sizeof text || !f32ref_parse(s, n, &num))
        return F32REF_SYNTAX;
    memcpy(text, s, n);
    text[n] = '\0';
    if (f32ref_bits(strtof(text, NULL)) != f32ref_bits(f))
        return F32REF_ROUNDTRIP;
    if (num.digits == 0)
        return F32REF_OK;

    uint64_t d = num.digits;
    int e = num.exp;
    if (num.ndigits > 1 && (f32ref_reads_back(f, num.neg, d / 10, e + 1) ||
                            f32ref_reads_back(f, num.neg, d / 10 + 1, e + 1)))
        return F32REF_LONGER;

    if (f32ref_reads_back(f, num.neg, d + 1, e) && !f32ref_ours_wins(f, d, e, d + 1, e))
        return F32REF_FARTHER;
    if (d > 1 && f32ref_reads_back(f, num.neg, d - 1, e) && !f32ref_ours_wins(f, d, e, d - 1, e))
        return F32REF_FARTHER;
    if (d == 1 && f32ref_reads_back(f, num.neg, 9, e - 1) && !f32ref_ours_wins(f, d, e, 9, e - 1))
        return F32REF_FARTHER;
    return F32REF_OK;
}

#endif
