/* config_json.c - the JSON configuration file: scalar settings through the
 * option table of config.c, and "tables", whose entries have their own key
 * table below. Strict on purpose: a misspelt key is a silent default
 * otherwise. Messages read "<file>: <key path>: <problem>". */
#include "config_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "json.h"

#define MAX_FILE_BYTES (16u << 20) /* a config is small; this catches a wrong file */
#define WHERE_MAX 320

/* What every parser needs to report: the file's name and the caller's buffer. */
struct jctx {
    const char *source;
    const char *base_dir; /* folder of the file, or NULL = cwd */
    char *err;
    size_t errlen;
};

#define FAIL(x, ...) core_fail((x)->err, (x)->errlen, CORE_EINVAL, __VA_ARGS__)

/* Builds a key path for lookups and messages. Paths longer than the buffer
 * are cut, which can only shorten a message: no option key comes close. */
__attribute__((format(printf, 3, 4))) static void keypath(char *out, size_t n, const char *fmt,
                                                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

/* ---- generic checks ---- */

/* cJSON keeps every duplicate and finds the first; we refuse the file.
 * where is "file: key.path" of obj, or "file:" for the top level. */
static int check_duplicates(const cJSON *obj, const char *where, const struct jctx *x)
{
    bool top = where[strlen(where) - 1] == ':';
    for (const cJSON *a = obj->child; a; a = a->next) {
        for (const cJSON *b = a->next; b; b = b->next) {
            if (strcmp(a->string, b->string) == 0)
                return FAIL(x, "%s%s%s: duplicate key", where, top ? " " : ".", a->string);
        }
    }
    return CORE_OK;
}

static int want_object(const cJSON *v, const char *where, const struct jctx *x)
{
    if (!cJSON_IsObject(v))
        return FAIL(x, "%s: must be an object", where);
    return check_duplicates(v, where, x);
}

static int json_finite(const cJSON *v, double *out, const char *where, const struct jctx *x)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return FAIL(x, "%s: must be a finite number", where);
    *out = v->valuedouble;
    return CORE_OK;
}

/* Integers are read from the double so 1.5 or 1e300 cannot slip through as
 * valueint's truncation. Bounds must stay within +-2^53. */
static int json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out, const char *where,
                    const struct jctx *x)
{
    double d = cJSON_IsNumber(v) ? v->valuedouble : 0.5;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < (double)lo || d > (double)hi)
        return FAIL(x, "%s: must be an integer in [%lld, %lld]", where, (long long)lo,
                    (long long)hi);
    *out = (int64_t)d;
    return CORE_OK;
}

static int json_string(const cJSON *v, const char **out, const char *where, const struct jctx *x)
{
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0')
        return FAIL(x, "%s: must be a non-empty string", where);
    *out = v->valuestring;
    return CORE_OK;
}

/* Relative paths are relative to the config file, so a config and its
 * tables can move together. */
static char *resolve_path(const char *base_dir, const char *path)
{
    if (path[0] == '/' || !base_dir || base_dir[0] == '\0')
        return strdup(path);
    size_t n = strlen(base_dir) + 1 + strlen(path) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s/%s", base_dir, path);
    return out;
}

bool config_table_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TABLE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '_' && ch != '.' && ch != '-')))
            return false;
    }
    return true;
}

/* ---- optimizer ---- */

#define KIND(k) (1u << (k))
#define ALL_KINDS (KIND(OPTIM_SGD) | KIND(OPTIM_SPARSE_ADAM) | KIND(OPTIM_ADAGRAD))

typedef int (*optim_key_fn)(struct optim_config *o, const cJSON *v, const char *where,
                            const struct jctx *x);

static int opt_lr(struct optim_config *o, const cJSON *v, const char *where,
                  const struct jctx *x)
{
    if (json_finite(v, &o->lr, where, x) != CORE_OK || o->lr <= 0)
        return FAIL(x, "%s: must be finite and > 0", where);
    return CORE_OK;
}

