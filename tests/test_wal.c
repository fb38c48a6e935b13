/* test_wal.c - core/wal.c: append/replay round trips across segments and
 * runs, after_seq filtering, torn tails at every byte of the last record,
 * damage before the tail under each repair mode, gaps, wal_remove_below,
 * CRC32C vectors, EFBIG under RLIMIT_FSIZE, and write/sync failures injected
 * by tests/faultfs.c (this binary re-executed with LD_PRELOAD; see
 * faultfs_child). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "testutil.h"
#include "wal.h"
#include "wal_internal.h"

/* ---- deterministic records --------------------------------------------- */

static const size_t lens[] = {0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 64, 100, 255, 256, 257, 1000, 4093};
#define NLENS (sizeof(lens) / sizeof(lens[0]))

static size_t gen_len(uint64_t seq)
{
    return lens[(seq * 7) % NLENS];
}

static uint32_t gen_kind(uint64_t seq)
{
    return 1 + (uint32_t)(seq % 5);
}

static void gen_payload(uint64_t seq, unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(seq * 131 + i * 17 + (i >> 8));
}

/* Appends the generated record for the log's next seq, split into 1..3
 * parts (some empty); returns wal_append's code. */
static int append_gen(struct wal *w, char *err, size_t errlen)
{
    uint64_t seq = wal_next_seq(w);
    size_t len = gen_len(seq);
    unsigned char buf[4096];
    gen_payload(seq, buf, len);
    struct iovec parts[3];
    int n = 1 + (int)(seq % 3);
    size_t a = len / 3, b = len / 2;
    if (n == 1) {
        parts[0] = (struct iovec){buf, len};
    } else if (n == 2) {
        parts[0] = (struct iovec){buf, a};
        parts[1] = (struct iovec){buf + a, len - a};
    } else {
        parts[0] = (struct iovec){buf, a};
        parts[1] = (struct iovec){buf + a, b - a};
        parts[2] = (struct iovec){buf + b, len - b};
    }
    uint64_t got = 0;
    int rc = wal_append(w, gen_kind(seq), parts, n, &got, err, errlen);
    if (rc == CORE_OK && got != seq)
        return -1;
    return rc;
}

static void append_n(struct wal *w, int n)
{
    char err[512] = "";
    for (int i = 0; i < n; i++)
        ck_assert_msg(append_gen(w, err, sizeof(err)) == CORE_OK, "append: %s", err);
}

/* Bytes records from..to (inclusive) take on disk. */
static uint64_t span_bytes(uint64_t from, uint64_t to)
{
    uint64_t b = 0;
    for (uint64_t s = from; s <= to; s++)
        b += wal_record_bytes(gen_len(s));
    return b;
}

/* A replay callback that checks every record against the generator. */
struct seen {
    uint64_t n, first, last;
    bool bad;
    char why[160];
    uint64_t stop_at; /* nonzero: return 77 at this seq */
};

static int check_rec(void *ud, uint64_t seq, uint32_t kind, const void *payload, size_t len)
{
    struct seen *s = ud;
    unsigned char want[4096];
    if (s->bad)
        return 0;
    if (s->n > 0 && seq != s->last + 1)
        snprintf(s->why, sizeof(s->why), "seq %" PRIu64 " after %" PRIu64, seq, s->last);
    else if ((uintptr_t)payload % 4 != 0)
        snprintf(s->why, sizeof(s->why), "seq %" PRIu64 ": payload %p not 4-aligned", seq, payload);
    else if (kind != gen_kind(seq) || len != gen_len(seq))
        snprintf(s->why, sizeof(s->why), "seq %" PRIu64 ": kind %u len %zu", seq, kind, len);
    else if (gen_payload(seq, want, len), len > 0 && memcmp(want, payload, len) != 0)
        snprintf(s->why, sizeof(s->why), "seq %" PRIu64 ": payload differs", seq);
    else
        s->why[0] = '\0';
    if (s->why[0] != '\0') {
        s->bad = true;
        return 0;
    }
    if (s->n++ == 0)
        s->first = seq;
    s->last = seq;
    return s->stop_at == seq ? 77 : 0;
}

/* Replays dir, asserting the code; returns what was seen. */
static struct seen replay_ok(const char *dir, uint64_t after, enum wal_repair mode,
                             struct wal_report *r)
{
    struct seen s = {0};
    char err[512] = "";
    int rc = wal_replay(dir, after, mode, check_rec, &s, r, err, sizeof(err));
    ck_assert_msg(rc == CORE_OK, "replay: %s: %s", core_errname(rc), err);
    ck_assert_msg(!s.bad, "%s", s.why);
    return s;
}

/* ---- files --------------------------------------------------------------- */

static char *seg_path(const char *dir, uint64_t first)
{
    char *p = malloc(strlen(dir) + 64);
    ck_assert_ptr_nonnull(p);
    sprintf(p, "%s/wal-%020" PRIu64 ".log", dir, first);
    return p;
}

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Sorted first seqs of the segments in dir; returns the count. */
static size_t list_segs(const char *dir, uint64_t *firsts, size_t max)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t f;
        if (sscanf(e->d_name, "wal-%" SCNu64 ".log", &f) == 1 && n < max)
            firsts[n++] = f;
    }
    closedir(d);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && firsts[j - 1] > firsts[j]; j--) {
            uint64_t t = firsts[j];
            firsts[j] = firsts[j - 1];
            firsts[j - 1] = t;
        }
    return n;
}

static uint64_t dir_bytes(const char *dir)
{
    uint64_t firsts[4096], total = 0;
    size_t n = list_segs(dir, firsts, 4096);
    for (size_t i = 0; i < n; i++) {
        char *p = seg_path(dir, firsts[i]);
        total += (uint64_t)file_size(p);
        free(p);
    }
    return total;
}

static void flip_bit(const char *path, uint64_t off, int bit)
{
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    unsigned char c;
    ck_assert_int_eq(pread(fd, &c, 1, (off_t)off), 1);
    c ^= (unsigned char)(1u << bit);
    ck_assert_int_eq(pwrite(fd, &c, 1, (off_t)off), 1);
    close(fd);
}

