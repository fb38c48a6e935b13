/* test_keymap.c - the key map (core/keymap.c) and keyed tables
 * (core/keyed.c): insert, find, delete, reuse, a full map, readers racing
 * a writer that inserts and evicts, lru order, ttl by the record clock,
 * refusals at capacity, and replay of the same records giving the same
 * bits. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "error.h"
#include "journal.h"
#include "keymap.h"
#include "table.h"
#include "table_internal.h"
#include "testutil.h"

/* ---- the map alone ---- */

static void put(struct keymap *m, int64_t key, uint64_t ms)
{
    int64_t row = keymap_lowest_free(m);
    ck_assert_int_ge(row, 0);
    keymap_set_key(m, row, key);
    keymap_insert(m, key, row, ms);
}

static void touch(struct keymap *m, int64_t row, uint64_t ms)
{
    keymap_touch(m, row, ms);
}

/* The key at place (0 = least recently written) in m's export, or
 * KEYMAP_NO_KEY. */
static int64_t key_at(const struct keymap *m, int64_t place)
{
    int64_t c = keymap_capacity(m);
    int64_t *keys = malloc((size_t)c * sizeof *keys);
    int64_t *state = malloc(((size_t)c * 2 + 2) * sizeof *state);
    int64_t key = KEYMAP_NO_KEY;
    keymap_export(m, keys, state);
    for (int64_t r = 0; r < c; r++)
        if (state[2 * r] == place)
            key = keys[r];
    free(keys);
    free(state);
    return key;
}

START_TEST(insert_find_delete_reuse)
{
    struct keymap *m = NULL;
    ck_assert_int_eq(keymap_new(&m, 1000, KEYMAP_ALL), CORE_OK);
    for (int64_t k = 0; k < 1000; k++)
        put(m, k * 7919 - 500000 + (k % 2 ? INT64_MAX / 3 : 0), 0);
    ck_assert_int_eq(keymap_used(m), 1000);
    ck_assert_int_eq(keymap_lowest_free(m), -1); /* full */
    for (int64_t k = 0; k < 1000; k++) {
        int64_t key = k * 7919 - 500000 + (k % 2 ? INT64_MAX / 3 : 0);
        ck_assert_int_eq(keymap_find(m, key), k);
        ck_assert_int_eq(keymap_find_reader(m, key), k);
    }
    ck_assert_int_eq(keymap_find(m, 424242424242), -1);
    /* delete every third key: the others stay findable after the shifts */
    for (int64_t k = 0; k < 1000; k += 3) {
        int64_t key = k * 7919 - 500000 + (k % 2 ? INT64_MAX / 3 : 0);
        keymap_remove(m, key, k, false);
        keymap_set_key(m, k, KEYMAP_NO_KEY);
    }
    for (int64_t k = 0; k < 1000; k++) {
        int64_t key = k * 7919 - 500000 + (k % 2 ? INT64_MAX / 3 : 0);
        ck_assert_int_eq(keymap_find(m, key), k % 3 == 0 ? -1 : k);
    }
    /* freed rows are reused lowest first */
    ck_assert_int_eq(keymap_lowest_free(m), 0);
    put(m, -1, 0);
    ck_assert_int_eq(keymap_find(m, -1), 0);
    ck_assert_int_eq(keymap_lowest_free(m), 3);
    ck_assert_int_eq(keymap_evictions(m), 0);
    keymap_free(m);
}
END_TEST

/* A row freed by a delete exports as a never-used one: maps that hold the
 * same keys give the same snapshot state, whatever was freed on the way. */
START_TEST(freed_rows_export_like_unused_ones)
{
    struct keymap *a, *b;
    ck_assert_int_eq(keymap_new(&a, 4, KEYMAP_ALL), CORE_OK);
    ck_assert_int_eq(keymap_new(&b, 4, KEYMAP_ALL), CORE_OK);
    put(a, 7, 5000);
    put(a, 8, 6000);
    keymap_remove(a, 7, keymap_find(a, 7), false);
    keymap_set_key(a, 0, KEYMAP_NO_KEY);
    /* b: key 8 in row 1 at the same time, row 0 never used */
    keymap_set_key(b, 1, 8);
    keymap_insert(b, 8, 1, 6000);
    int64_t ka[4], kb[4], sa[10], sb[10];
    keymap_export(a, ka, sa);
    keymap_export(b, kb, sb);
    ck_assert_mem_eq(ka, kb, sizeof ka);
    ck_assert_mem_eq(sa, sb, sizeof sa);
    keymap_free(a);
    keymap_free(b);
}
END_TEST

