/* wal.c - the write-ahead log's segments on disk (format in wal.h).
 *
 * Writing. One file descriptor is open at a time, on the segment being
 * appended to. A record goes out with one writev (header, the caller's
 * parts, padding); when that fails the file is cut back to where the record
 * began, so the file only ever holds whole records plus, after a crash, one
 * torn tail. Rotation fdatasyncs the old segment before the new one exists,
 * so a later segment's existence implies every earlier one is complete.
 *
 * Preallocation. An fdatasync after an append that grows the file must
 * also commit the file's new size and blocks (a journal commit on ext4):
 * here that made it 1.4-1.8x (4 KB) and 1.8-2.7x (270 KB) slower than one
 * after overwriting blocks that already hold zeros. So a thread of the log
 * prepares the next segment ahead of time (PREP_NAME, zero-filled to
 * segment_bytes and synced) while the current one fills, and rotation
 * renames it into place and writes its header: records then overwrite
 * zeros. A log that starts in a file that grows (the first segment of a
 * run, one cut back after a failed write, one whose preparation failed)
 * moves into a prepared segment at the first append after one is ready;
 * the first is asked for once the run has written PREP_AFTER, so that a
 * table written now and then keeps no segment of zeros.
 * Whatever goes wrong in preparing only costs that speed: the file is
 * dropped, an early move that fails leaves the record to the current
 * segment, and the next rotation asks again.
 *
 * Power loss. Overwrites of blocks a file holds are not ordered by the file
 * system the way appends are (ext4 commits a growing file's size after its
 * data), so a crash of the machine (not of the process: kill -9 loses
 * nothing of the page cache) can keep a later unsynced page and lose an
 * earlier one. Replay then finds a bad record with a valid one after it:
 * damage, and the table does not load until --repair-log cuts there. Only
 * unsynced records are involved (a sync covers all before it), so the cut
 * drops no acknowledged write in that case.
 *
 * Locks. The appender owns the current segment; wal_sync holds sync_lock
 * around its fdatasync, and rotation swaps the descriptor under the same
 * lock, so no descriptor is closed while another thread syncs it. seg_lock
 * guards the list of finished segments that wal_remove_below trims. The
 * getters read atomics.
 *
 * Reading. Each segment is mapped whole and walked in memory: no syscall per
 * record, hardware CRC32C where the build has SSE4.2. The first record that
 * does not check ends the walk: when every byte from there to the end of
 * the file is zero, it is the unused part of a prepared segment (left as it
 * is: rotation and wal_close cut it, a crash leaves it); otherwise a search
 * of the rest of the file (and the existence of later segments) tells a
 * torn tail from damage before it.
 */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef __SSE4_2__
#include <nmmintrin.h>
#endif

#include "error.h"
#include "wal_internal.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

#define NAME_PREFIX "wal-"
#define NAME_SUFFIX ".log"
#define NAME_DIGITS 20
#define NAME_LEN (sizeof(NAME_PREFIX) - 1 + NAME_DIGITS + sizeof(NAME_SUFFIX) - 1)
#define IOV_STACK 16
#define PREP_NAME "wal-next.tmp" /* the next segment, being prepared */
#define PREP_CHUNK ((size_t)1 << 20)
#define PREP_AFTER ((uint64_t)1 << 20) /* a run's first segment is prepared for past this */

/* ---- CRC32C ------------------------------------------------------------ */

#define CRC32C_POLY 0x82F63B78u /* Castagnoli, bit-reflected */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* Slicing-by-8: eight table lookups per 8 bytes. */
uint32_t wal_crc32c_portable(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_table_init);
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (len >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

static uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

#ifdef __SSE4_2__
/* One crc32 instruction has a latency of three cycles and a throughput of
 * one, so long buffers run as three interleaved streams of HW_BLOCK bytes,
 * joined by shifting the first two over the bytes that follow them: feeding
 * k zero bytes into the raw register is linear, a table per byte of it. */
#define HW_BLOCK 1024

static uint32_t shift_table[4][256]; /* the register after HW_BLOCK zero bytes */
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

static void shift_table_init(void)
{
    uint32_t basis[32];
    for (int i = 0; i < 32; i++) {
        uint64_t r = (uint32_t)1 << i;
        for (int k = 0; k < HW_BLOCK / 8; k++)
            r = _mm_crc32_u64(r, 0);
        basis[i] = (uint32_t)r;
    }
    for (int j = 0; j < 4; j++)
        for (uint32_t v = 0; v < 256; v++) {
            uint32_t x = 0;
            for (int b = 0; b < 8; b++)
                if (v & (1u << b))
                    x ^= basis[8 * j + b];
            shift_table[j][v] = x;
        }
}

static uint32_t shift_block(uint32_t r)
{
    return shift_table[0][r & 0xff] ^ shift_table[1][(r >> 8) & 0xff] ^
           shift_table[2][(r >> 16) & 0xff] ^ shift_table[3][r >> 24];
}

static uint32_t crc32c_sse42(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        c = _mm_crc32_u8(c, *p++);
        len--;
    }
    if (len >= 3 * HW_BLOCK)
        pthread_once(&shift_once, shift_table_init);
    while (len >= 3 * HW_BLOCK) {
        uint64_t a = c, b = 0, d = 0;
        for (size_t i = 0; i < HW_BLOCK; i += 8) {
            a = _mm_crc32_u64(a, load64(p + i));
            b = _mm_crc32_u64(b, load64(p + HW_BLOCK + i));
            d = _mm_crc32_u64(d, load64(p + 2 * HW_BLOCK + i));
        }
        c = shift_block(shift_block((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)d;
        p += 3 * HW_BLOCK;
        len -= 3 * HW_BLOCK;
    }
    uint64_t c64 = c;
    while (len >= 8) {
        c64 = _mm_crc32_u64(c64, load64(p));
        p += 8;
        len -= 8;
    }
    c = (uint32_t)c64;
    while (len-- > 0)
        c = _mm_crc32_u8(c, *p++);
    return ~c;
}
#endif

uint32_t wal_crc32c(uint32_t crc, const void *data, size_t len)
{
#ifdef __SSE4_2__
    return crc32c_sse42(crc, data, len);
#else
    return wal_crc32c_portable(crc, data, len);
#endif
}

/* ---- little-endian fields ---------------------------------------------- */

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* ---- segment names and lists ------------------------------------------- */

struct seg {
    uint64_t first; /* seq of its first record, from the name */
    uint64_t size;  /* bytes */
};

static void segment_name(char out[NAME_LEN + 1], uint64_t first)
{
    snprintf(out, NAME_LEN + 1, NAME_PREFIX "%020" PRIu64 NAME_SUFFIX, first);
}

/* True when name is exactly wal-<20 digits>.log; *first gets the number. */
static bool parse_segment_name(const char *name, uint64_t *first)
{
    if (strlen(name) != NAME_LEN || strncmp(name, NAME_PREFIX, sizeof(NAME_PREFIX) - 1) != 0 ||
        strcmp(name + NAME_LEN - (sizeof(NAME_SUFFIX) - 1), NAME_SUFFIX) != 0)
        return false;
    uint64_t v = 0;
    for (const char *p = name + sizeof(NAME_PREFIX) - 1; p < name + sizeof(NAME_PREFIX) - 1 + NAME_DIGITS;
         p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *first = v;
    return v >= 1;
}

static int seg_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct seg *)a)->first, y = ((const struct seg *)b)->first;
    return x < y ? -1 : x > y;
}

