/* journal.h - the order in which a table's writes become durable and
 * visible: validate, append to the log (wal.h), make it durable (one
 * fdatasync shared by every write appended meanwhile: group commit), apply
 * in log order, answer. And the way back: replaying a log onto a table.
 *
 * A journal owns one committer thread per table. Writers call
 * journal_submit with a fully validated write and get a callback when it is
 * durable and applied (or failed, having changed nothing). The committer
 * takes every record appended so far, syncs once, applies them in seq order
 * under the table's write lock, and calls each one's done. So a reader never
 * sees a write that a crash could still take back, and replay, which
 * applies the same records through the same code in the same order, gives
 * the same bits.
 *
 * Records hold the validated request, not the resulting rows, plus the
 * optimizer hyperparameters in effect (lr override folded in), so replay
 * does not depend on the configuration of the run that replays:
 *   gradients  ids[n] (int64), grads[n x dim] (float32), optimizer config
 *   rows       ids[n], vectors[n x dim]
 *   delete     keys[n] (keyed tables): DELETE /v1/tables/{t}/rows
 *   renorm     ids[m]: a max_norm renormalization done by a lookup; needs no
 *              sync of its own (a later durable record carries it), so it
 *              is the one write seen before it is durable: lost in a crash,
 *              the next lookup of the row redoes it to the same bits.
 *
 * On a keyed table (table.h) ids are keys, and inserts, evictions (ttl at
 * the head's time_ms, lru) and deletes happen inside these records, so the
 * log orders them too; rows records of keyed tables carry the optimizer
 * config as well (a reused row's fresh adagrad state needs it). A keyed
 * write refused for capacity at apply keeps its seq and answers
 * CORE_ECAPACITY without breaking the journal: replay refuses it the same.
 *
 * Durability modes: JOURNAL_SYNC (durable before done), JOURNAL_INTERVAL
 * (applied at once, synced every interval_ms), JOURNAL_NONE (no log file;
 * writes are applied in order, seq still counts them).
 *
 * Failure: a failed append answers that write CORE_EIO and changes nothing;
 * a failed sync fails every write it covered and breaks the journal for
 * good: writes (and renormalizations) answer CORE_EIO, reads go on. */
#ifndef CORE_JOURNAL_H
#define CORE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "table.h"
#include "wal.h"

struct journal;

enum journal_durability { JOURNAL_SYNC, JOURNAL_INTERVAL, JOURNAL_NONE };

enum journal_op {
    JOURNAL_GRADIENTS = 1, /* table_apply_gradients */
    JOURNAL_ROWS = 2,      /* table_assign_rows */
    JOURNAL_RENORM = 3,    /* table_renorm, from lookups with max_norm */
    JOURNAL_DELETE = 4,    /* keyed tables: ids[n] are keys to remove (dim 0) */
};

/* The fixed head of every record's payload (host byte order, which is
 * little-endian); ids[n] (int64) and values[n x dim] (float32) follow. */
struct journal_record_head {
    uint32_t format;     /* 1 */
    uint32_t optim_kind; /* enum optim_kind, gradients only */
    uint64_t n;          /* ids */
    uint64_t dim;        /* floats per id (0 for renorm) */
    uint64_t time_ms;    /* wall clock at append (CLOCK_REALTIME) */
    double lr, beta1, beta2, eps, lr_decay, initial_accumulator_value;
};

struct journal_options {
    enum journal_durability durability;
    uint32_t interval_ms;       /* JOURNAL_INTERVAL; 0 = 1000 */
    uint64_t segment_bytes;     /* wal segment size; 0 = WAL_SEGMENT_BYTES_DEFAULT */
};

/* One write on its way through the journal. The caller fills the request
 * part, keeps ids/values alive and the struct in place until done runs. */
struct journal_write {
    enum journal_op op;
    const int64_t *ids;
    size_t n;
    const float *values; /* n x dim: gradients or row vectors; NULL for renorm */
    double lr;           /* gradients: > 0 overrides the configured lr */
    /* Filled before done: rc is CORE_OK, CORE_EIO (not durable, nothing
     * applied; err says why), or the table's own error for a write that
     * failed to apply (never expected after validation). */
    int rc;
    uint64_t seq;     /* the record's seq (0 when it never got one) */
    uint64_t version; /* the table's version after it */
    size_t rows;      /* distinct rows changed */
    size_t inserted;  /* keyed tables: keys new to the table */
    char err[320];
    /* Called exactly once, from the committer thread, or from the
     * submitting thread when the write fails before it is queued. */
    void (*done)(struct journal_write *w);
    void *ud;
    struct journal_write *next; /* the journal's */
    struct wal_mark mark;       /* the journal's: the log's end before this record */
    uint64_t time_ms;           /* the journal's: the record's time_ms */
};

