/* main.c - embedding-server: configuration, startup, the libuv loop that
 * owns signals and timers, and an orderly shutdown.
 *
 * Startup: config -> logging -> work pool -> libmicrohttpd listening (so
 * /healthz and /readyz answer at once) -> tables load on a background
 * thread -> ready. The main thread runs only the libuv loop: SIGINT and
 * SIGTERM, the periodic snapshot timer, the "tables loaded" notice, and the
 * drain timer during shutdown.
 *
 * Shutdown (first SIGINT/SIGTERM): stop accepting, refuse new writes (503),
 * let requests in flight and queued jobs finish (up to DRAIN_MS), close the
 * daemon, snapshot each table that changed (when configured), close the
 * logs, and tear down in the reverse order of startup. A second signal
 * skips the wait.
 *
 * Durability: every write goes through its table's journal (core/journal.h)
 * before it is answered; snapshots (periodic, when a log grows past
 * log_max_bytes, on shutdown, or asked for over HTTP) bound the log, and
 * each keeps the newest snapshot.keep of its table. The exit status is 1
 * when an answered write may have been lost. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "cluster.h"
#include "config.h"
#include "error.h"
#include "handlers.h"
#include "log.h"
#include "server.h"
#include "snapshot.h"

/* Longest wait for requests in flight, leaving room in the 5 s a process
 * manager typically grants for the final snapshots. */
#define DRAIN_MS 3000
#define DRAIN_POLL_MS 10

struct app {
    struct config cfg;
    struct server srv;
    uv_loop_t *loop;
    uv_signal_t sigint, sigterm;
    uv_async_t loaded;      /* the loader thread's "done" */
    uv_timer_t snapshots;   /* periodic snapshots */
    uv_timer_t log_check;   /* snapshots of tables whose log grew long */
    uv_timer_t drain;       /* polls requests in flight while stopping */
    bool loaded_ok;
    bool stopping;
    uint64_t drain_deadline;
    int exit_code;
};

static enum log_level log_level_of(enum config_log_level l)
{
    switch (l) {
    case CONFIG_LOG_ERROR: return LOG_ERROR;
    case CONFIG_LOG_WARN: return LOG_WARN;
    case CONFIG_LOG_INFO: return LOG_INFO;
    case CONFIG_LOG_DEBUG: return LOG_DEBUG;
    }
    return LOG_INFO;
}

/* True when the table took writes (gradient steps, row assignments, on a
 * frozen table too, and renormalizations) since its last snapshot, or holds
 * replayed log records: worth a snapshot, which also shortens the next
 * start. An untouched table is not worth a copy on disk. */
static bool unsaved(struct registry_entry *e)
{
    struct table *t = registry_table(e);
    return t != NULL && atomic_load(&e->snapshot_seq) != table_log_seq(t);
}

/* Writes one snapshot of e's table; any thread. False when it failed. */
static bool snapshot_entry(struct server *s, struct registry_entry *e, const char *why)
{
    char err[512] = "";
    int rc = registry_snapshot(&s->tables, e, why, NULL, 0, NULL, NULL, err, sizeof err);
    if (rc == CORE_EEXISTS)
        return true; /* a client's snapshot request is writing it now */
    if (rc != CORE_OK)
        log_error("table %s: %s snapshot failed: %s", e->cfg->name, why,
                  err[0] ? err : core_strerror(rc));
    return rc == CORE_OK;
}

/* True when e's log has grown past log_max_bytes since its last snapshot. */
static bool log_full(const struct server *s, struct registry_entry *e)
{
    if ((e->journal == NULL && e->cluster == NULL) || registry_table(e) == NULL)
        return false;
    uint64_t bytes = e->journal ? journal_appended_bytes(e->journal)
                                : cluster_table_applied_bytes(e->cluster);
    uint64_t grown = bytes - atomic_load(&e->snapshot_log_bytes);
    return grown > s->cfg->log_max_bytes;
}

