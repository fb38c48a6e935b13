/* cluster.c - what cluster mode costs, measured in one run on loopback:
 * three nats-server processes (JetStream, R=3 file streams) with two
 * embedding-server replicas over them, against a single server with the
 * local log ("durability": "sync"), the peer.
 *
 *   build/bench/cluster build/embedding-server [SECONDS] [ROUNDS]
 *
 * (a) 4 clients, each on its own keep-alive connection, posting small
 *     gradient steps (8 ids x 16 floats) back to back to one replica;
 * (b) 1 client posting big steps (1024 ids x 64 floats; JSON, or binary
 *     bodies with BINARY=1);
 * for each: steps/s and the latency of each write (p50, p99), cluster and
 * single server in alternating rounds (medians over rounds). Replication
 * lag: the p99 of the other replica's stored-to-applied delay
 * (embedding_server_replication_apply_delay_seconds, interpolated in its
 * buckets) under that load (LAG_DETAIL=1 prints each round's buckets). Reads: 4 clients of 64-id lookups against one
 * replica, then split over both (the ratio; on two cores the clients and
 * the servers share them). Targets (issue 10): p50 <= 2 ms for (b), lag p99
 * <= 50 ms, reads of two replicas >= 1.6x one. The floor, in the same run:
 * a libnats client alone publishing messages of each record's size to an
 * R=3 file stream of the same nodes, one at a time (js_Publish: what one
 * replicated, stored message costs here, before any server work). Needs
 * nats-server. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "bench_http.h"
#include "bench_util.h"

#define NODES 3
#define MAX_SAMPLES (1 << 20)

static char base_dir[256];

static void die(const char *what)
{
    fprintf(stderr, "cluster: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("a free port");
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- NATS ------------------------------------------------------------------ */

static pid_t nats_pid[NODES];
static int client_port[NODES];
static char nats_urls[256];

static void nats_up(void)
{
    int route[NODES];
    for (int i = 0; i < NODES; i++) {
        client_port[i] = free_port();
        route[i] = free_port();
    }
    for (int i = 0; i < NODES; i++) {
        char conf[512], log[512];
        snprintf(conf, sizeof conf, "%s/n%d.conf", base_dir, i);
        snprintf(log, sizeof log, "%s/n%d.log", base_dir, i);
        FILE *f = fopen(conf, "w");
        if (f == NULL)
            die(conf);
        fprintf(f, "server_name: n%d\nlisten: 127.0.0.1:%d\nmax_payload: 8MB\n"
                   "jetstream { store_dir: \"%s/store%d\", max_file_store: 4GB }\n"
                   "cluster { name: bench, listen: 127.0.0.1:%d, routes: [nats-route://127.0.0.1:%d,"
                   " nats-route://127.0.0.1:%d, nats-route://127.0.0.1:%d] }\n",
                i, client_port[i], base_dir, i, route[i], route[0], route[1], route[2]);
        fclose(f);
        char *argv[] = {"nats-server", "-c", conf, NULL};
        nats_pid[i] = bench_spawn(log, argv);
    }
    snprintf(nats_urls, sizeof nats_urls,
             "\"nats://127.0.0.1:%d\", \"nats://127.0.0.1:%d\", \"nats://127.0.0.1:%d\"",
             client_port[0], client_port[1], client_port[2]);
}

/* ---- servers --------------------------------------------------------------- */

struct server {
    pid_t pid;
    int port;
    char log[512];
};

static const char tables[] =
    "{\"name\": \"small\", \"init\": {\"num_embeddings\": 100000, \"embedding_dim\": 16},"
    " \"optimizer\": {\"name\": \"sparse_adam\", \"lr\": 0.001}},"
    "{\"name\": \"big\", \"init\": {\"num_embeddings\": 100000, \"embedding_dim\": 64},"
    " \"optimizer\": {\"name\": \"sparse_adam\", \"lr\": 0.001}}";

