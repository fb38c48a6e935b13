/* test_http_cluster.c - cluster mode, black box: three nats-server processes
 * clustered on loopback (JetStream, each with its own store dir under a
 * temp dir, started and stopped here) and two or three embedding-server
 * replicas over them.
 *
 * Replicas hold bit-identical tables (every row compared, and against a
 * single server with the local log given the same writes); a write is
 * readable from another replica with min_seq; JetStream unreachable
 * answers writes 503 and keeps reads; a NATS node killed during writes
 * loses nothing acknowledged; a replica killed with SIGKILL, and a new one
 * joining later, catch up to the same bits; a snapshot published for the
 * cluster lets the stream be purged and still bootstraps a new replica.
 *
 * The suite runs without forking (the NATS cluster lives across tests,
 * and a test that restarts a node must leave it running); each test uses
 * its own tables, so its own streams. Skipped (exit 77) when nats-server
 * is not installed. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "testutil.h"

#define NODES 3
#define DIM 8
#define ROWS 64

static char *nats_bin;
static char *nats_dir;
static pid_t nats_pid[NODES];
static int client_port[NODES], route_port[NODES];
static char nats_urls[256];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static char *find_nats_server(void)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin:/usr/sbin");
    char *found = NULL;
    for (char *save = NULL, *d = strtok_r(copy, ":", &save); d && !found;
         d = strtok_r(NULL, ":", &save)) {
        char p[1024];
        snprintf(p, sizeof p, "%s/nats-server", d);
        if (access(p, X_OK) == 0)
            found = strdup(p);
    }
    free(copy);
    return found;
}

/* A loopback port nobody listens on now. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("test_http_cluster: a free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void nats_start(int i)
{
    char conf[512], store[512], log[512], text[2048];
    snprintf(conf, sizeof conf, "%s/n%d.conf", nats_dir, i);
    snprintf(store, sizeof store, "%s/store%d", nats_dir, i);
    snprintf(log, sizeof log, "%s/n%d.log", nats_dir, i);
    snprintf(text, sizeof text,
             "server_name: n%d\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\n"
             "jetstream { store_dir: \"%s\", max_memory_store: 64MB, max_file_store: 1GB }\n"
             "cluster { name: es-test, listen: 127.0.0.1:%d, routes: ["
             "nats-route://127.0.0.1:%d, nats-route://127.0.0.1:%d, nats-route://127.0.0.1:%d] }\n",
             i, client_port[i], store, route_port[i], route_port[0], route_port[1], route_port[2]);
    FILE *cf = fopen(conf, "w");
    if (cf == NULL || fputs(text, cf) < 0 || fclose(cf) != 0) {
        perror(conf);
        exit(1);
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = freopen(log, "a", stdout);
        (void)f;
        dup2(STDOUT_FILENO, STDERR_FILENO);
        execl(nats_bin, nats_bin, "-c", conf, (char *)NULL);
        _exit(127);
    }
    nats_pid[i] = pid;
}

static void nats_kill(int i, int sig)
{
    if (nats_pid[i] <= 0)
        return;
    kill(nats_pid[i], sig);
    if (sig == SIGKILL || sig == SIGTERM) {
        waitpid(nats_pid[i], NULL, 0);
        nats_pid[i] = 0;
    }
}

static void cluster_up(void)
{
    /* outside any test: no ck_assert here (testutil_tmpdir has them) */
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/es-nats-XXXXXX", base && *base ? base : "/tmp");
    if (mkdtemp(tmpl) == NULL) {
        perror(tmpl);
        exit(1);
    }
    nats_dir = strdup(tmpl);
    for (int i = 0; i < NODES; i++) {
        client_port[i] = free_port();
        route_port[i] = free_port();
    }
    snprintf(nats_urls, sizeof nats_urls, "\"nats://127.0.0.1:%d\", \"nats://127.0.0.1:%d\", "
             "\"nats://127.0.0.1:%d\"", client_port[0], client_port[1], client_port[2]);
    for (int i = 0; i < NODES; i++)
        nats_start(i);
}

static void cluster_down(void)
{
    for (int i = 0; i < NODES; i++)
        nats_kill(i, SIGKILL);
    testutil_rmtree(nats_dir);
    nats_dir = NULL;
}

/* ---- servers ------------------------------------------------------------- */

/* Two tables: a SparseAdam table with padding, and one with max_norm whose
 * lookups renormalize (records of their own). */
static const char tables_fmt[] =
    "{\"name\": \"%s\", \"init\": {\"num_embeddings\": %d, \"embedding_dim\": %d, \"seed\": 5},"
    " \"padding_idx\": 0, \"optimizer\": {\"name\": \"sparse_adam\", \"lr\": 0.05}},"
    "{\"name\": \"%s.norm\", \"init\": {\"num_embeddings\": %d, \"embedding_dim\": %d, \"seed\": 6},"
    " \"max_norm\": 1.5, \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.1}}";

