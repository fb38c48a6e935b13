/* wal.h - a table's write-ahead log on disk: where a write's bytes reach the
 * disk before the write is answered. Records are opaque here (a kind and a
 * payload); journal.c gives them meaning.
 *
 *   <dir>/wal-<first seq, 20 digits>.log    one segment, appended in order
 *
 * A segment starts with a 24-byte header (magic "ESWAL001", the seq of its
 * first record, a CRC32C of those 16 bytes, 4 zero bytes); then records,
 * each a 24-byte header followed by its payload padded with zeros to a
 * multiple of 8 bytes (so the floats of a payload are 4-byte aligned):
 *
 *   u32 len      payload bytes, without the padding
 *   u32 crc      CRC32C (Castagnoli) of the 16 header bytes that follow and
 *                of the payload (not the padding)
 *   u64 seq      1, 2, 3, ... without gaps across segments
 *   u32 kind     the caller's record kind, != 0
 *   u32 reserved 0
 *
 * All integers little-endian. A segment is named after its first record's
 * seq; the next segment's first seq is one past the last seq of the one
 * before. Segments are rotated past wal_options.segment_bytes (a record is
 * never split across segments) and deleted whole by wal_remove_below.
 *
 * Zeros. Segments are prepared ahead of time as segment_bytes of zeros
 * (records then overwrite blocks the file already has, and fdatasync has
 * no size or allocation to commit: 1.4x to 2.7x cheaper here), so a
 * segment's records may be followed by zeros to the end of the file: the
 * unused part, not damage (rotation and wal_close cut it; a crash leaves
 * it). A record header of zeros can never check (kind 0).
 *
 * Damage. A record that does not check (short header, length past the end
 * of the file, CRC mismatch, seq out of order, nonzero padding or reserved
 * field) in the last segment with nothing valid after it (no record that
 * checks at any later 8-aligned offset) is a torn tail: a crash during an
 * append. So is a last segment whose own header does not check and that
 * holds no valid record (a crash right after creating it). Anything else is
 * damage before the tail, including a segment that does not continue the
 * seqs of the one before it.
 *
 * Threads: wal_append is called by one thread at a time (the caller holds
 * its own append lock); wal_sync may run concurrently with wal_append from
 * one other thread; the getters are safe from any thread. */
#ifndef CORE_WAL_H
#define CORE_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define WAL_SEGMENT_BYTES_DEFAULT ((uint64_t)64 << 20)
#define WAL_RECORD_MAX ((uint64_t)1 << 31) /* payload bytes of one record */

struct wal;

struct wal_options {
    /* rotate before a record that would take a segment holding records
     * past this (one larger record gets a segment of its own); 0 = default */
    uint64_t segment_bytes;
    /* no prepared segments: every segment grows as it is written (slower
     * syncs; for tests that count the log's writes) */
    bool no_prepare;
};

/* Opens the log in dir (created with its parent when missing) for appending
 * records from next_seq on (>= 1). The existing segments must already be
 * recovered (wal_replay with torn tails truncated): this starts a new
 * segment named after next_seq, so the files of earlier runs are never
 * appended to (an empty one already named so, left by a crash or a cut, is
 * replaced). Creation of the segment and of dir are fsynced. When next_seq
 * is past the log's end, the earlier segments stay (replay accepts the gap
 * while the snapshot covers it): wal_remove_below(next_seq - 1) drops them.
 * Returns CORE_OK, CORE_EIO (err names the path and errno text),
 * CORE_ENOMEM, or CORE_EINVAL when a segment there already starts at
 * next_seq or later with records (the log was not replayed first). */
int wal_open(struct wal **out, const char *dir, uint64_t next_seq,
             const struct wal_options *o, char *err, size_t errlen);

/* Closes the files; NULL is a no-op. Does not sync: call wal_sync first when
 * the tail must be durable. */
void wal_close(struct wal *w);

/* Appends one record made of the concatenation of parts[0..nparts) with seq
 * wal_next_seq(w) (returned in *seq_out), rotating to a new segment first
 * when the current one is full (the old one is fdatasync'ed before the new
 * one takes records, so durability stays a prefix). Not durable until
 * wal_sync returns CORE_OK. On failure the file is cut back to where the
 * record began, the seq is not used, and CORE_EIO is returned with err
 * naming the file and errno text (ENOSPC, EFBIG, EIO...); if the cut fails
 * too, the log turns broken (wal_broken) and every later append or sync
 * fails. kind != 0; total payload <= WAL_RECORD_MAX (else CORE_ETOOBIG). */
int wal_append(struct wal *w, uint32_t kind, const struct iovec *parts, int nparts,
               uint64_t *seq_out, char *err, size_t errlen);