static void server_start(struct server *s, const char *bin, const char *name, bool cluster)
{
    char path[512], clus[512] = "";
    snprintf(path, sizeof path, "%s/%s.json", base_dir, name);
    snprintf(s->log, sizeof s->log, "%s/%s.log", base_dir, name);
    if (cluster)
        snprintf(clus, sizeof clus, "\"cluster\": {\"nats\": [%s], \"node\": \"%s\"},", nats_urls,
                 name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        die("config");
    fprintf(f, "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0}, \"data_dir\": \"%s/%s\","
               " \"snapshot\": {\"on_shutdown\": false}, \"log_max_bytes\": 17592186044416,"
               " %s \"tables\": [%s]}", base_dir, name, clus, tables);
    fclose(f);
    s->port = bench_server_start(bin, path, s->log, &s->pid);
}

/* ---- requests (sent with bench_http.h) ------------------------------------ */

static char *request(const char *method, const char *path, const char *body, size_t blen,
                     const char *extra, size_t *len)
{
    return bench_request(method, path, "application/json", body, blen, extra, len);
}

/* The same step as a binary body (BINARY=1): n int64 ids, n x dim float32. */
static char *binary_gradient_request(const char *table, int n, int dim, int seed, size_t *len)
{
    size_t blen = (size_t)n * 8 + (size_t)n * (size_t)dim * 4;
    char *body = malloc(blen), path[128], shape[64];
    for (int i = 0; i < n; i++) {
        int64_t id = ((unsigned)seed * 7919u + (unsigned)i * 104729u) % 100000u;
        memcpy(body + (size_t)i * 8, &id, 8);
    }
    float *g = (float *)(void *)(body + (size_t)n * 8);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < dim; j++) {
            float v = (float)((i * 31 + j * 17 + seed) % 200 - 100) / 1000.0f;
            memcpy(&g[(size_t)i * (size_t)dim + (size_t)j], &v, 4);
        }
    snprintf(path, sizeof path, "/v1/tables/%s/gradients", table);
    snprintf(shape, sizeof shape, "X-Embedding-Shape: %d,%d\r\n", n, dim);
    char *req = bench_request("POST", path, "application/octet-stream", body, blen, shape, len);
    free(body);
    return req;
}

/* A JSON gradient request of n ids x dim (binary with BINARY=1). */
static char *gradient_request(const char *table, int n, int dim, int seed, size_t *len)
{
    if (getenv("BINARY") != NULL && strcmp(getenv("BINARY"), "1") == 0)
        return binary_gradient_request(table, n, dim, seed, len);
    size_t cap = (size_t)n * (size_t)dim * 12 + (size_t)n * 12 + 512;
    char *body = malloc(cap);
    size_t b = 0;
    b += (size_t)snprintf(body + b, cap - b, "{\"ids\": [");
    for (int i = 0; i < n; i++)
        b += (size_t)snprintf(body + b, cap - b, "%s%u", i ? "," : "",
                              ((unsigned)seed * 7919u + (unsigned)i * 104729u) % 100000u);
    b += (size_t)snprintf(body + b, cap - b, "], \"grads\": [");
    for (int i = 0; i < n; i++) {
        b += (size_t)snprintf(body + b, cap - b, "%s[", i ? "," : "");
        for (int j = 0; j < dim; j++)
            b += (size_t)snprintf(body + b, cap - b, "%s%.4f", j ? "," : "",
                                  (double)((i * 31 + j * 17 + seed) % 200 - 100) / 1000.0);
        b += (size_t)snprintf(body + b, cap - b, "]");
    }
    b += (size_t)snprintf(body + b, cap - b, "]}");
    char path[128];
    snprintf(path, sizeof path, "/v1/tables/%s/gradients", table);
    char *req = request("POST", path, body, b, "", len);
    free(body);
    return req;
}

struct client {
    int port;
    const char *req;
    size_t len;
    double seconds;
    uint64_t n;
    double *lat; /* per request, seconds */
    size_t nlat;
    int bad;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    int fd = bench_connect(c->port);
    char *buf = malloc(1 << 22);
    double end = clock_mono_s() + c->seconds;
    while (clock_mono_s() < end) {
        double t0 = clock_mono_s();
        int st = bench_roundtrip(fd, c->req, c->len, buf, 1 << 22);
        if (st != 200)
            c->bad = st;
        if (c->lat && c->nlat < MAX_SAMPLES)
            c->lat[c->nlat++] = clock_mono_s() - t0;
        c->n++;
    }
    free(buf);
    close(fd);
    return NULL;
}

