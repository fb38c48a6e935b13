/* config.c - the option table and everything it drives: defaults, the
 * EMBEDDING_SERVER_* environment, command-line flags, --help, the built-in
 * default table, and config_load, which runs the sources in precedence
 * order. The JSON file and the tables live in config_json.c. */
#include "config_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

#define ENV_PREFIX "EMBEDDING_SERVER_"
#define ENV_CONFIG ENV_PREFIX "CONFIG"
#define ENV_DEFAULT_TABLE ENV_PREFIX "DEFAULT_TABLE"
#define DEFAULT_TABLE_NAME "words"
#define DEFAULT_TABLE_FILE "words.vec"
#define INSTALLED_DEFAULT_DIR "/usr/local/share/embedding-server"

#define OFF(field) offsetof(struct config, field)

/* Every scalar setting. Tokens have no flag on purpose: a command line is
 * visible to every user of the machine through ps. */
const struct config_option config_options[] = {
    {"listen.host", "HOST", "--host", "HOST", OPT_STRING, OFF(host), 0, 0,
     "127.0.0.1", "Address to listen on; 0.0.0.0 for every interface (containers)."},
    {"listen.port", "PORT", "--port", "PORT", OPT_INT, OFF(port), 0, 65535,
     "8080", "TCP port; 0 picks a free port (the log says which)."},
    {"data_dir", "DATA_DIR", "--data-dir", "DIR", OPT_STRING, OFF(data_dir), 0, 0,
     "./data", "Directory for logs and snapshots (<data_dir>/<table>/wal/, snapshot-<seq>/)."},
    {"limits.max_body_bytes", "MAX_BODY_BYTES", "--max-body-bytes", "BYTES", OPT_U64,
     OFF(max_body_bytes), 1, INT64_C(1) << 40,
     "67108864", "Largest request body accepted; larger ones get 413."},
    {"limits.max_batch", "MAX_BATCH", "--max-batch", "N", OPT_U64, OFF(max_batch),
     1, INT64_C(1) << 30,
     "100000", "Most ids (or tokens, pair members, queries) in one request; more get 413."},
    {"limits.max_k", "MAX_K", "--max-k", "K", OPT_INT, OFF(max_k), 1, CONFIG_MAX_K_LIMIT,
     "1000", "Largest k of a neighbours search (at most 1000)."},
    {"limits.connection_timeout", "CONNECTION_TIMEOUT", "--connection-timeout", "SECONDS",
     OPT_INT, OFF(conn_timeout_s), 1, 86400,
     "30", "Seconds an idle connection is kept open."},
    {"limits.max_connections", "MAX_CONNECTIONS", "--max-connections", "N", OPT_INT,
     OFF(max_connections), 1, 65536,
     "1024", "Most connections open at once."},
    {"limits.max_connections_per_ip", "MAX_CONNECTIONS_PER_IP", "--max-connections-per-ip",
     "N", OPT_INT, OFF(max_connections_per_ip), 0, 65536,
     "64", "Most connections from one client address; 0 = no per-address limit."},
    {"threads", "THREADS", "--threads", "N", OPT_INT, OFF(threads), 1, CONFIG_MAX_THREADS,
     "2", "Worker threads answering requests."},
    {"log_level", "LOG_LEVEL", "--log-level", "LEVEL", OPT_LOG_LEVEL, OFF(log_level), 0, 0,
     "info", "error | warn | info | debug (debug logs one line per request)."},
    {"auth.read_token", "READ_TOKEN", NULL, "TOKEN", OPT_STRING, OFF(read_token), 0, 0,
     NULL, "Bearer token for reads (the write token works too); needs a write token."},
    {"auth.write_token", "WRITE_TOKEN", NULL, "TOKEN", OPT_STRING, OFF(write_token), 0, 0,
     NULL, "Bearer token required by gradients, rows and snapshot."},
    {"snapshot.interval", "SNAPSHOT_INTERVAL", "--snapshot-interval", "SECONDS", OPT_INT,
     OFF(snapshot_interval_s), 0, 31536000,
     "0", "Snapshot tables that took writes this often; 0 = never."},
    {"snapshot.on_shutdown", "SNAPSHOT_ON_SHUTDOWN", "--snapshot-on-shutdown", "true|false",
     OPT_BOOL, OFF(snapshot_on_shutdown), 0, 0,
     "true", "Snapshot tables that took writes on SIGINT/SIGTERM."},
    {"snapshot.keep", "SNAPSHOT_KEEP", "--snapshot-keep", "N", OPT_INT, OFF(snapshot_keep), 1,
     1000000, "3", "Snapshots keep the newest N of each table, removing older ones."},
    {"durability", "DURABILITY", "--durability", "MODE", OPT_DURABILITY, OFF(durability), 0, 0,
     "sync", "sync: a write is on disk before its answer (group commit); interval: synced "
     "every durability_interval_ms; none: no log, snapshots only."},
    {"durability_interval_ms", "DURABILITY_INTERVAL_MS", "--durability-interval-ms", "MS",
     OPT_INT, OFF(durability_interval_ms), 1, 3600000,
     "1000", "With durability interval: most milliseconds of answered writes a crash can lose."},
    {"log_max_bytes", "LOG_MAX_BYTES", "--log-max-bytes", "BYTES", OPT_U64, OFF(log_max_bytes),
     INT64_C(1) << 20, INT64_C(1) << 44,
     "268435456", "A table's log this long since its last snapshot triggers a snapshot, "
     "which lets older log segments go."},
    {"limits.max_answer_bytes", "MAX_ANSWER_BYTES", "--max-answer-bytes", "BYTES", OPT_U64,
     OFF(max_answer_bytes), 1024, INT64_C(1) << 40,
     "268435456", "Largest answer a request may ask for (its bound, counted before any work); "
     "larger get 413."},
    {"limits.header_timeout", "HEADER_TIMEOUT", "--header-timeout", "SECONDS", OPT_INT,
     OFF(header_timeout_s), 1, 86400,
     "10", "Seconds a connection has to send a request's headers, from its start or the end "
     "of its previous request, however slowly they trickle; then it is closed."},
    {"limits.min_body_rate", "MIN_BODY_RATE", "--min-body-rate", "BYTES", OPT_U64,
     OFF(min_body_rate), 0, INT64_C(1) << 40,
     "16384", "Bytes per second a body must keep up after a grace of header_timeout seconds, "
     "else the connection is closed; 0 = no minimum."},
    {"cluster.nats", "NATS", "--nats", "URLS", OPT_STRING, OFF(cluster_nats), 0, 0, NULL,
     "Cluster mode: NATS JetStream servers (comma-separated, or a JSON array); each table's "
     "log is a replicated stream and every server applies it."},
    {"cluster.node", "NODE", "--node", "NAME", OPT_STRING, OFF(cluster_node), 0, 0, NULL,
     "Cluster mode: this server's name in /v1/cluster (default: the host name)."},
    {"cluster.stream_replicas", "STREAM_REPLICAS", "--stream-replicas", "N", OPT_INT,
     OFF(cluster_stream_replicas), 1, 5, "3",
     "Cluster mode: JetStream replicas of each table's stream (file storage)."},
    {"cluster.wait_ms", "CLUSTER_WAIT_MS", "--cluster-wait-ms", "MS", OPT_INT,
     OFF(cluster_wait_ms), 0, 60000, "1000",
     "Cluster mode: longest wait of a read with min_seq before 503 not_ready."},
    {"cluster.publish_timeout_ms", "PUBLISH_TIMEOUT_MS", "--publish-timeout-ms", "MS", OPT_INT,
     OFF(cluster_publish_timeout_ms), 100, 600000, "5000",
     "Cluster mode: longest wait for JetStream's ack of a write before 503 unavailable."},
};
const size_t config_noptions = sizeof config_options / sizeof config_options[0];

