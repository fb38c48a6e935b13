/* http_client.c - see http_client.h. */
#include "http_client.h"

#include <arpa/inet.h>
#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define START_TIMEOUT_S 60.0 /* sanitizer builds on a busy machine are slow */

/* Servers started and not yet stopped, killed at exit whatever happens;
 * only by the process that started them (Check's forked test children
 * inherit the atexit handler but must leave a shared server running). */
static pid_t live[16];
static pid_t owner;

static void kill_live(void)
{
    if (getpid() != owner)
        return;
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
    }
}

static void track(pid_t pid, bool add)
{
    static bool registered;
    if (!registered) {
        owner = getpid();
        atexit(kill_live);
        registered = true;
    }
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (add && live[i] == 0) {
            live[i] = pid;
            return;
        }
        if (!add && live[i] == pid) {
            live[i] = 0;
            return;
        }
    }
}

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

void test_server_prepare(struct test_server *s)
{
    memset(s, 0, sizeof *s);
    s->pid = -1;
    s->dir = testutil_tmpdir();
}

char *test_server_log(const struct test_server *s)
{
    char *log = testutil_read_file(s->log_path, NULL);
    return log ? log : strdup("");
}

static void spawn(struct test_server *s, const char *const *env)
{
    pid_t pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* the server dies with the test process, even on a failed assert */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
        if (fd < 0)
            _exit(126);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
        for (size_t i = 0; env != NULL && env[i] != NULL; i++)
            putenv((char *)env[i]);
        execl(SERVER_BIN, SERVER_BIN, "--config", s->config_path, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    track(pid, true);
}

/* Polls the log for "listening on http://HOST:PORT", or for "accepting
 * connections on http://HOST:PORT", the line a server may print before its
 * tables are loaded (and "listening" only once they are). */
static bool read_port(struct test_server *s)
{
    static const char *const lines[] = {"accepting connections on http://",
                                        "listening on http://"};
    char *log = test_server_log(s);
    const char *p = NULL, *after = NULL;
    bool found = false;
    for (size_t i = 0; i < 2 && p == NULL; i++) {
        p = strstr(log, lines[i]);
        after = p ? p + strlen(lines[i]) : NULL;
    }
    if (p != NULL) {
        const char *colon = strchr(after, ':');
        if (colon != NULL && sscanf(colon + 1, "%d", &s->port) == 1 && s->port > 0) {
            snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
            found = true;
        }
    }
    free(log);
    return found;
}

static bool exited(struct test_server *s)
{
    int status;
    if (s->pid > 0 && waitpid(s->pid, &status, WNOHANG) == s->pid) {
        track(s->pid, false);
        s->pid = -1;
        s->exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return true;
    }
    return false;
}

static void fail_with_log(struct test_server *s, const char *what)
{
    char *log = test_server_log(s);
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        track(s->pid, false);
        s->pid = -1;
    }
    ck_abort_msg("%s; server log:\n%s", what, log);
}

static long readyz_status(struct test_server *s)
{
    CURL *c = curl_easy_init();
    char url[128];
    snprintf(url, sizeof url, "%s/readyz", s->base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

void test_server_start(struct test_server *s, const char *config_json, const char *const *env,
                       bool wait_ready)
{
    ck_assert_ptr_nonnull(s->dir);
    char *p = testutil_write_file(s->dir, "config.json", config_json, strlen(config_json));
    snprintf(s->config_path, sizeof s->config_path, "%s", p);
    free(p);
    snprintf(s->log_path, sizeof s->log_path, "%s/server.log", s->dir);
    s->port = 0;
    /* a restart must not read the previous run's "listening on" line before
     * the child truncates the log */
    unlink(s->log_path);
    spawn(s, env);

    double deadline = now_s() + START_TIMEOUT_S;
    while (!read_port(s)) {
        if (exited(s))
            fail_with_log(s, "the server exited before listening");
        if (now_s() > deadline)
            fail_with_log(s, "no \"listening on\" line in time");
        sleep_ms(10);
    }
    while (wait_ready && readyz_status(s) != 200) {
        if (exited(s))
            fail_with_log(s, "the server exited before it was ready");
        if (now_s() > deadline)
            fail_with_log(s, "/readyz did not answer 200 in time");
        sleep_ms(10);
    }
}

void test_server_stop(struct test_server *s, double timeout_s)
{
    if (s->pid <= 0)
        return;
    double start = now_s();
    kill(s->pid, SIGTERM);
    while (!exited(s)) {
        if (now_s() - start > timeout_s) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            track(s->pid, false);
            s->pid = -1;
            s->exit_status = 128 + SIGKILL;
            break;
        }
        sleep_ms(5);
    }
    s->stop_seconds = now_s() - start;
}

bool test_server_wait(struct test_server *s, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    while (s->pid > 0 && !exited(s)) {
        if (now_s() > deadline)
            return false;
        sleep_ms(10);
    }
    return true;
}

void test_server_cleanup(struct test_server *s)
{
    test_server_stop(s, 10.0);
    /* a sanitizer report in the server's log fails the suite even when
     * every answer looked right (leaks show only at exit) */
    char *log = test_server_log(s);
    bool clean = strstr(log, "Sanitizer") == NULL && strstr(log, "runtime error:") == NULL;
    testutil_rmtree(s->dir);
    s->dir = NULL;
    if (!clean)
        ck_abort_msg("the server's log has a sanitizer report:\n%s", log);
    free(log);
}

/* ---- libcurl ---------------------------------------------------------- */

struct sink {
    char *data;
    size_t len, cap;
};

/* Grows by doubling: an exact realloc per 16 KB piece copies a big answer
 * quadratically (under ASan, whose realloc always copies, a 35 MB answer
 * took over a minute). */
static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *k = ud;
    size_t n = size * nmemb;
    if (k->len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap : 4096;
        while (cap < k->len + n + 1)
            cap *= 2;
        char *p = realloc(k->data, cap);
        if (p == NULL)
            return 0;
        k->data = p;
        k->cap = cap;
    }
    memcpy(k->data + k->len, ptr, n);
    k->len += n;
    k->data[k->len] = '\0';
    return n;
}

