/* snapshot.c - a table's snapshot directories (snapshot.h): writing one
 * atomically and loading it back (weights, vocabulary, settings, optimizer
 * config and state, step, version, log seq); naming, listing, pruning and
 * cleaning them. What manifest.json says, and how, is manifest.c's.
 *
 * Copy, then write: under the table's write lock a snapshot only copies the
 * weights and optimizer state into one private buffer (sized and faulted in
 * before the lock is taken, so the copy is a memcpy) with the step, version
 * and log seq; the vocabulary never changes and is borrowed. The files are
 * written and fsynced after the lock is released: writers wait for a
 * memcpy, never for the disk, and readers, who never take the write lock,
 * do not wait at all. The extra memory is that one copy, freed once the
 * files are written.
 *
 * Atomicity: everything goes to a hidden temporary sibling directory that is
 * fsynced and then renamed to its final name (or exchanged with an existing
 * snapshot of the same name by renameat2(RENAME_EXCHANGE), falling back
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
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "loader.h"
#include "manifest.h"
#include "table_internal.h"

#define MANIFEST "manifest.json"
#define PREFIX "snapshot-"
/* Snapshots being written, and (with ".old") ones being replaced. */
#define TMP_PREFIX ".tmp-" PREFIX

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

/* ---- the copy ------------------------------------------------------------ */

/* A table copied out under its write lock: what the manifest records and,
 * for every .npy file, rows x dim floats packed (no row padding) in one
 * private mapping. The vocabulary is borrowed: it never changes and lives
 * as long as the table. */
struct copy {
    struct manifest m;
    float *buf; /* mmap'd, buf_bytes */
    size_t buf_bytes;
    const float *mat[MANIFEST_NFILES]; /* into buf, for the npy files held */
    const struct vocab *vocab;
    uint64_t lock_us; /* time the write lock was held */
    /* keyed tables: keymap_export's arrays, or NULL */
    int64_t *keys, *key_state;
    int64_t capacity;
};

/* The table's matrix behind an npy file of the manifest. */
static const struct matrix *file_matrix(const struct table *t, enum manifest_file f)
{
    switch (f) {
    case MANIFEST_WEIGHT: return &t->w;
    case MANIFEST_EXP_AVG: return &t->optim.exp_avg;
    case MANIFEST_EXP_AVG_SQ: return &t->optim.exp_avg_sq;
    case MANIFEST_SUM: return &t->optim.sum;
    default: return NULL;
    }
}

/* What the manifest records; caller holds the write lock. */
static void describe(const struct table *t, struct manifest *m)
{
    memset(m, 0, sizeof(*m));
    m->format_version = MANIFEST_FORMAT_VERSION;
    strcpy(m->name, t->name);
    m->rows = t->w.rows;
    m->dim = t->w.dim;
    m->settings = t->s;
    m->configured = t->optim.configured;
    m->optimizer = t->optim.cfg;
    m->step = t->optim.step;
    m->version = atomic_load(&t->version);
    m->log_seq = atomic_load(&t->log_seq);
    for (int f = 0; f < MANIFEST_NFILES; f++)
        m->files[f] = manifest_file_is_npy((enum manifest_file)f)
                          ? file_matrix(t, (enum manifest_file)f)->data != NULL
                          : t->vocab != NULL;
}

/* How many npy files (all rows x dim) t holds now; caller holds the lock. */
static size_t npy_files_held(const struct table *t)
{
    size_t n = 0;
    for (int f = 0; f < MANIFEST_NFILES; f++)
        n += manifest_file_is_npy((enum manifest_file)f) &&
             file_matrix(t, (enum manifest_file)f)->data != NULL;
    return n;
}

/* Faulted in now, outside the lock, so that the copy under it is a memcpy
 * and not a page fault per 4 KiB. */
static int copy_alloc(struct copy *c, size_t bytes)
{
    if (bytes == 0)
        return CORE_OK;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED)
        return CORE_ENOMEM;
    c->buf = p;
    c->buf_bytes = bytes;
    return CORE_OK;
}

