/* cluster.c - cluster mode over NATS JetStream; see cluster.h.
 *
 * A write's way. cluster_submit (a libmicrohttpd or pool thread) copies the
 * record into a message with two headers, Es-Kind (the journal_op) and
 * Es-Write (this process's nonce and a counter), registers a struct
 * pending and queues the message for the publisher thread, which publishes
 * it asynchronously (request threads never call libnats: it may hold the
 * connection's lock for a reconnect's whole handshake). The sweeper thread
 * fails a write whose ack is overdue. Two events complete it, in either
 * order, under cl->mu:
 *   - the ack (libnats' ack handler): JetStream stored it on a quorum;
 *   - the apply (the table's consumer thread): the ordered consumer handed
 *     over the record at its stream sequence, journal_apply_payload applied
 *     it, and the header says it is ours, so version, rows and seq are
 *     filled in.
 * The second of the two calls done. A failed ack (timeout, no quorum, no
 * stream leader) answers 503 unless the record was already applied (a
 * delivered record is stored: it counts). A record answered 503 after a
 * timeout may still have been stored and is then applied everywhere, as
 * for any client of a replicated log whose ack is lost.
 *
 * Every record of the stream, ours or another server's, goes through the
 * same consumer callback in stream order, so every replica applies the same
 * bytes in the same order. Lock order: cl->mu, nothing inside it; the
 * table's write lock is taken by the apply alone, outside cl->mu. */
#include "cluster_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "log.h"
#include "registry.h"

#define MAX_URLS 32
#define RETRY_MS 500          /* between attempts while JetStream is unreachable */
#define API_WAIT_MS 5000      /* JetStream API requests */
#define HEADERS_BYTES 128     /* more than a record's NATS headers take */

