/* vocab.c - token <-> id map: one arena of token bytes, an array of
 * (offset, length) per id, and an open-addressing table of ids probed
 * linearly. Each slot keeps the upper half of the token's hash next to the
 * id, so a probe rejects almost every non-match without touching the arena.
 * The sorted index is one array of ids in token order: the tokens sharing a
 * prefix are one run of it, found by two binary searches. */
#include "vocab.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

struct entry {
    uint64_t off; /* into arena */
    uint32_t len;
};

struct vocab {
    char *arena;
    size_t arena_len, arena_cap;
    struct entry *entries; /* by id */
    int64_t count, entries_cap;
    uint64_t *slots; /* 0 = empty, else (hash high 32 bits << 32) | (id + 1) */
    size_t nslots;   /* power of two */
    uint32_t *sorted; /* ids in token order, count of them; NULL when not built */
    size_t max_len;  /* longest token */
};

/* Ids live in 32 bits of a slot; tables are capped at 2^31-1 rows anyway. */
#define VOCAB_MAX_IDS 0x7fffffffLL
#define MIN_SLOTS 16

/* A multiply-xorshift hash over 8-byte words: short tokens (most words) take
 * one or two rounds, and the final mix spreads them over all 64 bits. */
static uint64_t hash_bytes(const char *p, size_t len)
{
    const uint64_t k = 0x9e3779b97f4a7c15ull;
    uint64_t h = 0x243f6a8885a308d3ull ^ (len * k);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t w = 0;
        memcpy(&w, p, len);
        h = (h ^ w) * k;
        h ^= h >> 29;
    }
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

static size_t slots_for(size_t count)
{
    size_t n = MIN_SLOTS;
    /* keep the load under 1/2: short probes matter more than memory here */
    while (n / 2 < count + 1)
        n *= 2;
    return n;
}

int vocab_new(struct vocab **out, size_t hint)
{
    *out = NULL;
    struct vocab *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return CORE_ENOMEM;
    if (hint > (size_t)VOCAB_MAX_IDS)
        hint = (size_t)VOCAB_MAX_IDS;
    v->nslots = slots_for(hint);
    v->slots = calloc(v->nslots, sizeof(*v->slots));
    v->entries_cap = hint > 0 ? (int64_t)hint : 16;
    v->entries = malloc((size_t)v->entries_cap * sizeof(*v->entries));
    v->arena_cap = hint > 0 ? hint * 8 : 256;
    v->arena = malloc(v->arena_cap);
    if (v->slots == NULL || v->entries == NULL || v->arena == NULL) {
        vocab_free(v);
        return CORE_ENOMEM;
    }
    *out = v;
    return CORE_OK;
}

void vocab_free(struct vocab *v)
{
    if (v == NULL)
        return;
    free(v->arena);
    free(v->entries);
    free(v->slots);
    free(v->sorted);
    free(v);
}

static bool entry_equals(const struct vocab *v, uint32_t id, const char *tok, size_t len)
{
    const struct entry *e = &v->entries[id];
    return e->len == len && memcmp(v->arena + e->off, tok, len) == 0;
}

/* Returns the slot holding tok, or the empty slot where it would go. */
static size_t probe(const struct vocab *v, uint64_t h, const char *tok, size_t len)
{
    size_t mask = v->nslots - 1;
    uint64_t tag = h >> 32;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        uint64_t s = v->slots[i];
        if (s == 0)
            return i;
        if ((s >> 32) == tag && entry_equals(v, (uint32_t)(s & 0xffffffffu) - 1, tok, len))
            return i;
    }
}

int64_t vocab_find(const struct vocab *v, const char *tok, size_t len)
{
    if (len == 0 || len > VOCAB_MAX_TOKEN_BYTES)
        return -1;
    uint64_t s = v->slots[probe(v, hash_bytes(tok, len), tok, len)];
    return s == 0 ? -1 : (int64_t)(s & 0xffffffffu) - 1;
}

/* Doubles the slot array and reinserts every id (hashes are recomputed:
 * cheaper in memory than storing full 64-bit hashes per id). */
static int grow_slots(struct vocab *v)
{
    size_t n = v->nslots * 2;
    uint64_t *slots = calloc(n, sizeof(*slots));
    if (slots == NULL)
        return CORE_ENOMEM;
    size_t mask = n - 1;
    for (int64_t id = 0; id < v->count; id++) {
        const struct entry *e = &v->entries[id];
        uint64_t h = hash_bytes(v->arena + e->off, e->len);
        size_t i = (size_t)h & mask;
        while (slots[i] != 0)
            i = (i + 1) & mask;
        slots[i] = (h >> 32) << 32 | (uint64_t)(id + 1);
    }
    free(v->slots);
    v->slots = slots;
    v->nslots = n;
    return CORE_OK;
}

