/* error.h - the one error enum of core/, built from an X-macro as libuv's
 * UV_ERRNO_MAP. Every fallible core function returns one of these (0 is
 * success); functions that can say more fill a caller's (char *err, size_t
 * errlen) buffer with a sentence naming the file, line, offset or index. */
#ifndef CORE_ERROR_H
#define CORE_ERROR_H

#include <stddef.h>

#define CORE_ERRNO_MAP(X)                                              \
    X(OK, "success")                                                   \
    X(NOMEM, "out of memory")                                          \
    X(INVAL, "invalid argument")                                       \
    X(RANGE, "id out of range")                                        \
    X(IO, "i/o error")                                                 \
    X(FORMAT, "malformed file")                                        \
    X(UNSUPPORTED, "unsupported file or setting")                      \
    X(FROZEN, "table is frozen")                                       \
    X(NOTFOUND, "not found")                                           \
    X(EXISTS, "already exists")                                        \
    X(TOOBIG, "size over a limit")                                     \
    X(UNAVAILABLE, "the write could not be made durable")

enum core_err {
#define CORE_ERR_ENUM(name, msg) CORE_E##name,
    CORE_ERRNO_MAP(CORE_ERR_ENUM)
#undef CORE_ERR_ENUM
    CORE_ERR_COUNT
};

#define CORE_OK CORE_EOK

/* Returns a static, never-NULL description of err (any int is accepted). */
const char *core_strerror(int err);

/* Returns the enum name without prefix ("RANGE"), static, for logs/tests. */
const char *core_errname(int err);

/* Formats into err[errlen] like snprintf when err is non-NULL and errlen > 0;
 * returns code, so callers can write `return core_fail(err, n, CORE_EIO, ...)`. */
int core_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
