/* journal.c - group commit and ordered apply over a table's wal; see
 * journal.h.
 *
 * Threads and locks. `mu` orders appends: a write's record is appended and
 * the write queued under it, so queue order is log order. In JOURNAL_SYNC
 * mode the committer thread takes the whole queue, syncs once for all of
 * it (the writes appended while it synced form the next batch, so a writer
 * waits for at most one sync that began after its append), then applies
 * the batch in order and calls each done. In the other modes nothing waits
 * for the disk, so the write is applied right after its append, still
 * under mu (the committer then only syncs on a timer, JOURNAL_INTERVAL).
 * Lock order: mu, then the table's write lock (taken by the apply
 * functions). */
#include "journal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "error.h"
#include "optim.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "log records are written in the host's byte order, which must be little-endian");

#define RECORD_FORMAT 1

_Static_assert(sizeof(struct journal_record_head) == 80, "record head layout");

struct journal {
    struct table *t;
    struct wal *wal;      /* NULL with JOURNAL_NONE, and until the first write */
    char *wal_dir;
    struct wal_options wal_opts;
    enum journal_durability mode;
    uint32_t interval_ms;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    struct journal_write *head, *tail; /* appended, waiting for the sync */
    size_t queued;                     /* how many */
    size_t writers;                    /* recent batch size: writers that are active */
    uint64_t last_sync_ns;
    uint64_t next_seq;                 /* JOURNAL_NONE */
    bool unsynced;                     /* JOURNAL_INTERVAL: appends since the last sync */
    bool stopping;
    bool busy;            /* the committer is working on a batch */
    pthread_cond_t idle;  /* broadcast after each batch */
    bool has_thread;
    pthread_t thread;
    _Atomic bool broken;
    _Atomic uint64_t appended_bytes;
    _Atomic uint64_t records, syncs, sync_ns, synced_writes;
    char why[320]; /* why it broke; written once, under mu */
};

static void fail_write(struct journal_write *w, int rc, const char *why)
{
    w->rc = rc;
    snprintf(w->err, sizeof w->err, "%s", why);
}

/* Marks j broken for good; mu held. */
static void set_broken(struct journal *j, const char *why)
{
    if (!atomic_load(&j->broken))
        snprintf(j->why, sizeof j->why, "%s", why);
    atomic_store(&j->broken, true);
}

/* ---- records -------------------------------------------------------- */

static void head_of(const struct table *t, const struct journal_write *w,
                    struct journal_record_head *h)
{
    memset(h, 0, sizeof *h);
    h->format = RECORD_FORMAT;
    h->n = w->n;
    h->dim = w->op == JOURNAL_RENORM || w->op == JOURNAL_DELETE ? 0 : (uint64_t)table_dim(t);
    h->time_ms = clock_wall_ms();
    if (w->op == JOURNAL_GRADIENTS || (w->op == JOURNAL_ROWS && table_is_keyed(t))) {
        struct optim_config c;
        table_optimizer_config(t, &c);
        if (w->lr > 0)
            c.lr = w->lr;
        h->optim_kind = (uint32_t)c.kind;
        h->lr = c.lr;
        h->beta1 = c.beta1;
        h->beta2 = c.beta2;
        h->eps = c.eps;
        h->lr_decay = c.lr_decay;
        h->initial_accumulator_value = c.initial_accumulator_value;
    }
}

static void config_of(const struct journal_record_head *h, struct optim_config *c)
{
    *c = (struct optim_config){
        .kind = (enum optim_kind)h->optim_kind,
        .lr = h->lr,
        .beta1 = h->beta1,
        .beta2 = h->beta2,
        .eps = h->eps,
        .lr_decay = h->lr_decay,
        .initial_accumulator_value = h->initial_accumulator_value,
    };
}

