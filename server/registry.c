/* registry.c - see registry.h. */
#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cluster.h"
#include "clock.h"
#include "error.h"
#include "loader.h"
#include "log.h"
#include "optim.h"
#include "snapshot.h"

/* Files at least this big get progress lines while they load. */
#define PROGRESS_MIN_BYTES (64u << 20)

struct progress {
    const char *table;
    int last_tenth; /* last tenth of the file reported */
};

static void report_progress(void *ud, uint64_t done, uint64_t total)
{
    struct progress *p = ud;
    if (total < PROGRESS_MIN_BYTES)
        return;
    int tenth = (int)(done * 10 / total);
    if (tenth <= p->last_tenth || tenth >= 10)
        return;
    p->last_tenth = tenth;
    log_info("table %s: loading, %d%% of %.0f MB read", p->table, tenth * 10,
             (double)total / 1e6);
}

/* A snapshot path is either one snapshot directory (holding manifest.json)
 * or a table's folder of snapshots, in which case the newest one is used. */
static int resolve_snapshot_dir(const char *path, char *dir, size_t dirlen, char *err,
                                size_t errlen)
{
    char manifest[4096];
    struct stat st;
    snprintf(manifest, sizeof manifest, "%s/manifest.json", path);
    if (stat(manifest, &st) == 0) {
        if ((size_t)snprintf(dir, dirlen, "%s", path) >= dirlen)
            return core_fail(err, errlen, CORE_ETOOBIG, "%s: path too long", path);
        return CORE_OK;
    }
    char *a = strdup(path), *b = strdup(path);
    if (a == NULL || b == NULL) {
        free(a);
        free(b);
        return CORE_ENOMEM;
    }
    int rc = snapshot_find_latest(dirname(a), basename(b), dir, dirlen, err, errlen);
    free(a);
    free(b);
    return rc;
}

static int load_snapshot(const struct config_table *ct, struct table **out, char *err,
                         size_t errlen)
{
    char dir[4096];
    int rc = resolve_snapshot_dir(ct->path, dir, sizeof dir, err, errlen);
    if (rc != CORE_OK)
        return rc;
    log_info("table %s: loading snapshot %s", ct->name, dir);
    return snapshot_load(dir, ct->name, out, err, errlen);
}

static int load_file(const struct config_table *ct, struct table **out, bool *from_snapshot,
                     char *err, size_t errlen)
{
    enum loader_format format = ct->format;
    if (format == LOADER_AUTO) {
        int rc = loader_detect(ct->path, &format, err, errlen);
        if (rc != CORE_OK)
            return rc;
    }
    if (format == LOADER_SNAPSHOT) {
        *from_snapshot = true;
        return load_snapshot(ct, out, err, errlen);
    }

    struct progress prog = {ct->name, 0};
    struct loader_opts o = {
        .format = format,
        .tensor = ct->tensor,
        .vocab_path = ct->vocab,
        .progress = report_progress,
        .progress_ud = &prog,
    };
    struct matrix m = {0};
    struct vocab *vocab = NULL;
    int rc = loader_load(ct->path, &o, &m, &vocab, err, errlen);
    if (rc != CORE_OK)
        return rc;
    rc = table_new(out, ct->name, &m, vocab, &ct->settings, err, errlen);
    if (rc != CORE_OK) {
        matrix_deinit(&m);
        vocab_free(vocab);
    }
    return rc;
}

int registry_wal_dir(const char *data_dir, const char *name, char *out, size_t len)
{
    int n = snprintf(out, len, "%s/%s/wal", data_dir, name);
    return n < 0 || (size_t)n >= len ? CORE_ETOOBIG : CORE_OK;
}

/* True when the table resumes from the snapshots in data_dir. */
static bool resumes(const struct config_table *ct, const char *data_dir)
{
    return data_dir != NULL && ct->resume && ct->format != LOADER_SNAPSHOT;
}

static void skip_snapshot(void *ud, const char *path, int rc, const char *why)
{
    const struct config_table *ct = ud;
    log_warn("table %s: snapshot %s does not load (%s): %s; trying an older one", ct->name,
             path, core_strerror(rc), why);
}

