"""Benchmark: how ERM epochs and seeds move the results, on the full MNIST, through the real pipeline.

One scratch copy of the project; `prepare` runs once, then one `dvc exp run` per (epochs, seed)
with `-S train_erm.epochs=E -S train_erm.seed=S -S finetune.seed=S`. Prints one row per run and the
mean and spread per epoch count, then, as its last line, one JSON object with every figure.

    python bench/seed_sweep.py --mnist-dir ../shared/data/mnist --epochs 1 3 5 10 --seeds 0 1 2
    python bench/seed_sweep.py --quick    # 1 epoch x 2 seeds on 600 digits (tests)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import add_quick_flag, quick_params
from scratch import NO_GROUP_METHODS, ScratchProject, merge

COLUMNS = [("erm", "test_original"), ("erm", "test_biased"), ("masktune", "test_original"),
           ("masktune", "test_biased")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_quick_flag(parser)
    args = parser.parse_args()
    params = {"prepare": {"biased_mnist": {"mnist_dir": str(args.mnist_dir.resolve())}},
              "methods": {"masking": ["masktune"], **NO_GROUP_METHODS}}  # ERM and MaskTune only
    if args.quick:
        merge(params, quick_params())
        args.epochs, args.seeds = args.epochs[:1], args.seeds[:2]

    runs = []
    header = f"{'epochs':>6}{'seed':>6}" + "".join(f"{m + ' ' + s:>24}" for m, s in COLUMNS)
    print(header)
    with tempfile.TemporaryDirectory(prefix="masktune-sweep-") as tmp:
        project = ScratchProject(Path(tmp) / "project", params)
        project.dvc("repro", "prepare")
        project.commit("prepared data")
        for epochs in args.epochs:
            for seed in args.seeds:
                project.dvc("exp", "run", "-S", f"train_erm.epochs={epochs}", "-S", f"train_erm.seed={seed}",
                            "-S", f"finetune.seed={seed}")
                metrics = json.loads((project.path / "metrics/evaluate.json").read_text())
                row = {f"{m}/{s}": metrics[m][s]["average"] for m, s in COLUMNS}
                runs.append({"epochs": epochs, "seed": seed, **row})
                print(f"{epochs:>6}{seed:>6}" + "".join(f"{row[f'{m}/{s}']:>24.2%}" for m, s in COLUMNS),
                      flush=True)

    print("\nmean (min - max) over seeds")
    summary = {}
    for epochs in args.epochs:
        rows = [r for r in runs if r["epochs"] == epochs]
        summary[epochs] = {key: {"mean": statistics.mean(r[key] for r in rows),
                                 "min": min(r[key] for r in rows), "max": max(r[key] for r in rows)}
                           for key in (f"{m}/{s}" for m, s in COLUMNS)}
        cells = ["{:.2%} ({:.2%}-{:.2%})".format(v["mean"], v["min"], v["max"]) for v in summary[epochs].values()]
        print(f"{epochs:>6}{'':>6}" + "".join(f"{cell:>24}" for cell in cells))
    print(json.dumps({"runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
