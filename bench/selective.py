"""Benchmark: selective classification on plain 10-class MNIST over seeds, through the real pipeline
(the README's selective-classification table).

One scratch copy of the project with the committed params and `dataset: mnist` (the full MNIST from
--mnist-dir: 48,000 training digits, 12,000 validation, 10,000 test), methods ERM, RandMask and MaskTune
only; one `dvc exp run` per seed with every seed key set to it (`train_erm.seed`, `finetune.seed`,
`randmask.seed`, ...), so the two-ERM control trains with seed + 1. A selective classifier needs errors
to reject: trained on all 48,000 digits for one epoch, the SmallCNN is 98.4% accurate and leaves 0 to 13
errors among the 8,000-9,000 test digits it accepts at 80-90% coverage, too few to rank scores. So by
default (DEFAULT_SETS) ERM trains one epoch on 10,000 digits (the first 15,000 of the file, 5,000 of them
drawn for validation), and the test set is all 10,000 test digits. Model selection: ERM and the
control, best average validation accuracy (no group labels: plain MNIST has none); MaskTune and
RandMask, the one-epoch finetune of ERM's last checkpoint (a second pass over the training digits,
masked). Thresholds: the official rank rule on the 5,000 validation confidences.

Prints each run, then mean and sample standard deviation per score of the selective error at every
target coverage, the realised coverage and the AURC; then MaskTune's official score against the
two-ERM control seed by seed; then the wall time of each run and, as its last line, one JSON object
with every figure.

    python bench/selective.py --mnist-dir ../shared/data/mnist --seeds 0 1 2
    python bench/selective.py --quick    # 2 seeds on 600 digits (tests)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import add_quick_flag, machine, quick_params, seed_overrides
from scratch import NO_GROUP_METHODS, ScratchProject, merge

METHODS = {"erm": ["erm"], "masking": ["randmask", "masktune"], **NO_GROUP_METHODS}
# 10,000 training digits for one epoch (the first 15,000 of the MNIST file, 5,000 of them drawn for
# validation): about 95% test accuracy, so hundreds of errors are left to reject.
DEFAULT_SETS = ["train_erm.epochs=1", "prepare.mnist.train_limit=15000", "prepare.mnist.val_size=5000"]
OFFICIAL, CONTROL = "masktune", "two_erm_control1"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _percentages(score: dict) -> dict[str, float]:
    """One run's figures of one score, in percent (AURC x 100): accuracy, AURC, error and coverage at each target."""
    figures = {"accuracy": 100 * score["accuracy"], "aurc": 100 * score["aurc"]}
    for target in score["targets"]:
        figures[f"error_at_{target['target_coverage']:g}"] = 100 * target["error"]
        figures[f"coverage_at_{target['target_coverage']:g}"] = 100 * target["coverage"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"an extra `dvc exp run -S` for every run (defaults: {' '.join(DEFAULT_SETS)})")
    add_quick_flag(parser)
    args = parser.parse_args()
    params = {"dataset": "mnist", "methods": METHODS, "prepare": {"mnist": {"mnist_dir": str(args.mnist_dir.resolve())}}}
    defaults = DEFAULT_SETS
    if args.quick:  # the quick sizes instead of the default ones
        merge(params, quick_params("mnist"))
        defaults, args.seeds = [], args.seeds[:2]

    runs = []
    with tempfile.TemporaryDirectory(prefix="masktune-selective-") as tmp:
        project = ScratchProject(Path(tmp) / "project", params)
        for seed in args.seeds:
            seconds, stages = project.timed_stages("exp", "run", *seed_overrides(seed, defaults + args.set))
            details = json.loads((project.path / "metrics/selective/details.json").read_text())
            scores = {name: {"title": score["title"], "role": score["role"], **score["results"]["test"]}
                      for name, score in details["scores"].items()}
            for score in scores.values():
                score.pop("curve")
            runs.append({"seed": seed, "seconds": seconds, "stage_seconds": stages, "scores": scores})
            print(f"seed {seed}: {seconds:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())})")
            for name, score in scores.items():
                print(f"  {name:18} accuracy {score['accuracy']:.2%}  AURC {100 * score['aurc']:.3f}  error at "
                      + " / ".join(f"{t['target_coverage']:g}% {100 * t['error']:.2f}%" for t in score["targets"]),
                      flush=True)

    percent = [{name: _percentages(score) for name, score in run["scores"].items()} for run in runs]
    targets = [t["target_coverage"] for t in runs[0]["scores"][OFFICIAL]["targets"]]
    print(f"\nmean ± sample std over seeds {args.seeds}: selective error % at target coverage "
          "(realised coverage %), AURC x 100, accuracy %")
    summary = {}
    for name, first in runs[0]["scores"].items():
        entry = {"title": first["title"], "role": first["role"],
                 **{key: _mean_std([run[name][key] for run in percent]) for key in percent[0][name]}}
        summary[name] = entry
        cells = [f"{entry[f'error_at_{t:g}'][0]:.2f} ± {entry[f'error_at_{t:g}'][1]:.2f} "
                 f"({entry[f'coverage_at_{t:g}'][0]:.1f})" for t in targets]
        print(f"| {first['title']} | " + " | ".join(cells)
              + f" | {entry['aurc'][0]:.3f} ± {entry['aurc'][1]:.3f} | {entry['accuracy'][0]:.2f} ± "
              f"{entry['accuracy'][1]:.2f} |")

    print(f"\n{OFFICIAL} (official score) minus {CONTROL} (two-ERM control), per seed: negative = MaskTune better")
    comparison = {}
    for measure in ("aurc", *(f"error_at_{t:g}" for t in targets)):
        differences = [run[OFFICIAL][measure] - run[CONTROL][measure] for run in percent]
        comparison[measure] = {"differences": differences, "mean_std": _mean_std(differences),
                               "masktune_better_seeds": sum(d < 0 for d in differences)}
        print(f"  {measure:13} " + ", ".join(f"{d:+.3f}" for d in differences)
              + f"  (mean {comparison[measure]['mean_std'][0]:+.3f} ± {comparison[measure]['mean_std'][1]:.3f}; "
              f"MaskTune lower on {comparison[measure]['masktune_better_seeds']} of {len(runs)} seeds)")
    print("wall time per run: " + ", ".join(f"{run['seconds']:.0f} s" for run in runs))
    print(json.dumps({"machine": machine(), "seeds": args.seeds, "set": defaults + args.set, "runs": runs,
                      "summary": summary, "masktune_minus_control": comparison}))


if __name__ == "__main__":
    main()
