/* keymap.h - the key map of a keyed table: int64 key -> row, plus what a
 * table that grows and forgets needs around it: which rows are free, the
 * order in which keys were last written (for LRU eviction) and when (for
 * ttl_seconds).
 *
 * Layout (12.8 to 19.9 bytes per row of capacity, see keymap_parts):
 *  - slots: open addressing with linear probing over ~7/6 x capacity
 *    uint32 slots; a slot holds row + 1 in its low bits and a tag (high
 *    bits of the key's hash) in the bits the row does not need, so most
 *    probes that do not match never touch keys[]; deletion shifts later
 *    entries back (no tombstones), so probes stay short under churn.
 *  - keys[row]: the key held by each row, KEYMAP_NO_KEY for a free row.
 *  - stamps[row] (KEYMAP_ORDER): 3 bytes (4 above 2^22 rows) numbering
 *    the writes of keys, so the least recently written key holds the
 *    lowest, for lru eviction and for ttl (the expired keys are the oldest
 *    written); a buffer of the oldest 1/128 of the rows, refilled by a scan
 *    of the stamps, finds it (see keymap.c);
 *  - wsec[row] (KEYMAP_TIMES): the second of the last write (rounded up),
 *    for ttl.
 *  - a two-level bitmap of free rows: a new key takes the lowest free row,
 *    so row assignment is a function of the sequence of writes.
 *
 * Concurrency: one writer at a time (the table's write lock) calls every
 * function below except keymap_find_reader, keymap_key_of, keymap_expired,
 * keymap_used and keymap_evictions, which any number of readers may call
 * alongside it. Slot changes are bracketed by a sequence counter (odd while
 * they happen); a reader that misses retries when the counter moved, so a
 * key moved by a deletion's shift is never reported missing. A hit is only
 * a candidate: the caller copies the row under its stripe seqlock and
 * checks keys[row] == key inside that same bracket (the table changes
 * keys[row] only inside it), so a reader never sees a half-initialized row
 * or a row that another key took meanwhile. */
#ifndef CORE_KEYMAP_H
#define CORE_KEYMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct keymap;

/* Not a key: marks a free row (so the one int64 value keyed tables refuse). */
#define KEYMAP_NO_KEY INT64_MIN

/* Most rows a keymap can hold (row + 1 must fit in a slot). */
#define KEYMAP_MAX_CAPACITY 0x7fffffffLL

/* What a map keeps beyond keys and the index (keymap_new's keep): a table
 * needs the order for "evict": "lru" or a ttl, the times for a ttl. */
#define KEYMAP_ORDER 1u /* keymap_lru and keymap_newer; -1 without */
#define KEYMAP_TIMES 2u /* keymap_expired; never expired without */
#define KEYMAP_ALL (KEYMAP_ORDER | KEYMAP_TIMES)

/* Creates an empty map of capacity rows (1..KEYMAP_MAX_CAPACITY): every row
 * free. CORE_OK, CORE_EINVAL (capacity) or CORE_ENOMEM. */
int keymap_new(struct keymap **out, int64_t capacity, unsigned keep);

/* Frees the parts not in keep (a map never gains one back). The writer,
 * with no reader that needs them. */
void keymap_keep(struct keymap *m, unsigned keep);

/* Frees m; NULL is a no-op. No reader may be running. */
void keymap_free(struct keymap *m);

int64_t keymap_capacity(const struct keymap *m);
/* Rows holding a key now. Any thread. */
int64_t keymap_used(const struct keymap *m);
/* Bytes the map holds, and the same by part. */
size_t keymap_bytes(const struct keymap *m);
struct keymap_parts {
    size_t index; /* the slots */
    size_t keys;  /* keys[row] */
    size_t order; /* stamps[row] and the oldest rows: the write order, for lru */
    size_t times; /* wsec[row]: the write seconds, for ttl */
    size_t other; /* the free-row bitmap and the map's own struct */
};
void keymap_parts(const struct keymap *m, struct keymap_parts *p);

/* ---- readers (any thread) ---- */

/* The row that holds key, or -1: a candidate to validate with
 * keymap_key_of inside the row's stripe bracket (see the top). */
int64_t keymap_find_reader(const struct keymap *m, int64_t key);

