/* keymap.c - int64 key -> row for keyed tables; see keymap.h. */
#include "keymap.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "matrix.h"

#define NIL UINT32_MAX

struct keymap {
    int64_t capacity;
    uint32_t nslots;
    unsigned rowbits;           /* low bits of a slot: row + 1 */
    uint32_t rowmask;
    unsigned distbits;          /* then the distance from the home slot */
    uint32_t distmax;           /* (saturated: this or more) */
    unsigned tagshift;          /* then the tag, up to bit 31 */
    uint32_t tagmask;
    _Atomic uint32_t *slots;    /* 0 = empty */
    _Atomic int64_t *keys;      /* per row */
    _Atomic uint32_t *wsec;     /* per row: second of the last write, rounded up */
    /* the write order (KEYMAP_ORDER), see "the write order" below */
    uint8_t *stamps;            /* per row, swidth bytes; stamp_free for a free row */
    unsigned swidth;            /* 3 or 4; 0 without the order */
    uint32_t stamp_free;        /* the width's all-ones */
    uint32_t next_stamp;        /* the next write's; <= stamp_free */
    uint64_t *old;              /* (stamp << 32 | row) of the oldest rows, ascending */
    size_t old_cap, old_head, old_len;
    bool old_all;               /* old[] holds every used row: appended to */
    uint32_t *hist;             /* old_refill's histogram, nbuckets */
    unsigned nbuckets;
    uint64_t *free_bits;        /* bit set = row free */
    uint64_t *free_sum;         /* bit w set = free_bits[w] != 0 */
    size_t nwords, nsum;
    size_t sum_low;             /* no free_sum word below this is nonzero */
    _Atomic int64_t used;
    _Atomic uint32_t seq;       /* odd while slots change */
    _Atomic uint64_t evictions;
    uint64_t clock_ms;
};

