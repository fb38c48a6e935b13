/* config.h - the service's settings: one plain struct, filled in increasing
 * precedence from built-in defaults, a JSON file (--config FILE or
 * EMBEDDING_SERVER_CONFIG), EMBEDDING_SERVER_* environment variables and
 * command-line flags. Every option lives in one table in config.c that
 * drives the JSON keys, the environment, the flags and --help alike.
 *
 * Validation is strict: unknown or duplicate keys, wrong types and values out
 * of range are errors whose message names the key path
 * ("tables[1].optimizer.lr: must be finite and > 0"). Functions return
 * CORE_OK or a core_err (CORE_EINVAL bad setting, CORE_EIO unreadable file,
 * CORE_ENOTFOUND no default table, CORE_ENOMEM) and fill err[errlen].
 *
 * Threads: config is filled once at startup by one thread, then read-only. */
#ifndef CONFIG_CONFIG_H
#define CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "loader.h"
#include "optim.h"
#include "table.h"

#ifndef ES_VERSION
#define ES_VERSION "0.1.0"
#endif

#define CONFIG_MAX_TABLES 64
#define CONFIG_MAX_K_LIMIT 1000 /* max_k may not be configured above this */
/* Most threads (libmicrohttpd's pool). */
#define CONFIG_MAX_THREADS 256

enum config_log_level {
    CONFIG_LOG_ERROR,
    CONFIG_LOG_WARN,
    CONFIG_LOG_INFO,
    CONFIG_LOG_DEBUG,
};

/* When an answered write is on disk (API.md, "Durability"). */
enum config_durability {
    CONFIG_DURABILITY_SYNC,     /* fdatasync'ed (group commit) before the answer */
    CONFIG_DURABILITY_INTERVAL, /* synced every durability_interval_ms */
    CONFIG_DURABILITY_NONE,     /* no log: snapshots only */
};

/* One entry of "tables". Exactly one of path / init is set. */
struct config_table {
    char name[TABLE_NAME_MAX + 1];
    /* File source: path resolved against the config file's folder (absolute,
     * or relative to the cwd when the config path was). NULL for init. */
    char *path;
    enum loader_format format; /* LOADER_AUTO unless given */
    char *tensor;              /* safetensors tensor name, or NULL */
    char *vocab;               /* resolved token file, or NULL */
    /* Init source (has_init): N(0,1) rows, as nn.Embedding. */
    bool has_init;
    int64_t num_embeddings;
    int64_t embedding_dim;
    uint64_t seed; /* default 0 */
    /* padding_idx, max_norm, norm_type (INFINITY for "inf"),
     * scale_grad_by_freq, freeze (default true for files, false for init),
     * oov_id (-1 = "error"). Checked against the shape by table_new. */
    struct table_settings settings;
    /* resume (default true): the table starts from the newest snapshot in
     * <data_dir>/<name>/ when there is one, so a restart keeps every
     * acknowledged write (gradient steps, row assignments). */
    bool resume;
    /* keyed tables ("keys": "int64"): ids are int64 keys, rows come and go
     * (table.h). num_embeddings is then the capacity; init.std, missing,
     * ttl_seconds and evict are only for them. */
    bool keyed;
    struct table_keyed_settings keyed_settings;
    /* has_optimizer false: the table's default (sgd, lr 0.01). */
    bool has_optimizer;
    struct optim_config optimizer;
};

/* All strings are malloc'd and owned by the struct (freed by config_deinit);
 * NULL means unset. */
struct config {
    char *config_path;          /* the JSON file read, or NULL */
    char *host;                 /* listen.host, default "127.0.0.1" */
    int port;                   /* listen.port, default 8080; 0 = ephemeral */
    char *data_dir;             /* default "./data" (snapshots live here) */
    uint64_t max_body_bytes;    /* limits.max_body_bytes, default 64 MiB */
    uint64_t max_batch;         /* limits.max_batch, default 100000 */
    int max_k;                  /* limits.max_k, default 1000, in [1, 1000] */
    int conn_timeout_s;         /* limits.connection_timeout, default 30 */
    int max_connections;        /* limits.max_connections, default 1024 */
    int max_connections_per_ip; /* limits.max_connections_per_ip, default 64 */
    uint64_t max_answer_bytes;  /* limits.max_answer_bytes, default 256 MiB */
    int header_timeout_s;       /* limits.header_timeout, default 10 */
    uint64_t min_body_rate;     /* limits.min_body_rate, bytes/s, default 16384; 0 = none */
    int threads;                /* worker threads, default 2 */
    enum config_log_level log_level; /* default info */
    char *read_token;           /* auth.read_token, or NULL: reads open */
    char *write_token;          /* auth.write_token, or NULL: writes open */
    int snapshot_interval_s;    /* snapshot.interval, 0 = off (default) */
    bool snapshot_on_shutdown;  /* snapshot.on_shutdown, default true */
    int snapshot_keep;          /* snapshot.keep, default 3: newest kept of each table */
    enum config_durability durability; /* durability, default sync */
    int durability_interval_ms; /* durability_interval_ms, default 1000 */
    uint64_t log_max_bytes;     /* log_max_bytes: a table's log this long since its last
                                   snapshot triggers one; default 256 MiB */
    /* cluster mode (API.md, "Cluster mode"): on when cluster_nats is set */
    char *cluster_nats;         /* cluster.nats: NATS URLs, comma-separated, or NULL */
    char *cluster_node;         /* cluster.node: this server's name, default the host name */
    int cluster_stream_replicas; /* cluster.stream_replicas: JetStream replicas, default 3 */
    int cluster_wait_ms;        /* cluster.wait_ms: longest wait of a read for min_seq */
    int cluster_publish_timeout_ms; /* cluster.publish_timeout_ms: wait for JetStream's ack */
    size_t ntables;
    struct config_table *tables;
    bool builtin_default;       /* tables[] is the built-in "words" table */
};