static int reserve(struct vocab *v, size_t len)
{
    if (v->count == v->entries_cap) {
        int64_t cap = v->entries_cap * 2;
        struct entry *e = realloc(v->entries, (size_t)cap * sizeof(*e));
        if (e == NULL)
            return CORE_ENOMEM;
        v->entries = e;
        v->entries_cap = cap;
    }
    if (v->arena_cap - v->arena_len < len) {
        size_t cap = v->arena_cap * 2;
        while (cap - v->arena_len < len)
            cap *= 2;
        char *a = realloc(v->arena, cap);
        if (a == NULL)
            return CORE_ENOMEM;
        v->arena = a;
        v->arena_cap = cap;
    }
    return CORE_OK;
}

/* Tokens are written one per line, "\n" or "\r\n" ended, so a token holding
 * either byte would not read back as itself. */
static bool token_is_valid(const char *tok, size_t len)
{
    return len > 0 && len <= VOCAB_MAX_TOKEN_BYTES && memchr(tok, '\n', len) == NULL &&
           memchr(tok, '\r', len) == NULL;
}

int vocab_add(struct vocab *v, const char *tok, size_t len, int64_t *id)
{
    if (!token_is_valid(tok, len))
        return CORE_EINVAL;
    uint64_t h = hash_bytes(tok, len);
    size_t slot = probe(v, h, tok, len);
    if (v->slots[slot] != 0) {
        if (id != NULL)
            *id = (int64_t)(v->slots[slot] & 0xffffffffu) - 1;
        return CORE_EEXISTS;
    }
    if (v->count >= VOCAB_MAX_IDS)
        return CORE_ETOOBIG;
    free(v->sorted); /* a new token would be missing from it */
    v->sorted = NULL;
    if (reserve(v, len) != CORE_OK)
        return CORE_ENOMEM;
    if ((size_t)v->count + 1 > v->nslots / 2) {
        if (grow_slots(v) != CORE_OK)
            return CORE_ENOMEM;
        slot = probe(v, h, tok, len);
    }
    int64_t new_id = v->count++;
    memcpy(v->arena + v->arena_len, tok, len);
    v->entries[new_id] = (struct entry){.off = v->arena_len, .len = (uint32_t)len};
    v->arena_len += len;
    if (len > v->max_len)
        v->max_len = len;
    v->slots[slot] = (h >> 32) << 32 | (uint64_t)(new_id + 1);
    if (id != NULL)
        *id = new_id;
    return CORE_OK;
}

const char *vocab_token(const struct vocab *v, int64_t id, size_t *len)
{
    if (id < 0 || id >= v->count)
        return NULL;
    *len = v->entries[id].len;
    return v->arena + v->entries[id].off;
}

int64_t vocab_size(const struct vocab *v)
{
    return v->count;
}

/* ---- sorted index ------------------------------------------------------ */

/* One token for the sort: qsort has no context argument, so each element
 * carries its bytes. Lives only while the index is built. */
struct sort_item {
    const char *p;
    uint32_t len;
    uint32_t id;
};

/* memcmp order; on a common prefix the shorter token first. */
static int compare_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

static int compare_items(const void *x, const void *y)
{
    const struct sort_item *a = x, *b = y;
    return compare_bytes(a->p, a->len, b->p, b->len);
}

