/* explorer.h - the explorer page: GET / and GET /explorer/<file>, the
 * page's HTML, scripts and style sheet, built into the binary from
 * server/explorer/ (server/explorer/assets.cmake). The page talks only to
 * the public API; these routes are open (the page asks for the read token
 * itself), every API call it makes is checked as usual. */
#ifndef SERVER_EXPLORER_H
#define SERVER_EXPLORER_H

#include <stddef.h>

#include "handlers.h"

/* One file of the page, as built in. All of it is static data. */
struct explorer_asset {
    const char *name;          /* "index.html", "app.js" */
    const unsigned char *data;
    size_t len;
    const char *etag;          /* strong validator, quoted: "\"1f2e...\"" */
};

/* The generated table (explorer_assets.c in the build tree). */
extern const struct explorer_asset explorer_assets[];
extern const size_t explorer_asset_count;

/* The asset called name, or NULL. */
const struct explorer_asset *explorer_find(const char *name);

/* The handler of ROUTE_EXPLORER (answers index.html) and
 * ROUTE_EXPLORER_ASSET (the file the path names, 404 for others). Sets
 * Content-Type from the file's extension, ETag, Cache-Control: no-cache
 * (revalidated, so a new binary's page is seen at once) and answers 304 to
 * a matching If-None-Match. HEAD answers the same headers without the body
 * (libmicrohttpd drops it). Any thread. */
void explorer_handle(const struct handler_ctx *c, struct answer *a);

#endif
