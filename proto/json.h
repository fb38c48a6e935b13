/* json.h - strict JSON: an RFC 8259 validator of our own over the raw bytes,
 * then cJSON on a NUL-terminated copy.
 *
 * cJSON alone accepts trailing bytes, duplicate keys, invalid UTF-8 and
 * "\u0000" (which silently truncates a string), so every request body goes
 * through json_validate first. Messages name the byte offset. */
#ifndef PROTO_JSON_H
#define PROTO_JSON_H

#include <stddef.h>

#include "status.h"

struct cJSON;

/* Deepest nesting of arrays and objects a request may use: lookups of up to
 * REQUEST_MAX_DIMS (32) dims plus the body object and a grads level. */
#define JSON_MAX_DEPTH 40

/* Checks text[0..len) against the RFC 8259 grammar with these extra rules:
 * one value and nothing but whitespace after it, no duplicate key in any
 * object (compared after unescaping), strings valid UTF-8 (no overlongs,
 * surrogates, code points over U+10FFFF or truncated sequences), \u escapes
 * paired correctly for surrogates, nesting at most max_depth, numbers at
 * most 63 characters (cJSON would silently cut longer ones). Returns
 * STATUS_OK, STATUS_INVALID_ARGUMENT for a string holding \u0000, or
 * STATUS_INVALID_JSON, with err naming the byte offset. text need not be
 * NUL-terminated. Thread-safe; allocates only for objects' keys. */
enum status_code json_validate(const char *text, size_t len, size_t max_depth,
                               char *err, size_t errlen);

/* Length of the well-formed UTF-8 sequence starting at p[0] (avail >= 1
 * bytes readable): 1-4, or 0 when it is an overlong, a surrogate, past
 * U+10FFFF, a stray continuation byte or truncated (Unicode Table 3-7). */
size_t json_utf8_len(const unsigned char *p, size_t avail);

/* json_validate(text, len, JSON_MAX_DEPTH) then cJSON_ParseWithLengthOpts on
 * a NUL-terminated copy with the true length. On STATUS_OK *out is the root,
 * owned by the caller (cJSON_Delete); otherwise *out is NULL and err says
 * why. STATUS_INTERNAL when memory runs out. */
enum status_code json_parse(const char *text, size_t len, struct cJSON **out,
                            char *err, size_t errlen);

#endif