static void copy_free(struct copy *c)
{
    free(c->keys);
    free(c->key_state);
    c->keys = c->key_state = NULL;
    if (c->buf != NULL)
        munmap(c->buf, c->buf_bytes);
    c->buf = NULL;
    c->buf_bytes = 0;
    memset(c->mat, 0, sizeof(c->mat));
}

/* Copies the state of t into c's buffer, which has room for every npy file
 * t holds; caller holds the write lock. Rows and state change only under
 * it, so plain copies are consistent. */
static void copy_fill(const struct table *t, struct copy *c)
{
    describe(t, &c->m);
    size_t dim = (size_t)t->w.dim, rows = (size_t)t->w.rows;
    float *dst = c->buf;
    for (int i = 0; i < MANIFEST_NFILES; i++) {
        enum manifest_file f = (enum manifest_file)i;
        if (!c->m.files[f] || !manifest_file_is_npy(f))
            continue;
        const struct matrix *m = file_matrix(t, f);
        if ((size_t)m->stride == dim)
            memcpy(dst, m->data, rows * dim * sizeof(float));
        else
            for (size_t r = 0; r < rows; r++)
                memcpy(dst + r * dim, matrix_row(m, (int64_t)r), dim * sizeof(float));
        c->mat[f] = dst;
        dst += rows * dim;
    }
    c->vocab = t->vocab;
    if (c->keys != NULL)
        keymap_export(t->km, c->keys, c->key_state);
}

/* Sizing the buffer means looking at the state under the lock, then
 * allocating without it; if the state grew meanwhile (a first step
 * allocated it, a new optimizer changed it) that is done again, and the
 * last attempt sizes and copies in one hold. */
#define COPY_ATTEMPTS 4

/* Takes the copy: the only part of a snapshot that holds t's write lock. */
static int copy_take(struct table *t, struct copy *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    /* the shape never changes: no lock needed for it */
    size_t per_file = (size_t)t->w.rows * (size_t)t->w.dim * sizeof(float);
    for (int attempt = 1;; attempt++) {
        if (t->km != NULL && c->keys == NULL) { /* a keyed table's keys, sized by its capacity */
            c->capacity = t->w.rows;
            c->keys = malloc((size_t)c->capacity * sizeof(int64_t) + 1);
            c->key_state = malloc(((size_t)c->capacity * 2 + 2) * sizeof(int64_t));
            if (c->keys == NULL || c->key_state == NULL) {
                copy_free(c);
                return core_fail(err, errlen, CORE_ENOMEM, "table %s: no memory for its keys",
                                 t->name);
            }
        }
        bool last = attempt == COPY_ATTEMPTS;
        pthread_mutex_lock(&t->write_lock);
        uint64_t t0 = clock_mono_ns() / 1000u;
        size_t n = npy_files_held(t);
        if (!last) {
            c->lock_us += clock_mono_ns() / 1000u - t0;
            pthread_mutex_unlock(&t->write_lock);
        }
        int rc = copy_alloc(c, n * per_file);
        if (rc == CORE_OK && !last) {
            pthread_mutex_lock(&t->write_lock);
            t0 = clock_mono_ns() / 1000u;
        }
        bool fits = rc == CORE_OK && npy_files_held(t) <= n;
        if (fits)
            copy_fill(t, c);
        if (rc == CORE_OK || last) {
            c->lock_us += clock_mono_ns() / 1000u - t0;
            pthread_mutex_unlock(&t->write_lock);
        }
        if (rc != CORE_OK)
            return core_fail(err, errlen, rc, "table %s: cannot allocate %zu bytes to copy it",
                             t->name, n * per_file);
        if (fits)
            return CORE_OK;
        copy_free(c);
    }
}

/* ---- writing the files ------------------------------------------------------ */