/* Histogram bounds in nanoseconds and as Prometheus "le" labels. */
static const uint64_t lag_bucket_ns[LAG_NBUCKETS] = {
    250000,   500000,   1000000,   2000000,   5000000,    10000000,
    20000000, 50000000, 100000000, 500000000, 1000000000, 5000000000,
};
static const char *const lag_bucket_le[LAG_NBUCKETS] = {
    "0.00025", "0.0005", "0.001", "0.002", "0.005", "0.01",
    "0.02",    "0.05",   "0.1",   "0.5",   "1",     "5",
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void observe(struct histogram *h, uint64_t ns)
{
    for (size_t i = 0; i < LAG_NBUCKETS; i++) {
        if (ns <= lag_bucket_ns[i]) {
            atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

static void max_store(_Atomic uint64_t *a, uint64_t v)
{
    uint64_t cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

/* ---- names ---------------------------------------------------------- */

/* Stream names may not hold '.', which table names may: '~' stands in. */
int cluster_stream_name(const char *table, unsigned shard, char *out, size_t len)
{
    int n = snprintf(out, len, "ES-%s-%u", table, shard);
    if (n < 0 || (size_t)n >= len)
        return CORE_ETOOBIG;
    for (char *p = out; *p; p++)
        if (*p == '.')
            *p = '~';
    return CORE_OK;
}

static void name_table(struct cluster_table *ct, const char *name)
{
    snprintf(ct->name, sizeof ct->name, "%s", name);
    cluster_stream_name(name, 0, ct->stream, sizeof ct->stream);
    snprintf(ct->subject, sizeof ct->subject, "es.%s.0", name);
    snprintf(ct->snap_stream, sizeof ct->snap_stream, "ESSNAP-%s", ct->stream + 3);
    snprintf(ct->snap_chunk, sizeof ct->snap_chunk, "essnap.%s.0.chunk", name);
    snprintf(ct->snap_commit, sizeof ct->snap_commit, "essnap.%s.0.commit", name);
}

/* ---- the connection --------------------------------------------------- */

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    struct cluster *cl = closure;
    atomic_store(&cl->up, false);
    atomic_fetch_add(&cl->disconnects, 1);
    if (!atomic_load(&cl->closing))
        log_warn("cluster: lost the connection to NATS; writes answer 503 until it is back");
}

/* What the request threads read about the connection, kept here so that
 * they never ask libnats (see cluster.out_cv). Callback threads only. */
static void note_connection(struct cluster *cl, natsConnection *nc)
{
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    atomic_store(&cl->max_payload, natsConnection_GetMaxPayload(nc));
    pthread_mutex_lock(&cl->mu);
    snprintf(cl->url, sizeof cl->url, "%s", url);
    pthread_mutex_unlock(&cl->mu);
    atomic_store(&cl->up, true);
    log_info("cluster: connected to NATS at %s", url);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    note_connection(closure, nc);
}

static bool connected(const struct cluster *cl)
{
    return atomic_load(&((struct cluster *)cl)->up);
}

static void ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);

/* Splits "a,b,c" into urls[] (pointers into copy). */
static int split_urls(char *copy, const char **urls, int *n, char *err, size_t errlen)
{
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok == '\0')
            continue;
        if (*n == MAX_URLS)
            return core_fail(err, errlen, CORE_EINVAL, "cluster.nats: more than %d URLs",
                             MAX_URLS);
        urls[(*n)++] = tok;
    }
    if (*n == 0)
        return core_fail(err, errlen, CORE_EINVAL, "cluster.nats: no URL given");
    return CORE_OK;
}

/* The connection's options; the connection itself is made by the loader
 * (cluster_table_open), so that the server listens at once. */
static int nats_options(struct cluster *cl, char *err, size_t errlen)
{
    char *copy = strdup(cl->cfg->cluster_nats);
    const char *urls[MAX_URLS];
    int n = 0;
    if (copy == NULL)
        return CORE_ENOMEM;
    int rc = split_urls(copy, urls, &n, err, errlen);
    natsStatus s = NATS_OK;
    if (rc == CORE_OK) {
        s = natsOptions_Create(&cl->opts);
        if (s == NATS_OK)
            s = natsOptions_SetServers(cl->opts, urls, n);
        if (s == NATS_OK)
            s = natsOptions_SetName(cl->opts, cl->node);
        if (s == NATS_OK)
            s = natsOptions_SetMaxReconnect(cl->opts, -1);
        if (s == NATS_OK)
            s = natsOptions_SetReconnectWait(cl->opts, 250);
        if (s == NATS_OK)
            s = natsOptions_SetTimeout(cl->opts, 2000);
        if (s == NATS_OK)
            s = natsOptions_SetPingInterval(cl->opts, 2000);
        if (s == NATS_OK)
            s = natsOptions_SetMaxPingsOut(cl->opts, 2);
        if (s == NATS_OK)
            s = natsOptions_SetFailRequestsOnDisconnect(cl->opts, true);
        if (s == NATS_OK)
            s = natsOptions_SetDisconnectedCB(cl->opts, on_disconnected, cl);
        if (s == NATS_OK)
            s = natsOptions_SetReconnectedCB(cl->opts, on_reconnected, cl);
        if (s != NATS_OK)
            rc = core_fail(err, errlen, s == NATS_NO_MEMORY ? CORE_ENOMEM : CORE_EINVAL,
                           "cluster.nats \"%s\": %s", cl->cfg->cluster_nats,
                           natsStatus_GetText(s));
    }
    free(copy);
    return rc;
}

/* Connects once; until then retries every RETRY_MS while the cluster is
 * open. libnats' own retry of a failed first connect is not used: in 3.4
 * it gives up for good when a server accepts the TCP connection but never
 * answers (a stopped or overloaded nats-server). Reconnects after a first
 * success are libnats' (forever). Loader thread. */
static int ensure_connected(struct cluster *cl, char *err, size_t errlen)
{
    pthread_mutex_lock(&cl->connect_mu);
    uint64_t next_note = 0;
    natsStatus s = NATS_OK;
    while (cl->nc == NULL && !atomic_load(&cl->closing)) {
        natsConnection *nc = NULL;
        s = natsConnection_Connect(&nc, cl->opts);
        if (s == NATS_OK) {
            jsOptions jo;
            jsOptions_Init(&jo);
            jo.Wait = API_WAIT_MS;
            jo.PublishAsync.AckHandler = ack_handler;
            jo.PublishAsync.AckHandlerClosure = cl;
            s = natsConnection_JetStream(&cl->js, nc, &jo);
            if (s != NATS_OK) {
                natsConnection_Destroy(nc);
                break;
            }
            cl->nc = nc;
            note_connection(cl, nc);
            break;
        }
        if (clock_mono_ns() >= next_note) {
            log_warn("cluster: cannot connect to NATS at %s (%s); retrying",
                     cl->cfg->cluster_nats, natsStatus_GetText(s));
            next_note = clock_mono_ns() + 5000000000u;
        }
        sleep_ms(RETRY_MS);
    }
    bool ok = cl->nc != NULL;
    pthread_mutex_unlock(&cl->connect_mu);
    if (ok)
        return CORE_OK;
    if (atomic_load(&cl->closing))
        return CORE_EUNAVAILABLE;
    return core_fail(err, errlen, CORE_EIO, "cluster.nats %s: %s", cl->cfg->cluster_nats,
                     natsStatus_GetText(s));
}

static void sweep(struct cluster *cl);
static void publish_one(struct cluster *cl, struct outgoing *o);

static void *publisher_main(void *arg)
{
    struct cluster *cl = arg;
    pthread_mutex_lock(&cl->mu);
    for (;;) {
        while (cl->publishing && cl->out_head == NULL)
            pthread_cond_wait(&cl->out_cv, &cl->mu);
        if (!cl->publishing)
            break;
        struct outgoing *batch = cl->out_head;
        cl->out_head = cl->out_tail = NULL;
        pthread_mutex_unlock(&cl->mu);
        while (batch != NULL) {
            struct outgoing *o = batch;
            batch = o->next;
            publish_one(cl, o);
        }
        pthread_mutex_lock(&cl->mu);
    }
    pthread_mutex_unlock(&cl->mu);
    return NULL;
}

/* Fails writes whose ack is overdue, whatever libnats does about them: a
 * write never waits past cluster.publish_timeout_ms (plus a second of
 * slack for the library's own timeout to answer first). */
static void *sweeper_main(void *arg)
{
    struct cluster *cl = arg;
    pthread_mutex_lock(&cl->mu);
    while (cl->sweeping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += 250000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cl->sweep_cv, &cl->mu, &until);
        if (!cl->sweeping)
            break;
        pthread_mutex_unlock(&cl->mu);
        sweep(cl);
        pthread_mutex_lock(&cl->mu);
    }
    pthread_mutex_unlock(&cl->mu);
    return NULL;
}

