/* error.c - names and descriptions for enum core_err. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const messages[] = {
#define CORE_ERR_MSG(name, msg) msg,
    CORE_ERRNO_MAP(CORE_ERR_MSG)
#undef CORE_ERR_MSG
};

static const char *const names[] = {
#define CORE_ERR_NAME(name, msg) #name,
    CORE_ERRNO_MAP(CORE_ERR_NAME)
#undef CORE_ERR_NAME
};

const char *core_strerror(int err)
{
    if (err < 0 || err >= CORE_ERR_COUNT)
        return "unknown error";
    return messages[err];
}

const char *core_errname(int err)
{
    if (err < 0 || err >= CORE_ERR_COUNT)
        return "UNKNOWN";
    return names[err];
}

int core_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}
