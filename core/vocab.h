/* vocab.h - token <-> id map. Tokens are exact byte strings (UTF-8 expected,
 * not required), ids are dense from 0 in insertion order. Open addressing
 * over one arena of token bytes; built once by a loader, then read-only, so
 * any number of threads may call the lookups concurrently. An optional
 * sorted index (vocab_build_index) answers prefix queries for completion. */
#ifndef CORE_VOCAB_H
#define CORE_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vocab;

/* Creates an empty vocabulary sized for about `hint` tokens (0 is fine).
 * Returns CORE_OK or CORE_ENOMEM. Free with vocab_free. */
int vocab_new(struct vocab **out, size_t hint);

/* Frees v and its tokens; NULL is a no-op. */
void vocab_free(struct vocab *v);

/* Appends tok[0..len) with the next id (written to *id when id is non-NULL).
 * Returns CORE_OK, CORE_EEXISTS (already present; *id gets the existing id),
 * CORE_EINVAL (len 0 or over VOCAB_MAX_TOKEN_BYTES, or holding '\n' or
 * '\r'), CORE_ETOOBIG (2^31-1 tokens already), CORE_ENOMEM. */
#define VOCAB_MAX_TOKEN_BYTES 4096
int vocab_add(struct vocab *v, const char *tok, size_t len, int64_t *id);

/* Returns the id of tok[0..len), or -1 when absent. */
int64_t vocab_find(const struct vocab *v, const char *tok, size_t len);

/* Returns the token of id (not NUL-terminated; *len receives its length), or
 * NULL when id is out of range. The pointer lives as long as v. */
const char *vocab_token(const struct vocab *v, int64_t id, size_t *len);

/* Number of tokens. */
int64_t vocab_size(const struct vocab *v);

/* Builds the sorted index that vocab_prefix_range reads: every id ordered by
 * its token's bytes (memcmp order, a shorter token before its extensions;
 * for UTF-8 this is code point order). O(n log n) time, 4 bytes per token.
 * Call once the last token is added (table_new does); a later vocab_add
 * drops the index. Returns CORE_OK or CORE_ENOMEM (v is unchanged then). */
int vocab_build_index(struct vocab *v);

/* True once vocab_build_index has run (and no token was added since). */
bool vocab_has_index(const struct vocab *v);

/* The tokens that start with prefix[0..len) (every token for len 0) are the
 * positions [*first, *first + *count) of the sorted index, in token order.
 * Two binary searches, no allocation. Returns CORE_OK, or CORE_EINVAL when
 * the index is not built. */
int vocab_prefix_range(const struct vocab *v, const char *prefix, size_t len, int64_t *first,
                       int64_t *count);

/* The id at position pos of the sorted index, or -1 when pos is outside
 * [0, vocab_size) or the index is not built. */
int64_t vocab_sorted_id(const struct vocab *v, int64_t pos);
/* Bytes of the longest token (0 when empty): bounds what an answer naming
 * tokens can take. */
size_t vocab_max_len(const struct vocab *v);

/* Reads a vocabulary file: one token per line ("\n" or "\r\n"), no blank
 * lines, no duplicates. Errors name the file and line in err. */
int vocab_load_file(struct vocab **out, const char *path, char *err, size_t errlen);

/* Writes one token per line to an open stream; CORE_EIO on write failure.
 * Tokens holding '\n' or '\r' are refused at vocab_add, so the file reads
 * back. */
int vocab_write(const struct vocab *v, void *FILE_stream);

#endif
