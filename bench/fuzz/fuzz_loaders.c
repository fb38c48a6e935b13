/* fuzz_loaders.c - libFuzzer target: the input as an embedding file, read by
 * loader_load with every explicit format and with auto-detection, and as a
 * vocabulary file. The bytes live in a memfd opened by path
 * (/proc/self/fd/N), so no file is left behind. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loader.h"
#include "matrix.h"
#include "vocab.h"

static int g_fd = -1;
static char g_path[64];

static void put_input(const uint8_t *data, size_t size)
{
    if (g_fd < 0) {
        g_fd = memfd_create("fuzz_loaders", 0);
        if (g_fd < 0)
            abort();
        snprintf(g_path, sizeof(g_path), "/proc/self/fd/%d", g_fd);
    }
    if (ftruncate(g_fd, 0) != 0 || pwrite(g_fd, data, size, 0) != (ssize_t)size)
        abort();
}

static void load_as(enum loader_format f, const char *tensor)
{
    struct loader_opts o = {.format = f, .tensor = tensor};
    struct matrix m = {0};
    struct vocab *v = NULL;
    char err[512];
    if (loader_load(g_path, &o, &m, &v, err, sizeof(err)) == 0) {
        matrix_deinit(&m);
        vocab_free(v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    put_input(data, size);
    static const enum loader_format formats[] = {
        LOADER_AUTO, LOADER_WORD2VEC, LOADER_WORD2VEC_BINARY,
        LOADER_GLOVE, LOADER_NPY, LOADER_SAFETENSORS,
    };
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
        load_as(formats[i], NULL);
    load_as(LOADER_SAFETENSORS, "weight");
    enum loader_format f;
    char err[512];
    loader_detect(g_path, &f, err, sizeof(err));
    struct vocab *v = NULL;
    if (vocab_load_file(&v, g_path, err, sizeof(err)) == 0)
        vocab_free(v);
    return 0;
}
