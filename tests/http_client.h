/* http_client.h - what the black-box suites (tests/test_http_*.c) share:
 * start the real embedding-server binary on 127.0.0.1 with an ephemeral
 * port and a temporary config, talk to it over HTTP with libcurl or raw
 * bytes, and stop it.
 *
 * The child gets PR_SET_PDEATHSIG(SIGKILL), and every started server is
 * also killed at exit, so a failing test (Check forks and exits) never
 * leaves a server behind. Single-threaded use, as the suites are. */
#ifndef TESTS_HTTP_CLIENT_H
#define TESTS_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct test_server {
    pid_t pid;
    char *dir;         /* temp dir: config, tables, log, data; removed by stop */
    char log_path[512];
    char config_path[512];
    int port;
    char base[64];     /* "http://127.0.0.1:PORT" */
    int exit_status;   /* set by test_server_stop: exit code, or 128+signal */
    double stop_seconds; /* time from SIGTERM to exit */
};

/* Creates a temp dir for a server; files (tables) can be written there
 * before starting. Fails the current test on error. */
void test_server_prepare(struct test_server *s);

/* Writes config_json (a printf format; "%s" placeholders are filled with
 * the temp dir by the caller as needed) to dir/config.json and starts
 * SERVER_BIN --config it with extra environment entries env (NULL-ended,
 * "NAME=value", may be NULL). Waits for the "listening on" line (parses the
 * port) and, when wait_ready, for /readyz to answer 200. Fails the test on
 * timeout (with the server's log in the message). */
void test_server_start(struct test_server *s, const char *config_json, const char *const *env,
                       bool wait_ready);

/* Sends SIGTERM and waits up to timeout_s for the exit; then SIGKILL.
 * Fills exit_status and stop_seconds. Does not remove the dir. */
void test_server_stop(struct test_server *s, double timeout_s);

/* Waits up to timeout_s for the server to exit by itself; true when it
 * did (exit_status is then set). */
bool test_server_wait(struct test_server *s, double timeout_s);

/* Stops the server if running and removes its temp dir. */
void test_server_cleanup(struct test_server *s);

/* The server's log so far (malloc'd, NUL-terminated; "" when none). */
char *test_server_log(const struct test_server *s);

struct reply {
    long status;
    char *body;     /* NUL-terminated, malloc'd */
    size_t len;
    char *headers;  /* raw header block, NUL-terminated */
};

/* One request with libcurl. body may be NULL (no body); content_type NULL
 * sends none (for bodies, curl's default is suppressed). headers: extra
 * "Name: value" lines, NULL-ended, may be NULL. Fails the test when the
 * connection fails. */
void http_do(const struct test_server *s, const char *method, const char *path,
             const char *content_type, const char *body, size_t len,
             const char *const *headers, struct reply *out);

/* Shorthands: GET, and a JSON POST/PUT of a NUL-terminated body. */
void http_get(const struct test_server *s, const char *path, struct reply *out);
void http_json(const struct test_server *s, const char *method, const char *path,
               const char *body, struct reply *out);

/* A JSON body sent with Transfer-Encoding: chunked in chunks of chunk
 * bytes. */
void http_chunked(const struct test_server *s, const char *path, const char *body, size_t len,
                  size_t chunk, struct reply *out);

/* Sends raw bytes on a new connection and reads one answer (until it is
 * complete by its Content-Length, the server closes, or 60 s pass); returns
 * the status code of the response line (0 when none) and copies what was
 * read into out (NUL-terminated). */
int http_raw(const struct test_server *s, const char *bytes, size_t len, char *out,
             size_t outlen);

/* The two halves of http_raw: connect and send (returns the socket), and
 * read one answer (returns its status, 0 when none; the socket stays open
 * for more requests, the caller closes it). */
int http_connect_send(const struct test_server *s, const char *bytes, size_t len);
int http_read_answer(int fd, char *out, size_t outlen);

/* The value of header name (case-insensitive) in r, malloc'd, or NULL. */
char *reply_header(const struct reply *r, const char *name);

void reply_free(struct reply *r);

/* The "code" string of an error body ({"error":{"code":...}}), malloc'd,
 * or NULL when the body is not an error. */
char *reply_error_code(const struct reply *r);

/* Asserts status and, when code is non-NULL, the error code. */
#define ck_reply(r, st, code) reply_check((r), (st), (code), __FILE__, __LINE__)
void reply_check(const struct reply *r, long status, const char *code, const char *file,
                 int line);

/* Writes a float32 C-order .npy of rows x dim values to dir/name. */
void write_npy_f32(const char *dir, const char *name, const float *v, int64_t rows, int64_t dim);

#endif
