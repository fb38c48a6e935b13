/* snapshot.c - writing a table to <data_dir>/<table>/snapshot-<version>/ and
 * loading it back: weights, vocabulary, settings, optimizer config and state,
 * step and version.
 *
 * Consistency without a second copy of the table: the files are written
 * while the table's write lock is held, which only copies the rows into the
 * page cache (memory speed); the slow part, fsync, runs after the lock is
 * released, when the files' contents can no longer change. Readers never
 * take the write lock, so lookups and searches keep running throughout; only
 * other writers wait for the copy.
 *
 * Atomicity: everything goes to a hidden temporary sibling directory that is
 * fsynced and then renamed to its final name (or exchanged with an existing
 * snapshot of the same version by renameat2(RENAME_EXCHANGE), falling back
 * to rename-away-then-rename where the filesystem cannot exchange), and the
 * parent directory is fsynced. A reader sees the old snapshot or the new
 * one, never part of one.
 */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "loader.h"
#include "table_internal.h"

#define MANIFEST "manifest.json"
#define WEIGHT "weight.npy"
#define VOCAB "vocab.txt"
#define MANIFEST_MAX_BYTES (1u << 20)
#define PREFIX "snapshot-"

/* ---- small filesystem helpers ----------------------------------------- */

static int path_join(char *out, size_t len, const char *a, const char *b, char *err,
                     size_t errlen)
{
    int n = snprintf(out, len, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= len)
        return core_fail(err, errlen, CORE_ETOOBIG, "path %s/%s is too long", a, b);
    return CORE_OK;
}

static int make_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return core_fail(err, errlen, CORE_EIO, "%s: cannot create directory: %s", path,
                         strerror(errno));
    return CORE_OK;
}

static int fsync_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = fsync(fd) == 0 ? CORE_OK : CORE_EIO;
    if (rc != CORE_OK)
        core_fail(err, errlen, rc, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/* Removes a snapshot directory: it only ever holds plain files. Returns 0
 * or -1 with errno set. */
static int remove_flat_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
    return rmdir(path);
}

/* ---- writing ----------------------------------------------------------- */

/* The files of one snapshot being written, open until they are fsynced. */
#define MAX_FILES 5
struct out_files {
    const char *dir;
    int fd[MAX_FILES];
    const char *name[MAX_FILES];
    int n;
};

static int create_file(struct out_files *f, const char *name, int *fd, char *err, size_t errlen)
{
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), f->dir, name, err, errlen);
    if (rc != CORE_OK)
        return rc;
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (*fd < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: cannot create: %s", path, strerror(errno));
    f->fd[f->n] = *fd;
    f->name[f->n] = name;
    f->n++;
    return CORE_OK;
}

static int write_npy(struct out_files *f, const char *name, const struct matrix *m, char *err,
                     size_t errlen)
{
    int fd;
    int rc = create_file(f, name, &fd, err, errlen);
    if (rc != CORE_OK)
        return rc;
    rc = npy_write_fd(fd, m->data, m->rows, m->dim, m->stride);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "%s/%s: write failed: %s", f->dir, name,
                         rc == CORE_EIO ? strerror(errno) : core_strerror(rc));
    return CORE_OK;
}

static int write_vocab(struct out_files *f, const struct vocab *v, char *err, size_t errlen)
{
    int fd;
    int rc = create_file(f, VOCAB, &fd, err, errlen);
    if (rc != CORE_OK)
        return rc;
    int dup_fd = dup(fd);
    FILE *s = dup_fd >= 0 ? fdopen(dup_fd, "w") : NULL;
    if (s == NULL) {
        if (dup_fd >= 0)
            close(dup_fd);
        return core_fail(err, errlen, CORE_EIO, "%s/%s: %s", f->dir, VOCAB, strerror(errno));
    }
    rc = vocab_write(v, s);
    if (fclose(s) != 0)
        rc = CORE_EIO;
    if (rc != CORE_OK)
        return core_fail(err, errlen, CORE_EIO, "%s/%s: write failed", f->dir, VOCAB);
    return CORE_OK;
}

static int write_text(struct out_files *f, const char *name, const char *text, char *err,
                      size_t errlen)
{
    int fd;
    int rc = create_file(f, name, &fd, err, errlen);
    if (rc != CORE_OK)
        return rc;
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t w = write(fd, text, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return core_fail(err, errlen, CORE_EIO, "%s/%s: write failed: %s", f->dir, name,
                             strerror(errno));
        text += w;
        len -= (size_t)w;
    }
    return CORE_OK;
}