static void append_bytes(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

/* A log in dir of records 1..n, segments of seg_bytes (0 = default). */
static void make_log(const char *dir, int n, uint64_t seg_bytes)
{
    struct wal *w;
    char err[512] = "";
    struct wal_options o = {.segment_bytes = seg_bytes};
    ck_assert_msg(wal_open(&w, dir, 1, &o, err, sizeof(err)) == CORE_OK, "%s", err);
    append_n(w, n);
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    wal_close(w);
}

/* ---- CRC32C -------------------------------------------------------------- */

START_TEST(crc_known_vectors)
{
    const char *s = "123456789";
    ck_assert_uint_eq(wal_crc32c(0, s, 9), 0xE3069283u);
    ck_assert_uint_eq(wal_crc32c_portable(0, s, 9), 0xE3069283u);
    ck_assert_uint_eq(wal_crc32c(0, "", 0), 0);
    unsigned char z[32] = {0}, ff[32];
    memset(ff, 0xff, sizeof(ff));
    /* RFC 3720 B.4 */
    ck_assert_uint_eq(wal_crc32c(0, z, 32), 0x8A9136AAu);
    ck_assert_uint_eq(wal_crc32c_portable(0, z, 32), 0x8A9136AAu);
    ck_assert_uint_eq(wal_crc32c(0, ff, 32), 0x62A8AB43u);
    ck_assert_uint_eq(wal_crc32c_portable(0, ff, 32), 0x62A8AB43u);
    /* continuing from a previous result */
    ck_assert_uint_eq(wal_crc32c(wal_crc32c(0, s, 4), s + 4, 5), 0xE3069283u);
    ck_assert_uint_eq(wal_crc32c_portable(wal_crc32c_portable(0, s, 3), s + 3, 6), 0xE3069283u);
}
END_TEST

START_TEST(crc_hardware_equals_portable)
{
    enum { N = 40000 }; /* past the three interleaved 1 KB blocks, several times */
    unsigned char *buf = malloc(N + 16);
    ck_assert_ptr_nonnull(buf);
    uint32_t x = 12345;
    for (size_t i = 0; i < N + 16; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
    for (size_t start = 0; start < 9; start++)
        for (size_t len = 0; len < N; len += len < 64 ? 1 : len < 8192 ? 61 : 997) {
            uint32_t seed = (uint32_t)(start * 2654435761u + len);
            ck_assert_uint_eq(wal_crc32c(seed, buf + start, len),
                              wal_crc32c_portable(seed, buf + start, len));
        }
    free(buf);
}
END_TEST

/* ---- round trips ----------------------------------------------------------- */

START_TEST(round_trip)
{
    char *base = testutil_tmpdir();
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/parent/log", base); /* both created */
    struct wal *w;
    char err[512] = "";
    ck_assert_msg(wal_open(&w, dir, 1, NULL, err, sizeof(err)) == CORE_OK, "%s", err);
    ck_assert_uint_eq(wal_next_seq(w), 1);
    ck_assert_uint_eq(wal_bytes(w), WAL_SEGMENT_HEADER);
    append_n(w, 500);
    ck_assert_uint_eq(wal_next_seq(w), 501);
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK); /* nothing new */
    ck_assert(!wal_broken(w));
    char *p = seg_path(dir, 1);
    ck_assert_uint_eq(wal_bytes(w), WAL_SEGMENT_HEADER + span_bytes(1, 500));
    ck_assert_int_eq(file_size(p), (int64_t)wal_bytes(w));
    wal_close(w);

    struct wal_report r;
    struct seen s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.n, 500);
    ck_assert_uint_eq(s.first, 1);
    ck_assert_uint_eq(s.last, 500);
    ck_assert_uint_eq(r.first_seq, 1);
    ck_assert_uint_eq(r.last_seq, 500);
    ck_assert_uint_eq(r.records, 500);
    ck_assert_uint_eq(r.replayed, 500);
    ck_assert_uint_eq(r.bytes, span_bytes(1, 500));
    ck_assert(!r.torn && !r.damaged);

    /* fn's nonzero return stops the replay and comes back */
    struct seen st = {.stop_at = 42};
    ck_assert_int_eq(wal_replay(dir, 0, WAL_RECOVER, check_rec, &st, &r, err, sizeof(err)), 77);
    ck_assert_uint_eq(st.last, 42);

    /* a missing directory is an empty log */
    snprintf(dir, sizeof(dir), "%s/nothing-here", base);
    s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.n, 0);
    ck_assert_uint_eq(r.last_seq, 0);
    free(p);
    testutil_rmtree(base);
}
END_TEST

START_TEST(bad_arguments)
{
    char *dir = testutil_tmpdir();
    struct wal *w;
    char err[512] = "";
    ck_assert_int_eq(wal_open(&w, dir, 0, NULL, err, sizeof(err)), CORE_EINVAL);
    ck_assert_int_eq(wal_open(&w, dir, 1, NULL, err, sizeof(err)), CORE_OK);
    unsigned char b[4] = {1, 2, 3, 4};
    struct iovec v = {b, sizeof(b)};
    ck_assert_int_eq(wal_append(w, 0, &v, 1, NULL, err, sizeof(err)), CORE_EINVAL);
    struct iovec huge[2] = {{b, WAL_RECORD_MAX}, {b, 1}}; /* never read: refused first */
    ck_assert_int_eq(wal_append(w, 1, huge, 2, NULL, err, sizeof(err)), CORE_ETOOBIG);
    ck_assert_uint_eq(wal_next_seq(w), 1);
    /* zero parts: an empty payload */
    uint64_t seq = 0;
    ck_assert_int_eq(wal_append(w, 9, NULL, 0, &seq, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(seq, 1);
    wal_close(w);
    wal_close(NULL);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(after_seq_filters)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 300, 0);
    struct wal_report r;
    struct seen s = replay_ok(dir, 200, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.n, 100);
    ck_assert_uint_eq(s.first, 201);
    ck_assert_uint_eq(s.last, 300);
    ck_assert_uint_eq(r.records, 300);
    ck_assert_uint_eq(r.replayed, 100);
    ck_assert_uint_eq(r.first_seq, 1);
    s = replay_ok(dir, 300, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.n, 0);
    ck_assert_uint_eq(r.last_seq, 300);
    s = replay_ok(dir, 1000, WAL_RECOVER, &r); /* a snapshot newer than the log */
    ck_assert_uint_eq(s.n, 0);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(reopen_and_continue)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 100, 0);
    for (int run = 0; run < 3; run++) {
        struct wal_report r;
        struct seen s = replay_ok(dir, 0, WAL_RECOVER, &r);
        ck_assert_uint_eq(s.last, 100 + 50 * (uint64_t)run);
        struct wal *w;
        char err[512] = "";
        ck_assert_msg(wal_open(&w, dir, r.last_seq + 1, NULL, err, sizeof(err)) == CORE_OK, "%s",
                      err);
        /* bytes count the earlier runs' segments too */
        ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));
        append_n(w, 50);
        ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));
        wal_close(w);
    }
    uint64_t firsts[8];
    ck_assert_uint_eq(list_segs(dir, firsts, 8), 4);
    ck_assert_uint_eq(firsts[1], 101);
    ck_assert_uint_eq(firsts[3], 201);
    struct wal_report r;
    struct seen s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.n, 250);

    /* opening where records already are is refused */
    struct wal *w;
    char err[512] = "";
    ck_assert_int_eq(wal_open(&w, dir, 101, NULL, err, sizeof(err)), CORE_EINVAL);
    ck_assert_msg(strstr(err, "wal-00000000000000000101.log") != NULL, "%s", err);
    /* an empty segment named next_seq (a run that appended nothing) is replaced */
    ck_assert_int_eq(wal_open(&w, dir, 251, NULL, err, sizeof(err)), CORE_OK);
    wal_close(w);
    ck_assert_int_eq(wal_open(&w, dir, 251, NULL, err, sizeof(err)), CORE_OK);
    append_n(w, 1);
    wal_close(w);
    s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.last, 251);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(rotation)
{
    char *dir = testutil_tmpdir();
    struct wal *w;
    char err[512] = "";
    struct wal_options o = {.segment_bytes = 8192};
    ck_assert_int_eq(wal_open(&w, dir, 1, &o, err, sizeof(err)), CORE_OK);
    append_n(w, 400);
    /* a record bigger than a segment gets one of its own */
    static unsigned char big[20000];
    struct iovec v = {big, sizeof(big)};
    uint64_t big_seq;
    ck_assert_int_eq(wal_append(w, 3, &v, 1, &big_seq, err, sizeof(err)), CORE_OK);
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));
    wal_close(w);

    uint64_t firsts[1024];
    size_t n = list_segs(dir, firsts, 1024);
    ck_assert_uint_gt(n, 10);
    ck_assert_uint_eq(firsts[0], 1);
    ck_assert_uint_eq(firsts[n - 1], big_seq);
    for (size_t i = 0; i + 1 < n; i++) {
        char *p = seg_path(dir, firsts[i]);
        ck_assert_int_le(file_size(p), 8192);
        ck_assert_int_eq(file_size(p), WAL_SEGMENT_HEADER + span_bytes(firsts[i], firsts[i + 1] - 1));
        free(p);
    }
    struct seen s = {0};
    struct wal_report r;
    /* the big record is not a generated one: stop before it */
    ck_assert_int_eq(wal_replay(dir, 0, WAL_CHECK, check_rec, &s, &r, err, sizeof(err)), CORE_OK);
    ck_assert_msg(s.bad, "the 20000-byte record should not match the generator");
    ck_assert_uint_eq(s.last, 400);
    ck_assert_uint_eq(r.records, 401);
    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(wal_replay(dir, 100, WAL_RECOVER, check_rec, &s, &r, err, sizeof(err)),
                     CORE_OK);
    ck_assert_uint_eq(s.first, 101);
    ck_assert_uint_eq(s.last, 400);
    ck_assert_uint_eq(r.replayed, 301);
    testutil_rmtree(dir);
}
END_TEST

