/* response.h - answers and errors written straight into a struct buf.
 *
 * Answers are written, not built: no tree, one pass of buf_* appends with
 * floats printed by f32fmt (shortest text that reads back to the identical
 * float32). Writers append to b and never check each call; the caller tests
 * b->failed once at the end (limit reached or out of memory -> answer 500).
 * Every writer is thread-safe for distinct buffers and only reads its
 * arguments. JSON layouts are those of API.md; openapi.yaml describes them. */
#ifndef PROTO_RESPONSE_H
#define PROTO_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "optim.h"
#include "similarity.h"
#include "topk.h"
#include "status.h"
#include "table.h"
#include "vocab.h"

/* Content types the server sets for the two answer forms. */
#define RESPONSE_JSON_TYPE "application/json"
#define RESPONSE_BINARY_TYPE "application/octet-stream"
/* Header carrying the shape of a binary answer. */
#define RESPONSE_SHAPE_HEADER "X-Embedding-Shape"
/* Longest shape text: REQUEST_MAX_DIMS + 1 numbers of up to 20 digits. */
#define RESPONSE_SHAPE_MAX 720

/* Longest text of response_format_double, with its NUL. */
#define RESPONSE_DOUBLE_MAX 32

/* Writes the shortest "%.*g" text that strtod reads back to d ("0.001",
 * "1e-08"; "inf", "-inf", "nan" for non-finite values, which callers keep
 * out of JSON) into out[RESPONSE_DOUBLE_MAX]; returns its length. For
 * configuration values and messages, not for the hot float32 path. */
size_t response_format_double(double d, char *out);

/* {"error":{"code":"<name of code>","message":"<message>"}}; message is
 * JSON-escaped (it may quote client bytes). */
void response_error(struct buf *b, enum status_code code, const char *message);

/* {"status":"<status>"} for /healthz and /readyz. */
void response_status(struct buf *b, const char *status);

/* A lookup answer: {"shape":[s0,...,D],"embeddings":...} where embeddings
 * nests rows (prod(shape) rows of dim floats, dense) as the input's shape
 * plus one level of D floats, as embedding(torch.tensor(X)).tolist(). ndim 0
 * (a scalar input) answers one flat row. Also the bags answer, with shape
 * {nbags} and ndim 1. */
void response_lookup(struct buf *b, const size_t *shape, size_t ndim, size_t dim,
                     const float *rows);

/* Fills out with rows [first, first + n) of a lookup answer (n * dim
 * floats); false stops the answer. */
typedef bool (*response_rows_fn)(void *ctx, size_t first, size_t n, float *out);

/* response_lookup with the rows fetched a chunk at a time (about 256 KB)
 * instead of from one array, so an answer costs its text and not its
 * floats too. False when fetch refused or memory ran out (b->failed is
 * then set). */
bool response_lookup_rows(struct buf *b, const size_t *shape, size_t ndim, size_t dim,
                          response_rows_fn fetch, void *ctx);

/* The binary form: n floats as raw little-endian float32 (host order on
 * little-endian machines, byte-swapped otherwise). */
void response_binary(struct buf *b, const float *v, size_t n);

/* The X-Embedding-Shape value for shape plus dim, "2,5,300" (just "300" for
 * a scalar input), NUL-terminated into out[outlen]; returns its length, or
 * 0 when outlen is too small (RESPONSE_SHAPE_MAX always suffices). */
size_t response_shape_text(char *out, size_t outlen, const size_t *shape, size_t ndim,
                           size_t dim);

/* {"scores":[s,...]}: n floats. A non-finite score is written as null. */
void response_scores(struct buf *b, const float *scores, size_t n);

/* {"results":[[{"id":12,"token":"queen","score":0.87},...],...]}: nq lists;
 * query q's hits are hits[q * k .. q * k + counts[q]). "token" appears only
 * when vocab is non-NULL (JSON-escaped). */
void response_neighbors(struct buf *b, const struct topk_hit *hits, const size_t *counts,
                        size_t nq, size_t k, const struct vocab *vocab);

/* {"tokens":[{"id":7,"token":"gold"},...]}: the positions [first, first +
 * count) of v's sorted index (vocab_prefix_range), in token order; tokens
 * JSON-escaped. Positions outside the index are skipped. */
void response_tokens(struct buf *b, const struct vocab *v, int64_t first, int64_t count);

/* <info> of API.md for t: name, num_embeddings, embedding_dim, dtype,
 * frozen, padding_idx (or null), max_norm (or null), norm_type,
 * scale_grad_by_freq, optimizer (opt's name and hyperparameters, or null
 * when opt is NULL), vocab, version, seq (the last log record applied). Doubles are printed with the shortest
 * text that reads back to the same double; norm_type inf as "inf". */
void response_table_info(struct buf *b, const struct table *t,
                         const struct optim_config *opt);

/* {"tables":[<info>,...]} for n tables; opts[i] is table i's optimizer or
 * NULL (opts itself may be NULL: every optimizer null). */
void response_table_list(struct buf *b, const struct table *const *tables,
                         const struct optim_config *const *opts, size_t n);

/* {"version":n,"rows":m,"seq":s}: the answer of gradients and rows; seq is
 * the write's position in the table's log. */
void response_write_result(struct buf *b, uint64_t version, size_t rows, uint64_t seq);

/* {"path":"<path>","version":n,"seq":s}: the answer of snapshot. */
void response_snapshot(struct buf *b, const char *path, uint64_t version, uint64_t seq);

#endif
