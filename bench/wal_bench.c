/* wal_bench.c - the write-ahead log's costs against plain file I/O measured
 * in the same run:
 *
 *   - durable appends: wal_append + wal_sync of 4 KB and 256 KB records,
 *     against write() + fdatasync() of the same bytes to a plain file;
 *   - syncs while segments are prepared: 256 KB records paced 5 ms apart
 *     through 150 MB (two rotations, each preparing the next 64 MB of
 *     zeros), p50 / p99 / max of wal_sync, against the same log without
 *     prepared segments (files that grow);
 *   - replay: wal_replay of a log of 256-byte rows (default ~256 MB, warm
 *     page cache), in records/s and MB/s, against read() of the same files
 *     into a 1 MB buffer.
 *
 * Usage: wal_bench [dir] [replay_mb] [syncs]
 *   (defaults $TMPDIR or /tmp, 256, 200). The files are removed at exit. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "error.h"
#include "wal.h"
#include "wal_internal.h"

static void die(const char *what, const char *err)
{
    fprintf(stderr, "wal_bench: %s: %s\n", what, err);
    exit(1);
}

/* Durable appends of len-byte records through the log, alternating op by
 * op with the peer (write() + fdatasync() of the same bytes to a plain
 * file), so a change in the shared disk's load hits both alike. */
static void bench_appends(const char *base, size_t len, int n)
{
    size_t rec = (size_t)wal_record_bytes(len);
    unsigned char *buf = calloc(1, rec);
    if (buf == NULL)
        die("appends", "out of memory");
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(i * 7);
    char dir[4096], path[4096], err[512];
    snprintf(dir, sizeof(dir), "%s/wal-bench-append", base);
    snprintf(path, sizeof(path), "%s/wal-bench-plain.bin", base);
    bench_remove_dir(dir);
    struct wal *w;
    if (wal_open(&w, dir, 1, NULL, err, sizeof(err)) != CORE_OK)
        die("wal_open", err);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || fdatasync(fd) != 0)
        die(path, "cannot create");
    struct iovec v = {buf, len};
    double tw = 0, tp = 0;
    for (int i = 0; i < n; i++) {
        double t0 = clock_mono_s();
        if (wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) != CORE_OK)
            die("wal_append", err);
        if (wal_sync(w, err, sizeof(err)) != CORE_OK)
            die("wal_sync", err);
        double t1 = clock_mono_s();
        if (write(fd, buf, rec) != (ssize_t)rec || fdatasync(fd) != 0)
            die(path, "write/fdatasync failed");
        double t2 = clock_mono_s();
        tw += t1 - t0;
        tp += t2 - t1;
    }
    wal_close(w);
    close(fd);
    unlink(path);
    bench_remove_dir(dir);
    tw /= n;
    tp /= n;
    printf("append+sync %6zu B: wal %8.1f us/op (%6.0f op/s)   write+fdatasync %8.1f us/op "
           "(%6.0f op/s)   wal/plain %.2fx\n",
           len, tw * 1e6, 1 / tw, tp * 1e6, 1 / tp, tw / tp);
    free(buf);
}

/* The syncs of a paced writer while the log prepares segments, against a
 * log whose segments grow as written (wal_options.no_prepare). */
static void bench_paced(const char *base, bool prepare)
{
    enum { LEN = 256 << 10, N = 600 };
    unsigned char *buf = calloc(1, LEN);
    double *t = malloc(N * sizeof *t);
    if (buf == NULL || t == NULL)
        die("paced", "out of memory");
    char dir[4096], err[512];
    snprintf(dir, sizeof(dir), "%s/wal-bench-paced", base);
    bench_remove_dir(dir);
    struct wal_options o = {.no_prepare = !prepare};
    struct wal *w;
    if (wal_open(&w, dir, 1, &o, err, sizeof(err)) != CORE_OK)
        die("wal_open", err);
    struct iovec v = {buf, LEN};
    for (int i = 0; i < N; i++) {
        if (wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) != CORE_OK)
            die("wal_append", err);
        double t0 = clock_mono_s();
        if (wal_sync(w, err, sizeof(err)) != CORE_OK)
            die("wal_sync", err);
        t[i] = clock_mono_s() - t0;
        struct timespec gap = {0, 5000000};
        nanosleep(&gap, NULL);
    }
    wal_close(w);
    bench_remove_dir(dir);
    double p50 = bench_pct(t, N, 0.50), p99 = bench_pct(t, N, 0.99), max = bench_pct(t, N, 1.0);
    printf("paced 256 KB syncs (5 ms apart, 150 MB, 64 MB segments) %-22s p50 %6.0f us  p99 %6.0f "
           "us  max %6.0f us\n", prepare ? "with prepared segments:" : "growing files (peer):",
           p50 * 1e6, p99 * 1e6, max * 1e6);
    free(t);
    free(buf);
}

