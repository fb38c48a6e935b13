/* loader.h - reading embedding files into a struct matrix (+ vocabulary).
 *
 * Formats: word2vec text (fastText .vec too: "<rows> <dim>" header, then
 * "<token> <dim floats>" lines), word2vec binary (same header, then token,
 * a space, dim little-endian float32, optional '\n'), GloVe text (no header),
 * numpy .npy (float32/float64/float16, C order, 2-D), safetensors
 * (F32/F16/BF16). Every malformed input is an error value whose message
 * names the file and the line (text) or byte offset (binary); nothing is
 * returned partially. Non-finite values and duplicated tokens are errors
 * (npy_load_exact, for snapshots, keeps non-finite values). */
#ifndef CORE_LOADER_H
#define CORE_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "matrix.h"
#include "vocab.h"

enum loader_format {
    LOADER_AUTO,
    LOADER_WORD2VEC,
    LOADER_WORD2VEC_BINARY,
    LOADER_GLOVE,
    LOADER_NPY,
    LOADER_SAFETENSORS,
    LOADER_SNAPSHOT,
};

/* Called now and then during long loads; done/total in bytes (total may be 0
 * when unknown). Runs on the loading thread. */
typedef void (*loader_progress_cb)(void *ud, uint64_t done, uint64_t total);

struct loader_opts {
    enum loader_format format;  /* LOADER_AUTO detects */
    const char *tensor;         /* safetensors: tensor name, or NULL */
    const char *vocab_path;     /* .npy / safetensors: token file, or NULL */
    loader_progress_cb progress;
    void *progress_ud;
};

/* Parses "auto", "word2vec", "word2vec_binary", "glove", "npy",
 * "safetensors", "snapshot"; returns false for anything else. */
#include <stdbool.h>
bool loader_format_parse(const char *name, enum loader_format *f);
const char *loader_format_name(enum loader_format f);

/* Decides the format of path from its content (magic bytes, header line) and
 * name: a directory is a snapshot; "\x93NUMPY" is npy; an 8-byte length plus
 * '{' is safetensors; "<int> <int>" first line followed by binary bytes is
 * word2vec binary, by text is word2vec; otherwise glove. */
int loader_detect(const char *path, enum loader_format *f, char *err, size_t errlen);

/* Loads path into *m (initialized by the loader; empty on failure) and
 * *vocab (NULL when the format has none and no vocab_path was given).
 * Snapshots are not handled here (see snapshot.h). */
int loader_load(const char *path, const struct loader_opts *o, struct matrix *m,
                struct vocab **vocab, char *err, size_t errlen);

/* The individual readers, same contract as loader_load. */
int w2v_text_load(const char *path, bool has_header, const struct loader_opts *o,
                  struct matrix *m, struct vocab **vocab, char *err, size_t errlen);
int w2v_bin_load(const char *path, const struct loader_opts *o, struct matrix *m,
                 struct vocab **vocab, char *err, size_t errlen);
int npy_load(const char *path, const struct loader_opts *o, struct matrix *m,
             char *err, size_t errlen);
/* As npy_load, but NaN and infinities are kept, not refused: float32 data
 * loads bit for bit (NaN payloads, -0, subnormals). For the service's own
 * snapshots, whose optimizer state or weights training may have driven
 * there; pretrained files go through npy_load. */
int npy_load_exact(const char *path, const struct loader_opts *o, struct matrix *m,
                   char *err, size_t errlen);
int safetensors_load(const char *path, const struct loader_opts *o, struct matrix *m,
                     char *err, size_t errlen);

/* Writes rows x dim floats (row i at data + i * stride) as a C-order
 * float32 .npy file to an open file descriptor. CORE_EIO on failure. */
int npy_write_fd(int fd, const float *data, int64_t rows, int64_t dim, int64_t stride);

/* Converts IEEE half / bfloat16 bits to float (exact). */
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);

#endif
