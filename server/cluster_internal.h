/* cluster_internal.h - what cluster.c (the stream, writes, the consumer)
 * and cluster_snapshot.c (snapshots published for the cluster, purges)
 * share. Not for other modules. */
#ifndef SERVER_CLUSTER_INTERNAL_H
#define SERVER_CLUSTER_INTERNAL_H

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>

#include "cluster.h"

#define LAG_NBUCKETS 12

struct histogram {
    _Atomic uint64_t buckets[LAG_NBUCKETS]; /* not cumulative */
    _Atomic uint64_t count, sum_ns;
};

struct pending {
    uint64_t id;
    struct journal_write *w;
    struct cluster_table *ct;
    uint64_t t0_ns;
    bool acked, applied;
    struct pending *next;
};

/* A message waiting for the publisher thread. */
struct outgoing {
    natsMsg *msg;
    uint64_t id; /* its pending write */
    struct outgoing *next;
};

struct cluster {
    const struct config *cfg;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    char node[128];
    uint64_t nonce;       /* tells this process's records from others' */
    char nonce_hex[17];
    _Atomic uint64_t next_id;
    _Atomic bool closing;
    /* kept by libnats' callbacks: the hot path never asks the connection,
     * whose lock a reconnect attempt may hold for its whole handshake */
    _Atomic bool up;
    pthread_mutex_t mu;   /* pending, sweeping */
    pthread_cond_t sweep_cv;
    bool sweeping;        /* the sweeper thread runs */
    pthread_t sweeper;
    /* Publishing happens on a thread of its own: libnats holds the
     * connection's lock through a reconnect's handshake, which must never
     * stall a request thread. */
    pthread_cond_t out_cv;
    struct outgoing *out_head, *out_tail;
    bool publishing;      /* the publisher thread runs */
    pthread_t publisher;
    _Atomic int64_t max_payload; /* the server's, as of the last connect */
    pthread_mutex_t connect_mu;  /* the first connect (nc, js set once) */
    char url[256];        /* the server connected to, under mu */
    struct pending *pending;
    struct histogram publish; /* publish to ack */
    _Atomic uint64_t publish_errors;
    _Atomic uint64_t disconnects;
};

struct cluster_table {
    struct cluster *cl;
    char name[TABLE_NAME_MAX + 1];
    char stream[TABLE_NAME_MAX + 16];
    char subject[TABLE_NAME_MAX + 16];
    char snap_stream[TABLE_NAME_MAX + 20];
    char snap_chunk[TABLE_NAME_MAX + 32];
    char snap_commit[TABLE_NAME_MAX + 32];
    struct table *t;
    natsSubscription *sub;
    _Atomic bool broken;       /* the table fell behind its stream for good */
    _Atomic bool closed;
    _Atomic uint64_t stream_seq; /* the stream's last seq as last seen */
    _Atomic uint64_t applied_bytes;
    _Atomic uint64_t applied_records;
    _Atomic uint64_t last_lag_ns; /* stored-to-applied delay of the last record */
    _Atomic uint64_t snapshot_seq; /* newest snapshot published for the cluster */
    struct histogram lag;
    _Atomic bool sub_done;        /* libnats delivers nothing more (on_complete) */
    pthread_mutex_t seq_mu;       /* min_seq waiters */
    pthread_cond_t seq_cv;
    _Atomic int waiters;
    char why[160];                /* why it broke; written once */
};

/* True for the errors that mean "JetStream is not reachable now". */
bool cluster_transient(natsStatus s);

#endif
