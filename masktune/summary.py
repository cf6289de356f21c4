"""Experiments summarised over seeds: `python -m masktune.summary [REV ...]`.

Reads experiments the DVC way, `dvc exp show --json` (run, queued and finished, or the named revisions
and their experiments), and groups them into configurations: experiments whose params are equal but for
their seeds (every key named `seed`) are seeds of one configuration. Per configuration (its dataset and
the params that set it apart), model, test split and measure of the headline (`metrics/evaluate.json`):
mean, sample standard deviation and the number of seeds; each row says the model's group-label use
(training / selection) and its selection rule, from the params. Writes `summary.md`, `summary.csv` (the
`dvc plots` bar chart with error bars, `.dvc/plots/mean_std_bars.json`) and `summary.png` (the same chart
as an image, for a machine without internet) into `--out`.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from masktune.errors import UserError, run_stage
from masktune.eval.figures import save_method_panels
from masktune.io.files import atomic_directory
from masktune.methods import Spec
from masktune.registry import groups_title, specs
from masktune.selection import group_labels_used

HEADLINE = "metrics/evaluate.json"
CHOICE = "metrics/choice.json"  # the model to deploy without group labels (stage `choose`)
PAIRS = ("robust_train", "last_layer")


def experiments(show: Sequence[Mapping]) -> list[dict]:
    """{"name", "params", "headline", "repeats"} of every distinct run with a headline in the parsed output
    of `dvc exp show --json`: the experiments, then the baselines (the workspace, the commits). Runs with
    the same params, seeds included, are one run, counted once: after `dvc exp run` the workspace repeats
    the last experiment, and a committed baseline repeats the experiment of its seeds; an experiment is
    kept before a baseline, and `repeats` names the runs it stands for."""
    found = []
    for baseline in show:
        runs = [run for group in baseline.get("experiments") or [] for run in group.get("revs", [])] + [baseline]
        for run in runs:
            data = run.get("data") or {}
            metrics = data.get("metrics") or {}
            headline = metrics.get(HEADLINE, {}).get("data")
            params = (data.get("params") or {}).get("params.yaml", {}).get("data")
            if headline and params:
                found.append({"name": run.get("name") or data.get("rev") or run.get("rev"), "params": params,
                              "headline": headline, "choice": metrics.get(CHOICE, {}).get("data"),
                              "baseline": run is baseline})
    distinct: dict[str, dict] = {}
    for run in sorted(found, key=lambda run: run["baseline"]):  # stable: experiments first, in order
        key = json.dumps(run["params"], sort_keys=True)
        if key in distinct:
            distinct[key]["repeats"].append(run["name"])
        else:
            distinct[key] = {"name": run["name"], "params": run["params"], "headline": run["headline"],
                             "choice": run["choice"], "repeats": []}
    return list(distinct.values())


def _without_seeds(node):
    if isinstance(node, Mapping):
        return {key: _without_seeds(value) for key, value in node.items() if key != "seed"}
    return node


def _leaves(node, prefix: str = "") -> dict[str, object]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}{key}.").items()} if node \
        else {prefix: node}


def configurations(runs: Sequence[Mapping]) -> list[dict]:
    """The runs grouped by their params without seeds, in order of first appearance; each with the params
    that set it apart from the other configurations (`label`)."""
    groups: dict[str, dict] = {}
    for run in runs:
        key = json.dumps(_without_seeds(run["params"]), sort_keys=True)
        groups.setdefault(key, {"params": run["params"], "runs": []})["runs"].append(run)
    leaves = [_leaves(_without_seeds(group["params"])) for group in groups.values()]
    differing = sorted({k for leaf in leaves for k in leaf if len({json.dumps(x.get(k)) for x in leaves}) > 1})
    for group, leaf in zip(groups.values(), leaves):
        group["label"] = ", ".join(f"{k.rstrip('.')}={leaf.get(k)}" for k in differing if k != "dataset.")
    return list(groups.values())


def model_record(name: str, methods: Mapping, registry: Mapping[str, Spec] | None = None) -> dict:
    """Title, group-label use and selection rule of model `name`, from the `methods` param and the methods'
    specs (the titles the stages record in the checkpoints: a pair's paper title, or `<trainer> with <groups>`)."""
    registry = specs() if registry is None else registry
    pair = next((methods[kind][name] for kind in PAIRS if name in (methods.get(kind) or {})), None)
    if pair is None:  # ERM (best average validation accuracy) and the masking methods (their one-epoch finetune)
        title = "ERM" if name == "erm" else registry[name].title if name in registry else name
        return {"title": title, "group_labels": "✗/✗", "selection": "average" if name == "erm" else "none (the finetune)"}
    selection = pair.get("selection", "worst_pseudo_group")
    trainer = registry.get(pair["trainer"])
    title = name if trainer is None else (trainer.paper_pairs.get(pair["groups"])
                                          or f"{trainer.title} with {groups_title(registry, pair['groups'])}")
    return {"title": title, "selection": selection,
            "group_labels": str(group_labels_used(pair["groups"] == "true_groups", selection))}


def summarise(group: Mapping) -> list[dict]:
    """Rows of one configuration: per model, test split and measure, mean, sample std and n over its seeds."""
    runs, methods = group["runs"], group["params"]["methods"]
    registry = specs()
    rows = []
    for name in runs[0]["headline"]:
        record = model_record(name, methods, registry)
        for split, measures in runs[0]["headline"][name].items():
            for measure in measures:
                values = [run["headline"][name][split][measure] for run in runs if name in run["headline"]]
                rows.append(_row(group, name, record, split, measure, values))
    return rows + chosen_rows(group)


def _row(group: Mapping, model: str, record: Mapping, split: str, measure: str, values: Sequence[float]) -> dict:
    return {"configuration": group["label"], "dataset": group["params"]["dataset"], "model": model, **record,
            "split": split, "measure": measure, "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else float("nan"), "n": len(values)}


def _seed_of(run: Mapping) -> int | None:
    """The run's top-level `seed`, the one every stage derives its seeds from (`-S seed=N`; the datasets'
    own draws, `prepare.<name>.seed`, are the data, not the run); None where params.yaml has none."""
    seed = run["params"].get("seed")
    return seed if isinstance(seed, int) else None


def chosen_rows(group: Mapping) -> list[dict]:
    """The row of the model each seed would deploy without group labels (`metrics/choice.json`): its test
    average and worst group (class), over the seeds whatever model each chose; its selection cell names the
    rule and each seed's model, in seed order (the experiments' order is newest first). None where a seed
    has no choice, or the seeds' rules differ."""
    runs = group["runs"]
    choices = [run.get("choice") for run in runs]
    if not all(choices) or len({choice["rule"] for choice in choices}) != 1:
        return []
    rule = choices[0]["rule"]
    named = sorted(((_seed_of(run), run.get("name") or "", choice["model"]) for run, choice in zip(runs, choices)),
                   key=lambda item: (item[0] is None, item[0] or 0, item[1]))
    record = {"title": f"chosen without group labels ({rule})", "group_labels": "✗/✗",
              "selection": f"{rule}: " + ", ".join(f"seed {seed} {model}" if seed is not None else f"{name} {model}"
                                                   for seed, name, model in named)}
    first = runs[0]["headline"][next(iter(runs[0]["headline"]))]
    rows = []
    for split, measures in first.items():
        for measure in measures:
            key = "average" if measure == "average" else "worst"
            rows.append(_row(group, "chosen", record, split, measure, [choice[split][key] for choice in choices]))
    return rows


def markdown(rows: Sequence[Mapping]) -> str:
    """One table per configuration: a row per model, a column per test split and measure, mean ± std (%)."""
    lines = []
    for configuration in dict.fromkeys((row["dataset"], row["configuration"]) for row in rows):
        chosen = [row for row in rows if (row["dataset"], row["configuration"]) == configuration]
        columns = list(dict.fromkeys((row["split"], row["measure"]) for row in chosen))
        seeds = sorted({row["n"] for row in chosen})
        lines += [f"### {configuration[0]}" + (f" ({configuration[1]})" if configuration[1] else ""), "",
                  f"Mean ± sample standard deviation over {'/'.join(map(str, seeds))} seed(s) (%; one seed: its figure).",
                  "",
                  "| method | group labels (train / select) | selection | "
                  + " | ".join(f"`{split}` {measure.replace('_', ' ')}" for split, measure in columns) + " |",
                  "|" + "---|" * (3 + len(columns))]
        for model in dict.fromkeys(row["model"] for row in chosen):
            cells = {(row["split"], row["measure"]): row for row in chosen if row["model"] == model}
            first = next(iter(cells.values()))
            lines.append(f"| {first['title']} | {first['group_labels']} | {first['selection']} | " + " | ".join(
                _cell(cells[c]) for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(row: Mapping) -> str:
    return f"{100 * row['mean']:.2f}" + (f" ± {100 * row['std']:.2f}" if row["n"] > 1 else "")


def write_csv(path: Path, rows: Sequence[Mapping]) -> None:
    """The bar chart's data: one row per configuration, model, split and measure."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["bar", "model", "mean", "lower", "upper", "n"])
        for row in rows:
            label = " | ".join(x for x in (row["dataset"], row["configuration"], row["split"], row["measure"]) if x)
            std = 0.0 if row["std"] != row["std"] else row["std"]
            writer.writerow([f"{label} | {row['model']} {row['group_labels']}", row["model"],
                             f"{row['mean']:.6f}", f"{row['mean'] - std:.6f}", f"{row['mean'] + std:.6f}", row["n"]])


def write_png(path: Path, rows: Sequence[Mapping]) -> None:
    """The same figures as an image (masktune.eval.figures.save_method_panels): a panel per configuration,
    split and measure, a bar per model coloured by its group-label use, +- one sample std over seeds, ERM's
    mean as the dashed reference line."""
    panels: dict = {}
    uses: dict = {}
    for r in rows:
        title = " | ".join(x for x in (r["dataset"], r["configuration"], r["split"], r["measure"].replace("_", " ")) if x)
        panels.setdefault(title, {})[r["model"]] = (r["mean"], 0.0 if r["std"] != r["std"] else r["std"])
        uses.setdefault(r["model"], r["group_labels"])
    for values in panels.values():  # a model missing from a configuration: an empty bar, not a shifted one
        for model in uses:
            values.setdefault(model, (0.0, None))
    save_method_panels(path, panels, uses, f"experiments over seeds, mean +- sample std (n = "
                                           f"{', '.join(sorted({str(r['n']) for r in rows}))}; python -m masktune.summary)")


def exp_show(revs: Sequence[str], all_commits: bool) -> list[dict]:
    """`dvc exp show --json` of the named revisions (default: the workspace's baseline), queued runs included."""
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", "--hide-failed"]
    command += ["--all-commits"] if all_commits else [a for rev in revs for a in ("--rev", rev)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UserError(f"dvc exp show failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(result.stdout)


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revs", nargs="*", help="revisions whose experiments to read (default: the workspace's)")
    parser.add_argument("--all-commits", action="store_true", help="the experiments of every commit")
    parser.add_argument("--out", type=Path, default=Path("metrics/summary"), help="folder to write")
    args = parser.parse_args()
    runs = experiments(exp_show(args.revs, args.all_commits))
    if not runs:
        raise UserError(f"no experiment with {HEADLINE} found (run `dvc exp run` first)")
    for run in runs:
        if run["repeats"]:
            print(f"{', '.join(map(str, run['repeats']))}: the params of {run['name']}, seeds included: counted once",
                  file=sys.stderr)
    rows = [row for group in configurations(runs) for row in summarise(group)]
    with atomic_directory(args.out) as tmp:
        folder = Path(tmp)
        (folder / "summary.md").write_text(markdown(rows), encoding="utf-8")
        write_csv(folder / "summary.csv", rows)
        write_png(folder / "summary.png", rows)
    print(markdown(rows))


if __name__ == "__main__":
    main()
