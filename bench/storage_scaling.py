"""Benchmark 3: memory, time and output bytes of `compute_saliency` + `materialize_masked_dataset` vs N.

For each N it writes a synthetic prepared dataset of N 224 x 224 RGB images (a cycled pool of
drawn shapes, class 1 with a white disc, in the exact layout `prepare` writes), trains a `tiny_cnn`
on the pool for a few steps (its target layer is 7 x 7 at 224 x 224, like ResNet-50's, so the
saliency and mask files are shaped as for ResNet-50 and its maps pick out the disc, while its
compute stays small enough that the data path is what gets measured), then runs the two
stages as `dvc repro` would (`python -m stages...` in a scratch folder with this project's
dvc.yaml and params.yaml) and samples the memory of the stage's process tree every 20 ms.

Prints per N and stage: wall seconds, microseconds per image, peak RSS of the stage process, peak
PSS of the stage process and its DataLoader workers (shared pages counted once), output bytes per
image; then the peak ratio largest-N / smallest-N and the projection to CelebA's 162,770 training
images; then the storage options behind the design (masktune/saliency/file.py, data/masks.py),
measured on the first 2,000 images.

    python bench/storage_scaling.py [--sizes 10000 60000 200000] [--workdir /tmp/masktune-scaling]
    python bench/storage_scaling.py --quick    # N = 300 and 600 in a temporary folder (tests)
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import yaml
from common import ROOT, add_quick_flag, emit_json, machine, print_table

sys.path.insert(0, str(ROOT / "tests"))
from fixtures_datasets import prepared_attributes

from masktune.config.files import parse_yaml
from masktune.data.masks import apply_masks, read_packed_masks, unpack_masks
from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.io.hdf5 import create_rows, h5_output
from masktune.models import build_model
from masktune.models.checkpoint import save_checkpoint
from masktune.saliency.xgradcam import full_resolution
from masktune.seeding import seed_everything
from masktune.train.loop import make_optimizer, train_epoch

CELEBA_TRAIN = 162_770
SIZE = 224
POOL = 256  # distinct synthetic images, cycled


def synthetic_pool(seed: int = 0) -> np.ndarray:
    """POOL images of a few filled rectangles and discs on a colour gradient, odd ones (class 1) with
    a white disc (compressible, like photos are not, but the stages' memory and outputs do not depend
    on the pixels' entropy)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    pool = np.empty((POOL, SIZE, SIZE, 3), dtype=np.uint8)
    for k in range(POOL):
        base = rng.integers(0, 256, 3)
        image = (base + (y[..., None] * rng.integers(-1, 2, 3) // 2)).clip(0, 255)
        for _ in range(4):
            cy, cx, r = rng.integers(0, SIZE, 2).tolist() + [int(rng.integers(10, 50))]
            inside = (y - cy) ** 2 + (x - cx) ** 2 < r * r if rng.random() < 0.5 else \
                (abs(y - cy) < r) & (abs(x - cx) < r)
            image[inside] = rng.integers(0, 200, 3)
        if k % 2:
            cy, cx = rng.integers(30, SIZE - 30, 2)
            image[(y - cy) ** 2 + (x - cx) ** 2 < 20 ** 2] = 255
        pool[k] = image
    return pool


def write_prepared(path: Path, n: int, pool: np.ndarray) -> None:
    """A prepared file with one `train` split of n images, written in chunks (as `prepare` lays it out)."""
    rng = np.random.default_rng(n)
    labels, attributes = np.arange(n) % POOL % 2, rng.integers(0, 2, n)
    with h5_output(path, prepared_attributes("biased_mnist")) as f:
        group = f.create_group("train")
        images = create_rows(group, "images", n, (SIZE, SIZE, 3), np.uint8)
        step = 2048
        for first in range(0, n, step):
            rows = np.arange(first, min(first + step, n))
            images[first:first + len(rows)] = pool[rows % POOL]
        for name, values in (("labels", labels), ("attributes", attributes), ("groups", 2 * attributes + labels),
                             ("source_index", np.arange(n))):
            group.create_dataset(name, data=values.astype(np.int64), track_times=False)


def _tree(root: int) -> list[int]:
    """root and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kib(pid: int, path: str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(command: list[str], cwd: Path) -> dict:
    """Run a stage; its wall time, the peak RSS of the stage process (the kernel's high-water mark
    VmHWM, which is monotonic and reset by exec, so polling it misses at most the last 20 ms; wait4's
    ru_maxrss would count the pages of this forking parent), and the peak PSS of the whole process
    tree with its DataLoader workers, sampled every 20 ms (shared pages counted once; a sample can
    miss a short spike, so this one is a lower bound)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    log = cwd / "stage.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    peak_pss, peak_rss, finished = 0, 0, threading.Event()

    def sample() -> None:
        nonlocal peak_pss, peak_rss
        while not finished.is_set():
            peak_rss = max(peak_rss, _kib(process.pid, "status", "VmHWM:"))
            peak_pss = max(peak_pss, sum(_kib(p, "smaps_rollup", "Pss:") for p in _tree(process.pid)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status = os.waitpid(process.pid, 0)
    seconds = time.perf_counter() - start
    finished.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{log.read_text()}")
    return {"seconds": seconds, "peak_rss_mb": peak_rss / 1024, "peak_pss_tree_mb": peak_pss / 1024}


def scratch_project(folder: Path, batch_size: int, pool: np.ndarray) -> None:
    """params.yaml, dvc.yaml and a tiny_cnn trained for a few epochs on the pool (class = disc)."""
    params = parse_yaml((ROOT / "params.yaml").read_text())
    params["saliency"]["batch_size"] = batch_size
    params["saliency"]["workers"] = 1  # 224 x 224 batches: a reader process decompresses the next one
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    generator = seed_everything(0)
    model = build_model("tiny_cnn", 2)
    optimizer = make_optimizer(model, 0.05, 0.9, 1e-4)
    samples = PixelSplit.from_samples(SampleSet(pool, np.arange(POOL) % 2, np.zeros(POOL, dtype=np.int64),
                                                np.arange(POOL)))
    for _ in range(20):
        loss = train_epoch(model, optimizer, samples, 32, generator, torch.device("cpu"), "tiny_cnn")
    print(f"tiny_cnn trained on the pool: loss {loss['loss']:.3f}", flush=True)
    save_checkpoint(folder / "model.pt", model, optimizer, arch="tiny_cnn", num_classes=2, epoch=20,
                    val_accuracy=0.0)


def measure_n(folder: Path, n: int, pool: np.ndarray) -> list[dict]:
    start = time.perf_counter()
    write_prepared(folder / "prepared.h5", n, pool)
    print(f"N={n:,}: synthetic data written in {time.perf_counter() - start:.0f} s "
          f"({(folder / 'prepared.h5').stat().st_size / 1e9:.2f} GB)", flush=True)
    python = [sys.executable, "-m"]
    stages = {
        "compute_saliency": (python + ["stages.compute_saliency", "--data", "prepared.h5", "--model", "model.pt",
                                       "--out", "saliency.h5"], "saliency.h5"),
        "materialize_masked_dataset": (python + ["stages.materialize_masked_dataset", "--method", "masktune",
                                                 "--data", "prepared.h5", "--saliency", "saliency.h5",
                                                 "--out", "masks.h5", "--metrics", "mask.json",
                                                 "--gallery", "gallery"], "masks.h5"),
    }
    rows = []
    for stage, (command, output) in stages.items():
        figures = run_measured(command, folder)
        rows.append({"N": n, "stage": stage, **figures, "us_per_image": figures["seconds"] / n * 1e6,
                     "bytes_per_image": (folder / output).stat().st_size / n})
        print(f"  {stage}: {figures['seconds']:.1f} s, peak RSS {figures['peak_rss_mb']:.0f} MB", flush=True)
    return rows


def storage_options(folder: Path, n: int) -> list[dict]:
    """Bytes per image of the alternatives, on the first n images of the last run's files."""
    with h5py.File(folder / "prepared.h5", "r") as f:
        images = f["train/images"][:n]
    with h5py.File(folder / "saliency.h5", "r") as f:
        cams = f["maps"][:n]  # the feature-map maps (masktune/saliency/file.py)
    full = full_resolution(torch.from_numpy(cams), (SIZE, SIZE)).numpy()
    packed = read_packed_masks(folder / "masks.h5", n_rows(folder), (SIZE, SIZE), np.arange(n))
    masked = apply_masks(images, unpack_masks(packed, SIZE, SIZE))
    options = [("saliency", "feature-map cams float32 (chosen)", cams.nbytes / n, _gzip_bytes(folder, "cams", cams)),
               ("saliency", "full-resolution maps float32", full.nbytes / n, _gzip_bytes(folder, "full", full)),
               ("saliency", "full-resolution maps float16", full.nbytes / n / 2,
                _gzip_bytes(folder, "full16", full.astype(np.float16))),
               ("masks", "bit-packed masks (chosen)", packed.nbytes / n, _gzip_bytes(folder, "packed", packed)),
               ("masks", "masked image copies uint8", masked.nbytes / n, _gzip_bytes(folder, "masked", masked))]
    return [{"output": o, "option": name, "raw_bytes_per_image": raw, "gzip4_bytes_per_image": gz,
             "celeba_gb": gz * CELEBA_TRAIN / 1e9} for o, name, raw, gz in options]


def n_rows(folder: Path) -> int:
    with h5py.File(folder / "masks.h5", "r") as f:
        return f["masks"].shape[0]


def _gzip_bytes(folder: Path, name: str, array: np.ndarray) -> float:
    """Bytes per image of `array` stored the project's way (create_rows: chunked, gzip 4)."""
    path = folder / f"option-{name}.h5"
    with h5py.File(path, "w") as f:
        create_rows(f, "x", len(array), array.shape[1:], array.dtype)[...] = array
    size = path.stat().st_size / len(array)
    path.unlink()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000, 200_000])
    parser.add_argument("--batch-size", type=int, default=64, help="saliency.batch_size for 224 x 224 images")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/masktune-scaling"))
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.workdir = [300, 600], Path(tempfile.mkdtemp(prefix="masktune-scaling-"))

    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = synthetic_pool()
    scratch_project(args.workdir, args.batch_size, pool)
    rows = []
    for n in args.sizes:
        rows += measure_n(args.workdir, n, pool)
    options = storage_options(args.workdir, min(2000, min(args.sizes)))
    shutil.rmtree(args.workdir)

    first, last = min(args.sizes), max(args.sizes)
    summary = {}
    for stage in ("compute_saliency", "materialize_masked_dataset"):
        small = next(r for r in rows if r["N"] == first and r["stage"] == stage)
        large = next(r for r in rows if r["N"] == last and r["stage"] == stage)
        summary[stage] = {"peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
                          "peak_pss_tree_ratio": large["peak_pss_tree_mb"] / small["peak_pss_tree_mb"],
                          "us_per_image_ratio": large["us_per_image"] / small["us_per_image"]}
    bytes_per_image = sum(r["bytes_per_image"] for r in rows if r["N"] == last)
    summary["celeba_projection_gb"] = bytes_per_image * CELEBA_TRAIN / 1e9

    print_table(rows, f"{SIZE} x {SIZE} images, tiny_cnn, saliency.batch_size {args.batch_size} ({machine()})")
    print_table([{"stage": k, **v} for k, v in summary.items() if isinstance(v, dict)],
                f"N = {last:,} relative to N = {first:,}")
    print(f"\nsaliency + masks for CelebA's {CELEBA_TRAIN:,} training images: "
          f"{summary['celeba_projection_gb']:.3f} GB (from {bytes_per_image:,.0f} bytes per image at N = {last:,})")
    print_table(options, "storage options (first 2,000 images; gzip level 4 as create_rows writes)")
    emit_json({"benchmark": "storage_scaling", "machine": machine(), "rows": rows, "summary": summary,
               "options": options})


if __name__ == "__main__":
    main()
