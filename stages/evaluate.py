"""Stage `evaluate`: every model of the `methods` param on every test split and on validation
(masktune/eval/compare.py): plain accuracy (all predictions pooled, what the official MaskTune code reports),
every group's and class's accuracy, worst group, unbiased and train-weighted averages (IN-9L: the
Background Challenge and its BG-Gap); each model's title and group-label use as its checkpoint records
them; and for every model that selects, the one its training kept under the true groups' worst group
(the selection gap). Writes the headline (`--metrics`, the DVC metrics), the comparison table and the
gap (`--comparison`), the full results and the `dvc plots` CSVs (`--details`), and every model's logits
(`--logits`, which `selective` reads rather than predict the same models again).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.distributed import select_device
from masktune.errors import UserError, run_stage
from masktune.eval.compare import EvaluateConfig, evaluate_models, oracle_results
from masktune.eval.logits import write_logits
from masktune.eval.models import oracle_models, reported_models
from masktune.eval.report import (
    comparison_markdown,
    headline,
    headline_lines,
    selection_gap_markdown,
    write_charts,
    write_comparison,
)
from masktune.io.files import atomic_directory, write_json


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--models", required=True, help="folder of the checkpoints of every method")
    parser.add_argument("--metrics", required=True, help="JSON: the headline, per method and test split")
    parser.add_argument("--comparison", required=True, help="Markdown: method x split table, the selection gap")
    parser.add_argument("--details", required=True, help="folder: details.json, methods.csv, group_accuracy.csv")
    parser.add_argument("--logits", required=True, help="HDF5: every model's logits per split (for `selective`)")
    args = parser.parse_args()

    config = load_config(EvaluateConfig, "evaluate")
    prepared, info = open_prepared(args.data)
    checkpoints = reported_models(config.methods, args.models)
    if not checkpoints:
        raise UserError("params.yaml: `methods` lists no method to evaluate")
    device, sizes = select_device(), {"batch_size": config.eval_batch_size, "workers": config.workers}
    results, described, logits = evaluate_models(prepared, info, checkpoints, device=device, **sizes)
    write_logits(args.logits, logits, checkpoints, {name: record["title"] for name, record in described.items()})
    gaps = oracle_results(prepared, info, oracle_models(config.methods, args.models), described, results,
                          device=device, **sizes)
    top = headline(results, info.test_splits, info.average, info.groups_known)
    write_json(args.metrics, top)
    splits = (*info.test_splits, "val")
    write_comparison(args.comparison, comparison_markdown(prepared.dataset, results, described, splits, info.average,
                                                          info.groups_known)
                     + selection_gap_markdown(gaps, results, described, info.test_splits, info.groups_known))
    with atomic_directory(args.details) as tmp_dir:
        write_json(Path(tmp_dir) / "details.json",
                   {"dataset": prepared.dataset, "average": info.average,
                    "methods": {name: {**described[name], "results": results[name],
                                       **({"selection_gap": gaps[name]} if name in gaps else {})} for name in results}})
        write_charts(tmp_dir, top, {name: described[name]["group_labels"] for name in results}, results)
    print("\n".join(headline_lines(top, described, info.groups_known)))


if __name__ == "__main__":
    main()
