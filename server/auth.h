/* auth.h - bearer tokens for reads and writes (API.md).
 *
 * A read route needs the read token or the write token when a read token is
 * configured; a write route needs the write token when one is configured,
 * and otherwise the read token when only that one is (a client trusted with
 * nothing must not be able to write where reading is closed). Tokens are
 * compared in constant time. The struct is filled at startup and then only
 * read, from any thread. */
#ifndef SERVER_AUTH_H
#define SERVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "route.h"

struct auth {
    const char *read_token;  /* NULL or "": reads open */
    const char *write_token; /* NULL or "": see above */
};

/* True when the Authorization header value (NULL when absent) grants
 * access. Borrowed pointers only; no allocation. */
bool auth_allows(const struct auth *a, enum route_access access, const char *authorization);

/* True when the Authorization header value starts with "Bearer " (any
 * case), the only scheme this service takes. */
bool auth_is_bearer(const char *authorization);

/* Compares a[0..alen) with b[0..blen) in time that depends only on the
 * lengths, not on where they differ. */
bool auth_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
