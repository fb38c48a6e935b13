/* request.h - request bodies parsed into plain structs, strictly.
 *
 * A handler is: look up the table (server) -> parse the body here with the
 * table's limits -> request_resolve() tokens to ids against the table ->
 * compute in core -> write the answer with response.h. Each parser runs the
 * strict JSON pass (json.h) first, then checks every field: ids are exact
 * integers (1 and 1.0 are the same JSON number; 1.5, true and "3" are
 * invalid_argument) in [0, num_embeddings) (else out_of_range), arrays are
 * rectangular, floats finite and within float32 range, counts within
 * max_batch (else payload_too_large). Unknown keys are rejected
 * (invalid_argument), so a typo never passes silently. Every message names
 * the field and index: "ids[3][1]: 1.5 is not an integer".
 *
 * Ownership: a parser fills a caller's struct, which owns every array in it
 * until its *_deinit; on failure the struct is left zeroed (deinit is still
 * safe). Nothing points into the body or into cJSON after a parser returns.
 * All functions are thread-safe (no shared state). */
#ifndef PROTO_REQUEST_H
#define PROTO_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "similarity.h"
#include "status.h"
#include "table.h"

/* Most dimensions of an ids/tokens input; deeper inputs are invalid_argument. */
#define REQUEST_MAX_DIMS 32

/* What a parser checks against: the table's shape and the configured
 * limits, and what the answer will be made of (cost.h bounds its size). */
struct request_limits {
    int64_t num_embeddings; /* ids must be in [0, N) */
    int64_t dim;            /* D: width of grads and vectors */
    size_t max_batch;       /* most ids per request (pairs count twice, bags once each) */
    size_t max_k;           /* largest k for neighbors (keep <= TOPK_MAX) */
    uint64_t max_answer_bytes; /* bound on an answer's length; 0 = none */
    bool binary;            /* the answer of a lookup is raw float32 */
    size_t max_token_len;   /* the table's longest token in bytes; 0 = no vocabulary */
    bool keyed;             /* ids are int64 keys (read exactly), not rows in [0, N) */
};

/* Ids or tokens as the client sent them, flattened in row-major order, with
 * the input's shape (ndim 0: a single scalar value). */
struct request_ids {
    bool is_tokens;
    size_t n;                       /* product of shape (1 for a scalar) */
    size_t ndim;
    size_t shape[REQUEST_MAX_DIMS];
    /* n ids, owned. For ids: parsed and range-checked. For tokens: filled by
     * request_resolve. */
    int64_t *ids;
    /* tokens only: n pointers to (not NUL-terminated) UTF-8 bytes of lens[i]
     * bytes, all inside one owned arena; NULL for ids. */
    const char **tokens;
    size_t *lens;
    char *arena;
};

/* POST /v1/tables/{t}/lookup: {"ids": X} | {"tokens": X} with X of any
 * shape, or {"bags": [[...], ...], "mode", "per_sample_weights"}. Bags hold
 * ids, or tokens when their elements are strings (all of one kind). */
struct lookup_request {
    bool is_bags;
    /* plain: X; bags: every bag's ids concatenated (ndim 1, n = total) */
    struct request_ids in;
    size_t nbags;
    size_t *offsets;           /* nbags + 1 entries, bags only, owned */
    enum bag_mode mode;        /* default BAG_MEAN, as nn.EmbeddingBag */
    float *per_sample_weights; /* in.n floats or NULL (only with BAG_SUM) */
    uint64_t min_seq;          /* "min_seq": the seq the read waits for, 0 = none */
};

/* POST /v1/tables/{t}/similarity: {"pairs": [[a, b], ...], "metric"}. */
struct similarity_request {
    struct request_ids pairs; /* shape [npairs, 2], n = 2 * npairs */
    size_t npairs;            /* >= 1 */
    enum metric metric;       /* default METRIC_COSINE */
    uint64_t min_seq;         /* as in lookup_request */
};

/* POST /v1/tables/{t}/neighbors: {"ids": [...]} | {"tokens": [...]} |
 * {"vectors": [[D floats], ...]}, "k" (default 10), "metric". */
