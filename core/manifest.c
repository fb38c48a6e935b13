/* manifest.c - manifest.json: the writer (printf into a growing buffer) and
 * the strict reader (a small JSON parser of its own, then one function per
 * group of fields). core/ has no JSON library; the manifest needs only
 * objects, arrays, ASCII strings without escapes but \" \\ \/, numbers,
 * true, false and null. */
#include "manifest.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

#define FORMAT_NAME "embedding-server snapshot"

static const struct {
    const char *name;
    bool npy;
} files[MANIFEST_NFILES] = {
    [MANIFEST_WEIGHT] = {"weight.npy", true},
    [MANIFEST_VOCAB] = {"vocab.txt", false},
    [MANIFEST_EXP_AVG] = {"exp_avg.npy", true},
    [MANIFEST_EXP_AVG_SQ] = {"exp_avg_sq.npy", true},
    [MANIFEST_SUM] = {"sum.npy", true},
};

const char *manifest_file_name(enum manifest_file f)
{
    return (unsigned)f < MANIFEST_NFILES ? files[f].name : "?";
}

bool manifest_file_is_npy(enum manifest_file f)
{
    return (unsigned)f < MANIFEST_NFILES && files[f].npy;
}

/* ---- writing ------------------------------------------------------------ */

/* A growing text buffer; a failed allocation sticks and is reported once at
 * the end. */
struct text {
    char *p;
    size_t len, cap;
    bool failed;
};

static void text_printf(struct text *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* the first call has no buffer yet: NULL + 0 is undefined, NULL is not */
        int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* The shortest of %.15g..%.17g that parses back to x exactly: 0.9 stays
 * "0.9" for people reading the manifest, and every double round-trips. */
static const char *num(char buf[32], double x)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    return buf;
}

static void dump_settings(struct text *b, const struct table_settings *s)
{
    char n1[32];
    text_printf(b, "  \"settings\": {");
    if (s->has_padding)
        text_printf(b, "\"padding_idx\": %" PRId64, s->padding_idx);
    else
        text_printf(b, "\"padding_idx\": null");
    if (s->has_max_norm)
        text_printf(b, ", \"max_norm\": %s", num(n1, s->max_norm));
    else
        text_printf(b, ", \"max_norm\": null");
    if (isinf(s->norm_type))
        text_printf(b, ", \"norm_type\": \"inf\"");
    else
        text_printf(b, ", \"norm_type\": %s", num(n1, s->norm_type));
    text_printf(b, ", \"scale_grad_by_freq\": %s, \"freeze\": %s",
                s->scale_grad_by_freq ? "true" : "false", s->freeze ? "true" : "false");
    if (s->oov_id >= 0)
        text_printf(b, ", \"oov\": %" PRId64 "},\n", s->oov_id);
    else
        text_printf(b, ", \"oov\": \"error\"},\n");
}

static void dump_optimizer(struct text *b, const struct manifest *m)
{
    char n1[32], n2[32], n3[32];
    if (!m->configured) {
        text_printf(b, "  \"optimizer\": null,\n");
        return;
    }
    const struct optim_config *c = &m->optimizer;
    text_printf(b, "  \"optimizer\": {\"name\": \"%s\", \"lr\": %s", optim_kind_name(c->kind),
                num(n1, c->lr));
    if (c->kind == OPTIM_SPARSE_ADAM)
        text_printf(b, ", \"betas\": [%s, %s], \"eps\": %s", num(n1, c->beta1),
                    num(n2, c->beta2), num(n3, c->eps));
    if (c->kind == OPTIM_ADAGRAD)
        text_printf(b, ", \"lr_decay\": %s, \"initial_accumulator_value\": %s, \"eps\": %s",
                    num(n1, c->lr_decay), num(n2, c->initial_accumulator_value),
                    num(n3, c->eps));
    text_printf(b, "},\n");
}

