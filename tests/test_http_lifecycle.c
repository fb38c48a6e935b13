/* test_http_lifecycle.c - the real binary's life: readiness while tables
 * load, SIGTERM (exit 0 within 5 s, snapshot of trainable tables),
 * periodic snapshots, training that resumes exactly from a snapshot after a
 * restart, and the debug line per request. Each test starts its own
 * servers. */
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"
#include "testutil.h"

static const char config_fmt[] =
    "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},\n"
    " \"data_dir\": \"%s/data\", %s\n"
    " \"tables\": [%s]}\n";

#define EMB_INIT                                                                         \
    "{\"name\": \"emb\", \"init\": {\"num_embeddings\": 30, \"embedding_dim\": 6, \"seed\": 3}," \
    " \"padding_idx\": 0, \"optimizer\": {\"name\": \"sparse_adam\", \"lr\": 0.05}}"

static void start(struct test_server *s, const char *extra, const char *tables, bool wait_ready)
{
    char config[4096];
    snprintf(config, sizeof config, config_fmt, s->dir, extra, tables);
    test_server_start(s, config, NULL, wait_ready);
}

static bool exists(const char *dir, const char *rel)
{
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    return stat(p, &st) == 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls for dir/rel for up to 5 s; true once it exists. */
static bool wait_exists(const char *dir, const char *rel)
{
    for (int i = 0; i < 500; i++) {
        if (exists(dir, rel))
            return true;
        sleep_ms(10);
    }
    return false;
}

/* Gradient step number `step` (deterministic ids with a duplicate and the
 * padding id, and varied gradients). */
static void post_step(const struct test_server *s, int step)
{
    char body[1024];
    int a = 1 + step % 7, b = 2 + (step * 5) % 11;
    snprintf(body, sizeof body,
             "{\"ids\": [%d, %d, %d, 0], \"grads\": [[%d, -1, 0.5, 0, 2, -3],"
             " [0.25, 0.5, -0.75, 1, %d, 0], [1, 1, 1, 1, 1, 1], [9, 9, 9, 9, 9, 9]]}",
             a, b, a, step, step % 3);
    struct reply r;
    http_json(s, "POST", "/v1/tables/emb/gradients", body, &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
}

/* Every row of emb, as raw float32 bytes (binary lookup). */
static char *all_rows(const struct test_server *s, size_t *len)
{
    char body[512] = "{\"ids\": [0";
    for (int i = 1; i < 30; i++)
        snprintf(body + strlen(body), sizeof body - strlen(body), ",%d", i);
    strcat(body, "]}");
    const char *hdrs[] = {"Accept: application/octet-stream", NULL};
    struct reply r;
    http_do(s, "POST", "/v1/tables/emb/lookup", "application/json", body, strlen(body), hdrs, &r);
    ck_reply(&r, 200, NULL);
    ck_assert_uint_eq(r.len, 30 * 6 * sizeof(float));
    char *out = malloc(r.len);
    memcpy(out, r.body, r.len);
    *len = r.len;
    reply_free(&r);
    return out;
}

static long version_of(const struct test_server *s)
{
    struct reply r;
    http_get(s, "/v1/tables/emb", &r);
    cJSON *root = cJSON_Parse(r.body);
    long v = (long)cJSON_GetObjectItemCaseSensitive(root, "version")->valuedouble;
    cJSON_Delete(root);
    reply_free(&r);
    return v;
}

/* Checks that the rows of s equal those of a fresh server that took
 * `steps` gradient steps in one run; frees them. */
static void ck_rows_equal_uninterrupted(const struct test_server *s, int steps)
{
    size_t len_s, len_c;
    char *rows_s = all_rows(s, &len_s);
    struct test_server c;
    test_server_prepare(&c);
    start(&c, "\"snapshot\": {\"on_shutdown\": false},", EMB_INIT, true);
    for (int i = 0; i < steps; i++)
        post_step(&c, i);
    char *rows_c = all_rows(&c, &len_c);
    ck_assert_uint_eq(len_s, len_c);
    ck_assert_mem_eq(rows_s, rows_c, len_s);
    free(rows_s);
    free(rows_c);
    test_server_cleanup(&c);
}

START_TEST(sigterm_snapshots_and_exits_zero)
{
    struct test_server s;
    test_server_prepare(&s);
    start(&s, "", EMB_INIT, true);
    post_step(&s, 1);
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    ck_assert_double_lt(s.stop_seconds, 5.0);
    ck_assert(exists(s.dir, "data/emb/snapshot-1/weight.npy"));
    ck_assert(exists(s.dir, "data/emb/snapshot-1/exp_avg.npy"));
    ck_assert(exists(s.dir, "data/emb/snapshot-1/exp_avg_sq.npy"));
    ck_assert(exists(s.dir, "data/emb/snapshot-1/manifest.json"));
    char *log = test_server_log(&s);
    ck_assert_ptr_nonnull(strstr(log, "shutting down"));
    ck_assert_ptr_nonnull(strstr(log, "stopped"));
    free(log);
    test_server_cleanup(&s);
}
END_TEST

START_TEST(no_snapshot_when_disabled)
{
    struct test_server s;
    test_server_prepare(&s);
    start(&s, "\"snapshot\": {\"on_shutdown\": false},", EMB_INIT, true);
    post_step(&s, 1);
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    /* no snapshot, but the answered step is in the log and comes back */
    ck_assert(!exists(s.dir, "data/emb/snapshot-1"));
    ck_assert(exists(s.dir, "data/emb/wal"));
    start(&s, "\"snapshot\": {\"on_shutdown\": false},", EMB_INIT, true);
    ck_assert_int_eq(version_of(&s), 1);
    test_server_stop(&s, 10.0);
    test_server_cleanup(&s);
}
END_TEST

/* N steps, SIGTERM (snapshot), restart from the snapshot folder, M steps:
 * the same bytes as N + M steps in one run. */
START_TEST(training_resumes_exactly_after_restart)
{
    const int n = 3, m = 2;
    struct test_server a, b;
    test_server_prepare(&a);
    start(&a, "", EMB_INIT, true);
    for (int i = 0; i < n; i++)
        post_step(&a, i);
    test_server_stop(&a, 10.0);
    ck_assert_int_eq(a.exit_status, 0);

    test_server_prepare(&b);
    char tables[1024];
    snprintf(tables, sizeof tables,
             "{\"name\": \"emb\", \"path\": \"%s/data/emb\", \"format\": \"snapshot\"}", a.dir);
    start(&b, "\"snapshot\": {\"on_shutdown\": false},", tables, true);
    ck_assert_int_eq(version_of(&b), n);
    for (int i = n; i < n + m; i++)
        post_step(&b, i);
    ck_assert_int_eq(version_of(&b), n + m);
    ck_rows_equal_uninterrupted(&b, n + m);
    test_server_cleanup(&b);
    test_server_cleanup(&a);
}
END_TEST

/* A trainable table restarted with the same config and data_dir resumes
 * from its newest snapshot on its own (N steps, SIGTERM, restart, M steps ==
 * N + M steps in one run); "resume": false starts it afresh. */
START_TEST(trainable_table_resumes_from_data_dir)
{
    const int n = 3, m = 2;
    struct test_server a;
    test_server_prepare(&a);
    start(&a, "", EMB_INIT, true);
    for (int i = 0; i < n; i++)
        post_step(&a, i);
    test_server_stop(&a, 10.0);
    ck_assert_int_eq(a.exit_status, 0);

    start(&a, "\"snapshot\": {\"on_shutdown\": false},", EMB_INIT, true);
    ck_assert_int_eq(version_of(&a), n);
    char *log = test_server_log(&a);
    ck_assert_ptr_nonnull(strstr(log, "resuming from"));
    free(log);
    for (int i = n; i < n + m; i++)
        post_step(&a, i);
    ck_rows_equal_uninterrupted(&a, n + m);
    test_server_stop(&a, 10.0);

    /* the same data_dir with resume off: a fresh table */
    char tables[1024];
    snprintf(tables, sizeof tables, "%.*s, \"resume\": false}", (int)strlen(EMB_INIT) - 1,
             EMB_INIT);
    start(&a, "\"snapshot\": {\"on_shutdown\": false},", tables, true);
    ck_assert_int_eq(version_of(&a), 0);
    test_server_cleanup(&a);
}
END_TEST

/* An acknowledged write survives a restart on a frozen table too (row
 * assignment is allowed there); a table nobody wrote to is not copied. */
START_TEST(assigned_rows_on_frozen_table_survive_restart)
{
    const char *tables =
        "{\"name\": \"emb\", \"init\": {\"num_embeddings\": 30, \"embedding_dim\": 6},"
        " \"freeze\": true},"
        " {\"name\": \"idle\", \"init\": {\"num_embeddings\": 10, \"embedding_dim\": 4}}";
    struct test_server s;
    test_server_prepare(&s);
    start(&s, "", tables, true);
    struct reply r;
    http_json(&s, "PUT", "/v1/tables/emb/rows",
              "{\"ids\": [5], \"vectors\": [[1, 2, 3, 4, 5, 6.5]]}", &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    ck_assert(exists(s.dir, "data/emb/snapshot-1/weight.npy"));
    ck_assert(!exists(s.dir, "data/idle"));

    start(&s, "", tables, true);
    ck_assert_int_eq(version_of(&s), 1);
    http_json(&s, "POST", "/v1/tables/emb/lookup", "{\"ids\": [5]}", &r);
    ck_reply(&r, 200, NULL);
    ck_assert_str_eq(r.body, "{\"shape\":[1,6],\"embeddings\":[[1.0,2.0,3.0,4.0,5.0,6.5]]}");
    reply_free(&r);
    test_server_cleanup(&s);
}
END_TEST

START_TEST(readyz_loading_then_ready)
{
    struct test_server s;
    test_server_prepare(&s);
    /* big enough to take a while to initialize */
    start(&s, "",
          "{\"name\": \"big\", \"init\": {\"num_embeddings\": 1500000, \"embedding_dim\": 64}}",
          false);
    struct reply r;
    http_get(&s, "/readyz", &r);
    ck_reply(&r, 503, NULL);
    ck_assert_str_eq(r.body, "{\"status\":\"loading\"}");
    reply_free(&r);
    http_get(&s, "/healthz", &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    http_get(&s, "/v1/tables/big", &r);
    ck_reply(&r, 503, "not_ready");
    reply_free(&r);
    http_get(&s, "/v1/tables", &r);
    ck_reply(&r, 503, "not_ready");
    reply_free(&r);

    for (int i = 0; i < 6000; i++) {
        http_get(&s, "/readyz", &r);
        long st = r.status;
        reply_free(&r);
        if (st == 200)
            break;
        sleep_ms(10);
    }
    http_get(&s, "/v1/tables/big", &r);
    ck_reply(&r, 200, NULL);
    reply_free(&r);
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    test_server_cleanup(&s);
}
END_TEST

START_TEST(sigterm_while_loading)
{
    struct test_server s;
    test_server_prepare(&s);
    start(&s, "",
          "{\"name\": \"big\", \"init\": {\"num_embeddings\": 1500000, \"embedding_dim\": 64}}",
          false);
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    ck_assert_double_lt(s.stop_seconds, 5.0);
    test_server_cleanup(&s);
}
END_TEST

START_TEST(periodic_snapshots)
{
    struct test_server s;
    test_server_prepare(&s);
    start(&s, "\"snapshot\": {\"interval\": 1, \"on_shutdown\": false, \"keep\": 2},", EMB_INIT,
          true);
    post_step(&s, 1);
    ck_assert_msg(wait_exists(s.dir, "data/emb/snapshot-1/manifest.json"),
                  "no periodic snapshot within 5 s");
    post_step(&s, 2);
    ck_assert_msg(wait_exists(s.dir, "data/emb/snapshot-2/manifest.json"),
                  "no second periodic snapshot within 5 s");
    /* automatic snapshots keep the newest snapshot.keep (2 here) */
    for (int step = 3; step <= 4; step++) {
        char want[64];
        snprintf(want, sizeof want, "data/emb/snapshot-%d/manifest.json", step);
        post_step(&s, step);
        ck_assert_msg(wait_exists(s.dir, want), "no periodic snapshot %d within 5 s", step);
    }
    for (int i = 0; i < 200 && exists(s.dir, "data/emb/snapshot-2"); i++)
        sleep_ms(10);
    ck_assert(!exists(s.dir, "data/emb/snapshot-1"));
    ck_assert(!exists(s.dir, "data/emb/snapshot-2"));
    ck_assert(exists(s.dir, "data/emb/snapshot-3/weight.npy"));
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    char *log = test_server_log(&s);
    ck_assert_ptr_nonnull(strstr(log, "periodic snapshot at version 4"));
    free(log);
    test_server_cleanup(&s);
}
END_TEST

START_TEST(debug_log_line_per_request)
{
    struct test_server s;
    test_server_prepare(&s);
    start(&s, "\"log_level\": \"debug\",", EMB_INIT, true);
    struct reply r;
    http_get(&s, "/v1/tables/emb", &r);
    reply_free(&r);
    http_get(&s, "/v1/tables/none", &r);
    reply_free(&r);
    test_server_stop(&s, 10.0);
    char *log = test_server_log(&s);
    ck_assert_ptr_nonnull(strstr(log, "debug: GET /v1/tables/emb -> 200 ok"));
    ck_assert_ptr_nonnull(strstr(log, "debug: GET /v1/tables/none -> 404 not_found"));
    /* and the startup summary at info */
    ck_assert_ptr_nonnull(strstr(log, "info: limits: max_body_bytes"));
    ck_assert_ptr_nonnull(strstr(log, "table emb: 30 x 6 float32, trainable"));
    free(log);
    test_server_cleanup(&s);
}
END_TEST

START_TEST(bad_table_exits_nonzero)
{
    struct test_server s;
    test_server_prepare(&s);
    free(testutil_write_file(s.dir, "broken.txt", "2 3\na 1 2 3\nb 1 2\n", 18));
    char config[1024];
    snprintf(config, sizeof config, config_fmt, s.dir, "",
             "{\"name\": \"broken\", \"path\": \"broken.txt\"}");
    test_server_start(&s, config, NULL, false);
    ck_assert_msg(test_server_wait(&s, 30.0), "the server did not exit");
    ck_assert_int_eq(s.exit_status, 1);
    char *log = test_server_log(&s);
    ck_assert_msg(strstr(log, "broken.txt") != NULL, "log: %s", log);
    free(log);
    test_server_cleanup(&s);
}
END_TEST

/* A request in flight when SIGTERM arrives is answered, then the server
 * exits 0. The client sends half of the body, waits until /metrics shows the
 * request in flight, signals, and only then sends the rest: the server must
 * keep reading it, run the search (on the work pool: the table is big enough
 * for a suspended connection) and answer. */
START_TEST(sigterm_finishes_requests_in_flight)
{
    struct test_server s;
    test_server_prepare(&s);
    start(&s, "",
          "{\"name\": \"big\", \"init\": {\"num_embeddings\": 20000, \"embedding_dim\": 128}}",
          true);
    const char body[] = "{\"k\": 5, \"ids\": [1, 2, 3]}";
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST /v1/tables/big/neighbors HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n{\"k\": 5,",
                     strlen(body));
    int fd = http_connect_send(&s, head, (size_t)n);
    /* a second, idle keep-alive connection, to try a write while draining */
    const char health[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char out[1 << 16];
    int idle = http_connect_send(&s, health, sizeof health - 1);
    ck_assert_int_eq(http_read_answer(idle, out, sizeof out), 200);

    bool in_flight = false;
    for (int i = 0; i < 2000 && !in_flight; i++) {
        struct reply r;
        http_get(&s, "/metrics", &r);
        const char *p = strstr(r.body, "\nembedding_server_requests_in_flight ");
        in_flight = p != NULL && atoi(p + strlen("\nembedding_server_requests_in_flight ")) >= 2;
        reply_free(&r);
        if (!in_flight)
            sleep_ms(5);
    }
    ck_assert_msg(in_flight, "the request never showed as in flight");
    kill(s.pid, SIGTERM);
    /* until the server says shutdown began (a fixed wait was a guess) */
    bool began = false;
    for (int i = 0; i < 1000 && !began; i++) {
        char *log = test_server_log(&s);
        began = strstr(log, "shutting down") != NULL;
        free(log);
        if (!began)
            sleep_ms(10);
    }
    ck_assert_msg(began, "the server never said it was shutting down");
    sleep_ms(50); /* the flag is set just after the line */
    /* writes are refused once shutdown began: 503 unavailable */
    const char grad[] = "POST /v1/tables/big/gradients HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"
                        "{\"ids\": [1]}";
    ck_assert_int_eq(send(idle, grad, sizeof grad - 1, MSG_NOSIGNAL), (ssize_t)sizeof grad - 1);
    ck_assert_int_eq(http_read_answer(idle, out, sizeof out), 503);
    ck_assert_ptr_nonnull(strstr(out, "\"unavailable\""));
    close(idle);
    const char *rest = body + strlen("{\"k\": 5,");
    ck_assert_int_eq(send(fd, rest, strlen(rest), MSG_NOSIGNAL), (ssize_t)strlen(rest));

    int status = http_read_answer(fd, out, sizeof out);
    close(fd);
    ck_assert_msg(status == 200, "status %d: %.300s", status, out);
    ck_assert_ptr_nonnull(strstr(out, "\"results\""));
    ck_assert(test_server_wait(&s, 10.0));
    ck_assert_int_eq(s.exit_status, 0);
    char *log = test_server_log(&s);
    ck_assert_ptr_nonnull(strstr(log, "shutting down"));
    free(log);
    test_server_cleanup(&s);
}
END_TEST

/* A snapshot that cannot be written answers 500 internal, naming the path. */
START_TEST(snapshot_failure_is_internal)
{
    struct test_server s;
    test_server_prepare(&s);
    free(testutil_write_file(s.dir, "file", "x", 1));
    char config[2048];
    snprintf(config, sizeof config,
             "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},"
             " \"data_dir\": \"%s/file/data\", \"snapshot\": {\"on_shutdown\": false},"
             " \"tables\": [" EMB_INIT "]}", s.dir);
    test_server_start(&s, config, NULL, true);
    struct reply r;
    http_do(&s, "POST", "/v1/tables/emb/snapshot", NULL, NULL, 0, NULL, &r);
    ck_reply(&r, 500, "internal");
    ck_assert_ptr_nonnull(strstr(r.body, "file/data"));
    reply_free(&r);
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    test_server_cleanup(&s);
}
END_TEST

/* A table whose file is missing is reported, and the server exits 1, before
 * anything says "listening" (a newcomer otherwise sees it listening, then
 * an error, then the stop). */
START_TEST(missing_table_file_is_reported_before_listening)
{
    struct test_server s;
    test_server_prepare(&s);
    char config[1024], cmd[2048];
    snprintf(config, sizeof config,
             "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},"
             " \"data_dir\": \"%s/data\","
             " \"tables\": [{\"name\": \"w\", \"path\": \"%s/no-such-file.vec\"}]}",
             s.dir, s.dir);
    free(testutil_write_file(s.dir, "config.json", config, strlen(config)));
    snprintf(cmd, sizeof cmd, "%s --config %s/config.json 2>&1", SERVER_BIN, s.dir);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d: %s", status, out);
    ck_assert_msg(strstr(out, "no-such-file.vec: No such file or directory") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "listening") == NULL, "%s", out);

    /* a file that only fails once read: still no "listening" before the error */
    free(testutil_write_file(s.dir, "bad.vec", "2 3\nword 1 2\n", 14));
    snprintf(config, sizeof config,
             "{\"listen\": {\"host\": \"127.0.0.1\", \"port\": 0},"
             " \"data_dir\": \"%s/data\","
             " \"tables\": [{\"name\": \"w\", \"path\": \"%s/bad.vec\"}]}",
             s.dir, s.dir);
    free(testutil_write_file(s.dir, "config.json", config, strlen(config)));
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    status = pclose(p);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d: %s", status, out);
    ck_assert_msg(strstr(out, "table w:") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "listening") == NULL, "%s", out);
    test_server_cleanup(&s);
}
END_TEST

/* Seconds until the server closes fd (recv returns 0), or -1 after limit. */
static double seconds_until_closed(int fd, double limit)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        char b;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) > 0 && recv(fd, &b, 1, 0) <= 0)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if ((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9 > limit)
            return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
}

/* limits.connection_timeout closes idle connections; limits.
 * max_connections_per_ip refuses a client's connection over the limit. */
START_TEST(connection_limits)
{
    struct test_server s;
    test_server_prepare(&s);
    /* connection_timeout 3: a must stay open through b's retries below */
    start(&s, "\"limits\": {\"connection_timeout\": 3, \"max_connections_per_ip\": 2},",
          EMB_INIT, true);
    const char health[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    char out[4096];
    int a = http_connect_send(&s, health, sizeof health - 1);
    ck_assert_int_eq(http_read_answer(a, out, sizeof out), 200);
    /* the readiness probe's connection may still count for a moment after
     * the client closed it (the server sees the close on its next poll) */
    int b = -1, status = 0;
    for (int i = 0; i < 50 && status != 200; i++) {
        if (b >= 0) {
            close(b);
            sleep_ms(100);
        }
        b = http_connect_send(&s, health, sizeof health - 1);
        status = http_read_answer(b, out, sizeof out);
    }
    ck_assert_int_eq(status, 200);
    /* a third connection from 127.0.0.1 is closed unanswered */
    int c = http_connect_send(&s, health, sizeof health - 1);
    ck_assert_int_eq(http_read_answer(c, out, sizeof out), 0);
    close(c);
    /* the idle ones time out after about three seconds */
    double t = seconds_until_closed(a, 15.0);
    ck_assert_msg(t >= 0 && t < 8.0, "idle connection not closed (%.2f s)", t);
    close(a);
    close(b);
    test_server_stop(&s, 10.0);
    ck_assert_int_eq(s.exit_status, 0);
    test_server_cleanup(&s);
}
END_TEST

static Suite *http_lifecycle_suite(void)
{
    Suite *s = suite_create("http_lifecycle");
    TCase *tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, sigterm_snapshots_and_exits_zero);
    tcase_add_test(tc, no_snapshot_when_disabled);
    tcase_add_test(tc, training_resumes_exactly_after_restart);
    tcase_add_test(tc, trainable_table_resumes_from_data_dir);
    tcase_add_test(tc, assigned_rows_on_frozen_table_survive_restart);
    tcase_add_test(tc, readyz_loading_then_ready);
    tcase_add_test(tc, sigterm_while_loading);
    tcase_add_test(tc, periodic_snapshots);
    tcase_add_test(tc, debug_log_line_per_request);
    tcase_add_test(tc, bad_table_exits_nonzero);
    tcase_add_test(tc, sigterm_finishes_requests_in_flight);
    tcase_add_test(tc, snapshot_failure_is_internal);
    tcase_add_test(tc, missing_table_file_is_reported_before_listening);
    tcase_add_test(tc, connection_limits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(http_lifecycle_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