/* A keyed table's record: keys resolved, inserted, evicted in its apply. */
static int apply_keyed(struct table *t, enum journal_op op, const struct journal_record_head *h,
                       const int64_t *ids, const float *values, uint64_t *version,
                       size_t *rows, size_t *inserted)
{
    static const enum table_keyed_op ops[] = {
        [JOURNAL_GRADIENTS] = TABLE_KEYED_GRADIENTS,
        [JOURNAL_ROWS] = TABLE_KEYED_ROWS,
        [JOURNAL_DELETE] = TABLE_KEYED_DELETE,
    };
    if (op == JOURNAL_RENORM)
        return CORE_EINVAL; /* keyed tables have no max_norm */
    struct optim_config c;
    config_of(h, &c);
    if (op == JOURNAL_GRADIENTS && optim_config_check(&c, NULL, 0) != CORE_OK)
        return CORE_EINVAL;
    struct table_keyed_result res;
    size_t bad = 0;
    int rc = table_keyed_apply(t, ops[op], op == JOURNAL_DELETE ? NULL : &c, h->time_ms, ids,
                               (size_t)h->n, values, &bad, &res);
    *version = rc == CORE_OK ? res.version : table_version(t);
    *rows = res.rows;
    *inserted = res.inserted;
    return rc;
}

/* Applies one record to t: the one code path of live writes and replay.
 * Fills *version, *rows and *inserted. */
static int apply_record(struct table *t, enum journal_op op, const struct journal_record_head *h,
                        const int64_t *ids, const float *values, uint64_t *version,
                        size_t *rows, size_t *inserted)
{
    size_t bad = 0;
    *rows = 0;
    *inserted = 0;
    if (table_is_keyed(t))
        return apply_keyed(t, op, h, ids, values, version, rows, inserted);
    switch (op) {
    case JOURNAL_GRADIENTS: {
        struct optim_config c;
        config_of(h, &c);
        return table_apply_logged_gradients(t, &c, ids, (size_t)h->n, values, &bad, version,
                                            rows);
    }
    case JOURNAL_ROWS:
        *rows = (size_t)h->n;
        return table_assign_rows(t, ids, (size_t)h->n, values, &bad, version);
    case JOURNAL_RENORM:
        *version = table_version(t);
        return table_renorm(t, ids, (size_t)h->n);
    case JOURNAL_DELETE:
        break; /* keys only */
    }
    return CORE_EINVAL;
}

/* Applies w (its record is in the log as seq w->seq). A write that was
 * logged but cannot be applied leaves the table behind its log: the
 * journal stops taking writes rather than let the two drift apart. */
static void apply_write(struct journal *j, struct journal_write *w, const struct journal_record_head *h,
                        bool mu_held)
{
    int rc = apply_record(j->t, w->op, h, w->ids, w->values, &w->version, &w->rows,
                          &w->inserted);
    uint64_t seq = table_log_seq(j->t);
    if (rc == CORE_OK && seq == w->seq)
        return;
    if (rc == CORE_ECAPACITY && seq == w->seq) {
        /* a keyed write that did not fit: applied as a refusal, in order */
        fail_write(w, rc, JOURNAL_FULL_MESSAGE);
        return;
    }
    char why[160];
    snprintf(why, sizeof why, "record %llu is in the log but could not be applied (%s)",
             (unsigned long long)w->seq, rc != CORE_OK ? core_strerror(rc) : "out of order");
    if (!mu_held)
        pthread_mutex_lock(&j->mu);
    set_broken(j, why);
    if (!mu_held)
        pthread_mutex_unlock(&j->mu);
    fail_write(w, rc != CORE_OK ? rc : CORE_EUNAVAILABLE, why);
}

int journal_record_parts(const struct table *t, const struct journal_write *w,
                         struct journal_record_head *head, struct iovec parts[3])
{
    head_of(t, w, head);
    size_t floats = (size_t)(head->n * head->dim);
    parts[0] = (struct iovec){head, sizeof *head};
    parts[1] = (struct iovec){(void *)w->ids, w->n * sizeof(int64_t)};
    parts[2] = (struct iovec){(void *)w->values, floats * sizeof(float)};
    return floats > 0 ? 3 : 2;
}

/* ---- the committer ---------------------------------------------------- */

static bool has_data(const struct journal_write *w)
{
    for (; w != NULL; w = w->next)
        if (w->op != JOURNAL_RENORM)
            return true;
    return false;
}

static uint64_t batch_size(const struct journal_write *w)
{
    uint64_t n = 0;
    for (; w != NULL; w = w->next)
        n++;
    return n;
}

