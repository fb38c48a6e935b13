/* keyed.c - keyed tables: int64 keys resolved to rows through the key map
 * (keymap.h), inserted by writes, evicted by ttl or lru, all of it inside
 * the table's write lock and in log order; see "keyed tables" in table.h.
 *
 * Readers: a key's row is copied under the row's stripe seqlock together
 * with keys[row]; the writer changes keys[row] only inside that bracket
 * (with the row's new contents and state), and publishes a new key in the
 * index only after, so a reader sees the row of its key whole or looks
 * again. */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "keymap.h"
#include "rng.h"
#include "table.h"
#include "table_internal.h"

/* The lookup's pipeline, so that the misses of slots, keys and rows
 * overlap: keys between a home slot's fetch and the copy, between a
 * candidate row's fetch and the copy, and the candidates kept. */
#define SLOT_AHEAD 16
#define ROW_AHEAD 8
#define ROW_RING 16 /* > ROW_AHEAD, a power of two */

void table_keyed_settings_init(struct table_keyed_settings *k)
{
    memset(k, 0, sizeof *k);
    k->std = 1.0;
    k->missing = TABLE_MISSING_ERROR;
    k->evict = TABLE_EVICT_LRU;
}

static int check_keyed(const char *name, const struct table_keyed_settings *k,
                       const struct table_settings *s, char *err, size_t errlen)
{
    if (k->capacity < 1 || k->capacity > KEYMAP_MAX_CAPACITY)
        return core_fail(err, errlen, CORE_EINVAL,
                         "table '%s': capacity must be in [1, %lld], got %lld", name,
                         KEYMAP_MAX_CAPACITY, (long long)k->capacity);
    if (!isfinite(k->std) || k->std < 0)
        return core_fail(err, errlen, CORE_EINVAL,
                         "table '%s': init.std must be finite and >= 0, got %g", name, k->std);
    if (s->has_padding)
        return core_fail(err, errlen, CORE_EINVAL,
                         "table '%s': a keyed table takes no padding_idx (its ids are keys, "
                         "not rows; leave a key out of a request instead)", name);
    if (s->has_max_norm)
        return core_fail(err, errlen, CORE_EINVAL,
                         "table '%s': max_norm is not supported on keyed tables", name);
    if (s->oov_id >= 0)
        return core_fail(err, errlen, CORE_EINVAL,
                         "table '%s': a keyed table has no vocabulary, so no oov", name);
    return CORE_OK;
}

/* What the key map must keep for these settings: the write order for lru
 * eviction and for ttl (expiry takes the oldest written first), the write
 * times for ttl. A table with "evict": "none" and no ttl keeps neither. */
static unsigned keymap_parts_for(const struct table_keyed_settings *k)
{
    unsigned keep = 0;
    if (k->evict == TABLE_EVICT_LRU || k->ttl_seconds > 0)
        keep |= KEYMAP_ORDER;
    if (k->ttl_seconds > 0)
        keep |= KEYMAP_TIMES;
    return keep;
}

int table_new_keyed(struct table **out, const char *name, int64_t dim,
                    const struct table_keyed_settings *k, const struct table_settings *s,
                    char *err, size_t errlen)
{
    *out = NULL;
    int rc = check_keyed(name, k, s, err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct matrix w;
    if (dim < 1)
        return core_fail(err, errlen, CORE_EINVAL, "embedding_dim must be >= 1, got %lld",
                         (long long)dim);
    rc = matrix_init(&w, k->capacity, dim); /* zeros: free rows read as zeros */
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "table '%s': cannot allocate %lld x %lld floats",
                         name, (long long)k->capacity, (long long)dim);
    struct table *t = NULL;
    rc = table_new(&t, name, &w, NULL, s, err, errlen);
    if (rc != CORE_OK) {
        matrix_deinit(&w);
        return rc;
    }
    if (keymap_new(&t->km, k->capacity, keymap_parts_for(k)) != CORE_OK) {
        table_free(t);
        return core_fail(err, errlen, CORE_ENOMEM, "table '%s': out of memory for its keys",
                         name);
    }
    t->ks = *k;
    *out = t;
    return CORE_OK;
}

