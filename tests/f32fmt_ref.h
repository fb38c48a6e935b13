/* f32fmt_ref.h - a slow, independent judge of f32fmt output, shared by
 * tests/test_f32fmt.c and bench/f32fmt_verify.c (header-only, all static).
 *
 * It does not reimplement the algorithm. For a float f and a text t it checks:
 *   syntax     t is a JSON number (RFC 8259 grammar), or "null" iff f is not
 *              finite;
 *   roundtrip  strtof(t) has the bits of f (sign of zero included); glibc's
 *              strtof is correctly rounded and defines the round trip;
 *   model      t also lies in the exact interval of reals that read back as
 *              f (f32ref_interval_of), so the model agrees with strtof on
 *              every output judged;
 *   shortest   no decimal with fewer significant digits lies in that
 *              interval. If one did, then (the interval being convex and
 *              holding t) one of the two multiples of 10^(e+1) around t
 *              would too, where t = d * 10^e with d free of trailing zeros;
 *              both are tried;
 *   closest    no other decimal with as many digits lies in the interval and
 *              closer to the exact value of f, or as close with d odd. By the
 *              same argument only d - 1 and d + 1 (and 9 * 10^(e-1) when
 *              d = 1) can, and each found inside is compared with f.
 * All comparisons are exact, in big-integer arithmetic. Candidates are
 * judged by the model rather than strtof because glibc's strtof takes
 * ~0.3-0.6 us on the long exponents that most float32 patterns have; the
 * tests check the model against strtof on random candidates as well. */
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
    F32REF_MODEL,     /* strtof and the interval model disagree on ours */
};
#define F32REF_VERDICTS 6