/* ---- torn tails ---------------------------------------------------------------- */

START_TEST(torn_tail_every_offset)
{
    char *dir = testutil_tmpdir();
    enum { N = 22 }; /* a 31-byte payload */
    make_log(dir, N, 0);
    char *p = seg_path(dir, 1);
    size_t full_len;
    char *full = testutil_read_file(p, &full_len);
    ck_assert_ptr_nonnull(full);
    uint64_t start = WAL_SEGMENT_HEADER + span_bytes(1, N - 1);
    ck_assert_uint_eq(full_len, start + wal_record_bytes(gen_len(N)));
    ck_assert_uint_ne(gen_len(N) % 8, 0); /* padding is among the cut points */

    for (uint64_t cut = start; cut < full_len; cut++) {
        clear_dir(dir);
        free(testutil_write_file(dir, "wal-00000000000000000001.log", full, (size_t)cut));
        struct wal_report r;
        struct seen s = replay_ok(dir, 0, WAL_RECOVER, &r);
        ck_assert_uint_eq(s.last, N - 1);
        ck_assert_uint_eq(r.last_seq, N - 1);
        ck_assert(!r.damaged);
        if (cut == start) {
            ck_assert(!r.torn); /* the record is wholly gone: nothing torn */
        } else {
            ck_assert_msg(r.torn, "cut at %" PRIu64, cut);
            ck_assert_str_eq(r.bad_file, p);
            ck_assert_uint_eq(r.bad_offset, start);
            ck_assert_uint_eq(r.dropped_bytes, cut - start);
            ck_assert_uint_eq(r.dropped_segments, 0);
        }
        ck_assert_int_eq(file_size(p), (int64_t)start);
        /* the next run continues at the right seq */
        struct wal *w;
        char err[512] = "";
        ck_assert_int_eq(wal_open(&w, dir, r.last_seq + 1, NULL, err, sizeof(err)), CORE_OK);
        ck_assert_uint_eq(wal_next_seq(w), N);
        append_n(w, 1);
        wal_close(w);
        s = replay_ok(dir, 0, WAL_RECOVER, &r);
        ck_assert_uint_eq(s.n, N);
        ck_assert(!r.torn);
    }
    free(full);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(torn_tail_check_changes_nothing)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 10, 0);
    char *p = seg_path(dir, 1);
    int64_t size = file_size(p);
    ck_assert_int_eq(truncate(p, size - 5), 0);
    struct wal_report r;
    struct seen s = replay_ok(dir, 0, WAL_CHECK, &r);
    ck_assert_uint_eq(s.last, 9);
    ck_assert(r.torn);
    ck_assert_uint_eq(r.dropped_bytes, wal_record_bytes(gen_len(10)) - 5);
    ck_assert_int_eq(file_size(p), size - 5);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(torn_tail_zero_and_garbage_extension)
{
    char *dir = testutil_tmpdir();
    char *p = seg_path(dir, 1);
    unsigned char junk[8192];
    for (int variant = 0; variant < 3; variant++) {
        clear_dir(dir);
        make_log(dir, 30, 0);
        int64_t size = file_size(p);
        if (variant == 0) {
            memset(junk, 0, sizeof(junk)); /* blocks allocated, data never written */
        } else {
            uint32_t x = 99u + (uint32_t)variant;
            for (size_t i = 0; i < sizeof(junk); i++) {
                x = x * 1103515245u + 12345u;
                junk[i] = (unsigned char)(x >> 16);
            }
        }
        append_bytes(p, junk, variant == 2 ? 13 : sizeof(junk));
        struct wal_report r;
        struct seen s = replay_ok(dir, 0, WAL_RECOVER, &r);
        ck_assert_uint_eq(s.last, 30);
        if (variant == 0) /* zeros: the unused part of a prepared segment */
            ck_assert_msg(!r.torn && !r.damaged, "variant %d", variant);
        else
            ck_assert_msg(r.torn && !r.damaged, "variant %d", variant);
        if (variant != 0) { /* cut */
            ck_assert_uint_eq(r.bad_offset, (uint64_t)size);
            ck_assert_int_eq(file_size(p), size);
        }
    }
    free(p);
    testutil_rmtree(dir);
}
END_TEST

/* A crash right after a segment was created: its header is torn. */
START_TEST(torn_segment_header)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 10, 0);
    char *p = seg_path(dir, 11);
    unsigned char hdr[WAL_SEGMENT_HEADER] = {0};
    for (int variant = 0; variant < 2; variant++) {
        /* 10 bytes of a header, or a whole header of zeros */
        free(testutil_write_file(dir, "wal-00000000000000000011.log", hdr,
                                 variant == 0 ? 10 : sizeof(hdr)));
        struct wal_report r;
        struct seen s = replay_ok(dir, 0, WAL_CHECK, &r);
        ck_assert(r.torn);
        ck_assert_int_ge(file_size(p), 10); /* CHECK leaves it */
        s = replay_ok(dir, 0, WAL_RECOVER, &r);
        ck_assert_uint_eq(s.last, 10);
        ck_assert(r.torn && !r.damaged);
        ck_assert_str_eq(r.bad_file, p);
        ck_assert_uint_eq(r.bad_offset, 0);
        ck_assert_uint_eq(r.dropped_segments, 1);
        ck_assert_int_eq(file_size(p), -1); /* removed */
    }
    /* the first record of a fresh segment torn: the segment stays, empty,
     * and the next run's wal_open replaces it */
    struct wal *w;
    char err[512] = "";
    ck_assert_int_eq(wal_open(&w, dir, 11, NULL, err, sizeof(err)), CORE_OK);
    append_n(w, 1);
    wal_close(w);
    ck_assert_int_eq(truncate(p, file_size(p) - 1), 0);
    struct wal_report r;
    struct seen s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert(r.torn);
    ck_assert_uint_eq(r.bad_offset, WAL_SEGMENT_HEADER);
    ck_assert_int_eq(file_size(p), WAL_SEGMENT_HEADER);
    ck_assert_uint_eq(s.last, 10);
    ck_assert_int_eq(wal_open(&w, dir, 11, NULL, err, sizeof(err)), CORE_OK);
    append_n(w, 2);
    wal_close(w);
    s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.last, 12);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

/* ---- damage before the tail ---------------------------------------------------- */

/* Flips one bit at byte off of the log's segment 1 (records 1..30) and
 * checks that every mode but WAL_REPAIR refuses the log, naming the spot,
 * and leaves the file alone. */