int table_keyed_attach(struct table *t, const int64_t *keys, const int64_t *state, char *err,
                       size_t errlen)
{
    struct keymap *m = NULL;
    if (t->km != NULL)
        return core_fail(err, errlen, CORE_EINVAL, "table '%s' has keys already", t->name);
    if (keymap_new(&m, t->w.rows, KEYMAP_ALL) != CORE_OK) /* trimmed by _configure */
        return core_fail(err, errlen, CORE_ENOMEM, "out of memory for %lld keys",
                         (long long)t->w.rows);
    int rc = keymap_import(m, keys, state, err, errlen);
    if (rc != CORE_OK) {
        keymap_free(m);
        return rc;
    }
    t->km = m;
    table_keyed_settings_init(&t->ks);
    t->ks.capacity = t->w.rows;
    return CORE_OK;
}

int table_keyed_configure(struct table *t, const struct table_keyed_settings *k, char *err,
                          size_t errlen)
{
    int rc = check_keyed(t->name, k, &t->s, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (t->km == NULL)
        return core_fail(err, errlen, CORE_EINVAL,
                         "table '%s': the snapshot holds no keys.npy, so it is not a keyed "
                         "table", t->name);
    if (k->capacity != t->w.rows)
        return core_fail(err, errlen, CORE_EINVAL,
                         "table '%s': the snapshot has capacity %lld but the config says %lld",
                         t->name, (long long)t->w.rows, (long long)k->capacity);
    t->ks = *k;
    keymap_keep(t->km, keymap_parts_for(k));
    return CORE_OK;
}

bool table_is_keyed(const struct table *t)
{
    return t->km != NULL;
}

const struct table_keyed_settings *table_keyed_settings(const struct table *t)
{
    return t->km != NULL ? &t->ks : NULL;
}

void table_keyed_counts(const struct table *t, int64_t *rows_used, uint64_t *evictions)
{
    *rows_used = t->km != NULL ? keymap_used(t->km) : 0;
    *evictions = t->km != NULL ? keymap_evictions(t->km) : 0;
}

size_t table_keyed_bytes(const struct table *t)
{
    return t->km != NULL ? keymap_bytes(t->km) : 0;
}

int64_t table_keyed_key_of(const struct table *t, int64_t row)
{
    return keymap_key_of(t->km, row);
}

/* ---- rows of new keys ---- */

/* The first row of key: N(0, std) from a generator seeded by the table's
 * seed and the key, so every replica and every replay draws the same. */
static void init_row(const struct table *t, int64_t key, float *out)
{
    struct rng r;
    rng_seed(&r, t->ks.seed, (uint64_t)key);
    rng_fill_normal_scaled(&r, out, (size_t)t->w.dim, t->ks.std); /* std * N(0, 1) in double */
}

/* ---- readers ---- */

/* The row of a key that is missing, by the table's policy. */
static bool missing_row(const struct table *t, int64_t key, float *out)
{
    switch (t->ks.missing) {
    case TABLE_MISSING_ZEROS:
        memset(out, 0, (size_t)t->w.dim * sizeof(float));
        return true;
    case TABLE_MISSING_INIT:
        init_row(t, key, out);
        return true;
    case TABLE_MISSING_ERROR:
        break;
    }
    return false;
}

/* Copies candidate row of key under its stripe; true when it was the
 * key's (live at now_ms), false to look again (*gone: the key is missing). */
static bool copy_keyed(const struct table *t, int64_t key, int64_t row, uint64_t now_ms,
                       float *out, bool *gone)
{
    int64_t stripe = table_stripe_of(row);
    size_t bytes = (size_t)t->w.dim * sizeof(float);
    for (;;) {
        uint32_t s = table_read_begin(t, stripe);
        int64_t k = keymap_key_of(t->km, row);
        bool expired = keymap_expired(t->km, row, t->ks.ttl_seconds, now_ms);
        memcpy(out, matrix_row(&t->w, row), bytes);
        if (table_read_retry(t, stripe, s))
            continue;
        *gone = k == key && expired;
        return k == key && !expired;
    }
}

bool table_keyed_read(const struct table *t, int64_t key, uint64_t now_ms, float *out,
                      int64_t *row_out)
{
    if (row_out != NULL)
        *row_out = -1;
    for (int64_t row; key != KEYMAP_NO_KEY && (row = keymap_find_reader(t->km, key)) >= 0;) {
        bool gone = false;
        if (copy_keyed(t, key, row, now_ms, out, &gone)) {
            if (row_out != NULL)
                *row_out = row;
            return true;
        }
        if (gone)
            break;
    }
    return missing_row(t, key, out);
}

static inline void prefetch_row(const struct table *t, int64_t row)
{
    const char *p = (const char *)matrix_row(&t->w, row);
    for (size_t off = 0; off < (size_t)t->w.dim * sizeof(float); off += 64)
        __builtin_prefetch(p + off, 0, 0);
}

/* Asks for key's candidate row (the row itself, its key and its time) and
 * returns it, or -1. */
static int64_t candidate_ahead(const struct table *t, int64_t key)
{
    int64_t row = key == KEYMAP_NO_KEY ? -1 : keymap_candidate(t->km, key);
    if (row >= 0) {
        prefetch_row(t, row);
        keymap_prefetch_row(t->km, row, t->ks.ttl_seconds > 0);
    }
    return row;
}

/* Keyed forward, software-pipelined so that the misses overlap: home slots
 * are fetched SLOT_AHEAD keys ahead of the copy; ROW_AHEAD keys ahead, each
 * key's candidate row (a tag match, keys[] not read yet) is fetched with its
 * key and time; each row is copied and validated as it comes. A candidate
 * that is not the key's, or none, is resolved exactly by table_keyed_read.
 * (Resolving 16 candidates before the first copy made the slots' misses a
 * round trip of their own: 0.51x dense against 0.57x in bench/keyed.) */
int table_keyed_lookup(const struct table *t, const int64_t *keys, size_t n, float *out,
                       size_t *bad)
{
    size_t dim = (size_t)t->w.dim;
    uint64_t now = t->ks.ttl_seconds > 0 ? clock_wall_ms() : 0;
    int64_t rows[ROW_RING];
    for (size_t i = 0; i < n && i < SLOT_AHEAD; i++)
        keymap_prefetch(t->km, keys[i]);
    for (size_t i = 0; i < n && i < ROW_AHEAD; i++)
        rows[i % ROW_RING] = candidate_ahead(t, keys[i]);
    for (size_t i = 0; i < n; i++) {
        if (i + SLOT_AHEAD < n)
            keymap_prefetch(t->km, keys[i + SLOT_AHEAD]);
        if (i + ROW_AHEAD < n)
            rows[(i + ROW_AHEAD) % ROW_RING] = candidate_ahead(t, keys[i + ROW_AHEAD]);
        int64_t row = rows[i % ROW_RING];
        float *dst = out + i * dim;
        bool gone = false;
        if (row >= 0 && copy_keyed(t, keys[i], row, now, dst, &gone))
            continue;
        if (!gone ? table_keyed_read(t, keys[i], now, dst, NULL) : missing_row(t, keys[i], dst))
            continue;
        if (bad != NULL)
            *bad = i;
        return CORE_ENOTFOUND;
    }
    return CORE_OK;
}

/* ---- writes ---- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts v[0..n) and returns the number of distinct values. */
static size_t distinct(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_i64);
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += i == 0 || v[i] != v[i - 1];
    return d;
}