/* Makes every record appended before the call durable (fdatasync of the
 * current segment; a new segment's directory entry was synced when it was
 * created); returns at once when nothing was appended since the last sync.
 * On failure the log is broken for good (PostgreSQL's lesson: after a
 * failed fsync the page cache cannot be trusted; so is any fsync failure
 * during rotation), and CORE_EIO is returned with err set. */
int wal_sync(struct wal *w, char *err, size_t errlen);

/* Where the log ends now, for wal_rewind. */
struct wal_mark {
    uint64_t segment_first; /* the current segment */
    uint64_t size;          /* its length */
    uint64_t seq;           /* the next append's seq */
};

/* Fills *m with the end of the log; from the appending thread (or with its
 * lock held). */
void wal_mark(const struct wal *w, struct wal_mark *m);

/* Cuts the log back to *m, dropping every record appended since: for the
 * records a failed sync covered, so that a write answered "not durable"
 * cannot come back at the next start. Only within the current segment (a
 * rotation synced the older one: CORE_EINVAL then, nothing cut). Appending
 * thread (or its lock held); waits for a sync in progress. CORE_OK, or
 * CORE_EIO when the file cannot be cut (err says why). The log stays
 * broken if it was. */
int wal_rewind(struct wal *w, const struct wal_mark *m, char *err, size_t errlen);

/* The seq the next append will get. */
uint64_t wal_next_seq(const struct wal *w);

/* True once an append could not be cut back or a sync failed. */
bool wal_broken(const struct wal *w);

/* Bytes the segments of the log take on disk, including the ones of
 * earlier runs that wal_remove_below has not deleted yet and the unused
 * zeros of the current segment (not the next one being prepared). */
uint64_t wal_bytes(const struct wal *w);

/* Deletes every segment whose records all have seq <= seq (so the records
 * after seq stay readable), never the one being appended to, and fsyncs
 * the directory. *removed (may be NULL) gets how many files went. Returns
 * CORE_OK or CORE_EIO. Any thread, concurrent with appends and syncs. */
int wal_remove_below(struct wal *w, uint64_t seq, size_t *removed, char *err, size_t errlen);

/* ---- reading back ------------------------------------------------------ */

/* Called for each record with seq > after_seq, in seq order. payload is
 * 8-byte aligned and valid only during the call. A nonzero return stops the
 * replay and is returned by wal_replay. */
typedef int (*wal_record_fn)(void *ud, uint64_t seq, uint32_t kind, const void *payload,
                             size_t len);

enum wal_repair {
    WAL_RECOVER, /* drop a torn tail (truncate it), refuse damage before it */
    WAL_REPAIR,  /* also cut the log at damage before the tail (--repair-log) */
    WAL_CHECK,   /* change nothing on disk; report torn tails and damage */
};

struct wal_report {
    uint64_t first_seq;   /* first record seen in the log, 0 when empty */
    uint64_t last_seq;    /* last valid record, 0 when the log is empty */
    uint64_t records;     /* valid records read (all, not only those replayed) */
    uint64_t replayed;    /* records passed to fn */
    uint64_t bytes;       /* bytes of the valid records read */
    /* set when a torn tail or damage was found (and, but for WAL_CHECK, cut):
     * the file, the offset of the first bad byte, and the bytes and whole
     * segments that were (or, for WAL_CHECK, would be) dropped */
    bool torn;            /* a torn tail */
    bool damaged;         /* damage before the tail */
    char bad_file[512];
    uint64_t bad_offset;
    uint64_t dropped_bytes;
    uint64_t dropped_segments;
};

/* Reads the log in dir (a missing or empty dir is an empty log) and calls
 * fn (may be NULL: only verify) for every valid record with seq >
 * after_seq, as it goes: when damage turns up, fn has seen the records
 * before it. Checks that seqs run without gaps from the first segment on;
 * a log whose first record is after after_seq + 1 (the records in between
 * are gone) is CORE_EFORMAT with err naming the missing range (a caller
 * starting from an older snapshot must not skip records silently), in
 * every mode. A gap between segments is damage at the start of the later
 * one, unless every missing seq is <= after_seq (then it is skipped).
 * Returns CORE_OK (report filled; a torn tail is not an error, nor damage
 * that WAL_REPAIR cut), CORE_EFORMAT for damage before the tail under
 * WAL_RECOVER and WAL_CHECK (err names the file, offset and what is wrong;
 * report filled with what WAL_REPAIR would drop), CORE_EIO, CORE_ENOMEM,
 * or fn's nonzero return. Not concurrent with a wal_open on the same dir. */
int wal_replay(const char *dir, uint64_t after_seq, enum wal_repair mode, wal_record_fn fn,
               void *ud, struct wal_report *report, char *err, size_t errlen);

/* CRC32C (Castagnoli) of data, continuing from crc (0 to start); with
 * SSE4.2 where the build has it. */
uint32_t wal_crc32c(uint32_t crc, const void *data, size_t len);

#endif
