/* snapshot.h - a table's persistent form: a directory that numpy and
 * PyTorch users can read, written atomically and loaded back exactly.
 *
 *   <data_dir>/<table>/snapshot-<log seq>/
 *       weight.npy      float32 [N, D], C order
 *       vocab.txt       one token per line (only for tables with a vocabulary)
 *       exp_avg.npy     sparse_adam state, float32 [N, D]   (once allocated)
 *       exp_avg_sq.npy  sparse_adam state
 *       sum.npy         adagrad state
 *       manifest.json   format version, name, shape, settings, optimizer
 *                       config, step, version, log seq (manifest.h)
 *
 * A snapshot is named after the table's log seq (table_log_seq) at the copy:
 * the seq keeps growing across runs, so names never collide between runs
 * and the highest is the newest; two copies at the same seq hold the same
 * table, so a second snapshot at a seq replaces the first. Recovery is the
 * newest snapshot that loads plus the log records after its seq. Directories
 * of format 1 (before the log) are named by version; they still load, at
 * log seq 0, and count as older than every later snapshot.
 *
 * Writing goes to a hidden temporary sibling directory (.tmp-snapshot-*),
 * every file and the directory are fsynced, then it is renamed into place
 * (an existing snapshot of the same name is swapped out atomically) and the
 * parent fsynced: a reader sees the old snapshot or the new one, never half
 * of one. */
#ifndef CORE_SNAPSHOT_H
#define CORE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"
#include "table.h"

/* 2 adds log_seq; format 1 snapshots still load, at log seq 0. */
#define SNAPSHOT_FORMAT_VERSION MANIFEST_FORMAT_VERSION

/* What snapshot_write did. */
struct snapshot_info {
    uint64_t version;  /* table_version of the copy */
    uint64_t log_seq;  /* table_log_seq of the copy: the directory's name */
    uint64_t bytes;    /* bytes of the files written */
    uint64_t lock_us;  /* microseconds t's write lock was held (writers waited) */
    uint64_t total_us; /* microseconds the whole write took, fsyncs included */
};

/* Writes a consistent copy of t (rows, state, step, version and log seq
 * taken together under the write lock, written to disk outside it) to
 * <data_dir>/<table name>/snapshot-<log seq>/, creating the folders it needs.
 * path_out (may be NULL) receives the final directory path; *info (may be
 * NULL) what was written, on CORE_OK. Returns CORE_OK, CORE_EIO (err names
 * the path and errno text), CORE_ENOMEM or CORE_ETOOBIG (path too long).
 * Any thread; concurrent with readers and writers of t, which must outlive
 * the call. */
int snapshot_write(struct table *t, const char *data_dir, char *path_out, size_t path_len,
                   struct snapshot_info *info, char *err, size_t errlen);

/* Loads the snapshot directory dir into a new table (*out, caller frees with
 * table_free): weights and state bit for bit (NaN and infinities included),
 * vocabulary, settings, optimizer config, step, version and log seq. name
 * overrides the table name in the manifest when non-NULL. Every defect is
 * an error with err naming the file and what is wrong: a missing file
 * CORE_ENOTFOUND, an unreadable one CORE_EIO, a corrupt manifest or a shape
 * that disagrees with it CORE_EFORMAT, settings the table refuses
 * CORE_EINVAL, an unknown format_version CORE_EUNSUPPORTED. Nothing is
 * returned partially. A load racing a replacement of the same snapshot
 * reads one of the two whole or fails; it never mixes them. */
int snapshot_load(const char *dir, const char *name, struct table **out, char *err,
                  size_t errlen);

/* Forms <data_dir>/<name>/snapshot-<seq> in path_out[len]. Returns CORE_OK
 * or CORE_ETOOBIG when it does not fit. */
int snapshot_path(const char *data_dir, const char *name, uint64_t seq, char *path_out,
                  size_t len);

/* The complete snapshots of table `name` under data_dir (directories
 * snapshot-<n> holding a manifest.json), newest first (see the top of this
 * file), as the numbers of their names for snapshot_path: *seqs is
 * malloc'd (caller frees; NULL when *n is 0). A missing folder holds none.
 * Temporary and replaced-away directories are not listed; damaged
 * snapshots are (loading them says what is wrong). Returns CORE_OK,
 * CORE_EIO (the folder cannot be read) or CORE_ENOMEM. */
int snapshot_list(const char *data_dir, const char *name, uint64_t **seqs, size_t *n,
                  char *err, size_t errlen);

/* The path of the newest complete snapshot of table `name` (the first of
 * snapshot_list) in path_out. Returns CORE_OK, CORE_ENOTFOUND when there is
 * none, CORE_ETOOBIG when path_len is short, CORE_EIO when the folder
 * cannot be read. */
int snapshot_find_latest(const char *data_dir, const char *name, char *path_out,
                         size_t path_len, char *err, size_t errlen);

/* Told about each snapshot snapshot_load_newest could not load: its path,
 * the error code and message. */
typedef void (*snapshot_skip_fn)(void *ud, const char *path, int rc, const char *why);

/* Loads the newest snapshot of table `name` that loads, trying them in
 * snapshot_list order: a damaged newest snapshot falls back to an older
 * one (the caller replays the log from the loaded table's table_log_seq).
 * skip (may be NULL) is called for each one that failed; path_out (may be
 * NULL) gets the directory loaded. Returns CORE_OK with *out as
 * snapshot_load; CORE_ENOTFOUND only when there is no snapshot at all; when
 * none loads, the newest one's error (err its message; a file missing from
 * it is CORE_EFORMAT here, so it cannot pass for no snapshot); CORE_EIO
 * when the folder cannot be read. */
int snapshot_load_newest(const char *data_dir, const char *name, struct table **out,
                         char *path_out, size_t path_len, snapshot_skip_fn skip, void *ud,
                         char *err, size_t errlen);

/* Removes all but the newest `keep` (>= 1) complete snapshots of table
 * `name` under data_dir, oldest first; *removed (may be NULL) gets how many
 * directories went and *oldest_kept (may be NULL) the log seq of the oldest
 * snapshot that stays (0 when there is none, or when it is of format 1): the
 * log records up to it are needed by no snapshot left, so the caller may
 * delete log segments that lie wholly at or below it (wal_remove_below).
 * Hidden directories (snapshots being written or being replaced) are never
 * touched. Returns CORE_OK (also when there is nothing to prune),
 * CORE_EINVAL for keep < 1, CORE_EIO when the folder cannot be read or a
 * directory cannot be removed. */
int snapshot_prune(const char *data_dir, const char *name, size_t keep, size_t *removed,
                   uint64_t *oldest_kept, char *err, size_t errlen);

/* Removes the hidden directories a crash mid-snapshot leaves in table
 * `name`'s folder (.tmp-snapshot-*: snapshots being written, and ones being
 * replaced); *removed (may be NULL) gets how many went. Call it at startup,
 * before any snapshot of that table can be running: it would remove a
 * running one's directory. Returns CORE_OK (also for a missing folder) or
 * CORE_EIO naming the directory. */
int snapshot_clean_tmp(const char *data_dir, const char *name, size_t *removed, char *err,
                       size_t errlen);

#endif