START_TEST(lru_order_and_export_import)
{
    struct keymap *m = NULL, *n = NULL;
    ck_assert_int_eq(keymap_new(&m, 4, KEYMAP_ALL), CORE_OK);
    put(m, 10, 1000);
    put(m, 20, 2000);
    put(m, 30, 3000);
    touch(m, keymap_find(m, 10), 4000); /* 20 is now the oldest */
    ck_assert_int_eq(keymap_key_of(m, keymap_lru(m)), 20);
    ck_assert_int_eq(key_at(m, 0), 20);
    ck_assert_int_eq(key_at(m, 1), 30);
    ck_assert_int_eq(key_at(m, 2), 10);
    ck_assert_int_eq(key_at(m, 3), KEYMAP_NO_KEY);
    ck_assert(keymap_expired(m, keymap_find(m, 20), 2, 4000));
    ck_assert(!keymap_expired(m, keymap_find(m, 20), 3, 4000));
    ck_assert(!keymap_expired(m, keymap_find(m, 20), 0, 1u << 30));
    keymap_set_clock(m, 4000);
    int64_t keys[4], state[10];
    keymap_export(m, keys, state);
    ck_assert_int_eq(keymap_new(&n, 4, KEYMAP_ALL), CORE_OK);
    char err[128] = "";
    ck_assert_int_eq(keymap_import(n, keys, state, err, sizeof err), CORE_OK);
    ck_assert_int_eq(keymap_clock(n), 4000);
    ck_assert_int_eq(keymap_used(n), 3);
    int64_t keys2[4], state2[10];
    keymap_export(n, keys2, state2);
    ck_assert_mem_eq(keys, keys2, sizeof keys);
    ck_assert_mem_eq(state, state2, sizeof state);
    ck_assert_int_eq(keymap_lru(n), keymap_lru(m));
    keymap_free(n);
    /* a key held twice does not load */
    keys[1] = keys[0];
    ck_assert_int_eq(keymap_new(&n, 4, KEYMAP_ALL), CORE_OK);
    ck_assert_int_eq(keymap_import(n, keys, state, err, sizeof err), CORE_EFORMAT);
    keymap_free(n);
    keymap_free(m);
}
END_TEST

/* A map keeps the write order and times only when asked: without them it
 * takes keys and index alone, still finds, inserts and frees, and exports
 * what a map with them would read back sensibly (places in row order, the
 * clock's second as every used row's time). */
