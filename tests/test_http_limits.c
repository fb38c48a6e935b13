/* test_http_limits.c - every request and connection has a bounded cost,
 * tried as a hostile client would against the real binary on loopback.
 *
 * One server serves the suite (started in the parent; each test runs in a
 * forked child). Memory is the server's peak RSS: /proc/PID/clear_refs
 * resets VmHWM to the current RSS before a request, VmHWM after it is the
 * peak during it. Slow clients bind to other 127.0.0.x addresses so the
 * per-address limit stays out of the way. Times are asserted only with
 * generous bounds (the 100 ms of the issue for health probes; seconds for
 * timeouts). */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "json.h"
#include "testutil.h"

static struct test_server srv;

/* Sanitizers slow the server several times and change how memory is
 * reused (quarantine, redzones): their runs search less and measure
 * memory more loosely. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif
#define HEAVY_QUERIES (SANITIZED ? 60 : 500)
#define MEMORY_SLACK(answer) (SANITIZED ? (answer) / 2 + (8 << 20) : (2 << 20))

#define MAX_BODY (32 << 20)
#define MAX_BATCH 100000
#define MAX_ANSWER (64 << 20)
#define MAX_CONNECTIONS 16
#define HEADER_TIMEOUT 2
#define MIN_BODY_RATE 2000

static const char config_fmt[] =
    "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},\n"
    " \"data_dir\": \"%s/data\", \"threads\": 2,\n"
    " \"limits\": {\"max_body_bytes\": %d, \"max_batch\": %d, \"max_k\": 1000,\n"
    "            \"max_answer_bytes\": %d, \"max_connections\": %d,\n"
    "            \"max_connections_per_ip\": 0, \"header_timeout\": %d,\n"
    "            \"min_body_rate\": %d, \"connection_timeout\": 30},\n"
    " \"snapshot\": {\"on_shutdown\": false},\n"
    " \"tables\": [\n"
    "  {\"name\": \"words\", \"path\": \"words.txt\"},\n"
    "  {\"name\": \"mid\", \"init\": {\"num_embeddings\": 5000, \"embedding_dim\": 64}},\n"
    "  {\"name\": \"wide\", \"init\": {\"num_embeddings\": 3000, \"embedding_dim\": 4}},\n"
    "  {\"name\": \"big\", \"init\": {\"num_embeddings\": 200000, \"embedding_dim\": 64}},\n"
    "  {\"name\": \"broken\", \"path\": \"broken.txt\", \"format\": \"word2vec\"},\n"
    "  {\"name\": \"broken_bin\", \"path\": \"broken.bin\", \"format\": \"word2vec_binary\"}\n"
    " ]}\n";

static const char words_txt[] = "4 2\nking 1 0\nqueen 0.9 0.1\nman 0 1\nwoman 0.1 0.9\n";

/* Tokens a byte-limited tool cut inside a character ("caf\xC3" for "café"),
 * and a control byte. */
static const char broken_txt[] = "4 2\ncaf\xC3 1 0\nok 0.9 0.1\n\x01" "ctl 0.8 0.2\n"
                                 "x\xE2\x82 0.7 0.3\n";

static void write_broken_bin(const char *dir)
{
    static const char *const toks[] = {"ab\xC3", "fine", "\xF0\x9F\x98"};
    char buf[256];
    size_t n = (size_t)snprintf(buf, sizeof buf, "3 2\n");
    for (int i = 0; i < 3; i++) {
        float v[2] = {1.0f - 0.1f * (float)i, 0.1f * (float)i};
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s ", toks[i]);
        memcpy(buf + n, v, sizeof v);
        n += sizeof v;
        buf[n++] = '\n';
    }
    free(testutil_write_file(dir, "broken.bin", buf, n));
}

static void start_server(void)
{
    test_server_prepare(&srv);
    free(testutil_write_file(srv.dir, "words.txt", words_txt, strlen(words_txt)));
    free(testutil_write_file(srv.dir, "broken.txt", broken_txt, strlen(broken_txt)));
    write_broken_bin(srv.dir);
    char config[4096];
    snprintf(config, sizeof config, config_fmt, srv.dir, MAX_BODY, MAX_BATCH, MAX_ANSWER,
             MAX_CONNECTIONS, HEADER_TIMEOUT, MIN_BODY_RATE);
    test_server_start(&srv, config, NULL, true);
}

static void stop_server(void)
{
    test_server_cleanup(&srv);
}

/* ---- helpers ---------------------------------------------------------- */

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

