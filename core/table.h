/* table.h - an embedding table with torch.nn.Embedding semantics.
 *
 * A table owns its weights (struct matrix), an optional vocabulary, its
 * settings, a per-row norm cache and (for trainable tables) optimizer state.
 *
 * Concurrency (the rule every caller relies on):
 *  - Any number of threads may read concurrently (lookup, bag, similarity,
 *    top-k, info getters).
 *  - Writes (gradient steps, row assignment, max_norm renormalization done by
 *    a lookup) are serialized by one mutex per table: one writer at a time.
 *  - Readers never see a half-written row: each stripe of TABLE_STRIPE_ROWS
 *    consecutive rows has a sequence counter (a seqlock); the writer makes it
 *    odd while it changes rows of the stripe, readers copy a row and retry if
 *    the counter moved. So readers copy rows out; nothing hands out a raw
 *    pointer into live weights except under the write lock.
 */
#ifndef CORE_TABLE_H
#define CORE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "matrix.h"
#include "optim.h"
#include "vocab.h"

struct table;

#define TABLE_NAME_MAX 64

struct table_settings {
    /* padding_idx as the user gave it: negative counts from the end, as in
     * PyTorch; ignored unless has_padding. table_new normalizes it. */
    bool has_padding;
    int64_t padding_idx;
    bool has_max_norm;
    double max_norm;   /* > 0 */
    double norm_type;  /* p > 0, INFINITY allowed; default 2 */
    bool scale_grad_by_freq;
    bool freeze;
    /* out-of-vocabulary policy for token lookups: -1 = error, else an id */
    int64_t oov_id;
};

/* Fills *s with nn.Embedding's defaults: no padding, no max_norm, p = 2,
 * no scaling, freeze = false, oov = error. */
void table_settings_init(struct table_settings *s);

/* Creates a table that adopts *weights (left empty on success, untouched on
 * failure) and vocab (may be NULL; adopted on success, caller frees on
 * failure). Checks settings against the shape (padding_idx in [-N, N),
 * max_norm > 0, norm_type > 0, oov id in range, vocab size == rows) and
 * zeroes nothing: a loaded table keeps its padding row as stored, like
 * from_pretrained. Builds the vocabulary's sorted index (vocab_build_index)
 * when it has none. Errors name the offending setting in err. */
int table_new(struct table **out, const char *name, struct matrix *weights,
              struct vocab *vocab, const struct table_settings *s,
              char *err, size_t errlen);

/* Creates an num x dim table with rows drawn from N(0, 1) by a seeded
 * generator (deterministic per seed, not torch's stream) and the padding row
 * zeroed, as nn.Embedding's reset_parameters. */
int table_new_init(struct table **out, const char *name, int64_t num, int64_t dim,
                   uint64_t seed, const struct table_settings *s,
                   char *err, size_t errlen);

/* Frees t and everything it owns; NULL is a no-op. No reader or writer may be
 * running on t. */
void table_free(struct table *t);

const char *table_name(const struct table *t);
int64_t table_num_embeddings(const struct table *t);
int64_t table_dim(const struct table *t);
/* Normalized settings (padding_idx in [0, N) when has_padding). Borrowed for
 * t's lifetime; settings never change after creation. */
const struct table_settings *table_settings(const struct table *t);
/* The vocabulary or NULL; borrowed, read-only, lives as long as t. */
const struct vocab *table_vocab(const struct table *t);
/* Applied write batches (gradient steps + row assignments). Thread-safe. */
uint64_t table_version(const struct table *t);
/* The seq of the last log record applied to t (0 when none); two copies of
 * a table at the same seq are bit-identical. Thread-safe. */
uint64_t table_log_seq(const struct table *t);

/* Forward of nn.Embedding: writes n rows of dim floats (dense, no padding)
 * for ids[0..n) to out. Returns CORE_ERANGE (and *bad = index of the first
 * bad id, when bad is non-NULL) before touching anything if an id is outside
 * [0, N). With max_norm, every distinct looked-up row whose norm_type-norm
 * exceeds max_norm is first scaled in place by max_norm / (norm + 1e-7), as
 * torch.embedding_renorm_, under the write lock (so it is a writer then). */
