/* binary.h - the binary request bodies of API.md ("Binary request bodies",
 * v2): Content-Type application/octet-stream, little-endian int64 ids then
 * float32 values, the shape in the X-Embedding-Shape header and a gradient
 * step's learning rate in X-Embedding-Lr.
 *
 *   lookup     body = prod(shape) int64 ids, row-major; shape d1,...,dk is
 *              the ids' shape (NULL: a flat list of len / 8 ids; "" a
 *              single id, a 0-d input)
 *   gradients  shape n,D; body = n int64 ids then n x D float32 gradients
 *   rows       shape n,D; body = n int64 ids then n x D float32 vectors
 *
 * Each parser fills the same struct as its JSON twin in request.h, so the
 * handler path after parsing does not know which form came, and checks the
 * same things with the same codes: a malformed shape, a body length that
 * does not match it (the message gives both numbers), a D that is not the
 * table's, an id out of range, a non-finite float: 400; more ids than
 * max_batch: 413. Nothing is applied unless all of it is valid, as for JSON.
 *
 * One pass: ids are range-checked while they are copied into the owned id
 * array; floats are checked finite in place and, on a little-endian machine
 * with the body suitably aligned (malloc'd bodies are), used in place: the
 * struct's float array then borrows the body (grads_borrowed /
 * vectors_borrowed set), which must outlive the struct and is never written
 * through it. Otherwise they are copied (byte-swapped where needed).
 * Thread-safe: no shared state. */
#ifndef PROTO_BINARY_H
#define PROTO_BINARY_H

#include <stddef.h>

#include "request.h"
#include "status.h"

/* The media type of binary bodies, and the headers that describe them. */
#define BINARY_MEDIA_TYPE "application/octet-stream"
#define BINARY_SHAPE_HEADER "X-Embedding-Shape"
#define BINARY_LR_HEADER "X-Embedding-Lr"

/* The two headers as the client sent them, NUL-terminated, NULL when
 * absent. Borrowed for the parse call only. */
struct binary_headers {
    const char *shape; /* X-Embedding-Shape */
    const char *lr;    /* X-Embedding-Lr */
};

/* Each parser: body[0..len) with the headers h -> *out, as the JSON parser
 * of request.h would fill it. Returns STATUS_OK or the first problem's code
 * (invalid_argument, out_of_range, payload_too_large, internal on memory)
 * with a message in err naming the header, field and index
 * ("ids[1][2]: id 9 is out of range [0, 5)"). On failure *out is left
 * zeroed; the request_*_deinit of request.h frees it in either case. */
enum status_code binary_parse_lookup(const char *body, size_t len,
                                     const struct binary_headers *h,
                                     const struct request_limits *lim,
                                     struct lookup_request *out, char *err, size_t errlen);
enum status_code binary_parse_gradients(const char *body, size_t len,
                                        const struct binary_headers *h,
                                        const struct request_limits *lim,
                                        struct gradients_request *out, char *err,
                                        size_t errlen);
enum status_code binary_parse_rows(const char *body, size_t len,
                                   const struct binary_headers *h,
                                   const struct request_limits *lim,
                                   struct rows_request *out, char *err, size_t errlen);

/* Reads an X-Embedding-Shape value: up to REQUEST_MAX_DIMS non-negative
 * decimal integers separated by commas, blanks allowed around each ("" is
 * the 0-d shape). Returns STATUS_OK with shape[0..*ndim) filled, or
 * STATUS_INVALID_ARGUMENT with err saying what is wrong. */
enum status_code binary_parse_shape(const char *text, size_t shape[REQUEST_MAX_DIMS],
                                    size_t *ndim, char *err, size_t errlen);

#endif