START_TEST(parts_kept_only_when_asked)
{
    struct keymap *all = NULL, *bare = NULL, *n = NULL;
    ck_assert_int_eq(keymap_new(&all, 1000, KEYMAP_ALL), CORE_OK);
    ck_assert_int_eq(keymap_new(&bare, 1000, 0), CORE_OK);
    struct keymap_parts pa, pb;
    keymap_parts(all, &pa);
    keymap_parts(bare, &pb);
    ck_assert_uint_eq(pb.order, 0);
    ck_assert_uint_eq(pb.times, 0);
    /* 3-byte stamps (and a byte of padding), the oldest 64 rows (and room
     * to sort them) and a histogram of 256 buckets */
    ck_assert_uint_eq(pa.order, 1000 * 3 + 1 + (2 * 64 + 1) * 8 + 256 * 4);
    ck_assert_uint_eq(pa.times, 1000 * 4);
    ck_assert_uint_eq(keymap_bytes(all) - keymap_bytes(bare), pa.order + pa.times);
    ck_assert_uint_le(keymap_bytes(bare), 1000 * 13 + 200); /* 8 key + 4.7 index + bitmap + struct */
    for (int64_t k = 1; k <= 3; k++)
        put(bare, k * 100, (uint64_t)k * 1000);
    touch(bare, keymap_find(bare, 100), 9000);
    keymap_remove(bare, 200, keymap_find(bare, 200), false);
    keymap_set_key(bare, 1, KEYMAP_NO_KEY);
    ck_assert_int_eq(keymap_lru(bare), -1);
    ck_assert(!keymap_expired(bare, keymap_find(bare, 300), 1, 1u << 30));
    ck_assert_int_eq(keymap_find(bare, 300), 2);
    ck_assert_int_eq(keymap_lowest_free(bare), 1);
    keymap_set_clock(bare, 9000);
    int64_t keys[1000], state[2002];
    keymap_export(bare, keys, state);
    ck_assert_int_eq(state[0], 0); /* key 100, row 0 */
    ck_assert_int_eq(state[2], -1);
    ck_assert_int_eq(state[4], 1); /* key 300, row 2 */
    ck_assert_int_eq(state[1], 9);
    ck_assert_int_eq(state[5], 9);
    ck_assert_int_eq(state[3], 0);
    ck_assert_int_eq(keymap_new(&n, 1000, KEYMAP_ALL), CORE_OK);
    char err[128] = "";
    ck_assert_int_eq(keymap_import(n, keys, state, err, sizeof err), CORE_OK);
    ck_assert_int_eq(keymap_key_of(n, keymap_lru(n)), 100);
    ck_assert_int_eq(key_at(n, 1), 300);
    ck_assert(!keymap_expired(n, 0, 10, 18000)); /* 9 s + 10 s: not yet at 18 s */
    ck_assert(keymap_expired(n, 0, 10, 19000));
    /* and trimmed afterwards (a snapshot loaded for a table without ttl) */
    keymap_keep(n, KEYMAP_ORDER);
    keymap_parts(n, &pb);
    ck_assert_uint_eq(pb.times, 0);
    ck_assert_uint_eq(pb.order, pa.order);
    ck_assert(!keymap_expired(n, 0, 10, 1u << 30));
    ck_assert_int_eq(keymap_key_of(n, keymap_lru(n)), 100);
    keymap_free(n);
    keymap_free(bare);
    keymap_free(all);
}
END_TEST

/* ---- the write order against a model ---- */

enum { MODEL_CAP = 300 };

struct model {
    struct keymap *m;
    uint64_t last[MODEL_CAP]; /* the write counter at the row's last write */
    uint64_t ms[MODEL_CAP];   /* and its time */
    int64_t key[MODEL_CAP];
    bool used[MODEL_CAP];
    uint64_t writes, now, rng;
    int64_t next_key;
    /* the map's 3-byte stamps, emulated: when they run out, the used rows
     * are renumbered 0..used-1 (checked right after) */
    uint64_t stamp, renumbered;
    bool check_now;
};

/* The map renumbered (itself, or asked to): the model's count follows. */
static void model_renumbered(struct model *d)
{
    d->stamp = 0;
    for (int64_t q = 0; q < MODEL_CAP; q++)
        d->stamp += d->used[q];
    d->renumbered++;
    d->check_now = true;
}

static void model_stamp(struct model *d, int64_t r, bool skip_if_newest)
{
    if (skip_if_newest && d->last[r] == d->writes)
        return; /* the map keeps the newest row's stamp */
    if (d->stamp == 0xffffff)
        model_renumbered(d);
    d->stamp++;
}

static uint64_t model_rand(struct model *d, uint64_t n)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return d->rng % n;
}

static int64_t model_lru(const struct model *d)
{
    int64_t best = -1;
    for (int64_t r = 0; r < MODEL_CAP; r++)
        if (d->used[r] && (best < 0 || d->last[r] < d->last[best]))
            best = r;
    return best;
}

static int64_t model_used_row(struct model *d)
{
    for (int tries = 0; tries < 4 * MODEL_CAP; tries++) {
        int64_t r = (int64_t)model_rand(d, MODEL_CAP);
        if (d->used[r])
            return r;
    }
    return -1;
}

static void model_touch(struct model *d, int64_t r)
{
    keymap_touch(d->m, r, d->now); /* no ck_assert per write: each is a message */
    model_stamp(d, r, true);
    d->last[r] = ++d->writes;
    d->ms[r] = d->now;
}

/* One random write: a new key (into the lowest free row, else the model's
 * least recently written key's), a write of a known key, or a delete. */
