"""`python -m masktune.summary`: experiments read from `dvc exp show --json` grouped into configurations by
their params without seeds, and each model's figures summarised over the seeds, by hand."""
from __future__ import annotations

import copy
import csv

import pytest
from conftest import committed_params

from masktune.summary import configurations, experiments, markdown, model_record, summarise, write_csv


def _run(name: str, seed: int, lr, worst: dict[str, float]) -> dict:
    params = copy.deepcopy(committed_params())
    params["seed"] = seed  # the one seed a `-S seed=N` run sets (the sections' stay null)
    params["lr"] = lr
    headline = {model: {"test": {"average": 0.9, "worst_group": value}} for model, value in worst.items()}
    return {"rev": name, "name": name, "data": {"params": {"params.yaml": {"data": params}},
                                                "metrics": {"metrics/evaluate.json": {"data": headline}}}}


def _show() -> list[dict]:
    """`dvc exp show --json`'s shape: a baseline with its experiments (one failed, no metrics)."""
    runs = [_run("a", 0, None, {"erm": 0.1, "jtt": 0.2}), _run("b", 1, None, {"erm": 0.3, "jtt": 0.4}),
            _run("c", 2, None, {"erm": 0.5, "jtt": 0.9}), _run("d", 0, 0.02, {"erm": 0.7, "jtt": 0.8})]
    failed = {"rev": "e", "name": "e", "data": {"params": {}, "metrics": {}}}
    workspace = copy.deepcopy(runs[-1]) | {"rev": "workspace", "name": None, "experiments": None}  # as after exp run
    commit = copy.deepcopy(runs[0]) | {"rev": "abc", "name": "main"}  # a committed baseline: seed 0's run
    return [workspace, commit | {"experiments": [{"revs": [r]} for r in [*runs, failed]]}]


def test_seeds_of_one_configuration_are_summarised_and_other_params_set_configurations_apart():
    runs = experiments(_show())
    assert [run["name"] for run in runs] == ["a", "b", "c", "d"]  # each seed once: the baselines repeat a and d
    assert [run["repeats"] for run in runs] == [["main"], [], [], ["workspace"]]
    groups = configurations(runs)
    assert [[run["name"] for run in group["runs"]] for group in groups] == [["a", "b", "c"], ["d"]]
    assert [group["label"] for group in groups] == ["lr=None", "lr=0.02"]  # the params that differ, seeds aside
    rows = {(row["configuration"], row["model"], row["measure"]): row for group in groups for row in summarise(group)}
    jtt = rows["lr=None", "jtt", "worst_group"]
    assert (jtt["mean"], jtt["std"], jtt["n"]) == (pytest.approx(0.5), pytest.approx(0.360555, abs=1e-6), 3)
    assert rows["lr=0.02", "erm", "worst_group"]["n"] == 1
    assert (jtt["title"], jtt["group_labels"], jtt["selection"]) == ("JTT (Liu et al., 2021)", "✗/✗", "average")
    table = markdown([row for group in groups for row in summarise(group)])
    assert "| JTT (Liu et al., 2021) | ✗/✗ | average | 90.00 ± 0.00 | 50.00 ± 36.06 |" in table
    assert "### biased_mnist (lr=0.02)" in table and "over 3 seed(s)" in table
    assert "| ERM | ✗/✗ | average | 90.00 | 70.00 |" in table  # one seed: its figures


def test_each_model_says_its_group_label_use_and_selection_from_the_params():
    methods = committed_params()["methods"]
    assert model_record("groupdro_true_groups", methods)["group_labels"] == "✓/✓"
    assert model_record("dfr_groups", methods) | {} == {"title": "DFR, true validation groups (supervised reference)",
                                                        "selection": "worst_pseudo_group", "group_labels": "✓/✓"}
    assert model_record("masktune", methods)["group_labels"] == "✗/✗"
    assert model_record("erm", methods)["selection"] == "average"


def test_the_chart_data_has_a_bar_per_row_with_its_spread(tmp_path):
    rows = summarise(configurations(experiments(_show()))[0])
    write_csv(tmp_path / "s.csv", rows)
    with open(tmp_path / "s.csv", newline="") as f:
        table = list(csv.DictReader(f))
    jtt = next(r for r in table if r["model"] == "jtt" and "worst_group" in r["bar"])
    assert (float(jtt["mean"]), float(jtt["lower"]), float(jtt["upper"]), jtt["n"]) == (
        pytest.approx(0.5), pytest.approx(0.5 - 0.360555, abs=1e-5), pytest.approx(0.5 + 0.360555, abs=1e-5), "3")


def test_the_model_chosen_without_group_labels_gets_a_row_over_the_seeds():
    """Each seed's `metrics/choice.json` (stage `choose`): one row whatever model each seed deployed, its
    selection cell naming the rule and every seed's model; no row when a seed has no choice."""
    show = _show()
    choices = {"a": ("masktune", 0.6), "b": ("jtt", 0.7), "c": ("masktune", 0.8), "d": ("erm", 0.5)}
    for run in [*show[1]["experiments"], {"revs": [show[0]]}, {"revs": [show[1]]}]:
        for rev in run["revs"]:
            if rev["name"] in choices or rev["rev"] in ("workspace", "abc"):
                model, worst = choices.get(rev["name"]) or choices["d" if rev["rev"] == "workspace" else "a"]
                rev["data"]["metrics"]["metrics/choice.json"] = {"data": {
                    "rule": "worst_group:xrm", "model": model, "test": {"average": 0.95, "worst": worst}}}
    groups = configurations(experiments(show))
    rows = [row for row in summarise(groups[0]) if row["model"] == "chosen"]
    assert [(row["measure"], row["n"]) for row in rows] == [("average", 3), ("worst_group", 3)]
    assert rows[1]["mean"] == pytest.approx(0.7) and rows[1]["std"] == pytest.approx(0.1)
    assert rows[1]["title"] == "chosen without group labels (worst_group:xrm)"
    assert rows[1]["selection"] == "worst_group:xrm: seed 0 masktune, seed 1 jtt, seed 2 masktune"
    assert "| chosen without group labels (worst_group:xrm) | ✗/✗ | worst_group:xrm: seed 0 masktune, seed 1 jtt, " \
           "seed 2 masktune | 95.00 ± 0.00 | 70.00 ± 10.00 |" in markdown(rows)
    groups[0]["runs"].reverse()  # `dvc exp show` lists the newest experiment first: the cell keeps seed order
    assert summarise(groups[0])[-1]["selection"] == "worst_group:xrm: seed 0 masktune, seed 1 jtt, seed 2 masktune"
    del groups[1]["runs"][0]["choice"]
    assert [row for row in summarise(groups[1]) if row["model"] == "chosen"] == []