/* A resumed table must still be the table the config describes. */
static int check_resumed_shape(const struct config_table *ct, const struct table *t,
                               const char *dir, char *err, size_t errlen)
{
    if (!ct->has_init)
        return CORE_OK;
    if (table_num_embeddings(t) == ct->num_embeddings && table_dim(t) == ct->embedding_dim)
        return CORE_OK;
    return core_fail(err, errlen, CORE_EINVAL,
                     "snapshot %s holds %lld x %lld but the config says init %lld x %lld; "
                     "move the snapshot away or set \"resume\": false",
                     dir, (long long)table_num_embeddings(t), (long long)table_dim(t),
                     (long long)ct->num_embeddings, (long long)ct->embedding_dim);
}

/* A resumed keyed table gets its settings from the config; a snapshot and
 * a config must agree on whether the table is keyed. */
static int check_resumed_keys(const struct config_table *ct, struct table *t, const char *dir,
                              char *err, size_t errlen)
{
    if (ct->keyed)
        return table_keyed_configure(t, &ct->keyed_settings, err, errlen);
    if (table_is_keyed(t))
        return core_fail(err, errlen, CORE_EINVAL,
                         "snapshot %s holds a keyed table (keys.npy) but the config's table is "
                         "not keyed; add \"keys\": \"int64\" or move the snapshot away", dir);
    return CORE_OK;
}

/* The table as the config describes it, before any write. */
static int load_source(const struct config_table *ct, struct table **t,
                       struct registry_loaded *res, char *err, size_t errlen)
{
    if (ct->keyed)
        return table_new_keyed(t, ct->name, ct->embedding_dim, &ct->keyed_settings,
                               &ct->settings, err, errlen);
    if (ct->has_init)
        return table_new_init(t, ct->name, ct->num_embeddings, ct->embedding_dim, ct->seed,
                              &ct->settings, err, errlen);
    int rc = load_file(ct, t, &res->from_snapshot, err, errlen);
    if (rc == CORE_OK && res->from_snapshot)
        res->snapshot_seq = table_log_seq(*t);
    return rc;
}

/* The newest snapshot that loads (falling back to older ones), or the
 * configured source. */
static int load_base(const struct config_table *ct, const struct registry_load_opts *o,
                     struct table **t, struct registry_loaded *res, char *err, size_t errlen)
{
    if (!resumes(ct, o->data_dir))
        return load_source(ct, t, res, err, errlen);
    char dir[4096];
    int rc = snapshot_load_newest(o->data_dir, ct->name, t, dir, sizeof dir, skip_snapshot,
                                  (void *)ct, err, errlen);
    if (rc == CORE_ENOTFOUND) {
        if (err != NULL && errlen > 0)
            err[0] = '\0';
        return load_source(ct, t, res, err, errlen);
    }
    if (rc != CORE_OK)
        return rc;
    log_info("table %s: resuming from %s", ct->name, dir);
    if ((rc = check_resumed_shape(ct, *t, dir, err, errlen)) != CORE_OK ||
        (rc = check_resumed_keys(ct, *t, dir, err, errlen)) != CORE_OK) {
        table_free(*t);
        return rc;
    }
    res->from_snapshot = true;
    res->snapshot_seq = table_log_seq(*t);
    return CORE_OK;
}

static void report_replay(const struct config_table *ct, const struct registry_loaded *res,
                          enum wal_repair mode)
{
    const struct wal_report *w = &res->wal;
    if (w->torn)
        log_warn("table %s: the log ended in a torn record (a crash during a write that was "
                 "never answered): %s from offset %llu, %llu bytes %s", ct->name, w->bad_file,
                 (unsigned long long)w->bad_offset, (unsigned long long)w->dropped_bytes,
                 mode == WAL_CHECK ? "would be dropped" : "dropped");
    if (w->damaged && mode == WAL_REPAIR)
        log_warn("table %s: cut the log at the damage in %s at offset %llu: dropped %llu "
                 "bytes and %llu later segment%s", ct->name, w->bad_file,
                 (unsigned long long)w->bad_offset, (unsigned long long)w->dropped_bytes,
                 (unsigned long long)w->dropped_segments, w->dropped_segments == 1 ? "" : "s");
    if (w->replayed > 0)
        log_info("table %s: replayed %llu log record%s, now at seq %llu", ct->name,
                 (unsigned long long)w->replayed, w->replayed == 1 ? "" : "s",
                 (unsigned long long)w->last_seq);
}