int table_keyed_check(struct table *t, const int64_t *keys, size_t n, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == KEYMAP_NO_KEY) {
            if (bad != NULL)
                *bad = i;
            return CORE_ERANGE;
        }
    }
    int64_t *scratch = malloc(n * sizeof *scratch + 1);
    if (scratch == NULL)
        return CORE_ENOMEM;
    memcpy(scratch, keys, n * sizeof *scratch);
    int rc = (int64_t)distinct(scratch, n) > t->ks.capacity ? CORE_ECAPACITY : CORE_OK;
    /* with evict none and no ttl nothing makes room: refuse before the log
     * what would surely not fit (the apply decides the races) */
    if (rc == CORE_OK && t->ks.evict == TABLE_EVICT_NONE && t->ks.ttl_seconds == 0) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (keymap_find_reader(t->km, keys[i]) < 0)
                scratch[m++] = keys[i];
        if ((int64_t)distinct(scratch, m) > t->ks.capacity - keymap_used(t->km))
            rc = CORE_ECAPACITY;
    }
    free(scratch);
    return rc;
}

/* Fresh optimizer state for row (its key changed): zero moments, the
 * accumulator at its initial value, as a row torch never stepped. */
static void reset_state(struct table *t, int64_t row, const struct optim_config *cfg)
{
    struct optim *o = &t->optim;
    size_t bytes = (size_t)t->w.dim * sizeof(float);
    if (o->exp_avg.data != NULL)
        memset(matrix_row(&o->exp_avg, row), 0, bytes);
    if (o->exp_avg_sq.data != NULL)
        memset(matrix_row(&o->exp_avg_sq, row), 0, bytes);
    if (o->sum.data != NULL) {
        double init = cfg != NULL && cfg->kind == OPTIM_ADAGRAD
                          ? cfg->initial_accumulator_value
                          : o->cfg.initial_accumulator_value;
        float *s = matrix_row(&o->sum, row);
        for (int64_t j = 0; j < t->w.dim; j++)
            s[j] = (float)init;
    }
}