/* Flags that ask main to do something other than serve. */
static const struct {
    const char *flag, *alias;
    enum config_action action;
    const char *help;
} action_flags[] = {
    {"--help", "-h", CONFIG_HELP, "Print this help and exit."},
    {"--version", "-V", CONFIG_VERSION, "Print the version and exit."},
    {"--check-config", NULL, CONFIG_CHECK,
     "Validate the configuration, load every table, and exit (0 when all is well)."},
    {"--repair-log", NULL, CONFIG_REPAIR_LOG,
     "Cut each table's log at damage that stops startup, print what is dropped, and exit."},
};
#define NACTION_FLAGS (sizeof action_flags / sizeof action_flags[0])

static const char *const log_level_names[] = {
    [CONFIG_LOG_ERROR] = "error",
    [CONFIG_LOG_WARN] = "warn",
    [CONFIG_LOG_INFO] = "info",
    [CONFIG_LOG_DEBUG] = "debug",
};

#define NNAMES(a) (sizeof(a) / sizeof((a)[0]))

/* The index of s in names[0..n), or -1: the one parser of named options. */
static int name_index(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s != NULL && i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return -1;
}

static const char *name_of(const char *const *names, size_t n, unsigned i)
{
    return i < n ? names[i] : "?";
}

bool config_log_level_parse(const char *s, enum config_log_level *out)
{
    int i = name_index(log_level_names, NNAMES(log_level_names), s);
    if (i >= 0)
        *out = (enum config_log_level)i;
    return i >= 0;
}