/* Applies the table's log after its seq. */
static int replay_log(const struct config_table *ct, const struct registry_load_opts *o,
                      struct table *t, struct registry_loaded *res, char *err, size_t errlen)
{
    char dir[4096];
    int rc = registry_wal_dir(o->data_dir, ct->name, dir, sizeof dir);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "data_dir %s: path too long", o->data_dir);
    struct stat st;
    if (stat(dir, &st) != 0 && (errno == ENOENT || errno == ENOTDIR))
        return CORE_OK; /* no log: nothing was ever written (writes will say why not) */
    rc = journal_replay(t, dir, o->repair, &res->wal, err, errlen);
    if (rc == CORE_OK) {
        report_replay(ct, res, o->repair);
    } else if (res->wal.damaged && err != NULL) {
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, "; 'embedding-server --repair-log' (same config) cuts "
                 "the log there, dropping the records from that offset on");
    }
    return rc;
}

/* "resume": false over an older run's data: the fresh table continues that
 * run's seq numbering, so snapshot names never collide and no old record
 * can ever be replayed onto it. */
static int continue_numbering(const struct config_table *ct, const struct registry_load_opts *o,
                              struct table *t, struct registry_loaded *res, char *err,
                              size_t errlen)
{
    uint64_t last = 0, *seqs = NULL;
    size_t n = 0;
    if (snapshot_list(o->data_dir, ct->name, &seqs, &n, NULL, 0) == CORE_OK && n > 0)
        last = seqs[0];
    free(seqs);
    char dir[4096];
    int rc = registry_wal_dir(o->data_dir, ct->name, dir, sizeof dir);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "data_dir %s: path too long", o->data_dir);
    struct wal_report w;
    memset(&w, 0, sizeof w);
    wal_replay(dir, UINT64_MAX - 1, WAL_CHECK, NULL, NULL, &w, NULL, 0);
    if (w.last_seq > last)
        last = w.last_seq;
    if (last > 0) {
        table_set_log_seq(t, last);
        res->fresh_over_old = true;
    }
    return CORE_OK;
}

int registry_load_table(const struct config_table *ct, const struct registry_load_opts *o,
                        struct table **out, struct registry_loaded *res, char *err,
                        size_t errlen)
{
    struct table *t = NULL;
    memset(res, 0, sizeof *res);
    int rc = load_base(ct, o, &t, res, err, errlen);
    if (rc != CORE_OK)
        return rc;
    /* Records carry their own hyperparameters. A table from a snapshot gets
     * the configured optimizer after the log replays onto the snapshot's
     * state, so a change of optimizer resets that state as on a clean
     * restart; a fresh table gets it first (it has no state to lose, and
     * setting it after replay would count as a change of kind). */
    bool optimizer_first = !res->from_snapshot;
    if (optimizer_first && ct->has_optimizer)
        rc = table_set_optimizer(t, &ct->optimizer, err, errlen);
    if (rc == CORE_OK && o->data_dir != NULL)
        rc = resumes(ct, o->data_dir) ? replay_log(ct, o, t, res, err, errlen)
                                      : continue_numbering(ct, o, t, res, err, errlen);
    if (rc == CORE_OK && !optimizer_first && ct->has_optimizer)
        rc = table_set_optimizer(t, &ct->optimizer, err, errlen);
    if (rc != CORE_OK) {
        table_free(t);
        return rc;
    }
    *out = t;
    return CORE_OK;
}

static void log_loaded(const struct table *t, double seconds)
{
    const struct table_settings *s = table_settings(t);
    char padding[32] = "none";
    if (s->has_padding)
        snprintf(padding, sizeof padding, "%lld", (long long)s->padding_idx);
    log_info("table %s: %lld x %lld float32, %s, vocabulary %s, padding_idx %s, "
             "version %llu, loaded in %.2f s",
             table_name(t), (long long)table_num_embeddings(t), (long long)table_dim(t),
             s->freeze ? "frozen" : "trainable", table_vocab(t) ? "yes" : "no", padding,
             (unsigned long long)table_version(t), seconds);
}