/* Frees row (holding key): out of the index, then cleared in its bracket. */
static void free_row(struct table *t, int64_t key, int64_t row, bool evicted)
{
    keymap_remove(t->km, key, row, evicted);
    int64_t stripe = table_stripe_of(row);
    table_write_begin(t, stripe);
    keymap_set_key(t->km, row, KEYMAP_NO_KEY);
    memset(matrix_row(&t->w, row), 0, (size_t)t->w.dim * sizeof(float));
    table_update_norm(t, row);
    table_write_end(t, stripe);
}

/* Evicts, oldest first, the keys whose last write is ttl or more before now. */
static void expire(struct table *t, uint64_t now)
{
    if (t->ks.ttl_seconds == 0)
        return;
    int64_t row;
    while ((row = keymap_lru(t->km)) >= 0 &&
           keymap_expired(t->km, row, t->ks.ttl_seconds, now))
        free_row(t, keymap_key_of(t->km, row), row, true);
}

/* Gives key a row: the lowest free one, else the least recently written
 * key's (evicted). Initializes it and publishes the key. */
static int64_t insert_key(struct table *t, int64_t key, uint64_t now,
                          const struct optim_config *cfg, const float *vector)
{
    int64_t row = keymap_lowest_free(t->km);
    if (row < 0) {
        row = keymap_lru(t->km); /* fits() made sure there is one: lru keeps the order */
        assert(row >= 0);
        keymap_remove(t->km, keymap_key_of(t->km, row), row, true);
    }
    int64_t stripe = table_stripe_of(row);
    table_write_begin(t, stripe);
    keymap_set_key(t->km, row, key);
    /* a row assignment's key starts as its vector: readers never see the
     * initial row it would have had for an instant */
    if (vector != NULL)
        memcpy(matrix_row(&t->w, row), vector, (size_t)t->w.dim * sizeof(float));
    else
        init_row(t, key, matrix_row(&t->w, row));
    reset_state(t, row, cfg);
    table_update_norm(t, row);
    table_write_end(t, stripe);
    keymap_insert(t->km, key, row, now);
    return row;
}

/* Whether the request's new keys fit; rows[i] is the live row of keys[i]
 * or -1. scratch holds n int64s. */
static bool fits(struct table *t, const int64_t *keys, const int64_t *rows, size_t n,
                 uint64_t now, int64_t *scratch)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i] < 0)
            scratch[m++] = keys[i];
    size_t fresh = distinct(scratch, m);
    if (fresh == 0)
        return true;
    int64_t cap = t->ks.capacity, used = keymap_used(t->km);
    if (t->ks.evict == TABLE_EVICT_NONE) {
        if ((int64_t)fresh <= cap - used)
            return true;
        size_t short_by = (size_t)((int64_t)fresh - (cap - used));
        return keymap_count_expired(t->km, t->ks.ttl_seconds, now, short_by) == short_by;
    }
    m = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i] >= 0)
            scratch[m++] = rows[i];
    return (int64_t)(fresh + distinct(scratch, m)) <= cap;
}

static int check_values(const struct table *t, enum table_keyed_op op, const int64_t *keys,
                        size_t n, const float *values, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        if (keys[i] == KEYMAP_NO_KEY) {
            *bad = i;
            return CORE_ERANGE;
        }
    }
    if (op == TABLE_KEYED_DELETE)
        return CORE_OK;
    size_t dim = (size_t)t->w.dim;
    for (size_t k = 0; k < n * dim; k++) {
        if (!isfinite(values[k])) {
            *bad = op == TABLE_KEYED_GRADIENTS ? k : k / dim;
            return CORE_EINVAL;
        }
    }
    return CORE_OK;
}