/* The files of one snapshot being written, open until they are fsynced. */
struct out_files {
    const char *dir;
    int fd[MANIFEST_NFILES + 3]; /* and keys.npy, key_state.npy, manifest.json */
    const char *name[MANIFEST_NFILES + 3];
    int n;
    uint64_t bytes; /* sizes of the files synced */
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

static int write_npy(struct out_files *f, const char *name, const float *data, int64_t rows,
                     int64_t dim, char *err, size_t errlen)
{
    int fd;
    int rc = create_file(f, name, &fd, err, errlen);
    if (rc != CORE_OK)
        return rc;
    rc = npy_write_fd(fd, data, rows, dim, dim);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "%s/%s: write failed: %s", f->dir, name,
                         rc == CORE_EIO ? strerror(errno) : core_strerror(rc));
    return CORE_OK;
}

static int write_vocab(struct out_files *f, const struct vocab *v, char *err, size_t errlen)
{
    int fd;
    const char *name = manifest_file_name(MANIFEST_VOCAB);
    int rc = create_file(f, name, &fd, err, errlen);
    if (rc != CORE_OK)
        return rc;
    int dup_fd = dup(fd);
    FILE *s = dup_fd >= 0 ? fdopen(dup_fd, "w") : NULL;
    if (s == NULL) {
        if (dup_fd >= 0)
            close(dup_fd);
        return core_fail(err, errlen, CORE_EIO, "%s/%s: %s", f->dir, name, strerror(errno));
    }
    rc = vocab_write(v, s);
    if (fclose(s) != 0)
        rc = CORE_EIO;
    if (rc != CORE_OK)
        return core_fail(err, errlen, CORE_EIO, "%s/%s: write failed", f->dir, name);
    return CORE_OK;
}

static int write_manifest(struct out_files *f, const struct manifest *m, char *err,
                          size_t errlen)
{
    char *text;
    size_t len;
    int rc = manifest_dump(m, &text, &len);
    if (rc != CORE_OK)
        return core_fail(err, errlen, rc, "%s/" MANIFEST ": %s", f->dir, core_strerror(rc));
    int fd;
    rc = create_file(f, MANIFEST, &fd, err, errlen);
    for (size_t done = 0; rc == CORE_OK && done < len;) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno != EINTR)
            rc = core_fail(err, errlen, CORE_EIO, "%s/" MANIFEST ": write failed: %s", f->dir,
                           strerror(errno));
        else if (w > 0)
            done += (size_t)w;
    }
    free(text);
    return rc;
}

static int write_i64(struct out_files *f, const char *name, const int64_t *data, int64_t rows,
                     int64_t cols, char *err, size_t errlen)
{
    int fd;
    int rc = create_file(f, name, &fd, err, errlen);
    if (rc == CORE_OK && (rc = npy_write_i64_fd(fd, data, rows, cols)) != CORE_OK)
        return core_fail(err, errlen, rc, "%s/%s: write failed: %s", f->dir, name,
                         rc == CORE_EIO ? strerror(errno) : core_strerror(rc));
    return rc;
}

/* A keyed table's keys.npy (int64 [capacity], the key of each row of
 * weight.npy, INT64_MIN for a free row) and key_state.npy (int64
 * [capacity + 1, 2]: each row's place in the write order, -1 when free,
 * and its write second; then the key map's clock and evictions). */
static int write_keys(const struct copy *c, struct out_files *f, char *err, size_t errlen)
{
    if (c->keys == NULL)
        return CORE_OK;
    int rc = write_i64(f, SNAPSHOT_KEYS, c->keys, c->capacity, 0, err, errlen);
    if (rc == CORE_OK)
        rc = write_i64(f, SNAPSHOT_KEY_STATE, c->key_state, c->capacity + 1, 2, err, errlen);
    return rc;
}

/* Every file of the copy, the manifest last. */
static int write_files(const struct copy *c, struct out_files *f, char *err, size_t errlen)
{
    int rc = CORE_OK;
    for (int i = 0; i < MANIFEST_NFILES && rc == CORE_OK; i++) {
        enum manifest_file file = (enum manifest_file)i;
        if (!c->m.files[file])
            continue;
        if (manifest_file_is_npy(file))
            rc = write_npy(f, manifest_file_name(file), c->mat[file], c->m.rows, c->m.dim, err,
                           errlen);
        else
            rc = write_vocab(f, c->vocab, err, errlen);
    }
    if (rc == CORE_OK)
        rc = write_keys(c, f, err, errlen);
    return rc == CORE_OK ? write_manifest(f, &c->m, err, errlen) : rc;
}