struct result {
    double per_s, p50, p99;
};

/* nclients posting reqs[i] to ports[i % nports] for seconds. */
static struct result run(const int *ports, int nports, int nclients, char *const *reqs,
                         const size_t *lens, double seconds, bool latency)
{
    struct client cl[8];
    pthread_t th[8];
    for (int i = 0; i < nclients; i++) {
        cl[i] = (struct client){.port = ports[i % nports], .req = reqs[i], .len = lens[i],
                                .seconds = seconds};
        if (latency)
            cl[i].lat = malloc(MAX_SAMPLES * sizeof(double));
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    uint64_t total = 0;
    size_t nlat = 0;
    double *all = latency ? malloc(MAX_SAMPLES * sizeof(double) * (size_t)nclients) : NULL;
    for (int i = 0; i < nclients; i++) {
        pthread_join(th[i], NULL);
        if (cl[i].bad) {
            fprintf(stderr, "cluster: a request was answered %d\n", cl[i].bad);
            exit(1);
        }
        total += cl[i].n;
        if (latency) {
            memcpy(all + nlat, cl[i].lat, cl[i].nlat * sizeof(double));
            nlat += cl[i].nlat;
            free(cl[i].lat);
        }
    }
    struct result r = {.per_s = (double)total / seconds};
    if (latency) {
        r.p50 = bench_pct(all, nlat, 0.50);
        r.p99 = bench_pct(all, nlat, 0.99);
        free(all);
    }
    return r;
}

/* ---- replication lag from the replica's histogram ------------------------------ */

struct hist {
    double le[32];
    double cum[32];
    int n;
};

static void read_hist(int port, const char *table, struct hist *h)
{
    int fd = bench_connect(port);
    size_t len;
    char *req = request("GET", "/metrics", "", 0, "", &len);
    char *buf = malloc(1 << 22);
    bench_roundtrip(fd, req, len, buf, 1 << 22);
    close(fd);
    free(req);
    char key[128];
    snprintf(key, sizeof key, "replication_apply_delay_seconds_bucket{table=\"%s\",le=\"", table);
    h->n = 0;
    for (char *p = strstr(buf, key); p && h->n < 32; p = strstr(p + 1, key)) {
        char *le = p + strlen(key);
        h->le[h->n] = strncmp(le, "+Inf", 4) == 0 ? 1e9 : strtod(le, NULL);
        char *val = strchr(le, ' ');
        h->cum[h->n++] = val ? strtod(val + 1, NULL) : 0;
    }
    free(buf);
}

/* The p-quantile of the delta between two scrapes, interpolated linearly in
 * the bucket it falls in. */
/* The share of b - a in each bucket, as "<=le: pct" for nonempty ones. */
static void print_hist(const struct hist *a, const struct hist *b)
{
    if (a->n != b->n || b->n == 0)
        return;
    double total = b->cum[b->n - 1] - a->cum[a->n - 1], prev = 0;
    if (total <= 0)
        return;
    printf("  lag distribution:");
    for (int i = 0; i < b->n; i++) {
        double c = b->cum[i] - a->cum[i];
        if (c > prev) {
            if (b->le[i] > 1e8)
                printf(" >%g ms %.1f%%", b->le[i - 1] * 1e3, 100 * (c - prev) / total);
            else
                printf(" <=%g ms %.1f%%", b->le[i] * 1e3, 100 * (c - prev) / total);
        }
        prev = c;
    }
    printf("\n");
}

static double hist_quantile(const struct hist *a, const struct hist *b, double p)
{
    if (a->n != b->n || b->n == 0)
        return -1;
    double total = b->cum[b->n - 1] - a->cum[a->n - 1];
    if (total <= 0)
        return 0;
    double want = p * total, lo = 0, prev = 0;
    for (int i = 0; i < b->n; i++) {
        double c = b->cum[i] - a->cum[i];
        if (c >= want) {
            double hi = b->le[i] > 1e8 ? lo * 2 : b->le[i];
            return lo + (hi - lo) * (c > prev ? (want - prev) / (c - prev) : 1);
        }
        prev = c;
        lo = b->le[i];
    }
    return lo;
}

/* ---- main ---------------------------------------------------------------------- */

/* ---- the floor: JetStream alone ------------------------------------------- */

/* Publishes len-byte messages one at a time for seconds to an R=3 file
 * stream (created on first use) and waits for each ack. */
static struct result jetstream_floor(size_t len, double seconds)
{
    static natsConnection *nc;
    static jsCtx *js;
    struct result f = {0, 0, 0};
    char urls[256];
    snprintf(urls, sizeof urls, "nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d",
             client_port[0], client_port[1], client_port[2]);
    if (nc == NULL) {
        jsErrCode jerr = 0;
        jsStreamInfo *si = NULL;
        jsStreamConfig cfg;
        const char *subjects[] = {"floor"};
        if (natsConnection_ConnectTo(&nc, urls) != NATS_OK ||
            natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
            die("floor: connecting to NATS");
        jsStreamConfig_Init(&cfg);
        cfg.Name = "FLOOR";
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = 3;
        if (js_AddStream(&si, js, &cfg, NULL, &jerr) != NATS_OK)
            die("floor: creating the stream");
        jsStreamInfo_Destroy(si);
    }
    char *msg = malloc(len);
    memset(msg, 0x5a, len);
    double *lat = malloc(MAX_SAMPLES * sizeof *lat);
    size_t n = 0;
    double t0 = clock_mono_s(), end = t0 + seconds;
    while (clock_mono_s() < end && n < MAX_SAMPLES) {
        double a = clock_mono_s();
        jsPubAck *pa = NULL;
        jsErrCode jerr = 0;
        if (js_Publish(&pa, js, "floor", msg, (int)len, NULL, &jerr) != NATS_OK)
            die("floor: publish");
        jsPubAck_Destroy(pa);
        lat[n++] = clock_mono_s() - a;
    }
    f.per_s = (double)n / (clock_mono_s() - t0);
    f.p50 = bench_pct(lat, n, 0.50);
    f.p99 = bench_pct(lat, n, 0.99);
    free(lat);
    free(msg);
    return f;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s build/embedding-server [SECONDS] [ROUNDS]\n", argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 3.0;
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    snprintf(base_dir, sizeof base_dir, "%s/es-bench-cluster-XXXXXX",
             getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/tmp");
    if (mkdtemp(base_dir) == NULL)
        die("mkdtemp");
    signal(SIGPIPE, SIG_IGN);
    nats_up();
    struct server a, b, single;
    server_start(&a, argv[1], "a", true);
    server_start(&b, argv[1], "b", true);
    server_start(&single, argv[1], "single", false);
    printf("cluster: 3 nats-server nodes (R=3 file streams) + 2 replicas vs a single server "
           "(local log, durability sync); %.1f s x %d rounds, loopback, %ld cores\n", seconds,
           rounds, sysconf(_SC_NPROCESSORS_ONLN));

    char *small[4], *big[1];
    size_t small_len[4], big_len[1];
    for (int i = 0; i < 4; i++)
        small[i] = gradient_request("small", 8, 16, i + 1, &small_len[i]);
    big[0] = gradient_request("big", 1024, 64, 9, &big_len[0]);

    /* a record: its 80-byte head, the ids and the gradients */
    struct { const char *name; int nclients; char **reqs; size_t *lens; const char *table;
             size_t record; }
        loads[] = {{"8 x 16 steps, 4 clients", 4, small, small_len, "small", 80 + 8 * (8 + 8 * 16 / 2)},
                   {getenv("BINARY") ? "1024 x 64 steps (binary), 1 client"
                                     : "1024 x 64 steps (JSON), 1 client",
                    1, big, big_len, "big", 80 + 1024 * 8 + 1024 * 64 * 4}};
    for (size_t l = 0; l < 2; l++) {
        double cps[16], cp50[16], cp99[16], sps[16], sp50[16], sp99[16], lag[16], fp50[16],
            fps[16];
        for (int r = 0; r < rounds && r < 16; r++) {
            struct hist h0, h1;
            read_hist(b.port, loads[l].table, &h0);
            struct result c = run(&a.port, 1, loads[l].nclients, loads[l].reqs, loads[l].lens,
                                  seconds, true);
            usleep(200000);
            read_hist(b.port, loads[l].table, &h1);
            lag[r] = hist_quantile(&h0, &h1, 0.99);
            if (getenv("LAG_DETAIL") != NULL)
                print_hist(&h0, &h1);
            struct result s = run(&single.port, 1, loads[l].nclients, loads[l].reqs,
                                  loads[l].lens, seconds, true);
            struct result f = jetstream_floor(loads[l].record, seconds / 2);
            fps[r] = f.per_s, fp50[r] = f.p50;
            cps[r] = c.per_s, cp50[r] = c.p50, cp99[r] = c.p99;
            sps[r] = s.per_s, sp50[r] = s.p50, sp99[r] = s.p99;
        }
        double c50 = bench_median(cp50, rounds), s50 = bench_median(sp50, rounds);
        printf("\n%s:\n", loads[l].name);
        printf("  cluster  %8.0f steps/s  p50 %6.2f ms  p99 %6.2f ms\n", bench_median(cps, rounds),
               c50 * 1e3, bench_median(cp99, rounds) * 1e3);
        printf("  single   %8.0f steps/s  p50 %6.2f ms  p99 %6.2f ms\n", bench_median(sps, rounds),
               s50 * 1e3, bench_median(sp99, rounds) * 1e3);
        printf("  floor    %8.0f publishes/s  p50 %6.2f ms  (libnats alone, %zu-byte messages,"
               " one at a time, R=3)\n", bench_median(fps, rounds), bench_median(fp50, rounds) * 1e3,
               loads[l].record);
        printf("  cluster / single steps/s %.2f; p50 added by replication %.2f ms\n",
               bench_median(cps, rounds) / bench_median(sps, rounds), (c50 - s50) * 1e3);
        printf("  replication lag p99 on the other replica: %.1f ms (target <= 50)\n",
               bench_median(lag, rounds) * 1e3);
    }

    /* the floor at PERFORMANCE.md's size, to compare with its figure */
    double f64[16];
    for (int r = 0; r < rounds && r < 16; r++)
        f64[r] = jetstream_floor(65536, seconds / 2).p50;
    printf("\nfloor at 65536-byte messages: p50 %.2f ms (PERFORMANCE.md: ~1.3 ms)\n",
           bench_median(f64, rounds) * 1e3);

    /* reads: 64-id lookups, binary answers */
    char body[2048];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"ids\": [");
    for (int i = 0; i < 64; i++)
        n += (size_t)snprintf(body + n, sizeof body - n, "%s%d", i ? "," : "", i * 1543 % 100000);
    n += (size_t)snprintf(body + n, sizeof body - n, "]}");
    char *rq[4];
    size_t rlen[4];
    for (int i = 0; i < 4; i++)
        rq[i] = request("POST", "/v1/tables/big/lookup", body, n,
                        "Accept: application/octet-stream\r\n", &rlen[i]);
    int both[2] = {a.port, b.port};
    double one[16], two[16];
    for (int r = 0; r < rounds && r < 16; r++) {
        one[r] = run(&a.port, 1, 4, rq, rlen, seconds, false).per_s;
        two[r] = run(both, 2, 4, rq, rlen, seconds, false).per_s;
    }
    printf("\nreads (64-id lookups, 4 clients): one replica %.0f/s, two replicas %.0f/s: "
           "%.2fx (target >= 1.6x; clients and both servers share the %ld cores)\n",
           bench_median(one, rounds), bench_median(two, rounds), bench_median(two, rounds) / bench_median(one, rounds),
           sysconf(_SC_NPROCESSORS_ONLN));

    for (int i = 0; i < 4; i++) {
        free(small[i]);
        free(rq[i]);
    }
    free(big[0]);
    kill(a.pid, SIGKILL);
    kill(b.pid, SIGKILL);
    kill(single.pid, SIGKILL);
    for (int i = 0; i < NODES; i++)
        kill(nats_pid[i], SIGKILL);
    while (wait(NULL) > 0)
        ;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cluster: could not remove %s\n", base_dir);
    return 0;
}