static int opt_betas(struct optim_config *o, const cJSON *v, const char *where,
                     const struct jctx *x)
{
#define BETAS_MSG "%s: must be [beta1, beta2], each in [0, 1)"
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return FAIL(x, BETAS_MSG, where);
    double b[2];
    for (int i = 0; i < 2; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0 && e->valuedouble < 1))
            return FAIL(x, BETAS_MSG, where);
        b[i] = e->valuedouble;
    }
    o->beta1 = b[0];
    o->beta2 = b[1];
    return CORE_OK;
}

/* torch: SparseAdam needs eps > 0, Adagrad eps >= 0. */
static int opt_eps(struct optim_config *o, const cJSON *v, const char *where,
                   const struct jctx *x)
{
    bool strict = o->kind == OPTIM_SPARSE_ADAM;
    if (json_finite(v, &o->eps, where, x) != CORE_OK || o->eps < 0 || (strict && o->eps == 0))
        return FAIL(x, "%s: must be finite and %s 0", where, strict ? ">" : ">=");
    return CORE_OK;
}

static int opt_lr_decay(struct optim_config *o, const cJSON *v, const char *where,
                        const struct jctx *x)
{
    if (json_finite(v, &o->lr_decay, where, x) != CORE_OK || o->lr_decay < 0)
        return FAIL(x, "%s: must be finite and >= 0", where);
    return CORE_OK;
}

static int opt_initial_acc(struct optim_config *o, const cJSON *v, const char *where,
                           const struct jctx *x)
{
    if (json_finite(v, &o->initial_accumulator_value, where, x) != CORE_OK ||
        o->initial_accumulator_value < 0)
        return FAIL(x, "%s: must be finite and >= 0", where);
    return CORE_OK;
}

/* Hyperparameters by PyTorch's names, and which optimizers take them. */
static const struct {
    const char *key;
    unsigned kinds;
    optim_key_fn fn;
} optim_keys[] = {
    {"lr", ALL_KINDS, opt_lr},
    {"betas", KIND(OPTIM_SPARSE_ADAM), opt_betas},
    {"eps", KIND(OPTIM_SPARSE_ADAM) | KIND(OPTIM_ADAGRAD), opt_eps},
    {"lr_decay", KIND(OPTIM_ADAGRAD), opt_lr_decay},
    {"initial_accumulator_value", KIND(OPTIM_ADAGRAD), opt_initial_acc},
};
#define NOPTIM_KEYS (sizeof optim_keys / sizeof optim_keys[0])

/* "lr, betas, eps" for the message that rejects another optimizer's key. */
static void keys_of_kind(enum optim_kind kind, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < NOPTIM_KEYS && used < outlen; i++) {
        if (!(optim_keys[i].kinds & KIND(kind)))
            continue;
        int n = snprintf(out + used, outlen - used, "%s%s", used ? ", " : "", optim_keys[i].key);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static int optimizer_kind(const cJSON *v, enum optim_kind *kind, const char *where,
                          const struct jctx *x)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(v, "name");
    if (!name)
        return FAIL(x, "%s.name: missing (sgd, sparse_adam or adagrad)", where);
    if (!cJSON_IsString(name) || !optim_kind_parse(name->valuestring, kind))
        return FAIL(x, "%s.name: must be \"sgd\", \"sparse_adam\" or \"adagrad\"", where);
    return CORE_OK;
}

static int optimizer_key(struct optim_config *o, const cJSON *m, const char *where,
                         const struct jctx *x)
{
    char path[WHERE_MAX];
    keypath(path, sizeof path, "%s.%s", where, m->string);
    for (size_t i = 0; i < NOPTIM_KEYS; i++) {
        if (strcmp(m->string, optim_keys[i].key) != 0)
            continue;
        if (!(optim_keys[i].kinds & KIND(o->kind))) {
            char takes[128];
            keys_of_kind(o->kind, takes, sizeof takes);
            return FAIL(x, "%s: not a setting of %s (it takes %s)", path,
                        optim_kind_name(o->kind), takes);
        }
        return optim_keys[i].fn(o, m, path, x);
    }
    return FAIL(x, "%s: unknown key", path);
}

