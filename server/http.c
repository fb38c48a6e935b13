/* http.c - libmicrohttpd's side of the server: the daemon, the checks every
 * request passes in API.md's order, body collection, and handing answers
 * over without copying.
 *
 * Threads. libmicrohttpd runs a pool of cfg->threads threads, each with its
 * own epoll set ("turbo": no extra locking per connection). One acceptor
 * thread of ours takes the connections from the listening socket and hands
 * each to the pool (MHD_add_connection, which spreads them over the
 * threads by descriptor): when each pool thread accepted for itself, two
 * keep-alive clients shared one thread about half the time, at half the
 * throughput (28K against 70K lookups/s in bench/keyed). Light requests
 * (health, info, lookups, similarity, small writes) run right on those
 * threads: they cost microseconds and a thread hop would cost more. Heavy
 * ones (neighbour searches over big tables, big gradient batches,
 * snapshots) are moved to the work pool: the connection is suspended,
 * the job runs, the job resumes the connection, and libmicrohttpd calls us
 * again to queue the answer. So a long search never holds a thread that
 * accepts or answers other clients.
 *
 * The call sequence for one request (libmicrohttpd's contract):
 *   1st call, headers only     -> checks; on failure the error answer is
 *                                 queued at once when a body would follow
 *                                 (so it is never read), else on the next
 *                                 call;
 *   calls with upload data     -> appended to the body, counted against
 *                                 max_body_bytes (chunked bodies too; past
 *                                 the limit the rest is dropped and the 413
 *                                 goes out at the end, as libmicrohttpd
 *                                 cannot answer in the middle of a body);
 *   last call, no upload data  -> the handler runs (or is offloaded) and
 *                                 the answer is queued.
 * Queuing a success answer on the first call would make libmicrohttpd close
 * the connection after it (4x fewer requests/s, see PERFORMANCE.md), so
 * successes are always queued on a later call.
 *
 * Connections. libmicrohttpd's own limits leave gaps a hostile client can
 * use, so this file keeps a list of connections (MHD_OPTION_NOTIFY_
 * CONNECTION) and a sweeper thread that closes, with shutdown(2):
 *   - a connection whose request headers are not complete within
 *     limits.header_timeout of its start or of its previous request's end
 *     (libmicrohttpd's timeout is an idle one: a byte a second resets it);
 *   - a body that falls below limits.min_body_rate after a grace of
 *     header_timeout;
 *   - a half-closed connection whose request is incomplete (libmicrohttpd
 *     closes most of these itself; the sweeper catches the ones it misses).
 * At limits.max_connections the acceptor closes a new connection at once,
 * where libmicrohttpd's own limit would stop accepting and leave clients
 * waiting in the kernel's backlog. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "binary.h"
#include "clock.h"
#include "handlers.h"
#include "log.h"
#include "server.h"

enum phase {
    PHASE_READING,   /* collecting the body */
    PHASE_ANSWERED,  /* rq->ans holds the answer, not yet queued */
    PHASE_OFFLOADED, /* a work pool job or the journal is computing the answer */
    PHASE_QUEUED,    /* handed to libmicrohttpd */
};

struct request {
    struct server *srv;
    struct MHD_Connection *conn;
    enum route_id route;
    struct registry_entry *entry;
    struct table *table;
    char method[8];
    char path[128]; /* for the debug line, cut */
    const char *url; /* libmicrohttpd's, as given to the latest call */
    uint64_t start_ns;
    enum phase phase;
    bool binary;
    bool binary_body;        /* Content-Type: application/octet-stream */
    const char *shape_header; /* X-Embedding-Shape, in libmicrohttpd's pool */
    const char *lr_header;    /* X-Embedding-Lr, likewise */
    bool has_body;
    bool on_pool;       /* the handler runs on the work pool (already suspended) */
    bool deferred;      /* the final call was put off once (see defer_final_call) */
    signed char heavy;  /* handler_is_heavy's answer once asked (it pre-scans the body), or -1 */
    struct conn *cn;    /* the connection's entry in the sweeper's list, or NULL */
    char *body;
    size_t body_len, body_cap;
    uint64_t discarded; /* bytes of a refused body dropped */
    struct answer ans;
    struct work_job job;
};

static _Atomic int64_t in_flight;

/* ---- connections and the sweeper ---------------------------------------- */

/* How often the sweeper looks; a half-close must last HUP_GRACE_MS with no
 * progress before it counts (libmicrohttpd may not have read the request
 * that came with it yet). */
#define SWEEP_MS 100
#define HUP_GRACE_MS 250
/* libmicrohttpd's own limit per pool thread, past ours so that it never
 * refuses first. */
#define MHD_LIMIT_SLACK 16
/* Descriptors beyond the connections: listen socket, epoll sets, tables and
 * snapshots being read or written. */
#define FD_RESERVE 64

enum conn_state {
    CONN_WAITING, /* for a request's headers (new or kept alive) */
    CONN_BODY,    /* headers done, body arriving */
    CONN_BUSY,    /* request complete: computing or sending the answer */
};

/* Where a request still arriving stands: a new request or more body bytes
 * change it. */
