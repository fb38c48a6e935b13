/* fuzz_config.c - libFuzzer target: config_parse_json on arbitrary bytes over
 * the defaults, then config_validate, then config_deinit (leaks count). */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c = {0};
    char err[512];
    if (config_init(&c) != 0)
        abort();
    if (config_parse_json(&c, (const char *)data, size, "/fuzz/base", "fuzz.json", err,
                          sizeof(err)) == 0)
        config_validate(&c, err, sizeof(err));
    config_deinit(&c);
    return 0;
}