static void apply_delete(struct table *t, const int64_t *keys, size_t n,
                         struct table_keyed_result *res)
{
    for (size_t i = 0; i < n; i++) {
        int64_t row = keymap_find(t->km, keys[i]);
        if (row >= 0) {
            free_row(t, keys[i], row, false);
            res->rows++;
        }
    }
    res->version = atomic_fetch_add_explicit(&t->version, 1, memory_order_acq_rel) + 1;
    atomic_fetch_add_explicit(&t->log_seq, 1, memory_order_acq_rel);
}

/* Resolves every key to its row, inserting the new ones (see table.h). */
static void resolve(struct table *t, const int64_t *keys, size_t n, uint64_t now,
                    const struct optim_config *cfg, const float *vectors, int64_t *rows,
                    struct table_keyed_result *res)
{
    for (size_t i = 0; i < n; i++)
        if (rows[i] >= 0)
            keymap_touch(t->km, rows[i], now);
    for (size_t i = 0; i < n; i++) {
        if (rows[i] >= 0)
            continue;
        int64_t row = keymap_find(t->km, keys[i]); /* a repeat of a key new here */
        if (row >= 0) {
            keymap_touch(t->km, row, now);
        } else {
            row = insert_key(t, keys[i], now, cfg,
                             vectors != NULL ? vectors + i * (size_t)t->w.dim : NULL);
            res->inserted++;
        }
        rows[i] = row;
    }
}

int table_keyed_apply(struct table *t, enum table_keyed_op op, const struct optim_config *cfg,
                      uint64_t time_ms, const int64_t *keys, size_t n, const float *values,
                      size_t *bad, struct table_keyed_result *res)
{
    size_t scratch_bad = 0;
    memset(res, 0, sizeof *res);
    if (bad == NULL)
        bad = &scratch_bad;
    if (t->km == NULL)
        return CORE_EINVAL;
    int rc = check_values(t, op, keys, n, values, bad);
    if (rc != CORE_OK)
        return rc;
    int64_t *rows = malloc(2 * n * sizeof *rows + 1);
    if (rows == NULL)
        return CORE_ENOMEM;
    pthread_mutex_lock(&t->write_lock);
    uint64_t now = time_ms > keymap_clock(t->km) ? time_ms : keymap_clock(t->km);
    if (op == TABLE_KEYED_DELETE) {
        keymap_set_clock(t->km, now);
        expire(t, now);
        apply_delete(t, keys, n, res);
        pthread_mutex_unlock(&t->write_lock);
        free(rows);
        return CORE_OK;
    }
    for (size_t i = 0; i < n && i < SLOT_AHEAD; i++)
        keymap_prefetch(t->km, keys[i]);
    for (size_t i = 0; i < n; i++) {
        if (i + SLOT_AHEAD < n)
            keymap_prefetch(t->km, keys[i + SLOT_AHEAD]);
        int64_t row = keymap_find(t->km, keys[i]);
        rows[i] = row >= 0 && keymap_expired(t->km, row, t->ks.ttl_seconds, now) ? -1 : row;
    }
    if (!fits(t, keys, rows, n, now, rows + n)) {
        /* refused whole; the record still takes its seq */
        atomic_fetch_add_explicit(&t->log_seq, 1, memory_order_acq_rel);
        pthread_mutex_unlock(&t->write_lock);
        free(rows);
        return CORE_ECAPACITY;
    }
    /* what the step allocates is taken before the first insert: a step
     * that fails leaves no keys behind */
    struct step_plan *plan = NULL;
    if (op == TABLE_KEYED_GRADIENTS && (rc = table_step_prepare(t, cfg, n, &plan)) != CORE_OK) {
        pthread_mutex_unlock(&t->write_lock);
        free(rows);
        return rc;
    }
    keymap_set_clock(t->km, now);
    expire(t, now);
    resolve(t, keys, n, now, cfg, op == TABLE_KEYED_ROWS ? values : NULL, rows, res);
    if (op == TABLE_KEYED_GRADIENTS) {
        table_step_run(t, cfg, plan, rows, n, values, &res->version, &res->rows);
    } else {
        res->version = table_assign_locked(t, rows, n, values);
        memcpy(rows + n, rows, n * sizeof *rows);
        res->rows = distinct(rows + n, n);
    }
    pthread_mutex_unlock(&t->write_lock);
    free(rows);
    return rc;
}