struct sink {
    uint64_t sum;
};

/* What a real caller does at least: look at the payload. */
static int touch(void *ud, uint64_t seq, uint32_t kind, const void *payload, size_t len)
{
    struct sink *s = ud;
    const unsigned char *p = payload;
    s->sum += seq + kind + p[0] + p[len - 1];
    return 0;
}

static double time_plain_reads(const char *dir, uint64_t *bytes)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        die(dir, "cannot list");
    static unsigned char buf[1 << 20];
    *bytes = 0;
    double t0 = clock_mono_s();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY);
        ssize_t r;
        while ((r = read(fd, buf, sizeof(buf))) > 0)
            *bytes += (uint64_t)r;
        close(fd);
    }
    double t = clock_mono_s() - t0;
    closedir(d);
    return t;
}

static void bench_replay(const char *base, uint64_t mb)
{
    char dir[4096], err[512];
    snprintf(dir, sizeof(dir), "%s/wal-bench-replay", base);
    bench_remove_dir(dir);
    struct wal *w;
    if (wal_open(&w, dir, 1, NULL, err, sizeof(err)) != CORE_OK)
        die("wal_open", err);
    unsigned char row[256];
    for (size_t i = 0; i < sizeof(row); i++)
        row[i] = (unsigned char)(i * 13 + 1);
    struct iovec v = {row, sizeof(row)};
    uint64_t target = mb << 20, n = 0;
    double t0 = clock_mono_s();
    while (wal_bytes(w) < target) {
        if (wal_append(w, 2, &v, 1, NULL, err, sizeof(err)) != CORE_OK)
            die("wal_append", err);
        n++;
    }
    if (wal_sync(w, err, sizeof(err)) != CORE_OK)
        die("wal_sync", err);
    double tw = clock_mono_s() - t0;
    uint64_t bytes = wal_bytes(w);
    wal_close(w);
    printf("wrote %" PRIu64 " records of 256 B (%.0f MB) in %.2f s: %.2f M records/s unsynced\n",
           n, (double)bytes / 1e6, tw, (double)n / tw / 1e6);

    uint64_t raw_bytes;
    time_plain_reads(dir, &raw_bytes); /* warm the page cache for both */
    double best = 1e9, best_raw = 1e9;
    struct wal_report r;
    for (int rep = 0; rep < 3; rep++) {
        struct sink s = {0};
        t0 = clock_mono_s();
        int rc = wal_replay(dir, 0, WAL_CHECK, touch, &s, &r, err, sizeof(err));
        double t = clock_mono_s() - t0;
        if (rc != CORE_OK || r.records != n)
            die("wal_replay", err);
        if (t < best)
            best = t;
        double tr = time_plain_reads(dir, &raw_bytes);
        if (tr < best_raw)
            best_raw = tr;
    }
    printf("replay: %.2f M records/s, %.0f MB/s   read() of the same files: %.0f MB/s   "
           "replay/read time %.2fx\n",
           (double)n / best / 1e6, (double)bytes / best / 1e6, (double)raw_bytes / best_raw / 1e6,
           best / best_raw);
    bench_remove_dir(dir);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : getenv("TMPDIR");
    if (base == NULL || *base == '\0')
        base = "/tmp";
    uint64_t mb = argc > 2 ? strtoull(argv[2], NULL, 10) : 256;
    int syncs = argc > 3 ? atoi(argv[3]) : 200;
    if (mb == 0 || syncs < 2) {
        fprintf(stderr, "usage: wal_bench [dir] [replay_mb >= 1] [syncs >= 2]\n");
        return 2;
    }
    printf("wal_bench in %s: crc32c %s\n", base,
#ifdef __SSE4_2__
           "SSE4.2"
#else
           "portable"
#endif
    );
    bench_appends(base, 4096, syncs);
    bench_appends(base, 256 << 10, syncs / 4 > 2 ? syncs / 4 : 2);
    bench_paced(base, true);
    bench_paced(base, false);
    bench_replay(base, mb);
    return 0;
}