int table_lookup(struct table *t, const int64_t *ids, size_t n, float *out, size_t *bad);

enum bag_mode { BAG_SUM, BAG_MEAN, BAG_MAX };

/* Forward of nn.EmbeddingBag / F.embedding_bag: bag b pools
 * ids[offsets[b] .. offsets[b+1]) into out[b * dim ..]. offsets has nbags+1
 * entries, nondecreasing, offsets[0] == 0. per_sample_weights (same length
 * as ids) is only allowed with BAG_SUM (else CORE_EINVAL). Padding ids are
 * left out; mean divides by the ids kept; an empty bag is zeros. max_norm
 * renormalizes first, as table_lookup. */
int table_bag(struct table *t, const int64_t *ids, const size_t *offsets, size_t nbags,
              const float *per_sample_weights, enum bag_mode mode, float *out,
              size_t *bad);

/* Copies row id into out (dim floats) consistently (seqlock). id must be in
 * range (asserted). Never renormalizes. */
void table_read_row(const struct table *t, int64_t id, float *out);

/* Resolves tokens to ids with the table's oov policy. Returns CORE_OK,
 * CORE_EUNSUPPORTED when the table has no vocabulary, or CORE_ENOTFOUND with
 * *bad set to the index of the first unknown token. With allow_oov false the
 * oov id is never used (writes never fall back). */
int table_resolve_tokens(const struct table *t, const char *const *tokens,
                         const size_t *lens, size_t n, bool allow_oov,
                         int64_t *ids, size_t *bad);

/* Assigns rows like `with torch.no_grad(): weight[ids[i]] = vectors[i]`, in
 * order (a later duplicate wins), allowed on frozen tables; bumps the
 * version once. All ids are checked first (CORE_ERANGE, *bad). Vectors must
 * be finite (CORE_EINVAL, *bad). Writes *version_out when non-NULL. */
int table_assign_rows(struct table *t, const int64_t *ids, size_t n,
                      const float *vectors, size_t *bad, uint64_t *version_out);

/* Starts a fresh table's log numbering at seq (a table that must not reuse
 * the seqs of an earlier run, as with "resume": false). Only before the
 * table takes any write. */
void table_set_log_seq(struct table *t, uint64_t seq);

/* The checks of table_assign_rows alone (ids in range, finite vectors),
 * same codes and *bad; changes nothing. */
int table_check_rows(const struct table *t, const int64_t *ids, size_t n, const float *vectors,
                     size_t *bad);

/* torch.embedding_renorm_ as one write: each distinct row of ids[0..m)
 * whose norm_type-norm exceeds max_norm is scaled by max_norm / (norm +
 * 1e-7), under the write lock; advances log_seq by one (the version stays:
 * renormalization is not a client's write). For the journal, live and at
 * replay. CORE_EINVAL without max_norm, CORE_ERANGE, CORE_ENOMEM. */
int table_renorm(struct table *t, const int64_t *ids, size_t m);

/* Lookups renormalize through fn when set: it must apply the distinct,
 * sorted ids[0..m) with table_renorm in its place among the table's other
 * writes and return table_renorm's result (or an error: the lookup then
 * fails with it). ud is passed along. Set before serving, or with NULL to
 * detach; takes the write lock. */
typedef int (*table_renorm_hook)(void *ud, const int64_t *ids, size_t m);
void table_set_renorm_hook(struct table *t, table_renorm_hook fn, void *ud);

/* ---- keyed tables (keyed.c) -------------------------------------------
 *
 * A keyed table's ids are arbitrary int64 keys (every value but INT64_MIN),
 * mapped to rows by a key map (keymap.h): a write with a key the table has
 * not seen inserts it (a row of N(0, std) drawn from the seed and the key,
 * fresh optimizer state), a full table evicts the least recently written
 * key or refuses, keys expire after ttl_seconds without a write. All of it
 * happens inside journal records, in log order, timed by the record's
 * clock: replay gives the same keys in the same rows, bit for bit. */