static int sync_and_close(struct out_files *f, char *err, size_t errlen)
{
    int rc = CORE_OK;
    for (int i = 0; i < f->n; i++) {
        struct stat st;
        if (rc == CORE_OK && fsync(f->fd[i]) != 0)
            rc = core_fail(err, errlen, CORE_EIO, "%s/%s: fsync: %s", f->dir, f->name[i],
                           strerror(errno));
        if (rc == CORE_OK && fstat(f->fd[i], &st) == 0)
            f->bytes += (uint64_t)st.st_size;
        if (close(f->fd[i]) != 0 && rc == CORE_OK)
            rc = core_fail(err, errlen, CORE_EIO, "%s/%s: close: %s", f->dir, f->name[i],
                           strerror(errno));
    }
    f->n = 0;
    return rc;
}

/* ---- publishing ------------------------------------------------------------ */

/* Moves the finished temporary directory to final, replacing a snapshot of
 * the same seq if there is one. */
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
     * may briefly find no snapshot of this seq, never a partial one */
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

/* Creates a new hidden TMP_PREFIX directory in table_dir. A crashed run
 * with our pid may have left one of the same name: the next number is
 * tried then. */
static int make_tmp_dir(const char *table_dir, char *tmp, size_t len, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 1000; attempt++) {
        int n = snprintf(tmp, len, "%s/" TMP_PREFIX "%ld-%u", table_dir, (long)getpid(),
                         atomic_fetch_add(&tmp_counter, 1));
        if (n < 0 || (size_t)n >= len)
            return core_fail(err, errlen, CORE_ETOOBIG, "path under %s is too long", table_dir);
        if (mkdir(tmp, 0755) == 0)
            return CORE_OK;
        if (errno != EEXIST)
            break;
    }
    return core_fail(err, errlen, CORE_EIO, "%s: cannot create directory: %s", tmp,
                     strerror(errno));
}

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

/* Copies t, then writes the copy into tmp and syncs it, without the lock. */
static int fill_tmp_dir(struct table *t, const char *tmp, struct manifest *m,
                        struct snapshot_info *info, char *err, size_t errlen)
{
    struct copy c;
    int rc = copy_take(t, &c, err, errlen);
    info->lock_us = c.lock_us;
    if (rc != CORE_OK)
        return rc;
    struct out_files f = {.dir = tmp};
    rc = write_files(&c, &f, err, errlen);
    *m = c.m;
    copy_free(&c); /* the page cache holds the bytes now */
    int rc2 = sync_and_close(&f, err, errlen);
    if (rc == CORE_OK)
        rc = rc2;
    info->bytes = f.bytes;
    if (rc == CORE_OK)
        rc = fsync_path(tmp, err, errlen);
    return rc;
}

int snapshot_write(struct table *t, const char *data_dir, char *path_out, size_t path_len,
                   struct snapshot_info *info, char *err, size_t errlen)
{
    struct snapshot_info scratch;
    if (info == NULL)
        info = &scratch;
    memset(info, 0, sizeof(*info));
    uint64_t start = clock_mono_ns() / 1000u;
    char table_dir[PATH_MAX], tmp[PATH_MAX], final[PATH_MAX];
    int rc = prepare_dirs(data_dir, t->name, table_dir, sizeof(table_dir), err, errlen);
    if (rc != CORE_OK)
        return rc;
    rc = make_tmp_dir(table_dir, tmp, sizeof(tmp), err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct manifest m;
    rc = fill_tmp_dir(t, tmp, &m, info, err, errlen);
    if (rc == CORE_OK &&
        snapshot_path(data_dir, t->name, m.log_seq, final, sizeof(final)) != CORE_OK)
        rc = core_fail(err, errlen, CORE_ETOOBIG, "path under %s is too long", table_dir);
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
        int n = snprintf(path_out, path_len, "%s", final);
        if (n < 0 || (size_t)n >= path_len)
            return core_fail(err, errlen, CORE_ETOOBIG, "%s: longer than the caller's buffer",
                             final);
    }
    info->version = m.version;
    info->log_seq = m.log_seq;
    info->total_us = clock_mono_ns() / 1000u - start;
    return CORE_OK;
}

