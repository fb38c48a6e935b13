/* fuzz_wal.c - libFuzzer target: the input as the records of a log segment
 * (a valid segment header for seq 1 is put in front; with the first byte's
 * low bit set the input is split in two segments at a point it names, the
 * second named after the seq its own first record claims). Then:
 *   - wal_replay WAL_CHECK must not crash, and hands over payloads that are
 *     8-byte aligned, of the length and seq the log says;
 *   - when WAL_RECOVER accepts the log, a second WAL_CHECK finds it clean
 *     (no torn tail, no damage) with the same records, and wal_open at the
 *     next seq succeeds (a recovered log always opens again).
 * The files live in a folder of /dev/shm (or TMPDIR) made once and emptied
 * per input. Seeds: the bytes after the 24-byte header of segments written
 * by wal_append (test_wal's logs, say). */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wal.h"
#include "wal_internal.h"

static char g_dir[256];

static void empty_dir(void)
{
    DIR *d = opendir(g_dir);
    if (d == NULL)
        abort();
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

static void put_segment(uint64_t first, const uint8_t *data, size_t size)
{
    unsigned char h[WAL_SEGMENT_HEADER] = {0};
    memcpy(h, WAL_MAGIC, 8);
    for (int i = 0; i < 8; i++)
        h[8 + i] = (unsigned char)(first >> (8 * i));
    uint32_t crc = wal_crc32c(0, h, 16);
    for (int i = 0; i < 4; i++)
        h[16 + i] = (unsigned char)(crc >> (8 * i));
    char path[400];
    snprintf(path, sizeof path, "%s/wal-%020" PRIu64 ".log", g_dir, first);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0 || write(fd, h, sizeof h) != (ssize_t)sizeof h ||
        (size > 0 && write(fd, data, size) != (ssize_t)size))
        abort();
    close(fd);
}

struct seen {
    uint64_t n, last;
};

static int on_record(void *ud, uint64_t seq, uint32_t kind, const void *payload, size_t len)
{
    struct seen *s = ud;
    if ((uintptr_t)payload % 8 != 0 || kind == 0 || len > WAL_RECORD_MAX ||
        (s->n > 0 && seq != s->last + 1))
        abort();
    if (len > 0) /* readable: ASan checks the whole payload */
        (void)(((const volatile unsigned char *)payload)[len - 1]);
    s->n++;
    s->last = seq;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_dir[0] == '\0') {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/fuzz-wal-XXXXXX", base ? base : "/tmp");
        if (mkdtemp(g_dir) == NULL)
            abort();
    }
    empty_dir();
    if (size > 0 && (data[0] & 1) && size >= 3) {
        size_t cut = 1 + ((size_t)data[1] * 8) % (size - 1);
        uint64_t second = 2;
        if (cut + 16 <= size) /* the seq the second part's first record claims */
            memcpy(&second, data + cut + 8, 8);
        if (second < 2 || second > 1000000)
            second = 2 + second % 1000;
        put_segment(1, data + 1, cut - 1);
        put_segment(second, data + cut, size - cut);
    } else {
        put_segment(1, data, size);
    }
    char err[512];
    struct wal_report r;
    struct seen s = {0};
    wal_replay(g_dir, 0, WAL_CHECK, on_record, &s, &r, err, sizeof err);

    struct seen a = {0}, b = {0};
    if (wal_replay(g_dir, 0, WAL_RECOVER, on_record, &a, &r, err, sizeof err) != 0)
        return 0;
    if (wal_replay(g_dir, 0, WAL_CHECK, on_record, &b, &r, err, sizeof err) != 0 || r.torn ||
        r.damaged || a.n != b.n || a.last != b.last)
        abort();
    struct wal *w = NULL;
    struct wal_options o = {.segment_bytes = 4096, .no_prepare = true};
    uint64_t next = b.n > 0 ? b.last + 1 : 1;
    if (wal_open(&w, g_dir, next, &o, err, sizeof err) != 0) {
        fprintf(stderr, "a recovered log does not open at seq %" PRIu64 ": %s\n", next, err);
        abort();
    }
    wal_close(w);
    return 0;
}