struct source {
    const char *data;
    size_t len, off, chunk;
};

static size_t source_read(char *buf, size_t size, size_t nitems, void *ud)
{
    struct source *src = ud;
    size_t n = size * nitems;
    if (n > src->chunk)
        n = src->chunk;
    if (n > src->len - src->off)
        n = src->len - src->off;
    memcpy(buf, src->data + src->off, n);
    src->off += n;
    return n;
}

static void perform(const struct test_server *s, CURL *c, const char *method, const char *path,
                    struct curl_slist *hdrs, struct reply *out)
{
    char url[1024];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    struct sink body = {0}, head = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink_write);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &head);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    CURLcode rc = curl_easy_perform(c);
    ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->body = body.data ? body.data : strdup("");
    out->len = body.len;
    out->headers = head.data ? head.data : strdup("");
}

void http_do(const struct test_server *s, const char *method, const char *path,
             const char *content_type, const char *body, size_t len,
             const char *const *headers, struct reply *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    struct curl_slist *hdrs = NULL;
    char ct[256];
    if (content_type != NULL) {
        snprintf(ct, sizeof ct, "Content-Type: %s", content_type);
        hdrs = curl_slist_append(hdrs, ct);
    } else {
        hdrs = curl_slist_append(hdrs, "Content-Type:"); /* none at all */
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++)
        hdrs = curl_slist_append(hdrs, headers[i]);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    perform(s, c, method, path, hdrs, out);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
}

void http_get(const struct test_server *s, const char *path, struct reply *out)
{
    http_do(s, "GET", path, NULL, NULL, 0, NULL, out);
}

void http_json(const struct test_server *s, const char *method, const char *path,
               const char *body, struct reply *out)
{
    http_do(s, method, path, "application/json", body, strlen(body), NULL, out);
}

void http_chunked(const struct test_server *s, const char *path, const char *body, size_t len,
                  size_t chunk, struct reply *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    struct source src = {body, len, 0, chunk};
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, source_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &src);
    perform(s, c, "POST", path, hdrs, out);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
}

int http_connect_send(const struct test_server *s, const char *bytes, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(send(fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
    return fd;
}

/* True when out holds a whole answer: headers plus Content-Length bytes. */
static bool answer_complete(const char *out, size_t got)
{
    const char *end = strstr(out, "\r\n\r\n");
    if (end == NULL)
        return false;
    const char *cl = strcasestr(out, "\r\nContent-Length:");
    if (cl == NULL || cl > end)
        return true;
    size_t want = (size_t)strtoul(cl + 17, NULL, 10);
    return got >= (size_t)(end + 4 - out) + want;
}

int http_read_answer(int fd, char *out, size_t outlen)
{
    size_t got = 0;
    out[0] = '\0';
    double deadline = now_s() + 60.0;
    while (got + 1 < outlen && now_s() < deadline && !answer_complete(out, got)) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t r = recv(fd, out + got, outlen - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        out[got] = '\0';
    }
    int status = 0;
    if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    return status;
}

int http_raw(const struct test_server *s, const char *bytes, size_t len, char *out,
             size_t outlen)
{
    int fd = http_connect_send(s, bytes, len);
    int status = http_read_answer(fd, out, outlen);
    close(fd);
    return status;
}

char *reply_header(const struct reply *r, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *end = strstr(line, "\r\n");
        if (end == NULL)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(end - v));
        }
        line = *end ? end + 2 : end;
    }
    return NULL;
}

void reply_free(struct reply *r)
{
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}

char *reply_error_code(const struct reply *r)
{
    cJSON *root = cJSON_Parse(r->body);
    char *code = NULL;
    cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
    cJSON *c = cJSON_GetObjectItemCaseSensitive(err, "code");
    cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
    if (cJSON_IsString(c) && cJSON_IsString(m) && m->valuestring[0] != '\0')
        code = strdup(c->valuestring);
    cJSON_Delete(root);
    return code;
}

void reply_check(const struct reply *r, long status, const char *code, const char *file,
                 int line)
{
    ck_assert_msg(r->status == status, "%s:%d: status %ld, want %ld; body: %.400s", file, line,
                  r->status, status, r->body);
    if (code == NULL)
        return;
    char *got = reply_error_code(r);
    ck_assert_msg(got != NULL && strcmp(got, code) == 0, "%s:%d: error code %s, want %s; body: %.400s",
                  file, line, got ? got : "(none)", code, r->body);
    free(got);
}

void write_npy_f32(const char *dir, const char *name, const float *v, int64_t rows, int64_t dim)
{
    char header[128];
    int n = snprintf(header, sizeof header,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)rows, (long long)dim);
    /* magic (6) + version (2) + length (2) + header, padded to 64 with '\n' */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    size_t size = 10 + hlen + (size_t)(rows * dim) * sizeof(float);
    char *file = malloc(size);
    ck_assert_ptr_nonnull(file);
    memcpy(file, "\x93NUMPY\x01\x00", 8);
    file[8] = (char)(hlen & 0xff);
    file[9] = (char)(hlen >> 8);
    memcpy(file + 10, header, (size_t)n);
    memset(file + 10 + n, ' ', pad);
    file[10 + hlen - 1] = '\n';
    memcpy(file + 10 + hlen, v, (size_t)(rows * dim) * sizeof(float));
    free(testutil_write_file(dir, name, file, size));
    free(file);
}