const char *config_log_level_name(enum config_log_level l)
{
    return name_of(log_level_names, NNAMES(log_level_names), (unsigned)l);
}

static const char *const durability_names[] = {
    [CONFIG_DURABILITY_SYNC] = "sync",
    [CONFIG_DURABILITY_INTERVAL] = "interval",
    [CONFIG_DURABILITY_NONE] = "none",
};

bool config_durability_parse(const char *s, enum config_durability *out)
{
    int i = name_index(durability_names, NNAMES(durability_names), s);
    if (i >= 0)
        *out = (enum config_durability)i;
    return i >= 0;
}

const char *config_durability_name(enum config_durability d)
{
    return name_of(durability_names, NNAMES(durability_names), (unsigned)d);
}

const struct config_option *config_option_by_key(const char *key, size_t len)
{
    for (size_t i = 0; i < config_noptions; i++) {
        const char *k = config_options[i].key;
        if (strlen(k) == len && memcmp(k, key, len) == 0)
            return &config_options[i];
    }
    return NULL;
}

bool config_is_section(const char *prefix, size_t len)
{
    for (size_t i = 0; i < config_noptions; i++) {
        const char *k = config_options[i].key;
        if (strlen(k) > len && memcmp(k, prefix, len) == 0 && k[len] == '.')
            return true;
    }
    return false;
}

int config_set_string(char **slot, const char *s)
{
    char *copy = NULL;
    if (s) {
        copy = strdup(s);
        if (!copy)
            return CORE_ENOMEM;
    }
    free(*slot);
    *slot = copy;
    return CORE_OK;
}

/* ---- typed setters shared by every source ---- */

static void *field(struct config *c, const struct config_option *o)
{
    return (char *)c + o->offset;
}

static int set_int(struct config *c, const struct config_option *o, int64_t v,
                   const char *where, char *err, size_t errlen)
{
    if (v < o->min || v > o->max)
        return core_fail(err, errlen, CORE_EINVAL,
                         "%s: must be an integer in [%" PRId64 ", %" PRId64 "], got %" PRId64,
                         where, o->min, o->max, v);
    if (o->type == OPT_INT)
        *(int *)field(c, o) = (int)v;
    else
        *(uint64_t *)field(c, o) = (uint64_t)v;
    return CORE_OK;
}

