"""Starts the real embedding-server binary on 127.0.0.1 with an ephemeral
port, a temporary config and data directory, and (with
EMBEDDING_SERVER_PRISM=1) Stoplight Prism's validating proxy in front of it
(tests/prism_proxy.py), so every request of a suite is checked against
proto/openapi.yaml.

EMBEDDING_SERVER_BIN names the binary (default: build/embedding-server of the
source tree).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def binary_path():
    return os.environ.get("EMBEDDING_SERVER_BIN") or os.path.join(ROOT, "build", "embedding-server")


def use_prism():
    return os.environ.get("EMBEDDING_SERVER_PRISM", "") not in ("", "0")


class Server:
    """A running server: .url (through Prism when asked), .direct_url (the
    server itself), .data_dir. stop() ends it and removes its files."""

    def __init__(self, tables, limits=None, env=None):
        self.dir = tempfile.mkdtemp(prefix="es-pytest-")
        self.data_dir = os.path.join(self.dir, "data")
        config = {"listen": {"host": "127.0.0.1", "port": 0}, "data_dir": self.data_dir,
                  "threads": 2, "snapshot": {"on_shutdown": False}, "tables": tables}
        if limits:
            config["limits"] = limits
        self.config_path = os.path.join(self.dir, "config.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        self.log_path = os.path.join(self.dir, "server.log")
        self.proxy = None
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary_path(), "--config", self.config_path],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        try:
            self.direct_url = self._wait_ready()
            self.url = self.direct_url
            if use_prism():
                from prism_proxy import PrismProxy
                self.proxy = PrismProxy(self.direct_url,
                                        log_path=os.path.join(self.dir, "prism.log")).start()
                self.url = self.proxy.url
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        port = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("the server exited: " + self.log())
            m = re.search(r"listening on http://[^:]+:(\d+)", self.log())
            if m:
                port = int(m.group(1))
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        if r.status == 200:
                            return f"http://127.0.0.1:{port}"
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("the server did not become ready: " + self.log())

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def prism_report(self):
        return self.proxy.report() if self.proxy else None

    def stop(self):
        if self.proxy is not None:
            self.proxy.stop()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