static int parse_optimizer(struct config_table *t, const cJSON *v, const char *where,
                           const struct jctx *x)
{
    if (cJSON_IsNull(v)) {
        t->has_optimizer = false;
        return CORE_OK;
    }
    int rc = want_object(v, where, x);
    enum optim_kind kind;
    if (rc == CORE_OK)
        rc = optimizer_kind(v, &kind, where, x);
    if (rc != CORE_OK)
        return rc;
    optim_config_defaults(&t->optimizer, kind);
    for (const cJSON *m = v->child; m; m = m->next) {
        if (strcmp(m->string, "name") == 0)
            continue;
        rc = optimizer_key(&t->optimizer, m, where, x);
        if (rc != CORE_OK)
            return rc;
    }
    t->has_optimizer = true;
    return CORE_OK;
}

/* ---- one entry of "tables" ---- */

struct table_parse {
    struct config_table *t;
    const struct jctx *x;
    bool seen_freeze, seen_format;
    bool seen_n, seen_std, seen_capacity, seen_keyed_only;
    const char *keyed_only; /* the first keyed-table key seen */
};

typedef int (*table_key_fn)(struct table_parse *p, const cJSON *v, const char *where);

static int tk_name(struct table_parse *p, const cJSON *v, const char *where)
{
    const char *s = NULL;
    int rc = json_string(v, &s, where, p->x);
    if (rc != CORE_OK)
        return rc;
    if (!config_table_name_ok(s))
        return FAIL(p->x, "%s: \"%.80s\" must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}", where, s);
    snprintf(p->t->name, sizeof p->t->name, "%s", s);
    return CORE_OK;
}

static int set_path(char **slot, const cJSON *v, const char *where, const struct jctx *x)
{
    const char *s = NULL;
    int rc = json_string(v, &s, where, x);
    if (rc != CORE_OK)
        return rc;
    free(*slot);
    *slot = resolve_path(x->base_dir, s);
    return *slot ? CORE_OK : core_fail(x->err, x->errlen, CORE_ENOMEM, "out of memory");
}

static int tk_path(struct table_parse *p, const cJSON *v, const char *where)
{
    return set_path(&p->t->path, v, where, p->x);
}

static int tk_vocab(struct table_parse *p, const cJSON *v, const char *where)
{
    return set_path(&p->t->vocab, v, where, p->x);
}

static int tk_tensor(struct table_parse *p, const cJSON *v, const char *where)
{
    const char *s = NULL;
    int rc = json_string(v, &s, where, p->x);
    if (rc != CORE_OK)
        return rc;
    free(p->t->tensor);
    p->t->tensor = strdup(s);
    return p->t->tensor ? CORE_OK : core_fail(p->x->err, p->x->errlen, CORE_ENOMEM, "out of memory");
}

static int tk_format(struct table_parse *p, const cJSON *v, const char *where)
{
    if (!cJSON_IsString(v) || !loader_format_parse(v->valuestring, &p->t->format))
        return FAIL(p->x, "%s: must be one of \"auto\", \"word2vec\", \"word2vec_binary\", "
                          "\"glove\", \"npy\", \"safetensors\", \"snapshot\"", where);
    p->seen_format = true;
    return CORE_OK;
}

static int tk_init(struct table_parse *p, const cJSON *v, const char *where)
{
    int rc = want_object(v, where, p->x);
    if (rc != CORE_OK)
        return rc;
    struct config_table *t = p->t;
    bool have_n = false, have_d = false;
    double std = 1.0;
    for (const cJSON *m = v->child; m && rc == CORE_OK; m = m->next) {
        char path[WHERE_MAX];
        keypath(path, sizeof path, "%s.%s", where, m->string);
        int64_t val = 0;
        if (strcmp(m->string, "num_embeddings") == 0) {
            rc = json_int(m, 1, INT64_C(1) << 40, &t->num_embeddings, path, p->x);
            have_n = true;
        } else if (strcmp(m->string, "embedding_dim") == 0) {
            rc = json_int(m, 1, 1 << 20, &t->embedding_dim, path, p->x);
            have_d = true;
        } else if (strcmp(m->string, "seed") == 0) {
            rc = json_int(m, 0, INT64_C(1) << 53, &val, path, p->x);
            t->seed = (uint64_t)val;
        } else if (strcmp(m->string, "std") == 0) {
            if (json_finite(m, &std, path, p->x) != CORE_OK || std < 0)
                rc = FAIL(p->x, "%s: must be a finite number >= 0", path);
            p->seen_std = true;
        } else {
            rc = FAIL(p->x, "%s: unknown key (num_embeddings, embedding_dim, seed; std for "
                            "keyed tables)", path);
        }
    }
    if (rc == CORE_OK && !have_d)
        rc = FAIL(p->x, "%s.embedding_dim: missing", where);
    p->seen_n = have_n;
    t->keyed_settings.std = std;
    t->has_init = rc == CORE_OK;
    return rc;
}