/* Syncs, then applies the batch in order (or fails all of it). */
static void commit_batch(struct journal *j, struct journal_write *batch)
{
    char err[160] = "";
    int rc = CORE_OK;
    if (has_data(batch)) {
        uint64_t t0 = clock_mono_ns();
        rc = wal_sync(j->wal, err, sizeof err) == CORE_OK ? CORE_OK : CORE_EUNAVAILABLE;
        uint64_t took = clock_mono_ns() - t0;
        j->last_sync_ns = took; /* the committer's own; gather reads it on this thread */
        atomic_fetch_add_explicit(&j->sync_ns, took, memory_order_relaxed);
        atomic_fetch_add_explicit(&j->syncs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&j->synced_writes, batch_size(batch), memory_order_relaxed);
    }
    if (rc != CORE_OK) {
        /* the writes of this batch (and any appended since) are answered
         * "not durable": cut their records, so that none comes back at the
         * next start and a client's retry cannot apply one twice */
        char cut[160] = "";
        pthread_mutex_lock(&j->mu);
        set_broken(j, err[0] ? err : "the log could not be synced");
        if (wal_rewind(j->wal, &batch->mark, cut, sizeof cut) != CORE_OK) {
            size_t n = strlen(j->why);
            snprintf(j->why + n, sizeof j->why - n,
                     "; its records could not be cut (%s), so they may be back after a restart",
                     cut);
        }
        pthread_mutex_unlock(&j->mu);
    }
    while (batch != NULL) {
        struct journal_write *w = batch;
        batch = w->next; /* done may free w */
        if (rc == CORE_OK) {
            struct journal_record_head h;
            head_of(j->t, w, &h);
            h.time_ms = w->time_ms; /* the logged clock: ttl follows the log */
            apply_write(j, w, &h, false);
        } else {
            fail_write(w, rc, j->why);
        }
        w->done(w);
    }
}

/* JOURNAL_INTERVAL: one sync per interval when anything was appended. */
static void interval_sync(struct journal *j)
{
    char err[160] = "";
    pthread_mutex_lock(&j->mu);
    bool due = j->unsynced && !atomic_load(&j->broken);
    j->unsynced = false;
    pthread_mutex_unlock(&j->mu);
    if (due && wal_sync(j->wal, err, sizeof err) != CORE_OK) {
        pthread_mutex_lock(&j->mu);
        set_broken(j, err[0] ? err : "the log could not be synced");
        pthread_mutex_unlock(&j->mu);
    }
}

/* Group commit's delay (PostgreSQL's commit_delay, made adaptive): when the
 * last batches showed more writers than are queued now, the ones missing
 * are most likely a round trip away, so wait a fraction of a sync for them
 * rather than sync twice. With one writer this never waits. mu held. */
#define GATHER_MAX_NS 250000u

static void gather(struct journal *j)
{
    if (j->queued < j->writers && j->last_sync_ns > 0 && !j->stopping) {
        uint64_t wait = j->last_sync_ns / 2 < GATHER_MAX_NS ? j->last_sync_ns / 2 : GATHER_MAX_NS;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        uint64_t ns = (uint64_t)until.tv_nsec + wait;
        until.tv_sec += (time_t)(ns / 1000000000u);
        until.tv_nsec = (long)(ns % 1000000000u);
        while (j->queued < j->writers && !j->stopping &&
               pthread_cond_timedwait(&j->wake, &j->mu, &until) == 0) {
        }
    }
    /* follows a rise at once, decays by one a batch */
    j->writers = j->queued >= j->writers ? j->queued : j->writers - 1;
}

