"""Benchmark: MaskTune on a folder whose files are not the network's input size (issue 38), over seeds.

A folder read with `prepare.folder.transforms: resize` is stored by `prepare` as the resized view; MaskTune
must still put its masks on the files as stored and resize the masked file again, as the official code
does (masktune.data.splits.RemaskedViewSplit). Every other benchmark of the project reads files that
already have the view's size, where the resize is the identity and the two ways of masking agree; this
one does not:

1. biased MNIST, built with the committed `prepare.biased_mnist` params, is written as PNG files resized
   to `--size` x `--size` (32: scripts/export_biased_mnist.py --size, PIL's bilinear) with its CSV index;
2. ERM and MaskTune run on the built-in biased MNIST (the same images, stored at 28 x 28) in one scratch
   project, and on the folder read with `transforms: resize, image_size: 28` in another, one `dvc exp
   run` per seed (every seed key set to it);
3. prints each seed's average and worst-group test accuracy of both models on both, then mean and sample
   std over seeds, and the gap of MaskTune's worst group (resized folder minus 28 x 28), which should be
   within 2 points (issue 38: masks drawn on the resized view lost 16).

No group labels are used to train or select either model (ERM: the best epoch by average validation
accuracy; MaskTune: the one-epoch finetune, no selection).

    python bench/resized_folder.py --mnist-dir ../shared/data/mnist --seeds 0 1 2
    python bench/resized_folder.py --quick    # 1 seed, 10,000 training digits, 3 ERM epochs (tests)

`--quick` is larger than the other benches' quick runs (about 4 minutes on 2 cores): with 600 digits and
one epoch ERM does not learn the square, and there is nothing for the masks to remove. At that size masking
the stored view shows its loss (seed 0, `test_biased` worst group: 37.97 on the resized folder against
84.28 on the 28 x 28 digits), and the official masking lands above the 28 x 28 run (87.13: a masked file
resized again spreads each mask's edge over its neighbours, masking a little more); its test
(tests/test_benches.py) therefore bounds the loss only. The full run's three seeds give the two-sided
figure (docs/results.md).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, add_quick_flag, machine, seed_overrides
from scratch import NO_GROUP_METHODS, ScratchProject, committed_params, merge

METHODS = {"erm": ["erm"], "masking": ["masktune"], **NO_GROUP_METHODS}
MODELS = ("erm", "masktune")
SPLITS = ("test_biased", "test_original")
TOLERANCE = 0.02  # issue 38: MaskTune's worst group on the resized folder within 2 points of the 28 x 28 images
QUICK = {"prepare": {"train_limit": 10_000, "test_limit": 2_000, "val_size": 2_000}, "train_erm": {"epochs": 3}}


def export_folder(mnist_dir: Path, out: Path, biased_mnist: dict, size: int) -> Path:
    """Biased MNIST built with these `prepare.biased_mnist` params, each image resized to `size` x `size` and
    written as a PNG file; returns its CSV index."""
    params = out.parent / "export_params.yaml"
    values = committed_params()
    values["prepare"]["biased_mnist"].update(biased_mnist)
    params.write_text(yaml.safe_dump(values))
    subprocess.run([sys.executable, str(ROOT / "scripts/export_biased_mnist.py"), "--mnist-dir", str(mnist_dir),
                    "--out", str(out), "--params", str(params), "--size", str(size)],
                   check=True, capture_output=True, text=True)
    return out / "index.csv"


def train_images(project: ScratchProject) -> int:
    """How many training images the last run's `prepare` wrote (the synthetic MNIST twin has fewer)."""
    import h5py

    with h5py.File(project.path / "data/prepared.h5", "r") as f:
        return int(f["train/labels"].shape[0])


def figures(project: ScratchProject) -> dict:
    """{model: {split: {average, worst_group}}} of the last run's headline metrics."""
    metrics = json.loads((project.path / "metrics/evaluate.json").read_text())
    return {model: {split: dict(metrics[model][split]) for split in SPLITS} for model in MODELS}