static int sync_and_close(struct out_files *f, char *err, size_t errlen)
{
    int rc = CORE_OK;
    for (int i = 0; i < f->n; i++) {
        if (rc == CORE_OK && fsync(f->fd[i]) != 0)
            rc = core_fail(err, errlen, CORE_EIO, "%s/%s: fsync: %s", f->dir, f->name[i],
                           strerror(errno));
        if (close(f->fd[i]) != 0 && rc == CORE_OK)
            rc = core_fail(err, errlen, CORE_EIO, "%s/%s: close: %s", f->dir, f->name[i],
                           strerror(errno));
    }
    f->n = 0;
    return rc;
}

/* What the manifest records, captured under the write lock. */
struct meta {
    char name[TABLE_NAME_MAX + 1];
    int64_t rows, dim;
    uint64_t version;
    int64_t step;
    struct table_settings s;
    bool has_vocab;
    bool configured;
    struct optim_config cfg;
    bool has_adam_state, has_sum;
};

/* Copies rows, state and vocabulary into the temporary directory's files;
 * caller holds the write lock. */
static int write_table_files(struct table *t, struct out_files *f, char *err, size_t errlen)
{
    int rc = write_npy(f, WEIGHT, &t->w, err, errlen);
    if (rc == CORE_OK && t->optim.exp_avg.data != NULL)
        rc = write_npy(f, "exp_avg.npy", &t->optim.exp_avg, err, errlen);
    if (rc == CORE_OK && t->optim.exp_avg_sq.data != NULL)
        rc = write_npy(f, "exp_avg_sq.npy", &t->optim.exp_avg_sq, err, errlen);
    if (rc == CORE_OK && t->optim.sum.data != NULL)
        rc = write_npy(f, "sum.npy", &t->optim.sum, err, errlen);
    if (rc == CORE_OK && t->vocab != NULL)
        rc = write_vocab(f, t->vocab, err, errlen);
    return rc;
}

static void capture_meta(const struct table *t, struct meta *m)
{
    memset(m, 0, sizeof(*m));
    strcpy(m->name, t->name);
    m->rows = t->w.rows;
    m->dim = t->w.dim;
    m->version = atomic_load(&t->version);
    m->step = t->optim.step;
    m->s = t->s;
    m->has_vocab = t->vocab != NULL;
    m->configured = t->optim.configured;
    m->cfg = t->optim.cfg;
    m->has_adam_state = t->optim.exp_avg.data != NULL && t->optim.exp_avg_sq.data != NULL;
    m->has_sum = t->optim.sum.data != NULL;
}

/* A growing text buffer for the manifest. */
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

