/* status.h - the API's error codes and their HTTP statuses, in one table.
 *
 * Every answer the service gives maps to one `enum status_code`; its JSON
 * name ("invalid_json") and HTTP status (400) come from STATUS_CODE_MAP and
 * nowhere else. core's `enum core_err` maps onto these codes here too, so a
 * handler turns any failure into an answer with one call. */
#ifndef PROTO_STATUS_H
#define PROTO_STATUS_H

/* X(ENUM_SUFFIX, "json_name", http_status). OK is the success entry. */
#define STATUS_CODE_MAP(X)                                       \
    X(OK, "ok", 200)                                             \
    X(INVALID_JSON, "invalid_json", 400)                         \
    X(INVALID_ARGUMENT, "invalid_argument", 400)                 \
    X(OUT_OF_RANGE, "out_of_range", 400)                         \
    X(UNAUTHORIZED, "unauthorized", 401)                         \
    X(UNKNOWN_TOKEN, "unknown_token", 404)                       \
    X(NOT_FOUND, "not_found", 404)                               \
    X(METHOD_NOT_ALLOWED, "method_not_allowed", 405)             \
    X(TABLE_FROZEN, "table_frozen", 409)                         \
    X(PAYLOAD_TOO_LARGE, "payload_too_large", 413)               \
    X(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415)     \
    X(INTERNAL, "internal", 500)                                 \
    X(NOT_READY, "not_ready", 503)                               \
    X(UNAVAILABLE, "unavailable", 503)                           \
    X(UNKNOWN_KEY, "unknown_key", 404)                           \
    X(CAPACITY_EXCEEDED, "capacity_exceeded", 507)

enum status_code {
#define STATUS_CODE_ENUM(name, json, http) STATUS_##name,
    STATUS_CODE_MAP(STATUS_CODE_ENUM)
#undef STATUS_CODE_ENUM
    STATUS_CODE_COUNT
};

/* Size of an err buffer that holds any message proto writes (longer
 * messages are truncated at a UTF-8 character boundary, never mid-char). */
#define STATUS_ERR_MAX 256

/* Returns the HTTP status of code (500 for a value outside the enum). */
int status_http(enum status_code code);

/* Returns the static snake_case name of code ("invalid_json"; "internal" for
 * a value outside the enum). */
const char *status_name(enum status_code code);

/* Maps a core error (enum core_err, any int accepted) to an API code:
 * OK->ok, INVAL/UNSUPPORTED/EXISTS->invalid_argument, RANGE->out_of_range,
 * NOTFOUND->not_found, FROZEN->table_frozen, TOOBIG->payload_too_large,
 * NOMEM/IO/FORMAT and unknown values->internal. A handler that knows better
 * (an unknown token is NOTFOUND in core) picks the code itself. */
enum status_code status_from_core(int core_err);

#endif