static void expect_damage(uint64_t off, int bit, uint64_t bad_rec_off)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 30, 0);
    char *p = seg_path(dir, 1);
    flip_bit(p, off, bit);
    size_t before_len;
    char *before = testutil_read_file(p, &before_len);
    char name_off[64];
    snprintf(name_off, sizeof(name_off), "offset %" PRIu64, bad_rec_off);
    enum wal_repair modes[] = {WAL_RECOVER, WAL_CHECK};
    for (int m = 0; m < 2; m++) {
        struct wal_report r;
        struct seen s = {0};
        char err[512] = "";
        int rc = wal_replay(dir, 0, modes[m], check_rec, &s, &r, err, sizeof(err));
        ck_assert_msg(rc == CORE_EFORMAT, "flip at %" PRIu64 ": %s (%s)", off, core_errname(rc),
                      err);
        ck_assert_msg(strstr(err, "wal-00000000000000000001.log") != NULL, "%s", err);
        ck_assert_msg(strstr(err, name_off) != NULL, "%s lacks %s", err, name_off);
        ck_assert(r.damaged && !r.torn);
        ck_assert_str_eq(r.bad_file, p);
        ck_assert_uint_eq(r.bad_offset, bad_rec_off);
        ck_assert(!s.bad);
        size_t after_len;
        char *after = testutil_read_file(p, &after_len);
        ck_assert_uint_eq(after_len, before_len);
        ck_assert(memcmp(before, after, before_len) == 0);
        free(after);
    }
    free(before);
    free(p);
    testutil_rmtree(dir);
}

static uint64_t rec_off(uint64_t seq)
{
    return WAL_SEGMENT_HEADER + span_bytes(1, seq - 1);
}

START_TEST(flipped_bit_in_payload)
{
    ck_assert_uint_gt(gen_len(15), 8);
    expect_damage(rec_off(15) + WAL_RECORD_HEADER + 3, 5, rec_off(15));
}
END_TEST

START_TEST(flipped_bit_in_header_fields)
{
    uint64_t o = rec_off(12);
    expect_damage(o + 0, 1, o);  /* len */
    expect_damage(o + 4, 0, o);  /* crc */
    expect_damage(o + 8, 3, o);  /* seq */
    expect_damage(o + 16, 7, o); /* kind */
    expect_damage(o + 21, 2, o); /* reserved */
    expect_damage(9, 4, 0);      /* the segment header's seq */
}
END_TEST

START_TEST(flipped_bit_in_padding)
{
    uint64_t seq = 2; /* the first record whose length is not a multiple of 8 */
    while (gen_len(seq) % 8 == 0)
        seq++;
    ck_assert_uint_lt(seq, 29);
    uint64_t o = rec_off(seq);
    expect_damage(o + WAL_RECORD_HEADER + gen_len(seq), 0, o);
}
END_TEST

START_TEST(repair_cuts_at_damage)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 400, 8192);
    uint64_t firsts[256];
    size_t n = list_segs(dir, firsts, 256);
    ck_assert_uint_ge(n, 5);
    /* damage in the middle of the second segment */
    uint64_t a = firsts[1], b = firsts[2];
    uint64_t bad_seq = a + (b - a) / 2;
    uint64_t off = WAL_SEGMENT_HEADER + span_bytes(a, bad_seq - 1);
    char *p = seg_path(dir, a);
    flip_bit(p, off + 5, 1); /* the crc */
    int64_t seg_size = file_size(p);
    uint64_t later_bytes = 0;
    for (size_t i = 2; i < n; i++) {
        char *q = seg_path(dir, firsts[i]);
        later_bytes += (uint64_t)file_size(q);
        free(q);
    }
    uint64_t total = dir_bytes(dir);

    struct wal_report r;
    struct seen s = {0};
    char err[512] = "";
    ck_assert_int_eq(wal_replay(dir, 0, WAL_RECOVER, check_rec, &s, &r, err, sizeof(err)),
                     CORE_EFORMAT);
    ck_assert_uint_eq(s.last, bad_seq - 1); /* fn saw what came before */
    ck_assert_uint_eq(r.dropped_segments, n - 2);
    ck_assert_uint_eq(r.dropped_bytes, (uint64_t)seg_size - off + later_bytes);
    ck_assert_uint_eq(dir_bytes(dir), total); /* nothing changed */

    s = replay_ok(dir, 0, WAL_REPAIR, &r);
    ck_assert_uint_eq(s.last, bad_seq - 1);
    ck_assert(r.damaged && !r.torn);
    ck_assert_str_eq(r.bad_file, p);
    ck_assert_uint_eq(r.bad_offset, off);
    ck_assert_uint_eq(r.dropped_segments, n - 2);
    ck_assert_uint_eq(r.dropped_bytes, (uint64_t)seg_size - off + later_bytes);
    ck_assert_int_eq(file_size(p), (int64_t)off);
    ck_assert_uint_eq(list_segs(dir, firsts, 256), 2);
    ck_assert_uint_eq(dir_bytes(dir), total - r.dropped_bytes);

    /* the repaired log is clean and continues */
    s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert(!r.torn && !r.damaged);
    ck_assert_uint_eq(s.last, bad_seq - 1);
    struct wal *w;
    ck_assert_int_eq(wal_open(&w, dir, bad_seq, NULL, err, sizeof(err)), CORE_OK);
    append_n(w, 3);
    wal_close(w);
    s = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.last, bad_seq + 2);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

/* A bad last record of a segment that is not the last one is damage, not a
 * torn tail: segments are complete before the next one is created. */
START_TEST(bad_end_of_earlier_segment_is_damage)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 100, 4096);
    uint64_t firsts[64];
    size_t n = list_segs(dir, firsts, 64);
    ck_assert_uint_ge(n, 3);
    char *p = seg_path(dir, firsts[0]);
    ck_assert_int_eq(truncate(p, file_size(p) - 3), 0);
    struct wal_report r;
    char err[512] = "";
    ck_assert_int_eq(wal_replay(dir, 0, WAL_RECOVER, NULL, NULL, &r, err, sizeof(err)),
                     CORE_EFORMAT);
    ck_assert(r.damaged);
    ck_assert_uint_eq(r.bad_offset, WAL_SEGMENT_HEADER + span_bytes(1, firsts[1] - 2));
    free(p);
    testutil_rmtree(dir);
}
END_TEST

/* ---- gaps and deletion ------------------------------------------------------------ */

START_TEST(gap_between_segments)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 300, 4096);
    uint64_t firsts[256];
    size_t n = list_segs(dir, firsts, 256);
    ck_assert_uint_ge(n, 5);
    char *p = seg_path(dir, firsts[2]);
    ck_assert_int_eq(unlink(p), 0);
    char want[128];
    snprintf(want, sizeof(want), "records %" PRIu64 "..%" PRIu64 " are missing", firsts[2],
             firsts[3] - 1);
    struct wal_report r;
    char err[512] = "";
    ck_assert_int_eq(wal_replay(dir, 0, WAL_RECOVER, NULL, NULL, &r, err, sizeof(err)),
                     CORE_EFORMAT);
    ck_assert_msg(strstr(err, want) != NULL, "%s lacks %s", err, want);
    ck_assert_int_eq(wal_replay(dir, 0, WAL_CHECK, NULL, NULL, &r, err, sizeof(err)),
                     CORE_EFORMAT);
    /* a snapshot that holds the missing records makes the gap harmless */
    struct seen s = replay_ok(dir, firsts[3] - 1, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.first, firsts[3]);
    ck_assert_uint_eq(s.last, 300);
    /* WAL_REPAIR cuts at the gap */
    s = replay_ok(dir, 0, WAL_REPAIR, &r);
    ck_assert(r.damaged);
    ck_assert_uint_eq(s.last, firsts[2] - 1);
    ck_assert_uint_eq(r.dropped_segments, n - 3);
    ck_assert_uint_eq(list_segs(dir, firsts, 256), 2);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