struct neighbors_request {
    bool by_vectors;
    struct request_ids queries; /* ids/tokens, ndim 1; n = 0 with vectors */
    float *vectors;             /* nq * dim floats with vectors, owned */
    size_t nq;                  /* queries, >= 1 */
    size_t k;                   /* in [1, max_k] */
    enum metric metric;
    uint64_t min_seq;           /* as in lookup_request */
};

/* POST /v1/tables/{t}/gradients: {"ids": X, "grads": G, "lr"}, G of X's
 * shape plus [D]. "tokens" may stand for "ids" (resolved without oov). */
struct gradients_request {
    struct request_ids ids; /* any shape, n >= 1 */
    float *grads;           /* ids.n * dim floats, row-major, owned */
    bool grads_borrowed;    /* binary.h: grads point into the body, not freed */
    bool has_lr;
    double lr;              /* finite, > 0, when has_lr */
};

/* PUT /v1/tables/{t}/rows: {"ids": [...], "vectors": [[D floats], ...]} or
 * "tokens" for "ids". */
struct rows_request {
    struct request_ids ids; /* ndim 1, n >= 1 */
    float *vectors;         /* ids.n * dim floats, owned */
    bool vectors_borrowed;  /* binary.h: vectors point into the body, not freed */
};

/* DELETE /v1/tables/{t}/rows (keyed tables): {"ids": [keys...]}. */
struct delete_request {
    struct request_ids ids; /* ndim 1, n >= 1 */
};

/* Each parser: body[0..len) (need not be NUL-terminated) -> *out. Returns
 * STATUS_OK or the code of the first problem (invalid_json,
 * invalid_argument, out_of_range, payload_too_large, internal on memory),
 * with a message naming the field and index in err. */
enum status_code request_parse_lookup(const char *body, size_t len,
                                      const struct request_limits *lim,
                                      struct lookup_request *out,
                                      char *err, size_t errlen);
enum status_code request_parse_similarity(const char *body, size_t len,
                                          const struct request_limits *lim,
                                          struct similarity_request *out,
                                          char *err, size_t errlen);
enum status_code request_parse_neighbors(const char *body, size_t len,
                                         const struct request_limits *lim,
                                         struct neighbors_request *out,
                                         char *err, size_t errlen);
enum status_code request_parse_gradients(const char *body, size_t len,
                                         const struct request_limits *lim,
                                         struct gradients_request *out,
                                         char *err, size_t errlen);
enum status_code request_parse_rows(const char *body, size_t len,
                                    const struct request_limits *lim,
                                    struct rows_request *out,
                                    char *err, size_t errlen);
enum status_code request_parse_delete(const char *body, size_t len,
                                      const struct request_limits *lim,
                                      struct delete_request *out,
                                      char *err, size_t errlen);

/* Turns tokens into ids with t's vocabulary (a no-op for ids): allow_oov
 * true for reads (the table's oov id stands in for unknown tokens), false
 * for writes. Returns STATUS_OK, STATUS_INVALID_ARGUMENT when t has no
 * vocabulary, or STATUS_UNKNOWN_TOKEN naming the token and its index
 * ("tokens[1][0]: unknown token \"qux\""). field names the key in
 * messages ("tokens", "pairs", "bags"). Reads t's vocabulary only. */
enum status_code request_resolve(const struct table *t, struct request_ids *r,
                                 bool allow_oov, const char *field,
                                 char *err, size_t errlen);

/* request_resolve for a lookup: plain inputs as above, bags naming
 * "bags[b][j]" in messages; always allow_oov (a read). */
enum status_code request_resolve_lookup(const struct table *t, struct lookup_request *r,
                                        char *err, size_t errlen);

/* Writes "field[i][j]..." (just "field" for a scalar) naming flat index
 * `flat` of r's shape into out[outlen], truncating; returns out. */
char *request_index_name(const struct request_ids *r, const char *field, size_t flat,
                         char *out, size_t outlen);

/* Frees what a parser allocated and zeroes the struct; safe on a zeroed or
 * already deinitialized struct. */
void request_ids_deinit(struct request_ids *r);
void request_lookup_deinit(struct lookup_request *r);
void request_similarity_deinit(struct similarity_request *r);
void request_neighbors_deinit(struct neighbors_request *r);
void request_gradients_deinit(struct gradients_request *r);
void request_rows_deinit(struct rows_request *r);
void request_delete_deinit(struct delete_request *r);

#endif
