"""Benchmark: the test suite's two xdist workers with torch's threads shared (tests/conftest.py) against
torch's default of one thread per core in each worker, side by side in one run on one machine.

Runs the same pytest selection twice with the README's `-n 2 --dist loadfile`: once with OMP_NUM_THREADS
set to the number of cores (what every worker took before conftest shared them), then without it (conftest
gives each worker cores / workers). Prints both wall times and their ratio, then one JSON line.

    python bench/test_threads.py                      # the two heaviest non-end-to-end test files
    python bench/test_threads.py tests/test_train.py tests/test_saliency_store.py tests/test_resume.py
    python bench/test_threads.py --quick                 # tests/test_splits.py (tests)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, add_quick_flag, machine

DEFAULT_FILES = ["tests/test_train.py", "tests/test_saliency_store.py"]
QUICK_FILES = ["tests/test_splits.py"]


def _timed_pytest(files: list[str], threads: int | None) -> float:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "-m", "not slow", *files],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("files", nargs="*", help=f"test files (default: {' '.join(DEFAULT_FILES)})")
    add_quick_flag(parser)
    args = parser.parse_args()
    files = args.files or (QUICK_FILES if args.quick else DEFAULT_FILES)
    cores = os.cpu_count() or 1
    every_core = _timed_pytest(files, cores)
    shared = _timed_pytest(files, None)
    print(f"{' '.join(files)}, 2 xdist workers on {cores} cores:")
    print(f"  OMP_NUM_THREADS={cores} in each worker (torch's default): {every_core:.0f} s")
    print(f"  shared by tests/conftest.py ({max(1, cores // 2)} per worker): {shared:.0f} s")
    print(f"  ratio {every_core / shared:.2f}x")
    print(json.dumps({"machine": machine(), "files": files, "every_core_s": every_core, "shared_s": shared,
                      "ratio": every_core / shared}))


if __name__ == "__main__":
    main()
