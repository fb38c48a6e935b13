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

#endif