/* A field of /proc/PID/status in bytes ("VmRSS", "VmHWM"). */
static long long proc_bytes(pid_t pid, const char *field)
{
    char path[64], line[256];
    long long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            kb = atoll(line + n + 1);
    fclose(f);
    ck_assert_int_ge(kb, 0);
    return kb * 1024;
}

/* Resets the server's peak RSS to its RSS now, which it returns. */
static long long peak_reset(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)srv.pid);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot open %s: %s", path, strerror(errno));
    fputs("5", f);
    fclose(f);
    return proc_bytes(srv.pid, "VmRSS");
}

/* Sends one request and returns the server's peak RSS during it, above
 * its RSS before. */
static long long request_peak(const char *method, const char *path, const char *body, size_t len,
                              const char *const *headers, struct reply *r)
{
    long long base = peak_reset();
    http_do(&srv, method, path, "application/json", body, len, headers, r);
    long long peak = proc_bytes(srv.pid, "VmHWM") - base;
    printf("%s %s: %ld, body %zu bytes, answer %zu bytes, peak RSS +%lld bytes\n", method, path,
           r->status, len, r->len, peak);
    return peak;
}

/* "[" + n copies of item joined by "," + "]", inside prefix/suffix. */
static char *repeat_body(const char *prefix, const char *item, size_t n, const char *suffix,
                         size_t *len)
{
    size_t il = strlen(item), pl = strlen(prefix), sl = strlen(suffix);
    char *b = malloc(pl + n * (il + 1) + sl + 1);
    ck_assert_ptr_nonnull(b);
    size_t used = pl;
    memcpy(b, prefix, pl);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            b[used++] = ',';
        memcpy(b + used, item, il);
        used += il;
    }
    memcpy(b + used, suffix, sl);
    used += sl;
    b[used] = '\0';
    *len = used;
    return b;
}

/* ids 0, 1, ... (mod m) as "[0,1,...]" inside prefix/suffix. */
static char *ids_body(const char *prefix, size_t n, size_t m, const char *suffix, size_t *len)
{
    size_t cap = strlen(prefix) + n * 12 + strlen(suffix) + 1, used;
    char *b = malloc(cap);
    ck_assert_ptr_nonnull(b);
    used = (size_t)snprintf(b, cap, "%s", prefix);
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(b + used, cap - used, "%s%zu", i ? "," : "", i % m);
    used += (size_t)snprintf(b + used, cap - used, "%s", suffix);
    *len = used;
    return b;
}

static void ck_message(const struct reply *r, const char *fragment)
{
    ck_assert_msg(strstr(r->body, fragment) != NULL, "message lacks \"%s\": %.400s", fragment,
                  r->body);
}

/* A TCP connection to the server from source address src (127.0.0.x). */
static int connect_from(const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, src, &a.sin_addr);
    ck_assert_msg(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind %s: %s", src,
                  strerror(errno));
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
    return fd;
}

static void source_addr(int i, char out[32])
{
    snprintf(out, 32, "127.0.0.%d", 2 + i % 250);
}