/* ---- loading ------------------------------------------------------------ */

/* Loads dir/file into *mat and checks it has the manifest's shape. */
static int load_npy(const char *dir, enum manifest_file file, const struct manifest *m,
                    struct matrix *mat, char *err, size_t errlen)
{
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, manifest_file_name(file), err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct loader_opts o = {.format = LOADER_NPY};
    rc = npy_load_exact(path, &o, mat, err, errlen);
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

static int load_vocab(const char *dir, const struct manifest *m, struct vocab **v, char *err,
                      size_t errlen)
{
    *v = NULL;
    if (!m->files[MANIFEST_VOCAB])
        return CORE_OK;
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, manifest_file_name(MANIFEST_VOCAB), err, errlen);
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

/* The matrices of a snapshot being loaded, indexed by manifest_file (the
 * vocabulary's slot stays empty); all are read before any is adopted. */
struct loaded {
    struct matrix mat[MANIFEST_NFILES];
    struct vocab *vocab;
};

static void loaded_free(struct loaded *l)
{
    for (int f = 0; f < MANIFEST_NFILES; f++)
        matrix_deinit(&l->mat[f]);
    vocab_free(l->vocab);
    memset(l, 0, sizeof(*l));
}

static int load_files(const char *dir, const struct manifest *m, struct loaded *l, char *err,
                      size_t errlen)
{
    memset(l, 0, sizeof(*l));
    int rc = CORE_OK;
    for (int i = 0; i < MANIFEST_NFILES && rc == CORE_OK; i++) {
        enum manifest_file f = (enum manifest_file)i;
        if (m->files[f] && manifest_file_is_npy(f))
            rc = load_npy(dir, f, m, &l->mat[f], err, errlen);
    }
    if (rc == CORE_OK)
        rc = load_vocab(dir, m, &l->vocab, err, errlen);
    if (rc != CORE_OK)
        loaded_free(l);
    return rc;
}

/* Moves the optimizer state and counters into the new table t. */
static void adopt(struct table *t, const struct manifest *m, struct loaded *l)
{
    t->optim.configured = m->configured;
    if (m->configured)
        t->optim.cfg = m->optimizer;
    matrix_move(&t->optim.exp_avg, &l->mat[MANIFEST_EXP_AVG]);
    matrix_move(&t->optim.exp_avg_sq, &l->mat[MANIFEST_EXP_AVG_SQ]);
    matrix_move(&t->optim.sum, &l->mat[MANIFEST_SUM]);
    t->optim.step = m->step;
    atomic_store(&t->version, m->version);
    atomic_store(&t->log_seq, m->log_seq);
}

/* Checks every file the manifest lists is there before reading any of them,
 * so a missing optimizer file is reported before a large weight is read. */
static int require_files(const char *dir, const struct manifest *m, char *err, size_t errlen)
{
    for (int f = 0; f < MANIFEST_NFILES; f++) {
        if (!m->files[f])
            continue;
        char path[PATH_MAX];
        struct stat st;
        int rc = path_join(path, sizeof(path), dir, manifest_file_name((enum manifest_file)f),
                           err, errlen);
        if (rc != CORE_OK)
            return rc;
        if (stat(path, &st) != 0)
            return core_fail(err, errlen, errno == ENOENT ? CORE_ENOTFOUND : CORE_EIO,
                             "%s: listed in the manifest but %s", path, strerror(errno));
    }
    return CORE_OK;
}

/* A keyed table's keys, when the snapshot has them (write_keys). */
static int load_keys(const char *dir, struct table *t, char *err, size_t errlen)
{
    char path[PATH_MAX], state_path[PATH_MAX];
    struct stat st;
    int rc = path_join(path, sizeof(path), dir, SNAPSHOT_KEYS, err, errlen);
    if (rc == CORE_OK)
        rc = path_join(state_path, sizeof(state_path), dir, SNAPSHOT_KEY_STATE, err, errlen);
    if (rc != CORE_OK || stat(path, &st) != 0)
        return rc; /* a dense table */
    size_t c = (size_t)t->w.rows;
    int64_t *keys = malloc(c * sizeof *keys + 1), *state = malloc((2 * c + 2) * sizeof *state);
    if (keys == NULL || state == NULL)
        rc = core_fail(err, errlen, CORE_ENOMEM, "%s: no memory for %zu keys", path, c);
    if (rc == CORE_OK)
        rc = npy_read_i64_exact(path, t->w.rows, 0, keys, err, errlen);
    if (rc == CORE_OK)
        rc = npy_read_i64_exact(state_path, t->w.rows + 1, 2, state, err, errlen);
    if (rc == CORE_ENOTFOUND)
        rc = core_fail(err, errlen, CORE_EFORMAT, "%s: missing next to %s", state_path, path);
    if (rc == CORE_OK) {
        char why[200] = "";
        rc = table_keyed_attach(t, keys, state, why, sizeof why);
        if (rc != CORE_OK)
            rc = core_fail(err, errlen, rc, "%s: %s", path, why);
    }
    free(keys);
    free(state);
    return rc;
}

static int load_once(const char *dir, const char *name, struct table **out, char *err,
                     size_t errlen)
{
    char path[PATH_MAX];
    struct manifest m;
    int rc = path_join(path, sizeof(path), dir, MANIFEST, err, errlen);
    if (rc == CORE_OK)
        rc = manifest_read(path, &m, err, errlen);
    if (rc == CORE_OK)
        rc = require_files(dir, &m, err, errlen);
    struct loaded l;
    if (rc == CORE_OK)
        rc = load_files(dir, &m, &l, err, errlen);
    if (rc != CORE_OK)
        return rc;
    struct table *t = NULL;
    char why[256] = "";
    rc = table_new(&t, name != NULL ? name : m.name, &l.mat[MANIFEST_WEIGHT], l.vocab, &m.settings,
                   why, sizeof(why));
    if (rc != CORE_OK) {
        loaded_free(&l);
        return core_fail(err, errlen, rc, "%s: %s", path, why);
    }
    l.vocab = NULL; /* the table's now */
    adopt(t, &m, &l);
    if ((rc = load_keys(dir, t, err, errlen)) != CORE_OK) {
        table_free(t);
        return rc;
    }
    *out = t;
    return CORE_OK;
}

static bool same_dir(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev;
}

/* Files are opened by path (so messages name them); a snapshot of the same
 * seq published meanwhile would swap the directory under us, so the
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

/* ---- naming, listing, pruning, cleaning ---------------------------------- */

int snapshot_path(const char *data_dir, const char *name, uint64_t seq, char *path_out,
                  size_t len)
{
    int n = snprintf(path_out, len, "%s/%s/" PREFIX "%" PRIu64, data_dir, name, seq);
    return n >= 0 && (size_t)n < len ? CORE_OK : CORE_ETOOBIG;
}

/* Parses "snapshot-<digits>" exactly; false for anything else (temporary and
 * replaced-away directories start with '.'). */
static bool parse_snapshot_name(const char *s, uint64_t *num)
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
    *num = v;
    return true;
}

