/* json.h - strict JSON: an RFC 8259 validator of our own over the raw bytes,
 * and a reader of the validated bytes in place.
 *
 * cJSON alone accepts trailing bytes, duplicate keys, invalid UTF-8 and
 * "\u0000" (which silently truncates a string), so every request body goes
 * through json_validate first. Messages name the byte offset.
 *
 * Request bodies are then read in place with the json_value functions below:
 * a value is the span of its bytes, arrays are walked element by element,
 * so reading a body costs no memory per element (a cJSON tree costs about
 * 40 bytes of nodes per byte of "[0,0,0,..."). json_parse (cJSON) stays for
 * callers that want a tree of a small document. */
#ifndef PROTO_JSON_H
#define PROTO_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

struct cJSON;

/* Deepest nesting of arrays and objects a request may use: lookups of up to
 * REQUEST_MAX_DIMS (32) dims plus the body object and a grads level. */
#define JSON_MAX_DEPTH 40

/* Most keys one object may hold: the decoded keys of the open objects are
 * kept for the duplicate check, so without a bound an object of many short
 * keys would cost several times its bytes. */
#define JSON_MAX_KEYS 4096

/* Checks text[0..len) against the RFC 8259 grammar with these extra rules:
 * one value and nothing but whitespace after it, no duplicate key in any
 * object (compared after unescaping), strings valid UTF-8 (no overlongs,
 * surrogates, code points over U+10FFFF or truncated sequences), \u escapes
 * paired correctly for surrogates, nesting at most max_depth, numbers at
 * most 63 characters (cJSON would silently cut longer ones). Returns
 * STATUS_OK, STATUS_INVALID_ARGUMENT for a string holding \u0000, or
 * STATUS_INVALID_JSON, with err naming the byte offset. text need not be
 * NUL-terminated. An object of more than JSON_MAX_KEYS keys is
 * STATUS_INVALID_ARGUMENT. Thread-safe; allocates only for the keys of the
 * objects open at a time. */
enum status_code json_validate(const char *text, size_t len, size_t max_depth,
                               char *err, size_t errlen);

/* json_validate with the problem's byte offset in *at and what is wrong
 * there in what[whatlen] ("expected ',' or '}' in an object"), for callers
 * that name the place their own way (a config file's line and column). */
enum status_code json_validate_where(const char *text, size_t len, size_t max_depth,
                                     size_t *at, char *what, size_t whatlen);

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

/* ---- reading validated text in place ----
 *
 * These functions read text that json_validate accepted. On any other
 * bytes they stay inside the span they are given and terminate (the
 * request pre-scan of cost.h relies on that), but what they answer is then
 * meaningless. Thread-safe, no allocation. */

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY,
                 JSON_OBJECT };

/* One value: its bytes p[0..len), from its first byte ('[', '"', '-', 't'...)
 * to its last. Borrowed from the text, which must outlive it. */
struct json_value {
    const char *p;
    size_t len;
};

/* A position inside an array or object, between its members. */
struct json_iter {
    const char *p, *end;
};

/* The single value of text[0..len) (whitespace around it skipped); false
 * when there is none. */
bool json_root(const char *text, size_t len, struct json_value *out);

enum json_type json_type_of(struct json_value v);

/* "an array", "an object", "a string", "a number", "true", "false", "null":
 * for messages ("expected an integer id, got a string"). */
const char *json_type_name(enum json_type t);

/* Starts walking the members of an array or object v; false when v is
 * neither. */
bool json_iter_begin(struct json_iter *it, struct json_value v);

/* The next element of an array; false at its end. */
bool json_array_next(struct json_iter *it, struct json_value *elem);

/* The next member of an object: the key (a string value, quotes included)
 * and the value; false at its end. */
bool json_object_next(struct json_iter *it, struct json_value *key, struct json_value *val);

/* Elements of array v (0 when v is not an array). O(bytes of v). */
size_t json_array_count(struct json_value v);

/* The number v as strtod reads it (JSON numbers are at most 63 characters
 * after json_validate). */
double json_number(struct json_value v);

/* Decodes string v (quotes included) into out, which must hold v.len
 * bytes (a decoded string is never longer than its JSON text), and returns
 * the decoded length. Not NUL-terminated. */
size_t json_string_decode(struct json_value v, char *out);

/* Most bytes of a client's text that an error message quotes. */
#define JSON_QUOTE_MAX 48

/* Bytes of s[0..n) to quote in a message: at most JSON_QUOTE_MAX, cut at
 * the start of a UTF-8 character so the message stays valid UTF-8. */
int json_quote_len(const char *s, size_t n);

/* True when string v decodes to exactly the bytes of lit (shorter than 40
 * bytes: the words and keys of the API). */
bool json_string_is(struct json_value v, const char *lit);

#endif