static void dump_files(struct text *b, const struct manifest *m)
{
    if (m->files[MANIFEST_VOCAB])
        text_printf(b, "  \"vocab\": \"%s\",\n", files[MANIFEST_VOCAB].name);
    else
        text_printf(b, "  \"vocab\": null,\n");
    text_printf(b, "  \"weight\": \"%s\",\n  \"state\": [", files[MANIFEST_WEIGHT].name);
    const char *sep = "";
    for (int f = MANIFEST_EXP_AVG; f <= MANIFEST_SUM; f++) {
        if (m->files[f]) {
            text_printf(b, "%s\"%s\"", sep, files[f].name);
            sep = ", ";
        }
    }
    text_printf(b, "]\n");
}

/* Names go into the text unescaped: only table names ([A-Za-z0-9][A-Za-z0-9_.-]*) may. */
static bool plain_name(const char *s)
{
    if (strlen(s) > TABLE_NAME_MAX)
        return false;
    for (const char *p = s;; p++) {
        bool alnum =
            (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9');
        if (*p == '\0')
            return p != s;
        if (!alnum && (p == s || (*p != '_' && *p != '.' && *p != '-')))
            return false;
    }
}

int manifest_dump(const struct manifest *m, char **text, size_t *len)
{
    *text = NULL;
    *len = 0;
    if (!plain_name(m->name) || !m->files[MANIFEST_WEIGHT] ||
        m->files[MANIFEST_EXP_AVG] != m->files[MANIFEST_EXP_AVG_SQ])
        return CORE_EINVAL;
    struct text b = {0};
    text_printf(&b, "{\n  \"format\": \"" FORMAT_NAME "\",\n");
    text_printf(&b, "  \"format_version\": %d,\n", MANIFEST_FORMAT_VERSION);
    text_printf(&b, "  \"name\": \"%s\",\n", m->name);
    text_printf(&b, "  \"shape\": [%" PRId64 ", %" PRId64 "],\n", m->rows, m->dim);
    text_printf(&b, "  \"dtype\": \"float32\",\n");
    text_printf(&b, "  \"version\": %" PRIu64 ",\n  \"step\": %" PRId64 ",\n", m->version,
                m->step);
    text_printf(&b, "  \"log_seq\": %" PRIu64 ",\n", m->log_seq);
    dump_settings(&b, &m->settings);
    dump_optimizer(&b, m);
    dump_files(&b, m);
    text_printf(&b, "}\n");
    if (b.failed) {
        free(b.p);
        return CORE_ENOMEM;
    }
    *text = b.p;
    *len = b.len;
    return CORE_OK;
}

/* ---- a small strict JSON parser ------------------------------------------ */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jval {
    enum jtype type;
    bool b;
    const char *text; /* number token or string contents (unescaped in place) */
    size_t len;
    struct jval *items; /* array items or object values */
    char **keys;        /* object keys, NUL-terminated */
    size_t n;
};

struct jparser {
    char *s;
    size_t pos, len;
    const char *file;
    char *err;
    size_t errlen;
    int depth;
};

#define JSON_MAX_DEPTH 8

static int jfail(struct jparser *p, const char *what)
{
    return core_fail(p->err, p->errlen, CORE_EFORMAT, "%s: offset %zu: %s", p->file, p->pos,
                     what);
}

static void jskip_ws(struct jparser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            return;
        p->pos++;
    }
}

static void jfree(struct jval *v)
{
    for (size_t i = 0; i < v->n && (v->type == J_ARR || v->type == J_OBJ); i++)
        jfree(&v->items[i]);
    free(v->items);
    free(v->keys);
    memset(v, 0, sizeof(*v));
}

static int jparse_value(struct jparser *p, struct jval *v);

/* Strings: the manifest only holds ASCII names; escapes other than \" \\ \/
 * are refused rather than half supported. Unescapes in place. */
