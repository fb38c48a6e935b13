/* bench_http.h - the keep-alive HTTP/1.1 client the HTTP benchmarks share
 * (bench/durability.c, bench/cluster.c): one request at a time on a
 * connection to 127.0.0.1, answers read whole by their Content-Length. Any
 * socket failure ends the benchmark. Header-only: each benchmark is one
 * program. */
#ifndef BENCH_HTTP_H
#define BENCH_HTTP_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void bench_http_die(const char *what)
{
    fprintf(stderr, "bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* A new connection to 127.0.0.1:port with Nagle off. */
static int bench_connect(int port)
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
static int bench_roundtrip(int fd, const char *req, size_t len, char *buf, size_t cap)
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