int cluster_new(struct cluster **out, const struct config *c, char *err, size_t errlen)
{
    *out = NULL;
    struct cluster *cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return CORE_ENOMEM;
    cl->cfg = c;
    if (c->cluster_node != NULL)
        snprintf(cl->node, sizeof cl->node, "%s", c->cluster_node);
    else if (gethostname(cl->node, sizeof cl->node - 1) != 0)
        snprintf(cl->node, sizeof cl->node, "es-%d", (int)getpid());
    if (getrandom(&cl->nonce, sizeof cl->nonce, 0) != (ssize_t)sizeof cl->nonce)
        cl->nonce = (uint64_t)clock_wall_ns() ^ ((uint64_t)getpid() << 32);
    snprintf(cl->nonce_hex, sizeof cl->nonce_hex, "%016" PRIx64, cl->nonce);
    atomic_init(&cl->next_id, 1);
    pthread_mutex_init(&cl->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cl->sweep_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&cl->out_cv, NULL);
    pthread_mutex_init(&cl->connect_mu, NULL);
    int rc = nats_options(cl, err, errlen);
    if (rc == CORE_OK) {
        cl->sweeping = cl->publishing = true;
        bool swept = pthread_create(&cl->sweeper, NULL, sweeper_main, cl) == 0;
        bool pub = pthread_create(&cl->publisher, NULL, publisher_main, cl) == 0;
        cl->sweeping = swept;
        cl->publishing = pub;
        if (!swept || !pub)
            rc = core_fail(err, errlen, CORE_ENOMEM, "cannot start the cluster's threads");
    }
    if (rc != CORE_OK) {
        cluster_free(cl);
        return rc;
    }
    log_info("cluster: node %s, NATS %s, %d stream replica%s", cl->node, c->cluster_nats,
             c->cluster_stream_replicas, c->cluster_stream_replicas == 1 ? "" : "s");
    *out = cl;
    return CORE_OK;
}

void cluster_free(struct cluster *cl)
{
    if (cl == NULL)
        return;
    atomic_store(&cl->closing, true);
    pthread_mutex_lock(&cl->mu);
    bool swept = cl->sweeping, pub = cl->publishing;
    cl->sweeping = cl->publishing = false;
    pthread_cond_signal(&cl->sweep_cv);
    pthread_cond_signal(&cl->out_cv);
    pthread_mutex_unlock(&cl->mu);
    if (swept)
        pthread_join(cl->sweeper, NULL);
    if (pub)
        pthread_join(cl->publisher, NULL);
    while (cl->out_head != NULL) { /* their writes were answered by the flush */
        struct outgoing *o = cl->out_head;
        cl->out_head = o->next;
        natsMsg_Destroy(o->msg);
        free(o);
    }
    jsCtx_Destroy(cl->js);
    if (cl->nc != NULL) {
        natsConnection_Close(cl->nc);
        natsConnection_Destroy(cl->nc);
    }
    natsOptions_Destroy(cl->opts);
    /* the connection's callbacks (on_disconnected...) run on libnats'
     * threads, later: wait for them before cl goes */
    nats_CloseAndWait(2000);
    pthread_cond_destroy(&cl->out_cv);
    pthread_cond_destroy(&cl->sweep_cv);
    pthread_mutex_destroy(&cl->connect_mu);
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

/* ---- streams ---------------------------------------------------------- */

/* True for the errors that mean "JetStream is not reachable now". */
bool cluster_transient(natsStatus s)
{
    return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_CLOSED ||
           s == NATS_CONNECTION_DISCONNECTED || s == NATS_NOT_YET_CONNECTED ||
           s == NATS_STALE_CONNECTION;
}

static natsStatus ensure_stream(struct cluster *cl, const char *name, const char **subjects,
                                int nsubjects, int replicas, jsErrCode *jerr)
{
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, cl->js, name, NULL, jerr);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return NATS_OK;
    }
    if (*jerr != JSStreamNotFoundErr)
        return s;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = nsubjects;
    sc.Storage = js_FileStorage;
    sc.Replicas = replicas;
    sc.Retention = js_LimitsPolicy;
    s = js_AddStream(&si, cl->js, &sc, NULL, jerr);
    if (s != NATS_OK && *jerr == JSStreamNameExistErr) /* another server made it first */
        s = js_GetStreamInfo(&si, cl->js, name, NULL, jerr);
    jsStreamInfo_Destroy(si);
    return s;
}