static int jparse_string(struct jparser *p, const char **out, size_t *len)
{
    p->pos++; /* opening quote */
    char *dst = p->s + p->pos;
    *out = dst;
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == '"') {
            *len = (size_t)(dst - *out);
            *dst = '\0'; /* overwrites the closing quote: text stays NUL-terminated */
            p->pos++;
            return CORE_OK;
        }
        if ((unsigned char)c < 0x20)
            return jfail(p, "control character in a string");
        if (c == '\\') {
            if (p->pos + 1 >= p->len || p->s[p->pos + 1] == '\0' ||
                strchr("\"\\/", p->s[p->pos + 1]) == NULL)
                return jfail(p, "unsupported escape in a string");
            p->pos++;
            c = p->s[p->pos];
        }
        *dst++ = c;
        p->pos++;
    }
    return jfail(p, "unterminated string");
}

/* Takes the number's characters; the field readers check its syntax. */
static int jparse_number(struct jparser *p, struct jval *v)
{
    size_t start = p->pos;
    if (p->s[p->pos] == '-')
        p->pos++;
    size_t digits = 0;
    while (p->pos < p->len && p->s[p->pos] != '\0' &&
           strchr("0123456789.eE+-", p->s[p->pos]) != NULL) {
        p->pos++;
        digits++;
    }
    if (digits == 0)
        return jfail(p, "expected a value");
    v->type = J_NUM;
    v->text = p->s + start;
    v->len = p->pos - start;
    return CORE_OK;
}

static int jexpect(struct jparser *p, char c, const char *what)
{
    jskip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != c)
        return jfail(p, what);
    p->pos++;
    return CORE_OK;
}

static int jpush(struct jval *v, size_t *cap)
{
    if (v->n < *cap)
        return CORE_OK;
    size_t ncap = *cap ? *cap * 2 : 8;
    struct jval *items = realloc(v->items, ncap * sizeof(*items));
    if (items == NULL)
        return CORE_ENOMEM;
    v->items = items;
    if (v->type == J_OBJ) {
        char **keys = realloc(v->keys, ncap * sizeof(*keys));
        if (keys == NULL)
            return CORE_ENOMEM;
        v->keys = keys;
    }
    *cap = ncap;
    return CORE_OK;
}

static int jparse_key(struct jparser *p, struct jval *obj)
{
    jskip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != '"')
        return jfail(p, "expected a key");
    const char *key;
    size_t klen;
    int rc = jparse_string(p, &key, &klen);
    if (rc != CORE_OK)
        return rc;
    for (size_t i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return jfail(p, "duplicate key");
    obj->keys[obj->n] = (char *)key;
    return jexpect(p, ':', "expected ':'");
}