static inline const char *f32ref_verdict_name(enum f32ref_verdict v)
{
    static const char *const names[] = {"ok",      "syntax",  "roundtrip",
                                        "longer",  "farther", "model"};
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

/* Little-endian base-2^32 integers, enough for 2^64 * 5^47 * 2^260. */
struct f32ref_big {
    uint32_t w[24];
    int n; /* limbs in use; w[n..] are zero */
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

/* b *= 5^e, thirteen factors at a time (5^13 < 2^32). */
static inline void f32ref_big_mul_pow5(struct f32ref_big *b, int e)
{
    for (; e >= 13; e -= 13)
        f32ref_big_mul(b, 1220703125u);
    uint32_t rest = 1;
    while (e-- > 0)
        rest *= 5;
    f32ref_big_mul(b, rest);
}

static inline int f32ref_big_bitlen(const struct f32ref_big *b)
{
    for (int i = b->n - 1; i >= 0; i--)
        if (b->w[i] != 0)
            return 32 * i + 32 - __builtin_clz(b->w[i]);
    return 0;
}

static inline void f32ref_big_shl(struct f32ref_big *b, int bits)
{
    int limbs = bits / 32;
    bits %= 32;
    if (limbs > 0) {
        memmove(b->w + limbs, b->w, sizeof b->w[0] * (size_t)b->n);
        memset(b->w, 0, sizeof b->w[0] * (size_t)limbs);
        b->n += limbs;
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

/* Sign of a * 2^ea - m * 10^em, exactly (a, m > 0). 10^em = 5^em * 2^em; a
 * negative em moves 5^-em to the left side. Unequal bit lengths (with the
 * binary exponents) decide at once; otherwise the smaller exponent side is
 * shifted up and the integers compared. */
static inline int f32ref_cmp(uint64_t a, int ea, uint64_t m, int em)
{
    /* In doubles both sides are within ~1e-15 of the truth: a gap of 1e-9
     * settles it without big integers. */
    double da = ldexp((double)a, ea), dm = (double)m * exp10(em);
    if (da > dm * (1 + 1e-9))
        return 1;
    if (da < dm * (1 - 1e-9))
        return -1;
    struct f32ref_big left, right;
    f32ref_big_set(&left, a);
    f32ref_big_set(&right, m);
    f32ref_big_mul_pow5(em < 0 ? &left : &right, em < 0 ? -em : em);
    int top_left = f32ref_big_bitlen(&left) + ea;
    int top_right = f32ref_big_bitlen(&right) + em;
    if (top_left != top_right)
        return top_left < top_right ? -1 : 1;
    if (ea > em)
        f32ref_big_shl(&left, ea - em);
    else
        f32ref_big_shl(&right, em - ea);
    return f32ref_big_cmp(&left, &right);
}

/* The exact set of reals strtof reads as a finite nonzero float f (up to
 * sign): lo * 2^exp .. hi * 2^exp, endpoints included iff closed. With
 * f = c * 2^q, the ends are the midpoints to the neighbours, (2c -+ 1) *
 * 2^(q-1), except that below a power of two (not the smallest normal) the
 * neighbour is twice as close: (4c - 1) * 2^(q-2). Ties go to the even c, so
 * the ends belong to f when c is even. Above FLT_MAX the midpoint to 2^128
 * ties to 2^128 and overflows, which the same rule gives (c is odd). */
struct f32ref_interval {
    uint64_t lo, hi;
    int lo_exp, hi_exp;
    bool closed;
};

static inline struct f32ref_interval f32ref_interval_of(float f)
{
    uint32_t bits = f32ref_bits(f);
    uint32_t biased = (bits >> 23) & 0xff;
    uint64_t c = bits & 0x7fffff;
    int q = -149;
    if (biased != 0) {
        c |= 0x800000;
        q = (int)biased - 150;
    }
    struct f32ref_interval r = {2 * c - 1, 2 * c + 1, q - 1, q - 1, c % 2 == 0};
    if (c == 0x800000 && biased > 1) {
        r.lo = 4 * c - 1;
        r.lo_exp = q - 2;
    }
    return r;
}

/* Whether digits * 10^exp (digits > 0) lies in r. */
static inline bool f32ref_in(const struct f32ref_interval *r, uint64_t digits, int exp)
{
    int below_lo = f32ref_cmp(r->lo, r->lo_exp, digits, exp); /* > 0: beyond lo */
    if (below_lo > 0 || (below_lo == 0 && !r->closed))
        return false;
    int above_hi = f32ref_cmp(r->hi, r->hi_exp, digits, exp);
    return above_hi > 0 || (above_hi == 0 && r->closed);
}

static inline uint64_t f32ref_pow10(int n)
{
    uint64_t p = 1;
    while (n-- > 0)
        p *= 10;
    return p;
}

/* Whether ours, d * 10^ed, beats another candidate n * 10^en for |f|: it
 * must be strictly closer, or as close with d even. Compares |f| with the
 * midpoint (ours + other) / 2 exactly. */
static inline bool f32ref_ours_wins(float f, uint64_t d, int ed, uint64_t n, int en)
{
    uint32_t bits = f32ref_bits(f);
    uint32_t biased = (bits >> 23) & 0xff;
    uint64_t c = bits & 0x7fffff;
    int q = -149;
    if (biased != 0) {
        c |= 0x800000;
        q = (int)biased - 150;
    }
    int emin = ed < en ? ed : en;
    uint64_t ours = d * f32ref_pow10(ed - emin), other = n * f32ref_pow10(en - emin);
    int side = f32ref_cmp(2 * c, q, ours + other, emin); /* 2|f| against ours + other */
    if (side == 0)
        return d % 2 == 0;
    return ours > other ? side > 0 : side < 0;
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

    struct f32ref_interval r = f32ref_interval_of(f);
    uint64_t d = num.digits;
    int e = num.exp;
    /* strtof took ours; the model must agree, or its verdicts below mean
     * nothing. */
    if (!f32ref_in(&r, d, e))
        return F32REF_MODEL;
    if (num.ndigits > 1 && (f32ref_in(&r, d / 10, e + 1) || f32ref_in(&r, d / 10 + 1, e + 1)))
        return F32REF_LONGER;
    if (f32ref_in(&r, d + 1, e) && !f32ref_ours_wins(f, d, e, d + 1, e))
        return F32REF_FARTHER;
    if (d > 1 && f32ref_in(&r, d - 1, e) && !f32ref_ours_wins(f, d, e, d - 1, e))
        return F32REF_FARTHER;
    if (d == 1 && f32ref_in(&r, 9, e - 1) && !f32ref_ours_wins(f, d, e, 9, e - 1))
        return F32REF_FARTHER;
    return F32REF_OK;
}

#endif
