"""Benchmark: the whole pipeline on the full MNIST, as the README's results table reports it.

In a scratch copy of the project (your workspace, cache and DVC config are left alone) it runs
1. `dvc repro` on the default params (MNIST read from --mnist-dir), timing each stage;
2. a second, no-op `dvc repro`;
3. `dvc exp run -S upsample.upweight=...` (one trainer's param: only its pairs and the reports rerun);
then prints the accuracies of every method (ERM, RandMask, MaskTune, JTT) and the timings as a table,
and as its last line one JSON object with the same figures.

    python bench/pipeline.py --mnist-dir ../shared/data/mnist [--set train_erm.epochs=5 ...]
    python bench/pipeline.py --quick    # ERM, MaskTune and JTT on 600 digits (tests)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import add_quick_flag, quick_params
from scratch import NO_GROUP_METHODS, ScratchProject, merge

from masktune.config.files import parse_yaml

SPLITS = ("test_original", "test_biased", "val")
# --quick: the stages the timings name (ERM, the masking, JTT's pair that the exp run reruns), no more.
QUICK_METHODS = {"masking": ["masktune"], **NO_GROUP_METHODS, "jtt": ["jtt"],
                 "robust_train": {"jtt": {"groups": "jtt", "trainer": "upsample", "selection": "average"}}}


def mnist_overrides(pairs: list[str], mnist_dir: Path) -> dict:
    params: dict = {"prepare": {"biased_mnist": {"mnist_dir": str(mnist_dir.resolve())}}}
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_yaml(value)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="param override, as dvc exp run -S")
    parser.add_argument("--keep", type=Path, help="build the scratch project here and keep it")
    add_quick_flag(parser)
    args = parser.parse_args()
    params = mnist_overrides(args.set, args.mnist_dir)
    if args.quick:
        params = merge(merge(quick_params(), {"methods": QUICK_METHODS, "selective": {"control_seed_offsets": []}}),
                       params)

    with tempfile.TemporaryDirectory(prefix="masktune-bench-") as tmp:
        path = args.keep or Path(tmp) / "project"
        project = ScratchProject(path, params)
        total, stages = project.timed_stages("repro")
        details = json.loads((path / "metrics/evaluate/details.json").read_text())["methods"]
        project.commit("default params")
        noop, _ = project.timed_stages("repro")
        upweight = parse_yaml((path / "params.yaml").read_text())["recipes"]["biased_mnist"]["upsample"]["upweight"]
        change = f"upsample.upweight={upweight + 1}"
        jtt_total, jtt_stages = project.timed_stages("exp", "run", "-S", change)

    models = {name: method["results"] for name, method in details.items()}
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, " + (
        torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")
    print(f"machine: {machine}; overrides: {args.set or 'none'}")
    print(f"{'model':<10}" + "".join(f"{s + ' acc':>20}{'worst':>8}" for s in SPLITS))
    for name, results in models.items():
        print(f"{name:<10}" + "".join(f"{results[s]['accuracy']:>20.2%}{results[s]['worst_group_accuracy']:>8.2%}"
                                       for s in SPLITS))
    print(f"\n{'dvc repro, stage':<36}{'seconds':>10}")
    for name, seconds in stages.items():
        print(f"{name:<36}{seconds:>10.1f}")
    print(f"{'total':<36}{total:>10.1f}\n{'no-op dvc repro':<36}{noop:>10.1f}")
    print(f"{'exp run -S ' + change:<36}{jtt_total:>10.1f} ({', '.join(jtt_stages)})")
    print(json.dumps({
        "machine": machine, "overrides": args.set,
        "accuracy": {name: {s: r[s]["accuracy"] for s in SPLITS} for name, r in models.items()},
        "worst_group_accuracy": {name: {s: r[s]["worst_group_accuracy"] for s in SPLITS}
                                 for name, r in models.items()},
        "seconds": {"repro_total": total, "repro_noop": noop, "jtt_exp_run": jtt_total,
                    **{f"stage_{k}": v for k, v in stages.items()},
                    **{f"jtt_exp_run_stage_{k}": v for k, v in jtt_stages.items()}},
    }))


if __name__ == "__main__":
    main()