/* ---- periodic snapshots ----------------------------------------------- */

struct snapshot_job {
    struct work_job job;
    struct server *srv;
    struct registry_entry *entry;
    const char *why;
};

static void run_snapshot_job(struct work_job *job)
{
    struct snapshot_job *j = (struct snapshot_job *)job;
    snapshot_entry(j->srv, j->entry, j->why);
    free(j);
}

/* Snapshots run on the work pool so that a big table's disk writes never
 * delay signal handling. */
static void schedule_snapshot(struct app *app, struct registry_entry *e, const char *why)
{
    if (atomic_load(&e->snapshot_running))
        return;
    struct snapshot_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return;
    *j = (struct snapshot_job){.job.run = run_snapshot_job, .srv = &app->srv, .entry = e,
                               .why = why};
    if (!work_submit(&app->srv.work, &j->job))
        free(j);
}

static void on_snapshot_timer(uv_timer_t *timer)
{
    struct app *app = timer->data;
    struct registry *r = &app->srv.tables;
    for (size_t i = 0; i < r->n; i++)
        if (unsaved(&r->entries[i]))
            schedule_snapshot(app, &r->entries[i], "periodic");
}

/* Once a second: a table whose log passed log_max_bytes since its last
 * snapshot gets one, so the log (and recovery time) stays bounded with no
 * setting at all. */
static void on_log_timer(uv_timer_t *timer)
{
    struct app *app = timer->data;
    struct registry *r = &app->srv.tables;
    for (size_t i = 0; i < r->n; i++)
        if (log_full(&app->srv, &r->entries[i]))
            schedule_snapshot(app, &r->entries[i], "log size");
}

/* ---- shutdown ------------------------------------------------------------ */

static void close_loop_handles(struct app *app)
{
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->loaded, NULL);
    uv_close((uv_handle_t *)&app->snapshots, NULL);
    uv_close((uv_handle_t *)&app->log_check, NULL);
    uv_close((uv_handle_t *)&app->drain, NULL);
}

static void on_drain_tick(uv_timer_t *timer)
{
    struct app *app = timer->data;
    int64_t busy = http_in_flight(&app->srv);
    size_t jobs = work_pending(&app->srv.work);
    if (busy > 0 || jobs > 0) {
        if (uv_now(app->loop) < app->drain_deadline)
            return;
        log_warn("shutdown: %lld requests and %zu jobs still running after %d ms; closing",
                 (long long)busy, jobs, DRAIN_MS);
    }
    close_loop_handles(app);
}

static void begin_shutdown(struct app *app, const char *why)
{
    if (app->stopping)
        return;
    app->stopping = true;
    log_info("shutting down (%s): no new connections, finishing requests in flight", why);
    atomic_store(&app->srv.draining, true);
    http_quiesce(&app->srv);
    uv_timer_stop(&app->snapshots);
    uv_timer_stop(&app->log_check);
    app->drain_deadline = uv_now(app->loop) + DRAIN_MS;
    uv_timer_start(&app->drain, on_drain_tick, 0, DRAIN_POLL_MS);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct app *app = sig->data;
    if (app->stopping) {
        log_warn("%s again: not waiting for requests in flight", strsignal(signum));
        app->drain_deadline = 0;
        return;
    }
    begin_shutdown(app, strsignal(signum));
}

/* ---- tables loaded --------------------------------------------------------- */

/* Runs on the loader thread; the loop thread picks it up in on_loaded. */
static void tables_done(void *ud, bool ok)
{
    struct app *app = ud;
    app->loaded_ok = ok;
    uv_async_send(&app->loaded);
}