struct progress {
    int state;
    uint64_t since_ms, body_bytes;
};

struct conn {
    struct conn *prev, *next;
    MHD_socket fd;
    char addr[INET6_ADDRSTRLEN];
    _Atomic uint64_t since_ms;   /* when the state began; written before state */
    _Atomic int state;           /* enum conn_state */
    _Atomic uint64_t body_bytes; /* of the request in CONN_BODY */
    /* the sweeper's alone, under the lock */
    uint64_t hup_since;          /* first sweep that saw the half-close, 0: none */
    struct progress hup_mark;    /* where the request stood then */
    bool closing;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct conn *head;
    /* connections handed to the pool and not closed yet, by the pool
     * thread that serves them (descriptor % threads) */
    _Atomic int on_thread[CONFIG_MAX_THREADS];
    unsigned threads;
    bool stop;
    bool running;
    pthread_t thread;
    const struct config *cfg;
} conns = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void conn_set(struct conn *c, enum conn_state st)
{
    if (c == NULL)
        return;
    atomic_store_explicit(&c->since_ms, clock_mono_ms(), memory_order_relaxed);
    atomic_store_explicit(&c->body_bytes, 0, memory_order_relaxed);
    atomic_store_explicit(&c->state, st, memory_order_release);
}

static struct conn *conn_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info != NULL ? info->socket_context : NULL;
}

static void addr_text(struct MHD_Connection *connection, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info ? info->client_addr : NULL;
    snprintf(out, outlen, "?");
    if (sa != NULL && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)outlen);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)outlen);
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    struct conn *c = *socket_context;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        c = calloc(1, sizeof *c);
        *socket_context = c;
        if (c == NULL || info == NULL) {
            free(c);
            *socket_context = NULL;
            return; /* untracked: only libmicrohttpd's idle timeout applies */
        }
        c->fd = info->connect_fd;
        addr_text(connection, c->addr, sizeof c->addr);
        conn_set(c, CONN_WAITING);
        pthread_mutex_lock(&conns.lock);
        c->next = conns.head;
        if (conns.head != NULL)
            conns.head->prev = c;
        conns.head = c;
        pthread_mutex_unlock(&conns.lock);
        return;
    }
    /* counted by the acceptor when it handed the connection over */
    if (info != NULL)
        atomic_fetch_sub(&conns.on_thread[(unsigned)info->connect_fd % conns.threads], 1);
    if (c == NULL)
        return;
    /* libmicrohttpd closes the socket only after this returns: while c is
     * in the list, under the lock, the sweeper's fd is this connection's */
    pthread_mutex_lock(&conns.lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        conns.head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&conns.lock);
    free(c);
    *socket_context = NULL;
}

/* Why the sweeper closes c now, or NULL. */
static const char *overdue(const struct conn *c, uint64_t now, char *why, size_t whylen)
{
    int st = atomic_load_explicit(&c->state, memory_order_acquire);
    uint64_t since = atomic_load_explicit(&c->since_ms, memory_order_relaxed);
    uint64_t grace = (uint64_t)conns.cfg->header_timeout_s * 1000u, rate = conns.cfg->min_body_rate;
    /* now was read before this sweep began: a state set since is newer
     * (now - since would wrap around and close a fresh connection) */
    if (since >= now)
        return NULL;
    if (st == CONN_WAITING && now - since > grace) {
        snprintf(why, whylen, "no complete request headers within %d s (limits.header_timeout)",
                 conns.cfg->header_timeout_s);
        return why;
    }
    if (st == CONN_BODY && rate > 0) {
        uint64_t got = atomic_load_explicit(&c->body_bytes, memory_order_relaxed);
        if (now - since > grace + got * 1000u / rate) {
            snprintf(why, whylen, "its body came slower than %llu bytes/s (limits.min_body_rate)",
                     (unsigned long long)rate);
            return why;
        }
    }
    return NULL;
}

/* What one sweep closed, logged after the lock is released (a slow log
 * must not hold up libmicrohttpd's threads, which take the lock). */
#define SWEEP_LOG_MAX 4
struct sweep_log {
    size_t closed;
    char lines[SWEEP_LOG_MAX][INET6_ADDRSTRLEN + 2 + 160];
};

