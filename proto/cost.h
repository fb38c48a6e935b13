/* cost.h - what a request costs, computed in one place from its sizes: the
 * ids it sends, the floats and bytes of its answer, the rows it reads or
 * searches.
 *
 * Two callers. The parsers of request.h count a body's arrays first, then
 * ask request_cost_check before anything is allocated for them, so a
 * request over max_batch or max_answer_bytes is refused (413) having cost
 * no more than its body. The server asks request_cost_heavy whether a
 * request goes to the work pool; it decides before parsing, from
 * request_prescan, a pass over the raw body that counts the same arrays
 * without allocating. Pure functions of their arguments: any thread. */
#ifndef PROTO_COST_H
#define PROTO_COST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "request.h"

enum request_kind {
    REQUEST_LOOKUP,     /* ids or tokens of any shape */
    REQUEST_BAGS,       /* lookup with "bags" */
    REQUEST_SIMILARITY, /* pairs */
    REQUEST_NEIGHBORS,
    REQUEST_GRADIENTS,
    REQUEST_ROWS,
};

/* A request's sizes, as the parsers count them or request_prescan finds
 * them in the raw body. */
struct request_size {
    enum request_kind kind;
    const char *field; /* the key the ids came in, for messages ("ids", "tokens",
                          "bags", "pairs", "vectors"); static */
    uint64_t ids;      /* ids or tokens (every bag's together; 2 per pair);
                          neighbours: the queries (ids, tokens or vectors) */
    uint64_t bags;     /* bags, empty ones included */
    uint64_t arrays;   /* lookups: arrays of the input, each a pair of brackets in
                          the answer (0 for a scalar) */
    uint64_t k;        /* neighbours: k */
    uint64_t body_bytes;
};

struct request_cost {
    uint64_t ids_in;       /* what max_batch bounds: ids, plus every bag */
    uint64_t floats_out;   /* floats in the answer (rows x dim, scores, hits) */
    uint64_t answer_bytes; /* upper bound on the answer's length */
    uint64_t work;         /* floats read or written in the table: rows x dim
                              gathered or updated, queries x rows x dim searched */
    uint64_t body_bytes;   /* bytes to parse */
};

/* The cost of a request of size s against the table and limits of lim
 * (its binary flag picks the answer form of lookups). Saturates at
 * UINT64_MAX rather than overflowing. */
void request_cost(const struct request_size *s, const struct request_limits *lim,
                  struct request_cost *out);

/* STATUS_OK when c is within lim's max_batch and max_answer_bytes, else
 * STATUS_PAYLOAD_TOO_LARGE with a message naming the field, the counts
 * and the limit ("bags: 3 bags and 9 ids count 12 toward max_batch 8"). */
enum status_code request_cost_check(const struct request_cost *c, const struct request_size *s,
                                    const struct request_limits *lim, char *err, size_t errlen);

/* True when a request of cost c should not run on an HTTP thread: more
 * than about a millisecond of parsing, table work or answer writing. */
bool request_cost_heavy(const struct request_cost *c);

/* Fills *out with the sizes of body[0..len) for a request of kind (a
 * lookup body with "bags" becomes REQUEST_BAGS) without validating or
 * allocating; O(len). On a body that is not valid JSON the counts mean
 * nothing, but the parser then refuses it at once. */
void request_prescan(enum request_kind kind, const char *body, size_t len,
                     struct request_size *out);

/* request_prescan for a binary body (proto/binary.h) of len bytes: int64
 * ids, then for gradients and rows dim float32 values per id. */
void request_prescan_binary(enum request_kind kind, size_t len, int64_t dim,
                            struct request_size *out);

/* The sizes of a parsed lookup, for parsers that do not count as the JSON
 * ones do (binary bodies): request_cost_check them after parsing. */
void request_size_of_lookup(const struct lookup_request *r, struct request_size *out);

#endif
