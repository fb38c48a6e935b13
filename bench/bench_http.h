/* bench_http.h - what the HTTP benchmarks share (bench/durability.c,
 * bench/cluster.c, bench/keyed.c): starting the real server (or any
 * program) with its log in a file, and a keep-alive HTTP/1.1 client: one
 * request at a time on a connection to 127.0.0.1, answers read whole by
 * their Content-Length. Any failure ends the benchmark. Header-only: each
 * benchmark is one program. */
#ifndef BENCH_HTTP_H
#define BENCH_HTTP_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

static inline void bench_http_die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Starts argv[0] (looked up in PATH) with stdout and stderr in log; it is
 * killed when the benchmark dies. */
static inline pid_t bench_spawn(const char *log, char *const argv[])
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        bench_http_die("fork");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        dup2(2, 1);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Starts the server bin with --config config, its log in log, and waits
 * (up to 60 s) until it has said both where it listens and that it is
 * ready; returns its port. */
static inline int bench_server_start(const char *bin, const char *config, const char *log,
                                     pid_t *pid)
{
    char *argv[] = {(char *)bin, "--config", (char *)config, NULL};
    *pid = bench_spawn(log, argv);
    int port = 0;
    for (int i = 0; i < 3000; i++) {
        usleep(20000);
        FILE *l = fopen(log, "r");
        char line[512];
        int ready = 0;
        while (l && fgets(line, sizeof line, l)) {
            const char *p = strstr(line, "listening on http://127.0.0.1:");
            if (p)
                port = atoi(p + strlen("listening on http://127.0.0.1:"));
            ready |= strstr(line, "ready:") != NULL;
        }
        if (l)
            fclose(l);
        if (ready && port)
            return port;
    }
    fprintf(stderr, "bench: %s did not get ready; see %s\n", bin, log);
    exit(1);
}

/* A request with a body: the head (method, path, Content-Type, extra header
 * lines each ending in \r\n, Content-Length) and body[0..blen), malloc'd. */
static inline char *bench_request(const char *method, const char *path, const char *type,
                           const void *body, size_t blen, const char *extra, size_t *len)
{
    char *req = malloc(blen + 1024);
    if (req == NULL)
        bench_http_die("malloc");
    *len = (size_t)snprintf(req, 1024,
                            "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                            "%sContent-Length: %zu\r\n\r\n", method, path, type, extra, blen);
    memcpy(req + *len, body, blen);
    *len += blen;
    return req;
}

/* A new connection to 127.0.0.1:port with Nagle off. */
static inline int bench_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        bench_http_die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Sends req[0..len) and reads one answer into buf[cap] (NUL-terminated);
 * returns its status. */
static inline int bench_roundtrip(int fd, const char *req, size_t len, char *buf, size_t cap)
{
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, 0);
        if (n <= 0)
            bench_http_die("send");
        off += (size_t)n;
    }
    size_t have = 0;
    char *end = NULL;
    while (end == NULL) {
        ssize_t n = recv(fd, buf + have, cap - have - 1, 0);
        if (n <= 0)
            bench_http_die("recv");
        have += (size_t)n;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    const char *cl = strcasestr(buf, "Content-Length:");
    size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
    size_t want = (size_t)(end + 4 - buf) + body;
    while (have < want) {
        ssize_t n = recv(fd, buf + have, cap - have - 1, 0);
        if (n <= 0)
            bench_http_die("recv");
        have += (size_t)n;
    }
    buf[have] = '\0';
    return atoi(buf + 9);
}

#endif
