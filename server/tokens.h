/* tokens.h - GET /v1/tables/{t}/tokens?prefix=&limit=: the tokens of a
 * table that start with a prefix, in token order, for completion (API.md,
 * "Explorer"). Answered from the vocabulary's sorted index (built when the
 * table was loaded): two binary searches, then at most `limit` tokens. */
#ifndef SERVER_TOKENS_H
#define SERVER_TOKENS_H

#include "handlers.h"

/* Bounds of the client's limit; outside them the answer is 400. */
#define TOKENS_LIMIT_DEFAULT 20
#define TOKENS_LIMIT_MAX 1000

/* The handler of ROUTE_TOKENS (route, auth and table already checked).
 * Query: prefix (bytes, UTF-8, default "": every token), limit (1 to
 * TOKENS_LIMIT_MAX, default TOKENS_LIMIT_DEFAULT); anything else is 400. A
 * table without a vocabulary answers 404 not_found. Any thread. */
void tokens_handle(const struct handler_ctx *c, struct answer *a);

#endif