static void start_server_with(struct test_server *s, const char *node, const char *tables,
                              bool cluster, bool wait_ready)
{
    char config[4096], clus[768] = "";
    if (cluster)
        snprintf(clus, sizeof clus,
                 "\"cluster\": {\"nats\": [%s], \"node\": \"%s\", \"wait_ms\": 3000,"
                 " \"publish_timeout_ms\": 2000},", nats_urls, node);
    snprintf(config, sizeof config,
             "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0}, \"data_dir\": \"%s/data\","
             " \"threads\": 2, %s \"tables\": [%s]}", s->dir, clus, tables);
    test_server_start(s, config, NULL, wait_ready);
}

static void start_server(struct test_server *s, const char *node, const char *table, bool cluster,
                         bool wait_ready)
{
    char tables[1024];
    snprintf(tables, sizeof tables, tables_fmt, table, ROWS, DIM, table, ROWS, DIM);
    start_server_with(s, node, tables, cluster, wait_ready);
}

/* ---- requests ------------------------------------------------------------ */

static unsigned long long seq_of(const struct reply *r)
{
    const char *p = strstr(r->body, "\"seq\":");
    ck_assert_msg(p != NULL, "no seq in %s", r->body);
    return strtoull(p + 6, NULL, 10);
}

/* One deterministic gradient step (number k) through s; returns the
 * status, *seq the answer's seq when 200, and err (when not NULL) the
 * answer's body. */
static long post_step_why(const struct test_server *s, const char *table, int k,
                          unsigned long long *seq, char *err, size_t errlen)
{
    char body[2048];
    int n = snprintf(body, sizeof body, "{\"ids\": [%d, %d, %d], \"grads\": [", 1 + k % 13,
                     1 + (k * 7) % (ROWS - 1), 1 + k % 13);
    for (int i = 0; i < 3; i++) {
        n += snprintf(body + n, sizeof body - (size_t)n, "%s[", i ? "," : "");
        for (int d = 0; d < DIM; d++)
            n += snprintf(body + n, sizeof body - (size_t)n, "%s%.3f", d ? "," : "",
                          (double)((k * 31 + i * 7 + d * 3) % 17 - 8) / 8.0);
        n += snprintf(body + n, sizeof body - (size_t)n, "]");
    }
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    char path[128];
    snprintf(path, sizeof path, "/v1/tables/%s/gradients", table);
    struct reply r;
    http_json(s, "POST", path, body, &r);
    long status = r.status;
    if (status == 200 && seq != NULL)
        *seq = seq_of(&r);
    if (err != NULL)
        snprintf(err, errlen, "%s", r.body);
    reply_free(&r);
    return status;
}

static long post_step(const struct test_server *s, const char *table, int k,
                      unsigned long long *seq)
{
    return post_step_why(s, table, k, seq, NULL, 0);
}

