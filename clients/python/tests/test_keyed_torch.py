"""Keyed tables against real torch: a sequence of gradient steps on rows
addressed by arbitrary int64 keys (above 2^53, negative, int64's extremes
but INT64_MIN, the one value keyed tables refuse) leaves every key's row
equal, 0 ulp, to the same steps on an nn.Embedding(sparse=True) whose rows
start at the keys' initial rows, with torch.optim.SGD, SparseAdam and
Adagrad (lr_decay, initial_accumulator_value).

Each key's initial row is read BEFORE it is inserted (a lookup with
"missing": "init" answers the row a new key would get, without inserting
it); keys are inserted by their first gradient step, whose answer counts
them in "inserted".

Run by run_tests.py (ctest: python_client, python_client_prism), which skips
with a message when numpy or torch is not importable.
"""

import unittest

import numpy as np
import torch

import harness
from embedding_server import Client

D = 5
CAPACITY = 64
STEPS = 10
LR_OVERRIDE_STEP = 4
LR_OVERRIDE = 0.037

KEYS = [2**53 + 1, 2**62 + 12345, 2**63 - 1, -(2**63) + 1, -1, -(2**53) - 3, 0, 7,
        123456789012345678, -987654321, 2**53, 2**53 + 2, 42, -42, 10**18 + 7, 3]

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.1},
    "sparse_adam": {"name": "sparse_adam", "lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6},
    "adagrad": {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01,
                "initial_accumulator_value": 0.1, "eps": 1e-9},
}


def table_config(opt):
    return {"name": "keyed_" + opt["name"], "keys": "int64", "capacity": CAPACITY,
            "missing": "init", "init": {"embedding_dim": D, "std": 0.7, "seed": 9},
            "optimizer": opt}


def torch_optimizer(cfg, params):
    name = cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"])
    if name == "sparse_adam":
        return torch.optim.SparseAdam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]),
                                      eps=cfg["eps"])
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg["lr"], lr_decay=cfg["lr_decay"],
                                   initial_accumulator_value=cfg["initial_accumulator_value"],
                                   eps=cfg["eps"])
    raise ValueError(name)


def steps(seed):
    """(local indices, coef) per step: 1-D and 2-D shapes, a duplicate in
    each, and more of the keys reachable as the steps go on, so later steps
    insert keys too."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for step in range(STEPS):
        shape = (7,) if step % 2 == 0 else (2, 4)
        reach = min(len(KEYS), 6 + 2 * step)
        idx = torch.randint(0, reach, shape, generator=gen)
        flat = idx.view(-1)
        flat[0] = flat[1]  # a duplicate key within the step
        if step % 3 == 1:
            flat[-1] = reach - 1  # the newest reachable key
        out.append((idx, torch.randn(*shape, D, generator=gen)))
    return out


def bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


class KeyedStepsMatchTorch(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server([table_config(o) for o in OPTIMIZERS.values()])
        cls.client = Client(cls.server.url)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        report = cls.server.prism_report()
        cls.server.cleanup()
        if report is not None:
            assert not report["violations"] and not report["log_violations"], report

    def assert_rows_equal(self, table, keys, want, what):
        got = self.client.lookup(table, np.array(keys, dtype=np.int64))
        diff = np.argwhere(bits(got) != bits(want))
        if diff.size:
            k, j = diff[0]
            g, w = np.float32(got[k, j]), np.float32(want[k, j])
            ulp = abs(int(bits(g)) - int(bits(w)))
            self.fail(f"{table} {what}: {len(diff)} floats differ; first: key {keys[k]} "
                      f"[{j}] service {g!r} torch {w!r} ({ulp} ulp, |diff| {abs(g - w):.3g})")

    def run_steps(self, opt_cfg, seed):
        table = "keyed_" + opt_cfg["name"]
        keys = np.array(KEYS, dtype=np.int64)
        self.assertEqual(len(set(KEYS)), len(KEYS))
        # the rows new keys would get, read before any is inserted
        init = self.client.lookup(table, keys)
        self.assertEqual(init.shape, (len(KEYS), D))
        self.assertEqual(self.client.info(table)["rows_used"], 0,
                         "a lookup with missing init inserted keys")
        # init rows depend on the key only: the same answer in another order
        again = self.client.lookup(table, keys[::-1].copy())
        np.testing.assert_array_equal(bits(again[::-1]), bits(init))

        ref = torch.nn.Embedding(len(KEYS), D, sparse=True)
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(init.copy()))
        ref_opt = torch_optimizer(opt_cfg, ref.parameters())
        seen = set()
        for step, (idx, coef) in enumerate(steps(seed)):
            step_keys = keys[idx.numpy()]  # the same shape as idx: 1-D or 2-D
            # the gradient: distinct per position and dependent on the rows
            # (as the service reads them), the same float32 values for both
            rows = self.client.lookup(table, step_keys)
            grads = (coef.numpy() + rows * np.float32(0.5)).astype(np.float32)
            lr = LR_OVERRIDE if step == LR_OVERRIDE_STEP else None
            answer = self.client.apply_gradients(table, step_keys, grads, lr=lr)

            new = set(step_keys.reshape(-1).tolist()) - seen
            seen |= new
            if new:
                self.assertEqual(answer.get("inserted"), len(new),
                                 f"{table} step {step}: answer {answer}")
            else:
                self.assertEqual(answer.get("inserted", 0), 0,
                                 f"{table} step {step}: answer {answer}")

            ref_opt.zero_grad()
            out = ref(idx)
            out.backward(torch.from_numpy(grads))
            if lr is not None:
                for group in ref_opt.param_groups:
                    group["lr"] = lr
            ref_opt.step()
            if lr is not None:
                for group in ref_opt.param_groups:
                    group["lr"] = opt_cfg["lr"]

            self.assert_rows_equal(table, KEYS, ref.weight.detach().numpy(),
                                   f"after step {step}" + (f" (lr {lr})" if lr else ""))
        self.assertEqual(self.client.info(table)["rows_used"], len(seen))

    def test_sgd(self):
        self.run_steps(OPTIMIZERS["sgd"], seed=21)

    def test_sparse_adam(self):
        self.run_steps(OPTIMIZERS["sparse_adam"], seed=22)

    def test_adagrad(self):
        self.run_steps(OPTIMIZERS["adagrad"], seed=23)


if __name__ == "__main__":
    unittest.main()