/* After a snapshot: keep the newest snapshot.keep, then let the log go
 * below the oldest one kept (recovery may fall back to any of them). */
static void prune(struct registry *r, struct registry_entry *e)
{
    char err[512] = "";
    size_t removed = 0, segments = 0;
    const char *name = e->cfg->name;
    uint64_t oldest = 0;
    int rc = snapshot_prune(r->cfg->data_dir, name, (size_t)r->cfg->snapshot_keep, &removed,
                            &oldest, err, sizeof err);
    if (rc != CORE_OK) {
        log_warn("table %s: pruning old snapshots: %s", name, err[0] ? err : core_strerror(rc));
        return;
    }
    if (e->journal != NULL && oldest > 0) {
        rc = journal_trim(e->journal, oldest, &segments, err, sizeof err);
        if (rc != CORE_OK)
            log_warn("table %s: removing old log segments: %s", name,
                     err[0] ? err : core_strerror(rc));
    }
    if (removed > 0 || segments > 0)
        log_debug("table %s: removed %zu old snapshot%s and %zu log segment%s", name, removed,
                  removed == 1 ? "" : "s", segments, segments == 1 ? "" : "s");
}

static enum journal_durability durability_of(enum config_durability d)
{
    switch (d) {
    case CONFIG_DURABILITY_SYNC: return JOURNAL_SYNC;
    case CONFIG_DURABILITY_INTERVAL: return JOURNAL_INTERVAL;
    case CONFIG_DURABILITY_NONE: return JOURNAL_NONE;
    }
    return JOURNAL_SYNC;
}

/* Loads, replays and opens the journal of one entry. */
static int open_entry(struct registry *r, struct registry_entry *e, char *err, size_t errlen)
{
    const struct config *c = r->cfg;
    struct registry_load_opts o = {.data_dir = c->data_dir, .repair = WAL_RECOVER};
    struct registry_loaded res;
    struct table *t = NULL;
    double start = clock_mono_s();
    size_t stale = 0;
    char why[512] = "";
    /* no snapshot of this table can be running yet: whatever is half
     * written is a crash's leftover */
    if (snapshot_clean_tmp(c->data_dir, e->cfg->name, &stale, why, sizeof why) != CORE_OK)
        log_warn("table %s: removing unfinished snapshots: %s", e->cfg->name, why);
    else if (stale > 0)
        log_info("table %s: removed %zu unfinished snapshot%s left by a crash", e->cfg->name,
                 stale, stale == 1 ? "" : "s");
    int rc = registry_load_table(e->cfg, &o, &t, &res, err, errlen);
    if (rc != CORE_OK)
        return rc;
    char dir[4096];
    struct journal_options jo = {.durability = durability_of(c->durability),
                                 .interval_ms = (uint32_t)c->durability_interval_ms};
    rc = registry_wal_dir(c->data_dir, e->cfg->name, dir, sizeof dir);
    if (rc == CORE_OK)
        rc = journal_open(&e->journal, t, dir, &jo, err, errlen);
    if (rc != CORE_OK) {
        table_free(t);
        return rc;
    }
    log_loaded(t, clock_mono_s() - start);
    e->table = t;
    /* what is already on disk in a snapshot (or the source file) needs no
     * snapshot of its own; replayed records do, to shorten the next start */
    uint64_t saved = res.from_snapshot ? res.snapshot_seq : 0;
    if (!res.from_snapshot && res.wal.replayed == 0)
        saved = table_log_seq(t);
    atomic_store(&e->snapshot_seq, saved);
    if (res.fresh_over_old) {
        uint64_t seq = 0;
        rc = registry_snapshot(r, e, "first (\"resume\": false)", NULL, 0, NULL, &seq, err,
                               errlen);
        if (rc == CORE_OK)
            rc = journal_trim(e->journal, seq, NULL, err, errlen);
    }
    return rc;
}

