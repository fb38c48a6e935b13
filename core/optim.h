/* optim.h - PyTorch's sparse optimizer steps applied to a table's rows:
 * torch.optim.SGD, SparseAdam and Adagrad with torch 1.13's arithmetic,
 * defaults and hyperparameter names. */
#ifndef CORE_OPTIM_H
#define CORE_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "matrix.h"

enum optim_kind { OPTIM_SGD, OPTIM_SPARSE_ADAM, OPTIM_ADAGRAD };

struct optim_config {
    enum optim_kind kind;
    double lr;                        /* > 0, finite */
    double beta1, beta2;              /* sparse_adam */
    double eps;                       /* sparse_adam, adagrad */
    double lr_decay;                  /* adagrad */
    double initial_accumulator_value; /* adagrad */
};

/* A table's optimizer: config and state, as PyTorch's state dict keys. */
struct optim {
    struct optim_config cfg;
    bool configured;      /* false: default sgd lr 0.01 */
    struct matrix exp_avg;    /* sparse_adam, rows x dim, lazily allocated */
    struct matrix exp_avg_sq; /* sparse_adam */
    struct matrix sum;        /* adagrad, filled with initial_accumulator_value */
    int64_t step;             /* optimizer steps taken (table-wide) */
};

/* Fills *c with torch 1.13's defaults for kind (sgd lr 0.01 here, since torch
 * requires it). */
void optim_config_defaults(struct optim_config *c, enum optim_kind kind);

/* Parses "sgd" | "sparse_adam" | "adagrad"; false for anything else. */
bool optim_kind_parse(const char *name, enum optim_kind *kind);
const char *optim_kind_name(enum optim_kind kind);

/* Checks c's hyperparameters as torch's constructors do (lr finite > 0,
 * 0 <= beta < 1, eps > 0, lr_decay >= 0, initial_accumulator_value >= 0,
 * all finite). Returns CORE_OK or CORE_EINVAL with err naming the key
 * ("optimizer.lr must be finite and > 0"). */
int optim_config_check(const struct optim_config *c, char *err, size_t errlen);

/* Frees the state matrices of o and resets step to 0; keeps the config. */
void optim_state_reset(struct optim *o);

struct table;

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

/* Chooses between the vector kernels (when the build has them) and the
 * portable ones; both give identical bits. For tests and benchmarks; call
 * before any step runs, not concurrently with one. */
void optim_set_simd(bool enabled);

#endif