/* Assigns row id the vector (v, v, ...); returns the status. */
static long put_row(const struct test_server *s, const char *table, int id, double v,
                    unsigned long long *seq, char *err, size_t errlen)
{
    char body[512], path[128];
    int n = snprintf(body, sizeof body, "{\"ids\": [%d], \"vectors\": [[", id);
    for (int d = 0; d < DIM; d++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s%.1f", d ? "," : "", v);
    snprintf(body + n, sizeof body - (size_t)n, "]]}");
    snprintf(path, sizeof path, "/v1/tables/%s/rows", table);
    struct reply r;
    http_json(s, "PUT", path, body, &r);
    long status = r.status;
    if (status == 200 && seq != NULL)
        *seq = seq_of(&r);
    if (err != NULL)
        snprintf(err, errlen, "%s", r.body);
    reply_free(&r);
    return status;
}

/* A read with min_seq: a replica that has not applied it within its
 * cluster.wait_ms answers 503 "min_seq: ..." and the contract says retry
 * (one whose consumer was on a NATS node that went away takes about two
 * missed heartbeats to notice); so does this, for up to 30 s. */
static void read_at_seq(const struct test_server *s, const char *path, const char *body,
                        const char *const *hdrs, struct reply *r)
{
    double deadline = now_s() + 30;
    for (;;) {
        http_do(s, "POST", path, "application/json", body, strlen(body), hdrs, r);
        if (r->status != 503 || strstr(r->body, "min_seq: ") == NULL || now_s() > deadline)
            return;
        reply_free(r);
        sleep_ms(100);
    }
}

/* Every row of the table as raw float32, read with min_seq; caller frees. */
static char *all_rows(const struct test_server *s, const char *table, unsigned long long min_seq,
                      size_t *len)
{
    char body[1024], path[128];
    int n = snprintf(body, sizeof body, "{\"min_seq\": %llu, \"ids\": [", min_seq);
    for (int i = 0; i < ROWS; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s%d", i ? "," : "", i);
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    snprintf(path, sizeof path, "/v1/tables/%s/lookup", table);
    const char *hdrs[] = {"Accept: application/octet-stream", NULL};
    struct reply r;
    read_at_seq(s, path, body, hdrs, &r);
    ck_assert_msg(r.status == 200, "lookup on %s: %ld %s", s->base, r.status, r.body);
    ck_assert_uint_eq(r.len, (size_t)ROWS * DIM * sizeof(float));
    char *rows = malloc(r.len);
    memcpy(rows, r.body, r.len);
    *len = r.len;
    reply_free(&r);
    return rows;
}

/* The table's seq as GET /v1/tables/{t} says. */
static unsigned long long table_seq(const struct test_server *s, const char *table)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tables/%s", table);
    struct reply r;
    http_get(s, path, &r);
    ck_assert_int_eq(r.status, 200);
    unsigned long long seq = seq_of(&r);
    reply_free(&r);
    return seq;
}

/* Asserts a and b hold the same bits for table at seq (a's seq when 0).
 * b_local: b is the single server, whose seqs differ (it never took the
 * renormalizing reads of earlier comparisons): only the bits must agree. */
static void ck_rows(const struct test_server *a, const struct test_server *b,
                    const char *table, unsigned long long seq, bool b_local)
{
    size_t la, lb;
    /* a read of a max_norm table renormalizes (a record of its own), and a
     * renormalized row can still exceed max_norm by a rounding (torch's
     * embedding_renorm_ does the same: the next forward scales it again):
     * read until reading changes nothing, and compare at that seq, where b
     * (the same bits) has nothing to renormalize either */
    free(all_rows(a, table, seq, &la));
    seq = table_seq(a, table);
    for (int tries = 0; tries < 20; tries++) {
        free(all_rows(a, table, seq, &la));
        unsigned long long now = table_seq(a, table);
        if (now == seq)
            break;
        seq = now;
    }
    if (b_local)
        free(all_rows(b, table, 0, &lb));
    char *ra = all_rows(a, table, seq, &la);
    char *rb = all_rows(b, table, b_local ? 0 : seq, &lb);
    if (!b_local)
        ck_assert_uint_eq(table_seq(a, table), table_seq(b, table));
    ck_assert_msg(la == lb && memcmp(ra, rb, la) == 0, "table %s differs between %s and %s",
                  table, a->base, b->base);
    free(ra);
    free(rb);
}

static void ck_same_rows(const struct test_server *a, const struct test_server *b,
                         const char *table, unsigned long long seq)
{
    ck_rows(a, b, table, seq, false);
}

/* Lookups on the max_norm table: renormalizations, through the stream.
 * min_seq makes the replica decide on the state the local peer has. */
static void renorm_lookup(const struct test_server *s, const char *table, int k,
                          unsigned long long min_seq)
{
    char path[128], body[128];
    snprintf(path, sizeof path, "/v1/tables/%s.norm/lookup", table);
    snprintf(body, sizeof body, "{\"ids\": [%d, %d], \"min_seq\": %llu}", k % ROWS,
             (k * 5 + 1) % ROWS, min_seq);
    struct reply r;
    read_at_seq(s, path, body, NULL, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
}

static unsigned long long norm_step(const struct test_server *s, const char *table, int k)
{
    char name[80];
    unsigned long long seq = 0;
    snprintf(name, sizeof name, "%s.norm", table);
    ck_assert_int_eq(post_step(s, name, k, &seq), 200);
    return seq;
}

static bool wait_nats_status(const struct test_server *s, bool want_connected, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    while (now_s() < deadline) {
        struct reply r;
        http_get(s, "/v1/cluster", &r);
        bool connected = r.status == 200 && strstr(r.body, "\"status\":\"connected\"") != NULL;
        reply_free(&r);
        if (connected == want_connected)
            return true;
        sleep_ms(100);
    }
    return false;
}

/* ---- tests ------------------------------------------------------------------ */

/* Writes through every replica in turn (and renormalizing lookups), then
 * compares every row of every replica, and with a single server (local
 * log) given the same writes in the same order. */
START_TEST(replicas_bit_identical)
{
    struct test_server s[3], local;
    const char *names[] = {"es-0", "es-1", "es-2"};
    for (int i = 0; i < 3; i++) {
        test_server_prepare(&s[i]);
        start_server(&s[i], names[i], "rep", true, true);
    }
    test_server_prepare(&local);
    start_server(&local, "local", "rep", false, true);
    unsigned long long seq = 0;
    for (int k = 0; k < 30; k++) {
        ck_assert_int_eq(post_step(&s[k % 3], "rep", k, &seq), 200);
        ck_assert_int_eq(post_step(&local, "rep", k, NULL), 200);
        unsigned long long nseq = norm_step(&s[(k + 1) % 3], "rep", k);
        norm_step(&local, "rep", k);
        renorm_lookup(&s[(k + 2) % 3], "rep", k, nseq);
        renorm_lookup(&local, "rep", k, 0);
    }
    ck_assert_uint_eq(seq, 30);
    for (int i = 1; i < 3; i++) {
        ck_same_rows(&s[0], &s[i], "rep", seq);
        ck_same_rows(&s[0], &s[i], "rep.norm", 0);
    }
    ck_rows(&s[0], &local, "rep", seq, true);
    ck_rows(&s[0], &local, "rep.norm", 0, true);
    struct reply r;
    http_get(&s[1], "/v1/cluster", &r);
    ck_reply(&r, 200, NULL);
    ck_assert_ptr_nonnull(strstr(r.body, "\"node\":\"es-1\""));
    ck_assert_ptr_nonnull(strstr(r.body, "\"name\":\"rep\",\"seq\":30,\"stream_seq\":30"));
    reply_free(&r);
    http_get(&s[2], "/metrics", &r);
    ck_assert_ptr_nonnull(strstr(r.body, "embedding_server_replication_lag_records{table=\"rep\"} 0"));
    ck_assert_ptr_nonnull(strstr(r.body, "embedding_server_publish_seconds_count"));
    reply_free(&r);
    http_get(&local, "/v1/cluster", &r);
    ck_reply(&r, 404, "not_found");
    reply_free(&r);
    for (int i = 0; i < 3; i++)
        test_server_cleanup(&s[i]);
    test_server_cleanup(&local);
}
END_TEST

/* A write answered by one replica is read by another with min_seq; a
 * min_seq nobody reaches is 503 not_ready after wait_ms. */
START_TEST(read_your_writes)
{
    struct test_server a, b;
    test_server_prepare(&a);
    test_server_prepare(&b);
    start_server(&a, "a", "ryw", true, true);
    start_server(&b, "b", "ryw", true, true);
    for (int k = 0; k < 20; k++) {
        unsigned long long seq = 0;
        ck_assert_int_eq(put_row(&a, "ryw", 1 + k % 10, (double)(k + 1), &seq, NULL, 0), 200);
        char path[64] = "/v1/tables/ryw/lookup", body[128];
        snprintf(body, sizeof body, "{\"ids\": [%d], \"min_seq\": %llu}", 1 + k % 10, seq);
        struct reply r;
        http_json(&b, "POST", path, body, &r);
        ck_reply(&r, 200, NULL);
        char want[64];
        snprintf(want, sizeof want, "[[%d.0,%d.0,", k + 1, k + 1);
        ck_assert_msg(strstr(r.body, want) != NULL, "step %d: %s", k, r.body);
        reply_free(&r);
        /* the header form, as binary bodies use */
        char hdr[64];
        snprintf(hdr, sizeof hdr, "X-Embedding-Min-Seq: %llu", seq);
        const char *hdrs[] = {hdr, NULL};
        snprintf(body, sizeof body, "{\"ids\": [%d]}", 1 + k % 10);
        http_do(&b, "POST", path, "application/json", body, strlen(body), hdrs, &r);
        ck_reply(&r, 200, NULL);
        ck_assert_msg(strstr(r.body, want) != NULL, "step %d: %s", k, r.body);
        reply_free(&r);
    }
    double t0 = now_s();
    struct reply r;
    http_json(&b, "POST", "/v1/tables/ryw/lookup", "{\"ids\": [1], \"min_seq\": 1000000}", &r);
    ck_reply(&r, 503, "not_ready");
    ck_assert_double_ge(now_s() - t0, 2.5);
    reply_free(&r);
    const char *bad[] = {"X-Embedding-Min-Seq: x1", NULL};
    http_do(&b, "POST", "/v1/tables/ryw/lookup", "application/json", "{\"ids\": [1]}", 12, bad,
            &r);
    ck_reply(&r, 400, "invalid_argument");
    reply_free(&r);
    test_server_cleanup(&a);
    test_server_cleanup(&b);
}
END_TEST

/* JetStream unreachable (every NATS node stopped): writes 503 at once,
 * nothing changes, reads answer; once NATS is back, writes go on and the
 * replicas agree. */
START_TEST(jetstream_unreachable)
{
    struct test_server a, b;
    test_server_prepare(&a);
    test_server_prepare(&b);
    start_server(&a, "a", "down", true, true);
    start_server(&b, "b", "down", true, true);
    unsigned long long seq = 0;
    for (int k = 0; k < 5; k++)
        ck_assert_int_eq(post_step(&a, "down", k, &seq), 200);
    ck_same_rows(&a, &b, "down", seq);
    for (int i = 0; i < NODES; i++)
        nats_kill(i, SIGSTOP);
    ck_assert_msg(wait_nats_status(&a, false, 20) && wait_nats_status(&b, false, 20),
                  "the servers did not notice NATS was gone");
    char err[512];
    double t0 = now_s();
    ck_assert_int_eq(put_row(&a, "down", 3, 9.0, NULL, err, sizeof err), 503);
    ck_assert_msg(strstr(err, "unavailable") != NULL, "%s", err);
    ck_assert_int_eq(post_step(&b, "down", 99, NULL), 503);
    ck_assert_double_lt(now_s() - t0, 1.5); /* not the 2 s ack timeout */
    size_t len;
    free(all_rows(&b, "down", 0, &len)); /* reads go on */
    ck_assert_uint_eq(table_seq(&a, "down"), seq);
    /* a replica starting now cannot reach its stream: not ready */
    struct test_server c;
    test_server_prepare(&c);
    start_server(&c, "c", "down", true, false);
    sleep_ms(1500);
    struct reply r;
    http_get(&c, "/readyz", &r);
    ck_assert_int_eq(r.status, 503);
    reply_free(&r);
    for (int i = 0; i < NODES; i++)
        nats_kill(i, SIGCONT);
    ck_assert(wait_nats_status(&a, true, 20));
    ck_assert(wait_nats_status(&b, true, 20));
    /* the writes refused as unreachable were never sent; a retry refused
     * with "may or may not have been stored" (an ack lost while the stream
     * elects its leader again) may have been */
    double deadline = now_s() + 30;
    unsigned long long next = 0;
    unsigned ambiguous = 0;
    long st;
    char refused[600] = "none";
    while ((st = post_step_why(&a, "down", 5, &next, err, sizeof err)) != 200 &&
           now_s() < deadline) {
        if (strstr(err, "may or may not have been stored") != NULL)
            ambiguous++;
        snprintf(refused, sizeof refused, "%ld %s", st, err);
        sleep_ms(200);
    }
    ck_assert_int_eq(st, 200);
    ck_assert_msg(next >= seq + 1 && next <= seq + 1 + ambiguous,
                  "the refused writes changed the stream: seq %llu after %llu (%u answers "
                  "were ambiguous; the last refusal: %s)", next, seq, ambiguous, refused);
    ck_same_rows(&a, &b, "down", next);
    deadline = now_s() + 30;
    long ready = 0;
    while (ready != 200 && now_s() < deadline) {
        http_get(&c, "/readyz", &r);
        ready = r.status;
        reply_free(&r);
        sleep_ms(100);
    }
    ck_assert_int_eq(ready, 200);
    ck_same_rows(&a, &c, "down", next);
    test_server_cleanup(&c);

    /* NATS stalls with the connection still up: the write is sent and its
     * ack never comes; 503 after publish_timeout_ms (2 s, + 1 s of slack),
     * and whatever JetStream makes of it later, the replicas agree */
    for (int i = 0; i < NODES; i++)
        nats_kill(i, SIGSTOP);
    t0 = now_s();
    ck_assert_int_eq(put_row(&a, "down", 4, 7.0, NULL, err, sizeof err), 503);
    ck_assert_msg(strstr(err, "may or may not have been stored") != NULL, "%s", err);
    ck_assert_double_lt(now_s() - t0, 5.0);
    for (int i = 0; i < NODES; i++)
        nats_kill(i, SIGCONT);
    ck_assert(wait_nats_status(&a, true, 20) && wait_nats_status(&b, true, 20));
    deadline = now_s() + 30;
    while (post_step(&b, "down", 6, &next) != 200 && now_s() < deadline)
        sleep_ms(200);
    ck_assert_uint_ge(next, seq + 2);
    ck_same_rows(&a, &b, "down", next);
    test_server_cleanup(&a);
    test_server_cleanup(&b);
}
END_TEST

/* The NATS node a server is connected to (by its client port), or -1. */
static int connected_node(const struct test_server *s)
{
    struct reply r;
    http_get(s, "/v1/cluster", &r);
    int node = -1;
    for (int i = 0; i < NODES; i++) {
        char url[64];
        snprintf(url, sizeof url, "\"connected_url\":\"nats://127.0.0.1:%d\"", client_port[i]);
        if (strstr(r.body, url) != NULL)
            node = i;
    }
    reply_free(&r);
    return node;
}

/* One NATS node of three killed during writes (the one the first server
 * is connected to, so it must reconnect and its consumer move): writes go
 * on (R=3 keeps a quorum), and every acknowledged one is on every
 * replica. */
START_TEST(nats_node_killed_during_writes)
{
    struct test_server a, b;
    test_server_prepare(&a);
    test_server_prepare(&b);
    start_server(&a, "a", "kill", true, true);
    start_server(&b, "b", "kill", true, true);
    bool acked[ROWS] = {false};
    int ok = 0, refused = 0;
    unsigned long long last = 0;
    double longest = 0;
    /* a client that retries a 503 (a row assignment is idempotent), as a
     * training loop would: the writes go on through the leader election */
    int victim = connected_node(&a);
    ck_assert_int_ge(victim, 0);
    for (int id = 1; id < ROWS; id++) {
        if (id == 15)
            nats_kill(victim, SIGKILL);
        double t0 = now_s();
        long st = 0;
        unsigned long long seq = 0;
        while ((st = put_row(id % 2 ? &a : &b, "kill", id, (double)id, &seq, NULL, 0)) == 503 &&
               now_s() - t0 < 60) { /* 8.3 s seen under ASan */
            refused++;
            sleep_ms(100);
        }
        ck_assert_msg(st == 200, "write %d: status %ld", id, st);
        if (now_s() - t0 > longest)
            longest = now_s() - t0;
        acked[id] = true;
        ok++;
        if (seq > last)
            last = seq;
    }
    printf("nats_node_killed_during_writes: %d writes, %d answers 503 on the way, longest "
           "write %.2f s\n", ok, refused, longest);
    size_t len;
    for (int r = 0; r < 2; r++) {
        char *rows = all_rows(r ? &b : &a, "kill", last, &len);
        const float *f = (const float *)(const void *)rows;
        for (int id = 1; id < ROWS; id++)
            if (acked[id])
                ck_assert_msg(f[id * DIM] == (float)id, "acknowledged row %d lost on %s", id,
                              r ? "b" : "a");
        free(rows);
    }
    ck_same_rows(&a, &b, "kill", 0);
    nats_start(victim);
    test_server_cleanup(&a);
    test_server_cleanup(&b);
    (void)refused;
}
END_TEST

/* A replica killed with SIGKILL restarts from its local snapshot plus the
 * stream, and catches up to the same bits; /readyz waits for that. A new
 * replica with an empty data_dir joins later and gets there too. */
START_TEST(replica_restart_and_join)
{
    struct test_server a, b, c;
    test_server_prepare(&a);
    test_server_prepare(&b);
    start_server(&a, "a", "rst", true, true);
    start_server(&b, "b", "rst", true, true);
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(post_step(k % 2 ? &a : &b, "rst", k, NULL), 200);
    size_t len;
    free(all_rows(&b, "rst", 10, &len)); /* b's snapshot holds seq 10 */
    struct reply r;
    http_json(&b, "POST", "/v1/tables/rst/snapshot", "{}", &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    ck_assert_int_eq(post_step(&b, "rst", 10, NULL), 200);
    kill(b.pid, SIGKILL);
    ck_assert(test_server_wait(&b, 10));
    unsigned long long seq = 0;
    for (int k = 11; k < 40; k++) {
        ck_assert_int_eq(post_step(&a, "rst", k, &seq), 200);
        norm_step(&a, "rst", k);
    }
    start_server(&b, "b", "rst", true, true);
    char *log = test_server_log(&b);
    ck_assert_msg(strstr(log, "resuming from") != NULL, "no local snapshot used:\n%s", log);
    ck_assert_msg(strstr(log, "applying stream ES-rst-0 from seq 11") != NULL, "%s", log);
    free(log);
    ck_same_rows(&a, &b, "rst", seq);
    ck_same_rows(&a, &b, "rst.norm", 0);
    test_server_prepare(&c);
    start_server(&c, "c", "rst", true, true);
    ck_same_rows(&a, &c, "rst", seq);
    ck_same_rows(&a, &c, "rst.norm", 0);
    ck_assert_int_eq(post_step(&c, "rst", 41, &seq), 200);
    ck_same_rows(&c, &b, "rst", seq);
    test_server_cleanup(&a);
    test_server_cleanup(&b);
    test_server_cleanup(&c);
}
END_TEST

static bool log_has(const struct test_server *s, const char *what)
{
    char *log = test_server_log(s);
    bool found = strstr(log, what) != NULL;
    free(log);
    return found;
}

/* A snapshot is published for the cluster and the stream purged below it;
 * a new replica then starts from that snapshot plus the rest. */
START_TEST(published_snapshot_purges_and_bootstraps)
{
    struct test_server a, b, c;
    test_server_prepare(&a);
    test_server_prepare(&b);
    start_server(&a, "a", "pur", true, true);
    start_server(&b, "b", "pur", true, true);
    unsigned long long seq = 0;
    for (int k = 0; k < 20; k++)
        ck_assert_int_eq(post_step(k % 2 ? &a : &b, "pur", k, &seq), 200);
    ck_assert_uint_eq(seq, 20);
    /* b has applied (so its consumer delivered) record 20: the purge may
     * go up to it */
    size_t len;
    free(all_rows(&b, "pur", 20, &len));
    ck_assert_uint_eq(table_seq(&b, "pur"), 20);
    struct reply r;
    http_json(&a, "POST", "/v1/tables/pur/snapshot", "{}", &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    ck_assert_msg(log_has(&a, "published the snapshot at seq 20 for the cluster"), "no publish");
    ck_assert_msg(log_has(&a, "purged stream ES-pur-0 up to seq 20"), "no purge");
    http_get(&b, "/v1/cluster", &r);
    ck_assert_ptr_nonnull(strstr(r.body, "\"name\":\"pur\",\"seq\":20"));
    reply_free(&r);
    /* b's snapshot at the same seq: the cluster has one as new, nothing sent */
    http_json(&b, "POST", "/v1/tables/pur/snapshot", "{}", &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    ck_assert(!log_has(&b, "published the snapshot"));
    for (int k = 20; k < 30; k++)
        ck_assert_int_eq(post_step(&b, "pur", k, &seq), 200);
    test_server_prepare(&c);
    start_server(&c, "c", "pur", true, true);
    char *log = test_server_log(&c);
    ck_assert_msg(strstr(log, "fetched the cluster's snapshot at seq 20") != NULL, "%s", log);
    ck_assert_msg(strstr(log, "applying stream ES-pur-0 from seq 21") != NULL, "%s", log);
    free(log);
    ck_same_rows(&a, &c, "pur", seq);
    ck_same_rows(&b, &c, "pur", seq);
    test_server_cleanup(&a);
    test_server_cleanup(&b);
    test_server_cleanup(&c);
}
END_TEST

/* ---- keyed tables ------------------------------------------------------------ */

/* A keyed table that is always full (capacity 6, lru) and one whose keys
 * expire after a second, both Adagrad: inserts, evictions and expiry ride
 * the stream with the publisher's clock in each record. */
static const char keyed_tables[] =
    "{\"name\": \"kv\", \"keys\": \"int64\", \"capacity\": 6, \"missing\": \"zeros\","
    " \"init\": {\"embedding_dim\": 8, \"seed\": 3}, \"optimizer\": {\"name\": \"adagrad\","
    " \"lr\": 0.1}},"
    "{\"name\": \"kv.ttl\", \"keys\": \"int64\", \"capacity\": 64, \"missing\": \"zeros\","
    " \"ttl_seconds\": 1, \"init\": {\"embedding_dim\": 8, \"seed\": 4},"
    " \"optimizer\": {\"name\": \"adagrad\", \"lr\": 0.1}},"
    "{\"name\": \"kv.full\", \"keys\": \"int64\", \"capacity\": 1, \"evict\": \"none\","
    " \"ttl_seconds\": 3600, \"init\": {\"embedding_dim\": 8, \"seed\": 5},"
    " \"optimizer\": {\"name\": \"sgd\", \"lr\": 0.1}}";

/* Keys 1..KEYS_SEEN cover every key the keyed steps below use. */
#define KEYS_SEEN 40

/* A gradient step on three keys of table (number k: new keys, repeated
 * ones, negative and large ones); returns the status, *seq when 200. */
static long keyed_step(const struct test_server *s, const char *table, int k,
                       unsigned long long *seq)
{
    char body[1024], path[128];
    int n = snprintf(body, sizeof body, "{\"ids\": [%d, %d, %d], \"grads\": [", 1 + (k * 7) % KEYS_SEEN,
                     1 + k % 4, 1 + (k * 3 + 1) % KEYS_SEEN);
    for (int i = 0; i < 3; i++) {
        n += snprintf(body + n, sizeof body - (size_t)n, "%s[", i ? "," : "");
        for (int d = 0; d < 8; d++)
            n += snprintf(body + n, sizeof body - (size_t)n, "%s%.3f", d ? "," : "",
                          (double)((k * 13 + i * 5 + d * 3) % 11 - 5) / 4.0);
        n += snprintf(body + n, sizeof body - (size_t)n, "]");
    }
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    snprintf(path, sizeof path, "/v1/tables/%s/gradients", table);
    struct reply r;
    http_json(s, "POST", path, body, &r);
    long status = r.status;
    if (status == 200 && seq != NULL)
        *seq = seq_of(&r);
    reply_free(&r);
    return status;
}

/* Every key 1..KEYS_SEEN of table as float32 (zeros for keys not held),
 * read at min_seq, and GET's rows_used and evictions; caller frees. */
static char *keyed_state(const struct test_server *s, const char *table, unsigned long long min_seq,
                         size_t *len, char *info, size_t infolen)
{
    char body[1024], path[128];
    int n = snprintf(body, sizeof body, "{\"min_seq\": %llu, \"ids\": [", min_seq);
    for (int i = 1; i <= KEYS_SEEN; i++)
        n += snprintf(body + n, sizeof body - (size_t)n, "%s%d", i > 1 ? "," : "", i);
    snprintf(body + n, sizeof body - (size_t)n, "]}");
    snprintf(path, sizeof path, "/v1/tables/%s/lookup", table);
    const char *hdrs[] = {"Accept: application/octet-stream", NULL};
    struct reply r;
    http_do(s, "POST", path, "application/json", body, strlen(body), hdrs, &r);
    ck_assert_msg(r.status == 200, "keyed lookup on %s: %ld %s", s->base, r.status, r.body);
    ck_assert_uint_eq(r.len, (size_t)KEYS_SEEN * 8 * sizeof(float));
    char *rows = malloc(r.len);
    memcpy(rows, r.body, r.len);
    *len = r.len;
    reply_free(&r);
    snprintf(path, sizeof path, "/v1/tables/%s", table);
    http_get(s, path, &r);
    ck_assert_int_eq(r.status, 200);
    const char *u = strstr(r.body, "\"rows_used\":"), *e = strstr(r.body, "\"evictions\":");
    ck_assert_msg(u != NULL && e != NULL, "%s", r.body);
    snprintf(info, infolen, "rows_used %lld evictions %lld seq %llu", strtoll(u + 12, NULL, 10),
             strtoll(e + 12, NULL, 10), seq_of(&r));
    reply_free(&r);
    return rows;
}

static void ck_same_keyed(const struct test_server *a, const struct test_server *b,
                          const char *table, unsigned long long seq)
{
    size_t la, lb;
    char ia[128], ib[128];
    char *ra = keyed_state(a, table, seq, &la, ia, sizeof ia);
    char *rb = keyed_state(b, table, seq, &lb, ib, sizeof ib);
    ck_assert_msg(strcmp(ia, ib) == 0, "%s: %s on %s, %s on %s", table, ia, a->base, ib, b->base);
    ck_assert_msg(la == lb && memcmp(ra, rb, la) == 0, "keyed table %s differs between %s and %s",
                  table, a->base, b->base);
    free(ra);
    free(rb);
}

/* Keyed tables through the stream: inserts, lru evictions at capacity,
 * deletes and ttl expiry give the same keys in the same rows on every
 * replica, on a single server given the same writes, and on a replica
 * restarted from the stream. */
START_TEST(keyed_replicas_agree)
{
    struct test_server a, b, local;
    test_server_prepare(&a);
    test_server_prepare(&b);
    test_server_prepare(&local);
    start_server_with(&a, "a", keyed_tables, true, true);
    start_server_with(&b, "b", keyed_tables, true, true);
    start_server_with(&local, "local", keyed_tables, false, true);
    unsigned long long seq = 0, tseq = 0;
    struct reply r;
    for (int k = 0; k < 40; k++) {
        ck_assert_int_eq(keyed_step(k % 2 ? &a : &b, "kv", k, &seq), 200);
        ck_assert_int_eq(keyed_step(&local, "kv", k, NULL), 200);
        if (k % 9 == 8) {
            char del[64];
            snprintf(del, sizeof del, "{\"ids\": [%d, 999]}", 1 + k % 4);
            http_do(k % 2 ? &b : &a, "DELETE", "/v1/tables/kv/rows", "application/json", del,
                    strlen(del), NULL, &r);
            ck_reply(&r, 200, NULL);
            seq = seq_of(&r);
            reply_free(&r);
            http_do(&local, "DELETE", "/v1/tables/kv/rows", "application/json", del, strlen(del),
                    NULL, &r);
            ck_reply(&r, 200, NULL);
            reply_free(&r);
        }
    }
    /* keys written, a pause past the ttl, then more: the first expire at
     * the later write, by the record's time on every replica */
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(keyed_step(k % 2 ? &a : &b, "kv.ttl", k, &tseq), 200);
    sleep_ms(2100);
    for (int k = 10; k < 13; k++)
        ck_assert_int_eq(keyed_step(k % 2 ? &a : &b, "kv.ttl", k, &tseq), 200);
    ck_same_keyed(&a, &b, "kv", seq);
    ck_same_keyed(&a, &b, "kv.ttl", tseq);
    size_t la, ll;
    char ia[128], il[128];
    char *ra = keyed_state(&a, "kv", seq, &la, ia, sizeof ia);
    char *rl = keyed_state(&local, "kv", 0, &ll, il, sizeof il);
    ck_assert_str_eq(ia, il); /* the same writes in the same order: the same seq too */
    ck_assert_msg(la == ll && memcmp(ra, rl, la) == 0,
                  "the replicas and the single server hold different keyed rows (%s / %s)", ia,
                  il);
    free(ra);
    free(rl);
    ck_assert_msg(strstr(ia, "evictions 0") == NULL, "no eviction happened: %s", ia);
    char *rt = keyed_state(&a, "kv.ttl", tseq, &la, ia, sizeof ia);
    /* the 9 keys of the first 4 steps expired; the last 3 steps hold 8
     * (4 of them written before, back with fresh rows) */
    ck_assert_msg(strstr(ia, "rows_used 8 evictions 9 ") != NULL,
                  "the expired keys are not gone as expected: %s", ia);
    free(rt);

    /* a full table with evict none: a new key is refused at its apply (the
     * ttl leaves the check to it), 507 through any replica, nothing
     * changed; a write of the held key goes on, and says what it inserted */
    char body[160];
    snprintf(body, sizeof body, "{\"ids\": [10], \"vectors\": [[1,1,1,1,1,1,1,1]]}");
    http_json(&a, "PUT", "/v1/tables/kv.full/rows", body, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_msg(strstr(r.body, "\"inserted\":1") != NULL, "%s", r.body);
    reply_free(&r);
    snprintf(body, sizeof body, "{\"ids\": [20], \"vectors\": [[2,2,2,2,2,2,2,2]]}");
    http_json(&b, "PUT", "/v1/tables/kv.full/rows", body, &r);
    ck_reply(&r, 507, "capacity_exceeded");
    reply_free(&r);
    snprintf(body, sizeof body, "{\"ids\": [10], \"vectors\": [[3,3,3,3,3,3,3,3]]}");
    http_json(&b, "PUT", "/v1/tables/kv.full/rows", body, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_msg(strstr(r.body, "\"inserted\":0") != NULL, "%s", r.body);
    unsigned long long fseq = seq_of(&r);
    reply_free(&r);
    snprintf(body, sizeof body, "{\"ids\": [20], \"min_seq\": %llu}", fseq);
    http_json(&a, "POST", "/v1/tables/kv.full/lookup", body, &r);
    ck_reply(&r, 404, "unknown_key");
    reply_free(&r);

    /* b killed and restarted: its keyed tables come back from the stream */
    kill(b.pid, SIGKILL);
    ck_assert(test_server_wait(&b, 10));
    start_server_with(&b, "b", keyed_tables, true, true);
    ck_same_keyed(&a, &b, "kv", seq);
    ck_same_keyed(&a, &b, "kv.ttl", tseq);
    ck_assert_int_eq(keyed_step(&b, "kv", 77, &seq), 200);
    ck_same_keyed(&b, &a, "kv", seq);
    test_server_cleanup(&a);
    test_server_cleanup(&b);
    test_server_cleanup(&local);
}
END_TEST

static Suite *cluster_suite(void)
{
    Suite *s = suite_create("http_cluster");
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, replicas_bit_identical);
    tcase_add_test(tc, read_your_writes);
    tcase_add_test(tc, replica_restart_and_join);
    tcase_add_test(tc, published_snapshot_purges_and_bootstraps);
    tcase_add_test(tc, nats_node_killed_during_writes);
    tcase_add_test(tc, jetstream_unreachable);
    tcase_add_test(tc, keyed_replicas_agree);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    nats_bin = find_nats_server();
    if (nats_bin == NULL) {
        printf("SKIP test_http_cluster: nats-server is not installed (Debian package "
               "nats-server; scripts/deps.sh test installs it)\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    cluster_up();
    SRunner *sr = srunner_create(cluster_suite());
    /* one process: the NATS cluster and its restarts outlive each test */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    cluster_down();
    free(nats_bin);
    return failed == 0 ? 0 : 1;
}