static void close_conn(struct conn *c, const char *why, struct sweep_log *log)
{
    c->closing = true;
    shutdown(c->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
    if (log->closed < SWEEP_LOG_MAX)
        snprintf(log->lines[log->closed], sizeof log->lines[0], "%s: %s", c->addr, why);
    log->closed++;
}

static void sweep_log_write(const struct sweep_log *log)
{
    for (size_t i = 0; i < log->closed && i < SWEEP_LOG_MAX; i++)
        log_info("closing a connection from %s", log->lines[i]);
    if (log->closed > SWEEP_LOG_MAX)
        log_info("closing %zu more connections for the same reasons",
                 log->closed - SWEEP_LOG_MAX);
}

static struct progress progress_of(const struct conn *c)
{
    struct progress p;
    p.state = atomic_load_explicit(&c->state, memory_order_acquire);
    p.since_ms = atomic_load_explicit(&c->since_ms, memory_order_relaxed);
    p.body_bytes = atomic_load_explicit(&c->body_bytes, memory_order_relaxed);
    return p;
}

static bool same_progress(struct progress a, struct progress b)
{
    return a.state == b.state && a.since_ms == b.since_ms && a.body_bytes == b.body_bytes;
}

/* Half-closed connections whose request is still incomplete. fds has room
 * for every connection; called under the lock. */
static void sweep_half_closed(struct pollfd *fds, struct conn **who, size_t n, uint64_t now,
                              struct sweep_log *log)
{
    if (n == 0 || poll(fds, (nfds_t)n, 0) <= 0)
        return;
    for (size_t i = 0; i < n; i++) {
        struct conn *c = who[i];
        if ((fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0) {
            c->hup_since = 0;
            continue;
        }
        struct progress mark = progress_of(c);
        if (c->hup_since == 0 || !same_progress(c->hup_mark, mark)) {
            c->hup_since = now;
            c->hup_mark = mark;
        } else if (now - c->hup_since >= HUP_GRACE_MS) {
            close_conn(c, "it half-closed with its request incomplete", log);
        }
    }
}

static void sweep(struct pollfd **fds, struct conn ***who, size_t *cap)
{
    uint64_t now = clock_mono_ms();
    size_t n = 0;
    char why[160];
    struct sweep_log log = {0};

    pthread_mutex_lock(&conns.lock);
    for (struct conn *c = conns.head; c != NULL; c = c->next) {
        if (c->closing)
            continue;
        if (overdue(c, now, why, sizeof why) != NULL) {
            close_conn(c, why, &log);
            continue;
        }
        if (atomic_load(&c->state) == CONN_BUSY)
            continue;
        if (n == *cap) {
            size_t grown = *cap ? *cap * 2 : 256;
            struct pollfd *f = realloc(*fds, grown * sizeof **fds);
            if (f != NULL)
                *fds = f;
            struct conn **w = f ? realloc(*who, grown * sizeof **who) : NULL;
            if (w == NULL)
                break; /* the half-close check waits for memory; timeouts still run */
            *who = w;
            *cap = grown;
        }
        (*fds)[n] = (struct pollfd){.fd = c->fd, .events = POLLRDHUP};
        (*who)[n++] = c;
    }
    sweep_half_closed(*fds, *who, n, now, &log);
    pthread_mutex_unlock(&conns.lock);
    sweep_log_write(&log);
}

static void *sweeper_main(void *arg)
{
    (void)arg;
    struct pollfd *fds = NULL;
    struct conn **who = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&conns.lock);
    while (!conns.stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += SWEEP_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&conns.wake, &conns.lock, &until);
        if (conns.stop)
            break;
        pthread_mutex_unlock(&conns.lock);
        sweep(&fds, &who, &cap);
        pthread_mutex_lock(&conns.lock);
    }
    pthread_mutex_unlock(&conns.lock);
    free(fds);
    free(who);
    return NULL;
}

static int sweeper_start(const struct config *cfg)
{
    conns.cfg = cfg;
    conns.stop = false;
    int rc = pthread_create(&conns.thread, NULL, sweeper_main, NULL);
    conns.running = rc == 0;
    return rc;
}

static void sweeper_stop(void)
{
    if (!conns.running)
        return;
    pthread_mutex_lock(&conns.lock);
    conns.stop = true;
    pthread_cond_signal(&conns.wake);
    pthread_mutex_unlock(&conns.lock);
    pthread_join(conns.thread, NULL);
    conns.running = false;
}

/* max_connections sockets need as many descriptors: raise the soft limit
 * (often 1024) toward the hard one, or say what will happen. */
static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)cfg->max_connections + FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need)
        log_warn("the open-file limit (%llu) is below limits.max_connections + %d: connections "
                 "past it wait in the kernel's backlog; raise ulimit -n or lower the limit",
                 (unsigned long long)rl.rlim_cur, FD_RESERVE);
}

/* ---- header checks -------------------------------------------------- */

struct framing {
    int content_length_count;
    bool transfer_encoding;
    uint64_t content_length; /* 0 when absent */
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    (void)value;
    struct framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        f->content_length_count++;
    else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
        f->transfer_encoding = true;
    return MHD_YES;
}

/* libmicrohttpd 0.9.75 accepts two Content-Length headers, or one with
 * Transfer-Encoding, and frames the body by one of them: a proxy in front
 * may frame it by the other (request smuggling). Refused before anything
 * else, since which request follows on the connection is then unclear. */
static bool framing_ambiguous(struct MHD_Connection *conn, struct framing *f)
{
    *f = (struct framing){0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, f);
    return f->content_length_count > 1 ||
           (f->content_length_count == 1 && f->transfer_encoding);
}