static void send_all(int fd, const char *bytes, size_t len)
{
    ck_assert_int_eq(send(fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* True when the server has closed fd (end of input or reset), reading and
 * dropping anything it sent first; waits at most wait_ms. */
static bool closed_within(int fd, int wait_ms)
{
    double deadline = now_s() + wait_ms / 1000.0;
    char b[4096];
    for (;;) {
        int left = (int)((deadline - now_s()) * 1000);
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, left > 0 ? left : 0) <= 0)
            return false;
        ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            return true;
    }
}

/* ---- request costs ------------------------------------------------------ */

/* Refused requests cost no more than a small multiple of their body: the
 * arrays are counted in place and refused before anything is built. */
START_TEST(refused_requests_cost_their_body)
{
    struct reply r;
    size_t len;

    /* 200,000 empty bags (600 KB): every bag counts toward max_batch */
    char *body = repeat_body("{\"bags\":[", "[]", 200000, "]}", &len);
    long long peak = request_peak("POST", "/v1/tables/mid/lookup", body, len, NULL, &r);
    ck_reply(&r, 413, "payload_too_large");
    ck_message(&r, "bags: 200000 bags and 0 ids count 200000 toward max_batch 100000");
    ck_assert_msg(peak <= 3 * (long long)len + (1 << 20), "bags: peak %lld for %zu bytes", peak,
                  len);
    reply_free(&r);
    free(body);

    /* 20 MB of ids: refused at max_batch having built no tree */
    body = repeat_body("{\"ids\":[", "1", 10000000, "]}", &len);
    peak = request_peak("POST", "/v1/tables/mid/lookup", body, len, NULL, &r);
    ck_reply(&r, 413, "payload_too_large");
    ck_message(&r, "ids: 10000000 ids exceed max_batch 100000");
    ck_assert_msg(peak <= 3 * (long long)len, "ids: peak %lld for %zu bytes", peak, len);
    reply_free(&r);
    free(body);

    /* 8 MB of keys: the validator refuses an object past 4096 keys */
    body = malloc(12 << 20);
    ck_assert_ptr_nonnull(body);
    len = (size_t)sprintf(body, "{\"ids\":[1]");
    for (int i = 0; len < (8u << 20); i++)
        len += (size_t)sprintf(body + len, ",\"k%d\":0", i);
    len += (size_t)sprintf(body + len, "}");
    peak = request_peak("POST", "/v1/tables/mid/lookup", body, len, NULL, &r);
    ck_reply(&r, 400, "invalid_argument");
    ck_message(&r, "has more than 4096 keys");
    ck_assert_msg(peak <= 3 * (long long)len, "keys: peak %lld for %zu bytes", peak, len);
    reply_free(&r);
    free(body);

    /* 100,000 ids, the last out of range: checked before they are stored */
    body = repeat_body("{\"ids\":[", "0", MAX_BATCH - 1, ",3000]}", &len);
    peak = request_peak("POST", "/v1/tables/wide/lookup", body, len, NULL, &r);
    ck_reply(&r, 400, "out_of_range");
    ck_message(&r, "ids[99999]: id 3000 is out of range [0, 3000)");
    ck_assert_msg(peak <= 3 * (long long)len + (1 << 20), "range: peak %lld for %zu bytes", peak,
                  len);
    reply_free(&r);
    free(body);
}
END_TEST

/* An accepted request costs its answer and a small multiple of its body. */
START_TEST(accepted_requests_cost_their_answer)
{
    struct reply r;
    size_t len;
    char *body = ids_body("{\"ids\":[", 50000, 5000, "]}", &len);

    long long peak = request_peak("POST", "/v1/tables/mid/lookup", body, len, NULL, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_gt(r.len, 20u << 20);
    ck_assert_msg(peak <= (long long)r.len + 4 * (long long)len + MEMORY_SLACK((long long)r.len),
                  "JSON lookup: peak %lld for a %zu-byte answer and a %zu-byte body", peak, r.len,
                  len);
    size_t json_len = r.len;
    reply_free(&r);

    const char *binary[] = {"Accept: application/octet-stream", NULL};
    peak = request_peak("POST", "/v1/tables/mid/lookup", body, len, binary, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_eq(r.len, 50000u * 64 * sizeof(float));
    ck_assert_msg(peak <= (long long)r.len + 4 * (long long)len + MEMORY_SLACK((long long)r.len),
                  "binary lookup: peak %lld for a %zu-byte answer", peak, r.len);
    ck_assert_uint_lt(r.len, json_len);
    reply_free(&r);
    free(body);
}
END_TEST

/* The JSON rows, flattened, equal the binary answer's floats exactly. */
static void ck_json_equals_binary(const char *path, const char *body, size_t len)
{
    struct reply j, b;
    const char *binary[] = {"Accept: application/octet-stream", NULL};
    http_do(&srv, "POST", path, "application/json", body, len, NULL, &j);
    ck_reply(&j, 200, NULL);
    http_do(&srv, "POST", path, "application/json", body, len, binary, &b);
    ck_reply(&b, 200, NULL);
    size_t n = b.len / sizeof(float), got = 0;
    const float *want = (const float *)(const void *)b.body;
    /* the floats are the numbers after "embeddings": in order */
    const char *p = strstr(j.body, "\"embeddings\":");
    ck_assert_ptr_nonnull(p);
    p += strlen("\"embeddings\":");
    while (*p != '\0') {
        if (*p == '-' || (*p >= '0' && *p <= '9')) {
            char *end;
            float f = (float)strtod(p, &end);
            ck_assert_uint_lt(got, n);
            ck_assert_msg(memcmp(&f, &want[got], sizeof f) == 0, "%s: float %zu differs", path,
                          got);
            got++;
            p = end;
        } else {
            p++;
        }
    }
    ck_assert_uint_eq(got, n);
    reply_free(&j);
    reply_free(&b);
}

/* Lookups and bags written a chunk of rows at a time (16384 rows of the
 * 4-wide table) give the rows of one gather: across chunk boundaries too. */
START_TEST(chunked_answers_are_whole)
{
    size_t len;
    char *body = ids_body("{\"ids\":[", 40000, 2999, "]}", &len);
    ck_json_equals_binary("/v1/tables/wide/lookup", body, len);
    free(body);
    /* 20000 bags of 2 ids, weighted */
    size_t cap = 20000 * 40 + 64, used = 0;
    body = malloc(cap);
    used += (size_t)snprintf(body + used, cap - used, "{\"mode\": \"sum\", \"bags\": [");
    for (int i = 0; i < 20000; i++)
        used += (size_t)snprintf(body + used, cap - used, "%s[%d,%d]", i ? "," : "", i % 3000,
                                 (i * 7) % 3000);
    used += (size_t)snprintf(body + used, cap - used, "], \"per_sample_weights\": [");
    for (int i = 0; i < 20000; i++)
        used += (size_t)snprintf(body + used, cap - used, "%s[0.5,%d]", i ? "," : "", i % 5);
    used += (size_t)snprintf(body + used, cap - used, "]}");
    ck_json_equals_binary("/v1/tables/wide/lookup", body, used);
    free(body);
}
END_TEST

/* max_answer_bytes bounds an answer from the request's counts, before any
 * work: queries x k for neighbours, rows x dim for lookups. */
START_TEST(answers_are_bounded_before_any_work)
{
    struct reply r;
    size_t len;
    char *body = ids_body("{\"k\": 1000, \"ids\":[", 2000, 3000, "]}", &len);
    double t0 = now_s();
    http_do(&srv, "POST", "/v1/tables/wide/neighbors", "application/json", body, len, NULL, &r);
    ck_reply(&r, 413, "payload_too_large");
    ck_message(&r, "ids: 2000 queries with k 1000 make an answer of up to");
    ck_message(&r, "over max_answer_bytes 67108864; send fewer queries or a smaller k");
    ck_assert_double_lt(now_s() - t0, 5.0); /* no search ran: it would take a while */
    reply_free(&r);
    free(body);

    body = ids_body("{\"k\": 10, \"ids\":[", 20, 3000, "]}", &len);
    http_do(&srv, "POST", "/v1/tables/wide/neighbors", "application/json", body, len, NULL, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    free(body);

    /* 100,000 rows of 64 floats: too much as JSON, fine as raw float32 */
    body = ids_body("{\"ids\":[", MAX_BATCH, 5000, "]}", &len);
    http_do(&srv, "POST", "/v1/tables/mid/lookup", "application/json", body, len, NULL, &r);
    ck_reply(&r, 413, "payload_too_large");
    ck_message(&r, "ids: 100000 rows of 64 floats make an answer of up to");
    ck_message(&r, "or send Accept: application/octet-stream");
    reply_free(&r);
    const char *binary[] = {"Accept: application/octet-stream", NULL};
    http_do(&srv, "POST", "/v1/tables/mid/lookup", "application/json", body, len, binary, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    free(body);

    /* the same ids as a binary body (int64): the same bounds */
    int64_t *ids = malloc(MAX_BATCH * sizeof *ids);
    for (int64_t i = 0; i < MAX_BATCH; i++)
        ids[i] = i % 5000;
    http_do(&srv, "POST", "/v1/tables/mid/lookup", "application/octet-stream", (char *)ids,
            MAX_BATCH * sizeof *ids, NULL, &r);
    ck_reply(&r, 413, "payload_too_large");
    ck_message(&r, "ids: 100000 rows of 64 floats make an answer of up to");
    reply_free(&r);
    http_do(&srv, "POST", "/v1/tables/mid/lookup", "application/octet-stream", (char *)ids,
            MAX_BATCH * sizeof *ids, binary, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_eq(r.len, (size_t)MAX_BATCH * 64 * sizeof(float));
    reply_free(&r);
    free(ids);
}
END_TEST

/* ---- heavy work stays off the HTTP threads ---------------------------- */

/* While the work pool runs neighbour searches, /healthz, /readyz and
 * /metrics answer within 100 ms (99 in 100 of them; none takes a second:
 * a probe that waited for a search would). The searches (500 queries over
 * 200,000 x 64 each, 60 under sanitizers) take seconds; the probes run
 * until the last one is done. */
START_TEST(health_answers_while_the_pool_is_busy)
{
    enum { HEAVY = 3 };
    size_t len;
    char *body = ids_body("{\"k\": 10, \"ids\":[", HEAVY_QUERIES, 200000, "]}", &len);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /v1/tables/big/neighbors HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", len);
    int fds[HEAVY];
    bool done[HEAVY] = {false};
    for (int i = 0; i < HEAVY; i++) {
        fds[i] = http_connect_send(&srv, head, (size_t)n);
        send_all(fds[i], body, len);
    }
    free(body);
    static const char *const probes[] = {"/healthz", "/readyz", "/metrics"};
    enum { MAX_PROBES = 200000 };
    double worst = 0, t_end = now_s() + 120;
    double *took = malloc(MAX_PROBES * sizeof *took);
    ck_assert_ptr_nonnull(took);
    int busy_probes = 0, pending = HEAVY;
    const char *worst_path = "";
    while (pending > 0 && now_s() < t_end) {
        for (size_t p = 0; p < 3; p++) {
            struct reply r;
            double t0 = now_s();
            http_get(&srv, probes[p], &r);
            double dt = now_s() - t0;
            ck_reply(&r, 200, NULL);
            reply_free(&r);
            if (dt > worst) {
                worst = dt;
                worst_path = probes[p];
            }
            if (busy_probes < MAX_PROBES)
                took[busy_probes] = dt;
            busy_probes++;
        }
        for (int i = 0; i < HEAVY; i++) {
            struct pollfd pf = {fds[i], POLLIN, 0};
            if (!done[i] && poll(&pf, 1, 0) > 0) {
                char out[1 << 16];
                ck_assert_int_eq(http_read_answer(fds[i], out, sizeof out), 200);
                done[i] = true;
                pending--;
            }
        }
        sleep_ms(5);
    }
    for (int i = 0; i < HEAVY; i++)
        close(fds[i]);
    ck_assert_int_eq(pending, 0);
    ck_assert_msg(busy_probes >= 30, "the searches were too quick to test: %d probes",
                  busy_probes);
    int kept = busy_probes < MAX_PROBES ? busy_probes : MAX_PROBES, slow = 0;
    for (int i = 0; i < kept; i++)
        slow += took[i] >= 0.100;
    free(took);
    printf("health probes while the pool was busy: %d, %d of them 100 ms or more, slowest "
           "%.1f ms (%s)\n", busy_probes, slow, worst * 1e3, worst_path);
    ck_assert_msg(slow * 100 <= kept, "%d of %d probes took 100 ms or more while the pool was "
                  "busy", slow, kept);
    ck_assert_msg(worst < 1.0, "%s took %.1f ms while the pool was busy (%d probes)",
                  worst_path, worst * 1e3, busy_probes);
}
END_TEST

/* ---- connections --------------------------------------------------------- */

/* The sockets the server holds open (its listening one included). */
static int server_sockets(void)
{
    char dir[64], path[320], target[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)srv.pid);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len > 0) {
            target[len] = '\0';
            n += strncmp(target, "socket:", 7) == 0;
        }
    }
    closedir(d);
    return n;
}

/* A burst of connections at once does not pass max_connections: the count
 * goes up as a connection is handed to a thread, not when the thread takes
 * it (counted when taken, a burst left up to 30 open against a limit of 8,
 * and 24 of 16 in one run of this test). */
START_TEST(connection_limit_holds_under_a_burst)
{
    enum { BURST = 250 };
    int base = server_sockets(), fds[BURST], most = 0;
    for (int i = 0; i < BURST; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(fds[i], 0);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)srv.port)};
        to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = connect(fds[i], (struct sockaddr *)&to, sizeof to);
        ck_assert(rc == 0 || errno == EINPROGRESS);
    }
    for (int i = 0; i < 20; i++) {
        sleep_ms(50);
        int n = server_sockets() - base;
        most = n > most ? n : most;
    }
    printf("connection burst: %d connections, at most %d open (limit %d)\n", BURST, most,
           MAX_CONNECTIONS);
    ck_assert_int_le(most, MAX_CONNECTIONS);
    ck_assert_int_ge(most, MAX_CONNECTIONS / 2); /* the burst did reach the server */
    for (int i = 0; i < BURST; i++)
        close(fds[i]);
    /* and they are gone again, for the tests after this one */
    for (int i = 0; i < 100 && server_sockets() > base; i++)
        sleep_ms(50);
    ck_assert_int_le(server_sockets(), base);
}
END_TEST

