/* faultfs.c - an LD_PRELOAD shim that makes writes and syncs fail on chosen
 * files, so black-box tests can watch the server meet a full or failing disk:
 *
 *   LD_PRELOAD=build/tests/libfaultfs.so FAULTFS_PATH=/wal/ ... embedding-server
 *
 * Environment, read once when the shim loads:
 *
 *   FAULTFS_PATH=<substring>       only descriptors opened on a path that
 *                                  contains it are affected: the path as
 *                                  given, or, when relative, joined to the
 *                                  cwd or to the openat directory. Unset or
 *                                  empty: the shim changes nothing.
 *   FAULTFS_WRITE_FAIL_AFTER=N     the first N write/pwrite/writev/pwritev
 *                                  calls on affected descriptors succeed,
 *                                  every later one fails. Unset: none fails.
 *   FAULTFS_SYNC_FAIL_AFTER=N      the same for fsync/fdatasync (a directory
 *                                  opened on a matching path counts too).
 *   FAULTFS_RANGE_FAIL_AFTER=N     the same for sync_file_range alone, which
 *                                  reports a writeback error (and clears it,
 *                                  so a later fdatasync succeeds): fdatasync
 *                                  is left alone unless the line above says.
 *   FAULTFS_ERRNO=EIO|ENOSPC|EFBIG the errno of a failed call (or a number);
 *                                  default EIO.
 *   FAULTFS_TRIGGER=<file>         nothing fails and nothing is counted until
 *                                  this file exists (checked on each affected
 *                                  call until seen; then faults stay armed),
 *                                  so a test can let the server start
 *                                  normally and then touch the file.
 *
 * The counts are process-wide over all affected descriptors and all threads
 * (atomics). A failing call does nothing and returns -1 with errno set. A
 * descriptor stays affected while it refers to the file it was opened on
 * (checked with fstat), so numbers libc reuses are left alone.
 * Intercepted: open, open64, openat, openat64, creat, creat64 and their
 * _FORTIFY_SOURCE forms (__open_2...), close, dup, dup2, dup3 (a copy is
 * affected when the original is), write, pwrite, pwrite64, writev, pwritev,
 * pwritev64, pwritev2, fsync, fdatasync, sync_file_range. Not seen: what libc does
 * internally (fopen, stdio's writes), fcntl(F_DUPFD), mmap.
 */
#undef _FORTIFY_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536

#define EXPORT __attribute__((visibility("default")))

/* ---- configuration ----------------------------------------------------- */

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char match[PATH_MAX];
static bool active;
static bool write_limited, sync_limited, range_limited;
static uint64_t write_limit, sync_limit, range_limit;
static int fault_errno = EIO;
static char trigger[PATH_MAX];

/* Affected descriptors, with the file each was opened on: a number that
 * libc reuses behind the shim's back (fclose, socket, accept...) is no
 * longer the same file and is left alone. */
static _Atomic unsigned char tracked[MAX_FDS];
static _Atomic uint64_t tracked_dev[MAX_FDS], tracked_ino[MAX_FDS];
static _Atomic uint64_t writes, syncs, ranges;
static _Atomic bool armed;

/* The next definition of each intercepted function, found at load time. */
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_creat)(const char *, mode_t);
static int (*real_creat64)(const char *, mode_t);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_sync_file_range)(int, off64_t, off64_t, unsigned int);

static const struct {
    const char *name;
    int value;
} errnos[] = {
    {"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EFBIG", EFBIG}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS},
};

static bool parse_count(const char *var, uint64_t *out)
{
    const char *s = getenv(var);
    if (s == NULL || *s == '\0')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        fprintf(stderr, "faultfs: ignoring %s=%s: not a count\n", var, s);
        return false;
    }
    *out = v;
    return true;
}

static void parse_errno(void)
{
    const char *s = getenv("FAULTFS_ERRNO");
    if (s == NULL || *s == '\0')
        return;
    for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++) {
        if (strcmp(s, errnos[i].name) == 0) {
            fault_errno = errnos[i].value;
            return;
        }
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (*end == '\0' && v > 0 && v < 4096)
        fault_errno = (int)v;
    else
        fprintf(stderr, "faultfs: ignoring FAULTFS_ERRNO=%s, using EIO\n", s);
}