/* The row of the first slot on key's probe path whose tag matches, or -1:
 * cheaper than keymap_find_reader (keys[] is not read, so its line can be
 * fetched together with the row's), and weaker: the row may hold another
 * key (a tag collision), and -1 may be a miss that a concurrent shift
 * caused. The caller validates a row as above and asks keymap_find_reader
 * when the row is not key's or the answer is -1. */
int64_t keymap_candidate(const struct keymap *m, int64_t key);

/* Asks for key's home slot ahead of keymap_find_reader or keymap_candidate. */
void keymap_prefetch(const struct keymap *m, int64_t key);

/* Asks for what validating row reads: its key, and its write time when
 * with_time (the table has a ttl). */
void keymap_prefetch_row(const struct keymap *m, int64_t row, bool with_time);

/* The key of row (KEYMAP_NO_KEY when free); an atomic read. */
int64_t keymap_key_of(const struct keymap *m, int64_t row);

/* True when row's last write is ttl_seconds (> 0) or more before now_ms.
 * Never true for ttl_seconds 0. An atomic read of the row's time. */
bool keymap_expired(const struct keymap *m, int64_t row, uint32_t ttl_seconds,
                    uint64_t now_ms);

/* Keys evicted so far (ttl and lru, not deletes). Any thread. */
uint64_t keymap_evictions(const struct keymap *m);

/* ---- the writer (one at a time) ---- */

/* The row of key, or -1 (exact: the writer needs no retry). */
int64_t keymap_find(const struct keymap *m, int64_t key);

/* The lowest free row, or -1 when every row is used; does not take it. */
int64_t keymap_lowest_free(const struct keymap *m);

/* Writes keys[row] = key (KEYMAP_NO_KEY for none); the caller brackets it
 * with the row's stripe seqlock, together with the row's new contents. */
void keymap_set_key(struct keymap *m, int64_t row, int64_t key);

/* Makes row (free, its keys[row] already set to key) hold key, the most
 * recently written one, written at time_ms. key must not be in the map. */
void keymap_insert(struct keymap *m, int64_t key, int64_t row, uint64_t time_ms);

/* Removes key (held by row) from the index and the list and frees row;
 * keys[row] is left for the caller to change (keymap_set_key) when it
 * reuses or clears the row. evicted counts it in keymap_evictions. */
void keymap_remove(struct keymap *m, int64_t key, int64_t row, bool evicted);

/* Marks row (used) as the most recently written, at time_ms. */
void keymap_touch(struct keymap *m, int64_t row, uint64_t time_ms);

/* The least recently written used row, or -1 when none is used (or the map
 * keeps no order). Amortized O(1): a map of more keys than capacity / 128
 * scans the used rows' stamps once per capacity / 256 rows or more that it
 * gives out (or that writes make stale); one of fewer never scans. */
int64_t keymap_lru(struct keymap *m);

/* Numbers the used rows' writes 0..used-1 again, in the same order: what
 * keymap_insert and keymap_touch do themselves when the stamps run out
 * (with a sort when its memory can be had, else in place, slower). Public
 * so tests can run both ways. */
void keymap_renumber(struct keymap *m, bool in_place);

/* How many of the used rows are expired at now_ms (see keymap_expired), up
 * to limit; the expired rows are the least recently written. */
size_t keymap_count_expired(struct keymap *m, uint32_t ttl_seconds, uint64_t now_ms,
                            size_t limit);

/* The map's clock: the time of the last write applied, never going back
 * (a record stamped earlier than its predecessor counts as at the same
 * time), so expiry is a function of the log. */
uint64_t keymap_clock(const struct keymap *m);
void keymap_set_clock(struct keymap *m, uint64_t time_ms);

/* ---- persistence ---- */

/* Writes keys[capacity] (KEYMAP_NO_KEY for free rows) and state[capacity *
 * 2 + 2]: per row its place in the write order (0 = least recent, -1 for a
 * free row) and its write second, then the clock and the evictions. A map
 * without the order gives the used rows places in row order; one without
 * the times gives each used row the second of the map's clock (so a table
 * given a ttl later counts from its last write, not from 1970). */
void keymap_export(const struct keymap *m, int64_t *keys, int64_t *state);

/* Rebuilds an empty map from keymap_export's arrays (the parts it keeps;
 * the others are checked and dropped). CORE_OK, or
 * CORE_EFORMAT (with err) when they are inconsistent: a duplicate key, a
 * place used twice or missing, a free row with a place. */
int keymap_import(struct keymap *m, const int64_t *keys, const int64_t *state, char *err,
                  size_t errlen);

#endif
