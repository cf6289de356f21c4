"""Stage `choose`: the model to deploy when no group labels exist (masktune/eval/choice.py).

Every label-free model of the run (✗/✗ in the report) is scored on the validation set by every rule that needs
no group labels: average and worst-class accuracy, the worst group under each inferred grouping the run has
(XRM, ExMap, JTT, ClusterFix) and their mean; the first rule of `choose.rules` the run can compute is the one
whose choice is the model to deploy (recorded in the headline).
The true groups are read only to audit each rule's choice on the test splits (its regret against the best
label-free model and the best model of the run). Writes the headline (`--metrics`, what `dvc metrics diff`
shows of the chosen model), the report (`--report`) and every score (`--details`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from masktune.config.params import load_config
from masktune.data.prepared import PreparedFile
from masktune.errors import UserError, run_stage
from masktune.eval.choice import (
    LABEL_FREE,
    ChooseConfig,
    audit,
    choice_markdown,
    choose,
    deployed_rule,
    inference_markdown,
    inferred_groupings,
    rule_names,
    rule_scores,
    same_partition,
)
from masktune.eval.logits import validation_logits
from masktune.eval.report import write_comparison
from masktune.groups import read_groups
from masktune.io.files import write_json


def read_group_report(path: Path) -> dict:
    """A groups file's diagnostic, which the stage that wrote the file wrote beside it (so, like the file, it
    reaches this stage through the models trained on it, not as a dep)."""
    if not path.is_file():
        raise UserError(f"{path} is missing, though its groups file is there: rerun `dvc repro`")
    return json.loads(path.read_text())


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5): the validation labels")
    parser.add_argument("--logits", required=True, help="evaluate's logits (HDF5)")
    parser.add_argument("--evaluation", required=True, help="evaluate's details.json: group-label use, test figures")
    parser.add_argument("--groups", required=True, help="folder of the groups files")
    parser.add_argument("--group-reports", required=True,
                        help="folder of their diagnostics (each written with its groups file, by the same stage)")
    parser.add_argument("--metrics", required=True, help="JSON: the chosen model, its test figures and regret")
    parser.add_argument("--report", required=True, help="Markdown: every rule's choice and audit")
    parser.add_argument("--details", required=True, help="JSON: every candidate's validation scores")
    args = parser.parse_args()

    config = load_config(ChooseConfig, "choose")
    prepared = PreparedFile(args.data)
    evaluation = json.loads(Path(args.evaluation).read_text())
    models = evaluation["methods"]
    (labels,) = prepared.vectors("val", "labels")
    rows = {split: prepared.length(split) for split in ("train", "val")}
    groupings, reports = {}, {}
    for name in inferred_groupings(models):
        groups = read_groups(Path(args.groups) / f"{name}.h5", rows)
        reports[name] = read_group_report(Path(args.group_reports) / f"{name}.json")
        if groups.uses_group_labels:  # never for a label-free model's groups: a stale file, say so
            raise UserError(f"{args.groups}/{name}.h5 was made with group labels, but evaluate recorded a label-free "
                            "model trained on it: rerun `dvc repro`")
        if not same_partition(groups.val, labels):  # the classes as groups: worst_class already
            groupings[name] = groups.val
    rules, rule = rule_names(tuple(groupings)), deployed_rule(config.rules, tuple(groupings))
    logits, held_out = validation_logits(args.logits, list(models),
                                         [name for name, record in models.items() if record.get("fitted_on_val")])
    left_out = {name: "used group labels" for name, record in models.items() if record["group_labels"] != LABEL_FREE}
    left_out |= {name: "no held-out validation logits (fitted on val)" for name in models
                 if name not in left_out and name not in logits}
    candidates = [name for name in models if name not in left_out]
    if not candidates:
        raise UserError("choose: the run has no label-free model to choose from (methods lists none)")
    scores = {name: rule_scores(logits[name].argmax(1), labels, groupings)
              for name in candidates}
    chosen = {each: choose(scores, each) for each in rules}
    results = {name: record["results"] for name, record in models.items()}
    splits = [split for split in next(iter(results.values())) if split.startswith("test")]
    measure = "worst_group_accuracy" if all(np.isfinite(results[m][s].get("worst_group_accuracy", np.nan))
                                            for m in results for s in splits) else "worst_class_accuracy"
    audits = {each: audit(model, candidates, results, splits, measure) for each, model in chosen.items()}
    titles = {name: record["title"] for name, record in models.items()}
    model = chosen[rule]
    write_json(args.metrics, {"rule": rule, "model": model, **audits[rule]})
    write_json(args.details, {"rule": rule, "groupings": list(groupings), "candidates": candidates,
                              "left_out": left_out, "scores": scores, "chosen": chosen, "audit": audits,
                              "held_out_val": sorted(held_out & set(candidates)), "group_inference": reports})
    measure_name = measure.removesuffix("_accuracy").replace("_", " ")
    write_comparison(args.report, choice_markdown(prepared.dataset, rule, chosen, scores, audits, titles,
                                                  left_out, measure_name) + inference_markdown(reports))
    figures = ", ".join(f"{split} {a['average']:.2%} ({measure_name} {a['worst']:.2%}, regret "
                        f"{a['regret_vs_best_label_free']:.2f} points)" for split, a in audits[rule].items())
    print(f"deploy {titles[model]} ({model}), chosen by {rule} without group labels: {figures}")


if __name__ == "__main__":
    main()