/* Lists the segments in the directory open as dirfd (named dir in errors),
 * sorted by first seq, sizes from fstatat. Caller frees *out. */
static int list_segments(int dirfd, const char *dir, struct seg **out, size_t *n, char *err,
                         size_t errlen)
{
    *out = NULL;
    *n = 0;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return core_fail(err, errlen, CORE_EIO, "%s: cannot list: %s", dir, strerror(e));
    }
    rewinddir(d);
    struct seg *v = NULL;
    size_t len = 0, cap = 0;
    int rc = CORE_OK;
    struct dirent *e;
    while (rc == CORE_OK && (e = readdir(d)) != NULL) {
        uint64_t first;
        if (!parse_segment_name(e->d_name, &first))
            continue;
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, 0) != 0) {
            rc = core_fail(err, errlen, CORE_EIO, "%s/%s: cannot stat: %s", dir, e->d_name,
                           strerror(errno));
            break;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct seg *nv = realloc(v, ncap * sizeof(*nv));
            if (nv == NULL) {
                rc = CORE_ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[len].first = first;
        v[len].size = (uint64_t)st.st_size;
        len++;
    }
    closedir(d);
    if (rc != CORE_OK) {
        free(v);
        return rc;
    }
    if (len > 1)
        qsort(v, len, sizeof(*v), seg_cmp);
    *out = v;
    *n = len;
    return CORE_OK;
}

/* ---- directories ------------------------------------------------------- */

static int fsync_dir_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = CORE_OK;
    if (fsync(fd) != 0)
        rc = core_fail(err, errlen, CORE_EIO, "%s: fsync: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/* Creates path when missing and fsyncs its parent so the new entry lasts. */
static int make_dir(char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0755) != 0) {
        if (errno == EEXIST)
            return CORE_OK;
        return core_fail(err, errlen, CORE_EIO, "%s: cannot create directory: %s", path,
                         strerror(errno));
    }
    char *slash = strrchr(path, '/');
    if (slash == NULL)
        return fsync_dir_path(".", err, errlen);
    if (slash == path)
        return fsync_dir_path("/", err, errlen);
    *slash = '\0';
    int rc = fsync_dir_path(path, err, errlen);
    *slash = '/';
    return rc;
}

/* mkdir -p, each created directory made durable. */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof(path))
        return core_fail(err, errlen, CORE_EINVAL, "log directory \"%s\" is empty or too long", dir);
    memcpy(path, dir, n + 1);
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    for (size_t i = 1; i < n; i++) {
        if (path[i] != '/' || path[i - 1] == '/')
            continue;
        path[i] = '\0';
        int rc = make_dir(path, err, errlen);
        path[i] = '/';
        if (rc != CORE_OK)
            return rc;
    }
    return make_dir(path, err, errlen);
}

/* ---- writing ----------------------------------------------------------- */

struct wal {
    char dir[PATH_MAX];
    int dirfd;
    uint64_t segment_bytes;
    /* The segment being appended to. The appender thread owns these; fd and
     * name also serve wal_sync, so they change only under sync_lock. */
    int fd;
    char name[NAME_LEN + 1];
    uint64_t size;      /* where its records end */
    uint64_t file_size; /* its length: more than size in a prepared segment */
    pthread_mutex_t sync_lock; /* held during fdatasync and while fd is swapped */
    /* Finished segments, oldest first, and the current one's first seq:
     * what wal_remove_below may delete. */
    pthread_mutex_t seg_lock;
    struct seg *old;
    size_t nold, capold;
    uint64_t cur_first;
    _Atomic uint64_t next_seq;
    _Atomic uint64_t synced_seq; /* every record below this seq is durable */
    _Atomic uint64_t bytes; /* the segments' lengths: what the log takes on disk */
    _Atomic bool broken;
    /* Preallocation (see the top). prep_mu guards the state; the preparer
     * thread owns the file while PREP_WORKING, the appender once READY. */
    bool cur_prepared; /* the current segment was prepared: appends overwrite zeros */
    bool prep_asked;   /* a next segment was asked for in this run */
    pthread_mutex_t prep_mu;
    pthread_cond_t prep_cv;
    enum { PREP_IDLE, PREP_WANTED, PREP_WORKING, PREP_READY } prep_state;
    bool prep_stop;
    bool prep_thread_started;
    int prep_fd; /* PREP_NAME, open, while PREP_READY */
    pthread_t prep_thread;
};

static void advance_synced(struct wal *w, uint64_t seq)
{
    uint64_t cur = atomic_load(&w->synced_seq);
    while (cur < seq && !atomic_compare_exchange_weak(&w->synced_seq, &cur, seq))
        ;
}

/* Writes every byte of iov[0..cnt), which it consumes, looping on partial
 * writes. Returns 0 or an errno value. */
