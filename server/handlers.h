/* handlers.h - the endpoints of API.md: each turns a checked request (route,
 * auth, content type and size already passed in http.c) into an answer.
 *
 * A handler reads the body, calls proto to parse it and core to compute,
 * and writes the answer into a buffer that http.c hands to libmicrohttpd
 * without copying. Handlers run on a libmicrohttpd thread or, when
 * handler_is_heavy says so, on the work pool; they never block on the
 * network. */
#ifndef SERVER_HANDLERS_H
#define SERVER_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "registry.h"
#include "response.h"
#include "route.h"
#include "server.h"
#include "status.h"

struct MHD_Connection;

/* A header an answer adds; both strings are borrowed and must outlive the
 * answer (string literals, or data built into the binary). */
struct answer_header {
    const char *name, *value;
};
#define ANSWER_HEADERS_MAX 6

/* What goes back to the client. body is owned until http.c steals it. */
struct answer {
    unsigned http;                 /* HTTP status */
    enum status_code code;         /* STATUS_OK or the error code */
    struct buf body;
    const char *content_type;      /* static string */
    char shape[RESPONSE_SHAPE_MAX]; /* X-Embedding-Shape, "" when none */
    char allow[64];                /* Allow for 405, "" when none */
    struct answer_header headers[ANSWER_HEADERS_MAX]; /* more headers (caching) */
    size_t nheaders;
};

/* One request as the handlers see it; everything is borrowed for the call. */
struct handler_ctx {
    struct server *srv;
    enum route_id route;
    struct registry_entry *entry; /* the table's entry for table routes */
    struct table *table;          /* loaded table for table routes */
    const char *body;             /* NUL-terminated; len excludes the NUL */
    size_t len;
    bool binary;                  /* client accepts application/octet-stream */
    const char *url;              /* the request's path, without the query */
    struct MHD_Connection *conn;  /* for query arguments and request headers */
    /* The body is application/octet-stream (lookup, gradients, rows only;
     * proto/binary.h), with these headers: NUL-terminated, NULL when
     * absent, valid while the request lives. */
    bool binary_body;
    const char *shape_header;     /* X-Embedding-Shape */
    const char *lr_header;        /* X-Embedding-Lr */
    const char *min_seq_header;   /* X-Embedding-Min-Seq, or NULL */
    /* Writes complete later, on the journal's thread: the handler calls
     * defer(io) before handing the write over (and sets *deferred), and
     * complete(io) once the answer is written into the answer it was given.
     * After defer the caller must not touch the answer or the request. */
    void (*defer)(void *io);
    void (*complete)(void *io);
    void *io;
    bool *deferred;
};

/* Initializes a to an empty 200 JSON answer. */
void answer_init(struct answer *a);
/* Frees what a still owns. */
void answer_deinit(struct answer *a);

/* Replaces a's body with the JSON error of code and message (printf-style)
 * and sets the status from proto's table. */
void answer_error(struct answer *a, enum status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds a header to a (ignored past ANSWER_HEADERS_MAX); an answer_error
 * afterwards drops them. */
void answer_header(struct answer *a, const char *name, const char *value);

/* Runs the endpoint of c->route, filling a, or (writes) deferring it: see
 * handler_ctx.defer. */
void handler_run(const struct handler_ctx *c, struct answer *a);

/* True when the request is worth moving off the libmicrohttpd thread:
 * snapshots (disk), and requests whose cost (proto/cost.h: body to parse,
 * rows to gather or search, answer to write) passes about a millisecond.
 * Decided before parsing, from a pre-scan of the body that counts its
 * arrays without allocating. */
bool handler_is_heavy(const struct handler_ctx *c);

#endif
