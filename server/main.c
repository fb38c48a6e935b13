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
 * daemon, snapshot each trainable table that changed (when configured),
 * and tear down in the reverse order of startup. Exit status 0; a second
 * signal skips the wait.
 *
 * Automatic snapshots (periodic, shutdown) keep the newest three of each
 * table; snapshots asked for over HTTP are counted among them. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "error.h"
#include "handlers.h"
#include "log.h"
#include "server.h"
#include "similarity.h"
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

/* True when the table took writes (gradient steps or row assignments, on a
 * frozen table too) since it was loaded or last snapshotted: an
 * acknowledged write must survive a restart, and an untouched table is not
 * worth a copy on disk. */
static bool unsaved(struct registry_entry *e)
{
    struct table *t = registry_table(e);
    return t != NULL && atomic_load(&e->snapshot_version) != table_version(t);
}

/* Automatic snapshots would fill the disk over a long run: after each one
 * only the newest snapshot.keep of the table stay. */
static void prune_snapshots(struct server *s, struct registry_entry *e)
{
    char err[512] = "";
    size_t removed = 0;
    int rc = snapshot_prune(s->cfg->data_dir, e->cfg->name, s->cfg->snapshot_keep, &removed,
                            NULL, err, sizeof err);
    if (rc != CORE_OK)
        log_warn("table %s: pruning old snapshots: %s", e->cfg->name,
                 err[0] ? err : core_strerror(rc));
    else if (removed > 0)
        log_debug("table %s: removed %zu old snapshot%s", e->cfg->name, removed,
                  removed == 1 ? "" : "s");
}

/* Writes one snapshot of e's table; any thread. */
static void snapshot_entry(struct server *s, struct registry_entry *e, const char *why)
{
    if (atomic_exchange(&e->snapshot_running, true))
        return; /* a client's snapshot request is writing it now */
    char path[4096], err[512] = "";
    struct snapshot_info info = {0};
    int rc = snapshot_write(e->table, s->cfg->data_dir, path, sizeof path, &info, err,
                            sizeof err);
    uint64_t version = info.version;
    if (rc == CORE_OK) {
        atomic_store(&e->snapshot_version, version);
        atomic_store(&e->has_snapshot, true);
        log_info("table %s: %s snapshot at version %llu written to %s", e->cfg->name, why,
                 (unsigned long long)version, path);
        prune_snapshots(s, e);
    } else {
        log_error("table %s: %s snapshot failed: %s", e->cfg->name, why,
                  err[0] ? err : core_strerror(rc));
    }
    atomic_store(&e->snapshot_running, false);
}

/* ---- periodic snapshots ----------------------------------------------- */

struct snapshot_job {
    struct work_job job;
    struct server *srv;
    struct registry_entry *entry;
};

static void run_snapshot_job(struct work_job *job)
{
    struct snapshot_job *j = (struct snapshot_job *)job;
    snapshot_entry(j->srv, j->entry, "periodic");
    free(j);
}

/* On the loop thread: snapshots run on the work pool so that a big table's
 * disk writes never delay signal handling. */
static void on_snapshot_timer(uv_timer_t *timer)
{
    struct app *app = timer->data;
    struct registry *r = &app->srv.tables;
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        if (!unsaved(e) || atomic_load(&e->snapshot_running))
            continue;
        struct snapshot_job *j = calloc(1, sizeof *j);
        if (j == NULL)
            continue;
        *j = (struct snapshot_job){.job.run = run_snapshot_job, .srv = &app->srv, .entry = e};
        if (!work_submit(&app->srv.work, &j->job))
            free(j);
    }
}

/* ---- shutdown ------------------------------------------------------------ */

static void close_loop_handles(struct app *app)
{
    uv_close((uv_handle_t *)&app->sigint, NULL);
    uv_close((uv_handle_t *)&app->sigterm, NULL);
    uv_close((uv_handle_t *)&app->loaded, NULL);
    uv_close((uv_handle_t *)&app->snapshots, NULL);
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
    log_info("ready: %zu table%s loaded", app->srv.tables.n, app->srv.tables.n == 1 ? "" : "s");
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
    log_info("embedding-server %s listening on http://%s%s%s:%u", ES_VERSION, v6 ? "[" : "",
             c->host, v6 ? "]" : "", (unsigned)s->port);
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
    uv_timer_init(app->loop, &app->drain);
    app->sigint.data = app->sigterm.data = app->loaded.data = app;
    app->snapshots.data = app->drain.data = app;
    int rc = uv_signal_start(&app->sigint, on_signal, SIGINT);
    if (rc == 0)
        rc = uv_signal_start(&app->sigterm, on_signal, SIGTERM);
    return rc;
}

static void final_snapshots(struct app *app)
{
    if (!app->cfg.snapshot_on_shutdown || !app->loaded_ok)
        return;
    struct registry *r = &app->srv.tables;
    for (size_t i = 0; i < r->n; i++)
        if (unsaved(&r->entries[i]))
            snapshot_entry(&app->srv, &r->entries[i], "shutdown");
}

/* --check-config: load every table once, report, exit. */
static int check_config(const struct config *c)
{
    int failed = 0;
    for (size_t i = 0; i < c->ntables; i++) {
        char err[1024] = "";
        struct table *t = NULL;
        bool from_snapshot = false;
        int rc = registry_load_table(&c->tables[i], c->data_dir, &t, &from_snapshot, err,
                                    sizeof err);
        if (rc != CORE_OK) {
            fprintf(stderr, "table %s: %s\n", c->tables[i].name, err[0] ? err : core_strerror(rc));
            failed = 1;
            continue;
        }
        printf("table %s: %lld x %lld ok\n", table_name(t), (long long)table_num_embeddings(t),
               (long long)table_dim(t));
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
        return check_config(&app->cfg);
    case CONFIG_RUN:
        break;
    }
    return -1;
}

static int serve(struct app *app)
{
    struct server *s = &app->srv;
    char err[512] = "";
    s->cfg = &app->cfg;
    s->auth = (struct auth){app->cfg.read_token, app->cfg.write_token};
    metrics_init(&s->metrics);
    if (registry_init(&s->tables, &app->cfg) != CORE_OK ||
        work_init(&s->work, app->cfg.threads > 0 ? (size_t)app->cfg.threads : 1) != 0) {
        log_error("out of memory or threads at startup");
        registry_deinit(&s->tables, 0);
        return 1;
    }
    if (init_loop(app) != 0 || http_start(s, err, sizeof err) != 0) {
        log_error("%s", err[0] ? err : "cannot install signal handlers");
        work_deinit(&s->work);
        registry_deinit(&s->tables, 0);
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
    http_stop(s);
    work_deinit(&s->work);
    final_snapshots(app);
    if (!registry_deinit(&s->tables, 1000)) {
        /* the loading thread still reads the config and the registry:
         * end the process without tearing them down under it */
        log_info("stopped (a table was still loading)");
        _exit(app->exit_code);
    }
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
        rc = serve(&app);
    }
    config_deinit(&app.cfg);
    return rc;
}
