"""Benchmark: which CPU settings change a training run's numbers, on this machine, side by side.

The pipeline's reruns are byte-identical on one machine (docs/pipeline.md), but torch picks its CPU kernels
by the instructions the CPU has: oneDNN's convolutions use the widest (AVX2 or AVX-512) unless
`ONEDNN_MAX_CPU_ISA` caps them, ATen's vector kernels likewise (`ATEN_CPU_CAPABILITY`), and a reduction split
over another number of threads (`OMP_NUM_THREADS`) adds in another order. This bench trains train_erm's
network and recipe (the official SmallCNN, SGD lr 0.01, momentum 0.9, weight decay 1e-4, batch 128) for a
few steps on seeded random images once per setting, each in a fresh process with that environment, and
prints a digest of the trained weights: settings with the same digest give the same figures. The default
setting runs twice (a rerun must match itself). Each setting's seconds are side by side on this machine.

    python bench/cpu_kernels.py              # 60 steps per setting
    python bench/cpu_kernels.py --quick      # 4 steps (tests)

To reproduce a figure made on another machine, export the settings its kernels had before `dvc repro` or
`dvc exp run` (docs/pipeline.md, "Reproducing a figure on another machine").
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

from common import ROOT, add_quick_flag, emit_json, machine, print_table

# (label, environment set on top of this process's, minus OMP_NUM_THREADS unless it names it)
SETTINGS = [
    ("default", {}),
    ("default, rerun", {}),
    ("oneDNN capped at AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("ATen capped at AVX2", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("both capped at AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}),
    ("1 thread", {"OMP_NUM_THREADS": "1"}),
    ("2 threads", {"OMP_NUM_THREADS": "2"}),
]


def train_digest(steps: int) -> dict:
    """Train the SmallCNN `steps` SGD steps on seeded random images; the digest of its weights."""
    import torch

    from masktune.models.cnn import SmallCNN
    from masktune.seeding import seed_everything

    generator = seed_everything(0)
    model = SmallCNN(num_classes=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images = torch.rand(512, 3, 28, 28, generator=generator)
    labels = torch.randint(0, 2, (512,), generator=generator)
    start = time.perf_counter()
    for _ in range(steps):
        rows = torch.randint(0, len(images), (128,), generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images[rows]), labels[rows]).backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    weights = b"".join(t.detach().contiguous().numpy().tobytes() for t in model.state_dict().values())
    return {"digest": hashlib.sha256(weights).hexdigest()[:16], "seconds": seconds,
            "aten_kernels": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def run_setting(extra_env: dict, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")}
    if "OMP_NUM_THREADS" not in extra_env:
        env.pop("OMP_NUM_THREADS", None)
    env |= extra_env
    result = subprocess.run([sys.executable, __file__, "--child", str(steps)], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(train_digest(args.child)))
        return
    steps = 4 if args.quick else args.steps
    rows = [{"setting": label, **run_setting(env, steps)} for label, env in SETTINGS]
    default = rows[0]["digest"]
    for row in rows:
        row["same_as_default"] = row["digest"] == default
    print_table([{**row, "seconds": round(row["seconds"], 2)} for row in rows],
                f"SmallCNN, {steps} SGD steps of 128 random images, per CPU setting")
    emit_json({"machine": machine(), "steps": steps, "settings": rows, "rerun_equal": rows[1]["digest"] == default})


if __name__ == "__main__":
    main()
