/* route.h - the route table: which endpoint a method and path name, the
 * access each needs, and the label metrics count it under.
 *
 * Paths are exact ("/healthz") or templated with one table name segment
 * ("/v1/tables/{t}/lookup"; "/explorer/{t}" takes a file name of the same
 * form and has_table false). Matching never allocates; the table name is
 * copied into the caller's buffer. Read-only data: any thread. */
#ifndef SERVER_ROUTE_H
#define SERVER_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "table.h"

enum route_id {
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_TABLES,
    ROUTE_TABLE,
    ROUTE_LOOKUP,
    ROUTE_SIMILARITY,
    ROUTE_NEIGHBORS,
    ROUTE_GRADIENTS,
    ROUTE_ROWS,
    ROUTE_SNAPSHOT,
    ROUTE_TOKENS,          /* completion: a table's tokens by prefix */
    ROUTE_EXPLORER,        /* the explorer page at / */
    ROUTE_EXPLORER_ASSET,  /* its scripts and style sheet */
    ROUTE_DELETE_ROWS,     /* keyed tables: DELETE /v1/tables/{t}/rows */
    ROUTE_CLUSTER,
    ROUTE_UNMATCHED, /* 404 / 405: counted in metrics under this label */
    ROUTE_COUNT
};

/* Who may call a route: everyone, holders of the read (or write) token, or
 * holders of the write token. */
enum route_access { ACCESS_OPEN, ACCESS_READ, ACCESS_WRITE };

struct route {
    enum route_id id;
    const char *method;   /* "GET", "POST", "PUT" */
    const char *pattern;  /* also the metrics label */
    enum route_access access;
    bool has_table;       /* pattern holds {t} */
};

enum route_match_result {
    ROUTE_FOUND,
    ROUTE_NOT_FOUND,          /* no pattern matches the path */
    ROUTE_METHOD_NOT_ALLOWED, /* the path exists for other methods */
};

/* Matches method and url (path only; the query string is ignored). On
 * ROUTE_FOUND *out is the route and, for table routes, table[] holds the
 * name (validated against [A-Za-z0-9][A-Za-z0-9_.-]{0,63}; a malformed name
 * is ROUTE_NOT_FOUND). On ROUTE_METHOD_NOT_ALLOWED allow[] receives the
 * value of the Allow header ("GET, HEAD"). HEAD matches GET routes. */
enum route_match_result route_match(const char *method, const char *url,
                                    const struct route **out,
                                    char table[TABLE_NAME_MAX + 1], char *allow,
                                    size_t allow_len);

/* The route with id (for metrics and tests); NULL for ROUTE_UNMATCHED. */
const struct route *route_by_id(enum route_id id);

/* The metrics label of id ("/v1/tables/{t}/lookup", "unmatched"). */
const char *route_label(enum route_id id);

/* True when name matches [A-Za-z0-9][A-Za-z0-9_.-]{0,63}. */
bool route_valid_table_name(const char *name, size_t len);

#endif