static void model_step(struct model *d)
{
    uint64_t what = model_rand(d, 10);
    int64_t r = what < 5 ? -1 : model_used_row(d);
    d->now += model_rand(d, 40);
    if (r < 0) {
        r = keymap_lowest_free(d->m);
        if (r < 0) {
            r = model_lru(d);
            ck_assert_int_eq(keymap_lru(d->m), r);
            keymap_remove(d->m, d->key[r], r, true);
            d->used[r] = false;
        }
        d->key[r] = d->next_key++ * 2654435761;
        put(d->m, d->key[r], d->now);
        ck_assert_int_eq(keymap_find(d->m, d->key[r]), r); /* the lowest free row */
        model_stamp(d, r, false);
        d->used[r] = true;
        d->last[r] = ++d->writes;
        d->ms[r] = d->now;
    } else if (what < 9) {
        model_touch(d, r);
    } else {
        keymap_remove(d->m, d->key[r], r, false);
        keymap_set_key(d->m, r, KEYMAP_NO_KEY);
        d->used[r] = false;
    }
}

/* The map's order is the model's: its lru, the places it exports, and the
 * count of the keys expired under a ttl. */
static void model_check(struct model *d)
{
    ck_assert_int_eq(keymap_lru(d->m), model_lru(d));
    int64_t keys[MODEL_CAP], state[2 * MODEL_CAP + 2];
    keymap_export(d->m, keys, state);
    for (int64_t r = 0; r < MODEL_CAP; r++) {
        int64_t place = 0;
        for (int64_t q = 0; q < MODEL_CAP; q++)
            place += d->used[q] && d->last[q] < d->last[r];
        ck_assert_int_eq(state[2 * r], d->used[r] ? place : -1);
    }
    uint32_t ttl = 1 + (uint32_t)model_rand(d, 3);
    size_t expired = 0, limit = 1 + model_rand(d, MODEL_CAP);
    for (int64_t r = 0; r < MODEL_CAP; r++)
        expired += d->used[r] && d->now >= ((d->ms[r] + 999) / 1000 + ttl) * 1000;
    ck_assert_uint_eq(keymap_count_expired(d->m, ttl, d->now, limit),
                      expired < limit ? expired : limit);
}

/* Random inserts, writes, deletes and evictions on a map of 300 rows (its
 * oldest-rows buffer holds 64, so it is refilled again and again) with
 * renumberings asked for, both ways; then writes until the 3-byte stamps
 * run out and the map renumbers itself (the second time, in place just
 * before): the least recently written key, the export's places and the
 * expired count are the model's throughout. */
START_TEST(write_order_matches_a_model)
{
    struct model *d = calloc(1, sizeof *d);
    d->rng = 88172645463325252ull;
    d->next_key = 1;
    ck_assert_int_eq(keymap_new(&d->m, MODEL_CAP, KEYMAP_ALL), CORE_OK);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 20000; i++) {
            model_step(d);
            if (i % 3000 == 2999) { /* both ways of renumbering, asked for */
                keymap_renumber(d->m, i % 2 == 0);
                model_renumbered(d);
                model_check(d);
            }
            if (i % 10 == 0)
                model_check(d);
        }
        /* the stamps run out: writes of known keys to the renumbering
         * (2^24 of them at most), and 1000 after */
        uint64_t before = d->renumbered;
        for (int after = 0; after < 1000; after += d->renumbered > before) {
            int64_t r = (int64_t)model_rand(d, MODEL_CAP);
            if (d->used[r])
                model_touch(d, r);
            if (round == 1 && d->stamp == 0xfff000) {
                /* in place over nearly all of the stamps' range: 2000
                 * segments of old[]'s 8256 bits */
                keymap_renumber(d->m, true);
                model_renumbered(d);
            }
            if (d->check_now) {
                model_check(d);
                d->check_now = false;
            }
        }
        model_check(d);
    }
    ck_assert_uint_eq(d->renumbered, 2 + 2 * 6); /* one by itself, one in place, 6 asked each round */
    ck_assert_uint_gt(keymap_evictions(d->m), 1000);
    keymap_free(d->m);
    free(d);
}
END_TEST