/* through memcpy: ISO C has no cast from an object pointer to a function's */
#define RESOLVE(name)                                                                          \
    do {                                                                                       \
        void *sym = dlsym(RTLD_NEXT, #name);                                                   \
        memcpy(&real_##name, &sym, sizeof(sym));                                               \
    } while (0)

static void init(void)
{
    RESOLVE(open);
    RESOLVE(open64);
    RESOLVE(openat);
    RESOLVE(openat64);
    RESOLVE(creat);
    RESOLVE(creat64);
    RESOLVE(close);
    RESOLVE(dup);
    RESOLVE(dup2);
    RESOLVE(dup3);
    RESOLVE(write);
    RESOLVE(pwrite);
    RESOLVE(pwrite64);
    RESOLVE(writev);
    RESOLVE(pwritev);
    RESOLVE(pwritev64);
    RESOLVE(pwritev2);
    RESOLVE(fsync);
    RESOLVE(fdatasync);
    RESOLVE(sync_file_range);

    const char *p = getenv("FAULTFS_PATH");
    if (p != NULL && *p != '\0' && strlen(p) < sizeof(match)) {
        strcpy(match, p);
        active = true;
    }
    write_limited = parse_count("FAULTFS_WRITE_FAIL_AFTER", &write_limit);
    sync_limited = parse_count("FAULTFS_SYNC_FAIL_AFTER", &sync_limit);
    range_limited = parse_count("FAULTFS_RANGE_FAIL_AFTER", &range_limit);
    parse_errno();
    const char *t = getenv("FAULTFS_TRIGGER");
    if (t != NULL && *t != '\0' && strlen(t) < sizeof(trigger))
        strcpy(trigger, t);
    else
        atomic_store(&armed, true);
}

__attribute__((constructor)) static void faultfs_load(void)
{
    pthread_once(&once, init);
}

static void ensure_init(void)
{
    pthread_once(&once, init);
}

/* ---- which descriptors, and when ------------------------------------- */

static bool path_matches(int dirfd, const char *path)
{
    if (!active || path == NULL)
        return false;
    if (strstr(path, match) != NULL)
        return true;
    if (path[0] == '/')
        return false;
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
        if (getcwd(base, sizeof(base)) == NULL)
            return false;
    } else {
        char link[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof(base) - 1);
        if (n < 0)
            return false;
        base[n] = '\0';
    }
    char full[2 * PATH_MAX + 2];
    snprintf(full, sizeof(full), "%s/%s", base, path);
    return strstr(full, match) != NULL;
}

static void set_tracked(int fd, bool on)
{
    struct stat st;
    if (on && fstat(fd, &st) != 0)
        on = false;
    if (on) {
        atomic_store(&tracked_dev[fd], (uint64_t)st.st_dev);
        atomic_store(&tracked_ino[fd], (uint64_t)st.st_ino);
    }
    atomic_store(&tracked[fd], on ? 1 : 0);
}

/* Remembers (or forgets) fd after an open; keeps errno. */
static int track(int fd, int dirfd, const char *path)
{
    if (fd >= 0 && fd < MAX_FDS) {
        int e = errno;
        set_tracked(fd, path_matches(dirfd, path));
        errno = e;
    }
    return fd;
}

/* True when fd is affected and still the file it was opened on. */
static bool is_tracked(int fd)
{
    if (fd < 0 || fd >= MAX_FDS || !atomic_load(&tracked[fd]))
        return false;
    struct stat st;
    return fstat(fd, &st) == 0 && (uint64_t)st.st_dev == atomic_load(&tracked_dev[fd]) &&
           (uint64_t)st.st_ino == atomic_load(&tracked_ino[fd]);
}

static bool is_armed(void)
{
    if (atomic_load(&armed))
        return true;
    if (access(trigger, F_OK) != 0)
        return false;
    atomic_store(&armed, true);
    return true;
}

/* True when this call on fd must fail (and sets errno). */
static bool inject(int fd, bool limited, uint64_t limit, _Atomic uint64_t *count)
{
    ensure_init();
    if (!limited)
        return false;
    int e = errno;
    bool on = is_tracked(fd) && is_armed();
    errno = e;
    if (!on || atomic_fetch_add(count, 1) < limit)
        return false;
    errno = fault_errno;
    return true;
}

static bool write_fails(int fd)
{
    return inject(fd, write_limited, write_limit, &writes);
}

static bool sync_fails(int fd)
{
    return inject(fd, sync_limited, sync_limit, &syncs);
}

/* ---- the interposed functions ----------------------------------------- */

static bool takes_mode(int flags)
{
    return (flags & O_CREAT) != 0 || (flags & O_TMPFILE) == O_TMPFILE;
}

#define MODE_ARG(flags, mode)                                                                  \
    do {                                                                                       \
        if (takes_mode(flags)) {                                                               \
            va_list ap;                                                                        \
            va_start(ap, flags);                                                               \
            mode = (mode_t)va_arg(ap, int);                                                    \
            va_end(ap);                                                                        \
        }                                                                                      \
    } while (0)

EXPORT int open(const char *path, int flags, ...)
{
    ensure_init();
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return track(real_open(path, flags, mode), AT_FDCWD, path);
}

EXPORT int open64(const char *path, int flags, ...)
{
    ensure_init();
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return track(real_open64(path, flags, mode), AT_FDCWD, path);
}

EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    ensure_init();
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return track(real_openat(dirfd, path, flags, mode), dirfd, path);
}

EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    ensure_init();
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return track(real_openat64(dirfd, path, flags, mode), dirfd, path);
}

/* the checked forms _FORTIFY_SOURCE calls when the flags are not constant */
EXPORT int __open_2(const char *path, int flags);
EXPORT int __open64_2(const char *path, int flags);
EXPORT int __openat_2(int dirfd, const char *path, int flags);
EXPORT int __openat64_2(int dirfd, const char *path, int flags);

EXPORT int __open_2(const char *path, int flags)
{
    ensure_init();
    return track(real_open(path, flags), AT_FDCWD, path);
}

EXPORT int __open64_2(const char *path, int flags)
{
    ensure_init();
    return track(real_open64(path, flags), AT_FDCWD, path);
}

EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    ensure_init();
    return track(real_openat(dirfd, path, flags), dirfd, path);
}

EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    ensure_init();
    return track(real_openat64(dirfd, path, flags), dirfd, path);
}

EXPORT int creat(const char *path, mode_t mode)
{
    ensure_init();
    return track(real_creat(path, mode), AT_FDCWD, path);
}

EXPORT int creat64(const char *path, mode_t mode)
{
    ensure_init();
    return track(real_creat64(path, mode), AT_FDCWD, path);
}

EXPORT int close(int fd)
{
    ensure_init();
    if (fd >= 0 && fd < MAX_FDS)
        atomic_store(&tracked[fd], 0);
    return real_close(fd);
}

/* The copy newfd (when the call worked) is affected as oldfd is. */
static int track_dup(int newfd, int oldfd)
{
    if (newfd >= 0 && newfd < MAX_FDS) {
        int e = errno;
        set_tracked(newfd, is_tracked(oldfd));
        errno = e;
    }
    return newfd;
}

EXPORT int dup(int fd)
{
    ensure_init();
    return track_dup(real_dup(fd), fd);
}

EXPORT int dup2(int oldfd, int newfd)
{
    ensure_init();
    return track_dup(real_dup2(oldfd, newfd), oldfd);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    ensure_init();
    return track_dup(real_dup3(oldfd, newfd, flags), oldfd);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    if (write_fails(fd))
        return -1;
    return real_write(fd, buf, n);
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    if (write_fails(fd))
        return -1;
    return real_pwrite(fd, buf, n, off);
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
    if (write_fails(fd))
        return -1;
    return real_pwrite64(fd, buf, n, off);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (write_fails(fd))
        return -1;
    return real_writev(fd, iov, cnt);
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    if (write_fails(fd))
        return -1;
    return real_pwritev(fd, iov, cnt, off);
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
    if (write_fails(fd))
        return -1;
    return real_pwritev64(fd, iov, cnt, off);
}

EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
    if (write_fails(fd))
        return -1;
    return real_pwritev2(fd, iov, cnt, off, flags);
}

EXPORT int fsync(int fd)
{
    if (sync_fails(fd))
        return -1;
    return real_fsync(fd);
}

EXPORT int fdatasync(int fd)
{
    if (sync_fails(fd))
        return -1;
    return real_fdatasync(fd);
}

EXPORT int sync_file_range(int fd, off64_t off, off64_t len, unsigned int flags)
{
    if (inject(fd, range_limited, range_limit, &ranges))
        return -1;
    return real_sync_file_range(fd, off, len, flags);
}