static void *committer_main(void *arg)
{
    struct journal *j = arg;
    uint64_t next_sync = clock_mono_ms() + j->interval_ms;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        if (j->mode == JOURNAL_INTERVAL) {
            uint64_t now = clock_mono_ms();
            if (now >= next_sync || j->stopping) {
                pthread_mutex_unlock(&j->mu);
                interval_sync(j);
                next_sync = clock_mono_ms() + j->interval_ms;
                pthread_mutex_lock(&j->mu);
                if (j->stopping)
                    break;
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            uint64_t ns = (uint64_t)until.tv_nsec + (next_sync - now) * 1000000u;
            until.tv_sec += (time_t)(ns / 1000000000u);
            until.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&j->wake, &j->mu, &until);
            continue;
        }
        while (j->head == NULL && !j->stopping)
            pthread_cond_wait(&j->wake, &j->mu);
        if (j->head == NULL)
            break; /* stopping, and every write is finished */
        gather(j);
        struct journal_write *batch = j->head;
        j->head = j->tail = NULL;
        j->queued = 0;
        j->busy = true;
        pthread_mutex_unlock(&j->mu);
        commit_batch(j, batch);
        pthread_mutex_lock(&j->mu);
        j->busy = false;
        pthread_cond_broadcast(&j->idle);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* ---- submitting --------------------------------------------------------- */

void journal_submit(struct journal *j, struct journal_write *w)
{
    w->rc = CORE_OK;
    w->seq = 0;
    w->version = 0;
    w->rows = 0;
    w->err[0] = '\0';
    w->next = NULL;
    struct journal_record_head h;
    struct iovec parts[3];
    int nparts = journal_record_parts(j->t, w, &h, parts);
    size_t floats = (size_t)(h.n * h.dim);
    w->time_ms = h.time_ms;

    pthread_mutex_lock(&j->mu);
    if (atomic_load(&j->broken) || j->stopping) {
        fail_write(w, CORE_EUNAVAILABLE, j->stopping ? "the log is closing" : j->why);
        pthread_mutex_unlock(&j->mu);
        w->done(w);
        return;
    }
    if (j->mode != JOURNAL_NONE) {
        char err[160] = "";
        /* the log is created by the first write, so a table that is only
         * read leaves nothing in data_dir */
        int rc = j->wal != NULL ? CORE_OK
                                : wal_open(&j->wal, j->wal_dir, j->next_seq, &j->wal_opts, err,
                                           sizeof err);
        if (rc == CORE_OK) {
            wal_mark(j->wal, &w->mark);
            rc = wal_append(j->wal, (uint32_t)w->op, parts, nparts, &w->seq, err, sizeof err);
        }
        if (rc != CORE_OK) {
            if (j->wal != NULL && wal_broken(j->wal))
                set_broken(j, err);
            fail_write(w, CORE_EUNAVAILABLE, err[0] ? err : core_strerror(rc));
            pthread_mutex_unlock(&j->mu);
            w->done(w);
            return;
        }
        j->next_seq = w->seq + 1;
        atomic_fetch_add_explicit(&j->appended_bytes,
                                  sizeof h + w->n * sizeof(int64_t) + floats * sizeof(float),
                                  memory_order_relaxed);
    } else {
        w->seq = j->next_seq++;
    }
    atomic_fetch_add_explicit(&j->records, 1, memory_order_relaxed);
    if (j->mode == JOURNAL_SYNC) {
        if (j->tail)
            j->tail->next = w;
        else
            j->head = w;
        j->tail = w;
        j->queued++;
        pthread_cond_signal(&j->wake);
        pthread_mutex_unlock(&j->mu);
        return;
    }
    /* nothing waits for the disk: apply now, still under mu, so in log order */
    j->unsynced = true;
    apply_write(j, w, &h, true);
    pthread_mutex_unlock(&j->mu);
    w->done(w);
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
};

static void wake_waiter(struct journal_write *w)
{
    struct waiter *wt = w->ud;
    pthread_mutex_lock(&wt->mu);
    wt->done = true;
    pthread_cond_signal(&wt->cv);
    pthread_mutex_unlock(&wt->mu);
}

void journal_write_wait(struct journal_write *w,
                        void (*submit)(void *target, struct journal_write *w), void *target)
{
    struct waiter wt = {.done = false};
    pthread_mutex_init(&wt.mu, NULL);
    pthread_cond_init(&wt.cv, NULL);
    w->done = wake_waiter;
    w->ud = &wt;
    submit(target, w);
    pthread_mutex_lock(&wt.mu);
    while (!wt.done)
        pthread_cond_wait(&wt.cv, &wt.mu);
    pthread_mutex_unlock(&wt.mu);
    pthread_cond_destroy(&wt.cv);
    pthread_mutex_destroy(&wt.mu);
}

static void submit_to(void *target, struct journal_write *w)
{
    journal_submit(target, w);
}

void journal_submit_wait(struct journal *j, struct journal_write *w)
{
    journal_write_wait(w, submit_to, j);
}

static int renorm_through(void *ud, const int64_t *ids, size_t m)
{
    struct journal_write w = {.op = JOURNAL_RENORM, .ids = ids, .n = m};
    journal_submit_wait(ud, &w);
    return w.rc;
}

/* ---- lifetime ----------------------------------------------------------- */

/* Frees j and what it owns; its thread is not running. */
static void journal_free(struct journal *j)
{
    wal_close(j->wal);
    free(j->wal_dir);
    pthread_cond_destroy(&j->idle);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int journal_open(struct journal **out, struct table *t, const char *wal_dir,
                 const struct journal_options *o, char *err, size_t errlen)
{
    *out = NULL;
    struct journal *j = calloc(1, sizeof *j);
    if (j == NULL)
        return CORE_ENOMEM;
    j->t = t;
    j->mode = o->durability;
    j->interval_ms = o->interval_ms ? o->interval_ms : 1000;
    j->next_seq = table_log_seq(t) + 1;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->wake, NULL);
    pthread_cond_init(&j->idle, NULL);
    j->wal_opts.segment_bytes = o->segment_bytes;
    if (j->mode != JOURNAL_NONE) {
        int rc = CORE_OK;
        if ((j->wal_dir = strdup(wal_dir)) == NULL)
            rc = CORE_ENOMEM;
        else if (pthread_create(&j->thread, NULL, committer_main, j) != 0)
            rc = core_fail(err, errlen, CORE_ENOMEM, "cannot start the log's thread");
        if (rc != CORE_OK) {
            journal_free(j);
            return rc;
        }
        j->has_thread = true;
    }
    table_set_renorm_hook(t, renorm_through, j);
    *out = j;
    return CORE_OK;
}

int journal_close(struct journal *j)
{
    if (j == NULL)
        return CORE_OK;
    table_set_renorm_hook(j->t, NULL, NULL);
    pthread_mutex_lock(&j->mu);
    j->stopping = true;
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->mu);
    if (j->has_thread)
        pthread_join(j->thread, NULL);
    int rc = atomic_load(&j->broken) ? CORE_EUNAVAILABLE : CORE_OK;
    if (j->wal != NULL && rc == CORE_OK && wal_sync(j->wal, NULL, 0) != CORE_OK)
        rc = CORE_EUNAVAILABLE;
    journal_free(j);
    return rc;
}