int cluster_table_open(struct cluster_table **out, struct cluster *cl, const char *name,
                       char *err, size_t errlen)
{
    *out = NULL;
    struct cluster_table *ct = calloc(1, sizeof *ct);
    if (ct == NULL)
        return CORE_ENOMEM;
    ct->cl = cl;
    name_table(ct, name);
    pthread_mutex_init(&ct->seq_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ct->seq_cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc0 = ensure_connected(cl, err, errlen);
    if (rc0 != CORE_OK) {
        cluster_table_close(ct);
        return rc0;
    }
    int replicas = cl->cfg->cluster_stream_replicas;
    uint64_t next_note = 0;
    for (;;) {
        jsErrCode jerr = 0;
        const char *records[] = {ct->subject};
        const char *snaps[] = {ct->snap_chunk, ct->snap_commit};
        natsStatus s = ensure_stream(cl, ct->stream, records, 1, replicas, &jerr);
        if (s == NATS_OK)
            s = ensure_stream(cl, ct->snap_stream, snaps, 2, replicas, &jerr);
        if (s == NATS_OK)
            break;
        if (atomic_load(&cl->closing)) {
            cluster_table_close(ct);
            return CORE_EUNAVAILABLE;
        }
        if (!cluster_transient(s) && s != NATS_ERR) {
            int rc = core_fail(err, errlen, CORE_EIO, "stream %s: %s (JetStream error %d)",
                               ct->stream, natsStatus_GetText(s), (int)jerr);
            cluster_table_close(ct);
            return rc;
        }
        if (clock_mono_ns() >= next_note) {
            log_warn("table %s: JetStream not reachable for stream %s (%s%s%s); retrying",
                     name, ct->stream, natsStatus_GetText(s), jerr ? ", JetStream error " : "",
                     jerr ? (jerr == 10008 ? "10008" : "set") : "");
            next_note = clock_mono_ns() + 5000000000u;
        }
        sleep_ms(RETRY_MS);
    }
    *out = ct;
    return CORE_OK;
}

/* ---- completing writes -------------------------------------------------- */

/* Removes and returns the pending write id; cl->mu held. */
static struct pending *take_pending(struct cluster *cl, uint64_t id)
{
    for (struct pending **pp = &cl->pending; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct pending *p = *pp;
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static struct pending *find_pending(struct cluster *cl, uint64_t id)
{
    for (struct pending *p = cl->pending; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

static void finish(struct pending *p)
{
    struct journal_write *w = p->w;
    free(p);
    w->done(w);
}

static void fail_write(struct journal_write *w, int rc, const char *why)
{
    w->rc = rc;
    snprintf(w->err, sizeof w->err, "%s", why);
    w->done(w);
}

/* The id of one of this process's records from its Es-Write header, or 0. */
static uint64_t own_id(struct cluster *cl, natsMsg *msg)
{
    const char *v = NULL;
    if (natsMsgHeader_Get(msg, "Es-Write", &v) != NATS_OK || v == NULL)
        return 0;
    if (strncmp(v, cl->nonce_hex, 16) != 0 || v[16] != '-')
        return 0;
    return strtoull(v + 17, NULL, 10);
}

static void ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct cluster *cl = closure;
    uint64_t id = own_id(cl, msg);
    struct pending *done = NULL;
    pthread_mutex_lock(&cl->mu);
    struct pending *p = find_pending(cl, id);
    if (p != NULL && pa != NULL) {
        p->acked = true;
        observe(&cl->publish, clock_mono_ns() - p->t0_ns);
        max_store(&p->ct->stream_seq, pa->Sequence);
        if (p->applied)
            done = take_pending(cl, id);
    } else if (p != NULL && !p->applied) {
        /* applied means stored: only a write never seen back fails */
        done = take_pending(cl, id);
        atomic_fetch_add(&cl->publish_errors, 1);
        done->w->rc = CORE_EUNAVAILABLE;
        snprintf(done->w->err, sizeof done->w->err,
                 "JetStream did not acknowledge the write (%s%s%s); it may or may not have "
                 "been stored", pae ? natsStatus_GetText(pae->Err) : "no answer",
                 pae && pae->ErrText ? ": " : "", pae && pae->ErrText ? pae->ErrText : "");
    } else if (p != NULL) {
        p->acked = true;
        done = take_pending(cl, id);
    }
    pthread_mutex_unlock(&cl->mu);
    if (done != NULL)
        finish(done);
    natsMsg_Destroy(msg);
}

static void sweep(struct cluster *cl)
{
    uint64_t limit = ((uint64_t)cl->cfg->cluster_publish_timeout_ms + 1000u) * 1000000u;
    for (;;) {
        uint64_t now = clock_mono_ns();
        struct pending *late = NULL;
        pthread_mutex_lock(&cl->mu);
        for (struct pending **pp = &cl->pending; *pp; pp = &(*pp)->next) {
            if (!(*pp)->acked && !(*pp)->applied && now - (*pp)->t0_ns > limit) {
                late = *pp;
                *pp = late->next;
                break;
            }
        }
        pthread_mutex_unlock(&cl->mu);
        if (late == NULL)
            return;
        atomic_fetch_add(&cl->publish_errors, 1);
        struct journal_write *w = late->w;
        free(late);
        w->rc = CORE_EUNAVAILABLE;
        snprintf(w->err, sizeof w->err, "JetStream did not acknowledge the write within %d ms; "
                 "it may or may not have been stored", cl->cfg->cluster_publish_timeout_ms);
        w->done(w);
    }
}

/* The consumer applied one of our records (rc its result). */
static void applied_own(struct cluster *cl, uint64_t id, uint64_t seq, int rc, uint64_t version,
                        size_t rows, size_t inserted, const char *err)
{
    struct pending *done = NULL;
    pthread_mutex_lock(&cl->mu);
    struct pending *p = find_pending(cl, id);
    if (p != NULL) {
        struct journal_write *w = p->w;
        w->seq = seq;
        w->rc = rc;
        w->version = version;
        w->rows = rows;
        w->inserted = inserted;
        if (rc != CORE_OK)
            snprintf(w->err, sizeof w->err, "%s", err);
        p->applied = true;
        if (p->acked)
            done = take_pending(cl, id);
    }
    pthread_mutex_unlock(&cl->mu);
    if (done != NULL)
        finish(done);
}

/* ---- applying the stream ------------------------------------------------ */

static void wake_waiters(struct cluster_table *ct)
{
    if (atomic_load(&ct->waiters) == 0)
        return;
    pthread_mutex_lock(&ct->seq_mu);
    pthread_cond_broadcast(&ct->seq_cv);
    pthread_mutex_unlock(&ct->seq_mu);
}

/* The table stops applying its stream: every write of it still waiting
 * here (its record published or about to be, its own apply never to come)
 * is answered now, as are min_seq waits. */
static void set_broken(struct cluster_table *ct, const char *why)
{
    if (atomic_exchange(&ct->broken, true))
        return;
    snprintf(ct->why, sizeof ct->why, "%s", why);
    log_error("table %s: %s; writes answer 503, reads go on at seq %llu", ct->name, why,
              (unsigned long long)table_log_seq(ct->t));
    struct cluster *cl = ct->cl;
    struct pending *mine = NULL;
    pthread_mutex_lock(&cl->mu);
    for (struct pending **pp = &cl->pending; *pp;) {
        struct pending *p = *pp;
        if (p->ct != ct) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        p->next = mine;
        mine = p;
    }
    pthread_mutex_unlock(&cl->mu);
    while (mine != NULL) {
        struct pending *p = mine;
        mine = p->next;
        struct journal_write *w = p->w;
        free(p);
        char text[sizeof w->err];
        snprintf(text, sizeof text, "this server stopped applying the table (%s); the write may "
                 "or may not have been stored: read it back through another replica", why);
        fail_write(w, CORE_EUNAVAILABLE, text);
    }
    wake_waiters(ct);
}

/* Applies the record at seq; the payload is copied when it is not 8-byte
 * aligned (the floats of a record are read in place). */
static int apply_one(struct cluster_table *ct, natsMsg *msg, uint64_t seq, uint64_t stored_ms,
                     uint64_t *version, size_t *rows, size_t *inserted, bool *refused, char *err,
                     size_t errlen)
{
    const char *kind_text = NULL;
    if (natsMsgHeader_Get(msg, "Es-Kind", &kind_text) != NATS_OK || kind_text == NULL)
        return core_fail(err, errlen, CORE_EFORMAT, "stream record %llu has no Es-Kind header",
                         (unsigned long long)seq);
    uint32_t kind = (uint32_t)strtoul(kind_text, NULL, 10);
    const char *data = natsMsg_GetData(msg);
    size_t len = (size_t)natsMsg_GetDataLength(msg);
    void *copy = NULL;
    if (((uintptr_t)data % 8) != 0) {
        if ((copy = malloc(len + 1)) == NULL)
            return CORE_ENOMEM;
        memcpy(copy, data, len);
        data = copy;
    }
    int rc = journal_apply_payload_keyed(ct->t, seq, kind, data, len, stored_ms, version, rows,
                                         inserted, refused, err, errlen);
    free(copy);
    if (rc == CORE_OK)
        atomic_fetch_add_explicit(&ct->applied_bytes, len, memory_order_relaxed);
    return rc;
}

static void on_record(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct cluster_table *ct = closure;
    jsMsgMetaData *meta = NULL;
    if (atomic_load(&ct->closed) || atomic_load(&ct->broken) ||
        natsMsg_GetMetaData(&meta, msg) != NATS_OK) {
        natsMsg_Destroy(msg);
        return;
    }
    uint64_t seq = meta->Sequence.Stream, ahead = meta->NumPending;
    int64_t stored = meta->Timestamp;
    jsMsgMetaData_Destroy(meta);
    uint64_t at = table_log_seq(ct->t);
    if (seq <= at) { /* seen already (the ordered consumer restarted) */
        natsMsg_Destroy(msg);
        return;
    }
    if (seq != at + 1) {
        char why[160];
        snprintf(why, sizeof why, "the stream no longer holds records %llu..%llu that this "
                 "server has not applied (purged); a restart loads the cluster's snapshot",
                 (unsigned long long)at + 1, (unsigned long long)seq - 1);
        set_broken(ct, why);
        natsMsg_Destroy(msg);
        return;
    }
    uint64_t version = 0;
    size_t rows = 0, inserted = 0;
    bool refused = false;
    char err[192] = "";
    uint64_t stored_ms = stored > 0 ? (uint64_t)stored / 1000000u : 0;
    int rc = apply_one(ct, msg, seq, stored_ms, &version, &rows, &inserted, &refused, err,
                       sizeof err);
    if (rc != CORE_OK) {
        /* never expected: the record was validated before it was published.
         * The table cannot skip it and stay identical to its replicas. */
        set_broken(ct, err[0] ? err : core_strerror(rc));
    }
    int answer = rc != CORE_OK ? CORE_EUNAVAILABLE : refused ? CORE_ECAPACITY : CORE_OK;
    if (refused) /* a keyed write that did not fit, applied (as on every replica) as a refusal */
        snprintf(err, sizeof err, "%s", JOURNAL_FULL_MESSAGE);
    int64_t lag = clock_wall_ns() - stored;
    uint64_t lag_ns = lag > 0 ? (uint64_t)lag : 0;
    observe(&ct->lag, lag_ns);
    atomic_store_explicit(&ct->last_lag_ns, ahead ? lag_ns : 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&ct->applied_records, 1, memory_order_relaxed);
    max_store(&ct->stream_seq, seq + ahead);
    uint64_t id = own_id(ct->cl, msg);
    natsMsg_Destroy(msg);
    if (id != 0)
        applied_own(ct->cl, id, seq, answer, version, rows, inserted, err);
    wake_waiters(ct);
}

/* ---- renormalizations through the stream --------------------------------- */

static void submit_to(void *target, struct journal_write *w)
{
    cluster_submit(target, w);
}

static int renorm_through(void *ud, const int64_t *ids, size_t m)
{
    struct journal_write w = {.op = JOURNAL_RENORM, .ids = ids, .n = m};
    journal_write_wait(&w, submit_to, ud);
    return w.rc;
}

/* ---- starting and stopping a table --------------------------------------- */

static natsStatus stream_state(struct cluster_table *ct, uint64_t *first, uint64_t *last,
                               jsErrCode *jerr)
{
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, ct->cl->js, ct->stream, NULL, jerr);
    if (s == NATS_OK) {
        *first = si->State.FirstSeq;
        *last = si->State.LastSeq;
        jsStreamInfo_Destroy(si);
    }
    return s;
}

/* libnats: the subscription is closed and its last callback has returned. */
static void on_complete(void *closure)
{
    struct cluster_table *ct = closure;
    atomic_store(&ct->sub_done, true);
}

static natsStatus subscribe(struct cluster_table *ct, uint64_t from)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = ct->stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverByStartSequence;
    so.Config.OptStartSeq = from;
    /* a consumer whose NATS node died is noticed after two missed
     * heartbeats and recreated where it left off: the pause of a replica
     * (and of its writers' answers) when a node goes */
    so.Config.Heartbeat = (int64_t)1000000000;
    jsErrCode jerr = 0;
    natsStatus s = js_Subscribe(&ct->sub, ct->cl->js, ct->subject, on_record, ct, NULL, &so,
                                &jerr);
    if (s == NATS_OK)
        s = natsSubscription_SetOnCompleteCB(ct->sub, on_complete, ct);
    if (s == NATS_OK)
        natsSubscription_SetPendingLimits(ct->sub, 1 << 20, 256 << 20);
    return s;
}

int cluster_table_start(struct cluster_table *ct, struct table *t, char *err, size_t errlen)
{
    struct cluster *cl = ct->cl;
    ct->t = t;
    uint64_t first = 0, last = 0, at = table_log_seq(t), next_note = 0;
    natsStatus s;
    for (;;) {
        jsErrCode jerr = 0;
        s = stream_state(ct, &first, &last, &jerr);
        if (s == NATS_OK)
            s = subscribe(ct, at + 1);
        if (s == NATS_OK || atomic_load(&cl->closing) || !(cluster_transient(s) || s == NATS_ERR))
            break;
        if (clock_mono_ns() >= next_note) {
            log_warn("table %s: JetStream not reachable (%s); retrying", ct->name,
                     natsStatus_GetText(s));
            next_note = clock_mono_ns() + 5000000000u;
        }
        sleep_ms(RETRY_MS);
    }
    if (s != NATS_OK)
        return core_fail(err, errlen, CORE_EIO, "stream %s: %s", ct->stream,
                         natsStatus_GetText(s));
    if (at > last)
        return core_fail(err, errlen, CORE_EFORMAT,
                         "the table is at seq %llu but its stream %s ends at %llu: this "
                         "data_dir belongs to another cluster, or the stream was deleted; move "
                         "the table's snapshots away to start from the stream",
                         (unsigned long long)at, ct->stream, (unsigned long long)last);
    if (last > 0 && first > at + 1)
        return core_fail(err, errlen, CORE_EFORMAT,
                         "the table is at seq %llu but stream %s starts at %llu (purged below "
                         "a snapshot) and no newer snapshot could be fetched",
                         (unsigned long long)at, ct->stream, (unsigned long long)first);
    max_store(&ct->stream_seq, last);
    log_info("table %s: applying stream %s from seq %llu (its end: %llu)", ct->name, ct->stream,
             (unsigned long long)at + 1, (unsigned long long)last);
    uint64_t t0 = clock_mono_ns();
    while (table_log_seq(t) < last && !atomic_load(&ct->broken) && !atomic_load(&cl->closing))
        cluster_table_wait_seq(ct, last, 200);
    if (atomic_load(&ct->broken))
        return core_fail(err, errlen, CORE_EFORMAT, "%s", ct->why);
    if (last > at)
        log_info("table %s: caught up with the stream: %llu records in %.2f s, now at seq %llu",
                 ct->name, (unsigned long long)(last - at), (double)(clock_mono_ns() - t0) * 1e-9,
                 (unsigned long long)table_log_seq(t));
    table_set_renorm_hook(t, renorm_through, ct);
    return CORE_OK;
}

/* True while writes of ct are in flight. */
static bool has_pending(struct cluster *cl, const struct cluster_table *ct)
{
    pthread_mutex_lock(&cl->mu);
    bool any = false;
    for (struct pending *p = cl->pending; p && !any; p = p->next)
        any = p->ct == ct;
    pthread_mutex_unlock(&cl->mu);
    return any;
}

void cluster_table_flush(struct cluster_table *ct, int timeout_ms)
{
    if (ct == NULL)
        return;
    struct cluster *cl = ct->cl;
    uint64_t deadline = clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (has_pending(cl, ct) && clock_mono_ns() < deadline)
        sleep_ms(2);
    for (;;) {
        pthread_mutex_lock(&cl->mu);
        struct pending *p = NULL;
        for (struct pending **pp = &cl->pending; *pp; pp = &(*pp)->next) {
            if ((*pp)->ct == ct) {
                p = *pp;
                *pp = p->next;
                break;
            }
        }
        pthread_mutex_unlock(&cl->mu);
        if (p == NULL)
            break;
        struct journal_write *w = p->w;
        free(p);
        if (w->rc == CORE_OK && w->seq == 0)
            w->rc = CORE_EUNAVAILABLE;
        snprintf(w->err, sizeof w->err, "%s", "the server is shutting down; the write may "
                 "or may not have been stored");
        w->rc = CORE_EUNAVAILABLE;
        w->done(w);
    }
}

void cluster_table_close(struct cluster_table *ct)
{
    if (ct == NULL || atomic_exchange(&ct->closed, true))
        return;
    cluster_table_flush(ct, 0);
    if (ct->t != NULL)
        table_set_renorm_hook(ct->t, NULL, NULL);
    if (ct->sub != NULL) {
        /* the consumer's callback may be running: the table must outlive it */
        bool stopping = natsSubscription_Unsubscribe(ct->sub) == NATS_OK;
        for (int i = 0; stopping && i < 10000 && !atomic_load(&ct->sub_done); i++)
            sleep_ms(1);
        natsSubscription_Destroy(ct->sub);
        ct->sub = NULL;
        if (stopping && !atomic_load(&ct->sub_done)) {
            /* a callback may still come (it returns at once on closed):
             * leave ct to it rather than free memory it reads */
            log_warn("table %s: the stream's consumer did not stop within 10 s; its state is "
                     "left allocated", ct->name);
            return;
        }
    }
    pthread_cond_destroy(&ct->seq_cv);
    pthread_mutex_destroy(&ct->seq_mu);
    free(ct);
}

/* ---- writes ------------------------------------------------------------- */

/* The record's bytes as one buffer. */
static char *record_bytes(const struct cluster_table *ct, const struct journal_write *w,
                          size_t *len)
{
    struct journal_record_head h;
    struct iovec parts[3];
    int n = journal_record_parts(ct->t, w, &h, parts);
    *len = 0;
    for (int i = 0; i < n; i++)
        *len += parts[i].iov_len;
    char *buf = malloc(*len + 1);
    if (buf == NULL)
        return NULL;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        memcpy(buf + off, parts[i].iov_base, parts[i].iov_len);
        off += parts[i].iov_len;
    }
    return buf;
}

void cluster_submit(struct cluster_table *ct, struct journal_write *w)
{
    struct cluster *cl = ct->cl;
    w->rc = CORE_OK;
    w->seq = w->version = 0;
    w->rows = w->inserted = 0;
    w->err[0] = '\0';
    if (atomic_load(&ct->broken))
        return fail_write(w, CORE_EUNAVAILABLE, ct->why);
    if (atomic_load(&ct->closed) || atomic_load(&cl->closing))
        return fail_write(w, CORE_EUNAVAILABLE, "the server is shutting down");
    if (!connected(cl))
        return fail_write(w, CORE_EUNAVAILABLE,
                          "JetStream is unreachable (no connection to NATS); retry");
    size_t len = 0;
    char *bytes = record_bytes(ct, w, &len);
    if (bytes == NULL)
        return fail_write(w, CORE_ENOMEM, "out of memory");
    /* the message's headers (Es-Kind, Es-Write and NATS's own line) count
     * against max_payload too */
    int64_t max_payload = atomic_load(&cl->max_payload);
    if (max_payload > 0 && len + HEADERS_BYTES > (size_t)max_payload) {
        free(bytes);
        char why[192];
        snprintf(why, sizeof why, "the write's record (%zu bytes) is larger than NATS's "
                 "max_payload (%lld bytes): send fewer rows per request or raise max_payload",
                 len, (long long)max_payload);
        return fail_write(w, CORE_ETOOBIG, why);
    }
    natsMsg *msg = NULL;
    natsStatus s = natsMsg_Create(&msg, ct->subject, NULL, bytes, (int)len);
    free(bytes);
    struct pending *p = s == NATS_OK ? calloc(1, sizeof *p) : NULL;
    if (p == NULL) {
        natsMsg_Destroy(msg);
        return fail_write(w, CORE_ENOMEM, "out of memory");
    }
    p->id = atomic_fetch_add(&cl->next_id, 1);
    p->w = w;
    p->ct = ct;
    p->t0_ns = clock_mono_ns();
    char kind[12], tag[48];
    snprintf(kind, sizeof kind, "%d", (int)w->op);
    snprintf(tag, sizeof tag, "%s-%" PRIu64, cl->nonce_hex, p->id);
    s = natsMsgHeader_Set(msg, "Es-Kind", kind);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(msg, "Es-Write", tag);
    if (s != NATS_OK) {
        free(p);
        natsMsg_Destroy(msg);
        return fail_write(w, CORE_ENOMEM, "out of memory");
    }
    struct outgoing *o = malloc(sizeof *o);
    if (o == NULL) {
        free(p);
        natsMsg_Destroy(msg);
        return fail_write(w, CORE_ENOMEM, "out of memory");
    }
    *o = (struct outgoing){.msg = msg, .id = p->id};
    pthread_mutex_lock(&cl->mu);
    p->next = cl->pending;
    cl->pending = p;
    if (cl->out_tail)
        cl->out_tail->next = o;
    else
        cl->out_head = o;
    cl->out_tail = o;
    pthread_cond_signal(&cl->out_cv);
    pthread_mutex_unlock(&cl->mu);
}

/* The publisher thread: hands one message to libnats, unless its write was
 * answered meanwhile (the sweeper, a flush). */
static void publish_one(struct cluster *cl, struct outgoing *o)
{
    pthread_mutex_lock(&cl->mu);
    bool wanted = find_pending(cl, o->id) != NULL;
    pthread_mutex_unlock(&cl->mu);
    natsStatus s = NATS_OK;
    if (wanted) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = cl->cfg->cluster_publish_timeout_ms;
        s = js_PublishMsgAsync(cl->js, &o->msg, &po);
    }
    natsMsg_Destroy(o->msg); /* NULL when the library took it */
    uint64_t id = o->id;
    free(o);
    if (s == NATS_OK)
        return;
    pthread_mutex_lock(&cl->mu);
    struct pending *mine = take_pending(cl, id);
    pthread_mutex_unlock(&cl->mu);
    atomic_fetch_add(&cl->publish_errors, 1);
    if (mine != NULL) {
        struct journal_write *w = mine->w;
        free(mine);
        char why[160];
        snprintf(why, sizeof why, "JetStream is unreachable (%s); retry", natsStatus_GetText(s));
        fail_write(w, CORE_EUNAVAILABLE, why);
    }
}

