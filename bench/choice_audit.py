"""Benchmark: does the label-free choice favour a model for having been selected on the rule's own statistic?

Stage `choose` (masktune/eval/choice.py) scores every label-free model on the validation set by rules that
read no group labels and deploys the first rule's pick. A model whose own selection (its epoch, its C)
already maximised a rule's statistic on that same validation set scores optimistically under that rule: of
several noisy figures it kept the highest, and the other models' figures were not picked that way. (`choose`
corrects the like bias of a last layer fitted on the validation set with cross-fitted logits; it does not
correct a selection.) GroupDRO on XRM's groups, for one, keeps the epoch of the best worst XRM group on
validation, the statistic of the rule `worst_group:xrm`.

For each run and rule, this prints the model the rule deployed as `choose` ran it and the model it deploys
with the models selected on its statistic left out of that rule (`self_selected_rule`), and each one's regret
on every test split: the best label-free model's worst-group accuracy minus the chosen one's, in points. The
regret reads the true groups, as `choose`'s own audit does; nothing here changes what `choose` deploys.

    python bench/methods.py ... --keep DIR && python bench/choice_audit.py DIR   # every seed<N>.json kept
    python bench/choice_audit.py --quick     # the committed baseline's reports (metrics/): one run
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping
from pathlib import Path

from common import ROOT, add_quick_flag, emit_json

from masktune.eval.choice import GROUP_RULE, audit, choose

MEASURE = "worst_group_accuracy"  # choose's audit measure wherever every test split has groups


def self_selected_rule(method: Mapping) -> str | None:
    """The rule of `choose` whose statistic this model's own selection maximised on validation, if any:
    `average` and `worst_class` select by those; `worst_pseudo_group` by the worst group of the model's own
    groups (the classes' being `worst_class`); `last` and the finetune's `none` select nothing."""
    selection, groups = method.get("selection"), method.get("groups")
    if selection in ("average", "worst_class"):
        return selection
    if selection == "worst_pseudo_group" and groups:
        return "worst_class" if groups == "classes" else GROUP_RULE + groups
    return None


def regrets(model: str, candidates: list[str], results: Mapping[str, Mapping], splits: list[str]) -> dict[str, float]:
    """{split: points behind the best label-free model}, `choose`'s own audit figure."""
    report = audit(model, candidates, results, splits, MEASURE)
    return {split: report[split]["regret_vs_best_label_free"] for split in splits}


def audit_run(methods: Mapping[str, Mapping], choice: Mapping) -> dict:
    """Each rule of one run's choice: its pick as run and without the self-selected models, each with its
    regret against the best label-free model as `choose` audits it (masktune.eval.choice.audit)."""
    candidates, scores = choice["candidates"], choice["scores"]
    results = {name: method["results"] for name, method in methods.items()}
    rules = {}
    for rule, chosen in choice["chosen"].items():
        left_out = [m for m in candidates if self_selected_rule(methods[m]) == rule]
        kept = [m for m in candidates if m not in left_out] or candidates
        without = choose({m: scores[m] for m in kept}, rule)
        splits = list(choice["audit"][rule])

        rules[rule] = {"chosen": chosen, "reproduced": choose({m: scores[m] for m in candidates}, rule) == chosen,
                       "left_out": left_out, "chosen_without": without, "regret": regrets(chosen, candidates, results, splits),
                       "regret_recorded": {split: choice["audit"][rule][split]["regret_vs_best_label_free"]
                                           for split in splits},  # choose's own: the same figure, same measure
                       "regret_without": regrets(without, candidates, results, splits)}
    return {"default_rule": choice["rule"], "rules": rules}


def kept_runs(folder: Path) -> dict[str, tuple[dict, dict]]:
    """{seed<N>: (evaluate's details, choose's details)} of a `bench/methods.py --keep` folder."""
    runs = {}
    for details in sorted(folder.glob("seed*.json")):
        choice = details.with_name(f"{details.stem}_choice_details.json")
        if details.stem.isalnum() and choice.is_file():
            runs[details.stem] = (json.loads(details.read_text())["methods"], json.loads(choice.read_text()))
    if not runs:
        raise SystemExit(f"error: {folder}: no seed<N>.json with its seed<N>_choice_details.json "
                         "(bench/methods.py --keep writes both)")
    return runs


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("folder", nargs="?", type=Path, help="a bench/methods.py --keep folder")
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick or args.folder is None:
        metrics = ROOT / "metrics"
        runs = {"committed": (json.loads((metrics / "evaluate/details.json").read_text())["methods"],
                              json.loads((metrics / "choice/details.json").read_text()))}
    else:
        runs = kept_runs(args.folder)
    audits = {name: audit_run(methods, choice) for name, (methods, choice) in runs.items()}
    for name, run_audit in audits.items():
        print(f"\n{name} (default rule {run_audit['default_rule']}): rule: chosen as run / with the models selected "
              "on its statistic left out; worst-group regret per test split, points")
        for rule, row in run_audit["rules"].items():
            print(f"  {rule:26} {row['chosen']:16} / {row['chosen_without']:16} "
                  + "  ".join(f"{split} {row['regret'][split]:.2f} / {row['regret_without'][split]:.2f}"
                              for split in row["regret"])
                  + (f"  (left out: {', '.join(row['left_out'])})" if row["left_out"] else ""))
    summary: dict = {}
    for rule in next(iter(audits.values()))["rules"]:
        rows = [each["rules"][rule] for each in audits.values() if rule in each["rules"]]
        summary[rule] = {split: {"as_run": [r["regret"][split] for r in rows],
                                 "without": [r["regret_without"][split] for r in rows]} for split in rows[0]["regret"]}
    print(f"\nregret over {len(audits)} run(s), mean ± sample std, as run / self-selected left out:")
    for rule, splits in summary.items():
        print(f"  {rule:26} " + "  ".join(f"{split} {mean_std(v['as_run'])} / {mean_std(v['without'])}"
                                          for split, v in splits.items()))
    emit_json({"runs": audits, "summary": summary})


if __name__ == "__main__":
    main()