/* Exactly the words --help shows ("true|false"), as the JSON file takes. */
static bool parse_bool_text(const char *s, bool *out)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "false") == 0) {
        *out = s[0] == 't';
        return true;
    }
    return false;
}

/* Decimal integer, the whole text, no sign games for unsigned fields. */
static bool parse_int_text(const char *s, int64_t *out)
{
    if (*s == '\0' || *s == ' ' || *s == '+')
        return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

int config_option_set_text(struct config *c, const struct config_option *o,
                           const char *text, const char *where,
                           char *err, size_t errlen)
{
    switch (o->type) {
    case OPT_STRING:
        if (text && *text == '\0')
            return core_fail(err, errlen, CORE_EINVAL, "%s: must not be empty", where);
        return config_set_string((char **)field(c, o), text);
    case OPT_INT:
    case OPT_U64: {
        int64_t v;
        if (!parse_int_text(text, &v))
            return core_fail(err, errlen, CORE_EINVAL,
                             "%s: must be an integer in [%" PRId64 ", %" PRId64 "], got \"%s\"",
                             where, o->min, o->max, text);
        return set_int(c, o, v, where, err, errlen);
    }
    case OPT_BOOL:
        if (!parse_bool_text(text, (bool *)field(c, o)))
            return core_fail(err, errlen, CORE_EINVAL,
                             "%s: must be true or false, got \"%s\"", where, text);
        return CORE_OK;
    case OPT_LOG_LEVEL:
        if (!config_log_level_parse(text, (enum config_log_level *)field(c, o)))
            return core_fail(err, errlen, CORE_EINVAL,
                             "%s: must be error, warn, info or debug, got \"%s\"", where, text);
        return CORE_OK;
    case OPT_DURABILITY:
        if (!config_durability_parse(text, (enum config_durability *)field(c, o)))
            return core_fail(err, errlen, CORE_EINVAL,
                             "%s: must be sync, interval or none, got \"%s\"", where, text);
        return CORE_OK;
    }
    return core_fail(err, errlen, CORE_EINVAL, "%s: unhandled option type", where);
}

int config_option_set_json(struct config *c, const struct config_option *o,
                           const cJSON *v, const char *where,
                           char *err, size_t errlen)
{
    switch (o->type) {
    case OPT_STRING:
        if (cJSON_IsNull(v) && o->def == NULL)
            return config_set_string((char **)field(c, o), NULL);
        if (!cJSON_IsString(v))
            return core_fail(err, errlen, CORE_EINVAL, "%s: must be a string%s", where,
                             o->def == NULL ? " or null" : "");
        return config_option_set_text(c, o, v->valuestring, where, err, errlen);
    case OPT_INT:
    case OPT_U64: {
        double d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;
        /* exact integers only: 8080.5 or 1e300 are mistakes, not ports. The
         * range goes first: casting a double beyond int64_t is undefined. */
        if (!cJSON_IsNumber(v) || d < -9007199254740992.0 || d > 9007199254740992.0 ||
            d != (double)(int64_t)d)
            return core_fail(err, errlen, CORE_EINVAL,
                             "%s: must be an integer in [%" PRId64 ", %" PRId64 "]",
                             where, o->min, o->max);
        return set_int(c, o, (int64_t)d, where, err, errlen);
    }
    case OPT_BOOL:
        if (!cJSON_IsBool(v))
            return core_fail(err, errlen, CORE_EINVAL, "%s: must be true or false", where);
        *(bool *)field(c, o) = cJSON_IsTrue(v);
        return CORE_OK;
    case OPT_LOG_LEVEL:
        if (!cJSON_IsString(v))
            return core_fail(err, errlen, CORE_EINVAL,
                             "%s: must be one of \"error\", \"warn\", \"info\", \"debug\"", where);
        return config_option_set_text(c, o, v->valuestring, where, err, errlen);
    case OPT_DURABILITY:
        if (!cJSON_IsString(v))
            return core_fail(err, errlen, CORE_EINVAL,
                             "%s: must be one of \"sync\", \"interval\", \"none\"", where);
        return config_option_set_text(c, o, v->valuestring, where, err, errlen);
    }
    return core_fail(err, errlen, CORE_EINVAL, "%s: unhandled option type", where);
}

/* ---- lifetime ---- */

int config_init(struct config *c)
{
    memset(c, 0, sizeof *c);
    char err[256];
    for (size_t i = 0; i < config_noptions; i++) {
        const struct config_option *o = &config_options[i];
        if (!o->def)
            continue;
        int rc = config_option_set_text(c, o, o->def, o->key, err, sizeof err);
        if (rc != CORE_OK) {
            config_deinit(c);
            return rc;
        }
    }
    return CORE_OK;
}

void config_table_clear(struct config_table *t)
{
    free(t->path);
    free(t->tensor);
    free(t->vocab);
    memset(t, 0, sizeof *t);
}

void config_deinit(struct config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < config_noptions; i++) {
        if (config_options[i].type == OPT_STRING)
            free(*(char **)field(c, &config_options[i]));
    }
    for (size_t i = 0; i < c->ntables; i++)
        config_table_clear(&c->tables[i]);
    free(c->tables);
    free(c->config_path);
    memset(c, 0, sizeof *c);
}

