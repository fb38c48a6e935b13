/* fuzz_binary.c - libFuzzer harness for the binary request bodies
 * (proto/binary.c): lookup, gradients and rows with any body and any
 * X-Embedding-Shape / X-Embedding-Lr text.
 *
 * Input: one byte choosing the parser and which headers are present, then
 * "shape\nlr\n" (each line may be absent), then the body. Checks beyond "no
 * crash": an accepted request's ids are in range and its floats finite, as
 * the parsers promise, and the answer's shape agrees with its counts. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binary.h"
#include "request.h"
#include "status.h"

static const struct request_limits LIM = {
    .num_embeddings = 5, .dim = 3, .max_batch = 16, .max_k = 4, .max_answer_bytes = 4096,
    .max_token_len = 1,
};

/* Copies the next line of data[*at..n) into a malloc'd string, or NULL. */
static char *take_line(const uint8_t *data, size_t n, size_t *at)
{
    const uint8_t *nl = memchr(data + *at, '\n', n - *at);
    if (nl == NULL)
        return NULL;
    size_t len = (size_t)(nl - (data + *at));
    char *s = malloc(len + 1);
    memcpy(s, data + *at, len);
    s[len] = '\0';
    *at += len + 1;
    return s;
}

static void check_ids(const int64_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= LIM.num_embeddings)
            abort();
}

static void check_floats(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    size_t at = 1;
    char *shape = (sel & 4) ? take_line(data, size, &at) : NULL;
    char *lr = (sel & 8) ? take_line(data, size, &at) : NULL;
    struct binary_headers h = {shape, lr};
    /* the body as the server holds it: its own allocation, NUL after it */
    size_t n = size - at;
    char *body = malloc(n + 1);
    memcpy(body, data + at, n);
    body[n] = '\0';
    char err[STATUS_ERR_MAX];
    switch (sel % 3) {
    case 0: {
        struct lookup_request r = {0};
        if (binary_parse_lookup(body, n, &h, &LIM, &r, err, sizeof err) == STATUS_OK) {
            size_t count = 1;
            for (size_t d = 0; d < r.in.ndim; d++)
                count *= r.in.shape[d];
            if (count != r.in.n)
                abort();
            check_ids(r.in.ids, r.in.n);
        }
        request_lookup_deinit(&r);
        break;
    }
    case 1: {
        struct gradients_request r = {0};
        if (binary_parse_gradients(body, n, &h, &LIM, &r, err, sizeof err) == STATUS_OK) {
            check_ids(r.ids.ids, r.ids.n);
            check_floats(r.grads, r.ids.n * (size_t)LIM.dim);
            if (r.has_lr && !(isfinite(r.lr) && r.lr > 0))
                abort();
        }
        request_gradients_deinit(&r);
        break;
    }
    default: {
        struct rows_request r = {0};
        if (binary_parse_rows(body, n, &h, &LIM, &r, err, sizeof err) == STATUS_OK) {
            check_ids(r.ids.ids, r.ids.n);
            check_floats(r.vectors, r.ids.n * (size_t)LIM.dim);
        }
        request_rows_deinit(&r);
        break;
    }
    }
    free(body);
    free(shape);
    free(lr);
    return 0;
}
