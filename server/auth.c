/* auth.c - see auth.h. */
#include "auth.h"

#include <string.h>
#include <strings.h>

bool auth_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* walk the expected token's whole length whatever the candidate holds,
     * so timing tells nothing about the position of the first difference */
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++) {
        unsigned char ca = i < alen ? (unsigned char)a[i] : 0;
        diff |= (unsigned char)(ca ^ (unsigned char)b[i]);
    }
    return diff == 0;
}

static bool token_set(const char *t)
{
    return t != NULL && t[0] != '\0';
}

bool auth_is_bearer(const char *authorization)
{
    return authorization != NULL && strncasecmp(authorization, "Bearer ", 7) == 0;
}

/* The token part of "Bearer <token>" (scheme case-insensitive), or NULL. */
static const char *bearer_token(const char *authorization)
{
    if (!auth_is_bearer(authorization))
        return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    return t;
}

static bool token_matches(const char *given, const char *expected)
{
    return given != NULL && token_set(expected) &&
           auth_equal(given, strlen(given), expected, strlen(expected));
}

bool auth_allows(const struct auth *a, enum route_access access, const char *authorization)
{
    if (access == ACCESS_OPEN)
        return true;
    const char *given = bearer_token(authorization);
    if (access == ACCESS_READ) {
        if (!token_set(a->read_token))
            return true;
        return token_matches(given, a->read_token) || token_matches(given, a->write_token);
    }
    if (token_set(a->write_token))
        return token_matches(given, a->write_token);
    if (token_set(a->read_token))
        return token_matches(given, a->read_token);
    return true;
}
