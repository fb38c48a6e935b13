"""RemoteEmbedding: a table in the service used as a torch.nn.Embedding.

    emb = RemoteEmbedding(Client(url), "items")
    opt = RemoteOptimizer(emb)           # or emb.step() / emb.zero_grad()
    for ids, target in batches:
        out = emb(ids)                   # rows for ids of any shape, requires grad
        loss = loss_fn(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()                       # one optimizer step in the service

forward() fetches the rows (binary both ways) into a tensor that requires
grad; backward() leaves the gradient of the loss with respect to those rows
in it, as nn.Embedding(sparse=True)'s backward does for the rows of the ids;
step() posts the gradients of every forward since the last step as one
gradient request, which is one optimizer step of the table's optimizer
(SGD, SparseAdam or Adagrad, with PyTorch's arithmetic). Duplicate ids,
padding_idx, scale_grad_by_freq and max_norm are the table's settings and
behave as in nn.Embedding, because the service applies them.

Pipelining (pipeline=True, the default): step() sends the gradients and
returns at once;
the answer is read before the next request's (the next forward's lookup)
on the same connection. The server handles the requests of one connection
in order, so the next forward reads the rows after the step, exactly as the
sequential loop does: the results are identical, only errors of a step
surface one call later (at the next forward, wait() or sync()). Overlapping
a lookup with the previous step on a second connection would change the
semantics (the lookup may read rows before the step changed them, stale by
one step, as asynchronous SGD), so this module does not do it.
"""

import numpy as np
import torch

from .client import Client


class RemoteEmbedding(torch.nn.Module):
    """RemoteEmbedding(client, table, *, pipeline=True, binary=True, lr=None).

    client: a Client or a URL. pipeline=False waits for each step's answer
    in step() (same results; slower). binary=False sends JSON bodies (the same
    numbers; slower). lr overrides the table's learning rate in every step
    (step(lr=...) overrides it for one). Attributes as nn.Embedding:
    num_embeddings, embedding_dim, padding_idx, max_norm, norm_type,
    scale_grad_by_freq, sparse (True: the gradient covers only the rows
    looked up)."""

    def __init__(self, client, table, *, pipeline=True, binary=True, lr=None):
        super().__init__()
        self.client = client if isinstance(client, Client) else Client(client)
        self.table = table
        info = self.client.info(table)
        self.num_embeddings = info["num_embeddings"]
        self.embedding_dim = info["embedding_dim"]
        self.padding_idx = info["padding_idx"]
        self.max_norm = info["max_norm"]
        self.norm_type = info["norm_type"]
        self.scale_grad_by_freq = info["scale_grad_by_freq"]
        self.optimizer_config = info["optimizer"]
        self.sparse = True
        self.pipeline = pipeline
        self.binary = binary
        self.lr = lr
        # the answer of the last step whose answer was read: {"version", "rows"}
        # (with pipelining, read at the next forward or sync())
        self.last_step = None
        self._saved = []  # (ids as int64 ndarray, rows tensor) per forward
        self._inflight = None

    def extra_repr(self):
        return (f"{self.client.url!r}, {self.table!r}, {self.num_embeddings}, "
                f"{self.embedding_dim}, padding_idx={self.padding_idx}")

    def forward(self, ids):
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(ids)
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"RemoteEmbedding expects integer ids (Long or Int), got {ids.dtype}")
        a = ids.detach().cpu().numpy()
        rows = torch.from_numpy(self.client.lookup(self.table, a, binary=self.binary))
        if self._inflight is not None:  # its answer was read before the lookup's
            self.last_step = self._inflight.result()
            self._inflight = None
        if torch.is_grad_enabled():
            rows.requires_grad_(True)
            self._saved.append((a, rows))
        return rows

    def _gradients(self):
        """The ids and gradient rows of every forward since the last step
        that received a gradient. Several forwards are combined as torch
        accumulates their sparse gradients into weight.grad (merge_sparse),
        so the step sums duplicates in the same order as in-process."""
        got = [(a.reshape(-1), r.grad.reshape(-1, self.embedding_dim))
               for a, r in self._saved if r.grad is not None]
        self._saved = []
        if not got:
            return None, None
        ids, grads = got[0]
        for more_ids, more_grads in got[1:]:
            ids, grads = merge_sparse(ids, grads, more_ids, more_grads)
        return ids, grads.contiguous()

    def step(self, lr=None):
        """Posts the gradients since the last step as one optimizer step.
        Returns {"version", "rows"} (a PendingResult with pipeline=True), or
        None when no forward received a gradient (as torch's optimizers skip
        a parameter without grad)."""
        ids, grads = self._gradients()
        if ids is None:
            return None
        lr = self.lr if lr is None else lr
        if self.pipeline:
            self._inflight = self.client.apply_gradients(self.table, ids, grads.numpy(), lr,
                                                         binary=self.binary, wait=False)
            return self._inflight
        self.last_step = self.client.apply_gradients(self.table, ids, grads.numpy(), lr,
                                                     binary=self.binary)
        return self.last_step

    def zero_grad(self, set_to_none=True):
        """Forgets the gradients of the forwards since the last step (as
        Optimizer.zero_grad: called before or after the forward, the next
        backward starts from nothing)."""
        super().zero_grad(set_to_none)
        for _, rows in self._saved:
            rows.grad = None

    def sync(self):
        """Waits for a pipelined step; returns its answer (or raises its error)."""
        if self._inflight is not None:
            self.last_step = self._inflight.result()
            self._inflight = None
        return self.last_step

    def fetch_weight(self, chunk=65536):
        """The whole table as a (num_embeddings, D) tensor, by lookups of
        every id. On a max_norm table this renormalizes every row above it,
        as a forward over all ids would."""
        out = np.empty((self.num_embeddings, self.embedding_dim), dtype=np.float32)
        for start in range(0, self.num_embeddings, chunk):
            ids = np.arange(start, min(start + chunk, self.num_embeddings), dtype=np.int64)
            out[start:start + len(ids)] = self.client.lookup(self.table, ids)
        return torch.from_numpy(out)


