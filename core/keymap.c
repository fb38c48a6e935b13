/* keymap.c - int64 key -> row for keyed tables; see keymap.h. */
#include "keymap.h"

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
    _Atomic uint32_t *slots;    /* 0 = empty */
    _Atomic int64_t *keys;      /* per row */
    _Atomic uint32_t *wsec;     /* per row: second of the last write, rounded up */
    uint32_t *prev, *next;      /* per used row: the write order list */
    uint32_t oldest, newest;    /* ends of the list, NIL when empty */
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
    return m->rowbits >= 32 ? 0 : ((uint32_t)h << m->rowbits);
}

static inline uint32_t next_slot(const struct keymap *m, uint32_t i)
{
    return i + 1 == m->nslots ? 0 : i + 1;
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
    m->nslots = (uint32_t)(c + c / 3 + 1); /* load <= 3/4 */
    m->rowbits = 64u - (unsigned)__builtin_clzll((unsigned long long)c);
    m->rowmask = m->rowbits >= 32 ? UINT32_MAX : ((1u << m->rowbits) - 1u);
    m->nwords = (c + 63) / 64;
    m->nsum = (m->nwords + 63) / 64;
    /* the arrays probed at random get huge pages (a lookup's slot and key
     * would otherwise cost a page walk each) */
    m->slots = matrix_zalloc((size_t)m->nslots * sizeof *m->slots);
    m->keys = matrix_zalloc(c * sizeof *m->keys);
    bool order = keep & KEYMAP_ORDER, times = keep & KEYMAP_TIMES;
    if (times)
        m->wsec = matrix_zalloc(c * sizeof *m->wsec);
    if (order) {
        m->prev = matrix_zalloc(c * sizeof *m->prev);
        m->next = matrix_zalloc(c * sizeof *m->next);
    }
    m->free_bits = calloc(m->nwords, sizeof *m->free_bits);
    m->free_sum = calloc(m->nsum, sizeof *m->free_sum);
    if (!m->slots || !m->keys || (times && !m->wsec) || (order && (!m->prev || !m->next)) ||
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
    m->oldest = m->newest = NIL;
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
    if (!(keep & KEYMAP_ORDER)) {
        matrix_zfree(m->prev, c * sizeof *m->prev);
        matrix_zfree(m->next, c * sizeof *m->next);
        m->prev = m->next = NULL;
        m->oldest = m->newest = NIL;
    }
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
    p->order = m->prev != NULL ? c * (sizeof *m->prev + sizeof *m->next) : 0;
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
        if ((s & ~m->rowmask) != tag)
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
        if ((s & ~m->rowmask) == tag)
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

/* Empties slot i and shifts the entries after it back (no tombstones). */
static void slot_delete(struct keymap *m, uint32_t i)
{
    for (uint32_t j = next_slot(m, i);; j = next_slot(m, j)) {
        uint32_t s = atomic_load_explicit(&m->slots[j], memory_order_relaxed);
        if (s == 0)
            break;
        int64_t row = (int64_t)(s & m->rowmask) - 1;
        uint32_t h = home_of(m, mix(atomic_load_explicit(&m->keys[row], memory_order_relaxed)));
        if (between(i, h, j))
            continue;
        slot_store(m, i, s);
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

/* ---- the write order ---- */

static void unlink_row(struct keymap *m, uint32_t r)
{
    if (m->prev == NULL)
        return;
    uint32_t p = m->prev[r], n = m->next[r];
    if (p != NIL)
        m->next[p] = n;
    else
        m->oldest = n;
    if (n != NIL)
        m->prev[n] = p;
    else
        m->newest = p;
}

static void push_newest(struct keymap *m, uint32_t r)
{
    if (m->prev == NULL)
        return;
    m->prev[r] = m->newest;
    m->next[r] = NIL;
    if (m->newest != NIL)
        m->next[m->newest] = r;
    else
        m->oldest = r;
    m->newest = r;
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
    slot_store(m, i, tag_of(m, h) | (uint32_t)(row + 1));
    slots_end(m);
    mark_free(m, row, false);
    set_time(m, row, time_ms);
    push_newest(m, (uint32_t)row);
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
    unlink_row(m, (uint32_t)row);
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
    if (m->newest == (uint32_t)row)
        return;
    unlink_row(m, (uint32_t)row);
    push_newest(m, (uint32_t)row);
}

int64_t keymap_lru(const struct keymap *m)
{
    return m->oldest == NIL ? -1 : (int64_t)m->oldest;
}

int64_t keymap_newer(const struct keymap *m, int64_t row)
{
    if (m->next == NULL)
        return -1;
    uint32_t n = m->next[row];
    return n == NIL ? -1 : (int64_t)n;
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
    int64_t place = 0, now = second_of(m->clock_ms);
    for (int64_t r = 0; r < m->capacity; r++) {
        keys[r] = keymap_key_of(m, r);
        bool used = keys[r] != KEYMAP_NO_KEY;
        state[2 * r] = m->prev == NULL && used ? place++ : -1;
        state[2 * r + 1] = m->wsec != NULL ? atomic_load_explicit(&m->wsec[r], memory_order_relaxed)
                           : used          ? now
                                           : 0;
    }
    if (m->prev != NULL)
        for (uint32_t r = m->oldest; r != NIL; r = m->next[r])
            state[2 * (int64_t)r] = place++;
    state[2 * m->capacity] = (int64_t)m->clock_ms;
    state[2 * m->capacity + 1] = (int64_t)keymap_evictions(m);
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
