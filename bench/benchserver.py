"""Starts a bench server: the built embedding-server on 127.0.0.1 (ephemeral
port) with one table, in a temporary folder removed at stop. Shared by
bench/train_loop.py and bench/gradient_rate.py."""

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

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))


class BenchServer:
    def __init__(self, table, build=None, threads=2):
        build = build or os.path.join(ROOT, "build")
        self.bin = os.path.join(build, "embedding-server")
        self.durability = os.environ.get("DURABILITY")  # sync (the server's default), interval, none
        if not os.access(self.bin, os.X_OK):
            sys.exit(f"no {self.bin}: build first (cmake --build build)")
        self.dir = tempfile.mkdtemp(prefix="es-bench-")
        cfg = {"listen": {"host": "127.0.0.1", "port": 0}, "data_dir": os.path.join(self.dir, "data"),
               "threads": threads, "log_level": "info", "snapshot": {"on_shutdown": False},
               "tables": [table]}
        if self.durability:
            cfg["durability"] = self.durability
        path = os.path.join(self.dir, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.log = os.path.join(self.dir, "server.log")
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen([self.bin, "--config", path], stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = open(self.log).read()
            m = re.search(r"listening on http://[^:]+:(\d+)", text)
            if m:
                self.url = f"http://127.0.0.1:{m.group(1)}"
                try:
                    with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                        if r.status == 200:
                            return
                except OSError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        sys.exit("the bench server did not start: " + open(self.log).read()[-2000:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._out.close()
        shutil.rmtree(self.dir, ignore_errors=True)
