#!/usr/bin/python3
"""Makes tests/fixtures/optim/: training steps run by real PyTorch (1.13) that
tests/test_optim.c must reproduce to the last bit.

Each scenario is nn.Embedding(sparse=True) semantics (F.embedding with
sparse=True) plus one torch optimizer, stepped several times with duplicate
ids, padding ids, ids of several shapes (flattened row-major, as the
embedding backward does), per-step lr overrides (param_group['lr'] set for
that step and restored), a batch of only padding ids and an empty batch.

scale_grad_by_freq: torch refuses it with sparse gradients. The service
defines it as the dense gradient torch builds (F.embedding(...,
scale_grad_by_freq=True, sparse=False)) restricted to the distinct
non-padding ids and handed to the optimizer as a coalesced sparse gradient;
that is exactly what this script does for those scenarios.

Files per scenario <name> (little-endian, raw):
  <name>_w0.f32     initial weights, N x D
  <name>_ids.i64    [steps, n_0 .. n_{steps-1}, ids of step 0, ids of step 1, ...]
  <name>_lr.f32     per-step lr override (0 = the configured lr); float32
                    values, and torch is given exactly those values
  <name>_grads.f32  gradients of every step, n_s x D each, concatenated
  <name>_w.f32      weights after every step, N x D each, concatenated
  <name>_state.f32  optimizer state after the last step: exp_avg then
                    exp_avg_sq (sparse_adam), sum (adagrad), nothing (sgd)

The scenario settings (optimizer hyperparameters, padding_idx, scale) are
repeated in tests/test_optim.c's scenario table; keep the two in step.

Run: /usr/bin/python3 scripts/gen_optim_fixtures.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "optim")

# name, optimizer (torch class, kwargs), N, D, padding_idx, scale, steps
# a step is (id shape or explicit id list, lr override or 0, id range or None)
SCENARIOS = [
    ("sgd", ("SGD", dict(lr=0.1)), 12, 5, 2, False,
     [((2, 3), 0, None), ([1, 3, 3, 2, 7, 1, 3], 0.5, None), ((40,), 0, 6),
      ([2, 2, 2], 0, None), ([], 0, None), ((3, 2, 2), 0, None)]),
    ("sgd_scale", ("SGD", dict(lr=0.1)), 12, 5, 2, True,
     [((2, 3), 0, None), ([1, 3, 3, 2, 7, 1, 3], 0.5, None), ((40,), 0, 6),
      ([2, 2, 2], 0, None), ((3, 2, 2), 0, None)]),
    ("adam", ("SparseAdam", dict(lr=0.01)), 40, 19, 0, False,
     [((4, 5), 0, None), ([5, 5, 0, 9, 5, 0, 9], 0, None), ((300,), 0, 10),
      ((2, 3, 4), 0.03125, None), ([0, 0], 0, None), ([], 0, None), ((64,), 0, 40),
      ([7, 8, 7, 9, 8, 10], 0, None)]),
    ("adam_betas", ("SparseAdam", dict(lr=0.002, betas=(0.8, 0.95), eps=1e-6)), 40, 64, None,
     False,
     [((50,), 0, 8), ((3, 7), 0, None), ((200,), 0.01, 30), ((17,), 0, 3)]),
    ("adam_scale", ("SparseAdam", dict(lr=0.01)), 40, 19, 0, True,
     [((4, 5), 0, None), ([5, 5, 0, 9, 5, 0, 9], 0, None), ((300,), 0, 10),
      ((2, 3, 4), 0.03125, None)]),
    ("adagrad", ("Adagrad", dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1,
                                 eps=1e-10)), 40, 19, 39, False,
     [((4, 5), 0, None), ([5, 5, 39, 9, 5, 39, 9], 0, None), ((300,), 0, 10),
      ((2, 3, 4), 0.25, None), ([39], 0, None), ((64,), 0, 40),
      ([7, 8, 7, 9, 8, 10], 0, None)]),
    ("adagrad_default", ("Adagrad", dict()), 40, 64, None, False,
     [((100,), 0, 12), ((100,), 0, 12), ((7, 3), 0, None)]),
    ("adagrad_scale", ("Adagrad", dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1)),
     40, 19, 39, True,
     [((4, 5), 0, None), ([5, 5, 39, 9, 5, 39, 9], 0, None), ((300,), 0, 10)]),
]


def make_ids(spec, n_rows, gen):
    shape_or_list, _, id_range = spec
    if isinstance(shape_or_list, list):
        return torch.tensor(shape_or_list, dtype=torch.int64)
    high = id_range if id_range is not None else n_rows
    return torch.randint(0, high, shape_or_list, generator=gen)


def make_grads(ids, dim, gen):
    # magnitudes spread over decades so the order of summation shows in float32
    g = torch.randn(*ids.shape, dim, generator=gen)
    spread = torch.exp(2.0 * torch.randn(*ids.shape, 1, generator=gen))
    return (g * spread).to(torch.float32)


def sparse_step_grad(weight, ids, grads, padding_idx):
    """What loss.backward() leaves in weight.grad for nn.Embedding(sparse=True)."""
    out = F.embedding(ids, weight, padding_idx=padding_idx, sparse=True)
    out.backward(grads)


def scaled_step_grad(weight, ids, grads, padding_idx):
    """The dense scale_grad_by_freq gradient, as a coalesced sparse gradient of
    the distinct non-padding ids."""
    dense_w = weight.detach().clone().requires_grad_(True)
    out = F.embedding(ids, dense_w, padding_idx=padding_idx, scale_grad_by_freq=True)
    out.backward(grads)
    uniq = torch.unique(ids.reshape(-1))
    if padding_idx is not None:
        uniq = uniq[uniq != padding_idx]
    values = dense_w.grad[uniq]
    weight.grad = torch.sparse_coo_tensor(uniq.reshape(1, -1), values, weight.shape)


def step_with_no_rows_ok(opt, weight, kind, ids, padding_idx):
    """SparseAdam and Adagrad 1.13 raise on a gradient with no rows (all
    padding, or no ids) after they have counted the step. The service defines
    that batch as a step that changes no row, which is where torch's state is
    left: the step counted, nothing else touched. SGD takes it as is."""
    flat = ids.reshape(-1)
    no_rows = flat.numel() == 0 or (padding_idx is not None and bool((flat == padding_idx).all()))
    if kind == "SGD" or not no_rows:
        opt.step()
        return
    before = weight.detach().clone()
    state_before = {k: v.clone() if torch.is_tensor(v) else v
                    for k, v in opt.state[weight].items()}
    try:
        opt.step()
    except RuntimeError:
        pass
    state_after = opt.state[weight]
    assert state_after["step"] == state_before.get("step", 0) + 1
    assert torch.equal(before, weight.detach())
    for key in ("exp_avg", "exp_avg_sq", "sum"):
        if key in state_before:
            assert torch.equal(state_before[key], state_after[key])


def state_of(opt, weight, kind):
    st = opt.state[weight]
    if kind == "SparseAdam":
        return [st["exp_avg"], st["exp_avg_sq"]]
    if kind == "Adagrad":
        return [st["sum"]]
    return []


def check_coalesce_order_matters(name, ids, grads, padding_idx):
    """Reports whether summing in order of appearance would differ from torch's
    coalesce for this batch, so the fixture proves the order is reproduced."""
    flat = ids.reshape(-1)
    g = grads.reshape(flat.numel(), -1)
    keep = flat != padding_idx if padding_idx is not None else torch.ones_like(flat, dtype=bool)
    sp = torch.sparse_coo_tensor(flat[keep].reshape(1, -1), g[keep],
                                 (int(flat.max()) + 1 if flat.numel() else 1, g.shape[1]))
    coalesced = sp.coalesce()
    acc = {}
    for i, k in enumerate(flat.tolist()):
        if padding_idx is not None and k == padding_idx:
            continue
        acc[k] = g[i].clone() if k not in acc else acc[k] + g[i]
    diff = sum(int((acc[k] != v).sum()) for k, v in
               zip(coalesced._indices()[0].tolist(), coalesced._values()))
    return diff


def run(scenario):
    name, (kind, kwargs), n_rows, dim, padding_idx, scale, steps = scenario
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    w0 = torch.randn(n_rows, dim, generator=gen)
    if padding_idx is not None:
        w0[padding_idx] = 0
    weight = torch.nn.Parameter(w0.clone())
    opt = getattr(torch.optim, kind)([weight], **kwargs)
    base_lr = opt.param_groups[0]["lr"]

    counts, all_ids, lrs, all_grads, after = [], [], [], [], []
    order_diffs = 0
    for spec in steps:
        ids = make_ids(spec, n_rows, gen)
        grads = make_grads(ids, dim, gen)
        lr = float(np.float32(spec[1]))
        opt.zero_grad(set_to_none=True)
        if scale:
            scaled_step_grad(weight, ids, grads, padding_idx)
        else:
            sparse_step_grad(weight, ids, grads, padding_idx)
            if kind != "SGD" and ids.numel() > 0:
                order_diffs += check_coalesce_order_matters(name, ids, grads, padding_idx)
        if lr > 0:
            opt.param_groups[0]["lr"] = lr
        step_with_no_rows_ok(opt, weight, kind, ids, padding_idx)
        opt.param_groups[0]["lr"] = base_lr
        counts.append(ids.numel())
        all_ids.append(ids.reshape(-1))
        lrs.append(lr)
        all_grads.append(grads.reshape(-1))
        after.append(weight.detach().clone().reshape(-1))

    def save(suffix, array, dtype):
        np.asarray(array, dtype=dtype).tofile(os.path.join(OUT, f"{name}_{suffix}"))

    save("w0.f32", w0.numpy(), "<f4")
    save("ids.i64", np.concatenate([[len(steps)], counts,
                                    torch.cat(all_ids).numpy()]).astype(np.int64), "<i8")
    save("lr.f32", lrs, "<f4")
    save("grads.f32", torch.cat(all_grads).numpy(), "<f4")
    save("w.f32", torch.cat(after).numpy(), "<f4")
    state = state_of(opt, weight, kind)
    save("state.f32", torch.cat([s.reshape(-1) for s in state]).numpy() if state else [], "<f4")
    note = (f", {order_diffs} floats where in-order sums would differ"
            if kind != "SGD" and not scale else "")
    print(f"{name}: {kind} {n_rows}x{dim}, {len(steps)} steps{note}")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    for s in SCENARIOS:
        run(s)


if __name__ == "__main__":
    main()