const struct config_table *config_find_table(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->ntables; i++) {
        if (strcmp(c->tables[i].name, name) == 0)
            return &c->tables[i];
    }
    return NULL;
}

/* ---- environment ---- */

int config_apply_env(struct config *c, char *err, size_t errlen)
{
    char name[96];
    for (size_t i = 0; i < config_noptions; i++) {
        const struct config_option *o = &config_options[i];
        if (!o->env)
            continue;
        snprintf(name, sizeof name, ENV_PREFIX "%s", o->env);
        const char *v = getenv(name);
        /* set-but-empty counts as unset, as compose files often leave it */
        if (!v || *v == '\0')
            continue;
        int rc = config_option_set_text(c, o, v, name, err, errlen);
        if (rc != CORE_OK)
            return rc;
    }
    return CORE_OK;
}

/* ---- flags ---- */

static const struct config_option *option_by_flag(const char *flag, size_t len)
{
    for (size_t i = 0; i < config_noptions; i++) {
        const char *f = config_options[i].flag;
        if (f && strlen(f) == len && memcmp(f, flag, len) == 0)
            return &config_options[i];
    }
    return NULL;
}

static bool action_flag(const char *arg, enum config_action *action)
{
    for (size_t i = 0; i < NACTION_FLAGS; i++) {
        if (strcmp(arg, action_flags[i].flag) == 0 ||
            (action_flags[i].alias && strcmp(arg, action_flags[i].alias) == 0)) {
            *action = action_flags[i].action;
            return true;
        }
    }
    return false;
}

/* Splits argv[*i] into a flag name and its value ("--port=1" or "--port 1"),
 * advancing *i past a separate value. */
static int flag_value(int argc, char *const *argv, int *i, size_t *namelen,
                      const char **value, char *err, size_t errlen)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    if (eq) {
        *namelen = (size_t)(eq - arg);
        *value = eq + 1;
        return CORE_OK;
    }
    *namelen = strlen(arg);
    if (*i + 1 >= argc)
        return core_fail(err, errlen, CORE_EINVAL, "%s: needs a value (see --help)", arg);
    *value = argv[++*i];
    return CORE_OK;
}