START_TEST(gap_before_first_record)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 10, 0);
    struct wal *w;
    char err[512] = "";
    /* a snapshot at 20 that the log never saw, then a new run */
    ck_assert_int_eq(wal_open(&w, dir, 21, NULL, err, sizeof(err)), CORE_OK);
    append_n(w, 5);
    wal_close(w);
    struct wal_report r;
    struct seen s = replay_ok(dir, 20, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.first, 21);
    ck_assert_uint_eq(s.last, 25);
    ck_assert_int_eq(wal_replay(dir, 5, WAL_RECOVER, NULL, NULL, &r, err, sizeof(err)),
                     CORE_EFORMAT);
    ck_assert_msg(strstr(err, "records 11..20 are missing") != NULL, "%s", err);

    /* with the first segment gone, the log starts at 21 */
    char *p = seg_path(dir, 1);
    ck_assert_int_eq(unlink(p), 0);
    for (int m = WAL_RECOVER; m <= WAL_CHECK; m++) {
        ck_assert_int_eq(wal_replay(dir, 10, (enum wal_repair)m, NULL, NULL, &r, err, sizeof(err)),
                         CORE_EFORMAT);
        ck_assert_msg(strstr(err, "records 11..20 are missing") != NULL, "%s", err);
    }
    s = replay_ok(dir, 20, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.n, 5);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

/* How many of the finished segments firsts[0..n-1) (firsts[n-1] is the
 * current one) hold only records <= seq, counting from skip on. */
static size_t removable(const uint64_t *firsts, size_t n, size_t skip, uint64_t seq)
{
    size_t k = skip;
    while (k + 1 < n && firsts[k + 1] - 1 <= seq)
        k++;
    return k - skip;
}

START_TEST(remove_below)
{
    char *dir = testutil_tmpdir();
    struct wal *w;
    char err[512] = "";
    struct wal_options o = {.segment_bytes = 4096};
    ck_assert_int_eq(wal_open(&w, dir, 1, &o, err, sizeof(err)), CORE_OK);
    append_n(w, 300);
    uint64_t firsts[256];
    size_t n = list_segs(dir, firsts, 256);
    ck_assert_uint_ge(n, 8);
    size_t removed = 99, gone = 0;
    /* seq firsts[2] - 2: segment 0 is all below, segment 1 is not */
    ck_assert_int_eq(wal_remove_below(w, firsts[2] - 2, &removed, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 1);
    ck_assert_int_eq(wal_remove_below(w, firsts[2] - 1, &removed, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, 1);
    gone = 2;
    ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));
    uint64_t seq = firsts[4] + 3;
    struct wal_report r;
    struct seen s;
    size_t want = removable(firsts, n, gone, seq);
    ck_assert_int_eq(wal_remove_below(w, seq, &removed, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, want);
    gone += want;
    ck_assert_uint_eq(list_segs(dir, firsts + 128, 128), n - gone);
    s = replay_ok(dir, seq, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.first, seq + 1);
    ck_assert_uint_eq(s.last, 300);
    ck_assert_uint_eq(r.first_seq, firsts[gone]);
    ck_assert_uint_le(r.first_seq, seq + 1);
    /* the current segment always stays */
    ck_assert_int_eq(wal_remove_below(w, UINT64_MAX, &removed, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(removed, n - 1 - gone);
    ck_assert_uint_eq(list_segs(dir, firsts, 256), 1);
    ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));
    append_n(w, 10);
    ck_assert_int_eq(wal_remove_below(w, 300, NULL, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));
    wal_close(w);
    s = replay_ok(dir, 300, WAL_RECOVER, &r);
    ck_assert_uint_eq(s.first, 301);
    ck_assert_uint_eq(s.last, 310);
    /* older records are gone: replaying from an older snapshot is refused */
    ck_assert_int_eq(wal_replay(dir, 0, WAL_RECOVER, NULL, NULL, &r, err, sizeof(err)),
                     CORE_EFORMAT);
    ck_assert_msg(strstr(err, "are missing") != NULL, "%s", err);
    testutil_rmtree(dir);
}
END_TEST

/* ---- threads ---------------------------------------------------------------------- */

struct syncer {
    struct wal *w;
    atomic_bool stop;
    int fails, syncs;
    char err[512];
};

static void *sync_loop(void *arg)
{
    struct syncer *s = arg;
    while (!atomic_load(&s->stop)) {
        if (wal_sync(s->w, s->err, sizeof(s->err)) != CORE_OK)
            s->fails++;
        s->syncs++;
    }
    return NULL;
}

START_TEST(sync_concurrent_with_rotation)
{
    char *dir = testutil_tmpdir();
    struct syncer s = {0};
    char err[512] = "";
    struct wal_options o = {.segment_bytes = 16384};
    ck_assert_int_eq(wal_open(&s.w, dir, 1, &o, err, sizeof(err)), CORE_OK);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, sync_loop, &s), 0);
    for (int i = 0; i < 1500; i++) {
        append_n(s.w, 1);
        if (i % 100 == 0)
            ck_assert_int_eq(wal_remove_below(s.w, 0, NULL, err, sizeof(err)), CORE_OK);
        (void)wal_bytes(s.w);
    }
    atomic_store(&s.stop, true);
    pthread_join(t, NULL);
    ck_assert_msg(s.fails == 0, "%s", s.err);
    ck_assert_int_eq(wal_sync(s.w, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(wal_bytes(s.w), dir_bytes(dir));
    wal_close(s.w);
    struct wal_report r;
    struct seen seen = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(seen.n, 1500);
    testutil_rmtree(dir);
}
END_TEST

/* ---- EFBIG ------------------------------------------------------------------------- */

/* In a child with SIGXFSZ ignored and files limited to 16 KB: returns 0
 * when appends end in CORE_EIO with the file cut back, else a code. */
static int efbig_child(const char *dir)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {16384, 16384};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 10;
    struct wal *w;
    char err[512] = "";
    if (wal_open(&w, dir, 1, NULL, err, sizeof(err)) != CORE_OK)
        return 11;
    static unsigned char buf[1000];
    struct iovec v = {buf, sizeof(buf)};
    int rc = CORE_OK, n = 0;
    while (n < 100 && (rc = wal_append(w, 1, &v, 1, NULL, err, sizeof(err))) == CORE_OK)
        n++;
    if (rc != CORE_EIO || strstr(err, strerror(EFBIG)) == NULL) {
        fprintf(stderr, "efbig child: %s: %s\n", core_errname(rc), err);
        return 12;
    }
    char *p = seg_path(dir, 1);
    int64_t want = WAL_SEGMENT_HEADER + (int64_t)n * (int64_t)wal_record_bytes(sizeof(buf));
    int64_t got = file_size(p);
    free(p);
    if (got != want || wal_broken(w) || wal_next_seq(w) != (uint64_t)n + 1)
        return 13;
    if (wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) != CORE_EIO)
        return 14;
    if (wal_sync(w, err, sizeof(err)) != CORE_OK)
        return 15;
    wal_close(w);
    return n == 15 ? 0 : 16; /* (16384 - 24) / 1024 whole records fit */
}