bool cluster_table_wait_seq(struct cluster_table *ct, uint64_t seq, int wait_ms)
{
    if (table_log_seq(ct->t) >= seq)
        return true;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    uint64_t ns = (uint64_t)until.tv_nsec + (uint64_t)wait_ms * 1000000u;
    until.tv_sec += (time_t)(ns / 1000000000u);
    until.tv_nsec = (long)(ns % 1000000000u);
    pthread_mutex_lock(&ct->seq_mu);
    atomic_fetch_add(&ct->waiters, 1);
    int rc = 0;
    while (table_log_seq(ct->t) < seq && rc == 0 && !atomic_load(&ct->broken))
        rc = pthread_cond_timedwait(&ct->seq_cv, &ct->seq_mu, &until);
    atomic_fetch_sub(&ct->waiters, 1);
    pthread_mutex_unlock(&ct->seq_mu);
    return table_log_seq(ct->t) >= seq;
}

uint64_t cluster_table_applied_bytes(const struct cluster_table *ct)
{
    return atomic_load_explicit(&((struct cluster_table *)ct)->applied_bytes,
                                memory_order_relaxed);
}

/* ---- introspection ------------------------------------------------------ */

static uint64_t lag_records(struct cluster_table *ct)
{
    uint64_t end = atomic_load(&ct->stream_seq), at = table_log_seq(ct->t);
    return end > at ? end - at : 0;
}