int config_apply_flags(struct config *c, int argc, char *const *argv,
                       enum config_action *action, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (action_flag(arg, action))
            continue;
        if (strncmp(arg, "--", 2) != 0)
            return core_fail(err, errlen, CORE_EINVAL,
                             "unexpected argument \"%s\" (options start with --; see --help)", arg);
        size_t namelen;
        const char *value = NULL;
        int rc = flag_value(argc, argv, &i, &namelen, &value, err, errlen);
        if (rc != CORE_OK)
            return rc;
        if (namelen == strlen("--config") && memcmp(arg, "--config", namelen) == 0)
            continue; /* read by config_load before everything else */
        const struct config_option *o = option_by_flag(arg, namelen);
        if (!o)
            return core_fail(err, errlen, CORE_EINVAL, "%.*s: unknown option (see --help)",
                             (int)namelen, arg);
        char where[64];
        snprintf(where, sizeof where, "%.*s", (int)namelen, arg);
        rc = config_option_set_text(c, o, value, where, err, errlen);
        if (rc != CORE_OK)
            return rc;
    }
    return CORE_OK;
}

/* ---- validation across settings ---- */

int config_validate(const struct config *c, char *err, size_t errlen)
{
    if (c->read_token && !c->write_token)
        return core_fail(err, errlen, CORE_EINVAL,
                         "auth.read_token is set but auth.write_token is not: writes would be "
                         "open while reads are closed; set both (EMBEDDING_SERVER_WRITE_TOKEN)");
    if (c->ntables > CONFIG_MAX_TABLES)
        return core_fail(err, errlen, CORE_EINVAL, "tables: at most %d tables, got %zu",
                         CONFIG_MAX_TABLES, c->ntables);
    for (size_t i = 0; i < c->ntables; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->tables[i].name, c->tables[j].name) == 0)
                return core_fail(err, errlen, CORE_EINVAL,
                                 "tables[%zu].name: \"%s\" is already the name of tables[%zu]",
                                 i, c->tables[i].name, j);
        }
        /* the stream is the table's history: a fresh start would disagree
         * with every replica that has applied it */
        if (c->cluster_nats && !c->tables[i].resume)
            return core_fail(err, errlen, CORE_EINVAL,
                             "tables[%zu].resume: false is not possible in cluster mode "
                             "(cluster.nats is set): the table's stream is its history", i);
    }
    return CORE_OK;
}

/* ---- the built-in default table ---- */

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The source tree's config/default, when this file was compiled from an
 * absolute path (CMake does), so tests and a fresh build find words.vec
 * without installing; the server target passes ES_DEFAULT_DIR itself. */
static void source_default_dir(char *out, size_t outlen)
{
#ifdef ES_DEFAULT_DIR
    snprintf(out, outlen, "%s", ES_DEFAULT_DIR);
#else
    const char *file = __FILE__;
    const char *slash = strrchr(file, '/');
    if (file[0] != '/' || !slash) {
        out[0] = '\0';
        return;
    }
    snprintf(out, outlen, "%.*s/default", (int)(slash - file), file);
#endif
}

static int find_default_table(char *path, size_t pathlen, char *err, size_t errlen)
{
    const char *env = getenv(ENV_DEFAULT_TABLE);
    if (env && *env) {
        if (!is_file(env))
            return core_fail(err, errlen, CORE_ENOTFOUND,
                             ENV_DEFAULT_TABLE "=%s: no such file", env);
        snprintf(path, pathlen, "%s", env);
        return CORE_OK;
    }
    char dir[PATH_MAX], tried[2 * PATH_MAX + 64];
    source_default_dir(dir, sizeof dir);
    const char *dirs[] = {dir, INSTALLED_DEFAULT_DIR};
    size_t used = 0;
    tried[0] = '\0';
    for (size_t i = 0; i < 2; i++) {
        if (dirs[i][0] == '\0')
            continue;
        int len = snprintf(path, pathlen, "%s/" DEFAULT_TABLE_FILE, dirs[i]);
        if (len > 0 && (size_t)len < pathlen && is_file(path))
            return CORE_OK;
        int n = snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", path);
        if (n > 0 && (size_t)n < sizeof tried - used)
            used += (size_t)n;
    }
    return core_fail(err, errlen, CORE_ENOTFOUND,
                     "no tables configured and the built-in table was not found (tried %s); "
                     "give --config FILE or set " ENV_DEFAULT_TABLE, tried);
}

