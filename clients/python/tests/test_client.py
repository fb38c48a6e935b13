"""The Python client against the real binary: RemoteEmbedding training gives
the weights of the same loop in-process with torch, to the bit, for every
optimizer; binary and JSON bodies give identical results; every malformed
binary body gets its 400 and changes nothing.

Run by run_tests.py (ctest: python_client, and python_client_prism through
Stoplight Prism's validating proxy).
"""

import os
import unittest

import numpy as np
import torch

import harness
from embedding_server import ApiError, Client, RemoteEmbedding, RemoteOptimizer
from embedding_server._http import Connection

N, D = 40, 6
MAX_BATCH = 64
STEPS = 12
SHAPES = [(12,), (3, 5), (2, 3, 4)]

# name -> table settings (each also served as name + "_json" for the JSON form)
TABLES = {
    "sgd": {"padding_idx": 0, "optimizer": {"name": "sgd", "lr": 0.1}},
    "adam": {"padding_idx": 3, "optimizer": {"name": "sparse_adam", "lr": 0.01,
                                             "betas": [0.8, 0.99], "eps": 1e-6}},
    "adagrad": {"optimizer": {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01,
                              "initial_accumulator_value": 0.1, "eps": 1e-9}},
    "scaled": {"padding_idx": 1, "scale_grad_by_freq": True,
               "optimizer": {"name": "sparse_adam", "lr": 0.02}},
    "maxnorm": {"max_norm": 2.5, "optimizer": {"name": "adagrad", "lr": 0.05}},
}


def table_configs():
    out = []
    for name, settings in TABLES.items():
        for suffix in ("", "_json"):
            out.append({"name": name + suffix,
                        "init": {"num_embeddings": N, "embedding_dim": D, "seed": 5},
                        **settings})
    out.append({"name": "frozen", "init": {"num_embeddings": N, "embedding_dim": D},
                "freeze": True})
    for name in ("pipe", "twice"):  # fresh optimizer state for each of those tests
        out.append({"name": name, "init": {"num_embeddings": N, "embedding_dim": D, "seed": 5},
                    **TABLES["adam"]})
    return out


def make_torch_optimizer(cfg, params):
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