static int tk_freeze(struct table_parse *p, const cJSON *v, const char *where)
{
    if (!cJSON_IsBool(v))
        return FAIL(p->x, "%s: must be true or false", where);
    p->t->settings.freeze = cJSON_IsTrue(v);
    p->seen_freeze = true;
    return CORE_OK;
}

static int tk_resume(struct table_parse *p, const cJSON *v, const char *where)
{
    if (!cJSON_IsBool(v))
        return FAIL(p->x, "%s: must be true or false", where);
    p->t->resume = cJSON_IsTrue(v);
    return CORE_OK;
}

static int tk_scale_grad(struct table_parse *p, const cJSON *v, const char *where)
{
    if (!cJSON_IsBool(v))
        return FAIL(p->x, "%s: must be true or false", where);
    p->t->settings.scale_grad_by_freq = cJSON_IsTrue(v);
    return CORE_OK;
}

/* Negative values count from the end, as PyTorch; the range check against
 * num_embeddings happens once the size is known. */
static int tk_padding(struct table_parse *p, const cJSON *v, const char *where)
{
    struct table_settings *s = &p->t->settings;
    s->has_padding = !cJSON_IsNull(v);
    if (!s->has_padding)
        return CORE_OK;
    const int64_t lim = INT64_C(1) << 53;
    if (json_int(v, -lim, lim, &s->padding_idx, where, p->x) != CORE_OK)
        return FAIL(p->x, "%s: must be an integer or null", where);
    return CORE_OK;
}

static int tk_max_norm(struct table_parse *p, const cJSON *v, const char *where)
{
    struct table_settings *s = &p->t->settings;
    s->has_max_norm = !cJSON_IsNull(v);
    if (!s->has_max_norm)
        return CORE_OK;
    if (json_finite(v, &s->max_norm, where, p->x) != CORE_OK || s->max_norm <= 0)
        return FAIL(p->x, "%s: must be a finite number > 0, or null", where);
    return CORE_OK;
}

/* JSON has no infinity, and PyTorch allows norm_type=inf, so "inf" names it. */
static int tk_norm_type(struct table_parse *p, const cJSON *v, const char *where)
{
    struct table_settings *s = &p->t->settings;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "inf") == 0) {
        s->norm_type = INFINITY;
        return CORE_OK;
    }
    if (json_finite(v, &s->norm_type, where, p->x) != CORE_OK || s->norm_type <= 0)
        return FAIL(p->x, "%s: must be a finite number > 0, or \"inf\"", where);
    return CORE_OK;
}

static int tk_oov(struct table_parse *p, const cJSON *v, const char *where)
{
    struct table_settings *s = &p->t->settings;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "error") == 0) {
        s->oov_id = -1;
        return CORE_OK;
    }
    if (json_int(v, 0, INT64_C(1) << 53, &s->oov_id, where, p->x) != CORE_OK)
        return FAIL(p->x, "%s: must be \"error\" or an id >= 0", where);
    return CORE_OK;
}

static void keyed_only(struct table_parse *p, const char *key)
{
    if (p->keyed_only == NULL)
        p->keyed_only = key;
}

static int tk_keys(struct table_parse *p, const cJSON *v, const char *where)
{
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "int64") != 0)
        return FAIL(p->x, "%s: must be \"int64\" (ids are then arbitrary int64 keys)", where);
    p->t->keyed = true;
    return CORE_OK;
}

static int tk_capacity(struct table_parse *p, const cJSON *v, const char *where)
{
    keyed_only(p, "capacity");
    p->seen_capacity = true;
    return json_int(v, 1, INT64_C(0x7fffffff), &p->t->keyed_settings.capacity, where, p->x);
}

