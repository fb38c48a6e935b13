#!/usr/bin/python3
"""Runs the Python client's tests (ctest: python_client, python_client_prism).

Exits 77 (ctest's "skipped") with a clear message when numpy or torch is not
importable, or, with EMBEDDING_SERVER_PRISM=1, when Prism is not installed;
scripts/deps.sh test installs them (Debian's python3-torch, python3-numpy;
npm ci in tests/prism).
"""
import os
import sys
import unittest

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import numpy  # noqa: F401
    import torch  # noqa: F401
except ImportError as e:
    print(f"python client tests SKIPPED: {e.name} is not importable by {sys.executable} "
          f"(install python3-numpy and python3-torch: scripts/deps.sh test)")
    sys.exit(SKIP)

import harness  # noqa: E402

if not os.access(harness.binary_path(), os.X_OK):
    print(f"python client tests: no server binary at {harness.binary_path()}")
    sys.exit(1)
if harness.use_prism():
    from prism_proxy import prism_available
    if not prism_available():
        print("python client tests through Prism SKIPPED: Prism is not installed "
              "(scripts/deps.sh test runs npm ci in tests/prism)")
        sys.exit(SKIP)

suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py")
result = unittest.TextTestRunner(verbosity=2).run(suite)
ok = result.wasSuccessful()
skipped = len(result.skipped)
passed = result.testsRun - len(result.failures) - len(result.errors) - skipped
print(f"{passed} passed, {len(result.failures) + len(result.errors)} failed, {skipped} skipped")
sys.exit(0 if ok else 1)