START_TEST(efbig_is_eio)
{
    char *dir = testutil_tmpdir();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(efbig_child(dir));
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    struct wal_report r;
    struct seen s = {0};
    char err[512] = "";
    ck_assert_int_eq(wal_replay(dir, 0, WAL_RECOVER, NULL, &s, &r, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(r.records, 15);
    ck_assert(!r.torn && !r.damaged);
    testutil_rmtree(dir);
}
END_TEST

/* ---- faultfs ------------------------------------------------------------------------- */

static int count_rec(void *ud, uint64_t seq, uint32_t kind, const void *payload, size_t len)
{
    (void)seq;
    (void)kind;
    (void)payload;
    (void)len;
    (*(int *)ud)++;
    return 0;
}

#define CHILD_CHECK(cond)                                                                      \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "faultfs child, line %d: %s (err: %s)\n", __LINE__, #cond, err);   \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

/* Records in dir that recovery replays (r says what it found), or -1. */
static int replayed(const char *dir, struct wal_report *r, char *err, size_t errlen)
{
    int n = 0;
    return wal_replay(dir, 0, WAL_RECOVER, count_rec, &n, r, err, errlen) == CORE_OK ? n : -1;
}

/* Opens the log in dir with o, then arms the shim (creates trigger). */
static bool open_armed(struct wal **w, const char *dir, const struct wal_options *o,
                       const char *trigger, char *err, size_t errlen)
{
    if (wal_open(w, dir, 1, o, err, errlen) != CORE_OK)
        return false;
    int fd = open(trigger, O_WRONLY | O_CREAT, 0644);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* Run with LD_PRELOAD=faultfs: mode "write" expects FAULTFS_WRITE_FAIL_AFTER=3
 * and ENOSPC, "sync" FAULTFS_SYNC_FAIL_AFTER=1, "none" a FAULTFS_PATH that
 * matches nothing. Faults start at the trigger file. Returns the exit code. */
static int faultfs_child(const char *mode, const char *dir, const char *trigger)
{
    struct wal *w;
    char err[512] = "";
    unsigned char buf[100] = {1};
    struct iovec v = {buf, sizeof(buf)};
    if (strcmp(mode, "prepfail") == 0) {
        /* every write to the prepared file fails (FAULTFS_PATH names it):
         * the log goes on in growing segments, nothing lost, nothing left */
        struct wal_options o = {.segment_bytes = 8192};
        CHILD_CHECK(open_armed(&w, dir, &o, trigger, err, sizeof(err)));
        for (int i = 0; i < 300; i++) {
            CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_OK);
            if (i % 50 == 0)
                usleep(20000); /* room for the preparer to try, and fail */
        }
        CHILD_CHECK(wal_sync(w, err, sizeof(err)) == CORE_OK);
        CHILD_CHECK(!wal_broken(w));
        wal_close(w);
        struct wal_report r;
        CHILD_CHECK(replayed(dir, &r, err, sizeof(err)) == 300 && !r.torn && !r.damaged);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s/wal-next.tmp", dir);
        CHILD_CHECK(access(tmp, F_OK) != 0);
        return 0;
    }
    if (strcmp(mode, "rangefail") == 0) {
        /* the prepared file's writeback fails as sync_file_range reports it
         * (FAULTFS_RANGE_FAIL_AFTER; the error is then gone, so its
         * fdatasync succeeds): the file is dropped, never used, and the log
         * goes on in growing segments. A prepared segment in use is a file
         * of exactly segment_bytes; a growing one never is (24 + 128 k). */
        enum { SEG = 1 << 16 };
        struct wal_options o = {.segment_bytes = SEG};
        CHILD_CHECK(open_armed(&w, dir, &o, trigger, err, sizeof(err)));
        for (int i = 0; i < 1500; i++) {
            CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_OK);
            if (i % 100 == 0) {
                usleep(20000); /* room for the preparer to try, and fail */
                DIR *d = opendir(dir);
                CHILD_CHECK(d != NULL);
                for (struct dirent *e; (e = readdir(d)) != NULL;) {
                    char path[700];
                    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                    struct stat st;
                    if (strncmp(e->d_name, "wal-0", 5) == 0 && stat(path, &st) == 0)
                        CHILD_CHECK(st.st_size != SEG);
                }
                closedir(d);
            }
        }
        CHILD_CHECK(wal_sync(w, err, sizeof(err)) == CORE_OK);
        wal_close(w);
        struct wal_report r;
        CHILD_CHECK(replayed(dir, &r, err, sizeof(err)) == 1500 && !r.torn && !r.damaged);
        return 0;
    }
    /* exact counts of the log's writes: no preparer writing beside them */
    struct wal_options exact = {.no_prepare = true};
    CHILD_CHECK(open_armed(&w, dir, &exact, trigger, err, sizeof(err)));
    if (strcmp(mode, "write") == 0) {
        for (int i = 0; i < 3; i++)
            CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_OK);
        CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_EIO);
        CHILD_CHECK(strstr(err, strerror(ENOSPC)) != NULL);
        CHILD_CHECK(strstr(err, "wal-00000000000000000001.log") != NULL);
        CHILD_CHECK(!wal_broken(w)); /* cut back: ftruncate still works */
        CHILD_CHECK(wal_next_seq(w) == 4);
        CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_EIO);
        CHILD_CHECK(wal_sync(w, err, sizeof(err)) == CORE_OK);
        wal_close(w);
        struct wal_report r;
        CHILD_CHECK(replayed(dir, &r, err, sizeof(err)) == 3 && !r.torn);
        /* a number libc frees behind the shim's back and hands out again
         * (here: fclose, then a pipe) is not the affected file any more */
        char path[600];
        snprintf(path, sizeof(path), "%s/other", dir);
        int ofd = open(path, O_WRONLY | O_CREAT, 0644);
        CHILD_CHECK(ofd >= 0 && write(ofd, "x", 1) < 0);
        FILE *f = fdopen(ofd, "w");
        int pfd[2];
        CHILD_CHECK(f != NULL && pipe(pfd) == 0);
        fclose(f);
        int reused = fcntl(pfd[1], F_DUPFD, ofd);
        CHILD_CHECK(reused == ofd);
        CHILD_CHECK(write(reused, "x", 1) == 1);
    } else if (strcmp(mode, "sync") == 0) {
        CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_OK);
        CHILD_CHECK(wal_sync(w, err, sizeof(err)) == CORE_OK);
        CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_OK);
        CHILD_CHECK(wal_sync(w, err, sizeof(err)) == CORE_EIO);
        CHILD_CHECK(strstr(err, "fdatasync") != NULL && strstr(err, strerror(EIO)) != NULL);
        CHILD_CHECK(wal_broken(w));
        CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_EIO);
        CHILD_CHECK(wal_sync(w, err, sizeof(err)) == CORE_EIO);
        wal_close(w);
    } else {
        for (int i = 0; i < 5; i++) {
            CHILD_CHECK(wal_append(w, 1, &v, 1, NULL, err, sizeof(err)) == CORE_OK);
            CHILD_CHECK(wal_sync(w, err, sizeof(err)) == CORE_OK);
        }
        wal_close(w);
    }
    return 0;
}

/* Re-executes this binary as faultfs_child with the shim preloaded. */
static void run_faultfs_child(const char *mode, const char *const *env)
{
    char *base = testutil_tmpdir();
    char dir[512], trigger[512];
    snprintf(dir, sizeof(dir), "%s/log", base);
    snprintf(trigger, sizeof(trigger), "%s/go", base);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        setenv("LD_PRELOAD", FAULTFS_LIB, 1);
        /* a sanitized binary refuses a preloaded library ahead of its runtime */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[1024];
        snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0", asan ? asan : "",
                 asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        setenv("FAULTFS_PATH", dir, 1);
        setenv("FAULTFS_TRIGGER", trigger, 1);
        for (size_t i = 0; env[i] != NULL; i += 2)
            setenv(env[i], env[i + 1], 1);
        execl("/proc/self/exe", "test_wal", "--faultfs-child", mode, dir, trigger, (char *)NULL);
        _exit(127);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s child: status %d", mode,
                  status);
    testutil_rmtree(base);
}

START_TEST(faultfs_write_failures)
{
    const char *env[] = {"FAULTFS_WRITE_FAIL_AFTER", "3", "FAULTFS_ERRNO", "ENOSPC", NULL};
    run_faultfs_child("write", env);
}
END_TEST

START_TEST(faultfs_sync_failures)
{
    const char *env[] = {"FAULTFS_SYNC_FAIL_AFTER", "1", NULL};
    run_faultfs_child("sync", env);
}
END_TEST