/* Above 2^22 rows the stamps take 4 bytes: the same order and export. */
START_TEST(wide_stamps_keep_the_order)
{
    struct keymap *m = NULL;
    int64_t c = (1 << 22) + 1;
    ck_assert_int_eq(keymap_new(&m, c, KEYMAP_ORDER), CORE_OK);
    struct keymap_parts p;
    keymap_parts(m, &p);
    ck_assert_uint_ge(p.order, (size_t)c * 4);
    for (int64_t k = 0; k < 3000; k++)
        put(m, k * 31 + 7, 0);
    for (int64_t k = 0; k < 3000; k += 2) /* the even ones become the newest */
        touch(m, keymap_find(m, k * 31 + 7), 0);
    for (int64_t k = 1; k < 3000; k += 2) { /* the odd ones go, oldest first */
        int64_t row = keymap_lru(m);
        ck_assert_int_eq(keymap_key_of(m, row), k * 31 + 7);
        keymap_remove(m, k * 31 + 7, row, true);
        keymap_set_key(m, row, KEYMAP_NO_KEY);
    }
    ck_assert_int_eq(keymap_key_of(m, keymap_lru(m)), 7);
    ck_assert_int_eq(key_at(m, 0), 7);
    ck_assert_int_eq(key_at(m, 1499), 2998 * 31 + 7);
    keymap_free(m);
}
END_TEST


/* ---- keyed tables ---- */

static struct table *keyed(int64_t cap, int64_t dim, enum table_evict evict, uint32_t ttl)
{
    struct table_keyed_settings k;
    table_keyed_settings_init(&k);
    k.capacity = cap;
    k.seed = 5;
    k.evict = evict;
    k.ttl_seconds = ttl;
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = NULL;
    char err[256] = "";
    ck_assert_msg(table_new_keyed(&t, "k", dim, &k, &s, err, sizeof err) == CORE_OK, "%s", err);
    return t;
}

static int rows_write(struct table *t, const int64_t *keys, size_t n, uint64_t ms)
{
    float v[64 * 4];
    for (size_t i = 0; i < n * 4; i++)
        v[i] = (float)i;
    struct table_keyed_result r;
    return table_keyed_apply(t, TABLE_KEYED_ROWS, NULL, ms, keys, n, v, NULL, &r);
}

START_TEST(config_errors_name_the_setting)
{
    struct table_keyed_settings k;
    table_keyed_settings_init(&k);
    k.capacity = 8;
    struct table_settings s;
    table_settings_init(&s);
    s.has_padding = true;
    struct table *t = NULL;
    char err[256] = "";
    ck_assert_int_eq(table_new_keyed(&t, "k", 4, &k, &s, err, sizeof err), CORE_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "padding_idx"));
}
END_TEST

START_TEST(lru_eviction_and_refusals)
{
    struct table *t = keyed(3, 4, TABLE_EVICT_LRU, 0);
    int64_t a[] = {1, 2, 3}, b[] = {1}, c[] = {4}, big[] = {5, 6, 7, 8};
    ck_assert_int_eq(rows_write(t, a, 3, 1000), CORE_OK);
    ck_assert_int_eq(rows_write(t, b, 1, 2000), CORE_OK); /* 2 is now the oldest */
    ck_assert_int_eq(rows_write(t, c, 1, 3000), CORE_OK);
    ck_assert_int_eq(keymap_find(t->km, 2), -1);
    ck_assert_int_ge(keymap_find(t->km, 1), 0);
    ck_assert_int_eq(keymap_find(t->km, 4), 1); /* 2's row, reused */
    uint64_t seq = table_log_seq(t);
    ck_assert_int_eq(rows_write(t, big, 4, 4000), CORE_ECAPACITY);
    ck_assert_int_eq(table_log_seq(t), seq + 1); /* the refusal keeps its seq */
    ck_assert_int_eq(keymap_used(t->km), 3);
    table_free(t);

    t = keyed(2, 4, TABLE_EVICT_NONE, 0);
    ck_assert_int_eq(rows_write(t, a, 2, 1000), CORE_OK);
    size_t bad = 0;
    ck_assert_int_eq(table_keyed_check(t, c, 1, &bad), CORE_ECAPACITY);
    ck_assert_int_eq(rows_write(t, c, 1, 1000), CORE_ECAPACITY);
    ck_assert_int_eq(keymap_find(t->km, 4), -1);
    table_free(t);
}
END_TEST

