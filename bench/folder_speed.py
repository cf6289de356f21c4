"""Benchmark: your own images against the built-in pixel path, side by side in one run (issue 28), and
where the default pipeline's time goes outside training.

1. Writes biased MNIST as a folder of PNG files with its CSV index (scripts/export_biased_mnist.py:
   the built-in's very pixels, order and labels);
2. runs the default `dvc repro` on the built-in `biased_mnist` in one scratch project, timing each stage;
3. runs the same on the folder, read as a new user with `small_cnn` reads small images
   (`dataset: folder`, `transforms: resize`, `image_size: 28`), in a second scratch project;
4. prints each stage's seconds side by side, the ratio of the totals (folder / built-in), whether every
   headline figure is equal (the same pixels: they should be, to the last digit), and the built-in
   run's share of time outside training (TRAINING: the stages that fit a network by gradient descent;
   DFR's logistic regressions, the saliency, heatmaps, features, clustering and reports are the rest).

    python bench/folder_speed.py --mnist-dir ../shared/data/mnist
    python bench/folder_speed.py --quick    # ERM and MaskTune, 600 digits, one epoch (tests)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, add_quick_flag, machine, quick_params
from scratch import NO_GROUP_METHODS, ScratchProject, committed_params, merge

TRAINING = ("train_erm", "train_erm_control@", "finetune@", "robust_train@", "jtt_identify@", "clusterfix_ssl@")
FOLDER_VIEW = {"transforms": "resize", "image_size": 28}
QUICK_METHODS = {"masking": ["masktune"], **NO_GROUP_METHODS}  # --quick: the methods that read the images


def is_training(stage: str) -> bool:
    return any(stage == kind or (kind.endswith("@") and stage.startswith(kind)) for kind in TRAINING)


def export_folder(mnist_dir: Path, out: Path, biased_mnist: dict) -> Path:
    """Biased MNIST, built with these `prepare.biased_mnist` params, written as PNG files; its CSV index."""
    params = out.parent / "export_params.yaml"
    values = committed_params()
    values["prepare"]["biased_mnist"].update(biased_mnist)
    params.write_text(yaml.safe_dump(values))
    subprocess.run([sys.executable, str(ROOT / "scripts/export_biased_mnist.py"), "--mnist-dir", str(mnist_dir),
                    "--out", str(out), "--params", str(params)], check=True, capture_output=True, text=True)
    return out / "index.csv"


def timed_repro(path: Path, params: dict) -> tuple[float, dict[str, float], dict]:
    project = ScratchProject(path, params)
    seconds, stages = project.timed_stages("repro")
    return seconds, stages, json.loads((project.path / "metrics/evaluate.json").read_text())


def same_figures(builtin: dict, folder: dict) -> bool:
    """Every headline figure equal, model by model and split by split (the measures' names differ only
    where the folder reports per class)."""
    return all([*builtin[m][s].values()] == [*folder[m][s].values()] for m in builtin for s in builtin[m])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    add_quick_flag(parser)
    args = parser.parse_args()
    mnist = {"mnist_dir": str(args.mnist_dir.resolve())}
    extra = quick_params() if args.quick else {}
    biased_mnist = {**mnist, **extra.get("prepare", {}).get("biased_mnist", {})}
    training = {key: value for key, value in extra.items() if key != "prepare"}
    if args.quick:
        training["methods"] = QUICK_METHODS

    with tempfile.TemporaryDirectory(prefix="masktune-folder-speed-") as tmp:
        index = export_folder(args.mnist_dir.resolve(), Path(tmp) / "images", biased_mnist)
        builtin = timed_repro(Path(tmp) / "builtin", merge({"prepare": {"biased_mnist": biased_mnist}}, training))
        folder = timed_repro(Path(tmp) / "folder", merge(
            {"dataset": "folder", "prepare": {"folder": {"csv": str(index), **FOLDER_VIEW}}}, training))

    print(f"{'stage':42} {'built-in s':>10} {'folder s':>10}")
    for stage in builtin[1]:
        print(f"{stage:42} {builtin[1][stage]:10.1f} {folder[1].get(stage, float('nan')):10.1f}")
    ratio = folder[0] / builtin[0]
    outside = sum(s for stage, s in builtin[1].items() if not is_training(stage))
    equal = same_figures(builtin[2], folder[2])
    print(f"total: built-in {builtin[0]:.0f} s, folder ({FOLDER_VIEW}) {folder[0]:.0f} s: {ratio:.2f}x; "
          f"headline figures equal: {equal}")
    print(f"outside training (built-in): {outside:.0f} s of {builtin[0]:.0f} s, {outside / builtin[0]:.1%}")
    print(json.dumps({"machine": machine(), "builtin_seconds": builtin[0], "folder_seconds": folder[0], "ratio": ratio,
                      "builtin_stages": builtin[1], "folder_stages": folder[1], "figures_equal": equal,
                      "outside_training_seconds": outside, "outside_training_share": outside / builtin[0]}))


if __name__ == "__main__":
    main()
