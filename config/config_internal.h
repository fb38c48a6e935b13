/* config_internal.h - what config.c (options, environment, flags, help) and
 * config_json.c (the JSON file, the tables) share. Not for other modules. */
#ifndef CONFIG_CONFIG_INTERNAL_H
#define CONFIG_CONFIG_INTERNAL_H

#include <cjson/cJSON.h>

#include "config.h"

enum config_opt_type {
    OPT_STRING,    /* malloc'd char *; optional ones may be unset (NULL) */
    OPT_INT,       /* int in [min, max] */
    OPT_U64,       /* uint64_t in [min, max] */
    OPT_BOOL,      /* bool */
    OPT_LOG_LEVEL, /* enum config_log_level */
    OPT_DURABILITY, /* enum config_durability */
};

/* One scalar setting: where it lives in struct config and in each source.
 * The same row drives the defaults, the JSON key, the variable, the flag and
 * the --help text. */
struct config_option {
    const char *key;  /* JSON path, "listen.port" */
    const char *env;  /* variable suffix after EMBEDDING_SERVER_, or NULL */
    const char *flag; /* "--port", or NULL (tokens: not on the command line) */
    const char *arg;  /* placeholder in --help, "PORT" */
    enum config_opt_type type;
    size_t offset;    /* offsetof(struct config, field) */
    int64_t min, max; /* OPT_INT / OPT_U64 bounds, inclusive */
    const char *def;  /* default as text; NULL = unset */
    const char *help;
};

extern const struct config_option config_options[];
extern const size_t config_noptions;

/* The row whose key is key[0..len), or NULL. */
const struct config_option *config_option_by_key(const char *key, size_t len);

/* True when some option's key starts with prefix[0..len) followed by '.',
 * i.e. prefix names a section such as "listen". */
bool config_is_section(const char *prefix, size_t len);

/* Sets o's field from text (a default, a variable or a flag value). where
 * names the source in messages ("EMBEDDING_SERVER_PORT", "--port"). */
int config_option_set_text(struct config *c, const struct config_option *o,
                           const char *text, const char *where,
                           char *err, size_t errlen);

/* Sets o's field from a JSON value; where is "file: key". */
int config_option_set_json(struct config *c, const struct config_option *o,
                           const cJSON *v, const char *where,
                           char *err, size_t errlen);

/* Replaces *slot with a copy of s (NULL clears). CORE_ENOMEM on failure. */
int config_set_string(char **slot, const char *s);

/* Frees the strings of one table entry and zeroes it. */
void config_table_clear(struct config_table *t);

/* Prints the keys of a "tables" entry for --help. */
void config_help_tables(FILE *f);

/* True when name matches [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. */
bool config_table_name_ok(const char *name);

#endif