START_TEST(faultfs_prepared_file_failures)
{
    const char *env[] = {"FAULTFS_WRITE_FAIL_AFTER", "0", "FAULTFS_ERRNO", "ENOSPC",
                         "FAULTFS_PATH", "wal-next.tmp", NULL};
    run_faultfs_child("prepfail", env);
}
END_TEST

START_TEST(faultfs_prepared_writeback_failures)
{
    const char *env[] = {"FAULTFS_RANGE_FAIL_AFTER", "0", "FAULTFS_PATH", "wal-next.tmp", NULL};
    run_faultfs_child("rangefail", env);
}
END_TEST

START_TEST(faultfs_other_paths_untouched)
{
    const char *env[] = {"FAULTFS_WRITE_FAIL_AFTER", "0", "FAULTFS_SYNC_FAIL_AFTER", "0",
                         "FAULTFS_PATH", "/no/such/place/", NULL};
    run_faultfs_child("none", env);
}
END_TEST

/* ---- prepared segments ------------------------------------------------------ */

/* Waits (up to 10 s) until the log's next segment is prepared. */
static void wait_prepared(const char *dir, uint64_t seg_bytes)
{
    char path[600];
    snprintf(path, sizeof path, "%s/wal-next.tmp", dir);
    for (int i = 0; i < 1000 && file_size(path) != (int64_t)seg_bytes; i++)
        usleep(10000);
    /* the size is written before the sync: give the sync its moment too */
    usleep(50000);
    ck_assert_int_eq(file_size(path), (int64_t)seg_bytes);
}

/* Copies every file of dir into a new folder: the disk as a crash (kill -9,
 * nothing of the page cache lost) would leave it, with the log open. */
static char *crash_copy(const char *dir)
{
    char *copy = testutil_tmpdir();
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cp -p '%s'/* '%s'/", dir, copy);
    ck_assert_int_eq(system(cmd), 0);
    return copy;
}

/* Records go into a prepared segment (a file of zeros already of full
 * length, overwritten): the log moves there at the first append after it is
 * ready, a crash copy replays every record with the zeros after them taken
 * as the end (not torn, not damage), wal_bytes is what the files take, and
 * wal_close cuts the unused zeros and removes the next prepared file. */
START_TEST(prepared_segments_hold_the_records)
{
    enum { SEG = 1 << 16 };
    char *dir = testutil_tmpdir();
    struct wal *w;
    char err[512] = "";
    struct wal_options o = {.segment_bytes = SEG};
    ck_assert_int_eq(wal_open(&w, dir, 1, &o, err, sizeof(err)), CORE_OK);
    /* the first segment grows; nothing is prepared before the run has
     * written a quarter of a segment (here 16 KB) */
    append_n(w, 5);
    usleep(100000);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/wal-next.tmp", dir);
    ck_assert_int_eq(file_size(tmp), -1);
    uint64_t first_end = 5;
    while (WAL_SEGMENT_HEADER + span_bytes(1, first_end) < SEG / 4)
        first_end++;
    append_n(w, (int)(first_end - 5));
    wait_prepared(dir, SEG);
    append_n(w, 20); /* the next append moves into the prepared one */
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    uint64_t firsts[64];
    ck_assert_uint_eq(list_segs(dir, firsts, 64), 2);
    ck_assert_uint_eq(firsts[1], first_end + 1);
    char *p1 = seg_path(dir, 1), *p2 = seg_path(dir, first_end + 1);
    ck_assert_int_eq(file_size(p1), WAL_SEGMENT_HEADER + span_bytes(1, first_end));
    ck_assert_int_eq(file_size(p2), SEG); /* records, then zeros */
    ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));

    char *copy = crash_copy(dir);
    uint64_t last = first_end + 20;
    struct wal_report r;
    struct seen sn = replay_ok(copy, 0, WAL_CHECK, &r);
    ck_assert_uint_eq(sn.first, 1);
    ck_assert_uint_eq(sn.last, last);
    ck_assert(!r.torn && !r.damaged);
    sn = replay_ok(copy, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(sn.last, last);
    ck_assert(!r.torn && !r.damaged);

    /* a torn append into the zeros: dropped as a torn tail, at its offset */
    char *c2 = seg_path(copy, first_end + 1);
    uint64_t end = WAL_SEGMENT_HEADER + span_bytes(first_end + 1, last);
    int fd = open(c2, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    unsigned char part[40];
    memset(part, 0x5a, sizeof part);
    ck_assert_int_eq(pwrite(fd, part, sizeof part, (off_t)end), (ssize_t)sizeof part);
    close(fd);
    sn = replay_ok(copy, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(sn.last, last);
    ck_assert(r.torn && !r.damaged);
    ck_assert_uint_eq(r.bad_offset, end);
    ck_assert_int_eq(file_size(c2), (int64_t)end);
    free(c2);
    testutil_rmtree(copy);

    /* a later append still lands after the records, and a clean close
     * leaves no zeros and no prepared file */
    append_n(w, 5);
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    wal_close(w);
    ck_assert_int_eq(file_size(p2),
                     (int64_t)(WAL_SEGMENT_HEADER + span_bytes(first_end + 1, last + 5)));
    ck_assert_int_eq(file_size(tmp), -1);
    sn = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(sn.last, last + 5);
    ck_assert(!r.torn && !r.damaged);
    free(p1);
    free(p2);
    testutil_rmtree(dir);
}
END_TEST

/* Segments fill and rotate through prepared files, records bigger than a
 * segment among them; a write cut back after a failure leaves a file that
 * grows. Every record replays, in order. */
START_TEST(prepared_rotation_in_order)
{
    enum { SEG = 8192 };
    char *dir = testutil_tmpdir();
    struct wal *w;
    char err[512] = "";
    struct wal_options o = {.segment_bytes = SEG};
    ck_assert_int_eq(wal_open(&w, dir, 1, &o, err, sizeof(err)), CORE_OK);
    for (int round = 0; round < 12; round++) {
        append_n(w, 25);
        wait_prepared(dir, SEG);
    }
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    ck_assert_uint_eq(wal_bytes(w), dir_bytes(dir));
    uint64_t last = wal_next_seq(w) - 1;
    char *copy = crash_copy(dir);
    struct wal_report r;
    struct seen sn = replay_ok(copy, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(sn.last, last);
    ck_assert(!r.torn && !r.damaged);
    testutil_rmtree(copy);
    wal_close(w);
    sn = replay_ok(dir, 0, WAL_CHECK, &r);
    ck_assert_uint_eq(sn.last, last);
    testutil_rmtree(dir);
}
END_TEST

/* A crash after a prepared segment got its header but before its first
 * record: a last segment of a header and zeros, which recovery cuts to its
 * header, so that the log opens again at its seq (it was refused for good:
 * "holds records from seq 11 on"). */
START_TEST(prepared_segment_without_records)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 10, 0);
    unsigned char seg[8192] = {0};
    memcpy(seg, WAL_MAGIC, 8);
    for (int i = 0; i < 8; i++)
        seg[8 + i] = (unsigned char)(11ull >> (8 * i));
    uint32_t crc = wal_crc32c(0, seg, 16);
    for (int i = 0; i < 4; i++)
        seg[16 + i] = (unsigned char)(crc >> (8 * i));
    free(testutil_write_file(dir, "wal-00000000000000000011.log", seg, sizeof seg));
    struct wal_report r;
    struct seen sn = replay_ok(dir, 0, WAL_CHECK, &r);
    ck_assert_uint_eq(sn.last, 10);
    ck_assert(!r.torn && !r.damaged);
    sn = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(sn.last, 10);
    ck_assert(!r.torn && !r.damaged);
    char *p = seg_path(dir, 11);
    ck_assert_int_eq(file_size(p), WAL_SEGMENT_HEADER);
    struct wal *w;
    char err[512] = "";
    ck_assert_msg(wal_open(&w, dir, 11, NULL, err, sizeof(err)) == CORE_OK, "%s", err);
    append_n(w, 2);
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    wal_close(w);
    sn = replay_ok(dir, 0, WAL_CHECK, &r);
    ck_assert_uint_eq(sn.last, 12);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

/* A crash after a prepared file was renamed into place but before its
 * header was written: a last segment of zeros, a torn tail that recovery
 * removes; and a leftover wal-next.tmp is never read as a segment. */
START_TEST(prepared_leftovers_after_a_crash)
{
    char *dir = testutil_tmpdir();
    make_log(dir, 10, 0);
    char *p = seg_path(dir, 11);
    unsigned char zeros[4096] = {0};
    free(testutil_write_file(dir, "wal-00000000000000000011.log", zeros, sizeof zeros));
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/wal-next.tmp", dir);
    unsigned char junk[100];
    memset(junk, 0x33, sizeof junk);
    free(testutil_write_file(dir, "wal-next.tmp", junk, sizeof junk));
    struct wal_report r;
    struct seen sn = replay_ok(dir, 0, WAL_RECOVER, &r);
    ck_assert_uint_eq(sn.last, 10);
    ck_assert(r.torn && !r.damaged);
    ck_assert_int_eq(file_size(p), -1);
    struct wal *w;
    char err[512] = "";
    ck_assert_int_eq(wal_open(&w, dir, 11, NULL, err, sizeof(err)), CORE_OK);
    append_n(w, 3);
    ck_assert_int_eq(wal_sync(w, err, sizeof(err)), CORE_OK);
    wal_close(w);
    ck_assert_int_eq(file_size(tmp), -1);
    sn = replay_ok(dir, 0, WAL_CHECK, &r);
    ck_assert_uint_eq(sn.last, 13);
    free(p);
    testutil_rmtree(dir);
}
END_TEST

/* ---- kill -9 mid-write ------------------------------------------------------ */

/* A writer process: appends generated records from next_seq on into
 * segments of 16 KB (so that it moves through prepared segments all the
 * time), syncing every few records and reporting each synced seq on fd out;
 * runs until killed. */
static void kill9_writer(const char *dir, uint64_t next_seq, int out, unsigned seed)
{
    struct wal *w;
    char err[512] = "";
    struct wal_options o = {.segment_bytes = 16384};
    if (wal_open(&w, dir, next_seq, &o, err, sizeof(err)) != CORE_OK) {
        fprintf(stderr, "kill9 writer: %s\n", err);
        _exit(1);
    }
    for (unsigned i = seed;; i = i * 1103515245u + 12345u) {
        int burst = 1 + (int)((i >> 16) % 7);
        for (int k = 0; k < burst; k++)
            if (append_gen(w, err, sizeof(err)) != CORE_OK) {
                fprintf(stderr, "kill9 writer: append: %s\n", err);
                _exit(1);
            }
        if (wal_sync(w, err, sizeof(err)) != CORE_OK) {
            fprintf(stderr, "kill9 writer: sync: %s\n", err);
            _exit(1);
        }
        uint64_t synced = wal_next_seq(w) - 1;
        if (write(out, &synced, sizeof synced) != (ssize_t)sizeof synced)
            _exit(1);
    }
}

/* kill -9 at random moments of a writer that rotates through prepared
 * segments: every synced record replays, in order and intact, recovery
 * never finds damage, and the log opens again where it ended (a crash
 * between a prepared segment's header and its first record included). */
START_TEST(kill9_mid_write_through_prepared_segments)
{
    char *dir = testutil_tmpdir();
    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "kill9_mid_write_through_prepared_segments: seed %u\n", seed);
    uint64_t next_seq = 1;
    int killed_in_prepared = 0;
    for (int cycle = 0; cycle < 25; cycle++) {
        int p[2];
        ck_assert_int_eq(pipe(p), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            close(p[0]);
            kill9_writer(dir, next_seq, p[1], seed + (unsigned)cycle);
        }
        close(p[1]);
        int ms = 5 + (int)((seed * 2654435761u + (unsigned)cycle * 40503u) % 150);
        uint64_t acked = next_seq - 1, got;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
                break;
            if (read(p[0], &got, sizeof got) != (ssize_t)sizeof got)
                break;
            acked = got;
        }
        kill(pid, SIGKILL);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                      "cycle %d: the writer ended on its own (status %d)", cycle, status);
        while (read(p[0], &got, sizeof got) == (ssize_t)sizeof got)
            acked = got; /* reported before the kill */
        close(p[0]);
        uint64_t segs[4096];
        size_t nsegs = list_segs(dir, segs, 4096);
        char *lastp = seg_path(dir, segs[nsegs - 1]);
        killed_in_prepared += file_size(lastp) == 16384; /* records, then zeros */
        free(lastp);
        struct wal_report r;
        struct seen sn = replay_ok(dir, 0, WAL_RECOVER, &r);
        ck_assert_msg(!r.damaged, "seed %u cycle %d: damage at %s:%llu", seed, cycle,
                      r.bad_file, (unsigned long long)r.bad_offset);
        ck_assert_msg(sn.last >= acked, "seed %u cycle %d: synced seq %llu, replayed up to %llu",
                      seed, cycle, (unsigned long long)acked, (unsigned long long)sn.last);
        ck_assert_uint_eq(sn.first, 1);
        next_seq = sn.last + 1;
    }
    ck_assert_uint_gt(next_seq, 200);
    fprintf(stderr, "  %d of 25 kills landed while a prepared segment was being written\n",
            killed_in_prepared);
    ck_assert_int_gt(killed_in_prepared, 5);
    uint64_t firsts[4096];
    ck_assert_uint_gt(list_segs(dir, firsts, 4096), 25); /* it did rotate */
    testutil_rmtree(dir);
}
END_TEST