/* splitmix64's finalizer: keys from databases are often sequential. */
static inline uint64_t mix(int64_t key)
{
    uint64_t z = (uint64_t)key;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint32_t home_of(const struct keymap *m, uint64_t h)
{
    return (uint32_t)(((h >> 32) * (uint64_t)m->nslots) >> 32);
}

/* The tag bits of a slot for hash h (zero when the row needs every bit). */
static inline uint32_t tag_of(const struct keymap *m, uint64_t h)
{
    return m->tagshift >= 32 ? 0 : ((uint32_t)h << m->tagshift);
}

/* The slot of row at slot i, home slot home, for hash h. */
static inline uint32_t slot_of(const struct keymap *m, uint64_t h, uint32_t i, uint32_t home,
                               int64_t row)
{
    uint32_t d = i >= home ? i - home : i + m->nslots - home;
    d = d < m->distmax ? d : m->distmax;
    return tag_of(m, h) | d << m->rowbits | (uint32_t)(row + 1);
}

static inline uint32_t next_slot(const struct keymap *m, uint32_t i)
{
    return i + 1 == m->nslots ? 0 : i + 1;
}

/* Rows a map with a 3-byte stamp may have: after a renumbering the stamps
 * of the used rows are 0..used-1, so at least 2^24 - 1 - 2^22 writes of a
 * key come before the next. */
#define STAMP3_MAX_CAPACITY (1 << 22)

static bool order_alloc(struct keymap *m)
{
    size_t c = (size_t)m->capacity;
    m->swidth = c <= STAMP3_MAX_CAPACITY ? 3 : 4;
    m->stamp_free = m->swidth == 3 ? 0xffffffu : UINT32_MAX;
    m->next_stamp = 0;
    /* the oldest 1/128 of the rows (at least 64): two scans of the
     * stamps, O(capacity), refill it, once per half that many evictions
     * at most */
    m->old_cap = c / 128 > 64 ? c / 128 : (c < 64 ? c : 64);
    m->old_head = m->old_len = 0;
    m->old_all = true; /* every used row (none) */
    m->nbuckets = c >= 65536 ? 4096 : 256;
    m->stamps = matrix_zalloc(c * m->swidth + 1);
    m->old = malloc((2 * m->old_cap + 1) * sizeof *m->old); /* and a sort's room */
    m->hist = malloc(m->nbuckets * sizeof *m->hist);
    if (m->stamps == NULL || m->old == NULL || m->hist == NULL)
        return false;
    memset(m->stamps, 0xff, c * m->swidth + 1); /* every row free */
    return true;
}

static void order_free(struct keymap *m)
{
    matrix_zfree(m->stamps, (size_t)m->capacity * m->swidth + 1);
    free(m->old);
    free(m->hist);
    m->stamps = NULL;
    m->old = NULL;
    m->hist = NULL;
    m->swidth = 0;
    m->old_cap = m->old_head = m->old_len = 0;
}

int keymap_new(struct keymap **out, int64_t capacity, unsigned keep)
{
    *out = NULL;
    if (capacity < 1 || capacity > KEYMAP_MAX_CAPACITY)
        return CORE_EINVAL;
    struct keymap *m = calloc(1, sizeof *m);
    if (m == NULL)
        return CORE_ENOMEM;
    size_t c = (size_t)capacity;
    m->capacity = capacity;
    m->nslots = (uint32_t)(c + c / 6 + 1); /* load <= 6/7 */
    m->rowbits = 64u - (unsigned)__builtin_clzll((unsigned long long)c);
    m->rowmask = m->rowbits >= 32 ? UINT32_MAX : ((1u << m->rowbits) - 1u);
    /* of the bits left, up to 4 for the distance (a deletion's shift then
     * finds an entry's home without reading its key), the rest for the tag */
    unsigned spare = 32u - m->rowbits;
    m->distbits = spare / 2 < 4 ? spare / 2 : 4;
    m->distmax = (1u << m->distbits) - 1u;
    m->tagshift = m->rowbits + m->distbits;
    m->tagmask = m->tagshift >= 32 ? 0 : ~((1u << m->tagshift) - 1u);
    m->nwords = (c + 63) / 64;
    m->nsum = (m->nwords + 63) / 64;
    /* the arrays probed at random get huge pages (a lookup's slot and key
     * would otherwise cost a page walk each) */
    m->slots = matrix_zalloc((size_t)m->nslots * sizeof *m->slots);
    m->keys = matrix_zalloc(c * sizeof *m->keys);
    bool order = keep & KEYMAP_ORDER, times = keep & KEYMAP_TIMES;
    if (times)
        m->wsec = matrix_zalloc(c * sizeof *m->wsec);
    m->free_bits = calloc(m->nwords, sizeof *m->free_bits);
    m->free_sum = calloc(m->nsum, sizeof *m->free_sum);
    if (!m->slots || !m->keys || (times && !m->wsec) || (order && !order_alloc(m)) ||
        !m->free_bits || !m->free_sum) {
        keymap_free(m);
        return CORE_ENOMEM;
    }
    for (size_t r = 0; r < c; r++) {
        atomic_init(&m->keys[r], KEYMAP_NO_KEY);
        m->free_bits[r / 64] |= 1ull << (r % 64);
    }
    for (size_t w = 0; w < m->nwords; w++)
        m->free_sum[w / 64] |= 1ull << (w % 64);
    *out = m;
    return CORE_OK;
}

void keymap_keep(struct keymap *m, unsigned keep)
{
    size_t c = (size_t)m->capacity;
    if (!(keep & KEYMAP_TIMES)) {
        matrix_zfree((void *)m->wsec, c * sizeof *m->wsec);
        m->wsec = NULL;
    }
    if (!(keep & KEYMAP_ORDER))
        order_free(m);
}

void keymap_free(struct keymap *m)
{
    if (m == NULL)
        return;
    size_t c = (size_t)m->capacity;
    keymap_keep(m, 0);
    matrix_zfree((void *)m->slots, (size_t)m->nslots * sizeof *m->slots);
    matrix_zfree((void *)m->keys, c * sizeof *m->keys);
    free(m->free_bits);
    free(m->free_sum);
    free(m);
}

int64_t keymap_capacity(const struct keymap *m)
{
    return m->capacity;
}

int64_t keymap_used(const struct keymap *m)
{
    return atomic_load_explicit(&m->used, memory_order_relaxed);
}

void keymap_parts(const struct keymap *m, struct keymap_parts *p)
{
    size_t c = (size_t)m->capacity;
    p->index = (size_t)m->nslots * sizeof *m->slots;
    p->keys = c * sizeof *m->keys;
    p->order = m->stamps != NULL ? c * m->swidth + 1 + (2 * m->old_cap + 1) * sizeof *m->old +
                                       m->nbuckets * sizeof *m->hist
                                 : 0;
    p->times = m->wsec != NULL ? c * sizeof *m->wsec : 0;
    p->other = sizeof *m + (m->nwords + m->nsum) * sizeof(uint64_t);
}

size_t keymap_bytes(const struct keymap *m)
{
    struct keymap_parts p;
    keymap_parts(m, &p);
    return p.index + p.keys + p.order + p.times + p.other;
}

/* ---- probing ---- */

/* The slot holding key, or the empty slot where the probe ended (*hit
 * false). Relaxed loads: exact for the writer, a candidate for readers. */
static uint32_t probe(const struct keymap *m, int64_t key, bool *hit)
{
    uint64_t h = mix(key);
    uint32_t tag = tag_of(m, h), i = home_of(m, h);
    for (uint32_t steps = 0; steps < m->nslots; steps++, i = next_slot(m, i)) {
        uint32_t s = atomic_load_explicit(&m->slots[i], memory_order_relaxed);
        if (s == 0)
            break;
        if ((s & m->tagmask) != tag)
            continue;
        int64_t row = (int64_t)(s & m->rowmask) - 1;
        if (atomic_load_explicit(&m->keys[row], memory_order_relaxed) == key) {
            *hit = true;
            return i;
        }
    }
    *hit = false;
    return i;
}

static int64_t row_in(const struct keymap *m, uint32_t slot)
{
    uint32_t s = atomic_load_explicit(&m->slots[slot], memory_order_relaxed);
    return (int64_t)(s & m->rowmask) - 1;
}

int64_t keymap_find(const struct keymap *m, int64_t key)
{
    bool hit;
    uint32_t i = probe(m, key, &hit);
    return hit ? row_in(m, i) : -1;
}

int64_t keymap_find_reader(const struct keymap *m, int64_t key)
{
    for (;;) {
        uint32_t s = atomic_load_explicit(&m->seq, memory_order_acquire);
        if (s & 1u)
            continue;
        bool hit;
        uint32_t i = probe(m, key, &hit);
        int64_t row = hit ? row_in(m, i) : -1;
        if (row >= 0)
            return row; /* validated by the caller */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&m->seq, memory_order_relaxed) == s)
            return -1;
    }
}