void cluster_render_info(struct cluster *cl, struct registry *r, struct buf *b)
{
    buf_puts(b, "{\"node\":");
    buf_put_json_string(b, cl->node, strlen(cl->node));
    buf_puts(b, ",\"tables\":[");
    bool first = true;
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        struct cluster_table *ct = e->cluster;
        if (registry_table(e) == NULL || ct == NULL)
            continue;
        buf_puts(b, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        buf_put_json_string(b, ct->name, strlen(ct->name));
        buf_printf(b, ",\"seq\":%llu,\"stream_seq\":%llu,\"lag_records\":%llu,"
                      "\"lag_seconds\":%.6f,\"stream\":",
                   (unsigned long long)table_log_seq(ct->t),
                   (unsigned long long)atomic_load(&ct->stream_seq),
                   (unsigned long long)lag_records(ct),
                   (double)atomic_load(&ct->last_lag_ns) * 1e-9);
        buf_put_json_string(b, ct->stream, strlen(ct->stream));
        buf_printf(b, ",\"snapshot_seq\":%llu,\"writable\":%s}",
                   (unsigned long long)atomic_load(&ct->snapshot_seq),
                   atomic_load(&ct->broken) ? "false" : "true");
    }
    char url[256] = "";
    bool up = connected(cl);
    pthread_mutex_lock(&cl->mu);
    if (up)
        snprintf(url, sizeof url, "%s", cl->url);
    pthread_mutex_unlock(&cl->mu);
    buf_printf(b, "],\"nats\":{\"status\":\"%s\",\"connected_url\":",
               up ? "connected" : "disconnected");
    if (url[0])
        buf_put_json_string(b, url, strlen(url));
    else
        buf_puts(b, "null");
    buf_puts(b, ",\"servers\":");
    buf_put_json_string(b, cl->cfg->cluster_nats, strlen(cl->cfg->cluster_nats));
    buf_printf(b, ",\"stream_replicas\":%d,\"disconnects\":%llu}}",
               cl->cfg->cluster_stream_replicas,
               (unsigned long long)atomic_load(&cl->disconnects));
}

