"""What every benchmark prints: a table of its figures, then the same figures as one JSON line.

The JSON line is last so that `python bench/x.py | tail -1` is comparable between runs by a script.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --quick: every bench's smallest run (a few hundred digits, one epoch, the fewest grid points that still
# exercise each of its code paths), seconds to a minute or two, so that tests/test_benches.py can run
# every bench in CI and a change that breaks one fails there. Its figures mean nothing.
QUICK_HELP = "the smallest run (tiny data, one epoch, fewest points): checks the bench works; figures mean nothing"
QUICK_SIZES = {"train_limit": 600, "test_limit": 200, "val_size": 150}  # prepare.<MNIST dataset>.*
QUICK_TRAINING = {"train_erm": {"epochs": 1}, "upsample": {"epochs": 1}, "cluster_reweight": {"epochs": 1},
                  "groupdro": {"epochs": 1}, "jtt": {"identification_epochs": 1},
                  "dfr": {"refits": 2, "tune_splits": 2, "held_out_folds": 2}, "xrm": {"batch_size": 32},
                  "lff": {"epochs": 1}}


def add_quick_flag(parser) -> None:
    parser.add_argument("--quick", action="store_true", help=QUICK_HELP)


def quick_params(dataset: str = "biased_mnist") -> dict:
    """The scratch project's params under --quick: a few hundred images (an MNIST dataset's first digits,
    a folder's first images of each split, in turns from each class), one epoch."""
    sizes = {"limit": 200} if dataset == "folder" else dict(QUICK_SIZES)
    return {"prepare": {dataset: sizes}, **QUICK_TRAINING}


# Every seed of a pipeline run (bench/methods.py, bench/clusterfix_backbones.py): each training and sampling
# seed set to it.
SEED_KEYS = ("seed",)  # each section's seed is null: the top-level one (params.yaml)


def add_dataset_flags(parser) -> None:
    """The flags of a bench that runs the pipeline on a full MNIST-based dataset or a folder, over seeds."""
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--dataset", default="biased_mnist", choices=("biased_mnist", "cmnist", "folder"),
                        help="an MNIST-based dataset (built from --mnist-dir), or folder (read from --folder)")
    parser.add_argument("--folder", type=Path,
                        help="dataset folder: an ImageFolder tree (prepare.folder.dir) or a CSV index (.csv)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra `dvc exp run -S` for every run")
    add_quick_flag(parser)


def dataset_params(parser, args) -> dict:
    """The scratch project's params for the flags of `add_dataset_flags`: the dataset and where its files are."""
    if (args.dataset == "folder") != (args.folder is not None):
        parser.error("--folder goes with --dataset folder, and only with it")
    if args.folder is not None:
        layout = "csv" if args.folder.suffix == ".csv" else "dir"
        source = {layout: str(args.folder.resolve())}
    else:
        source = {"mnist_dir": str(args.mnist_dir.resolve())}
    return {"dataset": args.dataset, "prepare": {args.dataset: source}}


def seed_overrides(seed: int, sets: Sequence[str]) -> list[str]:
    """`dvc exp run` arguments: the run's seed (SEED_KEYS), then `sets` (KEY=VALUE each)."""
    return [a for s in [f"{key}={seed}" for key in SEED_KEYS] + list(sets) for a in ("-S", s)]


def machine() -> dict:
    """Where a figure was measured (CPU model and cores, or the GPU), to print beside it."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # the kernels torch ran: figures are bit-identical only where these and the threads match (bench/cpu_kernels.py)
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "aten_kernels": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "widest")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


@dataclass
class SaliencyBench:
    """One model twice (as trained: NCHW with BatchNorm; as `compute_saliency` prepares it: channels-last,
    BatchNorm folded) and one batch of random images in both layouts, on one device."""

    trained: torch.nn.Module
    prepared: torch.nn.Module
    images: torch.Tensor
    images_cl: torch.Tensor
    sync: Callable[[], None]


def saliency_bench(arch: str, size: int, batch: int, device) -> SaliencyBench:
    """Random weights and images, seeded: speed does not depend on them, equality checks do on the seed."""
    import copy

    from masktune.models import build_model
    from masktune.saliency.xgradcam import prepare_for_saliency

    torch.manual_seed(0)
    trained = build_model(arch, 2).to(device).eval()
    prepared = prepare_for_saliency(copy.deepcopy(trained), device, channels_last=True, fold_bn=True)
    images = torch.rand(batch, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return SaliencyBench(trained, prepared, images, images.contiguous(memory_format=torch.channels_last), sync)


def rate(step: Callable[[], object], items_per_step: int, min_seconds: float = 3.0, warmup: int = 1,
         sync: Callable[[], None] = lambda: None) -> float:
    """Items per second of `step`, after `warmup` calls, over at least `min_seconds` (whole steps)."""
    for _ in range(warmup):
        step()
    sync()
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps * items_per_step / elapsed


def print_table(rows: Sequence[dict], title: str) -> None:
    """A plain fixed-width table of dicts sharing their keys; floats with 3 significant digits."""
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def emit_json(figures: dict) -> None:
    """The last line of every benchmark: its figures as one JSON object."""
    print(json.dumps(figures, sort_keys=False))