int64_t keymap_candidate(const struct keymap *m, int64_t key)
{
    uint64_t h = mix(key);
    uint32_t tag = tag_of(m, h), i = home_of(m, h);
    for (uint32_t steps = 0; steps < m->nslots; steps++, i = next_slot(m, i)) {
        uint32_t s = atomic_load_explicit(&m->slots[i], memory_order_relaxed);
        if (s == 0)
            return -1;
        if ((s & m->tagmask) == tag)
            return (int64_t)(s & m->rowmask) - 1;
    }
    return -1;
}

void keymap_prefetch(const struct keymap *m, int64_t key)
{
    __builtin_prefetch((const void *)&m->slots[home_of(m, mix(key))], 0, 3);
}

void keymap_prefetch_row(const struct keymap *m, int64_t row, bool with_time)
{
    __builtin_prefetch((const void *)&m->keys[row], 0, 3);
    if (with_time && m->wsec != NULL)
        __builtin_prefetch((const void *)&m->wsec[row], 0, 3);
}

int64_t keymap_key_of(const struct keymap *m, int64_t row)
{
    return atomic_load_explicit(&m->keys[row], memory_order_relaxed);
}

static uint32_t second_of(uint64_t time_ms)
{
    uint64_t s = (time_ms + 999) / 1000;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

bool keymap_expired(const struct keymap *m, int64_t row, uint32_t ttl_seconds, uint64_t now_ms)
{
    if (ttl_seconds == 0 || m->wsec == NULL)
        return false;
    uint64_t w = atomic_load_explicit(&m->wsec[row], memory_order_relaxed);
    return now_ms >= (w + ttl_seconds) * 1000u;
}

uint64_t keymap_evictions(const struct keymap *m)
{
    return atomic_load_explicit(&m->evictions, memory_order_relaxed);
}

/* ---- slot changes, inside the seq bracket ---- */

static void slots_begin(struct keymap *m)
{
    uint32_t s = atomic_load_explicit(&m->seq, memory_order_relaxed);
    atomic_store_explicit(&m->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static void slots_end(struct keymap *m)
{
    uint32_t s = atomic_load_explicit(&m->seq, memory_order_relaxed);
    atomic_store_explicit(&m->seq, s + 1, memory_order_release);
}

static void slot_store(struct keymap *m, uint32_t i, uint32_t v)
{
    atomic_store_explicit(&m->slots[i], v, memory_order_relaxed);
}

/* True when h lies cyclically in (i, j]: an entry at j whose home is there
 * cannot move back to i. */
static bool between(uint32_t i, uint32_t h, uint32_t j)
{
    return i <= j ? (i < h && h <= j) : (i < h || h <= j);
}

/* Empties slot i and shifts the entries after it back (no tombstones). An
 * entry's home comes from its distance, or from its key when that is
 * saturated. */
static void slot_delete(struct keymap *m, uint32_t i)
{
    for (uint32_t j = next_slot(m, i);; j = next_slot(m, j)) {
        uint32_t s = atomic_load_explicit(&m->slots[j], memory_order_relaxed);
        if (s == 0)
            break;
        uint32_t d = (s >> m->rowbits) & m->distmax, h;
        if (d < m->distmax) {
            h = j >= d ? j - d : j + m->nslots - d;
        } else {
            int64_t row = (int64_t)(s & m->rowmask) - 1;
            h = home_of(m, mix(atomic_load_explicit(&m->keys[row], memory_order_relaxed)));
        }
        if (between(i, h, j))
            continue;
        /* moved back by (j - i): its distance shrinks as much */
        uint32_t back = j >= i ? j - i : j + m->nslots - i;
        uint32_t nd;
        if (d < m->distmax) {
            nd = d - back;
        } else {
            uint32_t full = i >= h ? i - h : i + m->nslots - h;
            nd = full < m->distmax ? full : m->distmax;
        }
        slot_store(m, i, (s & ~(m->distmax << m->rowbits)) | nd << m->rowbits);
        i = j;
    }
    slot_store(m, i, 0);
}

/* ---- free rows ---- */

static void mark_free(struct keymap *m, int64_t row, bool free_now)
{
    size_t w = (size_t)row / 64;
    uint64_t bit = 1ull << ((size_t)row % 64);
    if (free_now) {
        m->free_bits[w] |= bit;
        m->free_sum[w / 64] |= 1ull << (w % 64);
        if (w / 64 < m->sum_low)
            m->sum_low = w / 64;
    } else {
        m->free_bits[w] &= ~bit;
        if (m->free_bits[w] == 0)
            m->free_sum[w / 64] &= ~(1ull << (w % 64));
    }
}

int64_t keymap_lowest_free(const struct keymap *m)
{
    for (size_t s = m->sum_low; s < m->nsum; s++) {
        if (m->free_sum[s] == 0)
            continue;
        size_t w = s * 64 + (size_t)__builtin_ctzll(m->free_sum[s]);
        return (int64_t)(w * 64 + (size_t)__builtin_ctzll(m->free_bits[w]));
    }
    return -1;
}

/* ---- the write order ----
 *
 * Every write of a key gives its row the next stamp, so the least recently
 * written key is the used row of the lowest stamp. Stamps take 3 bytes
 * (4 above STAMP3_MAX_CAPACITY rows) where a list would take 8; when they
 * run out, the used rows are renumbered 0..used-1 in the same order (with
 * a sort, or in place when there is no memory for one: a write never
 * fails for it).
 *
 * old[] holds the used rows whose stamps were below some threshold T at its
 * last refill, ascending. An entry whose row's stamp has changed since (the
 * row was written, freed or reused) is stale; the first entry that is not
 * is the least recently written key: every used row outside old[] was
 * either written after the refill (a higher stamp than any entry) or has
 * not changed and had a stamp of at least T. While old[] holds every used
 * row (old_all: a map with few keys), each new stamp is appended instead,
 * so such a map never scans. */

/* The stamp at p for width 3 or 4 (a constant where inlined); the stamps
 * array has a byte of padding, so a 3-byte stamp is read with one load. */
static inline uint32_t stamp_load(const uint8_t *p, unsigned width)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return width == 3 ? v & 0xffffffu : v;
#else
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
    return width == 3 ? v : v | (uint32_t)p[3] << 24;
#endif
}

static inline uint32_t stamp_get(const struct keymap *m, size_t r)
{
    return stamp_load(m->stamps + r * m->swidth, m->swidth);
}

static inline void stamp_set(struct keymap *m, size_t r, uint32_t v)
{
    uint8_t *p = m->stamps + r * m->swidth;
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    if (m->swidth == 4)
        p[3] = (uint8_t)(v >> 24);
}

/* The used rows of free_bits' word w, as bits. */
static inline uint64_t used_bits(const struct keymap *m, size_t w)
{
    uint64_t u = ~m->free_bits[w];
    size_t tail = (size_t)m->capacity - w * 64;
    return tail >= 64 ? u : u & ((1ull << tail) - 1);
}

/* The used rows in ascending order, a free_bits word at a time:
 *   for (struct used_rows it = used_first(m); used_next(m, &it, &r);) */
struct used_rows {
    size_t w;   /* the word */
    uint64_t u; /* its used rows not given out yet */
};

static inline struct used_rows used_first(const struct keymap *m)
{
    return (struct used_rows){.w = 0, .u = used_bits(m, 0)};
}

static inline bool used_next(const struct keymap *m, struct used_rows *it, size_t *row)
{
    while (it->u == 0) {
        if (++it->w >= m->nwords)
            return false;
        it->u = used_bits(m, it->w);
    }
    *row = it->w * 64 + (size_t)__builtin_ctzll(it->u);
    it->u &= it->u - 1;
    return true;
}

/* Sorts a[0..n) of (stamp << 32 | row) by stamp (bytes of it), least
 * significant byte first, using tmp[n]; returns the sorted array. */
static uint64_t *sort_by_stamp(uint64_t *a, uint64_t *tmp, size_t n, unsigned bytes)
{
    for (unsigned d = 0; d < bytes; d++) {
        size_t count[256] = {0};
        unsigned sh = 32 + 8 * d;
        for (size_t i = 0; i < n; i++)
            count[(a[i] >> sh) & 0xff]++;
        for (size_t i = 0, sum = 0; i < 256; i++) {
            size_t k = count[i];
            count[i] = sum;
            sum += k;
        }
        for (size_t i = 0; i < n; i++)
            tmp[count[(a[i] >> sh) & 0xff]++] = a[i];
        uint64_t *x = a;
        a = tmp;
        tmp = x;
    }
    return a;
}

/* Counts the used rows' stamps in [lo, hi) into hist by (stamp - lo) >>
 * shift. */
static inline void stamp_hist(const struct keymap *m, unsigned width, uint64_t lo,
                              uint64_t hi, unsigned shift)
{
    size_t r;
    for (struct used_rows it = used_first(m); used_next(m, &it, &r);) {
        uint64_t st = stamp_load(m->stamps + r * width, width);
        if (st - lo < hi - lo)
            m->hist[(st - lo) >> shift]++;
    }
}

/* Puts (stamp << 32 | row) of the used rows with a stamp below t into out,
 * which has room for them and one more; their number. */
static inline size_t stamp_collect(const struct keymap *m, unsigned width, uint64_t t,
                                   uint64_t *out)
{
    size_t n = 0, r;
    for (struct used_rows it = used_first(m); used_next(m, &it, &r);) {
        uint64_t st = stamp_load(m->stamps + r * width, width);
        out[n] = st << 32 | r;
        n += st < t;
    }
    return n;
}

/* Refills old[] with the used rows of the lowest stamps: between half of
 * min(old_cap, used) and all of it, all those below a threshold that a
 * histogram of the stamps finds (narrowed down inside a bucket when the
 * buckets below it hold too few), then sorted. Usually two passes over the
 * used rows' stamps: one histogram, one collect. */
static void old_refill(struct keymap *m)
{
    size_t used = (size_t)keymap_used(m);
    size_t want = used < m->old_cap ? used : m->old_cap;
    m->old_head = m->old_len = 0;
    m->old_all = used == 0;
    if (want == 0)
        return;
    uint64_t lo = 0, hi = m->next_stamp, t;
    size_t below = 0; /* used rows with a stamp under lo */
    for (;;) {
        unsigned shift = 0;
        while (((uint64_t)m->nbuckets << shift) < hi - lo)
            shift++;
        memset(m->hist, 0, m->nbuckets * sizeof *m->hist);
        if (m->swidth == 3)
            stamp_hist(m, 3, lo, hi, shift);
        else
            stamp_hist(m, 4, lo, hi, shift);
        size_t acc = below;
        unsigned b = 0;
        while (b < m->nbuckets && acc + m->hist[b] <= want)
            acc += m->hist[b++];
        uint64_t end = lo + ((uint64_t)b << shift);
        if (b == m->nbuckets || acc >= (want + 1) / 2 || shift == 0) {
            t = end < hi ? end : hi; /* (shift 0: acc == want) */
            break;
        }
        /* too few below bucket b, which holds too many: look inside it */
        below = acc;
        lo = end;
        end = lo + ((uint64_t)1 << shift);
        hi = end < hi ? end : hi;
    }
    /* collected into the sort's half of old[] (the last entry written may
     * be one past the rows taken, so room for want + 1) */
    uint64_t *tmp = m->old + m->old_cap;
    size_t n = m->swidth == 3 ? stamp_collect(m, 3, t, tmp) : stamp_collect(m, 4, t, tmp);
    assert(n >= 1 && n <= want);
    uint64_t *sorted = sort_by_stamp(tmp, m->old, n, m->swidth);
    if (sorted != m->old)
        memcpy(m->old, sorted, n * sizeof *m->old);
    m->old_len = n;
    m->old_all = n == used; /* then stamp_newest keeps it whole */
}

/* Drops old[]'s stale entries; stops keeping it whole when that frees less
 * than a quarter of it (appends stay amortized O(1)). */
static void old_compact(struct keymap *m)
{
    size_t k = 0;
    for (size_t i = m->old_head; i < m->old_len; i++) {
        uint64_t e = m->old[i];
        if (stamp_get(m, (uint32_t)e) == e >> 32)
            m->old[k++] = e;
    }
    m->old_head = 0;
    m->old_len = k;
    if (k > m->old_cap - m->old_cap / 4)
        m->old_all = false;
}

/* Puts (stamp << 32 | row) of every used row into a (room for the used
 * rows), sorted with tmp (as much room); the sorted array and its length. */
static uint64_t *used_by_stamp(const struct keymap *m, uint64_t *a, uint64_t *tmp, size_t *n)
{
    size_t k = 0, r;
    for (struct used_rows it = used_first(m); used_next(m, &it, &r);)
        a[k++] = (uint64_t)stamp_get(m, r) << 32 | r;
    *n = k;
    return sort_by_stamp(a, tmp, k, m->swidth);
}

/* The renumbering without memory of its own: the stamps are taken in
 * segments of as many values as old[] has bits; one pass marks a
 * segment's stamps in old[] as a bitmap, a second gives each its rank. A
 * stamp's rank is never above it, so the rows renumbered so far lie below
 * the segment being worked on and are not taken for its own. */
static void renumber_in_place(struct keymap *m)
{
    uint64_t *bits = m->old;
    size_t words = 2 * m->old_cap + 1;
    size_t per_block = (words + m->nbuckets - 1) / m->nbuckets; /* words per hist entry */
    uint64_t span = (uint64_t)words * 64;
    uint32_t base = 0;
    for (uint64_t v0 = 0; v0 < m->next_stamp; v0 += span) {
        uint64_t len = m->next_stamp - v0 < span ? m->next_stamp - v0 : span;
        memset(bits, 0, words * sizeof *bits);
        size_t r;
        for (struct used_rows it = used_first(m); used_next(m, &it, &r);) {
            uint64_t p = stamp_get(m, r) - v0;
            if (p < len)
                bits[p / 64] |= 1ull << (p % 64);
        }
        uint32_t acc = 0;
        for (size_t b = 0; b * per_block < words; b++) {
            m->hist[b] = acc;
            for (size_t x = b * per_block; x < (b + 1) * per_block && x < words; x++)
                acc += (uint32_t)__builtin_popcountll(bits[x]);
        }
        for (struct used_rows it = used_first(m); used_next(m, &it, &r);) {
            uint64_t p = stamp_get(m, r) - v0;
            if (p >= len)
                continue;
            size_t x = p / 64, b = x / per_block;
            uint32_t rank = m->hist[b];
            for (size_t y = b * per_block; y < x; y++)
                rank += (uint32_t)__builtin_popcountll(bits[y]);
            rank += (uint32_t)__builtin_popcountll(bits[x] & ((1ull << (p % 64)) - 1));
            stamp_set(m, r, base + rank);
        }
        base += acc;
    }
    m->next_stamp = base;
}

void keymap_renumber(struct keymap *m, bool in_place)
{
    if (m->stamps == NULL)
        return;
    size_t used = (size_t)keymap_used(m);
    uint64_t *a = in_place ? NULL : malloc(2 * used * sizeof *a + 1);
    if (a != NULL) {
        size_t n;
        uint64_t *sorted = used_by_stamp(m, a, a + used, &n);
        for (size_t i = 0; i < n; i++)
            stamp_set(m, (uint32_t)sorted[i], (uint32_t)i);
        free(a);
        m->next_stamp = (uint32_t)n;
    } else {
        renumber_in_place(m);
    }
    m->old_head = m->old_len = 0; /* old[] held the old stamps, or was the bitmap */
    m->old_all = used == 0;
}

/* Makes row the most recently written: the next stamp, after a renumbering
 * when they have run out (used <= capacity < stamp_free / 2 + 1, so one
 * leaves room for millions of writes). */
static void stamp_newest(struct keymap *m, int64_t row)
{
    if (m->stamps == NULL)
        return;
    if (m->next_stamp == m->stamp_free)
        keymap_renumber(m, false);
    uint32_t st = m->next_stamp++;
    stamp_set(m, (size_t)row, st);
    if (!m->old_all)
        return;
    if (m->old_len == m->old_cap)
        old_compact(m);
    if (m->old_all)
        m->old[m->old_len++] = (uint64_t)st << 32 | (uint64_t)row;
}

static void set_time(struct keymap *m, int64_t row, uint64_t time_ms)
{
    if (m->wsec != NULL)
        atomic_store_explicit(&m->wsec[row], second_of(time_ms), memory_order_relaxed);
}

void keymap_set_key(struct keymap *m, int64_t row, int64_t key)
{
    atomic_store_explicit(&m->keys[row], key, memory_order_relaxed);
}

void keymap_insert(struct keymap *m, int64_t key, int64_t row, uint64_t time_ms)
{
    bool hit;
    uint32_t i = probe(m, key, &hit);
    uint64_t h = mix(key);
    slots_begin(m);
    slot_store(m, i, slot_of(m, h, i, home_of(m, h), row));
    slots_end(m);
    stamp_newest(m, row); /* before the row counts as used: a renumbering may run */
    mark_free(m, row, false);
    set_time(m, row, time_ms);
    atomic_fetch_add_explicit(&m->used, 1, memory_order_relaxed);
    /* keep lowest_free's scan short: advance past full summary words */
    while (m->sum_low < m->nsum && m->free_sum[m->sum_low] == 0)
        m->sum_low++;
}

void keymap_remove(struct keymap *m, int64_t key, int64_t row, bool evicted)
{
    bool hit;
    uint32_t i = probe(m, key, &hit);
    if (hit) {
        slots_begin(m);
        slot_delete(m, i);
        slots_end(m);
    }
    if (m->stamps != NULL)
        stamp_set(m, (size_t)row, m->stamp_free);
    /* a free row has no time: two maps that hold the same keys export
     * the same state, whatever rows were freed on the way */
    if (m->wsec != NULL)
        atomic_store_explicit(&m->wsec[row], 0, memory_order_relaxed);
    mark_free(m, row, true);
    atomic_fetch_sub_explicit(&m->used, 1, memory_order_relaxed);
    if (evicted)
        atomic_fetch_add_explicit(&m->evictions, 1, memory_order_relaxed);
}

void keymap_touch(struct keymap *m, int64_t row, uint64_t time_ms)
{
    set_time(m, row, time_ms);
    if (m->stamps != NULL && (uint64_t)stamp_get(m, (size_t)row) + 1 != m->next_stamp)
        stamp_newest(m, row);
}

int64_t keymap_lru(struct keymap *m)
{
    if (m->stamps == NULL)
        return -1;
    for (;;) {
        for (; m->old_head < m->old_len; m->old_head++) {
            uint64_t e = m->old[m->old_head];
            if (stamp_get(m, (uint32_t)e) == e >> 32)
                return (int64_t)(uint32_t)e;
        }
        if (keymap_used(m) == 0)
            return -1;
        old_refill(m); /* its first entry is current */
    }
}

size_t keymap_count_expired(struct keymap *m, uint32_t ttl_seconds, uint64_t now_ms,
                            size_t limit)
{
    if (ttl_seconds == 0 || m->wsec == NULL || limit == 0 || keymap_lru(m) < 0)
        return 0;
    /* the expired keys are the oldest written: a prefix of old[], or, when
     * they reach past it, counted over every row */
    size_t n = 0;
    for (size_t i = m->old_head; i < m->old_len; i++) {
        uint64_t e = m->old[i];
        uint32_t r = (uint32_t)e;
        if (stamp_get(m, r) != e >> 32)
            continue;
        if (!keymap_expired(m, r, ttl_seconds, now_ms) || ++n == limit)
            return n;
    }
    if (m->old_all)
        return n;
    n = 0;
    size_t r;
    for (struct used_rows it = used_first(m); n < limit && used_next(m, &it, &r);)
        n += keymap_expired(m, (int64_t)r, ttl_seconds, now_ms);
    return n;
}

uint64_t keymap_clock(const struct keymap *m)
{
    return m->clock_ms;
}

void keymap_set_clock(struct keymap *m, uint64_t time_ms)
{
    m->clock_ms = time_ms;
}

/* ---- persistence ---- */

void keymap_export(const struct keymap *m, int64_t *keys, int64_t *state)
{
    int64_t c = m->capacity, now = second_of(m->clock_ms);
    if (m->stamps != NULL) {
        /* the places are the ranks of the stamps: sorted in state (2c + 2
         * int64s hold the used rows twice), then kept in keys as scratch */
        size_t n;
        const uint64_t *sorted =
            used_by_stamp(m, (uint64_t *)state, (uint64_t *)state + c, &n);
        for (int64_t r = 0; r < c; r++)
            keys[r] = -1;
        for (size_t i = 0; i < n; i++)
            keys[(uint32_t)sorted[i]] = (int64_t)i;
    } else {
        for (int64_t r = 0, place = 0; r < c; r++)
            keys[r] = keymap_key_of(m, r) != KEYMAP_NO_KEY ? place++ : -1;
    }
    for (int64_t r = 0; r < c; r++) {
        bool used = keymap_key_of(m, r) != KEYMAP_NO_KEY;
        state[2 * r] = keys[r];
        state[2 * r + 1] = m->wsec != NULL ? atomic_load_explicit(&m->wsec[r], memory_order_relaxed)
                           : used          ? now
                                           : 0;
        keys[r] = keymap_key_of(m, r);
    }
    state[2 * c] = (int64_t)m->clock_ms;
    state[2 * c + 1] = (int64_t)keymap_evictions(m);
}

int keymap_import(struct keymap *m, const int64_t *keys, const int64_t *state, char *err,
                  size_t errlen)
{
    int64_t c = m->capacity, used = 0;
    uint32_t *order = malloc((size_t)c * sizeof *order);
    if (order == NULL)
        return CORE_ENOMEM;
    for (int64_t i = 0; i < c; i++)
        order[i] = NIL;
    int rc = CORE_OK;
    for (int64_t r = 0; r < c && rc == CORE_OK; r++) {
        int64_t place = state[2 * r];
        bool has_key = keys[r] != KEYMAP_NO_KEY;
        if (has_key != (place >= 0) || place >= c || place < -1 ||
            state[2 * r + 1] < 0 || state[2 * r + 1] > UINT32_MAX)
            rc = core_fail(err, errlen, CORE_EFORMAT, "row %lld: key and state disagree",
                           (long long)r);
        else if (has_key && order[place] != NIL)
            rc = core_fail(err, errlen, CORE_EFORMAT, "rows %u and %lld share place %lld",
                           order[place], (long long)r, (long long)place);
        else if (has_key) {
            order[place] = (uint32_t)r;
            used++;
        }
    }
    for (int64_t p = 0; p < used && rc == CORE_OK; p++) {
        uint32_t r = order[p];
        if (r == NIL) {
            rc = core_fail(err, errlen, CORE_EFORMAT, "no row has place %lld", (long long)p);
            break;
        }
        if (keymap_find(m, keys[r]) >= 0) {
            rc = core_fail(err, errlen, CORE_EFORMAT, "key %lld is held by two rows",
                           (long long)keys[r]);
            break;
        }
        keymap_set_key(m, r, keys[r]);
        keymap_insert(m, keys[r], r, 0);
        if (m->wsec != NULL)
            atomic_store_explicit(&m->wsec[r], (uint32_t)state[2 * (int64_t)r + 1],
                                  memory_order_relaxed);
    }
    free(order);
    if (rc != CORE_OK)
        return rc;
    m->clock_ms = (uint64_t)state[2 * c];
    atomic_store(&m->evictions, (uint64_t)state[2 * c + 1]);
    return CORE_OK;
}
