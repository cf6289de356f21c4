"""Benchmark: JTT's T (identification epochs) and λ_up (upweight) on the full biased MNIST, chosen by
validation *average* accuracy: no group labels, and no test figure is read (the choice recorded in
params.yaml's biased_mnist recipe comes from this sweep).

One scratch copy of the project with the committed params and only ERM and JTT's pair in `methods`;
one `dvc exp run -S jtt.identification_epochs=T -S upsample.upweight=L` per grid point, so
`jtt_identify` reruns only when T changes. Prints JTT's validation average accuracy per (T, λ_up)
(and, not used for the choice, the error set's size), the chosen point, and, last, one JSON line.

    python bench/jtt_sweep.py --mnist-dir ../shared/data/mnist --epochs 1 2 --upweights 5 20 50 100
    python bench/jtt_sweep.py --quick    # T 1 x λ_up 5, 20 on 600 digits (tests)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import add_quick_flag, machine, quick_params
from scratch import NO_GROUP_METHODS, ScratchProject, merge

JTT = {"groups": "jtt", "trainer": "upsample", "selection": "average"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--upweights", type=int, nargs="+", default=[5, 20, 50, 100])
    parser.add_argument("--seed", type=int, default=0)
    add_quick_flag(parser)
    args = parser.parse_args()
    params = {"prepare": {"biased_mnist": {"mnist_dir": str(args.mnist_dir.resolve())}},
              "methods": {"masking": [], **NO_GROUP_METHODS, "jtt": ["jtt"], "robust_train": {"jtt": JTT}},
              "jtt": {"seed": args.seed}, "upsample": {"seed": args.seed}}
    if args.quick:
        merge(params, quick_params())
        args.epochs, args.upweights = args.epochs[:1], args.upweights[:2]

    grid = []
    with tempfile.TemporaryDirectory(prefix="masktune-jtt-") as tmp:
        project = ScratchProject(Path(tmp) / "project", params)
        print(f"{'T':>3}{'λ_up':>6}{'error set':>11}{'val average':>13}{'seconds':>9}")
        for epochs in args.epochs:
            for upweight in args.upweights:
                seconds, _ = project.timed_stages("exp", "run", "-S", f"jtt.identification_epochs={epochs}",
                                                  "-S", f"upsample.upweight={upweight}")
                details = json.loads((project.path / "metrics/evaluate/details.json").read_text())
                error_set = json.loads((project.path / "metrics/groups/jtt.json").read_text())["error_set_size"]
                val = details["methods"]["jtt"]["results"]["val"]["accuracy"]
                grid.append({"identification_epochs": epochs, "upweight": upweight, "error_set_size": error_set,
                             "val_average": val, "seconds": seconds})
                print(f"{epochs:>3}{upweight:>6}{error_set:>11,}{val:>13.2%}{seconds:>9.0f}", flush=True)
    best = max(grid, key=lambda point: point["val_average"])  # ties: the first, the smaller T and λ_up
    print(f"chosen by validation average accuracy: T = {best['identification_epochs']}, λ_up = {best['upweight']}")
    print(json.dumps({"machine": machine(), "seed": args.seed, "grid": grid, "chosen": best}))


if __name__ == "__main__":
    main()