/* At max_connections a new connection is accepted and closed at once, not
 * left waiting in the backlog; once one closes, new ones are served. */
START_TEST(connection_limit_closes_at_once)
{
    const char health[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char out[4096], src[32];
    int held[MAX_CONNECTIONS + 8], nheld = 0, refused = -1;
    double refused_in = -1;
    /* connections left by earlier tests may still count for a moment */
    for (int i = 0; i < MAX_CONNECTIONS + 8 && refused < 0; i++) {
        source_addr(i, src);
        int fd = connect_from(src);
        double t0 = now_s();
        send_all(fd, health, sizeof health - 1);
        int status = http_read_answer(fd, out, sizeof out);
        if (status == 200) {
            held[nheld++] = fd;
            continue;
        }
        ck_assert_int_eq(status, 0);
        refused_in = now_s() - t0;
        refused = i;
        close(fd);
    }
    ck_assert_msg(refused >= 0, "no connection was refused after %d", nheld);
    ck_assert_int_ge(nheld, MAX_CONNECTIONS - 2); /* others' closes may lag a moment */
    ck_assert_int_le(nheld, MAX_CONNECTIONS);
    printf("connection limit: %d held, the next closed after %.1f ms\n", nheld, refused_in * 1e3);
    ck_assert_msg(refused_in < 1.5, "the refused connection took %.2f s to close", refused_in);
    /* a freed slot is used again */
    close(held[--nheld]);
    int status = 0;
    for (int i = 0; i < 50 && status != 200; i++) {
        sleep_ms(50);
        source_addr(200 + i, src);
        int fd = connect_from(src);
        send_all(fd, health, sizeof health - 1);
        status = http_read_answer(fd, out, sizeof out);
        close(fd);
    }
    ck_assert_int_eq(status, 200);
    for (int i = 0; i < nheld; i++)
        close(held[i]);
}
END_TEST

/* Headers trickled a byte at a time are closed at header_timeout, however
 * slowly they come (libmicrohttpd's idle timeout never fires on them). */
START_TEST(trickled_headers_are_closed)
{
    enum { N = 12 };
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int fds[N];
    double closed_at[N];
    char src[32];
    for (int i = 0; i < N; i++) {
        source_addr(i, src);
        fds[i] = connect_from(src);
        closed_at[i] = -1;
    }
    double t0 = now_s();
    size_t sent = 0;
    int open = N;
    while (open > 0 && now_s() - t0 < HEADER_TIMEOUT + 6) {
        for (int i = 0; i < N; i++) {
            if (closed_at[i] >= 0)
                continue;
            if (sent < sizeof req - 1)
                send(fds[i], req + sent, 1, MSG_NOSIGNAL);
            if (closed_within(fds[i], 0)) {
                closed_at[i] = now_s() - t0;
                open--;
            }
        }
        sent++;
        sleep_ms(100);
    }
    for (int i = 0; i < N; i++)
        printf("trickled headers: connection %d closed after %.2f s\n", i, closed_at[i]);
    for (int i = 0; i < N; i++) {
        close(fds[i]);
        ck_assert_msg(closed_at[i] >= HEADER_TIMEOUT - 0.5 && closed_at[i] < HEADER_TIMEOUT + 3,
                      "connection %d closed after %.2f s (header_timeout %d s)", i, closed_at[i],
                      HEADER_TIMEOUT);
    }
}
END_TEST

/* A body below min_body_rate is closed after the grace; one above it is
 * read to the end and answered. */
START_TEST(slow_bodies_are_closed_fast_ones_are_not)
{
    const char head[] = "POST /v1/tables/mid/lookup HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: application/json\r\nContent-Length: 40000\r\n\r\n";
    char src[32], out[4096];
    source_addr(1, src);
    int slow = connect_from(src);
    source_addr(2, src);
    int fast = connect_from(src);
    send_all(slow, head, sizeof head - 1);
    send_all(fast, head, sizeof head - 1);
    send_all(fast, "{\"ids\": [", 9);
    double t0 = now_s(), slow_closed = -1;
    size_t fast_sent = 9;
    while (now_s() - t0 < HEADER_TIMEOUT + 8 && (slow_closed < 0 || fast_sent < 40000)) {
        if (slow_closed < 0) {
            send(slow, " ", 1, MSG_NOSIGNAL); /* 10 bytes/s, under 2000 */
            if (closed_within(slow, 0))
                slow_closed = now_s() - t0;
        }
        /* 4 KB every 100 ms: ~40 KB/s, over the rate */
        char pad[4000];
        size_t left = fast_sent < 40000 - 3 ? 40000 - 3 - fast_sent : 0;
        size_t n = left < sizeof pad ? left : sizeof pad;
        memset(pad, ' ', n);
        if (n > 0)
            send_all(fast, pad, n);
        fast_sent += n;
        if (fast_sent == 40000 - 3) {
            send_all(fast, "1]}", 3);
            fast_sent = 40000;
        }
        sleep_ms(100);
    }
    close(slow);
    printf("slow body closed after %.2f s\n", slow_closed);
    ck_assert_msg(slow_closed >= HEADER_TIMEOUT - 0.5 && slow_closed < HEADER_TIMEOUT + 3,
                  "the slow body was closed after %.2f s", slow_closed);
    ck_assert_int_eq(http_read_answer(fast, out, sizeof out), 200);
    close(fast);
}
END_TEST

/* Incomplete requests then a half-close: closed at once, answered or not. */
START_TEST(half_closed_incomplete_requests_close_at_once)
{
    static const char *const cases[] = {
        "POST /v1/tables/mid/lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5\r\n{\"ids\r\n",
        "POST /v1/tables/mid/lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n1000\r\n{\"ids\": [1,",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad header\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n",
        "GET /healthz HTT",
        "POST /v1/tables/mid/lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n{\"ids\"",
    };
    char src[32];
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            source_addr((int)i + 10 * round, src);
            int fd = connect_from(src);
            send_all(fd, cases[i], strlen(cases[i]));
            if (round == 1)
                sleep_ms(50); /* the half-close after the bytes, not with them */
            shutdown(fd, SHUT_WR);
            double t0 = now_s();
            bool closed = closed_within(fd, 5000);
            ck_assert_msg(closed && now_s() - t0 < 1.5, "case %zu round %d: %s after %.2f s", i,
                          round, closed ? "closed" : "still open", now_s() - t0);
            close(fd);
        }
    }
}
END_TEST