/* One complete snapshot directory (it holds a manifest.json) of a table. */
struct found {
    uint64_t num;  /* the number in its name */
    bool legacy;   /* format 1: named by version, written before the log */
};

/* The log seq a recovery from f would replay after. */
static uint64_t found_seq(const struct found *f)
{
    return f->legacy ? 0 : f->num;
}

/* Newest first: by seq, and every format-1 snapshot (named by version, so
 * not comparable with seqs) older than any later one, which was
 * necessarily written after the upgrade. */
static int cmp_newest_first(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    if (x->legacy != y->legacy)
        return x->legacy ? 1 : -1;
    return (x->num < y->num) - (x->num > y->num);
}

/* Looks at table_dir/sub: false when it holds no manifest.json; *legacy when
 * that manifest reads as format 1. A manifest that does not read counts as
 * current: the snapshot is listed and fails when loaded, so a caller falls
 * back to an older one knowingly. */
static bool inspect(const char *table_dir, const char *sub, bool *legacy)
{
    char path[PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof(path), "%s/%s/" MANIFEST, table_dir, sub);
    if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return false;
    struct manifest m;
    *legacy = manifest_read(path, &m, NULL, 0) == CORE_OK && m.format_version == 1;
    return true;
}

/* The complete snapshots in table_dir, newest first (*out malloc'd, NULL
 * when none). A missing table_dir holds none. */
