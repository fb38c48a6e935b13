/* optim.h - PyTorch's sparse optimizers: torch.optim.SGD, SparseAdam and
 * Adagrad with torch 1.13's arithmetic, defaults and hyperparameter names.
 * Their configuration and state live here; the steps on a table are
 * table_* functions (table.h), implemented in optim.c. */
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

/* Chooses between the vector kernels (when the build has them) and the
 * portable ones; both give identical bits. For tests and benchmarks; call
 * before any step runs, not concurrently with one. */
void optim_set_simd(bool enabled);

#endif
