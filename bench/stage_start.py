"""Benchmark: what deterministic kernels cost a stage's start, torch's public call against
`masktune.seeding.deterministic_kernels`, side by side in one run on one machine.

Every training and per-image stage calls `seed_everything` once, in a fresh process. Since torch 2.x,
`torch.use_deterministic_algorithms` also sets a TorchInductor flag, importing inductor and dynamo;
`deterministic_kernels` sets the same kernel flags without that import (tests/test_seeding.py). Each
arm runs in fresh interpreters, alternately, `import torch` first and then the call timed alone. Prints
the medians and their ratio, then one JSON line.

    python bench/stage_start.py              # 5 rounds
    python bench/stage_start.py --quick      # 1 round (tests)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from common import ROOT, add_quick_flag, machine

TIMED = ("import time, torch\n{imports}\nstart = time.perf_counter()\n{call}\n"
         "print(time.perf_counter() - start)")
ARMS = {"public": ("", "torch.use_deterministic_algorithms(True, warn_only=True)"),
        "ours": ("from masktune.seeding import deterministic_kernels", "deterministic_kernels()")}


def _seconds(imports: str, call: str) -> float:
    code = TIMED.format(imports=imports, call=call)
    return float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    add_quick_flag(parser)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    seconds = {arm: [] for arm in ARMS}
    for _ in range(rounds):
        for arm, (imports, call) in ARMS.items():
            seconds[arm].append(_seconds(imports, call))
    public, ours = (statistics.median(seconds[arm]) for arm in ARMS)
    print(f"deterministic kernels in a fresh process (medians of {rounds}): torch.use_deterministic_algorithms "
          f"{public:.3f} s, deterministic_kernels {ours:.4f} s, {public - ours:.2f} s saved per stage")
    print(json.dumps({"machine": machine(), "rounds": rounds, "seconds": seconds, "saved_seconds": public - ours}))


if __name__ == "__main__":
    main()