static void on_loaded(uv_async_t *async)
{
    struct app *app = async->data;
    if (!app->srv.tables.finished)
        return;
    if (!app->loaded_ok) {
        log_error("a table failed to load; stopping");
        app->exit_code = 1;
        begin_shutdown(app, "a table failed to load");
        return;
    }
    bool v6 = strchr(app->cfg.host, ':') != NULL;
    log_info("embedding-server %s listening on http://%s%s%s:%u", ES_VERSION, v6 ? "[" : "",
             app->cfg.host, v6 ? "]" : "", (unsigned)app->srv.port);
    log_info("ready: %zu table%s loaded", app->srv.tables.n, app->srv.tables.n == 1 ? "" : "s");
    if (app->cfg.durability != CONFIG_DURABILITY_NONE)
        uv_timer_start(&app->log_check, on_log_timer, 1000, 1000);
    int interval = app->cfg.snapshot_interval_s;
    if (interval > 0)
        uv_timer_start(&app->snapshots, on_snapshot_timer, (uint64_t)interval * 1000,
                       (uint64_t)interval * 1000);
}

/* ---- startup --------------------------------------------------------------- */

static void log_summary(const struct app *app)
{
    const struct config *c = &app->cfg;
    const struct server *s = &app->srv;
    bool v6 = strchr(c->host, ':') != NULL;
    /* "listening" is said once the tables are loaded (log_listening): a table
     * that fails to load is reported before anything says it */
    log_info("embedding-server %s accepting connections on http://%s%s%s:%u (tables loading; "
             "/readyz answers 503 until they are)", ES_VERSION, v6 ? "[" : "", c->host,
             v6 ? "]" : "", (unsigned)s->port);
    log_info("limits: max_body_bytes %llu, max_batch %llu, max_k %d, connection_timeout %d s, "
             "max_connections %d (%d per IP), threads %d",
             (unsigned long long)c->max_body_bytes, (unsigned long long)c->max_batch, c->max_k,
             c->conn_timeout_s, c->max_connections, c->max_connections_per_ip, c->threads);
    char every[48] = "no periodic snapshots";
    if (c->snapshot_interval_s > 0)
        snprintf(every, sizeof every, "snapshots every %d s", c->snapshot_interval_s);
    log_info("auth: reads %s, writes %s; data_dir %s; %s%s",
             c->read_token ? "need a token" : "open",
             c->write_token ? "need the write token" : c->read_token ? "need a token" : "open",
             c->data_dir, every, c->snapshot_on_shutdown ? ", one on shutdown" : "");
    for (size_t i = 0; i < c->ntables; i++) {
        const struct config_table *t = &c->tables[i];
        if (t->has_init)
            log_info("table %s: init %lld x %lld (seed %llu), loading", t->name,
                     (long long)t->num_embeddings, (long long)t->embedding_dim,
                     (unsigned long long)t->seed);
        else
            log_info("table %s: %s (%s), loading", t->name, t->path,
                     loader_format_name(t->format));
    }
}

static int init_loop(struct app *app)
{
    app->loop = uv_default_loop();
    uv_signal_init(app->loop, &app->sigint);
    uv_signal_init(app->loop, &app->sigterm);
    uv_async_init(app->loop, &app->loaded, on_loaded);
    uv_timer_init(app->loop, &app->snapshots);
    uv_timer_init(app->loop, &app->log_check);
    uv_timer_init(app->loop, &app->drain);
    app->sigint.data = app->sigterm.data = app->loaded.data = app;
    app->snapshots.data = app->log_check.data = app->drain.data = app;
    int rc = uv_signal_start(&app->sigint, on_signal, SIGINT);
    if (rc == 0)
        rc = uv_signal_start(&app->sigterm, on_signal, SIGTERM);
    return rc;
}

/* At shutdown, with every write finished: snapshot each table that took
 * writes (every table that loaded, whether or not another failed), then
 * close the logs. Returns false when an answered write may be lost: its
 * table's snapshot failed and no intact log holds it. */