static int tk_missing(struct table_parse *p, const cJSON *v, const char *where)
{
    static const char *const names[] = {"error", "zeros", "init"};
    keyed_only(p, "missing");
    for (int i = 0; i < 3 && cJSON_IsString(v); i++) {
        if (strcmp(v->valuestring, names[i]) == 0) {
            p->t->keyed_settings.missing = (enum table_missing)i;
            return CORE_OK;
        }
    }
    return FAIL(p->x, "%s: must be \"error\", \"zeros\" or \"init\"", where);
}

static int tk_ttl(struct table_parse *p, const cJSON *v, const char *where)
{
    int64_t ttl = 0;
    keyed_only(p, "ttl_seconds");
    if (cJSON_IsNull(v)) {
        p->t->keyed_settings.ttl_seconds = 0;
        return CORE_OK;
    }
    if (json_int(v, 1, UINT32_MAX / 2, &ttl, where, p->x) != CORE_OK)
        return FAIL(p->x, "%s: must be an integer number of seconds >= 1, or null", where);
    p->t->keyed_settings.ttl_seconds = (uint32_t)ttl;
    return CORE_OK;
}

static int tk_evict(struct table_parse *p, const cJSON *v, const char *where)
{
    keyed_only(p, "evict");
    if (cJSON_IsString(v) && strcmp(v->valuestring, "lru") == 0)
        p->t->keyed_settings.evict = TABLE_EVICT_LRU;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0)
        p->t->keyed_settings.evict = TABLE_EVICT_NONE;
    else
        return FAIL(p->x, "%s: must be \"lru\" or \"none\"", where);
    return CORE_OK;
}

static int tk_optimizer(struct table_parse *p, const cJSON *v, const char *where)
{
    return parse_optimizer(p->t, v, where, p->x);
}

static const struct {
    const char *key;
    table_key_fn fn;
    const char *help;
} table_keys[] = {
    {"name", tk_name, "required; [A-Za-z0-9][A-Za-z0-9_.-]{0,63}, unique"},
    {"path", tk_path, "file or snapshot directory, relative to the config file's folder"},
    {"format", tk_format,
     "auto (default) | word2vec | word2vec_binary | glove | npy | safetensors | snapshot"},
    {"tensor", tk_tensor, "safetensors: the tensor's name (optional with one 2-D tensor)"},
    {"vocab", tk_vocab, "token file, one per line, for .npy and safetensors tables"},
    {"init", tk_init,
     "{\"num_embeddings\", \"embedding_dim\", \"seed\" (default 0)}: N(0,1) rows instead of a "
     "file"},
    {"freeze", tk_freeze, "true: no gradient steps; default true for path, false for init"},
    {"padding_idx", tk_padding, "int (negative counts from the end) or null (default)"},
    {"max_norm", tk_max_norm, "renormalize looked-up rows above this norm; null (default)"},
    {"norm_type", tk_norm_type, "p of the max_norm norm, > 0 or \"inf\"; default 2.0"},
    {"scale_grad_by_freq", tk_scale_grad, "divide gradients by id counts; default false"},
    {"optimizer", tk_optimizer,
     "{\"name\": sgd | sparse_adam | adagrad, \"lr\", \"betas\", \"eps\", \"lr_decay\",\n"
     "      \"initial_accumulator_value\"}: PyTorch's names and defaults; null = sgd lr 0.01"},
    {"oov", tk_oov, "unknown token in a lookup: \"error\" (default, 404) or an id to use"},
    {"keys", tk_keys,
     "\"int64\": ids are arbitrary int64 keys, inserted by writes (a keyed table; needs\n"
     "      \"capacity\" and \"init\": {\"embedding_dim\", \"std\" (default 1), \"seed\"})"},
    {"capacity", tk_capacity, "keyed tables: rows reserved for keys"},
    {"missing", tk_missing,
     "keyed tables: a read of an unseen key: \"error\" (default, 404), \"zeros\", \"init\""},
    {"ttl_seconds", tk_ttl, "keyed tables: evict keys not written for this long; null (default)"},
    {"evict", tk_evict,
     "keyed tables, when full: \"lru\" (default, drop the least recently written key) or\n"
     "      \"none\" (507 capacity_exceeded)"},
    {"resume", tk_resume,
     "start from the newest snapshot in <data_dir>/<name>/ if there is one (a restart\n"
     "      keeps every write); default true"},
};
#define NTABLE_KEYS (sizeof table_keys / sizeof table_keys[0])