/* Parses a Content-Length value; false when it is not a plain number. */
static bool parse_content_length(const char *v, uint64_t *out)
{
    if (v == NULL || *v < '0' || *v > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    if (errno != 0 || *end != '\0')
        return false;
    *out = n;
    return true;
}

/* Refuses ambiguous framing and learns whether a body follows (so that an
 * error answer can be sent before it is read). */
static bool check_framing(struct request *rq, struct framing *f)
{
    if (framing_ambiguous(rq->conn, f)) {
        answer_error(&rq->ans, STATUS_INVALID_ARGUMENT, "%s",
                     f->content_length_count > 1
                         ? "the request has more than one Content-Length header"
                         : "the request has both Content-Length and Transfer-Encoding");
        rq->has_body = true; /* never read a body framed two ways */
        return false;
    }
    const char *cl = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL && !parse_content_length(cl, &f->content_length)) {
        answer_error(&rq->ans, STATUS_INVALID_ARGUMENT, "Content-Length \"%s\" is not a number",
                     cl);
        rq->has_body = true;
        return false;
    }
    rq->has_body = f->transfer_encoding || f->content_length > 0;
    return true;
}

/* "application/json", any case, optionally followed by parameters; a
 * charset parameter must name UTF-8 (JSON is UTF-8 by RFC 8259). */
static bool is_json_media_type(const char *v)
{
    static const char json[] = "application/json";
    if (v == NULL)
        return false;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, json, sizeof json - 1) != 0)
        return false;
    v += sizeof json - 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v == '\0')
        return true;
    if (*v != ';')
        return false;
    const char *charset = strcasestr(v, "charset=");
    if (charset == NULL)
        return true;
    charset += 8;
    if (*charset == '"')
        charset++;
    return strncasecmp(charset, "utf-8", 5) == 0 || strncasecmp(charset, "utf8", 4) == 0;
}

/* "application/octet-stream", any case, optionally with parameters. */
static bool is_binary_media_type(const char *v)
{
    static const char bin[] = RESPONSE_BINARY_TYPE;
    if (v == NULL)
        return false;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, bin, sizeof bin - 1) != 0)
        return false;
    v += sizeof bin - 1;
    while (*v == ' ' || *v == '\t')
        v++;
    return *v == '\0' || *v == ';';
}

/* The routes that also take binary bodies (API.md, v2). */
static bool takes_binary_body(enum route_id id)
{
    return id == ROUTE_LOOKUP || id == ROUTE_GRADIENTS || id == ROUTE_ROWS;
}

static bool accepts_binary(struct MHD_Connection *conn)
{
    const char *accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    return accept != NULL && strcasestr(accept, RESPONSE_BINARY_TYPE) != NULL;
}

/* Copies src into dst[n] with bytes outside printable ASCII replaced by
 * '?': client bytes quoted in messages and logs stay valid UTF-8 text. */
static void copy_printable(char *dst, size_t n, const char *src)
{
    if (n == 0)
        return;
    size_t i = 0;
    for (; src != NULL && src[i] != '\0' && i + 1 < n; i++)
        dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
    dst[i] = '\0';
}

static bool check_route(struct request *rq, const char *url, const char *method,
                        const struct route **route, char table[TABLE_NAME_MAX + 1])
{
    struct answer *a = &rq->ans;
    switch (route_match(method, url, route, table, a->allow, sizeof a->allow)) {
    case ROUTE_NOT_FOUND:
        answer_error(a, STATUS_NOT_FOUND, "no such endpoint: %s %s", rq->method, rq->path);
        return false;
    case ROUTE_METHOD_NOT_ALLOWED:
        answer_error(a, STATUS_METHOD_NOT_ALLOWED, "%s is not allowed on %s; use %s",
                     rq->method, rq->path, a->allow);
        return false;
    case ROUTE_FOUND:
        break;
    }
    rq->route = (*route)->id;
    return true;
}

static bool check_auth(struct request *rq, const struct route *route)
{
    const char *authz = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth_allows(&rq->srv->auth, route->access, authz))
        return true;
    /* the header's value is never echoed: it may be the secret itself */
    const char *why = "this request needs an Authorization: Bearer token";
    if (authz != NULL && !auth_is_bearer(authz))
        why = "the Authorization header must read \"Bearer <token>\"; this one does not start "
              "with \"Bearer \"";
    else if (authz != NULL)
        why = "the bearer token does not grant this request";
    answer_error(&rq->ans, STATUS_UNAUTHORIZED, "%s", why);
    return false;
}

/* "words, items, users" (cut short with ", ..." when long) into out. */
static void table_names(const struct registry *r, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->n; i++) {
        const char *name = r->entries[i].cfg->name;
        if (used + strlen(name) + 8 > outlen) {
            snprintf(out + used, outlen - used, ", ...");
            return;
        }
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", name);
    }
}

/* An unknown table is told only to a client that passed auth, so table
 * names do not leak; a table still loading answers 503. */
static bool check_table(struct request *rq, const char *table)
{
    rq->entry = registry_find(&rq->srv->tables, table);
    if (rq->entry == NULL) {
        char names[200];
        table_names(&rq->srv->tables, names, sizeof names);
        answer_error(&rq->ans, STATUS_NOT_FOUND, "no table named \"%s\"; the tables are %s",
                     table, names[0] ? names : "(none)");
        return false;
    }
    rq->table = registry_table(rq->entry);
    if (rq->table == NULL) {
        answer_error(&rq->ans, STATUS_NOT_READY, "table \"%s\" is still loading", table);
        return false;
    }
    return true;
}