def merge_sparse(ia, va, ib, vb):
    """The sum of two uncoalesced sparse gradients (ids ia with rows va, ib
    with vb) as torch 1.13 forms it when autograd adds them: one pass over
    both in step, as a merge of sorted lists; equal ids add their rows
    there, otherwise the smaller id is taken, then whatever is left. Row
    sums are float32 additions, which commute, so the operands' order does
    not matter."""
    i = j = 0
    na, nb = len(ia), len(ib)
    take_a, take_b = [], []  # per output row: index into a / b, or -1
    while i < na and j < nb:
        x, y = ia[i], ib[j]
        if x < y:
            take_a.append(i); take_b.append(-1); i += 1
        elif y < x:
            take_a.append(-1); take_b.append(j); j += 1
        else:
            take_a.append(i); take_b.append(j); i += 1; j += 1
    take_a += list(range(i, na)); take_b += [-1] * (na - i)
    take_a += [-1] * (nb - j); take_b += list(range(j, nb))
    ta, tb = torch.tensor(take_a), torch.tensor(take_b)
    ids = np.where(ta.numpy() >= 0, ia[ta.clamp(min=0).numpy()], ib[tb.clamp(min=0).numpy()])
    rows_a, rows_b = va[ta.clamp(min=0)], vb[tb.clamp(min=0)]
    in_a, in_b = (ta >= 0)[:, None], (tb >= 0)[:, None]
    # a row from one side stays as it is (adding 0 would turn -0.0 into +0.0)
    rows = torch.where(in_a & in_b, rows_a + rows_b, torch.where(in_a, rows_a, rows_b))
    return ids, rows


class RemoteOptimizer:
    """An optimizer-like object for RemoteEmbedding modules: step() posts each
    one's gradients as one step of its table's optimizer, zero_grad() forgets
    them. embeddings: a RemoteEmbedding, a list of them, or any nn.Module
    whose submodules include them. Use one RemoteEmbedding per table (as one
    nn.Embedding): two modules on one table would make two steps."""

    def __init__(self, embeddings, lr=None):
        if isinstance(embeddings, torch.nn.Module):
            found = [m for m in embeddings.modules() if isinstance(m, RemoteEmbedding)]
        else:
            found = list(embeddings)
        if not found:
            raise ValueError("RemoteOptimizer got no RemoteEmbedding")
        self.embeddings = found
        self.lr = lr

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for e in self.embeddings:
            e.step(lr=self.lr)
        return loss

    def zero_grad(self, set_to_none=True):
        for e in self.embeddings:
            e.zero_grad(set_to_none)

    def sync(self):
        """Waits for every pipelined step; returns the last answers, one per
        RemoteEmbedding."""
        return [e.sync() for e in self.embeddings]