int config_add_default_table(struct config *c, char *err, size_t errlen)
{
    char path[PATH_MAX];
    int rc = find_default_table(path, sizeof path, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (c->ntables >= CONFIG_MAX_TABLES)
        return core_fail(err, errlen, CORE_EINVAL, "tables: at most %d tables",
                         CONFIG_MAX_TABLES);
    struct config_table *grown = realloc(c->tables, (c->ntables + 1) * sizeof *grown);
    if (!grown)
        return core_fail(err, errlen, CORE_ENOMEM, "out of memory");
    c->tables = grown;
    struct config_table *t = &c->tables[c->ntables];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", DEFAULT_TABLE_NAME);
    t->path = strdup(path);
    if (!t->path)
        return core_fail(err, errlen, CORE_ENOMEM, "out of memory");
    t->format = LOADER_WORD2VEC;
    table_settings_init(&t->settings);
    t->settings.freeze = true;
    c->ntables++;
    c->builtin_default = true;
    return CORE_OK;
}

/* ---- the whole sequence ---- */

/* --help and --version win over everything, even a broken environment. */
static bool early_action(int argc, char *const *argv, enum config_action *action)
{
    for (int i = 1; i < argc; i++) {
        enum config_action a;
        if (action_flag(argv[i], &a) && (a == CONFIG_HELP || a == CONFIG_VERSION)) {
            *action = a;
            return true;
        }
    }
    return false;
}

/* The --config value, else $EMBEDDING_SERVER_CONFIG, else NULL. */
static int config_file_arg(int argc, char *const *argv, const char **path,
                           char *err, size_t errlen)
{
    *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc)
                return core_fail(err, errlen, CORE_EINVAL, "--config: needs a file name");
            *path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            *path = argv[i] + 9;
        }
    }
    if (*path && **path == '\0')
        return core_fail(err, errlen, CORE_EINVAL, "--config: needs a file name");
    if (!*path) {
        const char *env = getenv(ENV_CONFIG);
        if (env && *env)
            *path = env;
    }
    return CORE_OK;
}

static int load_sources(struct config *c, int argc, char *const *argv,
                        enum config_action *action, char *err, size_t errlen)
{
    const char *file;
    int rc = config_file_arg(argc, argv, &file, err, errlen);
    if (rc == CORE_OK && file)
        rc = config_parse_file(c, file, err, errlen);
    if (rc == CORE_OK)
        rc = config_apply_env(c, err, errlen);
    if (rc == CORE_OK)
        rc = config_apply_flags(c, argc, argv, action, err, errlen);
    if (rc == CORE_OK && c->ntables == 0)
        rc = config_add_default_table(c, err, errlen);
    if (rc == CORE_OK)
        rc = config_validate(c, err, errlen);
    return rc;
}

int config_load(struct config *c, int argc, char *const *argv,
                enum config_action *action, char *err, size_t errlen)
{
    *action = CONFIG_RUN;
    int rc = config_init(c);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "out of memory");
    if (early_action(argc, argv, action))
        return CORE_OK;
    rc = load_sources(c, argc, argv, action, err, errlen);
    if (rc != CORE_OK)
        config_deinit(c);
    return rc;
}

/* ---- --help ---- */

/* Three lines per option so the text fits 80 columns: how to pass it, what
 * it does, where else it can come from. */
/* Prints text at an indent of 6, wrapped at spaces to fit 80 columns. */
static void help_wrapped(FILE *f, const char *text)
{
    const size_t width = 80 - 6;
    while (*text != '\0') {
        size_t n = strlen(text), cut = n;
        if (n > width) {
            cut = width;
            while (cut > 0 && text[cut] != ' ')
                cut--;
            if (cut == 0)
                cut = width;
        }
        fprintf(f, "      %.*s\n", (int)cut, text);
        text += cut;
        while (*text == ' ')
            text++;
    }
}