START_TEST(ttl_follows_the_record_clock)
{
    struct table *t = keyed(4, 4, TABLE_EVICT_NONE, 10);
    int64_t a[] = {1, 2}, b[] = {2}, c[] = {3};
    ck_assert_int_eq(rows_write(t, a, 2, 1000000), CORE_OK);
    ck_assert_int_eq(rows_write(t, b, 1, 1005000), CORE_OK);
    /* 10 s after the first write (to the second, rounded up) key 1 goes */
    ck_assert_int_eq(rows_write(t, c, 1, 1011000), CORE_OK);
    ck_assert_int_eq(keymap_find(t->km, 1), -1);
    ck_assert_int_ge(keymap_find(t->km, 2), 0);
    ck_assert_int_eq(keymap_evictions(t->km), 1);
    /* a record stamped earlier does not move the clock back */
    ck_assert_int_eq(rows_write(t, c, 1, 5), CORE_OK);
    ck_assert_int_eq(keymap_clock(t->km), 1011000);
    table_free(t);
}
END_TEST

/* The same records onto two tables give the same bits, keys and order. */
START_TEST(same_records_same_table)
{
    struct table *x = keyed(16, 8, TABLE_EVICT_LRU, 3), *y = keyed(16, 8, TABLE_EVICT_LRU, 3);
    struct optim_config cfg;
    optim_config_defaults(&cfg, OPTIM_SPARSE_ADAM);
    uint64_t rnd = 42;
    for (int step = 0; step < 200; step++) {
        int64_t keys[12];
        float g[12 * 8];
        for (int i = 0; i < 12; i++) {
            rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
            keys[i] = (int64_t)(rnd >> 40) % 40 - 20;
        }
        for (int i = 0; i < 12 * 8; i++)
            g[i] = (float)((int)(i * 37 + step) % 17 - 8) / 8.0f;
        struct table_keyed_result r1, r2;
        uint64_t ms = 1000u * (uint64_t)step / 3;
        ck_assert_int_eq(table_keyed_apply(x, TABLE_KEYED_GRADIENTS, &cfg, ms, keys, 12, g, NULL,
                                           &r1), CORE_OK);
        ck_assert_int_eq(table_keyed_apply(y, TABLE_KEYED_GRADIENTS, &cfg, ms, keys, 12, g, NULL,
                                           &r2), CORE_OK);
        ck_assert_int_eq(r1.inserted, r2.inserted);
    }
    ck_assert_int_gt(keymap_evictions(x->km), 0);
    for (int64_t r = 0; r < 16; r++) {
        ck_assert_int_eq(keymap_key_of(x->km, r), keymap_key_of(y->km, r));
        ck_assert_int_eq(memcmp(matrix_row(&x->w, r), matrix_row(&y->w, r), 8 * sizeof(float)),
                         0);
        ck_assert_int_eq(memcmp(matrix_row(&x->optim.exp_avg_sq, r),
                                matrix_row(&y->optim.exp_avg_sq, r), 8 * sizeof(float)), 0);
    }
    table_free(x);
    table_free(y);
}
END_TEST

/* Readers look up keys while a writer inserts, evicts and rewrites rows:
 * every row read is whole and the key's (all its floats equal the key's
 * value), or the key is missing; never another key's row. */
struct race {
    struct table *t;
    _Atomic bool stop;
    _Atomic long reads, hits;
};

static void *reader(void *arg)
{
    struct race *r = arg;
    float row[16];
    while (!atomic_load(&r->stop)) {
        for (int64_t key = 0; key < 64; key++) {
            if (table_keyed_read(r->t, key, 0, row, NULL)) {
                for (int j = 0; j < 16; j++)
                    ck_assert_float_eq(row[j], (float)key);
                atomic_fetch_add(&r->hits, 1);
            }
            atomic_fetch_add(&r->reads, 1);
        }
    }
    return NULL;
}

START_TEST(readers_never_see_torn_or_foreign_rows)
{
    struct table_keyed_settings k;
    table_keyed_settings_init(&k);
    k.capacity = 24; /* fewer rows than keys: constant eviction and reuse */
    k.missing = TABLE_MISSING_ERROR;
    struct table_settings s;
    table_settings_init(&s);
    struct race r = {.stop = false};
    char err[128];
    ck_assert_int_eq(table_new_keyed(&r.t, "race", 16, &k, &s, err, sizeof err), CORE_OK);
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, reader, &r);
    float v[4 * 16];
    for (int it = 0; it < 20000; it++) {
        int64_t keys[4];
        for (int i = 0; i < 4; i++) {
            keys[i] = (it * 7 + i * 13) % 64;
            for (int j = 0; j < 16; j++)
                v[i * 16 + j] = (float)keys[i];
        }
        struct table_keyed_result res;
        ck_assert_int_eq(table_keyed_apply(r.t, TABLE_KEYED_ROWS, NULL, 0, keys, 4, v, NULL, &res),
                         CORE_OK);
        if (it % 5 == 0)
            table_keyed_apply(r.t, TABLE_KEYED_DELETE, NULL, 0, keys, 1, NULL, NULL, &res);
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_gt(r.hits, 0);
    table_free(r.t);
}
END_TEST