static bool check_content_type(struct request *rq)
{
    const char *ct = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    bool binary = takes_binary_body(rq->route);
    if (binary && is_binary_media_type(ct)) {
        /* an empty binary body is still one (a lookup of no ids) */
        rq->binary_body = true;
        rq->shape_header = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                       BINARY_SHAPE_HEADER);
        rq->lr_header = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                    BINARY_LR_HEADER);
        return true;
    }
    if (binary) {
        /* a JSON body with them is refused by the handler, not ignored */
        rq->shape_header = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                       BINARY_SHAPE_HEADER);
        rq->lr_header = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                    BINARY_LR_HEADER);
    }
    if (!rq->has_body || is_json_media_type(ct))
        return true;
    char shown[96];
    copy_printable(shown, sizeof shown, ct ? ct : "(none)");
    /* curl -d sends a form type unless told otherwise: say how to fix it */
    bool form = ct != NULL && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0;
    answer_error(&rq->ans, STATUS_UNSUPPORTED_MEDIA_TYPE,
                 "request bodies must be Content-Type: application/json%s, not \"%s\"%s",
                 binary ? " or " RESPONSE_BINARY_TYPE : "", shown,
                 form ? " (with curl -d, add -H 'Content-Type: application/json')" : "");
    return false;
}

/* 413 from Content-Length, before any of the body is read; a known length
 * sizes the buffer once. Chunked bodies are counted in collect_body. */
static bool check_size(struct request *rq, uint64_t length)
{
    uint64_t limit = rq->srv->cfg->max_body_bytes;
    if (length > limit) {
        answer_error(&rq->ans, STATUS_PAYLOAD_TOO_LARGE,
                     "the body has %llu bytes; the limit (limits.max_body_bytes) is %llu",
                     (unsigned long long)length, (unsigned long long)limit);
        return false;
    }
    if (length == 0)
        return true;
    rq->body = malloc((size_t)length + 1);
    if (rq->body == NULL) {
        answer_error(&rq->ans, STATUS_INTERNAL, "out of memory for a %llu-byte body",
                     (unsigned long long)length);
        return false;
    }
    rq->body_cap = (size_t)length + 1;
    return true;
}

/* The checks of API.md, in its order: route (404, 405), auth (401), then
 * the table (404, 503), content type (415), size (413); the body (400) is
 * the handler's. Returns false with rq->ans filled at the first failure. */
static bool check_request(struct request *rq, const char *url, const char *method,
                          const struct framing *f)
{
    const struct route *route = NULL;
    char table[TABLE_NAME_MAX + 1];
    if (!check_route(rq, url, method, &route, table) || !check_auth(rq, route))
        return false;
    if (route->has_table && !check_table(rq, table))
        return false;
    if (!check_content_type(rq) || !check_size(rq, f->content_length))
        return false;
    rq->binary = accepts_binary(rq->conn);
    return true;
}

/* ---- answers -------------------------------------------------------- */