void config_help_tables(FILE *f)
{
    for (size_t i = 0; i < NTABLE_KEYS; i++)
        fprintf(f, "  %s\n      %s\n", table_keys[i].key, table_keys[i].help);
}

static int table_key(struct table_parse *p, const cJSON *m, const char *where)
{
    char path[WHERE_MAX];
    keypath(path, sizeof path, "%s.%s", where, m->string);
    for (size_t i = 0; i < NTABLE_KEYS; i++) {
        if (strcmp(m->string, table_keys[i].key) == 0)
            return table_keys[i].fn(p, m, path);
    }
    return FAIL(p->x, "%s: unknown key", path);
}

/* A keyed table's entry: what it needs and what it cannot have. */
static int finish_keyed(struct table_parse *p, const char *where)
{
    struct config_table *t = p->t;
    const struct jctx *x = p->x;
    if (!t->keyed)
        return FAIL(x, "%s.%s: only for keyed tables (\"keys\": \"int64\")", where,
                    p->keyed_only != NULL ? p->keyed_only : "init.std");
    if (!t->has_init || t->path != NULL)
        return FAIL(x, "%s: a keyed table starts empty and grows: give \"init\": "
                       "{\"embedding_dim\", \"std\", \"seed\"}, not \"path\"", where);
    if (!p->seen_capacity)
        return FAIL(x, "%s.capacity: missing (the rows reserved for keys)", where);
    if (p->seen_n)
        return FAIL(x, "%s.init.num_embeddings: a keyed table's size is its \"capacity\"; "
                       "leave num_embeddings out", where);
    if (t->settings.has_padding)
        return FAIL(x, "%s.padding_idx: a keyed table takes no padding_idx (its ids are keys, "
                       "not rows)", where);
    if (t->vocab != NULL || t->settings.oov_id >= 0)
        return FAIL(x, "%s.%s: a keyed table has no vocabulary (its ids are int64 keys)", where,
                    t->vocab != NULL ? "vocab" : "oov");
    if (t->settings.has_max_norm)
        return FAIL(x, "%s.max_norm: not supported on keyed tables", where);
    t->num_embeddings = t->keyed_settings.capacity;
    t->keyed_settings.seed = t->seed;
    return CORE_OK;
}

/* Checks what spans keys, once the whole entry has been read. */
static int finish_table(struct table_parse *p, const char *where)
{
    struct config_table *t = p->t;
    const struct jctx *x = p->x;
    if (t->name[0] == '\0')
        return FAIL(x, "%s.name: missing", where);
    if ((t->path != NULL) == t->has_init)
        return FAIL(x, "%s: needs exactly one of \"path\" and \"init\"", where);
    if (!p->seen_freeze)
        t->settings.freeze = !t->has_init; /* as from_pretrained / nn.Embedding */
    if (t->keyed || p->keyed_only != NULL || p->seen_std)
        return finish_keyed(p, where);
    if (t->has_init && !p->seen_n)
        return FAIL(x, "%s.init.num_embeddings: missing", where);
    if (!t->has_init)
        return CORE_OK;
    if (p->seen_format || t->tensor || t->vocab)
        return FAIL(x, "%s.%s: only for tables read from a path", where,
                    p->seen_format ? "format" : t->tensor ? "tensor" : "vocab");
    int64_t n = t->num_embeddings;
    if (t->settings.has_padding && (t->settings.padding_idx < -n || t->settings.padding_idx >= n))
        return FAIL(x, "%s.padding_idx: must be in [-%lld, %lld) for num_embeddings %lld", where,
                    (long long)n, (long long)n, (long long)n);
    if (t->settings.oov_id >= n)
        return FAIL(x, "%s.oov: id must be < num_embeddings %lld", where, (long long)n);
    return CORE_OK;
}