void journal_flush(struct journal *j)
{
    if (j == NULL)
        return;
    pthread_mutex_lock(&j->mu);
    while (j->head != NULL || j->busy)
        pthread_cond_wait(&j->idle, &j->mu);
    pthread_mutex_unlock(&j->mu);
}

bool journal_broken(const struct journal *j)
{
    return atomic_load(&((struct journal *)j)->broken);
}

void journal_get_stats(const struct journal *j, struct journal_stats *st)
{
    struct journal *m = (struct journal *)j;
    st->records = atomic_load_explicit(&m->records, memory_order_relaxed);
    st->syncs = atomic_load_explicit(&m->syncs, memory_order_relaxed);
    st->sync_ns = atomic_load_explicit(&m->sync_ns, memory_order_relaxed);
    st->synced_writes = atomic_load_explicit(&m->synced_writes, memory_order_relaxed);
}

uint64_t journal_appended_bytes(const struct journal *j)
{
    return atomic_load_explicit(&((struct journal *)j)->appended_bytes, memory_order_relaxed);
}

int journal_trim(struct journal *j, uint64_t seq, size_t *removed, char *err, size_t errlen)
{
    if (removed != NULL)
        *removed = 0;
    if (j->mode == JOURNAL_NONE)
        return CORE_OK;
    pthread_mutex_lock(&j->mu);
    int rc = j->wal != NULL ? CORE_OK
                            : wal_open(&j->wal, j->wal_dir, j->next_seq, &j->wal_opts, err, errlen);
    pthread_mutex_unlock(&j->mu);
    if (rc != CORE_OK)
        return rc;
    return wal_remove_below(j->wal, seq, removed, err, errlen);
}

/* ---- replay --------------------------------------------------------------- */

static int payload_fail(char *err, size_t errlen, uint64_t seq, const char *what)
{
    return core_fail(err, errlen, CORE_EFORMAT, "log record %llu: %s",
                     (unsigned long long)seq, what);
}

