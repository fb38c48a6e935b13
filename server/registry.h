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
#include "table.h"

enum entry_state { ENTRY_LOADING, ENTRY_READY, ENTRY_FAILED };

struct registry_entry {
    const struct config_table *cfg; /* borrowed from the config */
    struct table *table;            /* valid once state is ENTRY_READY */
    _Atomic int state;              /* enum entry_state */
    _Atomic uint64_t rows_served;   /* rows returned by lookups and bags */
    _Atomic uint64_t updates;       /* write requests applied */
    _Atomic uint64_t rows_updated;  /* rows changed by those requests */
    _Atomic uint64_t snapshot_version; /* version of the last snapshot written */
    _Atomic bool has_snapshot;
    _Atomic bool snapshot_running;  /* one snapshot of a table at a time */
};

/* Called on the loading thread once every table is loaded (ok) or one has
 * failed (!ok, the error already logged). */
typedef void (*registry_done_cb)(void *ud, bool ok);

struct registry {
    struct registry_entry *entries;
    size_t n;
    const char *data_dir; /* the config's, for resuming from snapshots */
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

/* Loads one configured table (file, snapshot or init, then its optimizer);
 * *from_snapshot tells whether it came from a snapshot directory. A
 * table with ct->resume starts from the newest snapshot under
 * data_dir/<name>/ when one exists (data_dir may be NULL: no resume). Errors
 * name the table and the file in err. */
int registry_load_table(const struct config_table *ct, const char *data_dir,
                        struct table **out, bool *from_snapshot, char *err, size_t errlen);

#endif