static int parse_table(struct config_table *t, const cJSON *v, const char *where,
                       const struct jctx *x)
{
    memset(t, 0, sizeof *t);
    table_settings_init(&t->settings);
    table_keyed_settings_init(&t->keyed_settings);
    t->format = LOADER_AUTO;
    t->resume = true;
    struct table_parse p = {.t = t, .x = x};
    int rc = want_object(v, where, x);
    for (const cJSON *m = rc == CORE_OK ? v->child : NULL; m && rc == CORE_OK; m = m->next)
        rc = table_key(&p, m, where);
    if (rc == CORE_OK)
        rc = finish_table(&p, where);
    return rc;
}

static void free_tables(struct config_table *tables, size_t n)
{
    for (size_t i = 0; i < n; i++)
        config_table_clear(&tables[i]);
    free(tables);
}

static int unique_names(const struct config_table *tables, size_t n, const struct jctx *x)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(tables[i].name, tables[j].name) == 0)
                return FAIL(x, "%s: tables[%zu].name: \"%s\" is already the name of tables[%zu]",
                            x->source, i, tables[i].name, j);
        }
    }
    return CORE_OK;
}

/* The file's tables replace any configured before. */
static int parse_tables(struct config *c, const cJSON *v, const struct jctx *x)
{
    if (!cJSON_IsArray(v))
        return FAIL(x, "%s: tables: must be an array", x->source);
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > CONFIG_MAX_TABLES)
        return FAIL(x, "%s: tables: at most %d tables, got %zu", x->source, CONFIG_MAX_TABLES, n);
    struct config_table *tables = calloc(n ? n : 1, sizeof *tables);
    if (!tables)
        return core_fail(x->err, x->errlen, CORE_ENOMEM, "out of memory");
    int rc = CORE_OK;
    size_t i = 0;
    for (const cJSON *e = v->child; e && rc == CORE_OK; e = e->next, i++) {
        char where[WHERE_MAX];
        keypath(where, sizeof where, "%s: tables[%zu]", x->source, i);
        rc = parse_table(&tables[i], e, where, x);
    }
    if (rc == CORE_OK)
        rc = unique_names(tables, n, x);
    if (rc != CORE_OK) {
        free_tables(tables, n);
        return rc;
    }
    free_tables(c->tables, c->ntables);
    c->tables = tables;
    c->ntables = n;
    c->builtin_default = false;
    return CORE_OK;
}

/* ---- the cluster section ---- */

/* "cluster": {"nats": ["nats://a:4222", ...]}: the URLs joined with commas,
 * the form EMBEDDING_SERVER_NATS and --nats take. */
static int parse_nats_urls(struct config *c, const cJSON *arr, const char *where,
                           const struct jctx *x)
{
    size_t len = 1, i = 0;
    for (const cJSON *u = arr->child; u; u = u->next, i++) {
        if (!cJSON_IsString(u) || u->valuestring[0] == '\0' || strchr(u->valuestring, ','))
            return FAIL(x, "%s[%zu]: must be a NATS URL such as \"nats://host:4222\"", where, i);
        len += strlen(u->valuestring) + 1;
    }
    if (i == 0)
        return FAIL(x, "%s: must list at least one NATS URL", where);
    char *joined = malloc(len);
    if (!joined)
        return FAIL(x, "%s: out of memory", where);
    joined[0] = '\0';
    for (const cJSON *u = arr->child; u; u = u->next) {
        if (joined[0])
            strcat(joined, ",");
        strcat(joined, u->valuestring);
    }
    free(c->cluster_nats);
    c->cluster_nats = joined;
    return CORE_OK;
}

/* ---- scalar settings and sections ---- */

static int parse_member(struct config *c, const cJSON *m, const char *prefix,
                        const struct jctx *x);

static int parse_object(struct config *c, const cJSON *obj, const char *prefix,
                        const struct jctx *x)
{
    char where[WHERE_MAX + 64];
    keypath(where, sizeof where, "%s:%s%s", x->source, *prefix ? " " : "", prefix);
    int rc = check_duplicates(obj, where, x);
    for (const cJSON *m = obj->child; m && rc == CORE_OK; m = m->next)
        rc = parse_member(c, m, prefix, x);
    return rc;
}