enum table_missing {
    TABLE_MISSING_ERROR, /* 404 unknown_key */
    TABLE_MISSING_ZEROS, /* a row of zeros */
    TABLE_MISSING_INIT,  /* the row the key would get, not inserted */
};

enum table_evict { TABLE_EVICT_LRU, TABLE_EVICT_NONE };

struct table_keyed_settings {
    int64_t capacity;     /* rows reserved, 1..2^31-1 */
    double std;           /* init rows from N(0, std); finite, >= 0 */
    uint64_t seed;
    enum table_missing missing;
    uint32_t ttl_seconds; /* 0 = keys never expire */
    enum table_evict evict;
};

/* Fills *k with the defaults: capacity 0 (unset), std 1, seed 0, missing
 * error, no ttl, lru. */
void table_keyed_settings_init(struct table_keyed_settings *k);

/* What a keyed apply did, for the answer. */
struct table_keyed_result {
    uint64_t version;
    size_t rows;     /* distinct rows changed (deleted keys for a delete) */
    size_t inserted; /* keys new to the table */
};

/* Creates an empty keyed table of k->capacity zero rows of dim floats.
 * Refuses padding_idx and max_norm in s (CORE_EINVAL, err says why). */
int table_new_keyed(struct table **out, const char *name, int64_t dim,
                    const struct table_keyed_settings *k, const struct table_settings *s,
                    char *err, size_t errlen);

/* Makes a table loaded from a snapshot keyed with settings k: the snapshot
 * must have carried its keys (table_keyed_attach), capacity == its rows.
 * CORE_EINVAL with err otherwise. Before serving. */
int table_keyed_configure(struct table *t, const struct table_keyed_settings *k, char *err,
                          size_t errlen);

/* For snapshot.c: gives t (not keyed) the key map rebuilt from keys and
 * state (keymap_export's arrays, capacity = t's rows), default settings
 * until table_keyed_configure. CORE_EFORMAT / CORE_ENOMEM with err. */
int table_keyed_attach(struct table *t, const int64_t *keys, const int64_t *state, char *err,
                       size_t errlen);

/* True when t's ids are keys. Settings: NULL for a dense table, else
 * borrowed for t's lifetime. */
bool table_is_keyed(const struct table *t);
const struct table_keyed_settings *table_keyed_settings(const struct table *t);

/* rows_used and evictions for <info>; any thread. */
void table_keyed_counts(const struct table *t, int64_t *rows_used, uint64_t *evictions);

/* Bytes of the key map, for benchmarks. */
size_t table_keyed_bytes(const struct table *t);

/* Reader side: copies the row of key into out (dim floats) consistently,
 * following the missing policy when key is unseen or expired at now_ms
 * (missing error: returns false and writes nothing). *row_out (may be
 * NULL) gets the row, or -1 when the key is missing. Any thread. */
bool table_keyed_read(const struct table *t, int64_t key, uint64_t now_ms, float *out,
                      int64_t *row_out);

/* The live key of row, or KEYMAP_NO_KEY; any thread. */
int64_t table_keyed_key_of(const struct table *t, int64_t row);

/* The checks before a keyed write is logged: keys are not INT64_MIN
 * (CORE_ERANGE, *bad), at most capacity distinct keys, and with evict none
 * and no ttl the new keys fit (else CORE_ECAPACITY); values are checked by
 * the dense checks. The state can change before the record applies: the
 * apply decides again, and the same way at replay. Any thread. */
int table_keyed_check(struct table *t, const int64_t *keys, size_t n, size_t *bad);

enum table_keyed_op { TABLE_KEYED_GRADIENTS, TABLE_KEYED_ROWS, TABLE_KEYED_DELETE };