def batches(seed, padding_idx):
    """Ids of every shape with duplicates and the padding id in each."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for step in range(STEPS):
        shape = SHAPES[step % len(SHAPES)]
        ids = torch.randint(0, N // 3, shape, generator=gen)  # many duplicates
        flat = ids.view(-1)
        flat[0] = flat[1]
        if padding_idx is not None:
            flat[2] = padding_idx
        coef = torch.randn(*shape, D, generator=gen)
        out.append((ids, coef))
    return out


def loss_of(out, coef):
    # gradients differ per position, so duplicate ids sum distinct rows
    return (out * coef).sum() + 0.5 * (out * out).sum() / out.shape[-1]


def bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


class ServerCase(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = harness.Server(table_configs(), limits={"max_batch": MAX_BATCH})
        cls.client = Client(cls.server.url)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        report = cls.server.prism_report()
        cls.server.cleanup()
        if report is not None:
            assert not report["violations"] and not report["log_violations"], report

    def snapshot_weight(self, table):
        path = self.client.snapshot(table)["path"]
        return np.load(os.path.join(path, "weight.npy"))

    def start_weights(self, table, seed):
        w0 = torch.randn(N, D, generator=torch.Generator().manual_seed(seed))
        self.client.assign_rows(table, np.arange(N), w0.numpy())
        return w0


class TrainingMatchesTorch(ServerCase):
    """N steps through RemoteEmbedding == N steps of nn.Embedding(sparse=True)
    + the torch optimizer, 0 ulp, forwards and final weights."""

    def train_both(self, table, *, binary=True, pipeline=False, seed=11, twice=False):
        """pipeline=False: each step's answer is read in step(); True: the
        default, read before the next lookup."""
        info = self.client.info(table)
        w0 = self.start_weights(table, seed)
        ref = torch.nn.Embedding(N, D, padding_idx=info["padding_idx"], max_norm=info["max_norm"],
                                 norm_type=info["norm_type"],
                                 scale_grad_by_freq=info["scale_grad_by_freq"], sparse=True)
        with torch.no_grad():
            ref.weight.copy_(w0)
        ref_opt = make_torch_optimizer(info["optimizer"], ref.parameters())
        scaled = info["scale_grad_by_freq"]
        if scaled:
            # torch refuses scale_grad_by_freq with sparse gradients; the
            # service's definition (scripts/gen_optim_fixtures.py): the dense
            # gradient, restricted to the distinct non-padding ids, handed to
            # the optimizer as a coalesced sparse gradient
            ref.scale_grad_by_freq = False
            dense = {}

            def ref_forward(ids):
                w = ref.weight.detach().clone().requires_grad_(True)
                dense["w"], dense["ids"] = w, ids
                return torch.nn.functional.embedding(ids, w, padding_idx=ref.padding_idx,
                                                     scale_grad_by_freq=True)

            def ref_restrict():
                uniq = torch.unique(dense["ids"].reshape(-1))
                if ref.padding_idx is not None:
                    uniq = uniq[uniq != ref.padding_idx]
                ref.weight.grad = torch.sparse_coo_tensor(uniq.reshape(1, -1),
                                                          dense["w"].grad[uniq], ref.weight.shape)
        else:
            ref_forward = ref
        remote = RemoteEmbedding(self.client, table, binary=binary, pipeline=pipeline)
        opt = RemoteOptimizer(remote)
        version0 = info["version"] + 1  # the assignment above
        for step, (ids, coef) in enumerate(batches(seed, info["padding_idx"])):
            ref_out = ref_forward(ids)
            out = remote(ids)
            self.assertEqual(out.shape, ref_out.shape)
            self.assertTrue(out.requires_grad)
            np.testing.assert_array_equal(bits(out.detach()), bits(ref_out.detach()),
                                          err_msg=f"{table} step {step}: forward differs")
            ref_loss, loss = loss_of(ref_out, coef), loss_of(out, coef)
            if twice:  # a second forward in the same step: its gradients add up
                ids2 = ids.flip(0)
                ref_loss = ref_loss + loss_of(ref(ids2), coef.flip(0))
                loss = loss + loss_of(remote(ids2), coef.flip(0))
            ref_opt.zero_grad()
            opt.zero_grad()
            ref_loss.backward()
            loss.backward()
            if scaled:
                ref_restrict()
            ref_opt.step()
            opt.step()
        opt.sync()
        self.assertEqual(remote.last_step["version"], version0 + STEPS)
        got = self.snapshot_weight(table)
        want = ref.weight.detach().numpy()
        diff = np.flatnonzero(bits(got) != bits(want))
        self.assertEqual(diff.size, 0, f"{table}: {diff.size} floats differ, first at "
                                       f"{diff[:5]}: {got.flat[diff[:5]]} vs {want.flat[diff[:5]]}")
        if info["padding_idx"] is not None:
            p = info["padding_idx"]
            np.testing.assert_array_equal(bits(got[p]), bits(w0[p].numpy()))
        return got

    def test_sgd(self):
        self.train_both("sgd")

    def test_sparse_adam(self):
        self.train_both("adam")

    def test_adagrad(self):
        self.train_both("adagrad")

    def test_scale_grad_by_freq(self):
        self.train_both("scaled")

    def test_max_norm(self):
        self.train_both("maxnorm")

    def test_two_forwards_per_step(self):
        self.train_both("twice", twice=True, seed=13)

    def test_pipelined_steps_are_the_sequential_loop(self):
        self.train_both("pipe", pipeline=True, seed=17)


class BinaryAndJsonAgree(ServerCase):
    """The same steps with binary bodies and with JSON bodies leave
    bit-identical tables, and every answer is the same."""

    def test_identical_tables(self):
        for name in TABLES:
            with self.subTest(table=name):
                got = {}
                for suffix, binary in (("", True), ("_json", False)):
                    table = name + suffix
                    w0 = torch.randn(N, D, generator=torch.Generator().manual_seed(3))
                    self.client.assign_rows(table, np.arange(N), w0.numpy(), binary=binary)
                    remote = RemoteEmbedding(self.client, table, binary=binary, pipeline=False)
                    outs = []
                    for ids, coef in batches(5, TABLES[name].get("padding_idx")):
                        out = remote(ids)
                        outs.append(out.detach().numpy().copy())
                        remote.zero_grad()
                        loss_of(out, coef).backward()
                        remote.step(lr=0.03 if name == "sgd" else None)
                    got[suffix] = (outs, self.snapshot_weight(table))
                for a, b in zip(got[""][0], got["_json"][0]):
                    np.testing.assert_array_equal(bits(a), bits(b))
                np.testing.assert_array_equal(bits(got[""][1]), bits(got["_json"][1]))

    def test_lookup_forms(self):
        ids = np.array([[1, 2, 2], [0, 39, 5]])
        a = self.client.lookup("sgd", ids)
        b = self.client.lookup("sgd", ids, binary=False)
        self.assertEqual(a.shape, (2, 3, D))
        np.testing.assert_array_equal(bits(a), bits(b))
        self.assertEqual(self.client.lookup("sgd", 7).shape, (D,))
        np.testing.assert_array_equal(bits(self.client.lookup("sgd", 7)),
                                      bits(self.client.lookup("sgd", [7])[0]))
        self.assertEqual(self.client.lookup("sgd", np.zeros((2, 0), np.int64)).shape, (2, 0, D))

    def test_apply_gradients_answers(self):
        ids = np.array([4, 4, 9])
        g = np.full((3, D), 0.25, np.float32)
        v0 = self.client.info("sgd_json")["version"]
        a = self.client.apply_gradients("sgd", ids, g, lr=0.5)
        b = self.client.apply_gradients("sgd_json", ids, g, lr=0.5, binary=False)
        self.assertEqual(a["rows"], 2)
        self.assertEqual((b["version"], b["rows"]), (v0 + 1, 2))
        r = self.client.assign_rows("sgd", np.array([1, 1]), np.ones((2, D)))
        self.assertEqual(r["rows"], 1)

    def test_reads(self):
        self.assertEqual(self.client.health(), {"status": "ok"})
        self.assertTrue(self.client.ready())
        self.assertIn("sgd", [t["name"] for t in self.client.tables()])
        res = self.client.neighbors("sgd", ids=[5], k=3)
        self.assertEqual(len(res[0]), 3)
        scores = self.client.similarity("sgd", [[1, 2], [3, 3]])
        self.assertEqual(scores.shape, (2,))
        bags = self.client.lookup_bags("sgd", [[1, 2], [], [5]], mode="sum")
        self.assertEqual(bags.shape, (3, D))

    def test_errors_carry_code_and_message(self):
        with self.assertRaises(ApiError) as e:
            self.client.lookup("sgd", [1, N])
        self.assertEqual((e.exception.status, e.exception.code), (400, "out_of_range"))
        self.assertIn(f"ids[1]: id {N} is out of range", e.exception.message)
        with self.assertRaises(ApiError) as e:
            self.client.apply_gradients("frozen", [1], np.zeros((1, D)))
        self.assertEqual((e.exception.status, e.exception.code), (409, "table_frozen"))
        with self.assertRaises(ApiError) as e:
            self.client.info("nope")
        self.assertEqual(e.exception.code, "not_found")
        # a pipelined step's error surfaces at the next call, whose answer is read too
        h = self.client.apply_gradients("frozen", [1], np.zeros((1, D)), wait=False)
        with self.assertRaises(ApiError) as e:
            self.client.lookup("sgd", [1])
        self.assertEqual(e.exception.code, "table_frozen")
        self.assertTrue(h.done())
        self.assertEqual(self.client.lookup("sgd", [1]).shape, (1, D))


@unittest.skipIf(harness.use_prism(), "malformed bodies are checked against the server itself "
                 "(Prism answers some of them first, 422)")
class MalformedBinaryBodies(ServerCase):
    """Every malformed binary body: 400 with the message that names what was
    expected and what came, and nothing changes."""

    def send(self, method, action, headers, body, table="adam"):
        conn = Connection(self.server.direct_url)
        conn.ready(True)
        conn.send(method, f"/v1/tables/{table}/{action}",
                  [("Content-Type", "application/octet-stream"), *headers], [body])
        resp = conn.read(method)
        conn.close()
        return resp

    def expect(self, status, code, fragment, method, action, headers, body, table="adam"):
        resp = self.send(method, action, headers, body, table)
        import json
        doc = json.loads(resp.body)
        self.assertEqual(resp.status, status, doc)
        self.assertEqual(doc["error"]["code"], code, doc)
        self.assertIn(fragment, doc["error"]["message"])

    def test_every_malformed_body(self):
        i64 = lambda *v: np.array(v, "<i8").tobytes()
        f32 = lambda n, fill=0.5: np.full(n, fill, "<f4").tobytes()
        before = self.snapshot_weight("adam")
        version = self.client.info("adam")["version"]
        good = i64(1, 2) + f32(2 * D)
        shape = ("X-Embedding-Shape", f"2,{D}")
        cases = [
            # lookups
            ("POST", "lookup", [], i64(1)[:5], "has 5 bytes, not a whole number of int64 ids"),
            ("POST", "lookup", [("X-Embedding-Shape", "2,2")], i64(1, 2, 3),
             'has 24 bytes, expected 32 for X-Embedding-Shape "2,2"'),
            ("POST", "lookup", [("X-Embedding-Shape", "2,x")], i64(1, 2), 'X-Embedding-Shape "2,x"'),
            ("POST", "lookup", [("X-Embedding-Shape", "-2")], i64(1, 2), "non-negative integers"),
            ("POST", "lookup", [], i64(1, N), f"ids[1]: id {N} is out of range [0, {N})"),
            ("POST", "lookup", [], i64(-1), f"ids[0]: id -1 is out of range [0, {N})"),
            ("POST", "lookup", [("X-Embedding-Lr", "0.1")], i64(1), "only gradient steps take"),
            # gradients
            ("POST", "gradients", [], good, "X-Embedding-Shape: missing"),
            ("POST", "gradients", [("X-Embedding-Shape", "2")], good, "expected n,D (2 numbers)"),
            ("POST", "gradients", [("X-Embedding-Shape", f"1,2,{D}")], good, "got 3"),
            ("POST", "gradients", [("X-Embedding-Shape", f"2,{D + 1}")], good,
             f"D is {D + 1}, expected the table's embedding_dim {D}"),
            ("POST", "gradients", [("X-Embedding-Shape", f"0,{D}")], b"", "ids: must not be empty"),
            ("POST", "gradients", [shape], good[:-1],
             f"has {len(good) - 1} bytes, expected {len(good)}"),
            ("POST", "gradients", [shape], good + b"\0\0\0\0",
             f"has {len(good) + 4} bytes, expected {len(good)}"),
            ("POST", "gradients", [shape], i64(1, 2) + f32(D) + f32(D, np.nan),
             "grads[1][0]: nan is not a finite float32"),
            ("POST", "gradients", [shape], i64(1, 2) + f32(2 * D - 1) + f32(1, np.inf),
             f"grads[1][{D - 1}]: inf is not a finite float32"),
            ("POST", "gradients", [shape], i64(1, 2) + f32(1, -np.inf) + f32(2 * D - 1),
             "grads[0][0]: -inf is not a finite float32"),
            ("POST", "gradients", [shape], i64(1, N) + f32(2 * D), f"ids[1]: id {N} is out of range"),
            ("POST", "gradients", [shape], i64(-5, 1) + f32(2 * D), "ids[0]: id -5 is out of range"),
            ("POST", "gradients", [shape, ("X-Embedding-Lr", "0")], good,
             "lr must be finite and > 0, got 0"),
            ("POST", "gradients", [shape, ("X-Embedding-Lr", "-1")], good, "got -1"),
            ("POST", "gradients", [shape, ("X-Embedding-Lr", "nan")], good, "got nan"),
            ("POST", "gradients", [shape, ("X-Embedding-Lr", "fast")], good, "not a number"),
            # rows
            ("PUT", "rows", [], good, "a binary rows body needs n,D"),
            ("PUT", "rows", [("X-Embedding-Shape", f"2,{D - 1}")], good, f"D is {D - 1}"),
            ("PUT", "rows", [shape], good[:-4], f"has {len(good) - 4} bytes, expected {len(good)}"),
            ("PUT", "rows", [shape], i64(1, 2) + f32(2 * D, np.nan), "vectors[0][0]: nan"),
            ("PUT", "rows", [shape], i64(N, 2) + f32(2 * D), f"ids[0]: id {N} is out of range"),
            ("PUT", "rows", [shape, ("X-Embedding-Lr", "0.1")], good, "not row assignments"),
        ]
        for method, action, headers, body, fragment in cases:
            with self.subTest(action=action, headers=headers, fragment=fragment):
                code = "out_of_range" if "out of range" in fragment else "invalid_argument"
                self.expect(400, code, fragment, method, action, headers, body)
        # over max_batch: 413, as for JSON
        n = MAX_BATCH + 1
        self.expect(413, "payload_too_large", f"ids: {n} ids exceed max_batch {MAX_BATCH}",
                    "POST", "gradients", [("X-Embedding-Shape", f"{n},{D}")],
                    i64(*[1] * n) + f32(n * D))
        self.expect(413, "payload_too_large", "exceed max_batch", "POST", "lookup", [],
                    i64(*[1] * n))
        # frozen table: 409, binary or not
        self.expect(409, "table_frozen", "frozen", "POST", "gradients", [shape], good, "frozen")
        # nothing changed
        self.assertEqual(self.client.info("adam")["version"], version)
        np.testing.assert_array_equal(bits(self.snapshot_weight("adam")), bits(before))

    def test_binary_headers_with_json_bodies_are_refused(self):
        conn = Connection(self.server.direct_url)
        for name, value in (("X-Embedding-Lr", "0.1"), ("X-Embedding-Shape", f"1,{D}")):
            conn.ready(True)
            body = b'{"ids": [1], "grads": [[0, 0, 0, 0, 0, 0]]}'
            conn.send("POST", "/v1/tables/adam/gradients",
                      [("Content-Type", "application/json"), (name, value)], [body])
            resp = conn.read()
            self.assertEqual(resp.status, 400)
            self.assertIn(f"{name} describes binary bodies", resp.body.decode())
        conn.close()

    def test_binary_bodies_only_where_the_api_takes_them(self):
        for action in ("similarity", "neighbors"):
            resp = self.send("POST", action, [], b"\0" * 16)
            self.assertEqual(resp.status, 415)
            self.assertIn("application/json", resp.body.decode())


if __name__ == "__main__":
    unittest.main()
