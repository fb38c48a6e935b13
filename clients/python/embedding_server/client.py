"""Client: the embedding server's HTTP API as Python calls (numpy in and out).

Rows and gradients travel as binary bodies (little-endian int64 ids, float32
values, the shape in X-Embedding-Shape; API.md "Binary request bodies"), so a
training step costs the network next to nothing; binary=False sends the JSON
form instead, with the same numbers.

One Client holds one keep-alive connection and is not thread-safe: give each
thread its own. Requests on it are answered in the order they were sent, so
apply_gradients(..., wait=True) followed by a lookup always reads the
updated rows; apply_gradients(..., wait=False) only sends, and its answer is
read before the next request's (or by PendingResult.result()), which keeps
that order while the client does other work meanwhile (pipelining).
"""

import collections
import json
import urllib.parse

import numpy as np

from ._http import Connection, ConnectionClosed

BINARY = "application/octet-stream"
JSON = "application/json"

# Most answers a pipelined client leaves unread before it reads them: their
# answers are small, but a bound keeps both sides' buffers from filling.
MAX_PENDING = 16


class ApiError(Exception):
    """An error answer: status (HTTP), code (the API's snake_case code, e.g.
    "out_of_range") and message (the server's sentence)."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class PendingResult:
    """The answer of a request sent with wait=False."""

    __slots__ = ("_client", "_done", "_value", "_error")

    def __init__(self, client):
        self._client = client
        self._done = False
        self._value = None
        self._error = None

    def done(self):
        return self._done

    def result(self):
        """Waits for the answer (reading the ones before it) and returns it,
        or raises its ApiError / ConnectionError."""
        if not self._done:
            self._client._drain(until=self)
        if self._error is not None:
            raise self._error
        return self._value


def _as_ids(ids):
    """Any integer array-like (list, numpy, torch) -> contiguous <i8 array."""
    if hasattr(ids, "detach") and hasattr(ids, "numpy"):  # a torch tensor
        ids = ids.detach().cpu().numpy()
    a = np.asarray(ids)
    if a.size == 0 and a.dtype.kind == "f":
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"ids must be integers, not {a.dtype}")
    return np.asarray(a, dtype="<i8", order="C")  # ascontiguousarray would make 0-d 1-d


def _as_f32(values):
    if hasattr(values, "detach") and hasattr(values, "numpy"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype="<f4", order="C")


def _shape_text(shape):
    return ",".join(str(int(d)) for d in shape)


def _lr_text(lr):
    lr = float(lr)
    return repr(lr)  # the shortest text that reads back to the same double


class Client:
    """Client(url="http://127.0.0.1:8080", token=None, timeout=60.0).

    token: the bearer token (the write token can read too). Every method
    raises ApiError for an error answer and ConnectionError when the server
    cannot be reached."""

    def __init__(self, url="http://127.0.0.1:8080", token=None, timeout=60.0):
        self.url = url
        self._conn = Connection(url, timeout)
        self._auth = [("Authorization", f"Bearer {token}")] if token else []
        self._pending = collections.deque()

    def close(self):
        """Reads any answers still owed, then closes the connection."""
        try:
            if self._pending:
                self._drain()
        finally:
            self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the wire ----

    def _request(self, method, path, headers=(), parts=(), decode=None, wait=True):
        headers = [*self._auth, *headers]
        idle = not self._pending
        self._conn.ready(idle)
        reused = not self._conn.fresh
        handle = PendingResult(self)
        try:
            self._conn.send(method, path, headers, parts)
        except OSError:
            # The server may have answered early (401, 404, 413) and closed
            # while the body was going out: read that answer. A kept-alive
            # socket the server had closed instead has none; nothing of the
            # request was processed then, so it is sent once more, fresh.
            self._pending.append((handle, method, decode))
            self._drain(until=handle)
            if not (idle and reused and isinstance(handle._error, ConnectionClosed)):
                return handle.result()
            handle = PendingResult(self)
            self._conn.ready(True)
            self._conn.send(method, path, headers, parts)
        self._pending.append((handle, method, decode))
        if not wait:
            if len(self._pending) > MAX_PENDING:
                self._drain(until=self._pending[0][0])
            return handle
        self._drain(until=handle)
        return handle.result()

    def _drain(self, until=None):
        """Reads answers in order, up to and including until's (all when
        None). An error of an earlier pipelined request is raised after its
        own answer and those before until's have been read."""
        first_error = None
        while self._pending:
            handle, method, decode = self._pending.popleft()
            try:
                resp = self._conn.read(method)
                handle._value = self._decode(resp, decode)
            except (ApiError, ValueError) as e:
                handle._error = e
            except (OSError, ConnectionError) as e:
                # the connection is gone: every answer still owed is lost
                self._conn.close()
                err = ConnectionClosed(f"no answer to {method}: {e}")
                handle._error = err
                handle._done = True
                for h, _, _ in self._pending:
                    h._error = ConnectionClosed("the connection closed before this answer")
                    h._done = True
                self._pending.clear()
                if handle is not until and first_error is None:
                    first_error = err
                break
            handle._done = True
            if handle is until:
                break
            if handle._error is not None and first_error is None:
                first_error = handle._error
        if first_error is not None:
            raise first_error

    @staticmethod
    def _decode(resp, decode):
        if not 200 <= resp.status < 300:
            raise Client._error(resp)
        if decode is None:
            return Client._json(resp)
        return decode(resp)

    @staticmethod
    def _json(resp):
        if not resp.body:
            return None
        return json.loads(resp.body)

    @staticmethod
    def _error(resp):
        code, message = f"http_{resp.status}", bytes(resp.body[:500]).decode("utf-8", "replace")
        try:
            doc = json.loads(resp.body)
            err = doc.get("error") if isinstance(doc, dict) else None
            if isinstance(err, dict):
                code, message = err.get("code", code), err.get("message", message)
            elif isinstance(doc, dict) and "title" in doc:  # a proxy's problem+json
                code, message = f"http_{resp.status}", json.dumps(doc)
        except ValueError:
            pass
        return ApiError(resp.status, code, message)

    @staticmethod
    def _table_path(table, action=""):
        path = "/v1/tables/" + urllib.parse.quote(table, safe="")
        return path + ("/" + action if action else "")

    def _post_json(self, method, path, doc, decode=None, accept_binary=False, wait=True):
        headers = [("Content-Type", JSON)]
        if accept_binary:
            headers.append(("Accept", BINARY))
        body = json.dumps(doc, separators=(",", ":")).encode()
        return self._request(method, path, headers, [body], decode, wait)

    @staticmethod
    def _rows_answer(shape=None):
        """Decodes a lookup answer, binary or JSON, into a float32 array."""

        def decode(resp):
            ctype = resp.headers.get("content-type", "").split(";")[0].strip()
            if ctype == BINARY:
                text = resp.headers.get("x-embedding-shape", "")
                got = tuple(int(d) for d in text.split(",") if d.strip())
                rows = np.frombuffer(resp.body, dtype="<f4")
                out_shape = got if shape is None else tuple(shape) + got[-1:]
                return rows.reshape(out_shape)
            doc = json.loads(resp.body)
            rows = np.asarray(doc["embeddings"], dtype=np.float32)
            return rows.reshape(doc["shape"] if shape is None else tuple(shape) + (doc["shape"][-1],))

        return decode

    # ---- introspection ----

    def health(self):
        """{"status": "ok"} while the server runs."""
        return self._request("GET", "/healthz")

    def ready(self):
        """True once every table is loaded."""
        try:
            self._request("GET", "/readyz")
            return True
        except ApiError as e:
            if e.status == 503:
                return False
            raise

    def tables(self):
        """Every table's info (a list of dicts)."""
        return self._request("GET", "/v1/tables")["tables"]

    def info(self, table):
        """The table's info: num_embeddings, embedding_dim, padding_idx,
        max_norm, optimizer, version, ..."""
        return self._request("GET", self._table_path(table))

    # ---- reads ----

    def lookup(self, table, ids=None, *, tokens=None, binary=True):
        """The rows of ids (any shape: list, numpy or torch integers) as a
        float32 array of shape ids.shape + (D,), as nn.Embedding's forward.
        tokens= looks up tokens instead (a JSON request, binary answer).
        binary=False uses JSON both ways (the same numbers)."""
        path = self._table_path(table, "lookup")
        if tokens is not None:
            return self._post_json("POST", path, {"tokens": tokens}, self._rows_answer(),
                                   accept_binary=binary)
        a = _as_ids(ids)
        if not binary:
            return self._post_json("POST", path, {"ids": a.tolist()}, self._rows_answer(a.shape))
        headers = [("Content-Type", BINARY), ("Accept", BINARY),
                   ("X-Embedding-Shape", _shape_text(a.shape) if a.ndim else "")]
        if a.ndim == 0:  # a 0-d input travels as a flat list of one id
            headers.pop()
        return self._request("POST", path, headers, [a], self._rows_answer(a.shape))

    def lookup_bags(self, table, bags, mode=None, per_sample_weights=None, *, binary=True):
        """nn.EmbeddingBag's forward: one pooled row per bag, (B, D)."""
        doc = {"bags": [[int(i) for i in _as_ids(b).reshape(-1)] for b in bags]}
        if mode is not None:
            doc["mode"] = mode
        if per_sample_weights is not None:
            doc["per_sample_weights"] = [_as_f32(w).reshape(-1).tolist()
                                         for w in per_sample_weights]
        return self._post_json("POST", self._table_path(table, "lookup"), doc,
                               self._rows_answer(), accept_binary=binary)

    def similarity(self, table, pairs, metric=None):
        """One score per pair of ids (or tokens), as a float32 array."""
        if hasattr(pairs, "tolist"):
            pairs = pairs.tolist()
        doc = {"pairs": [list(p) for p in pairs]}
        if metric is not None:
            doc["metric"] = metric
        scores = self._post_json("POST", self._table_path(table, "similarity"), doc)["scores"]
        return np.array([np.nan if s is None else s for s in scores], dtype=np.float32)

    def neighbors(self, table, ids=None, *, tokens=None, vectors=None, k=None, metric=None):
        """Exact top-k per query: a list (one per query) of
        {"id", "score"[, "token"]} dicts, best first."""
        if vectors is not None:
            doc = {"vectors": _as_f32(vectors).reshape(-1, _as_f32(vectors).shape[-1]).tolist()}
        elif tokens is not None:
            doc = {"tokens": list(tokens)}
        else:
            doc = {"ids": _as_ids(ids).reshape(-1).tolist()}
        if k is not None:
            doc["k"] = int(k)
        if metric is not None:
            doc["metric"] = metric
        return self._post_json("POST", self._table_path(table, "neighbors"), doc)["results"]

    # ---- writes ----

    def apply_gradients(self, table, ids, grads, lr=None, *, binary=True, wait=True):
        """One optimizer step: grads (ids.shape + (D,), float32) is the
        gradient of the loss with respect to lookup(table, ids), as
        loss.backward() through nn.Embedding(sparse=True) then
        optimizer.step(). lr overrides the table's learning rate for this
        step. Returns {"version", "rows"}; with wait=False a PendingResult
        (the answer is read before the next request's)."""
        a = _as_ids(ids)
        g = _as_f32(grads)
        if g.ndim != a.ndim + 1 or g.shape[:-1] != a.shape:
            raise ValueError(f"grads has shape {g.shape}; expected the ids' shape {a.shape} "
                             f"plus D")
        path = self._table_path(table, "gradients")
        if not binary:
            doc = {"ids": a.tolist(), "grads": g.tolist()}
            if lr is not None:
                doc["lr"] = float(lr)
            return self._post_json("POST", path, doc, wait=wait)
        headers = [("Content-Type", BINARY), ("X-Embedding-Shape", f"{a.size},{g.shape[-1]}")]
        if lr is not None:
            headers.append(("X-Embedding-Lr", _lr_text(lr)))
        return self._request("POST", path, headers, [a, g], wait=wait)

    def assign_rows(self, table, ids, vectors, *, binary=True):
        """weight[ids[i]] = vectors[i] (in order; a later duplicate wins),
        also on frozen tables. ids: 1-D; vectors: (n, D). Returns
        {"version", "rows"}."""
        a = _as_ids(ids)
        v = _as_f32(vectors)
        if a.ndim != 1 or v.ndim != 2 or v.shape[0] != a.shape[0]:
            raise ValueError(f"ids must be 1-D and vectors (len(ids), D); got {a.shape} and "
                             f"{v.shape}")
        path = self._table_path(table, "rows")
        if not binary:
            return self._post_json("PUT", path, {"ids": a.tolist(), "vectors": v.tolist()})
        headers = [("Content-Type", BINARY), ("X-Embedding-Shape", f"{v.shape[0]},{v.shape[1]}")]
        return self._request("PUT", path, headers, [a, v])

    def snapshot(self, table):
        """Writes the table to the server's data directory: {"path", "version"}."""
        return self._request("POST", self._table_path(table, "snapshot"))

    def wait(self):
        """Reads every answer still owed (raises the first error)."""
        self._drain()