int journal_apply_payload(struct table *t, uint64_t seq, uint32_t kind, const void *payload,
                          size_t len, uint64_t *version, size_t *rows, char *err,
                          size_t errlen)
{
    return journal_apply_payload_keyed(t, seq, kind, payload, len, 0, version, rows, NULL, NULL,
                                       err, errlen);
}

int journal_apply_payload_keyed(struct table *t, uint64_t seq, uint32_t kind,
                                const void *payload, size_t len, uint64_t max_time_ms,
                                uint64_t *version, size_t *rows, size_t *inserted,
                                bool *refused, char *err, size_t errlen)
{
    struct journal_record_head h;
    if (len < sizeof h)
        return payload_fail(err, errlen, seq, "shorter than a record head");
    memcpy(&h, payload, sizeof h);
    if (max_time_ms != 0 && h.time_ms > max_time_ms)
        h.time_ms = max_time_ms;
    if (h.format != RECORD_FORMAT)
        return payload_fail(err, errlen, seq, "unknown record format");
    if (kind < JOURNAL_GRADIENTS || kind > JOURNAL_DELETE)
        return payload_fail(err, errlen, seq, "unknown record kind");
    if (kind == JOURNAL_DELETE && !table_is_keyed(t))
        return payload_fail(err, errlen, seq, "a delete of keys on a table that is not keyed");
    if (kind == JOURNAL_RENORM && table_is_keyed(t))
        return payload_fail(err, errlen, seq, "a renormalization on a keyed table");
    uint64_t dim = kind == JOURNAL_RENORM || kind == JOURNAL_DELETE ? 0 : (uint64_t)table_dim(t);
    if (h.dim != dim)
        return payload_fail(err, errlen, seq, "its row length is not the table's embedding_dim");
    uint64_t body = len - sizeof h; /* n < 2^31 and dim < 2^31 here: no overflow */
    if (h.n > body / sizeof(int64_t) || dim > ((uint64_t)1 << 31) ||
        h.n * sizeof(int64_t) + h.n * dim * sizeof(float) != body)
        return payload_fail(err, errlen, seq, "its length does not match its shape");
    if (seq != table_log_seq(t) + 1)
        return payload_fail(err, errlen, seq, "does not follow the table's seq");
    const unsigned char *p = (const unsigned char *)payload + sizeof h;
    int64_t *copy = NULL;
    const int64_t *ids = (const int64_t *)(const void *)p;
    if (((uintptr_t)p % _Alignof(int64_t)) != 0 && h.n > 0) {
        if ((copy = malloc((size_t)h.n * sizeof *copy)) == NULL)
            return CORE_ENOMEM;
        memcpy(copy, p, (size_t)h.n * sizeof *copy);
        ids = copy;
    }
    const float *values = dim ? (const float *)(const void *)(p + h.n * sizeof(int64_t)) : NULL;
    uint64_t v = 0;
    size_t r = 0, ins = 0;
    int rc = apply_record(t, (enum journal_op)kind, &h, ids, values, &v, &r, &ins);
    free(copy);
    bool refusal = rc == CORE_ECAPACITY && table_log_seq(t) == seq;
    if (refused != NULL)
        *refused = refusal;
    if (inserted != NULL)
        *inserted = ins;
    if (refusal)
        rc = CORE_OK;
    if (rc != CORE_OK) {
        char what[96];
        snprintf(what, sizeof what, "cannot be applied: %s", core_strerror(rc));
        return payload_fail(err, errlen, seq, what);
    }
    if (version != NULL)
        *version = v;
    if (rows != NULL)
        *rows = r;
    return CORE_OK;
}

struct replay {
    struct table *t;
    char *err;
    size_t errlen;
};

static int replay_one(void *ud, uint64_t seq, uint32_t kind, const void *payload, size_t len)
{
    struct replay *r = ud;
    return journal_apply_payload(r->t, seq, kind, payload, len, NULL, NULL, r->err, r->errlen);
}

int journal_replay(struct table *t, const char *wal_dir, enum wal_repair mode,
                   struct wal_report *report, char *err, size_t errlen)
{
    struct wal_report local;
    struct replay r = {.t = t, .err = err, .errlen = errlen};
    return wal_replay(wal_dir, table_log_seq(t), mode, replay_one, &r, report ? report : &local,
                      err, errlen);
}