/* keymap_candidate answers a tag match without reading keys[]: on a map
 * with short tags some keys that are not there get a candidate (another
 * key's row). Lookups must still answer each key's own row, and not found
 * for the others. */
START_TEST(tag_collisions_are_validated)
{
    enum { CAP = 1 << 16, USED = 60000, DIM = 4 };
    struct table_keyed_settings k;
    table_keyed_settings_init(&k);
    k.capacity = CAP; /* row + 1 takes 17 bits of a slot, 4 the distance: 11-bit tags */
    k.missing = TABLE_MISSING_ERROR;
    struct table_settings s;
    table_settings_init(&s);
    struct table *t = NULL;
    char err[128];
    ck_assert_int_eq(table_new_keyed(&t, "tags", DIM, &k, &s, err, sizeof err), CORE_OK);
    int64_t *keys = malloc(USED * sizeof *keys);
    float *v = malloc((size_t)USED * DIM * sizeof *v);
    for (int i = 0; i < USED; i++) {
        keys[i] = (int64_t)i * 7919 + 13; /* odd multiples: never a key below */
        for (int j = 0; j < DIM; j++)
            v[i * DIM + j] = (float)i;
    }
    struct table_keyed_result res;
    for (int i = 0; i < USED; i += 1000)
        ck_assert_int_eq(table_keyed_apply(t, TABLE_KEYED_ROWS, NULL, 0, keys + i, 1000,
                                           v + (size_t)i * DIM, NULL, &res), CORE_OK);
    float out[16 * DIM];
    for (int i = 0; i + 16 <= USED; i += 16) {
        ck_assert_int_eq(table_lookup(t, keys + i, 16, out, NULL), CORE_OK);
        for (int q = 0; q < 16; q++)
            ck_assert_float_eq(out[q * DIM], (float)(i + q));
    }
    int false_candidates = 0;
    for (int64_t x = 0; x < 400000; x++) {
        int64_t absent = x * 7919 + 14; /* 14 mod 7919: never a key */
        if (keymap_candidate(t->km, absent) >= 0)
            false_candidates++;
        int64_t ids[16];
        for (int q = 0; q < 16; q++)
            ids[q] = keys[(x + q) % USED];
        ids[x % 16] = absent;
        size_t bad = 99;
        ck_assert_int_eq(table_lookup(t, ids, 16, out, &bad), CORE_ENOTFOUND);
        ck_assert_uint_eq(bad, (size_t)(x % 16));
    }
    ck_assert_int_gt(false_candidates, 0); /* the path above was taken */
    free(keys);
    free(v);
    table_free(t);
}
END_TEST

/* A record's time_ms as the publisher stamped it, one day ahead of
 * JetStream's clock: applied with that clock as the cap (cluster mode), the
 * table's clock is JetStream's, and a key written an hour before does not
 * expire; without the cap it would. */