/* Applies one keyed record (the journal's apply path, live and at replay):
 * first keys expired at the record's clock are evicted, then the request's
 * keys are resolved (known keys become the most recently written, in order
 * of last appearance, then new keys are inserted in order of first
 * appearance and written again at each repeat, evicting
 * the least recently written key when the table is full and evict is lru),
 * then the gradient step (cfg) or the row assignment runs on their rows, or
 * the keys are deleted. When the new keys cannot fit (evict none, or more
 * distinct keys than capacity) nothing changes but the log seq, and the
 * result is CORE_ECAPACITY: the record stays in the log and replays to the
 * same refusal. Also CORE_ERANGE / CORE_EINVAL (*bad) for keys or values
 * that the checks should have refused, CORE_ENOMEM. Takes the write lock. */
int table_keyed_apply(struct table *t, enum table_keyed_op op, const struct optim_config *cfg,
                      uint64_t time_ms, const int64_t *keys, size_t n, const float *values,
                      size_t *bad, struct table_keyed_result *res);

/* ---- training (optim.c) ------------------------------------------------ */

/* Sets t's optimizer (validated with optim_config_check; CORE_EINVAL and
 * err otherwise). A change of kind drops the state (moments, sums, step); the
 * same kind keeps it, like editing a torch param_group after
 * load_state_dict, so a table restored from a snapshot can get new
 * hyperparameters and still resume. Takes the write lock; any thread. */
int table_set_optimizer(struct table *t, const struct optim_config *c, char *err,
                        size_t errlen);

/* The table's optimizer (config, configured flag, state, step), for table
 * info. Borrowed for t's lifetime; cfg and configured change only through
 * table_set_optimizer, the state and step only under the write lock. */
const struct optim *table_optimizer(const struct table *t);

/* The effective optimizer config: the configured one, or sgd lr 0.01 for a
 * trainable table with none (API.md). */
void table_optimizer_config(const struct table *t, struct optim_config *out);

/* One training step, as loss.backward() through embedding(ids) followed by
 * optimizer.step() in torch 1.13 with nn.Embedding(sparse=True):
 * grads holds n rows of dim floats (dense: row i is the gradient of the
 * output row of ids[i]). Duplicate ids are summed in order of appearance;
 * with scale_grad_by_freq each row's sum is divided by its count in ids;
 * the padding row gets nothing; the step's rows are the distinct non-padding
 * ids (even where the sum is zero). lr > 0 overrides the configured lr for
 * this step; lr <= 0 (e.g. 0.0) uses the configured one.
 * Everything is checked before any row changes:
 *   CORE_EFROZEN   the table is frozen;
 *   CORE_EINVAL    lr is NaN or infinite (*bad = SIZE_MAX), or a gradient
 *                  value is not finite (*bad = flat index i * dim + j);
 *   CORE_ERANGE    ids[*bad] is outside [0, N);
 *   CORE_ENOMEM    optimizer state could not be allocated.
 * On success the version is bumped once (also for n == 0, which is a step
 * of zero rows, as torch steps with an empty sparse gradient), the optimizer
 * step count incremented, norms kept current; *version_out (the new
 * version) and *rows_out (distinct rows of the step) are written when
 * non-NULL. bad may be NULL. Serialized with other writers by the table's
 * write lock; readers stay consistent through the stripe seqlocks. */
int table_apply_gradients(struct table *t, const int64_t *ids, size_t n, const float *grads,
                          double lr, size_t *bad, uint64_t *version_out, size_t *rows_out);

/* The checks of table_apply_gradients alone (frozen, lr, ids, finite
 * gradients), same codes and *bad; changes nothing. Any thread. */
int table_check_gradients(const struct table *t, const int64_t *ids, size_t n,
                          const float *grads, double lr, size_t *bad);

/* A step as the journal applies it, live and at replay: cfg is the optimizer
 * the step was logged with (its lr included), not the table's; frozen
 * tables are not refused (the step was accepted when it was logged). Ids
 * and gradients are still checked (CORE_ERANGE / CORE_EINVAL, *bad), cfg
 * with optim_config_check (CORE_EINVAL, *bad = SIZE_MAX). Otherwise as
 * table_apply_gradients. */
int table_apply_logged_gradients(struct table *t, const struct optim_config *cfg,
                                 const int64_t *ids, size_t n, const float *grads,
                                 size_t *bad, uint64_t *version_out, size_t *rows_out);

#endif