static void manifest_optimizer(struct text *b, const struct meta *m)
{
    char n1[32], n2[32], n3[32];
    if (!m->configured) {
        text_printf(b, "  \"optimizer\": null,\n");
        return;
    }
    const struct optim_config *c = &m->cfg;
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

static void manifest_settings(struct text *b, const struct table_settings *s)
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

static char *manifest_text(const struct meta *m)
{
    struct text b = {0};
    text_printf(&b, "{\n  \"format\": \"embedding-server snapshot\",\n");
    text_printf(&b, "  \"format_version\": %d,\n", SNAPSHOT_FORMAT_VERSION);
    text_printf(&b, "  \"name\": \"%s\",\n", m->name); /* names are [A-Za-z0-9_.-] */
    text_printf(&b, "  \"shape\": [%" PRId64 ", %" PRId64 "],\n", m->rows, m->dim);
    text_printf(&b, "  \"dtype\": \"float32\",\n");
    text_printf(&b, "  \"version\": %" PRIu64 ",\n  \"step\": %" PRId64 ",\n", m->version,
                m->step);
    manifest_settings(&b, &m->s);
    manifest_optimizer(&b, m);
    text_printf(&b, "  \"vocab\": %s,\n", m->has_vocab ? "\"" VOCAB "\"" : "null");
    text_printf(&b, "  \"weight\": \"" WEIGHT "\",\n  \"state\": [");
    if (m->has_adam_state)
        text_printf(&b, "\"exp_avg.npy\", \"exp_avg_sq.npy\"");
    else if (m->has_sum)
        text_printf(&b, "\"sum.npy\"");
    text_printf(&b, "]\n}\n");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* Moves the finished temporary directory to final, replacing a snapshot of
 * the same version if there is one. */
static int publish(const char *tmp, const char *final, char *err, size_t errlen)
{
    if (rename(tmp, final) == 0)
        return CORE_OK;
    if (errno != EEXIST && errno != ENOTEMPTY)
        return core_fail(err, errlen, CORE_EIO, "rename %s -> %s: %s", tmp, final,
                         strerror(errno));
    /* final exists: swap the two in one step; tmp then holds the old one */
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
        remove_flat_dir(tmp);
        return CORE_OK;
    }
    if (errno != EINVAL && errno != ENOSYS)
        return core_fail(err, errlen, CORE_EIO, "exchange %s <-> %s: %s", tmp, final,
                         strerror(errno));
    /* no exchange here: move the old one away, then the new one in; a reader
     * may briefly find no snapshot of this version, never a partial one */
    char old[PATH_MAX];
    int n = snprintf(old, sizeof(old), "%s.old", tmp);
    if (n < 0 || (size_t)n >= sizeof(old))
        return core_fail(err, errlen, CORE_ETOOBIG, "path %s.old is too long", tmp);
    if (rename(final, old) != 0)
        return core_fail(err, errlen, CORE_EIO, "rename %s -> %s: %s", final, old,
                         strerror(errno));
    if (rename(tmp, final) != 0) {
        int e = errno;
        rename(old, final);
        return core_fail(err, errlen, CORE_EIO, "rename %s -> %s: %s", tmp, final, strerror(e));
    }
    remove_flat_dir(old);
    return CORE_OK;
}

static _Atomic unsigned tmp_counter;

/* <data_dir>/<name> exists afterwards; table_dir receives its path. */
static int prepare_dirs(const char *data_dir, const char *name, char *table_dir, size_t len,
                        char *err, size_t errlen)
{
    int rc = make_dir(data_dir, err, errlen);
    if (rc == CORE_OK)
        rc = path_join(table_dir, len, data_dir, name, err, errlen);
    if (rc == CORE_OK)
        rc = make_dir(table_dir, err, errlen);
    return rc;
}

/* Writes every file into tmp; the copy of rows happens under the lock. */
static int fill_tmp_dir(struct table *t, const char *tmp, struct meta *m, char *err,
                        size_t errlen)
{
    struct out_files f = {.dir = tmp};
    pthread_mutex_lock(&t->write_lock);
    int rc = write_table_files(t, &f, err, errlen);
    capture_meta(t, m);
    pthread_mutex_unlock(&t->write_lock);
    char *text = NULL;
    if (rc == CORE_OK) {
        text = manifest_text(m);
        rc = text != NULL ? write_text(&f, MANIFEST, text, err, errlen)
                          : core_fail(err, errlen, CORE_ENOMEM, "manifest: out of memory");
    }
    free(text);
    int rc2 = sync_and_close(&f, err, errlen);
    if (rc == CORE_OK)
        rc = rc2;
    if (rc == CORE_OK)
        rc = fsync_path(tmp, err, errlen);
    return rc;
}

int snapshot_write(struct table *t, const char *data_dir, char *path_out, size_t path_len,
                   uint64_t *version_out, char *err, size_t errlen)
{
    char table_dir[PATH_MAX], tmp[PATH_MAX], final[PATH_MAX];
    int rc = prepare_dirs(data_dir, t->name, table_dir, sizeof(table_dir), err, errlen);
    if (rc != CORE_OK)
        return rc;
    int n = snprintf(tmp, sizeof(tmp), "%s/.tmp-" PREFIX "%ld-%u", table_dir, (long)getpid(),
                     atomic_fetch_add(&tmp_counter, 1));
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return core_fail(err, errlen, CORE_ETOOBIG, "path under %s is too long", table_dir);
    if (mkdir(tmp, 0755) != 0)
        return core_fail(err, errlen, CORE_EIO, "%s: cannot create directory: %s", tmp,
                         strerror(errno));
    struct meta m;
    rc = fill_tmp_dir(t, tmp, &m, err, errlen);
    if (rc == CORE_OK) {
        n = snprintf(final, sizeof(final), "%s/" PREFIX "%" PRIu64, table_dir, m.version);
        if (n < 0 || (size_t)n >= sizeof(final))
            rc = core_fail(err, errlen, CORE_ETOOBIG, "path under %s is too long", table_dir);
    }
    if (rc == CORE_OK)
        rc = publish(tmp, final, err, errlen);
    if (rc != CORE_OK) {
        remove_flat_dir(tmp);
        return rc;
    }
    rc = fsync_path(table_dir, err, errlen);
    if (rc == CORE_OK)
        rc = fsync_path(data_dir, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (path_out != NULL && path_len > 0) {
        n = snprintf(path_out, path_len, "%s", final);
        if (n < 0 || (size_t)n >= path_len)
            return core_fail(err, errlen, CORE_ETOOBIG, "%s: longer than the caller's buffer",
                             final);
    }
    if (version_out != NULL)
        *version_out = m.version;
    return CORE_OK;
}

/* ---- the manifest reader: a small strict JSON parser ------------------ */

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
            if (p->pos + 1 >= p->len || strchr("\"\\/", p->s[p->pos + 1]) == NULL ||
                p->s[p->pos + 1] == '\0')
                return jfail(p, "unsupported escape in a string");
            p->pos++;
            c = p->s[p->pos];
        }
        *dst++ = c;
        p->pos++;
    }
    return jfail(p, "unterminated string");
}

