"""Benchmark: every method of the `methods` param side by side on a full MNIST-based dataset (biased
MNIST or C-MNIST, or biased MNIST written out as a folder of PNGs by scripts/export_biased_mnist.py and
read as `dataset: folder`), over seeds, through the real pipeline (the README's results tables).

One scratch copy of the project with the committed params; one `dvc exp run` per seed with every
training and sampling seed set to it (SEED_KEYS); `prepare` runs once (biased MNIST's validation draw is
`prepare.biased_mnist.seed`, C-MNIST's colours `prepare.cmnist.seed`). Model selection is each
method's own (ERM: best average validation accuracy; MaskTune and RandMask: the one-epoch finetune; the
(groups, trainer) pairs: their `selection`; DFR and ExMap: C by the worst of their groups on validation
halves), and no method uses group labels except those on the true groups (the supervised references,
GroupDRO and DFR, ✓/✓); each row says its use. Prints each run, then mean and sample standard deviation
per model, split and measure (average = pooled accuracy, unbiased = mean of the group accuracies, worst
group), each groups file's purity, NMI and share of each true group found (in a group it dominates)
against the true groups (a diagnostic, never used), the wall time of each run,
and, as its last line, one JSON object with every figure.

    python bench/methods.py --mnist-dir ../shared/data/mnist --seeds 0 1 2
    python bench/methods.py --dataset cmnist --set train_erm.arch=small_cnn --seeds 0 1 2
    python bench/methods.py --dataset folder --folder data/own/biased_mnist/index.csv --seeds 0 1 2
    python bench/methods.py --quick    # 2 seeds of ERM, MaskTune, JTT and DFR on 600 digits (tests)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import add_dataset_flags, dataset_params, machine, quick_params, seed_overrides
from scratch import ScratchProject, merge

from masktune.summary import configurations, experiments, markdown, summarise, write_csv

# --quick: a model of each kind that reports a selection gap (ERM, a robust pair, a last-layer pair) and
# a groups file with a purity, on top of MaskTune.
QUICK_METHODS = {"masking": ["masktune"], "labels": ["true_groups"], "jtt": ["jtt"], "exmap": [], "clusterfix": [], "xrm": [],
                 "robust_train": {"jtt": {"groups": "jtt", "trainer": "upsample", "selection": "average"}},
                 "last_layer": {"dfr_groups": {"groups": "true_groups", "trainer": "dfr", "selection": "worst_pseudo_group"}}}
MEASURES = {"average": "accuracy", "unbiased": "unbiased_accuracy", "worst_group": "worst_group_accuracy"}


def gap_table(runs: list[dict]) -> dict:
    """Per selecting model and test split, over the seeds: the worst group under its own selection rule,
    under the true worst group (the oracle, ✓), and the gap (mean ± sample std); printed as a table."""
    table: dict = {}
    for name in runs[0]["selection_gap"]:
        for split in runs[0]["selection_gap"][name]:
            pairs = [run["selection_gap"][name][split] for run in runs]
            columns = {"own": [p[0] for p in pairs], "oracle": [p[1] for p in pairs],
                       "gap": [p[0] - p[1] for p in pairs]}
            table.setdefault(name, {})[split] = {
                key: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "values": v}
                for key, v in columns.items()}
    print("\nthe selection gap: worst group under each model's rule / under the true worst group (✓) / gap, "
          "points, mean ± sample std")
    for name, splits in table.items():
        print(f"  {name:22} ({runs[0]['selection'][name]})  " + "   ".join(
            f"{split} " + " / ".join(f"{100 * v[k]['mean']:.2f} ± {100 * v[k]['std']:.2f}" for k in ("own", "oracle", "gap"))
            for split, v in splits.items()))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_dataset_flags(parser)
    parser.add_argument("--keep", type=Path, help="folder to copy each run's details.json into (seed<N>.json), with "
                        "its group diagnostics, ExMap's pseudo-groups and the label-free choice's scores beside it")
    args = parser.parse_args()
    params = dataset_params(parser, args)
    if args.quick:
        params = merge(merge(params, quick_params(args.dataset)), {"methods": QUICK_METHODS,
                                                                  "selective": {"control_seed_offsets": []}})
        args.seeds = args.seeds[:2]

    runs = []
    with tempfile.TemporaryDirectory(prefix="masktune-methods-") as tmp:
        project = ScratchProject(Path(tmp) / "project", params)
        for seed in args.seeds:
            seconds, stages = project.timed_stages("exp", "run", *seed_overrides(seed, args.set))
            details_file = project.path / "metrics/evaluate/details.json"
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"seed{seed}.json").write_text(details_file.read_text())
                for extra in ("exmap/pseudo_groups.json", "choice/details.json", *(f"groups/{p.name}" for p in
                                                             sorted((project.path / "metrics/groups").glob("*.json")))):
                    source = project.path / "metrics" / extra
                    if source.is_file():
                        (args.keep / f"seed{seed}_{extra.replace('/', '_')}").write_text(source.read_text())
                figure = project.path / "metrics/exmap/embedding.png"
                if figure.is_file():
                    (args.keep / f"seed{seed}_exmap_embedding.png").write_bytes(figure.read_bytes())
            details = json.loads(details_file.read_text())["methods"]
            reports = {p.stem: json.loads(p.read_text()) for p in sorted((project.path / "metrics/groups").glob("*.json"))}
            purity = {name: {split: report[split]["purity"] for split in ("train", "val")} for name, report in reports.items()}
            diagnostic = {name: {split: {"nmi": report[split]["normalized_mutual_information"],
                                         "found": report[split]["true_group_found"]} for split in ("train", "val")}
                          for name, report in reports.items()}
            runs.append({"seed": seed, "seconds": seconds, "stage_seconds": stages,
                         "results": {name: {split: {measure: m[key] for measure, key in MEASURES.items()}
                                            for split, m in method["results"].items() if "accuracy" in m}
                                     for name, method in details.items()},
                         "group_labels": {name: method["group_labels"] for name, method in details.items()},
                         "selection_gap": {name: {split: [method["results"][split]["worst_group_accuracy"],
                                                          method["selection_gap"]["results"][split]["worst_group_accuracy"]]
                                                  for split in method["selection_gap"]["results"] if split != "val"
                                                  and "worst_group_accuracy" in method["results"][split]}
                                           for name, method in details.items() if "selection_gap" in method},
                         "selection": {name: method.get("selection") for name, method in details.items()},
                         "groups_purity": purity, "groups_diagnostic": diagnostic})
            print(f"seed {seed}: {seconds:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())})")
            for name, splits in runs[-1]["results"].items():
                print(f"  {name:22}" + "".join(f"{split} {m['average']:.2%} / {m['unbiased']:.2%} / "
                                               f"{m['worst_group']:.2%}   " for split, m in splits.items()), flush=True)
            for name, splits in purity.items():
                found = diagnostic[name]["train"]["found"]
                print(f"  {name} purity against the true groups: " + ", ".join(f"{k} {v:.2%}" for k, v in splits.items())
                      + f"; NMI train {diagnostic[name]['train']['nmi']:.3f}; share of each true group in a group it "
                      "dominates (train): " + ", ".join(f"{g} {v:.0%}" for g, v in found.items()))
        # every seed's experiment, summarised the DVC way (masktune.summary over `dvc exp show --json`)
        show = json.loads(project.dvc("exp", "show", "--json").stdout)
        rows = [row for group in configurations(experiments(show)) for row in summarise(group)]

    print(f"\nmean ± sample std over seeds {args.seeds} (python -m masktune.summary)\n")
    print(markdown(rows))
    if args.keep:
        (args.keep / "summary.md").write_text(markdown(rows), encoding="utf-8")
        write_csv(args.keep / "summary.csv", rows)
    summary: dict = {"rows": rows, "selection_gap": gap_table(runs)}
    for name in runs[0]["groups_purity"]:
        values = {split: [run["groups_purity"][name][split] for run in runs] for split in ("train", "val")}
        summary[f"purity/{name}"] = {split: {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
                                     for split, v in values.items()}
        print(f"{name} purity (diagnostic, true groups): " + "; ".join(
            f"{split} {v['mean']:.2%} ± {v['std']:.2%}" for split, v in summary[f"purity/{name}"].items()))
    print("wall time per run: " + ", ".join(f"{run['seconds']:.0f} s" for run in runs))
    print(json.dumps({"machine": machine(), "dataset": args.dataset, "seeds": args.seeds, "set": args.set, "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