static bool final_snapshots(struct app *app)
{
    struct registry *r = &app->srv.tables;
    bool safe = true;
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        bool saved = !unsaved(e) || !app->cfg.snapshot_on_shutdown ||
                     snapshot_entry(&app->srv, e, "shutdown");
        /* with sync, every answered write was synced before its answer, even
         * if the log broke later; with interval, only if the last sync held */
        bool broken = e->journal != NULL && journal_broken(e->journal);
        int rc = journal_close(e->journal);
        bool logged = (e->journal != NULL &&
                       (app->cfg.durability == CONFIG_DURABILITY_SYNC ||
                        (app->cfg.durability == CONFIG_DURABILITY_INTERVAL && !broken &&
                         rc == CORE_OK))) ||
                      e->cluster != NULL; /* the stream holds every answered write */
        e->journal = NULL;
        if (unsaved(e) && !saved && !logged) {
            log_error("table %s: answered writes since seq %llu are neither in a snapshot nor "
                      "in an intact log: they are lost", e->cfg->name,
                      (unsigned long long)atomic_load(&e->snapshot_seq));
            safe = false;
        } else if (unsaved(e) && !app->cfg.snapshot_on_shutdown && !logged) {
            log_error("table %s: took writes, has no intact log and snapshot.on_shutdown is "
                      "off: they are lost", e->cfg->name);
            safe = false;
        }
    }
    return safe;
}

/* --check-config (WAL_CHECK: nothing on disk changes) and --repair-log
 * (WAL_REPAIR): load every table once, report, exit. */
static int check_config(const struct config *c, enum wal_repair mode)
{
    int failed = 0;
    for (size_t i = 0; i < c->ntables; i++) {
        char err[1024] = "";
        struct table *t = NULL;
        struct registry_load_opts o = {.data_dir = c->data_dir, .repair = mode};
        struct registry_loaded res;
        int rc = registry_load_table(&c->tables[i], &o, &t, &res, err, sizeof err);
        if (rc != CORE_OK) {
            fprintf(stderr, "table %s: %s\n", c->tables[i].name, err[0] ? err : core_strerror(rc));
            failed = 1;
            continue;
        }
        printf("table %s: %lld x %lld at version %llu, seq %llu ok", table_name(t),
               (long long)table_num_embeddings(t), (long long)table_dim(t),
               (unsigned long long)table_version(t), (unsigned long long)table_log_seq(t));
        if (res.wal.replayed > 0)
            printf(" (%llu log records after the snapshot)", (unsigned long long)res.wal.replayed);
        if (mode == WAL_REPAIR && (res.wal.damaged || res.wal.torn))
            printf("; cut the log in %s at offset %llu, dropping %llu bytes and %llu later "
                   "segment%s", res.wal.bad_file, (unsigned long long)res.wal.bad_offset,
                   (unsigned long long)res.wal.dropped_bytes,
                   (unsigned long long)res.wal.dropped_segments,
                   res.wal.dropped_segments == 1 ? "" : "s");
        printf("\n");
        table_free(t);
    }
    return failed;
}

/* Handles --help, --version and --check-config; -1 means serve. */
static int run_action(struct app *app, enum config_action action, const char *prog)
{
    switch (action) {
    case CONFIG_HELP:
        config_print_help(stdout, prog);
        return 0;
    case CONFIG_VERSION:
        printf("embedding-server %s\n", ES_VERSION);
        return 0;
    case CONFIG_CHECK:
        return check_config(&app->cfg, WAL_CHECK);
    case CONFIG_REPAIR_LOG:
        return check_config(&app->cfg, WAL_REPAIR);
    case CONFIG_RUN:
        break;
    }
    return -1;
}

/* The failures a newcomer meets first (a table file that is missing or
 * unreadable) are reported before anything says "listening"; what only
 * reading a file can find is reported while it loads. stat and access only:
 * nothing is opened (a path may be a pipe that blocks). */