static enum MHD_Result queue_answer(struct request *rq)
{
    struct answer *a = &rq->ans;
    size_t len = 0;
    char *data = buf_steal(&a->body, &len);
    if (data == NULL && len == 0 && a->body.failed) {
        answer_error(a, STATUS_INTERNAL, "%s", "the answer did not fit in memory");
        data = buf_steal(&a->body, &len);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(
        len, data ? data : (char *)"", data ? free : NULL);
    if (resp == NULL) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
    if (a->shape[0])
        MHD_add_response_header(resp, RESPONSE_SHAPE_HEADER, a->shape);
    if (a->allow[0] && a->http == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, a->allow);
    if (a->http == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    for (size_t i = 0; i < a->nheaders; i++)
        MHD_add_response_header(resp, a->headers[i].name, a->headers[i].value);
    enum MHD_Result r = MHD_queue_response(rq->conn, a->http, resp);
    MHD_destroy_response(resp);
    rq->phase = PHASE_QUEUED;
    return r;
}

/* A write handed to the journal: the connection waits, suspended, for the
 * answer (unless the handler runs on the pool, which suspended it). */
static void defer_answer(void *io)
{
    struct request *rq = io;
    rq->phase = PHASE_OFFLOADED;
    if (!rq->on_pool)
        MHD_suspend_connection(rq->conn);
}

/* The journal has written the answer; any thread. */
static void complete_answer(void *io)
{
    struct request *rq = io;
    rq->phase = PHASE_ANSWERED;
    /* libmicrohttpd takes its own lock here, which orders our writes to
     * rq before the thread that queues the answer reads them */
    MHD_resume_connection(rq->conn);
}

static void handler_ctx_of(struct request *rq, struct handler_ctx *c, bool *deferred)
{
    *deferred = false;
    *c = (struct handler_ctx){
        .srv = rq->srv,
        .route = rq->route,
        .entry = rq->entry,
        .table = rq->table,
        .body = rq->body ? rq->body : "",
        .len = rq->body_len,
        .binary = rq->binary,
        .url = rq->url,
        .conn = rq->conn,
        .binary_body = rq->binary_body,
        .shape_header = rq->shape_header,
        .lr_header = rq->lr_header,
        .min_seq_header = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                      "X-Embedding-Min-Seq"),
        .defer = defer_answer,
        .complete = complete_answer,
        .io = rq,
        .deferred = deferred,
    };
    if (rq->body)
        rq->body[rq->body_len] = '\0';
}

/* Runs on a work pool thread; the connection is suspended meanwhile. */
static void run_offloaded(struct work_job *job)
{
    struct request *rq = (struct request *)((char *)job - offsetof(struct request, job));
    struct handler_ctx c;
    bool deferred;
    handler_ctx_of(rq, &c, &deferred);
    handler_run(&c, &rq->ans);
    if (deferred)
        return; /* the journal answers; rq may already be gone */
    complete_answer(rq);
}

/* handler_is_heavy, asked once per request. */
static bool is_heavy(struct request *rq, const struct handler_ctx *c)
{
    if (rq->heavy < 0)
        rq->heavy = handler_is_heavy(c);
    return rq->heavy > 0;
}

static enum MHD_Result run_handler(struct request *rq)
{
    struct handler_ctx c;
    bool deferred;
    handler_ctx_of(rq, &c, &deferred);
    if (is_heavy(rq, &c)) {
        rq->phase = PHASE_OFFLOADED;
        rq->on_pool = true;
        rq->job.run = run_offloaded;
        /* suspend before submitting, or a fast job could resume a
         * connection that is not suspended yet */
        MHD_suspend_connection(rq->conn);
        if (work_submit(&rq->srv->work, &rq->job))
            return MHD_YES;
        MHD_resume_connection(rq->conn);
        answer_error(&rq->ans, STATUS_UNAVAILABLE, "%s", "the server is shutting down");
        rq->phase = PHASE_ANSWERED;
        return MHD_YES;
    }
    handler_run(&c, &rq->ans);
    if (deferred)
        return MHD_YES; /* suspended; complete_answer resumes it */
    return queue_answer(rq);
}

/* ---- body ----------------------------------------------------------- */

/* Appends a chunk; false (with a 413 answer) once the body passes the
 * limit, which for chunked bodies is only known as they arrive. Nothing
 * past the limit is stored. */
static bool collect_body(struct request *rq, const char *data, size_t n)
{
    uint64_t limit = rq->srv->cfg->max_body_bytes;
    if (rq->body_len + n > limit) {
        answer_error(&rq->ans, STATUS_PAYLOAD_TOO_LARGE,
                     "the body passed %llu bytes, the limit (limits.max_body_bytes)",
                     (unsigned long long)limit);
        return false;
    }
    if (rq->body_len + n + 1 > rq->body_cap) {
        size_t cap = rq->body_cap ? rq->body_cap : 4096;
        while (cap < rq->body_len + n + 1)
            cap *= 2;
        if (cap > limit + 1)
            cap = (size_t)limit + 1;
        char *p = realloc(rq->body, cap);
        if (p == NULL) {
            answer_error(&rq->ans, STATUS_INTERNAL, "%s", "out of memory for the body");
            return false;
        }
        rq->body = p;
        rq->body_cap = cap;
    }
    memcpy(rq->body + rq->body_len, data, n);
    rq->body_len += n;
    if (rq->cn != NULL)
        atomic_fetch_add_explicit(&rq->cn->body_bytes, n, memory_order_relaxed);
    return true;
}

/* libmicrohttpd 0.9.75 cannot queue an answer while a body is arriving, so
 * the rest of a refused chunked body is read and dropped, and the answer
 * goes out after it. A client that keeps sending past DISCARD_MAX is cut
 * off without an answer. */
#define DISCARD_MAX ((uint64_t)16 << 20)

static enum MHD_Result discard_body(struct request *rq, size_t *upload_data_size)
{
    free(rq->body);
    rq->body = NULL;
    rq->body_cap = 0;
    rq->discarded += *upload_data_size;
    if (rq->cn != NULL)
        atomic_fetch_add_explicit(&rq->cn->body_bytes, *upload_data_size, memory_order_relaxed);
    *upload_data_size = 0;
    return rq->discarded <= DISCARD_MAX ? MHD_YES : MHD_NO;
}

/* ---- libmicrohttpd callbacks ---------------------------------------- */

static enum MHD_Result begin_request(struct server *s, struct MHD_Connection *conn,
                                     const char *url, const char *method, void **con_cls)
{
    struct request *rq = calloc(1, sizeof *rq);
    if (rq == NULL)
        return MHD_NO;
    rq->srv = s;
    rq->conn = conn;
    rq->route = ROUTE_UNMATCHED;
    rq->heavy = -1;
    rq->start_ns = clock_mono_ns();
    rq->url = url;
    copy_printable(rq->method, sizeof rq->method, method);
    copy_printable(rq->path, sizeof rq->path, url);
    answer_init(&rq->ans);
    rq->cn = conn_of(conn);
    conn_set(rq->cn, CONN_BODY);
    *con_cls = rq;
    atomic_fetch_add(&in_flight, 1);
    atomic_fetch_add(&s->metrics.in_flight, 1);

    struct framing f;
    bool ok = check_framing(rq, &f) && check_request(rq, url, method, &f);
    if (ok) {
        rq->phase = PHASE_READING;
        return MHD_YES;
    }
    rq->phase = PHASE_ANSWERED;
    /* an error with a body to follow is sent now, so the body is never
     * read (libmicrohttpd then closes the connection) */
    return rq->has_body ? queue_answer(rq) : MHD_YES;
}

/* libmicrohttpd 0.9.75 drops the answer of a request that is suspended in
 * the same pass that read it, when the client half-closed after sending
 * it: on resume it reads the end of input first and closes. Returning once
 * without an answer moves the connection to a state where it reads no
 * more; the final call comes again at once and the request is suspended
 * from there. Only requests that will be suspended pay that extra pass:
 * heavy ones and writes (which complete asynchronously). */
static bool defer_final_call(struct request *rq)
{
    if (rq->deferred)
        return false;
    bool write = rq->route == ROUTE_GRADIENTS || rq->route == ROUTE_ROWS ||
                 rq->route == ROUTE_DELETE_ROWS || rq->route == ROUTE_SNAPSHOT;
    struct handler_ctx c;
    bool unused;
    handler_ctx_of(rq, &c, &unused);
    rq->deferred = is_heavy(rq, &c) || write;
    return rq->deferred;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    struct request *rq = *con_cls;
    if (rq == NULL)
        return begin_request(cls, conn, url, method, con_cls);
    rq->url = url;

    switch (rq->phase) {
    case PHASE_READING:
        if (*upload_data_size > 0) {
            if (!collect_body(rq, upload_data, *upload_data_size))
                rq->phase = PHASE_ANSWERED;
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (defer_final_call(rq))
            return MHD_YES;
        conn_set(rq->cn, CONN_BUSY);
        return run_handler(rq);
    case PHASE_ANSWERED:
        if (*upload_data_size > 0)
            return discard_body(rq, upload_data_size);
        return queue_answer(rq);
    case PHASE_OFFLOADED:
    case PHASE_QUEUED:
        *upload_data_size = 0;
        return MHD_YES;
    }
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct server *s = cls;
    struct request *rq = *con_cls;
    if (rq == NULL)
        return;
    uint64_t elapsed = clock_mono_ns() - rq->start_ns;
    unsigned status = rq->phase == PHASE_QUEUED ? rq->ans.http : 0;
    metrics_observe(&s->metrics, rq->route, status, elapsed);
    log_debug("%s %s -> %u %s, %.3f ms%s", rq->method, rq->path, status,
              status ? status_name(rq->ans.code) : "no answer", (double)elapsed / 1e6,
              toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    conn_set(rq->cn, CONN_WAITING); /* for the next request's headers */
    answer_deinit(&rq->ans);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
    atomic_fetch_sub(&s->metrics.in_flight, 1);
    atomic_fetch_sub(&in_flight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    log_warn("libmicrohttpd: %s", line);
}

/* ---- daemon --------------------------------------------------------- */

static int resolve_listen(const struct config *cfg, struct sockaddr_storage *ss,
                          socklen_t *sslen, char *err, size_t errlen)
{
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(cfg->host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "listen.host \"%s\": %s", cfg->host, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* The listening socket and the thread that accepts on it. */
static struct {
    int fd; /* -1 when not listening */
    pthread_t thread;
    bool running;
    _Atomic bool stopping;
} acceptor = {.fd = -1};

static int listen_on(const struct sockaddr_storage *ss, socklen_t sslen, char *err,
                     size_t errlen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (const struct sockaddr *)ss, sslen) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The pool thread with the fewest connections (libmicrohttpd gives a
 * connection to thread fd % threads when it has room), and their total. */
static unsigned least_busy_thread(int *open)
{
    unsigned best = 0;
    *open = 0;
    for (unsigned t = 0; t < conns.threads; t++) {
        int n = atomic_load(&conns.on_thread[t]);
        *open += n;
        if (n < atomic_load(&conns.on_thread[best]))
            best = t;
    }
    return best;
}

/* The first number above fd that thread t serves. */
static int above_for(int fd, unsigned t)
{
    unsigned n = conns.threads, next = (unsigned)fd + 1;
    return (int)(next + (t + n - next % n) % n);
}

/* fd, or a duplicate of it (fd closed) numbered for thread t: a descriptor
 * held elsewhere between two accepts (a probe, a table's file) would
 * otherwise put two clients on one thread. Gives up after a few tries
 * (numbers taken) and keeps fd. */
static int numbered_for(int fd, unsigned t)
{
    int want = above_for(fd, t);
    for (int tries = 0; (unsigned)fd % conns.threads != t && tries < 8; tries++) {
        int d = fcntl(fd, F_DUPFD_CLOEXEC, want);
        if (d < 0)
            break;
        if ((unsigned)d % conns.threads == t) {
            close(fd);
            return d;
        }
        close(d);
        want = above_for(d, t);
    }
    return fd;
}

/* accept(2)'s errors that are the new connection's, not the socket's (its
 * manual says to treat them as EAGAIN). */
static bool accept_error_is_the_peers(int e)
{
    switch (e) {
    case EINTR: case ECONNABORTED: case EPROTO: case ENETDOWN: case ENOPROTOOPT:
    case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

/* At limits.max_connections a new connection is accepted and closed at
 * once, so a client learns at once instead of waiting in the backlog.
 * The count goes up here, before the hand-over, so a burst cannot pass it. */
static void *accept_main(void *arg)
{
    struct server *s = arg;
    uint64_t logged_ms = 0, refused_ms = 0;
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(acceptor.fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd >= 0) {
            int open;
            unsigned t = least_busy_thread(&open);
            if (open >= s->cfg->max_connections) {
                close(fd);
                uint64_t now = clock_mono_ms();
                if (now - refused_ms >= 10000) {
                    log_warn("%d connections open (limits.max_connections): closing new ones "
                             "at once", s->cfg->max_connections);
                    refused_ms = now;
                }
                continue;
            }
            fd = numbered_for(fd, t);
            t = (unsigned)fd % conns.threads;
            atomic_fetch_add(&conns.on_thread[t], 1);
            /* refused (the per-IP limit, memory) or not, libmicrohttpd
             * owns fd now; a refusal is never reported closed. (Neither is
             * a connection its pool thread then fails to set up, for
             * memory or epoll: that one keeps its count, a slot lost.) */
            if (MHD_add_connection(s->daemon, fd, (const struct sockaddr *)&peer, len) != MHD_YES)
                atomic_fetch_sub(&conns.on_thread[t], 1);
            continue;
        }
        if (atomic_load(&acceptor.stopping))
            break; /* the shutdown(2) of http_quiesce */
        if (accept_error_is_the_peers(errno))
            continue;
        if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM) {
            log_error("accept: %s: no more connections are accepted", strerror(errno));
            break;
        }
        /* out of descriptors or memory: the connection waits in the
         * backlog; try again shortly, saying so at most every 10 s */
        uint64_t now = clock_mono_ms();
        if (now - logged_ms >= 10000) {
            log_warn("accept: %s (limits.max_connections and ulimit -n)", strerror(errno));
            logged_ms = now;
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
    return NULL;
}

static void acceptor_stop(void)
{
    if (acceptor.fd < 0)
        return;
    atomic_store(&acceptor.stopping, true);
    (void)shutdown(acceptor.fd, SHUT_RDWR); /* wakes accept(2) with EINVAL */
    if (acceptor.running)
        pthread_join(acceptor.thread, NULL);
    acceptor.running = false;
    close(acceptor.fd);
    acceptor.fd = -1;
}

int http_start(struct server *s, char *err, size_t errlen)
{
    const struct config *cfg = s->cfg;
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (resolve_listen(cfg, &ss, &sslen, err, errlen) != 0)
        return -1;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    unsigned threads = cfg->threads > 0 ? (unsigned)cfg->threads : 1;
    /* libmicrohttpd splits its limit between the pool threads and refuses
     * at it; the acceptor enforces max_connections instead, so each
     * thread's share must be able to hold them all */
    unsigned mhd_limit = ((unsigned)cfg->max_connections + MHD_LIMIT_SLACK) * threads;
    raise_fd_limit(cfg);
    conns.threads = threads;
    if (sweeper_start(cfg) != 0) {
        snprintf(err, errlen, "cannot start the connection sweeper thread");
        return -1;
    }
    char why[160];
    acceptor.fd = listen_on(&ss, sslen, why, sizeof why);
    if (acceptor.fd < 0) {
        sweeper_stop();
        snprintf(err, errlen, "cannot listen on %s:%d: %s (address in use, or not an address "
                 "of this machine?)", cfg->host, cfg->port, why);
        return -1;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    s->port = (uint16_t)cfg->port;
    if (getsockname(acceptor.fd, (struct sockaddr *)&bound, &blen) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6
                            ? ((struct sockaddr_in6 *)&bound)->sin6_port
                            : ((struct sockaddr_in *)&bound)->sin_port);
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, to catch every message */
        MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_END);
    if (s->daemon == NULL) {
        acceptor_stop();
        sweeper_stop();
        snprintf(err, errlen, "cannot start libmicrohttpd's %u threads", threads);
        return -1;
    }
    atomic_store(&acceptor.stopping, false);
    if (pthread_create(&acceptor.thread, NULL, accept_main, s) != 0) {
        http_stop(s);
        snprintf(err, errlen, "cannot start the accepting thread");
        return -1;
    }
    acceptor.running = true;
    return 0;
}

void http_quiesce(struct server *s)
{
    (void)s;
    acceptor_stop(); /* new connections are refused from here on */
}

int64_t http_in_flight(struct server *s)
{
    (void)s;
    return atomic_load(&in_flight);
}

void http_stop(struct server *s)
{
    acceptor_stop();
    if (s->daemon == NULL)
        return;
    sweeper_stop();
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
