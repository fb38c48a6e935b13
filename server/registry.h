/* registry.h - the server's tables: one entry per configured table, loaded
 * on a background thread so that /healthz and /readyz answer while big
 * files are read.
 *
 * An entry's table pointer is published once, with release order, when its
 * state becomes ENTRY_READY; request threads read it with registry_table()
 * and may then use it until registry_deinit (tables are never replaced
 * while serving). Counters are atomics, updated by any thread. */
#ifndef SERVER_REGISTRY_H
#define SERVER_REGISTRY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "journal.h"
#include "table.h"

enum entry_state { ENTRY_LOADING, ENTRY_READY, ENTRY_FAILED };

struct cluster;
struct cluster_table;

struct registry_entry {
    const struct config_table *cfg; /* borrowed from the config */
    struct table *table;            /* valid once state is ENTRY_READY */
    struct journal *journal;        /* its writes' path; valid with table */
    struct cluster_table *cluster;  /* cluster mode: the stream instead of journal */
    _Atomic int state;              /* enum entry_state */
    _Atomic uint64_t rows_served;   /* rows returned by lookups and bags */
    _Atomic uint64_t updates;       /* write requests applied */
    _Atomic uint64_t rows_updated;  /* rows changed by those requests */
    _Atomic uint64_t snapshot_seq;  /* log seq held by the last snapshot written or loaded */
    _Atomic uint64_t snapshot_log_bytes; /* journal_appended_bytes at that snapshot */
    _Atomic bool snapshot_running;  /* one snapshot of a table at a time */
};

/* Called on the loading thread once every table is loaded (ok) or one has
 * failed (!ok, the error already logged). */
typedef void (*registry_done_cb)(void *ud, bool ok);

struct registry {
    struct registry_entry *entries;
    size_t n;
    const struct config *cfg; /* data_dir, durability, snapshot.keep */
    struct cluster *cluster;  /* cluster mode (set before registry_start), or NULL */
    _Atomic bool ready;  /* every entry loaded */
    _Atomic bool finished; /* the loader thread is done (ok or not) */
    pthread_t loader;
    bool loader_started;
    registry_done_cb done;
    void *done_ud;
};

/* One entry per table of c, all ENTRY_LOADING. c must outlive r. Returns
 * CORE_OK or CORE_ENOMEM. */
int registry_init(struct registry *r, const struct config *c);

/* Starts the loading thread; done is called from it at the end. Returns 0
 * or an errno value. */
int registry_start(struct registry *r, registry_done_cb done, void *ud);

/* Joins the loader if it has finished within wait_ms and frees every
 * table; returns true. A loader still busy with a huge file is left alone
 * (false): the caller then ends the process without freeing anything the
 * loader may still read (the config, the registry). Safe on a zeroed
 * registry. */
bool registry_deinit(struct registry *r, int wait_ms);

/* The entry named name[0..len), or NULL. Any thread. */
struct registry_entry *registry_find(struct registry *r, const char *name);

/* The entry's table when loaded, else NULL (acquire order). */
struct table *registry_table(struct registry_entry *e);

/* True once every table has loaded. */
bool registry_ready(const struct registry *r);

/* How registry_load_table treats the data directory. */
struct registry_load_opts {
    const char *data_dir;  /* NULL: neither resume nor replay */
    enum wal_repair repair; /* WAL_RECOVER serving, WAL_CHECK --check-config,
                               WAL_REPAIR --repair-log */
};

/* What registry_load_table found. */
struct registry_loaded {
    bool from_snapshot;     /* the table came from a snapshot directory */
    uint64_t snapshot_seq;  /* the seq it held (0 otherwise) */
    struct wal_report wal;  /* the log replayed after it */
    bool fresh_over_old;    /* resume false over an older run's data: the table
                               continues its seq numbering and needs a first
                               snapshot before it takes writes */
};

/* Loads one configured table: with ct->resume, the newest snapshot under
 * <data_dir>/<name>/ that loads (a damaged one is reported and an older one
 * tried), else its configured source (file, snapshot path or init); then
 * the records of <data_dir>/<name>/wal/ after the snapshot's seq, then its
 * optimizer. A torn log tail is dropped (and logged); damage before it is
 * an error naming the file and offset (see --repair-log). Errors name the
 * table and the file in err. */
int registry_load_table(const struct config_table *ct, const struct registry_load_opts *o,
                        struct table **out, struct registry_loaded *res, char *err,
                        size_t errlen);

/* Writes a snapshot of e's table (why: "periodic", "shutdown", ... for the
 * log), then keeps the newest snapshot.keep and deletes the log segments
 * wholly older than the oldest snapshot kept. path_out (may be NULL)
 * receives the directory, *version_out / *seq_out what it holds. Returns
 * CORE_OK, CORE_EEXISTS when another snapshot of the table is being written,
 * or snapshot_write's error (err says why). Any thread. */
int registry_snapshot(struct registry *r, struct registry_entry *e, const char *why,
                      char *path_out, size_t path_len, uint64_t *version_out,
                      uint64_t *seq_out, char *err, size_t errlen);

/* Hands a validated write to e's log: its journal, or its stream in
 * cluster mode (see journal_submit, cluster_submit). Any thread. */
void registry_submit(struct registry_entry *e, struct journal_write *w);

/* <data_dir>/<name>/wal into out. */
int registry_wal_dir(const char *data_dir, const char *name, char *out, size_t len);

#endif
