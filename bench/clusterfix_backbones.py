"""Benchmark: ClusterFix on each of its backbones side by side, over seeds (issue 26): the clusters'
diagnostic against the true groups (NMI, purity, and the share of each true group that sits in a
cluster it dominates: is a minority group found?) beside ClusterFix's worst-group test accuracy and
ERM's, through the real pipeline.

The backbones (VARIANTS): the ERM model's features (`clusterfix.backbone: erm`, the MNIST family's
default), and the network trained here without labels (`backbone: ssl`, stage clusterfix_ssl) under
each objective, SimCLR (Chen et al. 2020) and a denoising autoencoder (Vincent et al. 2008), each with
the dataset's SSL recipe (epochs, lr, batch size; `recipes.<dataset>.clusterfix`). The diagnostic
reads the true groups and is only reported: no model here is trained or selected with group labels
(ClusterFix's pair selects its epoch by average validation accuracy; its DFR twin by the worst of its
own clusters).

One scratch project with `methods` cut to ERM, ClusterFix's clusters, ClusterFix's pair and DFR on its
clusters; one `dvc exp run` per (seed, backbone), every seed key set to the seed (SEED_KEYS), so
ERM is trained once per seed (DVC's run cache restores it for the other backbones: its figures repeat
exactly, a check). Prints each run, then mean and sample std per backbone, and as its last line one
JSON object with every figure.

    python bench/clusterfix_backbones.py --mnist-dir ../shared/data/mnist --seeds 0 1 2
    python bench/clusterfix_backbones.py --dataset cmnist --set train_erm.arch=small_cnn --seeds 0 1 2
    python bench/clusterfix_backbones.py --dataset folder --folder data/own/coloured_mnist/index.csv
    python bench/clusterfix_backbones.py --diagnostic-only ...   # the clusters only (no ClusterFix model)
    python bench/clusterfix_backbones.py --quick   # 1 seed, 2 backbones, 600 digits, one epoch (tests)
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
from scratch import ScratchProject, committed_params, merge

VARIANTS = {"erm": ["clusterfix.backbone=erm"],
            "ssl_denoising": ["clusterfix.backbone=ssl", "clusterfix.ssl_objective=denoising"],
            "ssl_simclr": ["clusterfix.backbone=ssl", "clusterfix.ssl_objective=simclr"]}
MODELS = ("erm", "clusterfix", "dfr_clusterfix")  # ERM, ClusterFix's pair, DFR on ClusterFix's clusters


def clusterfix_methods(diagnostic_only: bool = False) -> dict:
    """`methods` cut to ERM and ClusterFix: its clusters and the committed pairs that read them (none with
    `diagnostic_only`: the clusters and their diagnostic, no model trained on them)."""
    pairs = committed_params()["methods"]
    methods = {"erm": ["erm"], "masking": [], "labels": [], "jtt": [], "exmap": [], "clusterfix": ["clusterfix"], "xrm": [],
               "robust_train": {"clusterfix": pairs["robust_train"]["clusterfix"]},
               "last_layer": {"dfr_clusterfix": pairs["last_layer"]["dfr_clusterfix"]}}
    return {**methods, "robust_train": {}, "last_layer": {}} if diagnostic_only else methods


def one_run(project: ScratchProject, seed: int, variant: str, sets: list[str]) -> dict:
    """One (seed, backbone) experiment: every model's worst group per test split, the clusters' diagnostic."""
    seconds, stages = project.timed_stages("exp", "run", *seed_overrides(seed, VARIANTS[variant] + sets))
    details = json.loads((project.path / "metrics/evaluate/details.json").read_text())["methods"]
    report = json.loads((project.path / "metrics/groups/clusterfix.json").read_text())
    assert report["backbone"] == VARIANTS[variant][0].split("=")[1], "the run clustered another backbone"
    worst = {name: {split: m["worst_group_accuracy"] for split, m in details[name]["results"].items()
                    if split != "val" and "worst_group_accuracy" in m} for name in MODELS if name in details}
    train = report["train"]
    return {"seed": seed, "backbone": variant, "seconds": seconds, "ssl_seconds": stages.get("clusterfix_ssl@clusterfix"),
            "worst_group": worst, "nmi": train["normalized_mutual_information"], "purity": train["purity"],
            "found": train["true_group_found"], "minority": report["minority"], "clusters": report["groups"]}


def print_run(run: dict) -> None:
    found = ", ".join(f"{g} {v:.0%}" for g, v in run["found"].items())
    print(f"seed {run['seed']} {run['backbone']:14} {run['seconds']:.0f} s: " + "; ".join(
        f"{name} " + " ".join(f"{split} {v:.2%}" for split, v in splits.items()) for name, splits in run["worst_group"].items())
        + f"\n    clusters {run['clusters']}, NMI {run['nmi']:.3f}, purity {run['purity']:.2%}; train share of each true "
        f"group in a cluster it dominates: {found}", flush=True)


def summarise(runs: list[dict]) -> dict:
    """Per backbone: mean and sample std over seeds of every worst group, the NMI and each true group's share found."""
    def spread(values: list[float]) -> dict:
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    summary = {}
    for variant in dict.fromkeys(run["backbone"] for run in runs):
        mine = [run for run in runs if run["backbone"] == variant]
        first = mine[0]
        summary[variant] = {
            "worst_group": {name: {split: spread([r["worst_group"][name][split] for r in mine]) for split in splits}
                            for name, splits in first["worst_group"].items()},
            "nmi": spread([r["nmi"] for r in mine]),
            "found": {group: spread([r["found"][group] for r in mine]) for group in first["found"]}}
    return summary


def print_summary(summary: dict, seeds: list[int]) -> None:
    print(f"\nmean ± sample std over seeds {seeds}: worst-group test accuracy (%), the clusters' train NMI and the "
          "share of each true group found (diagnostic, true groups)")
    for variant, figures in summary.items():
        print(f"  {variant:14} " + "; ".join(
            f"{name} " + " ".join(f"{split} {100 * v['mean']:.1f} ± {100 * v['std']:.1f}" for split, v in splits.items())
            for name, splits in figures["worst_group"].items())
            + f"; NMI {figures['nmi']['mean']:.3f} ± {figures['nmi']['std']:.3f}; found "
            + ", ".join(f"{g} {100 * v['mean']:.0f}%" for g, v in figures["found"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_dataset_flags(parser)
    parser.add_argument("--backbones", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--diagnostic-only", action="store_true",
                        help="the clusters and their diagnostic only: no ClusterFix model trained on them")
    args = parser.parse_args()
    # no selective control: its second ERM model scores only selective classification, not reported here
    params = merge(dataset_params(parser, args), {"methods": clusterfix_methods(args.diagnostic_only),
                                                  "selective": {"control_seed_offsets": []}})
    if args.quick:  # one seed, the ERM features and one objective (the other: tests/test_ssl.py)
        params = merge(merge(params, quick_params(args.dataset)), {"clusterfix": {"ssl_epochs": 1}})
        args.seeds, args.backbones = args.seeds[:1], ["erm", "ssl_denoising"]

    runs = []
    with tempfile.TemporaryDirectory(prefix="masktune-clusterfix-") as tmp:
        project = ScratchProject(Path(tmp) / "project", params)
        for seed in args.seeds:
            for variant in args.backbones:
                runs.append(one_run(project, seed, variant, args.set))
                print_run(runs[-1])
    summary = summarise(runs)
    print_summary(summary, args.seeds)
    print(json.dumps({"machine": machine(), "dataset": args.dataset, "seeds": args.seeds, "set": args.set,
                      "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()
