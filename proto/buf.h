/* buf.h - a growable byte buffer that answers are written into.
 *
 * One buffer per response; JSON is written directly (no tree), floats via
 * f32fmt. Growth is bounded by buf->limit: past it the buffer stops growing,
 * sets `failed`, and every later append is a no-op, so writers append without
 * checking each call and test buf->failed once at the end. The byte array can
 * be handed over to the HTTP layer with buf_steal. */
#ifndef PROTO_BUF_H
#define PROTO_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;
    size_t len;
    size_t cap;
    size_t limit;  /* max bytes; 0 means SIZE_MAX */
    bool failed;   /* allocation failed or limit reached */
    bool over_limit; /* failed because the limit was reached */
};

void buf_init(struct buf *b, size_t limit);
/* Frees the bytes; safe on an initialized or zeroed buf. */
void buf_deinit(struct buf *b);
/* Makes room for n more bytes; false (and failed set) when it cannot. */
bool buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *data, size_t n);
void buf_putc(struct buf *b, char c);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_put_i64(struct buf *b, int64_t v);
void buf_put_u64(struct buf *b, uint64_t v);
/* A float as f32fmt text (null for non-finite). */
void buf_put_f32(struct buf *b, float f);
/* n floats as a JSON array "[a,b,...]". */
void buf_put_f32_array(struct buf *b, const float *v, size_t n);
/* A JSON string literal with quotes, escaping '"', '\\' and control bytes;
 * valid UTF-8 is copied as it is, and every byte that is not part of a
 * well-formed sequence becomes \ufffd (U+FFFD), so the text is valid JSON
 * whatever the bytes (tokens of a file may be cut inside a character). */
void buf_put_json_string(struct buf *b, const char *s, size_t n);
/* Takes ownership of the bytes (malloc'd, caller frees with free()) and
 * resets b to empty. Returns NULL when b->failed or b is empty with no
 * storage. */
char *buf_steal(struct buf *b, size_t *len);

#endif