#define PREFIX "embedding_server_"

static void render_histogram(struct buf *b, const char *name, const char *labels,
                             struct histogram *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < LAG_NBUCKETS; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        buf_printf(b, PREFIX "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, *labels ? "," : "",
                   lag_bucket_le[i], (unsigned long long)cum);
    }
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    buf_printf(b, PREFIX "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, *labels ? "," : "",
               (unsigned long long)count);
    const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
    buf_printf(b, PREFIX "%s_sum%s%s%s %.9f\n", name, open, labels, close,
               (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) * 1e-9);
    buf_printf(b, PREFIX "%s_count%s%s%s %llu\n", name, open, labels, close,
               (unsigned long long)count);
}

void cluster_render_metrics(struct cluster *cl, struct registry *r, struct buf *b)
{
    if (cl == NULL)
        return;
    buf_puts(b, "# HELP " PREFIX "replication_lag_records Records in the table's stream not "
                "applied here yet.\n# TYPE " PREFIX "replication_lag_records gauge\n");
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        if (registry_table(e) != NULL && e->cluster != NULL)
            buf_printf(b, PREFIX "replication_lag_records{table=\"%s\"} %llu\n", e->cfg->name,
                       (unsigned long long)lag_records(e->cluster));
    }
    buf_puts(b, "# HELP " PREFIX "replication_lag_seconds Time from JetStream storing the last "
                "record applied to this server applying it, while behind (0 when caught up).\n"
                "# TYPE " PREFIX "replication_lag_seconds gauge\n");
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        if (registry_table(e) != NULL && e->cluster != NULL)
            buf_printf(b, PREFIX "replication_lag_seconds{table=\"%s\"} %.6f\n", e->cfg->name,
                       lag_records(e->cluster)
                           ? (double)atomic_load(&e->cluster->last_lag_ns) * 1e-9
                           : 0.0);
    }
    buf_puts(b, "# HELP " PREFIX "replication_apply_delay_seconds Time from JetStream storing "
                "a record to this server applying it.\n# TYPE " PREFIX
                "replication_apply_delay_seconds histogram\n");
    for (size_t i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->entries[i];
        if (registry_table(e) == NULL || e->cluster == NULL)
            continue;
        char labels[96];
        snprintf(labels, sizeof labels, "table=\"%s\"", e->cfg->name);
        render_histogram(b, "replication_apply_delay_seconds", labels, &e->cluster->lag);
    }
    buf_puts(b, "# HELP " PREFIX "publish_seconds Time from publishing a record to JetStream's "
                "ack.\n# TYPE " PREFIX "publish_seconds histogram\n");
    render_histogram(b, "publish_seconds", "", &cl->publish);
    buf_printf(b, "# HELP " PREFIX "publish_errors_total Writes JetStream did not acknowledge.\n"
                  "# TYPE " PREFIX "publish_errors_total counter\n" PREFIX
                  "publish_errors_total %llu\n",
               (unsigned long long)atomic_load(&cl->publish_errors));
    buf_printf(b, "# HELP " PREFIX "nats_connected 1 while connected to NATS.\n"
                  "# TYPE " PREFIX "nats_connected gauge\n" PREFIX "nats_connected %d\n",
               connected(cl) ? 1 : 0);
}

