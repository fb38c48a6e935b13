#!/usr/bin/python3
"""prism_proxy.py - Stoplight Prism's validating proxy in front of a server,
so that real requests and answers are checked against proto/openapi.yaml.

    client -> front shim -> prism proxy --errors -> back shim -> server

Prism (tests/prism, pinned) checks every request and every answer against the
document; with --errors a violation becomes its answer (422 for a request,
500 for an answer) instead of the server's. The front shim records every
violation Prism reports (its sl-violations header and its problem answers),
and at the end the log is searched for "Violation" lines as well.

Why the shims: Prism 5 reads every body that is not JSON as UTF-8 text and
writes it back out as UTF-8 (stoplightio/prism#1321, #2349), which corrupts
binary bodies in both directions. For application/octet-stream bodies the
front shim re-encodes each byte as one character (latin-1 -> UTF-8) before
Prism and undoes it after, and the back shim does the reverse around the
server; so Prism still sees and validates the method, path, headers, media
types and statuses of the binary exchanges, and the bytes arrive intact. JSON
and text bodies pass untouched.

As a script: prism_proxy.py --upstream URL [--url-file F] [--report F]
prints the proxy's URL (and writes it to F), runs until SIGTERM or stdin
closes, then writes the violations as JSON to the report file and exits 1 if
there were any. As a module: with PrismProxy(upstream) as p: ... p.url ...
p.violations.
"""

import argparse
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "..", "proto", "openapi.yaml")
PRISM = os.path.join(HERE, "prism", "node_modules", ".bin", "prism")

BINARY = "application/octet-stream"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "te", "trailers", "transfer-encoding", "upgrade", "content-length"}


def prism_available():
    return os.access(PRISM, os.X_OK)


def is_binary(content_type):
    return (content_type or "").split(";")[0].strip().lower() == BINARY


def widen(body):
    """Bytes -> UTF-8 text of one character per byte: what Prism keeps intact."""
    return body.decode("latin-1").encode("utf-8")


def narrow(body):
    """The inverse of widen."""
    return body.decode("utf-8").encode("latin-1")


class _Shim(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _make_handler(target, into_target, from_target, on_answer):
    """A request handler forwarding to target ("host", port), re-encoding
    binary request bodies with into_target and binary answers with
    from_target; on_answer(method, path, status, headers, body) sees what
    the target answered."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # quiet
            pass

        def _body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _forward(self):
            body = self._body()
            if body and is_binary(self.headers.get("Content-Type")):
                body = into_target(body)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or self.command in ("POST", "PUT"):
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(*target, timeout=120)
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                answer = resp.read()
                status, reason = resp.status, resp.reason
                resp_headers = resp.getheaders()
            finally:
                conn.close()
            ctype = dict((k.lower(), v) for k, v in resp_headers).get("content-type")
            on_answer(self.command, self.path, status, resp_headers, answer)
            if answer and is_binary(ctype):
                answer = from_target(answer)
            self.send_response(status, reason)
            for k, v in resp_headers:
                if k.lower() not in HOP_BY_HOP and k.lower() not in ("date", "server"):
                    self.send_header(k, v)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _forward

    return Handler


class PrismProxy:
    def __init__(self, upstream, spec=SPEC, prism=PRISM, log_path=None):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.spec = spec
        self.prism = prism
        self.log_path = log_path
        self.violations = []
        self.requests = 0
        self._lock = threading.Lock()
        self._servers = []
        self._proc = None
        self._log = None
        self.url = None

    # what Prism answered: its own problem answers and sl-violations count
    def _seen(self, method, path, status, headers, body):
        found = []
        for k, v in headers:
            if k.lower() == "sl-violations":
                found.append(v)
        ctype = dict((k.lower(), v) for k, v in headers).get("content-type", "")
        if "problem+json" in ctype:
            found.append(body.decode("utf-8", "replace"))
        with self._lock:
            self.requests += 1
            if found:
                self.violations.append({"method": method, "path": path, "status": status,
                                        "violations": found})

    def _serve(self, handler):
        server = _Shim(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._servers.append(server)
        return server.server_address[1]

    def start(self, timeout=60):
        if not prism_available():
            raise RuntimeError(f"Prism is not installed ({self.prism}); run scripts/deps.sh test")
        up = (self.upstream.hostname, self.upstream.port)
        back = self._serve(_make_handler(up, narrow, widen, lambda *a: None))
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="es-prism-", suffix=".log")
            os.close(fd)
        self._log = open(self.log_path, "w")
        self._proc = subprocess.Popen(
            [self.prism, "proxy", "--errors", "--host", "127.0.0.1", "--port", "0",
             self.spec, f"http://127.0.0.1:{back}"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"})
        port = None
        deadline = time.monotonic() + timeout
        while port is None and time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prism exited: {self.log_text()[-2000:]}")
            m = re.search(r"Prism is listening on http://[^:]+:(\d+)", self.log_text())
            if m:
                port = int(m.group(1))
            else:
                time.sleep(0.1)
        if port is None:
            self.stop()
            raise RuntimeError(f"prism did not start in {timeout} s: {self.log_text()[-2000:]}")
        front = self._serve(_make_handler(("127.0.0.1", port), widen, narrow, self._seen))
        self.url = f"http://127.0.0.1:{front}"
        return self

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_violations(self):
        return [line for line in self.log_text().splitlines() if "Violation" in line]

    def stop(self):
        for s in self._servers:
            s.shutdown()
            s.server_close()
        self._servers = []
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def report(self):
        """Everything Prism objected to: answers seen and log lines."""
        return {"requests": self.requests, "violations": self.violations,
                "log_violations": self.log_violations()}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--url-file")
    ap.add_argument("--report")
    ap.add_argument("--log")
    args = ap.parse_args()
    proxy = PrismProxy(args.upstream, log_path=args.log).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    print(proxy.url, flush=True)
    if args.url_file:
        with open(args.url_file + ".tmp", "w") as f:
            f.write(proxy.url + "\n")
        os.rename(args.url_file + ".tmp", args.url_file)
    while not stop.wait(0.2):
        pass
    proxy.stop()
    report = proxy.report()
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    bad = report["violations"] or report["log_violations"]
    print(f"prism_proxy: {report['requests']} requests, "
          f"{len(report['violations'])} with violations", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