static int write_all(int fd, struct iovec *iov, int cnt)
{
    for (;;) {
        while (cnt > 0 && iov->iov_len == 0) {
            iov++;
            cnt--;
        }
        if (cnt == 0)
            return 0;
        ssize_t r = writev(fd, iov, cnt < IOV_MAX ? cnt : IOV_MAX);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return EIO; /* a regular file that takes nothing: no progress possible */
        size_t left = (size_t)r;
        while (left > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (left > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
}

/* Removes a segment that could not be set up; if even that fails, the stray
 * file would confuse a later replay, so the log turns broken. */
static void discard_segment(struct wal *w, int fd, const char *name)
{
    close(fd);
    if (unlinkat(w->dirfd, name, 0) != 0 && errno != ENOENT)
        atomic_store(&w->broken, true);
}

/* Creates the segment for records from first on: header written and
 * fdatasync'ed, directory fsynced. A leftover of an earlier attempt that
 * holds no record (24 bytes or fewer) is replaced. */
static int create_segment(struct wal *w, uint64_t first, int *fd_out, char name[NAME_LEN + 1],
                          char *err, size_t errlen)
{
    segment_name(name, first);
    int fd = openat(w->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) {
        struct stat st;
        if (fstatat(w->dirfd, name, &st, 0) == 0 && S_ISREG(st.st_mode) &&
            st.st_size <= (off_t)WAL_SEGMENT_HEADER)
            fd = openat(w->dirfd, name, O_WRONLY | O_TRUNC | O_CLOEXEC);
        else
            errno = EEXIST;
    }
    if (fd < 0)
        return core_fail(err, errlen, CORE_EIO, "%s/%s: cannot create: %s", w->dir, name,
                         strerror(errno));
    unsigned char h[WAL_SEGMENT_HEADER] = {0};
    memcpy(h, WAL_MAGIC, 8);
    put64(h + 8, first);
    put32(h + 16, wal_crc32c(0, h, 16));
    struct iovec iov = {h, sizeof(h)};
    int e = write_all(fd, &iov, 1);
    const char *what = "write";
    if (e == 0 && fdatasync(fd) != 0) {
        e = errno;
        what = "fdatasync";
    }
    if (e == 0 && fsync(w->dirfd) != 0) {
        e = errno;
        what = "fsync of the directory";
    }
    if (e != 0) {
        discard_segment(w, fd, name);
        if (strcmp(what, "write") != 0)
            atomic_store(&w->broken, true); /* a failed sync is not retried */
        return core_fail(err, errlen, CORE_EIO, "%s/%s: %s: %s", w->dir, name, what,
                         strerror(e));
    }
    *fd_out = fd;
    return CORE_OK;
}

/* Room for one more finished segment, so rotation cannot fail on memory
 * after its new file exists. */
static int reserve_old(struct wal *w)
{
    pthread_mutex_lock(&w->seg_lock);
    int rc = CORE_OK;
    if (w->nold == w->capold) {
        size_t ncap = w->capold ? w->capold * 2 : 16;
        struct seg *v = realloc(w->old, ncap * sizeof(*v));
        if (v == NULL) {
            rc = CORE_ENOMEM;
        } else {
            w->old = v;
            w->capold = ncap;
        }
    }
    pthread_mutex_unlock(&w->seg_lock);
    return rc;
}

/* ---- preallocation ----------------------------------------------------- */

static const unsigned char prep_zeros[PREP_CHUNK];

/* Writes PREP_NAME: segment_bytes of zeros, synced. Returns its descriptor
 * or -1 (the file removed). Preparer thread, without prep_mu. */
static int prepare_file(struct wal *w)
{
    int fd = openat(w->dirfd, PREP_NAME, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    bool ok = true;
    for (uint64_t off = 0; ok && off < w->segment_bytes; off += PREP_CHUNK) {
        size_t n = w->segment_bytes - off < PREP_CHUNK ? (size_t)(w->segment_bytes - off)
                                                        : PREP_CHUNK;
        pthread_mutex_lock(&w->prep_mu);
        bool stop = w->prep_stop;
        pthread_mutex_unlock(&w->prep_mu);
        ok = !stop && pwrite(fd, prep_zeros, n, (off_t)off) == (ssize_t)n;
        /* written out a chunk at a time: 64 MB of zeros queued at once held
         * a record's fdatasync behind them for 25-43 ms here, 1 MB at a
         * time for at most 3-6 ms. Waiting reports (and clears) a writeback
         * error, which the fdatasync below would then not see: a failure
         * drops the file, unless the call itself is unsupported here. */
        if (ok && sync_file_range(fd, (off_t)off, (off_t)n,
                                  SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                      SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            ok = errno == EINVAL || errno == ENOSYS || errno == ESPIPE;
    }
    if (ok && fdatasync(fd) == 0) {
        pthread_mutex_lock(&w->prep_mu);
        bool stop = w->prep_stop;
        pthread_mutex_unlock(&w->prep_mu);
        if (!stop)
            return fd;
    }
    close(fd);
    unlinkat(w->dirfd, PREP_NAME, 0);
    return -1;
}

static void *preparer_main(void *arg)
{
    struct wal *w = arg;
    pthread_mutex_lock(&w->prep_mu);
    for (;;) {
        while (!w->prep_stop && w->prep_state != PREP_WANTED)
            pthread_cond_wait(&w->prep_cv, &w->prep_mu);
        if (w->prep_stop)
            break;
        w->prep_state = PREP_WORKING;
        pthread_mutex_unlock(&w->prep_mu);
        int fd = prepare_file(w);
        pthread_mutex_lock(&w->prep_mu);
        if (fd >= 0 && !w->prep_stop) {
            w->prep_fd = fd;
            w->prep_state = PREP_READY;
        } else {
            if (fd >= 0) { /* stopping meanwhile: the file goes */
                close(fd);
                unlinkat(w->dirfd, PREP_NAME, 0);
            }
            w->prep_state = PREP_IDLE; /* asked again at the next rotation */
        }
    }
    pthread_mutex_unlock(&w->prep_mu);
    return NULL;
}

/* Asks the preparer for a next segment (when it is not making or holding
 * one already). */
static void want_prepared(struct wal *w)
{
    w->prep_asked = true;
    if (!w->prep_thread_started)
        return;
    pthread_mutex_lock(&w->prep_mu);
    if (w->prep_state == PREP_IDLE) {
        w->prep_state = PREP_WANTED;
        pthread_cond_signal(&w->prep_cv);
    }
    pthread_mutex_unlock(&w->prep_mu);
}

static bool prepared_ready(struct wal *w)
{
    pthread_mutex_lock(&w->prep_mu);
    bool ready = w->prep_state == PREP_READY;
    pthread_mutex_unlock(&w->prep_mu);
    return ready;
}

/* Takes the prepared file, or -1 when there is none. */
static int take_prepared(struct wal *w)
{
    pthread_mutex_lock(&w->prep_mu);
    int fd = -1;
    if (w->prep_state == PREP_READY) {
        fd = w->prep_fd;
        w->prep_fd = -1;
        w->prep_state = PREP_IDLE;
    }
    pthread_mutex_unlock(&w->prep_mu);
    return fd;
}

/* Makes the prepared file fd the segment for records from first on: named,
 * the directory fsynced, its header written (made durable by the first
 * sync of a record in it; a crash before leaves a segment whose header
 * does not check and that holds nothing: a torn tail). On failure the file
 * is gone (or the log broken) and CORE_EIO returned. */
static int install_prepared(struct wal *w, int fd, uint64_t first, char name[NAME_LEN + 1],
                            char *err, size_t errlen)
{
    segment_name(name, first);
    struct stat st;
    if (fstatat(w->dirfd, name, &st, 0) == 0) {
        /* a leftover that holds no record (as create_segment replaces) */
        if (!S_ISREG(st.st_mode) || st.st_size > (off_t)WAL_SEGMENT_HEADER) {
            close(fd);
            unlinkat(w->dirfd, PREP_NAME, 0);
            return core_fail(err, errlen, CORE_EIO, "%s/%s: cannot create: %s", w->dir, name,
                             strerror(EEXIST));
        }
    }
    if (renameat(w->dirfd, PREP_NAME, w->dirfd, name) != 0) {
        int e = errno;
        close(fd);
        unlinkat(w->dirfd, PREP_NAME, 0);
        return core_fail(err, errlen, CORE_EIO, "%s/%s: cannot rename %s to it: %s", w->dir,
                         name, PREP_NAME, strerror(e));
    }
    unsigned char h[WAL_SEGMENT_HEADER] = {0};
    memcpy(h, WAL_MAGIC, 8);
    put64(h + 8, first);
    put32(h + 16, wal_crc32c(0, h, 16));
    const char *what = "fsync of the directory";
    int e = fsync(w->dirfd) != 0 ? errno : 0;
    if (e == 0) {
        what = "write";
        ssize_t r = pwrite(fd, h, sizeof(h), 0);
        e = r == (ssize_t)sizeof(h) ? 0 : r < 0 ? errno : EIO;
    }
    if (e == 0 && lseek(fd, (off_t)WAL_SEGMENT_HEADER, SEEK_SET) != (off_t)WAL_SEGMENT_HEADER) {
        e = errno;
        what = "lseek";
    }
    if (e != 0) {
        discard_segment(w, fd, name);
        if (strcmp(what, "fsync of the directory") == 0)
            atomic_store(&w->broken, true); /* a failed sync is not retried */
        return core_fail(err, errlen, CORE_EIO, "%s/%s: %s: %s", w->dir, name, what,
                         strerror(e));
    }
    return CORE_OK;
}

/* Finishes the current segment (durable first) and starts the next one:
 * the prepared file when there is one, else a new file that grows. */
static int rotate(struct wal *w, char *err, size_t errlen)
{
    uint64_t seq = atomic_load(&w->next_seq);
    if (reserve_old(w) != CORE_OK)
        return core_fail(err, errlen, CORE_ENOMEM, "%s: out of memory rotating the log", w->dir);
    if (fdatasync(w->fd) != 0) {
        atomic_store(&w->broken, true);
        return core_fail(err, errlen, CORE_EIO, "%s/%s: fdatasync before rotation: %s", w->dir,
                         w->name, strerror(errno));
    }
    advance_synced(w, seq);
    char name[NAME_LEN + 1];
    int fd = take_prepared(w);
    bool prepared = fd >= 0;
    int rc = prepared ? install_prepared(w, fd, seq, name, err, errlen)
                      : create_segment(w, seq, &fd, name, err, errlen);
    want_prepared(w);
    if (rc != CORE_OK)
        return rc;

    /* the old segment's unused zeros go (not synced: harmless if back) */
    if (w->file_size > w->size && ftruncate(w->fd, (off_t)w->size) == 0) {
        atomic_fetch_sub(&w->bytes, w->file_size - w->size);
        w->file_size = w->size;
    }
    pthread_mutex_lock(&w->seg_lock);
    w->old[w->nold].first = w->cur_first;
    w->old[w->nold].size = w->file_size;
    w->nold++;
    w->cur_first = seq;
    pthread_mutex_unlock(&w->seg_lock);

    pthread_mutex_lock(&w->sync_lock);
    int old_fd = w->fd;
    w->fd = fd;
    memcpy(w->name, name, sizeof(w->name));
    pthread_mutex_unlock(&w->sync_lock);
    close(old_fd);

    w->size = WAL_SEGMENT_HEADER;
    w->file_size = prepared ? w->segment_bytes : WAL_SEGMENT_HEADER;
    w->cur_prepared = prepared;
    atomic_fetch_add(&w->bytes, w->file_size);
    return CORE_OK;
}

/* Reads the segments earlier runs left (sizes for wal_bytes, first seqs for
 * wal_remove_below) and refuses any that already holds next_seq. */
static int load_old_segments(struct wal *w, uint64_t next_seq, char *err, size_t errlen)
{
    struct seg *v;
    size_t n;
    int rc = list_segments(w->dirfd, w->dir, &v, &n, err, errlen);
    if (rc != CORE_OK)
        return rc;
    size_t keep = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        bool empty = v[i].size <= WAL_SEGMENT_HEADER;
        if (v[i].first > next_seq || (v[i].first == next_seq && !empty)) {
            char name[NAME_LEN + 1];
            segment_name(name, v[i].first);
            rc = core_fail(err, errlen, CORE_EINVAL,
                           "%s/%s holds records from seq %" PRIu64 " on, but the log was opened "
                           "to append from seq %" PRIu64 ": replay it first",
                           w->dir, name, v[i].first, next_seq);
            free(v);
            return rc;
        }
        if (v[i].first == next_seq)
            continue; /* an empty leftover: create_segment replaces it */
        v[keep++] = v[i];
        bytes += v[i].size;
    }
    w->old = v;
    w->nold = keep;
    w->capold = n;
    atomic_store(&w->bytes, bytes);
    return CORE_OK;
}

int wal_open(struct wal **out, const char *dir, uint64_t next_seq, const struct wal_options *o,
             char *err, size_t errlen)
{
    if (out == NULL || dir == NULL || next_seq == 0)
        return core_fail(err, errlen, CORE_EINVAL, "wal_open: no directory or next_seq 0");
    *out = NULL;
    if (strlen(dir) + NAME_LEN + 2 > PATH_MAX)
        return core_fail(err, errlen, CORE_EINVAL, "log directory %s: path too long", dir);
    struct wal *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return CORE_ENOMEM;
    strcpy(w->dir, dir);
    w->dirfd = -1;
    w->fd = -1;
    w->segment_bytes = o != NULL && o->segment_bytes > 0 ? o->segment_bytes
                                                         : WAL_SEGMENT_BYTES_DEFAULT;
    bool prepare = o == NULL || !o->no_prepare;
    pthread_mutex_init(&w->sync_lock, NULL);
    pthread_mutex_init(&w->seg_lock, NULL);
    pthread_mutex_init(&w->prep_mu, NULL);
    pthread_cond_init(&w->prep_cv, NULL);
    w->prep_fd = -1;

    int rc = make_dirs(dir, err, errlen);
    if (rc != CORE_OK)
        goto out_free;
    w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) {
        rc = core_fail(err, errlen, CORE_EIO, "%s: cannot open: %s", dir, strerror(errno));
        goto out_free;
    }
    rc = load_old_segments(w, next_seq, err, errlen);
    if (rc == CORE_OK)
        rc = reserve_old(w);
    if (rc == CORE_OK)
        rc = create_segment(w, next_seq, &w->fd, w->name, err, errlen);
    if (rc != CORE_OK)
        goto out_free;
    w->size = w->file_size = WAL_SEGMENT_HEADER;
    w->cur_first = next_seq;
    atomic_fetch_add(&w->bytes, WAL_SEGMENT_HEADER);
    atomic_store(&w->next_seq, next_seq);
    atomic_store(&w->synced_seq, next_seq);
    /* a leftover of an earlier run's preparer is never a segment */
    unlinkat(w->dirfd, PREP_NAME, 0);
    /* asked for once the run has written PREP_AFTER (a table written now
     * and then keeps no segment of zeros) or at the first rotation */
    w->prep_state = PREP_IDLE;
    w->prep_thread_started =
        prepare && pthread_create(&w->prep_thread, NULL, preparer_main, w) == 0;
    *out = w;
    return CORE_OK;

out_free:
    wal_close(w);
    return rc;
}

void wal_close(struct wal *w)
{
    if (w == NULL)
        return;
    if (w->prep_thread_started) {
        pthread_mutex_lock(&w->prep_mu);
        w->prep_stop = true;
        pthread_cond_signal(&w->prep_cv);
        pthread_mutex_unlock(&w->prep_mu);
        pthread_join(w->prep_thread, NULL);
    }
    if (w->prep_fd >= 0) {
        close(w->prep_fd);
        unlinkat(w->dirfd, PREP_NAME, 0);
    }
    if (w->fd >= 0 && w->file_size > w->size && !atomic_load(&w->broken))
        (void)ftruncate(w->fd, (off_t)w->size); /* unused zeros; replay would cut them too */
    if (w->fd >= 0)
        close(w->fd);
    if (w->dirfd >= 0)
        close(w->dirfd);
    pthread_mutex_destroy(&w->sync_lock);
    pthread_mutex_destroy(&w->seg_lock);
    pthread_mutex_destroy(&w->prep_mu);
    pthread_cond_destroy(&w->prep_cv);
    free(w->old);
    free(w);
}

/* After a failed write: back to where the record began, or broken. */
static int cut_back(struct wal *w, int e, char *err, size_t errlen)
{
    off_t start = (off_t)w->size;
    w->cur_prepared = false; /* cut: its zeros are gone */
    if (ftruncate(w->fd, start) == 0 && lseek(w->fd, start, SEEK_SET) == start) {
        atomic_fetch_sub(&w->bytes, w->file_size - w->size);
        w->file_size = w->size;
        return core_fail(err, errlen, CORE_EIO, "%s/%s: write at offset %" PRIu64 ": %s", w->dir,
                         w->name, w->size, strerror(e));
    }
    int e2 = errno;
    atomic_store(&w->broken, true);
    return core_fail(err, errlen, CORE_EIO,
                     "%s/%s: write at offset %" PRIu64 ": %s; cutting the file back failed "
                     "too (%s): the log is broken",
                     w->dir, w->name, w->size, strerror(e), strerror(e2));
}

int wal_append(struct wal *w, uint32_t kind, const struct iovec *parts, int nparts,
               uint64_t *seq_out, char *err, size_t errlen)
{
    if (w == NULL || kind == 0 || nparts < 0 || nparts > INT_MAX - 2 ||
        (nparts > 0 && parts == NULL))
        return core_fail(err, errlen, CORE_EINVAL, "wal_append: kind 0 or bad parts");
    uint64_t len = 0;
    for (int i = 0; i < nparts; i++) {
        if (parts[i].iov_len > WAL_RECORD_MAX - len)
            return core_fail(err, errlen, CORE_ETOOBIG,
                             "a log record of more than %" PRIu64 " bytes", WAL_RECORD_MAX);
        len += parts[i].iov_len;
    }
    if (atomic_load(&w->broken))
        return core_fail(err, errlen, CORE_EIO,
                         "%s: the log is broken (a sync failed or a write could not be cut back)",
                         w->dir);
    uint64_t rec = wal_record_bytes(len);
    /* rotate when full, or early into a prepared segment from one that
     * grows (never before a segment's first record: names are first seqs) */
    bool full = w->size + rec > w->segment_bytes;
    if (w->size > WAL_SEGMENT_HEADER && (full || (!w->cur_prepared && prepared_ready(w)))) {
        int rc = rotate(w, err, errlen);
        /* an early move that failed (the prepared file could not be put in
         * place) leaves the record to the current segment, which can take
         * it; a failed sync broke the log */
        if (rc != CORE_OK && (full || atomic_load(&w->broken)))
            return rc;
    }

    uint64_t seq = atomic_load_explicit(&w->next_seq, memory_order_relaxed);
    unsigned char h[WAL_RECORD_HEADER];
    put32(h, (uint32_t)len);
    put64(h + 8, seq);
    put32(h + 16, kind);
    put32(h + 20, 0);
    uint32_t crc = wal_crc32c(0, h + 8, 16);
    for (int i = 0; i < nparts; i++)
        crc = wal_crc32c(crc, parts[i].iov_base, parts[i].iov_len);
    put32(h + 4, crc);

    static const unsigned char zeros[8];
    struct iovec stack[IOV_STACK];
    size_t cnt = (size_t)nparts + 2;
    struct iovec *iov = cnt <= IOV_STACK ? stack : malloc(cnt * sizeof(*iov));
    if (iov == NULL)
        return CORE_ENOMEM;
    iov[0] = (struct iovec){h, sizeof(h)};
    if (nparts > 0)
        memcpy(iov + 1, parts, (size_t)nparts * sizeof(*iov));
    iov[cnt - 1] = (struct iovec){(void *)zeros, rec - WAL_RECORD_HEADER - len};
    int e = write_all(w->fd, iov, (int)cnt);
    if (iov != stack)
        free(iov);
    if (e != 0)
        return cut_back(w, e, err, errlen);

    w->size += rec;
    if (w->size > w->file_size) {
        atomic_fetch_add(&w->bytes, w->size - w->file_size);
        w->file_size = w->size;
    }
    uint64_t after = w->segment_bytes / 4 < PREP_AFTER ? w->segment_bytes / 4 : PREP_AFTER;
    if (!w->prep_asked && w->size >= after)
        want_prepared(w);
    atomic_store_explicit(&w->next_seq, seq + 1, memory_order_release);
    if (seq_out != NULL)
        *seq_out = seq;
    return CORE_OK;
}

int wal_sync(struct wal *w, char *err, size_t errlen)
{
    if (w == NULL)
        return core_fail(err, errlen, CORE_EINVAL, "wal_sync: no log");
    pthread_mutex_lock(&w->sync_lock);
    uint64_t target = atomic_load_explicit(&w->next_seq, memory_order_acquire);
    int rc = CORE_OK;
    if (atomic_load(&w->broken)) {
        rc = core_fail(err, errlen, CORE_EIO,
                       "%s: the log is broken (a sync failed or a write could not be cut back)",
                       w->dir);
    } else if (atomic_load(&w->synced_seq) < target) {
        if (fdatasync(w->fd) == 0) {
            advance_synced(w, target);
        } else {
            atomic_store(&w->broken, true);
            rc = core_fail(err, errlen, CORE_EIO, "%s/%s: fdatasync: %s; the log is broken",
                           w->dir, w->name, strerror(errno));
        }
    }
    pthread_mutex_unlock(&w->sync_lock);
    return rc;
}

void wal_mark(const struct wal *w, struct wal_mark *m)
{
    m->segment_first = w->cur_first;
    m->size = w->size;
    m->seq = atomic_load_explicit(&w->next_seq, memory_order_relaxed);
}

int wal_rewind(struct wal *w, const struct wal_mark *m, char *err, size_t errlen)
{
    if (m->segment_first != w->cur_first || m->size > w->size || m->size < WAL_SEGMENT_HEADER)
        return core_fail(err, errlen, CORE_EINVAL,
                         "%s: the records to cut are not all in the current segment", w->dir);
    if (m->size == w->size)
        return CORE_OK;
    pthread_mutex_lock(&w->sync_lock);
    off_t at = (off_t)m->size;
    w->cur_prepared = false;
    bool cut = ftruncate(w->fd, at) == 0 && lseek(w->fd, at, SEEK_SET) == at;
    int e = errno;
    pthread_mutex_unlock(&w->sync_lock);
    if (!cut)
        return core_fail(err, errlen, CORE_EIO, "%s/%s: cutting back to offset %" PRIu64 ": %s",
                         w->dir, w->name, m->size, strerror(e));
    atomic_fetch_sub(&w->bytes, w->file_size - m->size);
    w->size = w->file_size = m->size;
    atomic_store_explicit(&w->next_seq, m->seq, memory_order_release);
    return CORE_OK;
}

uint64_t wal_next_seq(const struct wal *w)
{
    return atomic_load(&w->next_seq);
}

bool wal_broken(const struct wal *w)
{
    return atomic_load(&w->broken);
}

uint64_t wal_bytes(const struct wal *w)
{
    return atomic_load(&w->bytes);
}

int wal_remove_below(struct wal *w, uint64_t seq, size_t *removed, char *err, size_t errlen)
{
    if (removed != NULL)
        *removed = 0;
    if (w == NULL)
        return core_fail(err, errlen, CORE_EINVAL, "wal_remove_below: no log");
    int rc = CORE_OK;
    size_t k = 0;
    pthread_mutex_lock(&w->seg_lock);
    while (k < w->nold) {
        /* the records of old[k] run up to the next segment's first seq - 1 */
        uint64_t next_first = k + 1 < w->nold ? w->old[k + 1].first : w->cur_first;
        if (next_first - 1 > seq)
            break;
        char name[NAME_LEN + 1];
        segment_name(name, w->old[k].first);
        if (unlinkat(w->dirfd, name, 0) != 0 && errno != ENOENT) {
            rc = core_fail(err, errlen, CORE_EIO, "%s/%s: cannot delete: %s", w->dir, name,
                           strerror(errno));
            break;
        }
        atomic_fetch_sub(&w->bytes, w->old[k].size);
        k++;
    }
    memmove(w->old, w->old + k, (w->nold - k) * sizeof(*w->old));
    w->nold -= k;
    pthread_mutex_unlock(&w->seg_lock);
    if (k > 0 && fsync(w->dirfd) != 0 && rc == CORE_OK)
        rc = core_fail(err, errlen, CORE_EIO, "%s: fsync: %s", w->dir, strerror(errno));
    if (removed != NULL)
        *removed = k;
    return rc;
}

/* ---- reading ----------------------------------------------------------- */

/* A segment's bytes in memory: mapped, or read when the file system cannot
 * map. */
struct view {
    const unsigned char *p;
    uint64_t size;
    bool mapped;
};

static int view_open(struct view *v, int fd, uint64_t size, const char *path, char *err,
                     size_t errlen)
{
    v->p = NULL;
    v->size = size;
    v->mapped = false;
    if (size == 0)
        return CORE_OK;
    if (size > SIZE_MAX)
        return core_fail(err, errlen, CORE_ETOOBIG, "%s: too big to read", path);
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m != MAP_FAILED) {
        madvise(m, (size_t)size, MADV_SEQUENTIAL);
        madvise(m, (size_t)size, MADV_WILLNEED);
        v->p = m;
        v->mapped = true;
        return CORE_OK;
    }
    unsigned char *buf = malloc((size_t)size);
    if (buf == NULL)
        return CORE_ENOMEM;
    uint64_t got = 0;
    while (got < size) {
        ssize_t r = pread(fd, buf + got, (size_t)(size - got), (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            return core_fail(err, errlen, CORE_EIO, "%s: read: %s", path, strerror(e));
        }
        got += (uint64_t)r;
    }
    v->p = buf;
    return CORE_OK;
}

static void view_close(struct view *v)
{
    if (v->mapped)
        munmap((void *)v->p, (size_t)v->size);
    else
        free((void *)v->p);
    v->p = NULL;
}

/* Why the record at p (avail bytes to the end of the file) does not check
 * as record seq, or NULL when it does; *len and *kind get its fields. */
static const char *check_record(const unsigned char *p, uint64_t avail, uint64_t seq,
                                uint32_t *len, uint32_t *kind)
{
    if (avail < WAL_RECORD_HEADER)
        return "a record header cut short";
    *len = get32(p);
    *kind = get32(p + 16);
    if (get64(p + 8) != seq)
        return "a record out of sequence";
    if (*kind == 0)
        return "a record of kind 0";
    if (get32(p + 20) != 0)
        return "a nonzero reserved field";
    uint64_t rec = wal_record_bytes(*len);
    if (*len > WAL_RECORD_MAX || rec > avail)
        return "a record running past the end of the file";
    uint32_t crc = wal_crc32c(wal_crc32c(0, p + 8, 16), p + WAL_RECORD_HEADER, *len);
    if (crc != get32(p + 4))
        return "a CRC mismatch";
    for (uint64_t i = WAL_RECORD_HEADER + *len; i < rec; i++)
        if (p[i] != 0)
            return "nonzero padding";
    return NULL;
}

/* True when some record that checks, with a seq of min_seq or later, starts
 * at an 8-aligned offset in [from, size): the mark of damage, since a torn
 * append leaves nothing valid behind it. */
static bool valid_record_after(const struct view *v, uint64_t from, uint64_t min_seq)
{
    if (from > v->size)
        return false;
    /* a later record's seq is at most one per record header further on */
    uint64_t max_seq = min_seq + (v->size - from) / WAL_RECORD_HEADER + 1;
    for (uint64_t off = from; off + WAL_RECORD_HEADER <= v->size; off += 8) {
        uint64_t seq = get64(v->p + off + 8);
        uint32_t len, kind;
        if (seq >= min_seq && seq <= max_seq &&
            check_record(v->p + off, v->size - off, seq, &len, &kind) == NULL)
            return true;
    }
    return false;
}

/* The length of v without its trailing zero bytes. */
static uint64_t used_size(const struct view *v)
{
    uint64_t n = v->size;
    while (n > 0 && (n & 7) != 0 && v->p[n - 1] == 0)
        n--;
    while (n >= 8 && (n & 7) == 0 && load64(v->p + n - 8) == 0)
        n -= 8;
    while (n > 0 && v->p[n - 1] == 0)
        n--;
    return n;
}

static const char *check_segment_header(const struct view *v, uint64_t first)
{
    if (v->size < WAL_SEGMENT_HEADER)
        return "a segment header cut short";
    if (memcmp(v->p, WAL_MAGIC, 8) != 0)
        return "a segment header without the magic " WAL_MAGIC;
    if (get32(v->p + 16) != wal_crc32c(0, v->p, 16))
        return "a segment header CRC mismatch";
    if (get32(v->p + 20) != 0)
        return "a nonzero reserved field in the segment header";
    if (get64(v->p + 8) != first)
        return "a segment header whose seq disagrees with the file name";
    return NULL;
}

/* One replay's state across segments. */
struct replay {
    const char *dir;
    int dirfd;
    uint64_t after_seq;
    enum wal_repair mode;
    wal_record_fn fn;
    void *ud;
    struct wal_report *r;
    struct seg *segs;
    size_t nsegs;
    bool started;      /* a segment header has been read */
    uint64_t expected; /* seq the next record must have */
    bool stop;         /* a bad spot ended the log */
    char *err;
    size_t errlen;
};

/* Makes the log end at offset off of segment i: truncated there (removed
 * when off is inside its header), fsynced; with later, every later segment
 * deleted too. */
static int cut_log(struct replay *rp, size_t i, uint64_t off, bool later)
{
    char name[NAME_LEN + 1];
    segment_name(name, rp->segs[i].first);
    bool unlinked = false;
    if (off < WAL_SEGMENT_HEADER) {
        if (unlinkat(rp->dirfd, name, 0) != 0)
            return core_fail(rp->err, rp->errlen, CORE_EIO, "%s/%s: cannot delete: %s", rp->dir,
                             name, strerror(errno));
        unlinked = true;
    } else {
        int fd = openat(rp->dirfd, name, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return core_fail(rp->err, rp->errlen, CORE_EIO, "%s/%s: cannot open: %s", rp->dir,
                             name, strerror(errno));
        int rc = CORE_OK;
        if (ftruncate(fd, (off_t)off) != 0)
            rc = core_fail(rp->err, rp->errlen, CORE_EIO, "%s/%s: cannot truncate: %s", rp->dir,
                           name, strerror(errno));
        else if (fsync(fd) != 0)
            rc = core_fail(rp->err, rp->errlen, CORE_EIO, "%s/%s: fsync: %s", rp->dir, name,
                           strerror(errno));
        close(fd);
        if (rc != CORE_OK)
            return rc;
    }
    for (size_t j = i + 1; later && j < rp->nsegs; j++) {
        segment_name(name, rp->segs[j].first);
        if (unlinkat(rp->dirfd, name, 0) != 0 && errno != ENOENT)
            return core_fail(rp->err, rp->errlen, CORE_EIO, "%s/%s: cannot delete: %s", rp->dir,
                             name, strerror(errno));
        unlinked = true;
    }
    if (unlinked && fsync(rp->dirfd) != 0)
        return core_fail(rp->err, rp->errlen, CORE_EIO, "%s: fsync: %s", rp->dir,
                         strerror(errno));
    return CORE_OK;
}

/* The log stops being valid at offset off of segment i: report it, then cut
 * (torn tail, or damage under WAL_REPAIR) or refuse. */
static int bad_spot(struct replay *rp, size_t i, uint64_t size, uint64_t off, const char *why,
                    bool torn)
{
    struct wal_report *r = rp->r;
    char name[NAME_LEN + 1];
    segment_name(name, rp->segs[i].first);
    r->torn = torn;
    r->damaged = !torn;
    snprintf(r->bad_file, sizeof(r->bad_file), "%s/%s", rp->dir, name);
    r->bad_offset = off;
    r->dropped_bytes = size - off;
    r->dropped_segments = off < WAL_SEGMENT_HEADER ? 1 : 0;
    uint64_t later = 0;
    for (size_t j = i + 1; j < rp->nsegs; j++) {
        r->dropped_bytes += rp->segs[j].size;
        later++;
    }
    r->dropped_segments += later;
    rp->stop = true;
    if (torn)
        return rp->mode == WAL_CHECK ? CORE_OK : cut_log(rp, i, off, false);
    if (rp->mode == WAL_REPAIR)
        return cut_log(rp, i, off, true);
    return core_fail(rp->err, rp->errlen, CORE_EFORMAT,
                     "%s: %s at offset %" PRIu64 " (expected seq %" PRIu64 "), before the end of "
                     "the log: %" PRIu64 " bytes from there on, with %" PRIu64
                     " later segments, cannot be trusted",
                     r->bad_file, why, off, rp->expected, r->dropped_bytes, later);
}

/* Checks that segment i continues the seqs of those before it. A gap whose
 * missing records are all at or below after_seq is harmless: the caller's
 * snapshot holds them (a log reopened past its end leaves one). */
static int check_continuity(struct replay *rp, size_t i, char *why, size_t whylen, bool *bad)
{
    uint64_t first = rp->segs[i].first;
    *bad = false;
    if (!rp->started) {
        rp->started = true;
        rp->expected = first;
        if (first - 1 > rp->after_seq)
            return core_fail(rp->err, rp->errlen, CORE_EFORMAT,
                             "%s: records %" PRIu64 "..%" PRIu64 " are missing: the log starts "
                             "at seq %" PRIu64,
                             rp->dir, rp->after_seq + 1, first - 1, first);
        return CORE_OK;
    }
    if (first == rp->expected || (first > rp->expected && first - 1 <= rp->after_seq)) {
        rp->expected = first;
        return CORE_OK;
    }
    *bad = true;
    if (first > rp->expected)
        snprintf(why, whylen, "a segment after a gap (records %" PRIu64 "..%" PRIu64 " are missing)",
                 rp->expected, first - 1);
    else
        snprintf(why, whylen, "a segment overlapping the one before (it starts at seq %" PRIu64 ")",
                 first);
    return CORE_OK;
}

static int walk_records(struct replay *rp, size_t i, const struct view *v)
{
    struct wal_report *r = rp->r;
    bool last = i + 1 == rp->nsegs;
    uint64_t off = WAL_SEGMENT_HEADER, used = used_size(v);
    while (off < v->size) {
        uint32_t len, kind;
        const char *why = check_record(v->p + off, v->size - off, rp->expected, &len, &kind);
        if (why != NULL && off >= used) {
            /* the zeros a prepared segment did not use. A last segment that
             * holds no record (a crash between its rename and its first
             * record) is cut to its header: a segment of nothing but a
             * header is what wal_open replaces */
            if (off == WAL_SEGMENT_HEADER && last && rp->mode != WAL_CHECK && v->size > off)
                return cut_log(rp, i, off, false);
            return CORE_OK;
        }
        if (why != NULL) {
            bool torn = last && !valid_record_after(v, off + 8, rp->expected);
            return bad_spot(rp, i, v->size, off, why, torn);
        }
        uint64_t seq = rp->expected++;
        uint64_t rec = wal_record_bytes(len);
        if (r->records++ == 0)
            r->first_seq = seq;
        r->last_seq = seq;
        r->bytes += rec;
        if (seq > rp->after_seq) {
            r->replayed++;
            if (rp->fn != NULL) {
                int rc = rp->fn(rp->ud, seq, kind, v->p + off + WAL_RECORD_HEADER, len);
                if (rc != 0) {
                    rp->stop = true;
                    return rc;
                }
            }
        }
        off += rec;
    }
    return CORE_OK;
}

static int replay_segment(struct replay *rp, size_t i)
{
    char name[NAME_LEN + 1], path[PATH_MAX + NAME_LEN + 2];
    segment_name(name, rp->segs[i].first);
    snprintf(path, sizeof(path), "%s/%s", rp->dir, name);
    int fd = openat(rp->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return core_fail(rp->err, rp->errlen, CORE_EIO, "%s: cannot open: %s", path,
                         strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return core_fail(rp->err, rp->errlen, CORE_EIO, "%s: cannot stat: %s", path, strerror(e));
    }
    rp->segs[i].size = (uint64_t)st.st_size;
    struct view v;
    int rc = view_open(&v, fd, rp->segs[i].size, path, rp->err, rp->errlen);
    close(fd);
    if (rc != CORE_OK)
        return rc;

    bool last = i + 1 == rp->nsegs;
    const char *why = check_segment_header(&v, rp->segs[i].first);
    if (why != NULL) {
        bool torn = last && !valid_record_after(&v, WAL_SEGMENT_HEADER, rp->segs[i].first);
        if (!rp->started)
            rp->expected = rp->segs[i].first;
        rc = bad_spot(rp, i, v.size, 0, why, torn);
    } else {
        char gap[160];
        bool bad;
        rc = check_continuity(rp, i, gap, sizeof(gap), &bad);
        if (rc == CORE_OK && bad)
            rc = bad_spot(rp, i, v.size, 0, gap, false);
        else if (rc == CORE_OK)
            rc = walk_records(rp, i, &v);
        else
            rp->stop = true;
    }
    view_close(&v);
    return rc;
}

int wal_replay(const char *dir, uint64_t after_seq, enum wal_repair mode, wal_record_fn fn,
               void *ud, struct wal_report *report, char *err, size_t errlen)
{
    struct wal_report local;
    if (report == NULL)
        report = &local;
    memset(report, 0, sizeof(*report));
    if (dir == NULL || (mode != WAL_RECOVER && mode != WAL_REPAIR && mode != WAL_CHECK))
        return core_fail(err, errlen, CORE_EINVAL, "wal_replay: no directory or unknown mode");
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 && errno == ENOENT)
        return CORE_OK;
    if (dirfd < 0)
        return core_fail(err, errlen, CORE_EIO, "%s: cannot open: %s", dir, strerror(errno));
    struct replay rp = {
        .dir = dir,
        .dirfd = dirfd,
        .after_seq = after_seq,
        .mode = mode,
        .fn = fn,
        .ud = ud,
        .r = report,
        .err = err,
        .errlen = errlen,
    };
    int rc = list_segments(dirfd, dir, &rp.segs, &rp.nsegs, err, errlen);
    for (size_t i = 0; rc == CORE_OK && !rp.stop && i < rp.nsegs; i++)
        rc = replay_segment(&rp, i);
    free(rp.segs);
    close(dirfd);
    return rc;
}
