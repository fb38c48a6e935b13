/* manifest.h - manifest.json, the description of a snapshot directory
 * (snapshot.h): format version, table name, shape, settings, optimizer
 * config, step, version, log seq and the list of files, with its writer and
 * its strict reader.
 *
 * The reader is strict because only this program writes manifests: bytes it
 * would not have written (trailing bytes, duplicate keys, escapes, deep
 * nesting, a field missing, of the wrong type or out of range, state files
 * of another optimizer) mean a damaged snapshot, reported with the file and
 * the field, never guessed around. Plain data, no I/O but manifest_read. */
#ifndef CORE_MANIFEST_H
#define CORE_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "optim.h"
#include "table.h"

/* Written by manifest_dump. Format 1 (before log seqs) is still read, with
 * log_seq 0; anything else is CORE_EUNSUPPORTED. */
#define MANIFEST_FORMAT_VERSION 2
#define MANIFEST_FORMAT_VERSION_MIN 1

/* Larger manifest files are refused (a real one is under 1 KiB). */
#define MANIFEST_MAX_BYTES (1u << 20)

/* The files a snapshot may hold besides manifest.json. */
enum manifest_file {
    MANIFEST_WEIGHT,     /* weight.npy, always present */
    MANIFEST_VOCAB,      /* vocab.txt, tables with a vocabulary */
    MANIFEST_EXP_AVG,    /* exp_avg.npy, sparse_adam state */
    MANIFEST_EXP_AVG_SQ, /* exp_avg_sq.npy, sparse_adam state */
    MANIFEST_SUM,        /* sum.npy, adagrad state */
    MANIFEST_NFILES
};

struct manifest {
    int format_version;                /* as read; manifest_dump writes the current one */
    char name[TABLE_NAME_MAX + 1];
    int64_t rows, dim;                 /* shape of weight.npy and of every state file */
    struct table_settings settings;    /* normalized, as table_settings() gives them */
    bool configured;                   /* false: "optimizer": null (default sgd) */
    struct optim_config optimizer;     /* meaningful when configured */
    int64_t step;                      /* optimizer steps taken */
    uint64_t version;                  /* table_version */
    uint64_t log_seq;                  /* table_log_seq; 0 for format 1 */
    bool files[MANIFEST_NFILES];       /* which files the snapshot holds */
};

/* The file name of f ("weight.npy", ...): a static string. */
const char *manifest_file_name(enum manifest_file f);

/* True when f is a float32 [rows, dim] .npy file (every file but the vocabulary). */
bool manifest_file_is_npy(enum manifest_file f);

/* Formats m as manifest.json text with MANIFEST_FORMAT_VERSION; *text is
 * malloc'd (caller frees), NUL-terminated, *len bytes. Every double is printed
 * so that it reads back to the same bits. Returns CORE_OK, CORE_EINVAL when
 * m->name is not a table name or the file list is inconsistent (no weight,
 * half of the sparse_adam state), or CORE_ENOMEM. */
int manifest_dump(const struct manifest *m, char **text, size_t *len);

/* Reads manifest text (text[0..len), need not be NUL-terminated) into *m.
 * file names the source in messages. Returns CORE_OK, CORE_EFORMAT (err names
 * file, offset or field and what is wrong), CORE_EUNSUPPORTED for a
 * format_version this build does not read, or CORE_ENOMEM. *m is
 * meaningful only on CORE_OK. */
int manifest_parse(const char *text, size_t len, const char *file, struct manifest *m,
                   char *err, size_t errlen);

/* Reads the file at path (at most MANIFEST_MAX_BYTES) and parses it as
 * manifest_parse does. Also CORE_ENOTFOUND (no such file), CORE_EIO and
 * CORE_ETOOBIG, with err naming path. */
int manifest_read(const char *path, struct manifest *m, char *err, size_t errlen);

#endif