static int scan(const char *table_dir, struct found **out, size_t *count, char *err,
                size_t errlen)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(table_dir);
    if (d == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) /* nothing can be stored there */
            return CORE_OK;
        return core_fail(err, errlen, CORE_EIO, "%s: cannot read: %s", table_dir,
                         strerror(errno));
    }
    size_t cap = 0;
    int rc = CORE_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct found f;
        if (!parse_snapshot_name(e->d_name, &f.num) || !inspect(table_dir, e->d_name, &f.legacy))
            continue;
        if (*count == cap) {
            cap = cap ? cap * 2 : 16;
            struct found *grown = realloc(*out, cap * sizeof(**out));
            if (grown == NULL) {
                rc = core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", table_dir);
                break;
            }
            *out = grown;
        }
        (*out)[(*count)++] = f;
    }
    closedir(d);
    if (rc != CORE_OK) {
        free(*out);
        *out = NULL;
        *count = 0;
    } else if (*count > 1) {
        qsort(*out, *count, sizeof(**out), cmp_newest_first);
    }
    return rc;
}

static int scan_table(const char *data_dir, const char *name, char *table_dir, size_t len,
                      struct found **out, size_t *count, char *err, size_t errlen)
{
    *out = NULL;
    *count = 0;
    int rc = path_join(table_dir, len, data_dir, name, err, errlen);
    return rc == CORE_OK ? scan(table_dir, out, count, err, errlen) : rc;
}

int snapshot_list(const char *data_dir, const char *name, uint64_t **seqs, size_t *n,
                  char *err, size_t errlen)
{
    *seqs = NULL;
    *n = 0;
    char table_dir[PATH_MAX];
    struct found *f;
    size_t count;
    int rc = scan_table(data_dir, name, table_dir, sizeof(table_dir), &f, &count, err, errlen);
    if (rc != CORE_OK || count == 0)
        return rc;
    *seqs = malloc(count * sizeof(**seqs));
    if (*seqs == NULL) {
        free(f);
        return core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory", table_dir);
    }
    for (size_t i = 0; i < count; i++)
        (*seqs)[i] = f[i].num;
    *n = count;
    free(f);
    return CORE_OK;
}

