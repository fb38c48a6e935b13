/* registry.c - see registry.h. */
#include "registry.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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

/* The newest snapshot of the table in data_dir, if resuming applies:
 * CORE_OK with dir filled, CORE_ENOTFOUND when the table starts from its
 * configured source, another error when the data directory is unreadable. */
static int find_resume_snapshot(const struct config_table *ct, const char *data_dir,
                                char *dir, size_t dirlen, char *err, size_t errlen)
{
    if (data_dir == NULL || !ct->resume || ct->format == LOADER_SNAPSHOT)
        return CORE_ENOTFOUND;
    int rc = snapshot_find_latest(data_dir, ct->name, dir, dirlen, err, errlen);
    if (rc == CORE_ENOTFOUND && err != NULL && errlen > 0)
        err[0] = '\0';
    return rc;
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

int registry_load_table(const struct config_table *ct, const char *data_dir,
                        struct table **out, bool *from_snapshot, char *err, size_t errlen)
{
    struct table *t = NULL;
    *from_snapshot = false;
    char dir[4096];
    int rc = find_resume_snapshot(ct, data_dir, dir, sizeof dir, err, errlen);
    if (rc == CORE_OK) {
        log_info("table %s: resuming from %s", ct->name, dir);
        rc = snapshot_load(dir, ct->name, &t, err, errlen);
        if (rc == CORE_OK && (rc = check_resumed_shape(ct, t, dir, err, errlen)) != CORE_OK)
            table_free(t);
        if (rc != CORE_OK)
            return rc;
        *from_snapshot = true;
    } else if (rc != CORE_ENOTFOUND) {
        return rc;
    } else if (ct->has_init)
        rc = table_new_init(&t, ct->name, ct->num_embeddings, ct->embedding_dim, ct->seed,
                            &ct->settings, err, errlen);
    else
        rc = load_file(ct, &t, from_snapshot, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (ct->has_optimizer) {
        rc = table_set_optimizer(t, &ct->optimizer, err, errlen);
        if (rc != CORE_OK) {
            table_free(t);
            return rc;
        }
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

static void *loader_main(void *arg)
{
    struct registry *r = arg;
    bool ok = true;
    for (size_t i = 0; i < r->n && ok; i++) {
        struct registry_entry *e = &r->entries[i];
        char err[1024] = "";
        double start = now_seconds();
        struct table *t = NULL;
        bool from_snapshot = false;
        int rc = registry_load_table(e->cfg, r->data_dir, &t, &from_snapshot, err, sizeof err);
        if (rc != CORE_OK) {
            log_error("table %s: %s", e->cfg->name, err[0] ? err : core_strerror(rc));
            atomic_store_explicit(&e->state, ENTRY_FAILED, memory_order_release);
            ok = false;
            break;
        }
        log_loaded(t, now_seconds() - start);
        e->table = t;
        /* a table loaded from a snapshot is saved at its version already */
        atomic_store(&e->snapshot_version, table_version(t));
        atomic_store(&e->has_snapshot, from_snapshot);
        atomic_store_explicit(&e->state, ENTRY_READY, memory_order_release);
    }
    atomic_store(&r->ready, ok);
    atomic_store(&r->finished, true);
    if (r->done)
        r->done(r->done_ud, ok);
    return NULL;
}

int registry_init(struct registry *r, const struct config *c)
{
    *r = (struct registry){0};
    r->entries = calloc(c->ntables ? c->ntables : 1, sizeof *r->entries);
    if (r->entries == NULL)
        return CORE_ENOMEM;
    r->n = c->ntables;
    r->data_dir = c->data_dir;
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
    for (size_t i = 0; i < r->n; i++)
        table_free(r->entries[i].table);
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