static bool tables_reachable(const struct config *c)
{
    bool ok = true;
    for (size_t i = 0; i < c->ntables; i++) {
        const struct config_table *t = &c->tables[i];
        struct stat st;
        uint64_t *seqs = NULL;
        size_t n = 0;
        if (t->path == NULL)
            continue;
        if (t->resume && snapshot_list(c->data_dir, t->name, &seqs, &n, NULL, 0) == CORE_OK &&
            n > 0) {
            free(seqs);
            continue; /* it resumes from its snapshot: the file is not read */
        }
        free(seqs);
        if (stat(t->path, &st) != 0 || access(t->path, R_OK) != 0) {
            log_error("table %s: %s: %s", t->name, t->path, strerror(errno));
            ok = false;
        }
    }
    return ok;
}

static int serve(struct app *app)
{
    struct server *s = &app->srv;
    char err[512] = "";
    s->cfg = &app->cfg;
    s->auth = (struct auth){app->cfg.read_token, app->cfg.write_token};
    if (!tables_reachable(&app->cfg))
        return 1;
    metrics_init(&s->metrics);
    if (registry_init(&s->tables, &app->cfg) != CORE_OK ||
        work_init(&s->work, app->cfg.threads > 0 ? (size_t)app->cfg.threads : 1) != 0) {
        log_error("out of memory or threads at startup");
        registry_deinit(&s->tables, 0);
        return 1;
    }
    if (app->cfg.cluster_nats != NULL &&
        cluster_new(&s->cluster, &app->cfg, err, sizeof err) != CORE_OK) {
        log_error("%s", err);
        work_deinit(&s->work);
        registry_deinit(&s->tables, 0);
        return 1;
    }
    s->tables.cluster = s->cluster;
    if (init_loop(app) != 0 || http_start(s, err, sizeof err) != 0) {
        log_error("%s", err[0] ? err : "cannot install signal handlers");
        work_deinit(&s->work);
        registry_deinit(&s->tables, 0);
        cluster_free(s->cluster);
        return 1;
    }
    log_summary(app);
    if (registry_start(&s->tables, tables_done, app) != 0) {
        log_error("cannot start the loading thread");
        app->exit_code = 1;
        begin_shutdown(app, "no loading thread");
    }

    uv_run(app->loop, UV_RUN_DEFAULT);

    /* jobs first: each resumes its suspended connection, and libmicrohttpd
     * aborts when stopped with a connection still suspended; the pool stays
     * valid (refusing new jobs) until the daemon's threads are gone */
    work_stop(&s->work);
    for (size_t i = 0; i < s->tables.n; i++) {
        if (registry_table(&s->tables.entries[i]) == NULL)
            continue;
        journal_flush(s->tables.entries[i].journal);
        cluster_table_flush(s->tables.entries[i].cluster, app->cfg.cluster_publish_timeout_ms);
    }
    http_stop(s);
    work_deinit(&s->work);
    if (!final_snapshots(app))
        app->exit_code = 1;
    if (!registry_deinit(&s->tables, 1000)) {
        /* the loading thread still reads the config and the registry:
         * end the process without tearing them down under it */
        log_info("stopped (a table was still loading)");
        _exit(app->exit_code);
    }
    cluster_free(s->cluster);
    uv_loop_close(app->loop);
    log_info("stopped");
    return app->exit_code;
}

int main(int argc, char **argv)
{
    static struct app app;
    enum config_action action = CONFIG_RUN;
    char err[1024] = "";
    if (config_load(&app.cfg, argc, argv, &action, err, sizeof err) != CORE_OK) {
        fprintf(stderr, "embedding-server: %s\n", err);
        fprintf(stderr, "Try 'embedding-server --help'.\n");
        return 2;
    }
    int rc = run_action(&app, action, argv[0]);
    if (rc < 0) {
        log_set_level(log_level_of(app.cfg.log_level));
        signal(SIGPIPE, SIG_IGN);
        /* a log append past RLIMIT_FSIZE must fail with EFBIG (a 503), not
         * kill the process */
        signal(SIGXFSZ, SIG_IGN);
        rc = serve(&app);
    }
    config_deinit(&app.cfg);
    return rc;
}
