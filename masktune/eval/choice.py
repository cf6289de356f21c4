"""Which model to deploy, chosen without group labels: every label-free model of the run scored on the
validation set by rules that need no group labels, one rule's choice reported as the model to deploy.

A user with no group labels has the run's models (ERM, MaskTune, JTT, the pairs on inferred groups) and a
validation set that carries the training set's shortcut; each selection rule here works *across* methods,
where every method's own rule works within one (an epoch, a C). The rules (`RULES`, and one per inferred
grouping):

- `average`: validation accuracy (the rule of ERM's own epoch selection; it rewards the shortcut);
- `worst_class`: the lowest per-class validation accuracy, the label-free proxy of SubpopBench (Yang et al.,
  "Change is Hard: A Closer Look at Subpopulation Shift", ICML 2023, §5.3), which loses 1.8 points on average
  against selection by the true worst group there;
- `worst_group:<file>`: the lowest validation accuracy over the groups of one inferred grouping (a groups file
  a label-free model of the run trained on: XRM's cross-mistakes, XRM's own rule, utils.py L154-163 of
  facebookresearch/XRM; ExMap's clusters, ExMap's rule for DFR's C; JTT's error set; ClusterFix's clusters;
  a grouping that is the classes is left out, being `worst_class`);
- `mean_worst_group` (ours): the mean over every inferred grouping of its worst-group accuracy, so that one
  grouping that flips with float rounding moves the score by one share only.

Every group counts, however small, as in each method's own `worst_pseudo_group` selection. Ties go to the higher validation accuracy, then to the earlier model of the report (ERM first), so
a rule that cannot separate the models keeps ERM.

What is compared: each label-free model's validation logits as `evaluate` wrote them; for a model fitted on the
validation set (DFR's last layer), its cross-fitted logits (`HELD_OUT_VAL`), whose training predictions would
otherwise win every rule. Models that used group labels to train or select (✓) are never candidates. The true
groups are read only for the audit: each rule's choice against the best label-free model and the best model
of the run on the test splits (regret, in points), which is what `dvc metrics diff` tracks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from masktune.config.fields import TextList
from masktune.config.params import param
from masktune.errors import UserError
from masktune.selection import worst_group_accuracy

FIXED_RULES = ("average", "worst_class", "mean_worst_group")
GROUP_RULE = "worst_group:"
LABEL_FREE = "✗/✗"


@dataclass(frozen=True, kw_only=True)
class ChooseConfig:
    """Stage `choose`: the rules, in order of preference, whose first this run can compute deploys its choice."""
    rules: tuple[str, ...] = param("choose.rules", TextList())


def inferred_groupings(models: Mapping[str, Mapping]) -> tuple[str, ...]:
    """The groups files the label-free models of the run were trained on (`evaluate`'s records, in report
    order): inferred without group labels by construction, as a model on a file made with them is not ✗/✗.
    The files made with group labels are never named, so never opened."""
    files: list[str] = []
    for record in models.values():
        if record["group_labels"] == LABEL_FREE and record.get("groups") and record["groups"] not in files:
            files.append(record["groups"])
    return tuple(files)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two id vectors cut the rows into the same sets (whatever the ids)."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def rule_names(groupings: Sequence[str]) -> tuple[str, ...]:
    """The rules a run with these inferred groupings can compute (mean_worst_group needs one grouping)."""
    return ("average", "worst_class", *(GROUP_RULE + name for name in groupings),
            *(("mean_worst_group",) if groupings else ()))


def deployed_rule(preferred: Sequence[str], groupings: Sequence[str]) -> str:
    """The first rule of `preferred` that a run with these inferred groupings can compute (a run without XRM
    cannot score XRM's groups); a UserError naming the run's rules when none is, or when a rule is unknown."""
    available = rule_names(groupings)
    known = (*FIXED_RULES, GROUP_RULE)
    unknown = [rule for rule in preferred if not rule.startswith(known) or rule == GROUP_RULE]
    if unknown:
        raise UserError(f"params.yaml: choose.rules: unknown rule {unknown[0]!r} (rules: average, worst_class, "
                        "worst_group:<groups file>, mean_worst_group)")
    for rule in preferred:
        if rule in available:
            return rule
    raise UserError(f"params.yaml: choose.rules: this run can compute none of {', '.join(preferred)} (its inferred "
                    f"groupings: {', '.join(groupings) or 'none'}); add one of {', '.join(available)}")


def rule_scores(predictions: np.ndarray, labels: np.ndarray, groupings: Mapping[str, np.ndarray]) -> dict[str, float]:
    """{rule: score} of one model from its validation predictions, the labels and the inferred groupings'
    validation ids; no group labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    worst = {name: worst_group_accuracy(labels, np.asarray(ids), predictions) for name, ids in groupings.items()}
    return {"average": float((predictions == labels).mean()),
            "worst_class": worst_group_accuracy(labels, labels, predictions),
            **{GROUP_RULE + name: value for name, value in worst.items()},
            "mean_worst_group": float(np.mean(list(worst.values()))) if worst else float("nan")}


def choose(scores: Mapping[str, Mapping[str, float]], rule: str) -> str:
    """The model of `scores` ({model: {rule: score}}, in report order) that `rule` deploys: the highest score,
    ties to the higher `average`, then to the earlier model. A model without a finite score is never chosen
    unless none has one (then the first)."""
    order = list(scores)

    def key(model: str) -> tuple:
        value = scores[model][rule]
        return (np.isfinite(value), value if np.isfinite(value) else -np.inf, scores[model]["average"],
                -order.index(model))

    return max(order, key=key)


def audit(chosen: str, candidates: Sequence[str], results: Mapping[str, Mapping], splits: Sequence[str],
          measure: str) -> dict[str, dict[str, float]]:
    """Per test split: the chosen model's average and `measure` (the worst group, or the worst class where the
    groups are unknown), and its regret in points against the best label-free model (`candidates`) and the
    best model of `results` by that measure. Reads the true groups' figures: an audit, never a choice."""
    report = {}
    for split in splits:
        figure = {name: results[name][split][measure] for name in results}
        best_free = max(figure[name] for name in candidates)
        best = max(figure.values())
        report[split] = {"average": results[chosen][split]["accuracy"], "worst": figure[chosen],
                         "regret_vs_best_label_free": round(100 * (best_free - figure[chosen]), 4),
                         "regret_vs_best": round(100 * (best - figure[chosen]), 4)}
    return report


def choice_markdown(dataset: str, rule: str, chosen: Mapping[str, str], scores: Mapping[str, Mapping[str, float]],
                    audits: Mapping[str, Mapping], titles: Mapping[str, str], left_out: Mapping[str, str],
                    measure_name: str) -> str:
    """The report: each rule's choice and its audit, then every candidate's validation scores."""
    splits = list(next(iter(audits.values())))
    intro = (f"Each rule's choice among the label-free models; test figures and regret (points) against the best "
             f"label-free model and the best model of the run by {measure_name}, read from the true groups: an "
             "audit, never an input of the choice.")
    deployed = (f"Rule (the first of `choose.rules` this run computes): **{rule}**, which deploys "
                f"**{titles[chosen[rule]]}** (`{chosen[rule]}`).")
    lines = [f"# The model to deploy without group labels ({dataset})", "", deployed, "", intro, "",
             "| rule | model | " + " | ".join(f"{s} average | {s} {measure_name} | {s} regret (label-free) | "
                                             f"{s} regret (any)" for s in splits) + " |",
             "|---|---|" + "---|---|---|---|" * len(splits)]
    for name, model in chosen.items():
        cells = []
        for split in splits:
            a = audits[name][split]
            cells += [f"{100 * a['average']:.2f}", f"{100 * a['worst']:.2f}", f"{a['regret_vs_best_label_free']:.2f}",
                      f"{a['regret_vs_best']:.2f}"]
        lines.append(f"| {'**' + name + '**' if name == rule else name} | {titles[model]} | " + " | ".join(cells) + " |")
    rules = list(next(iter(scores.values())))
    lines += ["", "Validation scores (%) of every candidate (no group labels):", "",
              "| model | " + " | ".join(rules) + " |", "|---|" + "---|" * len(rules)]
    for model, values in scores.items():
        lines.append(f"| {titles[model]} | " + " | ".join(f"{100 * values[r]:.2f}" for r in rules) + " |")
    if left_out:
        lines += ["", "Not candidates: " + "; ".join(f"{titles.get(m, m)} ({why})" for m, why in left_out.items()) + "."]
    return "\n".join(lines) + "\n"


def inference_markdown(reports: Mapping[str, Mapping]) -> str:
    """How well each grouping the label-free models were trained on found the true groups (each group-inference
    stage's own diagnostic, `metrics/groups/<name>.json`): read from the true groups, an audit like the regrets,
    so that a clone has every method's diagnostic in one committed file."""
    if not reports:
        return ""
    lines = ["", "How well each grouping of the label-free models found the true groups (read from the true groups:",
             "an audit; a true group is found where at least half of it sits in an inferred group it dominates):", "",
             ("| grouping | groups | train purity | val purity | share of each true group in an inferred group it "
              "dominates (train) |"), "|---|---|---|---|---|"]
    for name, report in reports.items():
        found = ", ".join(f"{group} {share:.0%}" for group, share in report["train"]["true_group_found"].items())
        how = f" ({report['inference']})" if report["inference"] != name else ""
        lines.append(f"| `{name}`{how} | {report['groups']} | {100 * report['train']['purity']:.2f} "
                     f"| {100 * report['val']['purity']:.2f} | {found} |")
    return "\n".join(lines) + "\n"