static void help_option(FILE *f, const struct config_option *o)
{
    if (o->flag)
        fprintf(f, "  %s %s\n", o->flag, o->arg);
    else
        fprintf(f, "  (no flag: keep secrets off the command line)\n");
    help_wrapped(f, o->help);
    fprintf(f, "      key %s, env " ENV_PREFIX "%s, default %s\n", o->key, o->env,
            o->def ? o->def : "unset");
}

static const char help_example[] =
    "{\n"
    "  \"listen\": {\"host\": \"127.0.0.1\", \"port\": 8080},\n"
    "  \"data_dir\": \"./data\",\n"
    "  \"limits\": {\"max_body_bytes\": 67108864, \"max_batch\": 100000, \"max_k\": 1000},\n"
    "  \"snapshot\": {\"interval\": 300, \"on_shutdown\": true},\n"
    "  \"tables\": [\n"
    "    {\"name\": \"words\", \"path\": \"vectors.vec\", \"freeze\": false, \"padding_idx\": 0,\n"
    "     \"optimizer\": {\"name\": \"sparse_adam\", \"lr\": 0.001}, \"oov\": \"error\"},\n"
    "    {\"name\": \"items\", \"init\": {\"num_embeddings\": 100000, \"embedding_dim\": 64, "
    "\"seed\": 7},\n"
    "     \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.01}}\n"
    "  ]\n"
    "}\n";

void config_print_help(FILE *f, const char *prog)
{
    if (!prog || !*prog)
        prog = "embedding-server";
    fprintf(f,
            "Usage: %s [--config FILE] [OPTIONS]\n\n"
            "Serves embedding tables over HTTP, as torch.nn.Embedding does in a model:\n"
            "lookups, pooled bags, similarity, nearest neighbours, and training from posted\n"
            "gradients. With no tables configured it serves the built-in table \""
            DEFAULT_TABLE_NAME "\"\n(word vectors trained on the King James Bible), read from\n"
            "$" ENV_DEFAULT_TABLE ", else the source tree's\nconfig/default/"
            DEFAULT_TABLE_FILE ", else " INSTALLED_DEFAULT_DIR "/" DEFAULT_TABLE_FILE ".\n\n"
            "Every setting comes from, lowest precedence first: its default, the JSON file,\n"
            "its EMBEDDING_SERVER_* environment variable, its flag. Flags take \"--flag VALUE\"\n"
            "or \"--flag=VALUE\".\n\n"
            "Options:\n",
            prog);
    fprintf(f, "  --config FILE\n"
               "      JSON configuration file; relative table paths are read from its folder.\n"
               "      env " ENV_CONFIG "\n");
    for (size_t i = 0; i < config_noptions; i++)
        help_option(f, &config_options[i]);
    for (size_t i = 0; i < NACTION_FLAGS; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s%s%s", action_flags[i].flag,
                 action_flags[i].alias ? ", " : "",
                 action_flags[i].alias ? action_flags[i].alias : "");
        fprintf(f, "  %s\n      %s\n", head, action_flags[i].help);
    }
    fprintf(f, "\nEach entry of \"tables\" (at most %d; exactly one of path / init):\n",
            CONFIG_MAX_TABLES);
    config_help_tables(f);
    fprintf(f, "\nExample configuration:\n%s", help_example);
    fprintf(f,
            "\nExamples:\n"
            "  %s\n"
            "  curl -s localhost:8080/v1/tables/words/neighbors \\\n"
            "       -H 'Content-Type: application/json' -d '{\"tokens\":[\"gold\"]}'\n"
            "  EMBEDDING_SERVER_WRITE_TOKEN=secret %s --config tables.json --port 9000\n"
            "  EMBEDDING_SERVER_HOST=0.0.0.0 %s --data-dir /var/lib/embedding-server\n",
            prog, prog, prog);
}
