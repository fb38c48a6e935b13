/* status.c - the one place where error codes meet HTTP statuses. */
#include "status.h"

#include <stdbool.h>

#include "error.h"

static const struct {
    const char *name;
    int http;
} codes[STATUS_CODE_COUNT] = {
#define STATUS_CODE_ROW(name, json, http) {json, http},
    STATUS_CODE_MAP(STATUS_CODE_ROW)
#undef STATUS_CODE_ROW
};

/* core's errors as API codes. Memory, i/o and file-format failures are the
 * service's fault at request time (files are checked at startup), hence
 * internal; EXISTS and UNSUPPORTED only arise from what a client asked. */
static const enum status_code from_core[CORE_ERR_COUNT] = {
    [CORE_EOK] = STATUS_OK,
    [CORE_ENOMEM] = STATUS_INTERNAL,
    [CORE_EINVAL] = STATUS_INVALID_ARGUMENT,
    [CORE_ERANGE] = STATUS_OUT_OF_RANGE,
    [CORE_EIO] = STATUS_INTERNAL,
    [CORE_EFORMAT] = STATUS_INTERNAL,
    [CORE_EUNSUPPORTED] = STATUS_INVALID_ARGUMENT,
    [CORE_EFROZEN] = STATUS_TABLE_FROZEN,
    [CORE_ENOTFOUND] = STATUS_NOT_FOUND,
    [CORE_EEXISTS] = STATUS_INVALID_ARGUMENT,
    [CORE_ETOOBIG] = STATUS_PAYLOAD_TOO_LARGE,
    [CORE_EUNAVAILABLE] = STATUS_UNAVAILABLE,
};

static bool valid(enum status_code code)
{
    return (int)code >= 0 && code < STATUS_CODE_COUNT;
}

int status_http(enum status_code code)
{
    return valid(code) ? codes[code].http : 500;
}

const char *status_name(enum status_code code)
{
    return valid(code) ? codes[code].name : "internal";
}

enum status_code status_from_core(int core_err)
{
    if (core_err < 0 || core_err >= CORE_ERR_COUNT)
        return STATUS_INTERNAL;
    return from_core[core_err];
}