/* What main should do after config_load. */
enum config_action {
    CONFIG_RUN,     /* serve */
    CONFIG_HELP,    /* --help: call config_print_help and exit 0 */
    CONFIG_VERSION, /* --version: print ES_VERSION and exit 0 */
    CONFIG_CHECK,   /* --check-config: config is valid; load tables, exit */
    CONFIG_REPAIR_LOG, /* --repair-log: cut damaged logs, say what went, exit */
};

/* Fills *c with the built-in defaults (no tables). Strings are allocated;
 * returns CORE_OK or CORE_ENOMEM. Pair with config_deinit. */
int config_init(struct config *c);

/* Frees everything *c owns and zeroes it; safe on a zeroed struct and twice. */
void config_deinit(struct config *c);

/* The whole startup sequence: defaults, the file named by --config or
 * EMBEDDING_SERVER_CONFIG, the environment, the flags, then the built-in
 * default table when no tables were configured. *c must be zeroed or fresh
 * from config_init (it is re-initialized). On error *c is left deinit'ed
 * and err names the key, variable or flag. argv is only read. */
int config_load(struct config *c, int argc, char *const *argv,
                enum config_action *action, char *err, size_t errlen);

/* Applies the JSON file at path over *c (its keys only; others keep their
 * values; its "tables" replace any before). Relative table paths resolve
 * against path's folder. On failure *c may be partly updated: discard it, as
 * config_load does. */
int config_parse_file(struct config *c, const char *path, char *err, size_t errlen);

/* Same as config_parse_file on text[0..len); base_dir resolves relative
 * table paths (NULL or "" = the cwd); source names the text in messages. */
int config_parse_json(struct config *c, const char *text, size_t len,
                      const char *base_dir, const char *source,
                      char *err, size_t errlen);

/* Applies every EMBEDDING_SERVER_* variable that is set (non-empty). */
int config_apply_env(struct config *c, char *err, size_t errlen);

/* Applies the flags in argv[1..argc) ("--port 9000" or "--port=9000");
 * --config is accepted and skipped here (config_load reads it first).
 * Sets *action for --help, --version, --check-config. */
int config_apply_flags(struct config *c, int argc, char *const *argv,
                       enum config_action *action, char *err, size_t errlen);

/* Appends the built-in table "words" (word2vec text, frozen, vocabulary):
 * $EMBEDDING_SERVER_DEFAULT_TABLE if set, else ES_DEFAULT_DIR/words.vec if it
 * exists, else /usr/local/share/embedding-server/words.vec. CORE_ENOTFOUND
 * with every place tried named in err when none exists. */
int config_add_default_table(struct config *c, char *err, size_t errlen);

/* Checks the rules that span settings and sources (unique table names, at
 * most CONFIG_MAX_TABLES, a read token only with a write token). config_load
 * calls it once every source is applied. */
int config_validate(const struct config *c, char *err, size_t errlen);

/* Prints --help: usage, every option with its flag, variable, key and
 * default, and an example config. */
void config_print_help(FILE *f, const char *prog);

/* Returns the table named name, or NULL. Borrowed from c. */
const struct config_table *config_find_table(const struct config *c, const char *name);

/* "error" | "warn" | "info" | "debug" <-> enum; parse returns false otherwise. */
bool config_log_level_parse(const char *s, enum config_log_level *out);
const char *config_log_level_name(enum config_log_level l);

/* "sync" | "interval" | "none" <-> enum; parse returns false otherwise. */
bool config_durability_parse(const char *s, enum config_durability *out);
const char *config_durability_name(enum config_durability d);

#endif