int vocab_build_index(struct vocab *v)
{
    size_t n = (size_t)v->count;
    struct sort_item *items = malloc(n * sizeof *items + 1);
    uint32_t *sorted = malloc(n * sizeof *sorted + 1);
    if (items == NULL || sorted == NULL) {
        free(items);
        free(sorted);
        return CORE_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        items[i] = (struct sort_item){v->arena + v->entries[i].off, v->entries[i].len,
                                      (uint32_t)i};
    qsort(items, n, sizeof *items, compare_items);
    for (size_t i = 0; i < n; i++)
        sorted[i] = items[i].id;
    free(items);
    free(v->sorted);
    v->sorted = sorted;
    return CORE_OK;
}

bool vocab_has_index(const struct vocab *v)
{
    return v->sorted != NULL;
}

/* Where the token at sorted position pos stands against the prefix: < 0
 * before every token that starts with it, 0 when it starts with it, > 0
 * after them. Monotonic over the sorted index. */
static int compare_prefix(const struct vocab *v, size_t pos, const char *prefix, size_t len)
{
    const struct entry *e = &v->entries[v->sorted[pos]];
    const char *tok = v->arena + e->off;
    if (e->len >= len)
        return memcmp(tok, prefix, len);
    int c = memcmp(tok, prefix, e->len);
    return c != 0 ? c : -1; /* a shorter token that the prefix extends sorts before it */
}

/* The first sorted position whose comparison with the prefix is >= want
 * (want 0: the run's start; want 1: just past its end). */
static size_t search_prefix(const struct vocab *v, const char *prefix, size_t len, int want)
{
    size_t lo = 0, hi = (size_t)v->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = compare_prefix(v, mid, prefix, len);
        if ((c > 0 ? 1 : c < 0 ? -1 : 0) < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int vocab_prefix_range(const struct vocab *v, const char *prefix, size_t len, int64_t *first,
                       int64_t *count)
{
    *first = 0;
    *count = 0;
    if (v->sorted == NULL)
        return CORE_EINVAL;
    if (len == 0) { /* every token; and memcmp must not see a NULL prefix */
        *count = v->count;
        return CORE_OK;
    }
    size_t begin = search_prefix(v, prefix, len, 0);
    size_t end = search_prefix(v, prefix, len, 1);
    *first = (int64_t)begin;
    *count = (int64_t)(end - begin);
    return CORE_OK;
}

int64_t vocab_sorted_id(const struct vocab *v, int64_t pos)
{
    if (v->sorted == NULL || pos < 0 || pos >= v->count)
        return -1;
    return v->sorted[pos];
}

/* ---- files ------------------------------------------------------------- */

size_t vocab_max_len(const struct vocab *v)
{
    return v->max_len;
}

static char *read_whole_file(const char *path, size_t *len, char *err, size_t errlen, int *rc)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *rc = core_fail(err, errlen, CORE_EIO, "%s: cannot open: %m", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL) {
            fclose(f);
            *rc = core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory reading the file", path);
            return NULL;
        }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        char *b = realloc(buf, cap);
        if (b == NULL)
            free(buf);
        buf = b;
    }
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) {
        free(buf);
        *rc = core_fail(err, errlen, CORE_EIO, "%s: read error", path);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Adds the line tok[0..len) (line ending already stripped) as the next id. */
static int add_line(struct vocab *v, const char *tok, size_t len, const char *path,
                    int64_t line, char *err, size_t errlen)
{
    if (len == 0)
        return core_fail(err, errlen, CORE_EFORMAT, "%s:%lld: blank line", path, (long long)line);
    if (len > VOCAB_MAX_TOKEN_BYTES)
        return core_fail(err, errlen, CORE_EFORMAT, "%s:%lld: token of %zu bytes is over the limit of %d",
                         path, (long long)line, len, VOCAB_MAX_TOKEN_BYTES);
    if (memchr(tok, '\r', len) != NULL)
        return core_fail(err, errlen, CORE_EFORMAT, "%s:%lld: carriage return inside the token", path,
                         (long long)line);
    int64_t id;
    int rc = vocab_add(v, tok, len, &id);
    if (rc == CORE_EEXISTS)
        return core_fail(err, errlen, CORE_EFORMAT, "%s:%lld: duplicate token '%.*s' (first on line %lld)",
                         path, (long long)line, len > 64 ? 64 : (int)len, tok, (long long)id + 1);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "%s:%lld: %s", path, (long long)line, core_strerror(rc));
    return CORE_OK;
}

static size_t count_lines(const char *buf, size_t len)
{
    size_t n = 0;
    for (const char *p = buf; (p = memchr(p, '\n', (size_t)(buf + len - p))) != NULL; p++)
        n++;
    return n + 1;
}

int vocab_load_file(struct vocab **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    size_t len = 0;
    int rc = CORE_OK;
    char *buf = read_whole_file(path, &len, err, errlen, &rc);
    if (buf == NULL)
        return rc;
    struct vocab *v;
    if (vocab_new(&v, count_lines(buf, len)) != CORE_OK) {
        free(buf);
        return core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", path);
    }
    int64_t line = 1;
    for (size_t pos = 0; pos < len && rc == CORE_OK; line++) {
        const char *start = buf + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t n = nl != NULL ? (size_t)(nl - start) : len - pos;
        pos += n + (nl != NULL);
        if (n > 0 && start[n - 1] == '\r' && nl != NULL)
            n--;
        rc = add_line(v, start, n, path, line, err, errlen);
    }
    free(buf);
    if (rc != CORE_OK) {
        vocab_free(v);
        return rc;
    }
    *out = v;
    return CORE_OK;
}

int vocab_write(const struct vocab *v, void *FILE_stream)
{
    FILE *f = FILE_stream;
    for (int64_t id = 0; id < v->count; id++) {
        const struct entry *e = &v->entries[id];
        if (fwrite(v->arena + e->off, 1, e->len, f) != e->len || fputc('\n', f) == EOF)
            return CORE_EIO;
    }
    return ferror(f) ? CORE_EIO : CORE_OK;
}