static int jparse_number(struct jparser *p, struct jval *v)
{
    size_t start = p->pos;
    if (p->s[p->pos] == '-')
        p->pos++;
    size_t digits = 0;
    while (p->pos < p->len && strchr("0123456789.eE+-", p->s[p->pos]) != NULL &&
           p->s[p->pos] != '\0') {
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
            jskip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return jfail(p, "expected a key");
            const char *key;
            size_t klen;
            int rc = jparse_string(p, &key, &klen);
            if (rc != CORE_OK)
                return rc;
            for (size_t i = 0; i < v->n; i++)
                if (strcmp(v->keys[i], key) == 0)
                    return jfail(p, "duplicate key");
            v->keys[v->n] = (char *)key;
            if ((rc = jexpect(p, ':', "expected ':'")) != CORE_OK)
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
    jskip_ws(p);
    if (p->pos >= p->len)
        return jfail(p, "unexpected end of file");
    char c = p->s[p->pos];
    static const struct {
        const char *word;
        enum jtype type;
        bool b;
    } words[] = {{"null", J_NULL, false}, {"true", J_BOOL, true}, {"false", J_BOOL, false}};
    for (size_t i = 0; i < 3; i++) {
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

/* ---- manifest fields ---------------------------------------------------- */

struct mreader {
    const char *file;
    char *err;
    size_t errlen;
};

static int field_fail(const struct mreader *r, const char *key, const char *what)
{
    return core_fail(r->err, r->errlen, CORE_EFORMAT, "%s: \"%s\" %s", r->file, key, what);
}

/* key is the dotted path used in messages. */
static int get_double(const struct mreader *r, const struct jval *v, const char *key,
                      double *out)
{
    if (v == NULL)
        return field_fail(r, key, "is missing");
    if (v->type != J_NUM)
        return field_fail(r, key, "must be a number");
    char buf[64];
    if (v->len >= sizeof(buf))
        return field_fail(r, key, "is not a valid number");
    memcpy(buf, v->text, v->len);
    buf[v->len] = '\0';
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(*out))
        return field_fail(r, key, "is not a valid finite number");
    return CORE_OK;
}

static int get_int(const struct mreader *r, const struct jval *v, const char *key, int64_t min,
                   int64_t *out)
{
    if (v == NULL)
        return field_fail(r, key, "is missing");
    if (v->type != J_NUM || v->len > 20)
        return field_fail(r, key, "must be an integer");
    char buf[32];
    memcpy(buf, v->text, v->len);
    buf[v->len] = '\0';
    char *end;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (*end != '\0' || errno == ERANGE || end == buf)
        return field_fail(r, key, "must be an integer");
    if (x < min)
        return field_fail(r, key, "is out of range");
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

static bool jstr_is(const struct jval *v, const char *s)
{
    return v != NULL && v->type == J_STR && strcmp(v->text, s) == 0;
}

static int read_header_fields(const struct mreader *r, const struct jval *root, struct meta *m)
{
    if (!jstr_is(jget(root, "format"), "embedding-server snapshot"))
        return field_fail(r, "format", "must be \"embedding-server snapshot\"");
    int64_t fv;
    int rc = get_int(r, jget(root, "format_version"), "format_version", 0, &fv);
    if (rc != CORE_OK)
        return rc;
    if (fv != SNAPSHOT_FORMAT_VERSION)
        return core_fail(r->err, r->errlen, CORE_EUNSUPPORTED,
                         "%s: format_version %lld is not supported (this build reads %d)",
                         r->file, (long long)fv, SNAPSHOT_FORMAT_VERSION);
    const struct jval *name = jget(root, "name");
    if (name == NULL || name->type != J_STR || name->len == 0 || name->len > TABLE_NAME_MAX)
        return field_fail(r, "name", "must be a table name");
    memcpy(m->name, name->text, name->len + 1);
    const struct jval *shape = jget(root, "shape");
    if (shape == NULL || shape->type != J_ARR || shape->n != 2)
        return field_fail(r, "shape", "must be [num_embeddings, embedding_dim]");
    rc = get_int(r, &shape->items[0], "shape", 0, &m->rows);
    if (rc == CORE_OK)
        rc = get_int(r, &shape->items[1], "shape", 1, &m->dim);
    if (rc == CORE_OK && !jstr_is(jget(root, "dtype"), "float32"))
        rc = field_fail(r, "dtype", "must be \"float32\"");
    int64_t version = 0;
    if (rc == CORE_OK)
        rc = get_int(r, jget(root, "version"), "version", 0, &version);
    if (rc == CORE_OK)
        rc = get_int(r, jget(root, "step"), "step", 0, &m->step);
    m->version = (uint64_t)version;
    return rc;
}

static int read_settings(const struct mreader *r, const struct jval *root, struct meta *m)
{
    const struct jval *s = jget(root, "settings");
    if (s == NULL || s->type != J_OBJ)
        return field_fail(r, "settings", "must be an object");
    table_settings_init(&m->s);
    const struct jval *v = jget(s, "padding_idx");
    int rc = CORE_OK;
    if (v == NULL)
        return field_fail(r, "settings.padding_idx", "is missing");
    m->s.has_padding = v->type != J_NULL;
    if (m->s.has_padding)
        rc = get_int(r, v, "settings.padding_idx", INT64_MIN, &m->s.padding_idx);
    v = jget(s, "max_norm");
    if (v == NULL)
        return field_fail(r, "settings.max_norm", "is missing");
    m->s.has_max_norm = v->type != J_NULL;
    if (rc == CORE_OK && m->s.has_max_norm)
        rc = get_double(r, v, "settings.max_norm", &m->s.max_norm);
    if (rc == CORE_OK && jstr_is(jget(s, "norm_type"), "inf"))
        m->s.norm_type = INFINITY;
    else if (rc == CORE_OK)
        rc = get_double(r, jget(s, "norm_type"), "settings.norm_type", &m->s.norm_type);
    if (rc == CORE_OK)
        rc = get_bool(r, jget(s, "scale_grad_by_freq"), "settings.scale_grad_by_freq",
                      &m->s.scale_grad_by_freq);
    if (rc == CORE_OK)
        rc = get_bool(r, jget(s, "freeze"), "settings.freeze", &m->s.freeze);
    v = jget(s, "oov");
    if (rc == CORE_OK && jstr_is(v, "error"))
        m->s.oov_id = -1;
    else if (rc == CORE_OK)
        rc = get_int(r, v, "settings.oov", 0, &m->s.oov_id);
    return rc;
}

static int read_optimizer(const struct mreader *r, const struct jval *root, struct meta *m)
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
    optim_config_defaults(&m->cfg, kind);
    int rc = get_double(r, jget(o, "lr"), "optimizer.lr", &m->cfg.lr);
    if (rc == CORE_OK && kind == OPTIM_SPARSE_ADAM) {
        const struct jval *betas = jget(o, "betas");
        if (betas == NULL || betas->type != J_ARR || betas->n != 2)
            return field_fail(r, "optimizer.betas", "must be [beta1, beta2]");
        rc = get_double(r, &betas->items[0], "optimizer.betas[0]", &m->cfg.beta1);
        if (rc == CORE_OK)
            rc = get_double(r, &betas->items[1], "optimizer.betas[1]", &m->cfg.beta2);
        if (rc == CORE_OK)
            rc = get_double(r, jget(o, "eps"), "optimizer.eps", &m->cfg.eps);
    }
    if (rc == CORE_OK && kind == OPTIM_ADAGRAD) {
        rc = get_double(r, jget(o, "lr_decay"), "optimizer.lr_decay", &m->cfg.lr_decay);
        if (rc == CORE_OK)
            rc = get_double(r, jget(o, "initial_accumulator_value"),
                            "optimizer.initial_accumulator_value",
                            &m->cfg.initial_accumulator_value);
        if (rc == CORE_OK)
            rc = get_double(r, jget(o, "eps"), "optimizer.eps", &m->cfg.eps);
    }
    if (rc == CORE_OK && optim_config_check(&m->cfg, NULL, 0) != CORE_OK) {
        char why[160] = "";
        optim_config_check(&m->cfg, why, sizeof(why));
        return core_fail(r->err, r->errlen, CORE_EFORMAT, "%s: %s", r->file, why);
    }
    return rc;
}

/* Which state files the manifest lists; they must belong to its optimizer. */
static int read_state_list(const struct mreader *r, const struct jval *root, struct meta *m)
{
    const struct jval *st = jget(root, "state");
    if (st == NULL || st->type != J_ARR)
        return field_fail(r, "state", "must be an array of file names");
    bool exp_avg = false, exp_avg_sq = false;
    for (size_t i = 0; i < st->n; i++) {
        const struct jval *v = &st->items[i];
        if (jstr_is(v, "exp_avg.npy"))
            exp_avg = true;
        else if (jstr_is(v, "exp_avg_sq.npy"))
            exp_avg_sq = true;
        else if (jstr_is(v, "sum.npy"))
            m->has_sum = true;
        else
            return field_fail(r, "state", "lists an unknown file");
    }
    enum optim_kind kind = m->configured ? m->cfg.kind : OPTIM_SGD;
    if (exp_avg != exp_avg_sq)
        return field_fail(r, "state", "must list both exp_avg.npy and exp_avg_sq.npy");
    m->has_adam_state = exp_avg;
    if ((m->has_adam_state && kind != OPTIM_SPARSE_ADAM) || (m->has_sum && kind != OPTIM_ADAGRAD))
        return field_fail(r, "state", "lists files of another optimizer");
    return CORE_OK;
}

static int read_file_list(const struct mreader *r, const struct jval *root, struct meta *m)
{
    if (!jstr_is(jget(root, "weight"), WEIGHT))
        return field_fail(r, "weight", "must be \"" WEIGHT "\"");
    const struct jval *v = jget(root, "vocab");
    if (v == NULL || (v->type != J_NULL && !jstr_is(v, VOCAB)))
        return field_fail(r, "vocab", "must be \"" VOCAB "\" or null");
    m->has_vocab = v->type != J_NULL;
    return read_state_list(r, root, m);
}

static char *read_small_file(const char *path, size_t max, size_t *len, char *err,
                             size_t errlen, int *rc)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        *rc = core_fail(err, errlen, errno == ENOENT ? CORE_ENOTFOUND : CORE_EIO,
                        "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf != NULL ? fread(buf, 1, max + 1, f) : 0;
    bool bad = buf == NULL || ferror(f);
    fclose(f);
    if (bad || n > max) {
        free(buf);
        *rc = core_fail(err, errlen, bad ? CORE_EIO : CORE_ETOOBIG,
                        bad ? "%s: cannot read" : "%s: larger than the 1 MiB a manifest may be",
                        path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int read_manifest(const char *dir, struct meta *m, char *err, size_t errlen)
{
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, MANIFEST, err, errlen);
    if (rc != CORE_OK)
        return rc;
    size_t len = 0;
    char *text = read_small_file(path, MANIFEST_MAX_BYTES, &len, err, errlen, &rc);
    if (text == NULL)
        return rc;
    if (memchr(text, '\0', len) != NULL) {
        free(text);
        return core_fail(err, errlen, CORE_EFORMAT, "%s: holds a NUL byte", path);
    }
    struct jval root;
    rc = jparse(text, len, path, &root, err, errlen);
    if (rc == CORE_OK) {
        struct mreader r = {path, err, errlen};
        memset(m, 0, sizeof(*m));
        rc = read_header_fields(&r, &root, m);
        if (rc == CORE_OK)
            rc = read_settings(&r, &root, m);
        if (rc == CORE_OK)
            rc = read_optimizer(&r, &root, m);
        if (rc == CORE_OK)
            rc = read_file_list(&r, &root, m);
        jfree(&root);
    }
    free(text);
    return rc;
}

/* ---- loading ------------------------------------------------------------ */

/* Loads dir/file into *mat and checks it has the manifest's shape. */
static int load_npy(const char *dir, const char *file, const struct meta *m, struct matrix *mat,
                    char *err, size_t errlen)
{
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, file, err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct loader_opts o = {.format = LOADER_NPY};
    rc = npy_load(path, &o, mat, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (mat->rows != m->rows || mat->dim != m->dim) {
        rc = core_fail(err, errlen, CORE_EFORMAT,
                       "%s: shape (%lld, %lld) differs from the manifest's (%lld, %lld)", path,
                       (long long)mat->rows, (long long)mat->dim, (long long)m->rows,
                       (long long)m->dim);
        matrix_deinit(mat);
    }
    return rc;
}

static int load_vocab(const char *dir, const struct meta *m, struct vocab **v, char *err,
                      size_t errlen)
{
    *v = NULL;
    if (!m->has_vocab)
        return CORE_OK;
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, VOCAB, err, errlen);
    if (rc == CORE_OK)
        rc = vocab_load_file(v, path, err, errlen);
    if (rc == CORE_OK && vocab_size(*v) != m->rows) {
        rc = core_fail(err, errlen, CORE_EFORMAT, "%s: %lld tokens for %lld rows", path,
                       (long long)vocab_size(*v), (long long)m->rows);
        vocab_free(*v);
        *v = NULL;
    }
    return rc;
}

/* The optimizer state files, all loaded before any is adopted. */
struct state_mats {
    struct matrix exp_avg, exp_avg_sq, sum;
};

static void state_mats_free(struct state_mats *s)
{
    matrix_deinit(&s->exp_avg);
    matrix_deinit(&s->exp_avg_sq);
    matrix_deinit(&s->sum);
}

static int load_state(const char *dir, const struct meta *m, struct state_mats *s, char *err,
                      size_t errlen)
{
    memset(s, 0, sizeof(*s));
    int rc = CORE_OK;
    if (m->has_adam_state) {
        rc = load_npy(dir, "exp_avg.npy", m, &s->exp_avg, err, errlen);
        if (rc == CORE_OK)
            rc = load_npy(dir, "exp_avg_sq.npy", m, &s->exp_avg_sq, err, errlen);
    }
    if (rc == CORE_OK && m->has_sum)
        rc = load_npy(dir, "sum.npy", m, &s->sum, err, errlen);
    if (rc != CORE_OK)
        state_mats_free(s);
    return rc;
}

static void adopt_optimizer(struct table *t, const struct meta *m, struct state_mats *s)
{
    t->optim.configured = m->configured;
    if (m->configured)
        t->optim.cfg = m->cfg;
    matrix_move(&t->optim.exp_avg, &s->exp_avg);
    matrix_move(&t->optim.exp_avg_sq, &s->exp_avg_sq);
    matrix_move(&t->optim.sum, &s->sum);
    t->optim.step = m->step;
    atomic_store(&t->version, m->version);
}

/* Checks every file the manifest lists is there before reading any of them,
 * so a missing optimizer file is reported before a large weight is read. */
static int require_files(const char *dir, const struct meta *m, char *err, size_t errlen)
{
    const char *names[4];
    int n = 0;
    names[n++] = WEIGHT;
    if (m->has_vocab)
        names[n++] = VOCAB;
    if (m->has_adam_state) {
        names[n++] = "exp_avg.npy";
        names[n++] = "exp_avg_sq.npy";
    }
    if (m->has_sum)
        names[n++] = "sum.npy";
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX];
        struct stat st;
        int rc = path_join(path, sizeof(path), dir, names[i], err, errlen);
        if (rc != CORE_OK)
            return rc;
        if (stat(path, &st) != 0)
            return core_fail(err, errlen, errno == ENOENT ? CORE_ENOTFOUND : CORE_EIO,
                             "%s: listed in the manifest but %s", path, strerror(errno));
    }
    return CORE_OK;
}

static int load_once(const char *dir, const char *name, struct table **out, char *err,
                     size_t errlen)
{
    struct meta m;
    int rc = read_manifest(dir, &m, err, errlen);
    if (rc == CORE_OK)
        rc = require_files(dir, &m, err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct matrix w = {0};
    struct vocab *vocab = NULL;
    struct state_mats state = {0};
    rc = load_npy(dir, WEIGHT, &m, &w, err, errlen);
    if (rc == CORE_OK)
        rc = load_vocab(dir, &m, &vocab, err, errlen);
    if (rc == CORE_OK)
        rc = load_state(dir, &m, &state, err, errlen);
    struct table *t = NULL;
    if (rc == CORE_OK) {
        char why[256] = "";
        rc = table_new(&t, name != NULL ? name : m.name, &w, vocab, &m.s, why, sizeof(why));
        if (rc != CORE_OK)
            core_fail(err, errlen, rc, "%s/" MANIFEST ": %s", dir, why);
    }
    if (rc != CORE_OK) {
        matrix_deinit(&w);
        vocab_free(vocab);
        state_mats_free(&state);
        return rc;
    }
    adopt_optimizer(t, &m, &state);
    *out = t;
    return CORE_OK;
}

static bool same_dir(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev;
}

/* Files are opened by path (so messages name them); a snapshot of the same
 * version published meanwhile would swap the directory under us, so the
 * directory's identity is compared before and after and the load repeated
 * if it changed. A published directory's files never change. */
#define LOAD_ATTEMPTS 5

int snapshot_load(const char *dir, const char *name, struct table **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    for (int attempt = 0;; attempt++) {
        struct stat before, after;
        if (stat(dir, &before) != 0)
            return core_fail(err, errlen, CORE_EIO, "%s: %s", dir, strerror(errno));
        int rc = load_once(dir, name, out, err, errlen);
        bool moved = stat(dir, &after) != 0 || !same_dir(&before, &after);
        if (!moved)
            return rc;
        table_free(*out);
        *out = NULL;
        if (attempt + 1 == LOAD_ATTEMPTS)
            return core_fail(err, errlen, CORE_EIO, "%s: replaced while being read, %d times",
                             dir, LOAD_ATTEMPTS);
    }
}

/* ---- finding the newest snapshot ---------------------------------------- */

/* Parses "snapshot-<digits>" exactly; false for anything else (temporary and
 * replaced-away directories start with '.'). */
static bool parse_snapshot_name(const char *s, uint64_t *version)
{
    size_t plen = strlen(PREFIX);
    if (strncmp(s, PREFIX, plen) != 0 || s[plen] == '\0')
        return false;
    uint64_t v = 0;
    for (const char *p = s + plen; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *version = v;
    return true;
}

static bool has_manifest(int dirfd_parent, const char *sub)
{
    char rel[NAME_MAX + sizeof(MANIFEST) + 2];
    snprintf(rel, sizeof(rel), "%s/%s", sub, MANIFEST);
    struct stat st;
    return fstatat(dirfd_parent, rel, &st, 0) == 0 && S_ISREG(st.st_mode);
}

int snapshot_find_latest(const char *data_dir, const char *name, char *path_out,
                         size_t path_len, char *err, size_t errlen)
{
    char table_dir[PATH_MAX];
    int rc = path_join(table_dir, sizeof(table_dir), data_dir, name, err, errlen);
    if (rc != CORE_OK)
        return rc;
    DIR *d = opendir(table_dir);
    if (d == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) /* nothing can be stored there */
            return core_fail(err, errlen, CORE_ENOTFOUND, "%s: no snapshots", table_dir);
        return core_fail(err, errlen, CORE_EIO, "%s: cannot read: %s", table_dir,
                         strerror(errno));
    }
    bool found = false;
    uint64_t best = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t v;
        if (parse_snapshot_name(e->d_name, &v) && (!found || v > best) &&
            has_manifest(dirfd(d), e->d_name)) {
            best = v;
            found = true;
        }
    }
    closedir(d);
    if (!found)
        return core_fail(err, errlen, CORE_ENOTFOUND, "%s: no snapshots", table_dir);
    int n = snprintf(path_out, path_len, "%s/" PREFIX "%" PRIu64, table_dir, best);
    if (n < 0 || (size_t)n >= path_len)
        return core_fail(err, errlen, CORE_ETOOBIG, "%s/" PREFIX "%" PRIu64 " is too long",
                         table_dir, best);
    return CORE_OK;
}

/* ---- pruning ------------------------------------------------------------ */

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

/* Versions of the complete snapshots in table_dir, newest first (malloc'd). */
static int list_versions(const char *table_dir, uint64_t **out, size_t *count, char *err,
                         size_t errlen)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(table_dir);
    if (d == NULL) {
        if (errno == ENOENT)
            return CORE_OK;
        return core_fail(err, errlen, CORE_EIO, "%s: cannot read: %s", table_dir,
                         strerror(errno));
    }
    size_t cap = 0;
    int rc = CORE_OK;
    struct dirent *e;
    while (rc == CORE_OK && (e = readdir(d)) != NULL) {
        uint64_t v;
        if (!parse_snapshot_name(e->d_name, &v) || !has_manifest(dirfd(d), e->d_name))
            continue;
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(*out, cap * sizeof(**out));
            if (grown == NULL) {
                rc = core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", table_dir);
                break;
            }
            *out = grown;
        }
        (*out)[(*count)++] = v;
    }
    closedir(d);
    if (rc == CORE_OK && *count > 1)
        qsort(*out, *count, sizeof(**out), cmp_u64_desc);
    return rc;
}