int snapshot_find_latest(const char *data_dir, const char *name, char *path_out,
                         size_t path_len, char *err, size_t errlen)
{
    char table_dir[PATH_MAX];
    struct found *f;
    size_t count;
    int rc = scan_table(data_dir, name, table_dir, sizeof(table_dir), &f, &count, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (count == 0)
        return core_fail(err, errlen, CORE_ENOTFOUND, "%s: no snapshots", table_dir);
    uint64_t num = f[0].num;
    free(f);
    if (snapshot_path(data_dir, name, num, path_out, path_len) != CORE_OK)
        return core_fail(err, errlen, CORE_ETOOBIG, "%s/" PREFIX "%" PRIu64 " is too long",
                         table_dir, num);
    return CORE_OK;
}

int snapshot_load_newest(const char *data_dir, const char *name, struct table **out,
                         char *path_out, size_t path_len, snapshot_skip_fn skip, void *ud,
                         char *err, size_t errlen)
{
    *out = NULL;
    uint64_t *nums;
    size_t count;
    int rc = snapshot_list(data_dir, name, &nums, &count, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (count == 0)
        return core_fail(err, errlen, CORE_ENOTFOUND, "%s/%s: no snapshots", data_dir, name);
    int first_rc = CORE_OK;
    for (size_t i = 0; i < count; i++) {
        char path[PATH_MAX], why[1024] = "";
        rc = snapshot_path(data_dir, name, nums[i], path, sizeof(path));
        if (rc != CORE_OK)
            core_fail(why, sizeof(why), rc, "%s/%s/" PREFIX "%" PRIu64 ": path too long",
                      data_dir, name, nums[i]);
        else
            rc = snapshot_load(path, name, out, why, sizeof(why));
        if (rc == CORE_OK) {
            free(nums);
            if (path_out != NULL && path_len > 0 &&
                (size_t)snprintf(path_out, path_len, "%s", path) >= path_len) {
                table_free(*out);
                *out = NULL;
                return core_fail(err, errlen, CORE_ETOOBIG, "%s: longer than the caller's buffer",
                                 path);
            }
            return CORE_OK;
        }
        if (skip != NULL)
            skip(ud, path, rc, why);
        if (i == 0) {
            /* a snapshot that lists a missing file must not pass for no snapshot */
            first_rc = rc == CORE_ENOTFOUND ? CORE_EFORMAT : rc;
            core_fail(err, errlen, first_rc, "%s", why);
        }
    }
    free(nums);
    return first_rc;
}

int snapshot_prune(const char *data_dir, const char *name, size_t keep, size_t *removed,
                   uint64_t *oldest_kept, char *err, size_t errlen)
{
    if (removed != NULL)
        *removed = 0;
    if (oldest_kept != NULL)
        *oldest_kept = 0;
    if (keep < 1)
        return core_fail(err, errlen, CORE_EINVAL, "snapshot_prune: keep must be >= 1");
    char table_dir[PATH_MAX];
    struct found *f;
    size_t count;
    int rc = scan_table(data_dir, name, table_dir, sizeof(table_dir), &f, &count, err, errlen);
    if (rc != CORE_OK)
        return rc;
    if (oldest_kept != NULL && count > 0)
        *oldest_kept = found_seq(&f[(count < keep ? count : keep) - 1]);
    for (size_t i = keep; rc == CORE_OK && i < count; i++) {
        char path[PATH_MAX];
        if (snapshot_path(data_dir, name, f[i].num, path, sizeof(path)) != CORE_OK)
            rc = core_fail(err, errlen, CORE_ETOOBIG, "path under %s is too long", table_dir);
        else if (remove_flat_dir(path) != 0)
            rc = core_fail(err, errlen, CORE_EIO, "%s: cannot remove: %s", path,
                           strerror(errno));
        else if (removed != NULL)
            (*removed)++;
    }
    free(f);
    if (rc == CORE_OK && count > keep)
        rc = fsync_path(table_dir, err, errlen);
    return rc;
}

int snapshot_clean_tmp(const char *data_dir, const char *name, size_t *removed, char *err,
                       size_t errlen)
{
    if (removed != NULL)
        *removed = 0;
    char table_dir[PATH_MAX];
    int rc = path_join(table_dir, sizeof(table_dir), data_dir, name, err, errlen);
    if (rc != CORE_OK)
        return rc;
    DIR *d = opendir(table_dir);
    if (d == NULL) {
        if (errno == ENOENT || errno == ENOTDIR)
            return CORE_OK;
        return core_fail(err, errlen, CORE_EIO, "%s: cannot read: %s", table_dir,
                         strerror(errno));
    }
    size_t n = 0;
    struct dirent *e;
    while (rc == CORE_OK && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
            continue;
        char path[PATH_MAX];
        rc = path_join(path, sizeof(path), table_dir, e->d_name, err, errlen);
        if (rc == CORE_OK && remove_flat_dir(path) != 0)
            rc = core_fail(err, errlen, CORE_EIO, "%s: cannot remove: %s", path,
                           strerror(errno));
        n += rc == CORE_OK;
    }
    closedir(d);
    if (removed != NULL)
        *removed = n;
    if (rc == CORE_OK && n > 0)
        rc = fsync_path(table_dir, err, errlen);
    return rc;
}