/* The newest snapshot seq of a table in data_dir, 0 when none. */
static uint64_t newest_local_seq(const char *data_dir, const char *name)
{
    uint64_t *seqs = NULL, last = 0;
    size_t n = 0;
    if (snapshot_list(data_dir, name, &seqs, &n, NULL, 0) == CORE_OK && n > 0)
        last = seqs[0];
    free(seqs);
    return last;
}

/* Cluster mode: the newest snapshot this server can reach (its data_dir's,
 * or the cluster's, fetched into data_dir when newer or when the stream
 * lost the records after the local one), then the table's stream from that
 * snapshot's seq. There is no local log: the stream is the log. */
static int open_cluster_entry(struct registry *r, struct registry_entry *e, char *err,
                              size_t errlen)
{
    const struct config *c = r->cfg;
    const char *name = e->cfg->name;
    struct cluster_table *ct = NULL;
    double start = clock_mono_s();
    size_t stale = 0;
    char why[512] = "";
    if (snapshot_clean_tmp(c->data_dir, name, &stale, why, sizeof why) != CORE_OK)
        log_warn("table %s: removing unfinished snapshots: %s", name, why);
    int rc = cluster_table_open(&ct, r->cluster, name, err, errlen);
    if (rc != CORE_OK)
        return rc;
    bool fetched = false;
    rc = cluster_table_fetch_snapshot(ct, c->data_dir, newest_local_seq(c->data_dir, name),
                                      &fetched, err, errlen);
    if (rc != CORE_OK) {
        /* the stream may still hold every record after the local snapshot;
         * cluster_table_start says so when it does not */
        log_warn("table %s: the cluster's snapshot could not be fetched: %s", name, err);
        rc = CORE_OK;
    }
    struct registry_load_opts o = {.data_dir = c->data_dir, .repair = WAL_RECOVER};
    struct registry_loaded res;
    struct table *t = NULL;
    if (rc == CORE_OK)
        rc = registry_load_table(e->cfg, &o, &t, &res, err, errlen);
    if (rc == CORE_OK && res.wal.replayed > 0) {
        rc = core_fail(err, errlen, CORE_EINVAL,
                       "%s/%s/wal holds a local log: this data_dir was used without cluster "
                       "mode; start it once without cluster.nats and snapshot it, or move the "
                       "log away", c->data_dir, name);
        table_free(t);
    }
    if (rc == CORE_OK) {
        e->cluster = ct;
        rc = cluster_table_start(ct, t, err, errlen);
        if (rc != CORE_OK) {
            e->cluster = NULL;
            cluster_table_close(ct); /* stops applying to t first */
            table_free(t);
            return rc;
        }
    }
    if (rc != CORE_OK) {
        cluster_table_close(ct);
        return rc;
    }
    log_loaded(t, clock_mono_s() - start);
    e->table = t;
    atomic_store(&e->snapshot_seq, res.from_snapshot ? res.snapshot_seq : 0);
    return CORE_OK;
}

void registry_submit(struct registry_entry *e, struct journal_write *w)
{
    if (e->cluster != NULL)
        cluster_submit(e->cluster, w);
    else
        journal_submit(e->journal, w);
}

static void *loader_main(void *arg)
{
    struct registry *r = arg;
    bool ok = true;
    for (size_t i = 0; i < r->n && ok; i++) {
        struct registry_entry *e = &r->entries[i];
        char err[1024] = "";
        int rc = r->cluster != NULL ? open_cluster_entry(r, e, err, sizeof err)
                                    : open_entry(r, e, err, sizeof err);
        if (rc != CORE_OK) {
            log_error("table %s: %s", e->cfg->name, err[0] ? err : core_strerror(rc));
            atomic_store_explicit(&e->state, ENTRY_FAILED, memory_order_release);
            ok = false;
            break;
        }
        atomic_store_explicit(&e->state, ENTRY_READY, memory_order_release);
    }
    atomic_store(&r->ready, ok);
    atomic_store(&r->finished, true);
    if (r->done)
        r->done(r->done_ud, ok);
    return NULL;
}

/* Cluster mode: the snapshot is published for the cluster too, which lets
 * the stream go below it. A failure costs only a longer stream. */