int snapshot_prune(const char *data_dir, const char *name, size_t keep, size_t *removed,
                   char *err, size_t errlen)
{
    if (removed != NULL)
        *removed = 0;
    if (keep < 1)
        return core_fail(err, errlen, CORE_EINVAL, "snapshot_prune: keep must be >= 1");
    char table_dir[PATH_MAX];
    int rc = path_join(table_dir, sizeof(table_dir), data_dir, name, err, errlen);
    uint64_t *versions = NULL;
    size_t count = 0;
    if (rc == CORE_OK)
        rc = list_versions(table_dir, &versions, &count, err, errlen);
    for (size_t i = keep; rc == CORE_OK && i < count; i++) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof(path), "%s/" PREFIX "%" PRIu64, table_dir, versions[i]);
        if (n < 0 || (size_t)n >= sizeof(path))
            rc = core_fail(err, errlen, CORE_ETOOBIG, "path under %s is too long", table_dir);
        else if (remove_flat_dir(path) != 0)
            rc = core_fail(err, errlen, CORE_EIO, "%s: cannot remove: %s", path,
                           strerror(errno));
        else if (removed != NULL)
            (*removed)++;
    }
    free(versions);
    if (rc == CORE_OK && count > keep)
        rc = fsync_path(table_dir, err, errlen);
    return rc;
}
