/* server.h - the running service: configuration, tables, auth, metrics,
 * the work pool and the libmicrohttpd daemon, shared by http.c (requests),
 * handlers.c (endpoints) and main.c (lifecycle).
 *
 * main owns the struct and everything in it; it is filled before the
 * daemon starts and torn down after it stops, so request threads may read
 * every field except the atomics without locks. */
#ifndef SERVER_SERVER_H
#define SERVER_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "config.h"
#include "metrics.h"
#include "registry.h"
#include "work.h"

struct MHD_Daemon;

struct server {
    const struct config *cfg;
    struct registry tables;
    struct auth auth;
    struct metrics metrics;
    struct work_pool work;       /* heavy requests and snapshots */
    struct cluster *cluster;     /* cluster mode, or NULL (cluster.h) */
    struct MHD_Daemon *daemon;
    uint16_t port;               /* the bound port (useful with port 0) */
    _Atomic bool draining;       /* shutdown began: writes answer 503 */
};

/* Starts libmicrohttpd on cfg's host and port with the limits of the
 * config (see http.c for the threading design) and fills s->daemon and
 * s->port. Returns 0, or -1 with err saying why. Main thread. */
int http_start(struct server *s, char *err, size_t errlen);

/* Stops accepting new connections; requests in flight go on. */
void http_quiesce(struct server *s);

/* Requests begun and not yet completed. */
int64_t http_in_flight(struct server *s);

/* Closes every connection and joins libmicrohttpd's threads; safe when the
 * daemon never started. Main thread. */
void http_stop(struct server *s);

#endif
