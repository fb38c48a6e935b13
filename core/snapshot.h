/* snapshot.h - a table's persistent form: a directory that numpy and
 * PyTorch users can read, written atomically and loaded back exactly.
 *
 *   <data_dir>/<table>/snapshot-<version>/
 *       weight.npy      float32 [N, D], C order
 *       vocab.txt       one token per line (only for tables with a vocabulary)
 *       exp_avg.npy     sparse_adam state, float32 [N, D]   (once allocated)
 *       exp_avg_sq.npy  sparse_adam state
 *       sum.npy         adagrad state
 *       manifest.json   format version, name, shape, settings, optimizer
 *                       config, step, version, log seq (manifest.h)
 *
 * Writing goes to a temporary sibling directory, every file and the
 * directory are fsynced, then it is renamed into place (an existing snapshot
 * at the same version is swapped out atomically) and the parent fsynced: a
 * reader sees the old snapshot or the new one, never half of one. */
#ifndef CORE_SNAPSHOT_H
#define CORE_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"
#include "table.h"

/* 2 adds log_seq; format 1 snapshots still load, at log seq 0. */
#define SNAPSHOT_FORMAT_VERSION MANIFEST_FORMAT_VERSION

/* Writes a consistent copy of t (rows, state, step and version taken
 * together under the write lock, written to disk outside it) to
 * <data_dir>/<table name>/snapshot-<version>/, creating the folders it needs.
 * path_out (may be NULL) receives the final directory path; *version_out
 * (may be NULL) the version it holds. Returns CORE_OK, CORE_EIO (err names
 * the path and errno text), CORE_ENOMEM or CORE_ETOOBIG (path too long).
 * Any thread; concurrent with readers and writers of t. */
int snapshot_write(struct table *t, const char *data_dir, char *path_out, size_t path_len,
                   uint64_t *version_out, char *err, size_t errlen);

/* Loads the snapshot directory dir into a new table (*out, caller frees with
 * table_free): weights, vocabulary, settings, optimizer config and state,
 * step, version and log seq. name overrides the table name in the manifest when
 * non-NULL. Every defect is an error with err naming the file and what is
 * wrong: a missing file CORE_ENOTFOUND, an unreadable one CORE_EIO, a corrupt
 * manifest or a shape that disagrees with it CORE_EFORMAT, settings the
 * table refuses CORE_EINVAL, an unknown format_version CORE_EUNSUPPORTED.
 * Nothing is returned partially. A load racing a replacement of the same
 * snapshot reads one of the two whole or fails; it never mixes them. */
int snapshot_load(const char *dir, const char *name, struct table **out, char *err,
                  size_t errlen);

/* Finds the newest snapshot of table `name` under data_dir (the highest
 * <version> among <data_dir>/<name>/snapshot-<version>/ holding a
 * manifest.json) and writes its path to path_out. Returns CORE_OK,
 * CORE_ENOTFOUND when there is none, CORE_ETOOBIG when path_len is short,
 * CORE_EIO when the folder cannot be read. Temporary and replaced-away
 * directories are ignored. */
int snapshot_find_latest(const char *data_dir, const char *name, char *path_out,
                         size_t path_len, char *err, size_t errlen);

/* Removes all but the newest `keep` (>= 1) complete snapshots of table
 * `name` under data_dir, oldest first; *removed (may be NULL) gets how many
 * directories went. Hidden directories (snapshots being written or being
 * replaced) are never touched. Returns CORE_OK
 * (also when there is nothing to prune), CORE_EINVAL for keep < 1, CORE_EIO
 * when the folder cannot be read or a directory cannot be removed. */
int snapshot_prune(const char *data_dir, const char *name, size_t keep, size_t *removed,
                   char *err, size_t errlen);

#endif
