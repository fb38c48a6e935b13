/* explorer.c - see explorer.h. The files are answered from the binary's
 * own copy: no disk access, no configuration, works offline. */
#include "explorer.h"

#include <microhttpd.h>
#include <string.h>

/* Content types by extension; the page uses nothing else. */
static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
};

/* The page may load its own files and call its own origin, nothing else:
 * no inline script, no other host, no framing. */
#define PAGE_POLICY                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "    \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

#define ASSET_PREFIX "/explorer/"

static const char *type_of(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        size_t e = strlen(types[i].ext);
        if (n > e && strcmp(name + n - e, types[i].ext) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

const struct explorer_asset *explorer_find(const char *name)
{
    for (size_t i = 0; i < explorer_asset_count; i++)
        if (strcmp(explorer_assets[i].name, name) == 0)
            return &explorer_assets[i];
    return NULL;
}

/* If-None-Match holds "*" or a list of validators, weak ones (W/"...")
 * matching too (RFC 9110, 13.1.2): finding the quoted tag in it is enough.
 * libmicrohttpd 0.9.75 writes "Content-Length: 0" on the 304 and cannot be
 * told the omitted body's length; browsers do not update a stored
 * response's length from a 304, so the cached file stays whole. */
static bool not_modified(const struct handler_ctx *c, const struct explorer_asset *f)
{
    if (c->conn == NULL)
        return false;
    const char *inm = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm == NULL)
        return false;
    while (*inm == ' ' || *inm == '\t')
        inm++;
    return strcmp(inm, "*") == 0 || strstr(inm, f->etag) != NULL;
}

/* The file the path names, into name[64 + 1] (route.c has checked that the
 * segment is a plain name of at most 64 bytes); a query string is ignored. */
static void requested_name(const struct handler_ctx *c, char *name, size_t size)
{
    size_t n = strlen(ASSET_PREFIX);
    const char *file = "index.html";
    if (c->route == ROUTE_EXPLORER_ASSET)
        file = c->url != NULL && strncmp(c->url, ASSET_PREFIX, n) == 0 ? c->url + n : "";
    size_t len = strcspn(file, "?");
    if (len >= size)
        len = size - 1;
    memcpy(name, file, len);
    name[len] = '\0';
}

void explorer_handle(const struct handler_ctx *c, struct answer *a)
{
    char name[TABLE_NAME_MAX + 1];
    requested_name(c, name, sizeof name);
    const struct explorer_asset *f = explorer_find(name);
    if (f == NULL) {
        answer_error(a, STATUS_NOT_FOUND, "the explorer has no file named \"%s\"", name);
        return;
    }
    a->content_type = type_of(f->name);
    answer_header(a, MHD_HTTP_HEADER_ETAG, f->etag);
    answer_header(a, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    answer_header(a, "X-Content-Type-Options", "nosniff");
    if (strcmp(a->content_type, types[0].type) == 0) {
        answer_header(a, "Content-Security-Policy", PAGE_POLICY);
        answer_header(a, "Referrer-Policy", "no-referrer");
    }
    if (not_modified(c, f)) {
        a->http = MHD_HTTP_NOT_MODIFIED;
        return;
    }
    buf_append(&a->body, f->data, f->len);
}
