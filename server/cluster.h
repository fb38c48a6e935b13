/* cluster.h - cluster mode: each table's log is a replicated NATS JetStream
 * stream instead of the local log, and every server is a deterministic
 * state machine over it (API.md, "Cluster mode").
 *
 * A write received by any server is validated (handlers.c), published to
 * the table's stream as the same record bytes the local log would hold
 * (journal_record_parts), and answered once JetStream has acknowledged it
 * AND this server's own ordered consumer has applied it, in stream order,
 * through journal_apply_payload: the one apply path of local writes, of
 * replay and of replication. The stream sequence is the table's seq, so
 * two replicas at the same seq hold the same bits.
 *
 * Names (so that a table can later be split into shards, a stream each):
 *   stream   ES-<table>-<shard>       ('.' in a table name becomes '~')
 *   subject  es.<table>.<shard>        records, one message each
 *   stream   ESSNAP-<table>-<shard>   snapshots published for the cluster
 *   subjects essnap.<table>.<shard>.chunk   a snapshot's files, in chunks
 *            essnap.<table>.<shard>.commit  one JSON message per complete
 *                                           snapshot: its seq and files
 * The first tokens differ (es / essnap), so no table's subjects can overlap
 * another's. Snapshots go through JetStream (R replicas, like the records)
 * rather than peer to peer over HTTP: every starting server can reach them
 * whenever it can reach the stream, so the stream can be purged below the
 * newest one without asking which peers are up; libnats 3.4 has no object
 * store, so files are chunked into a stream of their own.
 * This issue has one shard per table: shard 0.
 *
 * Threads. libnats runs its own threads: the ack handler of asynchronous
 * publishes runs on one, each table's consumer callback on its
 * subscription's thread; both complete writes (journal_write.done), as does
 * the cluster's sweeper thread (overdue acks). The cluster's publisher
 * thread alone publishes records. Any thread may call cluster_submit. The
 * loader thread opens tables. */
#ifndef SERVER_CLUSTER_H
#define SERVER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "journal.h"
#include "table.h"

struct cluster;
struct cluster_table;
struct registry;

/* Connects to c->cluster_nats in the background (the server starts and
 * answers /healthz while NATS is down; reconnects forever). c must outlive
 * the cluster. CORE_OK, CORE_EINVAL (bad URL list; err says why) or
 * CORE_ENOMEM. */
int cluster_new(struct cluster **out, const struct config *c, char *err, size_t errlen);

/* Closes the connection; every table must be closed first. NULL is a no-op. */
void cluster_free(struct cluster *cl);

/* Makes sure the table's stream exists (creating it with
 * cluster.stream_replicas file-backed replicas), waiting for JetStream
 * while it is unreachable. Loader thread. CORE_OK, CORE_EUNAVAILABLE (the
 * cluster is closing), CORE_EIO (JetStream refused; err says why). */
int cluster_table_open(struct cluster_table **out, struct cluster *cl, const char *name,
                       char *err, size_t errlen);

/* When the cluster holds a snapshot of the table newer than after_seq (the
 * newest in data_dir), fetches it into <data_dir>/<name>/snapshot-<seq>/ so
 * that the usual load finds it. Also needed when the stream no longer holds
 * the records after after_seq. Sets *fetched. Loader thread. */
int cluster_table_fetch_snapshot(struct cluster_table *ct, const char *data_dir,
                                 uint64_t after_seq, bool *fetched, char *err, size_t errlen);

/* Starts applying the stream to t from table_log_seq(t) + 1 and returns
 * once t has caught up with the stream's end as it was when called: then
 * the table may be served. Routes t's max_norm renormalizations through
 * the stream. Loader thread. CORE_OK, CORE_EFORMAT (t is past the stream's
 * end, or the stream lost records t still needs; err says which),
 * CORE_EIO. */
int cluster_table_start(struct cluster_table *ct, struct table *t, char *err, size_t errlen);

/* Waits (up to timeout_ms) for the writes in flight to be answered, then
 * answers the rest 503; stops applying the stream; detaches from the table.
 * NULL is a no-op; closing twice is too. */
void cluster_table_flush(struct cluster_table *ct, int timeout_ms);
void cluster_table_close(struct cluster_table *ct);

/* Publishes w (validated) to the stream; w->done runs once the write is
 * acknowledged and applied (rc CORE_OK, seq, version, rows) or failed
 * having changed nothing (CORE_EUNAVAILABLE: JetStream unreachable, no
 * quorum, no ack in time; err says which). Any thread; never blocks on the
 * network. */
void cluster_submit(struct cluster_table *ct, struct journal_write *w);

/* Waits up to wait_ms for the table to have applied seq; true when it has. */
bool cluster_table_wait_seq(struct cluster_table *ct, uint64_t seq, int wait_ms);

/* Bytes of records applied since the table started (the snapshot trigger
 * of log_max_bytes in cluster mode). */
uint64_t cluster_table_applied_bytes(const struct cluster_table *ct);

/* Publishes the snapshot directory dir (holding log seq seq) for the
 * cluster unless the cluster already has one as new (or got one in the
 * last 30 s: replicas reach log_max_bytes together), then purges the
 * table's stream below it: every starting server can reach that snapshot,
 * so no one needs those records again. Any thread but a libnats one.
 * CORE_OK (also when skipped), CORE_EIO. */
int cluster_table_publish_snapshot(struct cluster_table *ct, const char *dir, uint64_t seq,
                                   char *err, size_t errlen);

/* GET /v1/cluster: {"node", "tables": [{"name", "seq", "stream_seq", ...}],
 * "nats": {...}}. Any thread. */
void cluster_render_info(struct cluster *cl, struct registry *r, struct buf *b);

/* The cluster's Prometheus families (replication lag per table, publish
 * latency). Nothing when cl is NULL. */
void cluster_render_metrics(struct cluster *cl, struct registry *r, struct buf *b);

/* Stream and subject of table name's shard, for tests and tools. */
int cluster_stream_name(const char *table, unsigned shard, char *out, size_t len);

#endif