static int parse_member(struct config *c, const cJSON *m, const char *prefix,
                        const struct jctx *x)
{
    char key[WHERE_MAX], where[WHERE_MAX + 64];
    keypath(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", m->string);
    keypath(where, sizeof where, "%s: %s", x->source, key);
    if (*prefix == '\0' && strcmp(m->string, "tables") == 0)
        return parse_tables(c, m, x);
    const struct config_option *o = config_option_by_key(key, strlen(key));
    if (o && strcmp(key, "cluster.nats") == 0 && cJSON_IsArray(m))
        return parse_nats_urls(c, m, where, x);
    if (o)
        return config_option_set_json(c, o, m, where, x->err, x->errlen);
    if (!config_is_section(key, strlen(key)))
        return FAIL(x, "%s: unknown key", where);
    if (!cJSON_IsObject(m))
        return FAIL(x, "%s: must be an object", where);
    return parse_object(c, m, key, x);
}

/* ---- entry points ---- */

/* "file:3:14" for the byte where cJSON stopped. */
static int syntax_error(const char *text, size_t len, const char *at, const struct jctx *x,
                        const char *what)
{
    size_t off = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    return FAIL(x, "%s:%d:%d: %s", x->source, line, col, what);
}

/* The request validator of proto/json.h, so a broken file is told what
 * was expected where, as a broken request body is ("cfg.json:3:1:
 * invalid JSON: expected a string key"). Duplicate keys are left to
 * check_duplicates, which names the key's path. */
static bool text_is_json(const char *text, size_t len, const struct jctx *x)
{
    char what[160];
    size_t at = 0;
    enum status_code code = json_validate_where(text, len, JSON_MAX_DEPTH, &at, what,
                                                sizeof what);
    if (code == STATUS_OK ||
        (code == STATUS_INVALID_JSON && strncmp(what, "duplicate key", 13) == 0))
        return true;
    char msg[200];
    snprintf(msg, sizeof msg, "%s%s", code == STATUS_INVALID_JSON ? "invalid JSON: " : "", what);
    syntax_error(text, len, text + at, x, msg);
    return false;
}

int config_parse_json(struct config *c, const char *text, size_t len,
                      const char *base_dir, const char *source,
                      char *err, size_t errlen)
{
    struct jctx x = {.source = source ? source : "config", .base_dir = base_dir,
                     .err = err, .errlen = errlen};
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return syntax_error(text, len, nul, &x, "NUL byte in the file");
    if (!text_is_json(text, len, &x))
        return CORE_EINVAL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root) /* the validator passed it: only memory can fail */
        return core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", x.source);
    int rc;
    if (!cJSON_IsObject(root))
        rc = FAIL(&x, "%s: the top level must be a JSON object", x.source);
    else
        rc = parse_object(c, root, "", &x);
    cJSON_Delete(root);
    return rc;
}

static char *read_whole(const char *path, size_t *len, char *err, size_t errlen, int *rc)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        *rc = core_fail(err, errlen, CORE_EINVAL,
                        "%s: is a directory; --config takes the JSON file itself "
                        "(such as %s/config.json)", path, path);
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = core_fail(err, errlen, CORE_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_FILE_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_FILE_BYTES + 1, f) : 0;
    bool bad = ferror(f);
    fclose(f);
    if (!buf)
        *rc = core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", path);
    else if (bad)
        *rc = core_fail(err, errlen, CORE_EIO, "%s: read error", path);
    else if (n > MAX_FILE_BYTES)
        *rc = core_fail(err, errlen, CORE_EINVAL, "%s: larger than %u bytes; not a config file?",
                        path, MAX_FILE_BYTES);
    else
        *rc = CORE_OK;
    if (*rc != CORE_OK) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The folder of path, or NULL when path has none (the cwd). */
static char *folder_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return NULL;
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int config_parse_file(struct config *c, const char *path, char *err, size_t errlen)
{
    int rc;
    size_t len;
    char *text = read_whole(path, &len, err, errlen, &rc);
    if (!text)
        return rc;
    char *dir = folder_of(path);
    bool dir_failed = strchr(path, '/') && !dir;
    rc = dir_failed ? core_fail(err, errlen, CORE_ENOMEM, "out of memory")
                    : config_parse_json(c, text, len, dir, path, err, errlen);
    free(dir);
    free(text);
    if (rc == CORE_OK)
        rc = config_set_string(&c->config_path, path);
    return rc;
}