/* Opens t's journal with its log in wal_dir (unused with JOURNAL_NONE),
 * appending from seq table_log_seq(t) + 1: replay (journal_replay) must
 * have brought t up to the end of the log first. Starts the committer
 * thread and routes t's max_norm renormalizations through the journal.
 * Returns CORE_OK, CORE_EIO (err says why) or CORE_ENOMEM. */
int journal_open(struct journal **out, struct table *t, const char *wal_dir,
                 const struct journal_options *o, char *err, size_t errlen);

/* Finishes every write submitted (each gets its done), syncs the log,
 * stops the committer, detaches from the table and frees j. NULL is a
 * no-op. Returns CORE_OK, or CORE_EIO when the final sync failed or the
 * journal was broken (writes answered before that are durable; with
 * JOURNAL_INTERVAL, the ones since the last good sync may not be). */
int journal_close(struct journal *j);

/* Waits until every write submitted so far has had its done. NULL is a
 * no-op. Any thread but the committer. */
void journal_flush(struct journal *j);

/* Queues a validated write (see struct journal_write). Any thread; never
 * blocks on the disk's sync (only on the append's write()). */
void journal_submit(struct journal *j, struct journal_write *w);

/* Submits w and waits for its done; for callers that may block (tests,
 * renormalizations). w->done and w->ud are the journal's. */
void journal_submit_wait(struct journal *j, struct journal_write *w);

/* The same for any log: calls submit(target, w) with w->done and w->ud set
 * to a waiter of its own, and returns once done has run (cluster mode's
 * renormalizations wait on their stream this way). */
void journal_write_wait(struct journal_write *w,
                        void (*submit)(void *target, struct journal_write *w), void *target);

/* True once a sync failed or an append could not be undone. */
bool journal_broken(const struct journal *j);

/* Counters since the journal opened, for metrics. */
struct journal_stats {
    uint64_t records;       /* records appended (or, with JOURNAL_NONE, applied) */
    uint64_t syncs;         /* fdatasyncs that covered writes */
    uint64_t sync_ns;       /* time spent in them */
    uint64_t synced_writes; /* writes answered after a sync: / syncs = group size */
};

/* Fills *st; any thread (the counters are read one by one, not as a set). */
void journal_get_stats(const struct journal *j, struct journal_stats *st);

/* Bytes appended to the log by this journal since it opened (monotonic):
 * the caller compares it with the value at its last snapshot. */
uint64_t journal_appended_bytes(const struct journal *j);

/* Deletes the log segments whose records all have seq <= seq (the oldest
 * snapshot still kept holds them). CORE_OK or CORE_EIO. Any thread. */
int journal_trim(struct journal *j, uint64_t seq, size_t *removed, char *err, size_t errlen);

/* The payload of w's record as parts[0..3) (returns how many): head, which
 * the caller provides and this fills, then w's ids and values in place.
 * For a log other than the local one (cluster mode publishes the same
 * bytes). */
int journal_record_parts(const struct table *t, const struct journal_write *w,
                         struct journal_record_head *head, struct iovec parts[3]);

/* Applies one record's payload (as journal_record_parts made it) to t:
 * the one code path of live writes and of replay, from any log. seq must
 * be table_log_seq(t) + 1. Fills *version and *rows (may be NULL). Returns
 * CORE_OK, CORE_ENOMEM, or CORE_EFORMAT (err names the seq) when the
 * payload does not decode, does not fit t, or cannot be applied. */
int journal_apply_payload(struct table *t, uint64_t seq, uint32_t kind, const void *payload,
                          size_t len, uint64_t *version, size_t *rows, char *err,
                          size_t errlen);

/* journal_apply_payload that also says whether the record was a keyed write
 * refused for capacity (*refused; it applied as a refusal: CORE_OK) and how
 * many keys it inserted (*inserted); either may be NULL. max_time_ms, when
 * not 0, caps the record's time_ms (the clock of ttl and lru): cluster mode
 * passes the time JetStream stored the record, the same on every replica,
 * so that a publisher whose clock runs ahead cannot expire keys early. */
int journal_apply_payload_keyed(struct table *t, uint64_t seq, uint32_t kind,
                                const void *payload, size_t len, uint64_t max_time_ms,
                                uint64_t *version, size_t *rows, size_t *inserted,
                                bool *refused, char *err, size_t errlen);

/* What a keyed write refused for capacity answers (507). */
#define JOURNAL_FULL_MESSAGE                                                                  \
    "the keyed table is full (evict: none, or more distinct keys than its capacity); nothing " \
    "was changed"

/* Applies to t every record of the log in wal_dir after table_log_seq(t),
 * in order, through the same code as live writes (frozen tables too: the
 * write was accepted when it was logged). mode as wal_replay; report may
 * be NULL. Returns CORE_OK, wal_replay's errors, or CORE_EFORMAT when a
 * record cannot be decoded or does not fit the table (err names the seq). */
int journal_replay(struct table *t, const char *wal_dir, enum wal_repair mode,
                   struct wal_report *report, char *err, size_t errlen);

#endif