START_TEST(record_time_capped_by_the_stream_clock)
{
    for (int capped = 0; capped < 2; capped++) {
        struct table *t = keyed(8, 4, TABLE_EVICT_LRU, 7200); /* ttl 2 h */
        uint64_t now = 1700000000000ull, day = 86400000ull;
        int64_t k1 = 11, k2 = 12;
        float v[4] = {1, 2, 3, 4};
        struct journal_write w = {.op = JOURNAL_ROWS, .ids = &k1, .n = 1, .values = v};
        struct journal_record_head h;
        struct iovec parts[3];
        for (int rec = 0; rec < 2; rec++) {
            w.ids = rec == 0 ? &k1 : &k2;
            int np = journal_record_parts(t, &w, &h, parts);
            h.time_ms = rec == 0 ? now - 3600000u : now + day; /* the second: a clock ahead */
            unsigned char buf[512];
            size_t len = 0;
            for (int i = 0; i < np; i++) {
                memcpy(buf + len, parts[i].iov_base, parts[i].iov_len);
                len += parts[i].iov_len;
            }
            memcpy(buf, &h, sizeof h);
            char err[256] = "";
            ck_assert_msg(journal_apply_payload_keyed(t, table_log_seq(t) + 1, JOURNAL_ROWS, buf,
                                                      len, capped ? now : 0, NULL, NULL, NULL,
                                                      NULL, err, sizeof err) == CORE_OK,
                          "%s", err);
        }
        ck_assert_uint_eq(keymap_clock(t->km), capped ? now : now + day);
        ck_assert_int_eq(keymap_used(t->km), capped ? 2 : 1); /* k1 expired at k2's write */
        table_free(t);
    }
}
END_TEST

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
/* A keyed sparse_adam step whose optimizer state (2 x 16 MB, taken on the
 * first step) cannot be allocated fails with nothing changed: no key
 * inserted, the seq and version where they were. Then, with room, the same
 * step inserts them. (Sanitizers reserve terabytes of shadow memory, so
 * they cannot run under an address-space cap.) */
START_TEST(failed_step_leaves_no_keys)
{
    enum { DIM = 1024 };
    struct table *t = keyed(4096, DIM, TABLE_EVICT_LRU, 0);
    struct optim_config cfg;
    optim_config_defaults(&cfg, OPTIM_SPARSE_ADAM);
    int64_t keys[8] = {11, 12, 13, 14, 15, 16, 17, 18};
    float *g = calloc(8 * DIM, sizeof *g);
    ck_assert_ptr_nonnull(g);
    for (size_t i = 0; i < 8 * DIM; i++)
        g[i] = 0.25f;
    uint64_t seq = table_log_seq(t), version = table_version(t);
    struct rlimit old, cap;
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
    cap = old;
    cap.rlim_cur = (rlim_t)(testutil_vm_bytes() + 8 * 1024 * 1024);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &cap), 0);
    struct table_keyed_result r;
    int rc = table_keyed_apply(t, TABLE_KEYED_GRADIENTS, &cfg, 1000, keys, 8, g, NULL, &r);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
    ck_assert_int_eq(rc, CORE_ENOMEM);
    ck_assert_int_eq(keymap_used(t->km), 0);
    ck_assert_int_eq(keymap_find(t->km, 11), -1);
    ck_assert_uint_eq(table_log_seq(t), seq);
    ck_assert_uint_eq(table_version(t), version);
    ck_assert_int_eq(table_keyed_apply(t, TABLE_KEYED_GRADIENTS, &cfg, 1000, keys, 8, g, NULL, &r),
                     CORE_OK);
    ck_assert_uint_eq(r.inserted, 8);
    ck_assert_int_eq(keymap_used(t->km), 8);
    free(g);
    table_free(t);
}
END_TEST
#endif

static Suite *keymap_suite(void)
{
    Suite *s = suite_create("keymap");
    TCase *tc = tcase_create("map");
    tcase_add_test(tc, insert_find_delete_reuse);
    tcase_add_test(tc, lru_order_and_export_import);
    tcase_add_test(tc, freed_rows_export_like_unused_ones);
    tcase_add_test(tc, parts_kept_only_when_asked);
    suite_add_tcase(s, tc);
    tc = tcase_create("order");
    tcase_set_timeout(tc, 120); /* 2^25 writes, checked */
    tcase_add_test(tc, write_order_matches_a_model);
    tcase_add_test(tc, wide_stamps_keep_the_order);
    suite_add_tcase(s, tc);
    tc = tcase_create("keyed");
    tcase_add_test(tc, config_errors_name_the_setting);
    tcase_add_test(tc, lru_eviction_and_refusals);
    tcase_add_test(tc, ttl_follows_the_record_clock);
    tcase_add_test(tc, same_records_same_table);
    tcase_add_test(tc, readers_never_see_torn_or_foreign_rows);
    tcase_add_test(tc, tag_collisions_are_validated);
    tcase_add_test(tc, record_time_capped_by_the_stream_clock);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    tcase_add_test(tc, failed_step_leaves_no_keys);
#endif
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(keymap_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