/* A complete request then a half-close is answered, also when it runs on
 * the work pool (a snapshot) or is a write. */
START_TEST(half_closed_valid_requests_are_answered)
{
    static const char *const cases[] = {
        "POST /v1/tables/mid/snapshot HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /v1/tables/mid/snapshot HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}",
        "POST /v1/tables/big/neighbors HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 23\r\n\r\n{\"ids\": [1, 2], \"k\": 3}",
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    };
    char out[1 << 16];
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            int fd = http_connect_send(&srv, cases[i], strlen(cases[i]));
            shutdown(fd, SHUT_WR);
            int status = http_read_answer(fd, out, sizeof out);
            close(fd);
            ck_assert_msg(status == 200, "case %zu round %d: %d %.200s", i, round, status, out);
        }
    }
}
END_TEST

/* ---- errors and messages -------------------------------------------- */

START_TEST(errors_are_json)
{
    struct reply r;
    /* 405 to HEAD: the JSON error's headers, with the body HEAD leaves out */
    http_do(&srv, "HEAD", "/v1/tables/mid/lookup", NULL, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_uint_eq(r.len, 0);
    char *ct = reply_header(&r, "Content-Type"), *allow = reply_header(&r, "Allow");
    ck_assert_str_eq(ct, "application/json");
    ck_assert_str_eq(allow, "POST");
    free(ct);
    free(allow);
    reply_free(&r);
    http_do(&srv, "DELETE", "/healthz", NULL, NULL, 0, NULL, &r);
    ck_reply(&r, 405, "method_not_allowed");
    reply_free(&r);
    http_get(&srv, "/nope", &r);
    ck_reply(&r, 404, "not_found");
    reply_free(&r);
    /* a chunked body past max_body_bytes */
    char *big = malloc(MAX_BODY + 4096);
    memset(big, ' ', MAX_BODY + 4096);
    http_chunked(&srv, "/v1/tables/mid/lookup", big, MAX_BODY + 4096, 1 << 16, &r);
    ck_reply(&r, 413, "payload_too_large");
    reply_free(&r);
    free(big);
    /* an unknown HTTP version: libmicrohttpd's own answer, 505 */
    char out[4096];
    const char v2[] = "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(http_raw(&srv, v2, sizeof v2 - 1, out, sizeof out), 505);
}
END_TEST

START_TEST(messages_a_newcomer_meets)
{
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/word/neighbors", "{\"tokens\": [\"king\"]}", &r);
    ck_reply(&r, 404, "not_found");
    ck_message(&r, "no table named \\\"word\\\"; the tables are words, mid, wide, big, broken, "
                   "broken_bin");
    reply_free(&r);
    http_json(&srv, "POST", "/v1/tables/words/neighbors", "{\"tokens\": [\"king\"], \"k\": 1e5}",
              &r);
    ck_reply(&r, 400, "invalid_argument");
    ck_message(&r, "k: 100000 is outside [1, 1000] (max_k)");
    reply_free(&r);
    http_json(&srv, "POST", "/v1/tables/words/lookup", "{\"ids\": [4e3]}", &r);
    ck_reply(&r, 400, "out_of_range");
    ck_message(&r, "ids[0]: id 4000 is out of range [0, 4)");
    reply_free(&r);
}
END_TEST

/* Authorization without "Bearer " says so, on a server with a token. */
START_TEST(authorization_without_bearer_says_so)
{
    struct test_server s;
    test_server_prepare(&s);
    char config[1024];
    snprintf(config, sizeof config,
             "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0}, \"data_dir\": \"%s/data\","
             " \"tables\": [{\"name\": \"t\", \"init\": {\"num_embeddings\": 4, "
             "\"embedding_dim\": 2}}]}", s.dir);
    const char *env[] = {"EMBEDDING_SERVER_WRITE_TOKEN=sekrit", "EMBEDDING_SERVER_READ_TOKEN=rd",
                         NULL};
    test_server_start(&s, config, env, true);
    struct reply r;
    const char *raw[] = {"Authorization: rd", NULL};
    http_do(&s, "GET", "/v1/tables/t", NULL, NULL, 0, raw, &r);
    ck_reply(&r, 401, "unauthorized");
    ck_assert_msg(strstr(r.body, "must read \\\"Bearer <token>\\\"") != NULL, "%s", r.body);
    ck_assert_ptr_null(strstr(r.body, "rd\\\"}")); /* the value is never echoed */
    reply_free(&r);
    const char *wrong[] = {"Authorization: Bearer nope", NULL};
    http_do(&s, "GET", "/v1/tables/t", NULL, NULL, 0, wrong, &r);
    ck_reply(&r, 401, "unauthorized");
    ck_assert_ptr_nonnull(strstr(r.body, "does not grant"));
    reply_free(&r);
    test_server_cleanup(&s);
}
END_TEST

/* Tokens of files that are not valid UTF-8 are written as U+FFFD: every
 * answer is valid JSON (checked with the strict validator). */
START_TEST(broken_utf8_tokens_make_valid_json)
{
    static const char *const tables[] = {"broken", "broken_bin"};
    for (size_t t = 0; t < 2; t++) {
        char path[96];
        snprintf(path, sizeof path, "/v1/tables/%s/neighbors", tables[t]);
        struct reply r;
        http_json(&srv, "POST", path, "{\"ids\": [1], \"k\": 3}", &r);
        ck_reply(&r, 200, NULL);
        char err[256];
        ck_assert_msg(json_validate(r.body, r.len, 8, err, sizeof err) == STATUS_OK,
                      "%s: %s in %s", tables[t], err, r.body);
        ck_assert_ptr_nonnull(strstr(r.body, "\\ufffd"));
        reply_free(&r);
    }
    struct reply r;
    http_json(&srv, "POST", "/v1/tables/broken/neighbors", "{\"ids\": [1], \"k\": 3}", &r);
    ck_message(&r, "\"token\":\"caf\\ufffd\"");
    ck_message(&r, "\"token\":\"\\u0001ctl\"");
    ck_message(&r, "\"token\":\"x\\ufffd\\ufffd\"");
    reply_free(&r);
}
END_TEST

static Suite *http_limits_suite(void)
{
    Suite *s = suite_create("http_limits");
    TCase *tc = tcase_create("limits");
    tcase_add_unchecked_fixture(tc, start_server, stop_server);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, refused_requests_cost_their_body);
    tcase_add_test(tc, accepted_requests_cost_their_answer);
    tcase_add_test(tc, answers_are_bounded_before_any_work);
    tcase_add_test(tc, chunked_answers_are_whole);
    tcase_add_test(tc, health_answers_while_the_pool_is_busy);
    tcase_add_test(tc, trickled_headers_are_closed);
    tcase_add_test(tc, slow_bodies_are_closed_fast_ones_are_not);
    tcase_add_test(tc, half_closed_incomplete_requests_close_at_once);
    tcase_add_test(tc, half_closed_valid_requests_are_answered);
    tcase_add_test(tc, errors_are_json);
    tcase_add_test(tc, messages_a_newcomer_meets);
    tcase_add_test(tc, authorization_without_bearer_says_so);
    tcase_add_test(tc, broken_utf8_tokens_make_valid_json);
    tcase_add_test(tc, connection_limit_holds_under_a_burst);
    /* last: the server counts its 16 closed connections down only as it
     * handles the closes, so a test right after it could meet the limit */
    tcase_add_test(tc, connection_limit_closes_at_once);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_limits_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