static int jparse_members(struct jparser *p, struct jval *v, char close)
{
    size_t cap = 0;
    jskip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return CORE_OK;
    }
    for (;;) {
        if (jpush(v, &cap) != CORE_OK)
            return core_fail(p->err, p->errlen, CORE_ENOMEM, "%s: out of memory", p->file);
        if (v->type == J_OBJ) {
            int rc = jparse_key(p, v);
            if (rc != CORE_OK)
                return rc;
        }
        memset(&v->items[v->n], 0, sizeof(v->items[0]));
        int rc = jparse_value(p, &v->items[v->n]);
        v->n++;
        if (rc != CORE_OK)
            return rc;
        jskip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        return jexpect(p, close, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int jparse_value(struct jparser *p, struct jval *v)
{
    static const struct {
        const char *word;
        enum jtype type;
        bool b;
    } words[] = {{"null", J_NULL, false}, {"true", J_BOOL, true}, {"false", J_BOOL, false}};
    jskip_ws(p);
    if (p->pos >= p->len)
        return jfail(p, "unexpected end of file");
    char c = p->s[p->pos];
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t wl = strlen(words[i].word);
        if (p->len - p->pos >= wl && memcmp(p->s + p->pos, words[i].word, wl) == 0) {
            v->type = words[i].type;
            v->b = words[i].b;
            p->pos += wl;
            return CORE_OK;
        }
    }
    if (c == '"') {
        v->type = J_STR;
        return jparse_string(p, &v->text, &v->len);
    }
    if (c == '[' || c == '{') {
        if (++p->depth > JSON_MAX_DEPTH)
            return jfail(p, "nested too deeply");
        p->pos++;
        v->type = c == '[' ? J_ARR : J_OBJ;
        int rc = jparse_members(p, v, c == '[' ? ']' : '}');
        p->depth--;
        return rc;
    }
    return jparse_number(p, v);
}

/* Parses s[0..len) in place (strings are unescaped into s). */
static int jparse(char *s, size_t len, const char *file, struct jval *root, char *err,
                  size_t errlen)
{
    struct jparser p = {.s = s, .len = len, .file = file, .err = err, .errlen = errlen};
    memset(root, 0, sizeof(*root));
    int rc = jparse_value(&p, root);
    if (rc == CORE_OK) {
        jskip_ws(&p);
        if (p.pos != p.len)
            rc = jfail(&p, "trailing bytes after the manifest");
        else if (root->type != J_OBJ)
            rc = core_fail(err, errlen, CORE_EFORMAT, "%s: not a JSON object", file);
    }
    if (rc != CORE_OK)
        jfree(root);
    return rc;
}

static const struct jval *jget(const struct jval *obj, const char *key)
{
    for (size_t i = 0; obj->type == J_OBJ && i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return &obj->items[i];
    return NULL;
}

static bool jstr_is(const struct jval *v, const char *s)
{
    return v != NULL && v->type == J_STR && strcmp(v->text, s) == 0;
}

/* ---- fields -------------------------------------------------------------- */

struct mreader {
    const char *file;
    char *err;
    size_t errlen;
};

/* key is the dotted path used in messages. */
static int field_fail(const struct mreader *r, const char *key, const char *what)
{
    return core_fail(r->err, r->errlen, CORE_EFORMAT, "%s: \"%s\" %s", r->file, key, what);
}

/* Copies a number token into buf (NUL-terminated); false when it cannot be one. */
static bool number_text(const struct jval *v, char *buf, size_t len)
{
    if (v->type != J_NUM || v->len == 0 || v->len >= len)
        return false;
    memcpy(buf, v->text, v->len);
    buf[v->len] = '\0';
    return true;
}

static int get_double(const struct mreader *r, const struct jval *v, const char *key,
                      double *out)
{
    if (v == NULL)
        return field_fail(r, key, "is missing");
    char buf[64];
    if (v->type != J_NUM)
        return field_fail(r, key, "must be a number");
    if (!number_text(v, buf, sizeof(buf)))
        return field_fail(r, key, "is not a valid number");
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    /* ERANGE on underflow is fine: subnormals are written as they are */
    if (*end != '\0' || !isfinite(*out))
        return field_fail(r, key, "is not a valid finite number");
    return CORE_OK;
}

static int get_int(const struct mreader *r, const struct jval *v, const char *key, int64_t min,
                   int64_t *out)
{
    if (v == NULL)
        return field_fail(r, key, "is missing");
    char buf[32];
    if (!number_text(v, buf, sizeof(buf)))
        return field_fail(r, key, "must be an integer");
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (*end != '\0' || errno == ERANGE)
        return field_fail(r, key, "must be an integer");
    if (x < min)
        return field_fail(r, key, "is out of range");
    *out = x;
    return CORE_OK;
}

/* Counters (version, log_seq): the whole uint64 range, no sign. */
static int get_count(const struct mreader *r, const struct jval *v, const char *key,
                     uint64_t *out)
{
    if (v == NULL)
        return field_fail(r, key, "is missing");
    char buf[32];
    if (!number_text(v, buf, sizeof(buf)))
        return field_fail(r, key, "must be an integer");
    if (buf[0] == '-')
        return field_fail(r, key, "is out of range");
    char *end;
    errno = 0;
    unsigned long long x = strtoull(buf, &end, 10);
    if (*end != '\0' || errno == ERANGE || buf[0] < '0' || buf[0] > '9')
        return field_fail(r, key, "must be an integer");
    *out = x;
    return CORE_OK;
}

static int get_bool(const struct mreader *r, const struct jval *v, const char *key, bool *out)
{
    if (v == NULL)
        return field_fail(r, key, "is missing");
    if (v->type != J_BOOL)
        return field_fail(r, key, "must be true or false");
    *out = v->b;
    return CORE_OK;
}

static int read_format(const struct mreader *r, const struct jval *root, struct manifest *m)
{
    if (!jstr_is(jget(root, "format"), FORMAT_NAME))
        return field_fail(r, "format", "must be \"" FORMAT_NAME "\"");
    int64_t fv;
    int rc = get_int(r, jget(root, "format_version"), "format_version", 0, &fv);
    if (rc != CORE_OK)
        return rc;
    if (fv < MANIFEST_FORMAT_VERSION_MIN || fv > MANIFEST_FORMAT_VERSION)
        return core_fail(r->err, r->errlen, CORE_EUNSUPPORTED,
                         "%s: format_version %lld is not supported (this build reads %d to %d)",
                         r->file, (long long)fv, MANIFEST_FORMAT_VERSION_MIN,
                         MANIFEST_FORMAT_VERSION);
    m->format_version = (int)fv;
    return CORE_OK;
}

static int read_header_fields(const struct mreader *r, const struct jval *root,
                              struct manifest *m)
{
    const struct jval *name = jget(root, "name");
    if (name == NULL || name->type != J_STR || name->len == 0 || name->len > TABLE_NAME_MAX)
        return field_fail(r, "name", "must be a table name");
    memcpy(m->name, name->text, name->len + 1);
    const struct jval *shape = jget(root, "shape");
    if (shape == NULL || shape->type != J_ARR || shape->n != 2)
        return field_fail(r, "shape", "must be [num_embeddings, embedding_dim]");
    int rc = get_int(r, &shape->items[0], "shape", 0, &m->rows);
    if (rc == CORE_OK)
        rc = get_int(r, &shape->items[1], "shape", 1, &m->dim);
    if (rc == CORE_OK && !jstr_is(jget(root, "dtype"), "float32"))
        rc = field_fail(r, "dtype", "must be \"float32\"");
    if (rc == CORE_OK)
        rc = get_count(r, jget(root, "version"), "version", &m->version);
    if (rc == CORE_OK)
        rc = get_int(r, jget(root, "step"), "step", 0, &m->step);
    /* format 1 was written before the log existed */
    if (rc == CORE_OK && m->format_version >= 2)
        rc = get_count(r, jget(root, "log_seq"), "log_seq", &m->log_seq);
    return rc;
}

static int read_settings(const struct mreader *r, const struct jval *root, struct manifest *m)
{
    const struct jval *s = jget(root, "settings");
    if (s == NULL || s->type != J_OBJ)
        return field_fail(r, "settings", "must be an object");
    struct table_settings *ts = &m->settings;
    table_settings_init(ts);
    const struct jval *v = jget(s, "padding_idx");
    if (v == NULL)
        return field_fail(r, "settings.padding_idx", "is missing");
    int rc = CORE_OK;
    ts->has_padding = v->type != J_NULL;
    if (ts->has_padding)
        rc = get_int(r, v, "settings.padding_idx", INT64_MIN, &ts->padding_idx);
    v = jget(s, "max_norm");
    if (rc == CORE_OK && v == NULL)
        return field_fail(r, "settings.max_norm", "is missing");
    if (rc == CORE_OK) {
        ts->has_max_norm = v->type != J_NULL;
        if (ts->has_max_norm)
            rc = get_double(r, v, "settings.max_norm", &ts->max_norm);
    }
    if (rc == CORE_OK && jstr_is(jget(s, "norm_type"), "inf"))
        ts->norm_type = INFINITY;
    else if (rc == CORE_OK)
        rc = get_double(r, jget(s, "norm_type"), "settings.norm_type", &ts->norm_type);
    if (rc == CORE_OK)
        rc = get_bool(r, jget(s, "scale_grad_by_freq"), "settings.scale_grad_by_freq",
                      &ts->scale_grad_by_freq);
    if (rc == CORE_OK)
        rc = get_bool(r, jget(s, "freeze"), "settings.freeze", &ts->freeze);
    v = jget(s, "oov");
    if (rc == CORE_OK && jstr_is(v, "error"))
        ts->oov_id = -1;
    else if (rc == CORE_OK)
        rc = get_int(r, v, "settings.oov", 0, &ts->oov_id);
    return rc;
}

/* The hyperparameters each optimizer's manifest entry holds, besides lr. */
static int read_hyper(const struct mreader *r, const struct jval *o, struct optim_config *c)
{
    if (c->kind == OPTIM_SPARSE_ADAM) {
        const struct jval *betas = jget(o, "betas");
        if (betas == NULL || betas->type != J_ARR || betas->n != 2)
            return field_fail(r, "optimizer.betas", "must be [beta1, beta2]");
        int rc = get_double(r, &betas->items[0], "optimizer.betas[0]", &c->beta1);
        if (rc == CORE_OK)
            rc = get_double(r, &betas->items[1], "optimizer.betas[1]", &c->beta2);
        if (rc == CORE_OK)
            rc = get_double(r, jget(o, "eps"), "optimizer.eps", &c->eps);
        return rc;
    }
    if (c->kind == OPTIM_ADAGRAD) {
        int rc = get_double(r, jget(o, "lr_decay"), "optimizer.lr_decay", &c->lr_decay);
        if (rc == CORE_OK)
            rc = get_double(r, jget(o, "initial_accumulator_value"),
                            "optimizer.initial_accumulator_value", &c->initial_accumulator_value);
        if (rc == CORE_OK)
            rc = get_double(r, jget(o, "eps"), "optimizer.eps", &c->eps);
        return rc;
    }
    return CORE_OK;
}

static int read_optimizer(const struct mreader *r, const struct jval *root, struct manifest *m)
{
    const struct jval *o = jget(root, "optimizer");
    if (o == NULL)
        return field_fail(r, "optimizer", "is missing");
    m->configured = o->type != J_NULL;
    if (!m->configured)
        return CORE_OK;
    const struct jval *name = jget(o, "name");
    enum optim_kind kind;
    if (o->type != J_OBJ || name == NULL || name->type != J_STR ||
        !optim_kind_parse(name->text, &kind))
        return field_fail(r, "optimizer.name", "must be sgd, sparse_adam or adagrad");
    optim_config_defaults(&m->optimizer, kind);
    int rc = get_double(r, jget(o, "lr"), "optimizer.lr", &m->optimizer.lr);
    if (rc == CORE_OK)
        rc = read_hyper(r, o, &m->optimizer);
    if (rc != CORE_OK)
        return rc;
    char why[160] = "";
    if (optim_config_check(&m->optimizer, why, sizeof(why)) != CORE_OK)
        return core_fail(r->err, r->errlen, CORE_EFORMAT, "%s: %s", r->file, why);
    return CORE_OK;
}

/* Which state files the manifest lists; they must belong to its optimizer. */
static int read_state_list(const struct mreader *r, const struct jval *root, struct manifest *m)
{
    const struct jval *st = jget(root, "state");
    if (st == NULL || st->type != J_ARR)
        return field_fail(r, "state", "must be an array of file names");
    for (size_t i = 0; i < st->n; i++) {
        int f = MANIFEST_EXP_AVG;
        while (f <= MANIFEST_SUM && !jstr_is(&st->items[i], files[f].name))
            f++;
        if (f > MANIFEST_SUM)
            return field_fail(r, "state", "lists an unknown file");
        m->files[f] = true;
    }
    if (m->files[MANIFEST_EXP_AVG] != m->files[MANIFEST_EXP_AVG_SQ])
        return field_fail(r, "state", "must list both exp_avg.npy and exp_avg_sq.npy");
    enum optim_kind kind = m->configured ? m->optimizer.kind : OPTIM_SGD;
    if ((m->files[MANIFEST_EXP_AVG] && kind != OPTIM_SPARSE_ADAM) ||
        (m->files[MANIFEST_SUM] && kind != OPTIM_ADAGRAD))
        return field_fail(r, "state", "lists files of another optimizer");
    return CORE_OK;
}

static int read_file_list(const struct mreader *r, const struct jval *root, struct manifest *m)
{
    if (!jstr_is(jget(root, "weight"), files[MANIFEST_WEIGHT].name))
        return field_fail(r, "weight", "must be \"weight.npy\"");
    m->files[MANIFEST_WEIGHT] = true;
    const struct jval *v = jget(root, "vocab");
    if (v == NULL || (v->type != J_NULL && !jstr_is(v, files[MANIFEST_VOCAB].name)))
        return field_fail(r, "vocab", "must be \"vocab.txt\" or null");
    m->files[MANIFEST_VOCAB] = v->type != J_NULL;
    return read_state_list(r, root, m);
}

/* Parses buf[0..len), which the parser may change (it unescapes strings in
 * place); buf[len] must be writable. */
static int parse_in_place(char *buf, size_t len, const char *file, struct manifest *m,
                          char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    if (memchr(buf, '\0', len) != NULL)
        return core_fail(err, errlen, CORE_EFORMAT, "%s: holds a NUL byte", file);
    buf[len] = '\0';
    struct jval root;
    int rc = jparse(buf, len, file, &root, err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct mreader r = {file, err, errlen};
    rc = read_format(&r, &root, m);
    if (rc == CORE_OK)
        rc = read_header_fields(&r, &root, m);
    if (rc == CORE_OK)
        rc = read_settings(&r, &root, m);
    if (rc == CORE_OK)
        rc = read_optimizer(&r, &root, m);
    if (rc == CORE_OK)
        rc = read_file_list(&r, &root, m);
    jfree(&root);
    return rc;
}

int manifest_parse(const char *text, size_t len, const char *file, struct manifest *m,
                   char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", file);
    memcpy(copy, text, len);
    int rc = parse_in_place(copy, len, file, m, err, errlen);
    free(copy);
    return rc;
}

int manifest_read(const char *path, struct manifest *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return core_fail(err, errlen, errno == ENOENT ? CORE_ENOTFOUND : CORE_EIO,
                         "%s: cannot open: %s", path, strerror(errno));
    /* sized by the file; one byte more tells a file past the limit */
    struct stat st;
    size_t cap = MANIFEST_MAX_BYTES + 1;
    if (fstat(fileno(f), &st) == 0 && st.st_size >= 0 && (uint64_t)st.st_size < cap)
        cap = (size_t)st.st_size + 1;
    char *buf = malloc(cap + 1);
    size_t n = buf != NULL ? fread(buf, 1, cap, f) : 0;
    bool bad = buf == NULL || ferror(f);
    fclose(f);
    int rc;
    if (buf == NULL)
        rc = core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", path);
    else if (bad)
        rc = core_fail(err, errlen, CORE_EIO, "%s: cannot read", path);
    else if (n > MANIFEST_MAX_BYTES)
        rc = core_fail(err, errlen, CORE_ETOOBIG, "%s: larger than the %u bytes a manifest may be",
                       path, MANIFEST_MAX_BYTES);
    else
        rc = parse_in_place(buf, n, path, m, err, errlen);
    free(buf);
    return rc;
}