static void publish_snapshot(struct registry_entry *e, const char *path, uint64_t seq)
{
    char err[512] = "";
    int rc = cluster_table_publish_snapshot(e->cluster, path, seq, err, sizeof err);
    if (rc != CORE_OK)
        log_warn("table %s: publishing the snapshot at seq %llu for the cluster: %s",
                 e->cfg->name, (unsigned long long)seq, err[0] ? err : core_strerror(rc));
}

int registry_snapshot(struct registry *r, struct registry_entry *e, const char *why,
                      char *path_out, size_t path_len, uint64_t *version_out,
                      uint64_t *seq_out, char *err, size_t errlen)
{
    if (atomic_exchange(&e->snapshot_running, true))
        return core_fail(err, errlen, CORE_EEXISTS,
                         "a snapshot of table \"%s\" is being written", e->cfg->name);
    const struct config *c = r->cfg;
    char path[4096];
    struct snapshot_info info = {0};
    /* records appended after this point may or may not be in the copy; the
     * size trigger counts from here either way */
    uint64_t bytes = e->journal   ? journal_appended_bytes(e->journal)
                     : e->cluster ? cluster_table_applied_bytes(e->cluster)
                                  : 0;
    int rc = snapshot_write(e->table, c->data_dir, path, sizeof path, &info, err, errlen);
    if (rc == CORE_OK) {
        atomic_store(&e->snapshot_seq, info.log_seq);
        atomic_store(&e->snapshot_log_bytes, bytes);
        log_info("table %s: %s snapshot at version %llu, seq %llu written to %s (%.1f MB in "
                 "%.3f s; writers waited %.3f ms for the copy)", e->cfg->name, why,
                 (unsigned long long)info.version, (unsigned long long)info.log_seq, path,
                 (double)info.bytes / 1e6, (double)info.total_us / 1e6,
                 (double)info.lock_us / 1e3);
        if (path_out != NULL)
            snprintf(path_out, path_len, "%s", path);
        if (version_out != NULL)
            *version_out = info.version;
        if (seq_out != NULL)
            *seq_out = info.log_seq;
        prune(r, e);
        /* not the one at shutdown: a big table's upload would outlast the
         * few seconds a process manager grants */
        if (e->cluster != NULL && strcmp(why, "shutdown") != 0)
            publish_snapshot(e, path, info.log_seq);
    }
    atomic_store(&e->snapshot_running, false);
    return rc;
}

int registry_init(struct registry *r, const struct config *c)
{
    *r = (struct registry){0};
    r->entries = calloc(c->ntables ? c->ntables : 1, sizeof *r->entries);
    if (r->entries == NULL)
        return CORE_ENOMEM;
    r->n = c->ntables;
    r->cfg = c;
    for (size_t i = 0; i < r->n; i++) {
        r->entries[i].cfg = &c->tables[i];
        atomic_init(&r->entries[i].state, ENTRY_LOADING);
    }
    return CORE_OK;
}

int registry_start(struct registry *r, registry_done_cb done, void *ud)
{
    r->done = done;
    r->done_ud = ud;
    int rc = pthread_create(&r->loader, NULL, loader_main, r);
    if (rc == 0)
        r->loader_started = true;
    return rc;
}

/* Waits up to wait_ms for the loader to end; true when it was joined. */
static bool join_loader(struct registry *r, int wait_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(r->loader, NULL, &deadline) == 0;
}

bool registry_deinit(struct registry *r, int wait_ms)
{
    if (r->entries == NULL)
        return true;
    if (r->loader_started && !join_loader(r, wait_ms))
        return false;
    for (size_t i = 0; i < r->n; i++) {
        cluster_table_close(r->entries[i].cluster);
        journal_close(r->entries[i].journal);
        table_free(r->entries[i].table);
    }
    free(r->entries);
    *r = (struct registry){0};
    return true;
}

struct registry_entry *registry_find(struct registry *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->entries[i].cfg->name, name) == 0)
            return &r->entries[i];
    return NULL;
}

struct table *registry_table(struct registry_entry *e)
{
    if (atomic_load_explicit(&e->state, memory_order_acquire) != ENTRY_READY)
        return NULL;
    return e->table;
}

bool registry_ready(const struct registry *r)
{
    return atomic_load(&r->ready);
}
