/* tokens.c - see tokens.h. The query string is read as libmicrohttpd
 * decoded it (percent escapes undone, '+' as a space); the arguments are
 * checked as strictly as a JSON body: unknown or repeated names, NUL bytes
 * and invalid UTF-8 are refused, naming the argument. */
#include "tokens.h"

#include <microhttpd.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "vocab.h"

struct tokens_query {
    const char *prefix; /* not NUL-terminated */
    size_t prefix_len;
    int limit;
    bool seen_prefix, seen_limit;
    enum status_code sc;
    char err[STATUS_ERR_MAX];
};

/* Stops the iteration with a 400: the message is before, the client's bytes
 * what[0..what_len) (cut, made printable), then after. */
static enum MHD_Result refuse(struct tokens_query *q, const char *before, const char *what,
                              size_t what_len, const char *after)
{
    char shown[48];
    size_t n = what_len < sizeof shown - 1 ? what_len : sizeof shown - 1;
    for (size_t i = 0; i < n; i++) /* client bytes in a message stay printable ASCII */
        shown[i] = what[i] >= 0x20 && what[i] < 0x7f ? what[i] : '?';
    shown[n] = '\0';
    q->sc = STATUS_INVALID_ARGUMENT;
    snprintf(q->err, sizeof q->err, "%s%s%s", before, shown, after);
    return MHD_NO;
}

/* Byte offset of the first byte that is not well-formed UTF-8, or len. */
static size_t utf8_prefix(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        size_t k = json_utf8_len((const unsigned char *)s + i, len - i);
        if (k == 0)
            return i;
        i += k;
    }
    return len;
}

static enum MHD_Result check_prefix(struct tokens_query *q, const char *v, size_t len)
{
    if (memchr(v, '\0', len) != NULL)
        return refuse(q, "prefix: holds a NUL byte (%00)", "", 0, "");
    size_t bad = utf8_prefix(v, len);
    if (bad != len) {
        char at[32];
        int n = snprintf(at, sizeof at, "byte %zu", bad);
        return refuse(q, "prefix: not valid UTF-8 at ", at, (size_t)n, "");
    }
    q->prefix = v;
    q->prefix_len = len;
    return MHD_YES;
}

/* A plain decimal integer in 1..TOKENS_LIMIT_MAX: no sign, no spaces. */
static enum MHD_Result check_limit(struct tokens_query *q, const char *v, size_t len)
{
    static const char before[] = "limit: \"", after[] = "\" is not an integer from 1 to 1000";
    long n = 0;
    if (len == 0)
        return refuse(q, before, v, len, after);
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return refuse(q, before, v, len, after);
        n = n * 10 + (v[i] - '0');
        if (n > TOKENS_LIMIT_MAX)
            return refuse(q, before, v, len, after);
    }
    if (n < 1)
        return refuse(q, before, v, len, after);
    q->limit = (int)n;
    return MHD_YES;
}

static enum MHD_Result read_argument(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_len, const char *value, size_t value_len)
{
    (void)kind;
    struct tokens_query *q = cls;
    if (value == NULL) { /* "?prefix" without '=' is an empty value */
        value = "";
        value_len = 0;
    }
    bool *seen = NULL;
    if (key_len == 6 && memcmp(key, "prefix", 6) == 0)
        seen = &q->seen_prefix;
    else if (key_len == 5 && memcmp(key, "limit", 5) == 0)
        seen = &q->seen_limit;
    else
        return refuse(q, "unknown query argument \"", key, key_len,
                      "\" (expected prefix, limit)");
    if (*seen)
        return refuse(q, "query argument \"", key, key_len, "\" given twice");
    *seen = true;
    return seen == &q->seen_prefix ? check_prefix(q, value, value_len)
                                   : check_limit(q, value, value_len);
}

void tokens_handle(const struct handler_ctx *c, struct answer *a)
{
    struct tokens_query q = {.prefix = "", .limit = TOKENS_LIMIT_DEFAULT, .sc = STATUS_OK};
    if (c->conn != NULL)
        MHD_get_connection_values_n(c->conn, MHD_GET_ARGUMENT_KIND, read_argument, &q);
    if (q.sc != STATUS_OK) {
        answer_error(a, q.sc, "%s", q.err);
        return;
    }
    const struct vocab *v = table_vocab(c->table);
    if (v == NULL) {
        answer_error(a, STATUS_NOT_FOUND,
                     "table \"%s\" has no vocabulary, so no tokens to list; its rows have ids "
                     "0 to %lld", table_name(c->table),
                     (long long)table_num_embeddings(c->table) - 1);
        return;
    }
    int64_t first = 0, count = 0;
    if (vocab_prefix_range(v, q.prefix, q.prefix_len, &first, &count) != CORE_OK) {
        answer_error(a, STATUS_INTERNAL, "table \"%s\": its vocabulary has no sorted index",
                     table_name(c->table));
        return;
    }
    response_tokens(&a->body, v, first, count < q.limit ? count : q.limit);
}