static Suite *wal_suite(void)
{
    Suite *s = suite_create("wal");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, crc_known_vectors);
    tcase_add_test(tc, crc_hardware_equals_portable);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, after_seq_filters);
    tcase_add_test(tc, reopen_and_continue);
    tcase_add_test(tc, rotation);
    tcase_add_test(tc, torn_tail_every_offset);
    tcase_add_test(tc, torn_tail_check_changes_nothing);
    tcase_add_test(tc, torn_tail_zero_and_garbage_extension);
    tcase_add_test(tc, torn_segment_header);
    tcase_add_test(tc, flipped_bit_in_payload);
    tcase_add_test(tc, flipped_bit_in_header_fields);
    tcase_add_test(tc, flipped_bit_in_padding);
    tcase_add_test(tc, repair_cuts_at_damage);
    tcase_add_test(tc, bad_end_of_earlier_segment_is_damage);
    tcase_add_test(tc, gap_between_segments);
    tcase_add_test(tc, gap_before_first_record);
    tcase_add_test(tc, remove_below);
    tcase_add_test(tc, sync_concurrent_with_rotation);
    tcase_add_test(tc, efbig_is_eio);
    tcase_add_test(tc, faultfs_write_failures);
    tcase_add_test(tc, faultfs_sync_failures);
    tcase_add_test(tc, faultfs_prepared_writeback_failures);
    tcase_add_test(tc, faultfs_other_paths_untouched);
    tcase_add_test(tc, faultfs_prepared_file_failures);
    tcase_add_test(tc, prepared_segments_hold_the_records);
    tcase_add_test(tc, prepared_rotation_in_order);
    tcase_add_test(tc, prepared_leftovers_after_a_crash);
    tcase_add_test(tc, prepared_segment_without_records);
    tcase_add_test(tc, kill9_mid_write_through_prepared_segments);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--faultfs-child") == 0)
        return faultfs_child(argv[2], argv[3], argv[4]);
    SRunner *sr = srunner_create(wal_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
