/* route.c - see route.h. The table below is every endpoint of API.md. */
#include "route.h"

#include <stdio.h>
#include <string.h>

static const struct route routes[] = {
    {ROUTE_HEALTHZ, "GET", "/healthz", ACCESS_OPEN, false},
    {ROUTE_READYZ, "GET", "/readyz", ACCESS_OPEN, false},
    {ROUTE_METRICS, "GET", "/metrics", ACCESS_OPEN, false},
    {ROUTE_TABLES, "GET", "/v1/tables", ACCESS_READ, false},
    {ROUTE_TABLE, "GET", "/v1/tables/{t}", ACCESS_READ, true},
    {ROUTE_LOOKUP, "POST", "/v1/tables/{t}/lookup", ACCESS_READ, true},
    {ROUTE_SIMILARITY, "POST", "/v1/tables/{t}/similarity", ACCESS_READ, true},
    {ROUTE_NEIGHBORS, "POST", "/v1/tables/{t}/neighbors", ACCESS_READ, true},
    {ROUTE_GRADIENTS, "POST", "/v1/tables/{t}/gradients", ACCESS_WRITE, true},
    {ROUTE_ROWS, "PUT", "/v1/tables/{t}/rows", ACCESS_WRITE, true},
    {ROUTE_DELETE_ROWS, "DELETE", "/v1/tables/{t}/rows", ACCESS_WRITE, true},
    {ROUTE_SNAPSHOT, "POST", "/v1/tables/{t}/snapshot", ACCESS_WRITE, true},
    {ROUTE_TOKENS, "GET", "/v1/tables/{t}/tokens", ACCESS_READ, true},
    /* the page is open so it can ask for the read token; its API calls are not */
    {ROUTE_EXPLORER, "GET", "/", ACCESS_OPEN, false},
    {ROUTE_EXPLORER_ASSET, "GET", "/explorer/{t}", ACCESS_OPEN, false}, /* {t}: a file name */
    {ROUTE_CLUSTER, "GET", "/v1/cluster", ACCESS_READ, false},
};
#define NROUTES (sizeof routes / sizeof routes[0])

bool route_valid_table_name(const char *name, size_t len)
{
    if (len == 0 || len > TABLE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alnum = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
            return false;
    }
    return true;
}

/* Matches path[0..len) against pattern; the {t} segment, when present, is
 * checked and copied to table. */
static bool match_path(const char *pattern, const char *path, size_t len,
                       char table[TABLE_NAME_MAX + 1])
{
    const char *hole = strstr(pattern, "{t}");
    if (hole == NULL)
        return strlen(pattern) == len && memcmp(pattern, path, len) == 0;

    size_t prefix = (size_t)(hole - pattern);
    const char *suffix = hole + 3;
    size_t suffix_len = strlen(suffix);
    if (len < prefix + suffix_len || memcmp(path, pattern, prefix) != 0 ||
        memcmp(path + len - suffix_len, suffix, suffix_len) != 0)
        return false;
    const char *name = path + prefix;
    size_t name_len = len - prefix - suffix_len;
    if (!route_valid_table_name(name, name_len))
        return false;
    memcpy(table, name, name_len);
    table[name_len] = '\0';
    return true;
}

static bool method_matches(const char *route_method, const char *method)
{
    if (strcmp(route_method, method) == 0)
        return true;
    /* HEAD is GET without the body; libmicrohttpd drops the body for us */
    return strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0;
}

/* Appends a route's methods to the Allow list being built. */
static void allow_add(char *allow, size_t allow_len, const char *method)
{
    size_t used = strlen(allow);
    const char *sep = used ? ", " : "";
    if (strcmp(method, "GET") == 0)
        snprintf(allow + used, allow_len - used, "%sGET, HEAD", sep);
    else
        snprintf(allow + used, allow_len - used, "%s%s", sep, method);
}

enum route_match_result route_match(const char *method, const char *url,
                                    const struct route **out,
                                    char table[TABLE_NAME_MAX + 1], char *allow,
                                    size_t allow_len)
{
    size_t len = strcspn(url, "?");
    bool path_exists = false;
    if (allow_len > 0)
        allow[0] = '\0';
    for (size_t i = 0; i < NROUTES; i++) {
        char name[TABLE_NAME_MAX + 1];
        if (!match_path(routes[i].pattern, url, len, name))
            continue;
        if (method_matches(routes[i].method, method)) {
            *out = &routes[i];
            if (routes[i].has_table)
                memcpy(table, name, strlen(name) + 1);
            else
                table[0] = '\0';
            return ROUTE_FOUND;
        }
        path_exists = true;
        if (allow_len > 0)
            allow_add(allow, allow_len, routes[i].method);
    }
    *out = NULL;
    return path_exists ? ROUTE_METHOD_NOT_ALLOWED : ROUTE_NOT_FOUND;
}

const struct route *route_by_id(enum route_id id)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (routes[i].id == id)
            return &routes[i];
    return NULL;
}

const char *route_label(enum route_id id)
{
    const struct route *r = route_by_id(id);
    return r ? r->pattern : "unmatched";
}