def run_seeds(project: ScratchProject, seeds: list[int]) -> list[dict]:
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        project.dvc("exp", "run", *seed_overrides(seed, []))
        runs.append({"seed": seed, "seconds": time.perf_counter() - start, "results": figures(project)})
    return runs


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per source, model, split and measure: mean and sample std over seeds; MaskTune's worst-group gap."""
    summary = {source: {model: {split: {measure: spread([r["results"][model][split][measure] for r in source_runs])
                                        for measure in ("average", "worst_group")}
                                for split in SPLITS} for model in MODELS}
               for source, source_runs in runs.items()}
    gaps = {split: [r["results"]["masktune"][split]["worst_group"] - s["results"]["masktune"][split]["worst_group"]
                    for r, s in zip(runs["resized"], runs["stored_28"])] for split in SPLITS}
    summary["masktune_worst_group_gap"] = {split: spread(values) for split, values in gaps.items()}
    return summary


def print_runs(runs: dict[str, list[dict]], summary: dict, size: int) -> None:
    names = {"stored_28": "biased MNIST, 28 x 28", "resized": f"folder of {size} x {size} PNGs read at 28"}
    print(f"{'seed':>4}  {'data':38} " + "  ".join(f"{m} {s} avg / worst".rjust(34) for m in MODELS for s in SPLITS))
    for source, source_runs in runs.items():
        for run in source_runs:
            cells = [f"{100 * run['results'][m][s]['average']:6.2f} / {100 * run['results'][m][s]['worst_group']:6.2f}"
                     for m in MODELS for s in SPLITS]
            print(f"{run['seed']:>4}  {names[source]:38} " + "  ".join(c.rjust(34) for c in cells))
    for source in runs:
        cells = []
        for m in MODELS:
            for s in SPLITS:
                a, w = summary[source][m][s]["average"], summary[source][m][s]["worst_group"]
                cells.append(f"{100 * a['mean']:.2f}±{100 * a['std']:.2f} / {100 * w['mean']:.2f}±{100 * w['std']:.2f}")
        print(f"{'mean':>4}  {names[source]:38} " + "  ".join(c.rjust(34) for c in cells))
    for split, gap in summary["masktune_worst_group_gap"].items():
        print(f"MaskTune worst group, {split}: resized minus 28 x 28 = {100 * gap['mean']:+.2f} ± {100 * gap['std']:.2f} "
              f"points (tolerance ±{100 * TOLERANCE:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=32, help="side of the exported PNG files (read at 28)")
    add_quick_flag(parser)
    args = parser.parse_args()
    seeds = [0] if args.quick else args.seeds
    biased_mnist = {"mnist_dir": str(args.mnist_dir.resolve()), **(QUICK["prepare"] if args.quick else {})}
    training = {"methods": METHODS, "selective": {"control_seed_offsets": []},  # no second ERM: not compared here
                **({"train_erm": QUICK["train_erm"]} if args.quick else {})}

    with tempfile.TemporaryDirectory(prefix="masktune-resized-folder-") as tmp:
        index = export_folder(args.mnist_dir.resolve(), Path(tmp) / "images", biased_mnist, args.size)
        stored = ScratchProject(Path(tmp) / "stored_28", merge({"prepare": {"biased_mnist": biased_mnist}}, training))
        resized = ScratchProject(Path(tmp) / "resized", merge(
            {"dataset": "folder", "prepare": {"folder": {"csv": str(index), "transforms": "resize", "image_size": 28}}},
            training))
        runs = {"stored_28": run_seeds(stored, seeds), "resized": run_seeds(resized, seeds)}
        images = train_images(resized)

    summary = summarise(runs)
    print_runs(runs, summary, args.size)
    print(json.dumps({"machine": machine(), "size": args.size, "seeds": seeds, "train_images": images, "tolerance": TOLERANCE,
                      "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
