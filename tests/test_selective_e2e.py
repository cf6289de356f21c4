"""Selective classification end to end: the pipeline on plain 10-class MNIST (the real digits' first
3,000 / 1,000 when they are beside the project, else the synthetic twin in the same IDX format), run
by the real `dvc` in a throwaway repository, with ERM and MaskTune only.

Checks: one `dvc repro` trains the two-ERM control (`train_erm_control@1`) and runs `selective`; its
scores are wired to the right models and splits (each softmax response's accuracy equals what
`evaluate` measured for that model; each curve ends at full coverage with the model's error); the
control is another model; the risk-coverage plot renders through its template; `selective.coverages`
reruns `selective` only; `selective.control_seed_offsets: []` drops the control's stage and rows; an
offset 0 (a control equal to ERM) stops with one line. And the paper's CIFAR-10, from a fixture in its
distributed format through the whole mode (its stages in this process: pipeline_checks.InProcessRun): augmented pixels in training, masks under the augmentation in
the finetune, the official recipe's learning rate.
"""
from __future__ import annotations

import copy
import csv
import json

import pytest
import torch
from conftest import MNIST_DIR
from fixtures_datasets import make_cifar10, make_mnist
from pipeline_checks import NO_GROUP_METHODS, SMALL_RUN, InProcessRun
from scratch import ScratchProject, merge

pytestmark = pytest.mark.slow

STAGES = ["check_params", "prepare", "train_erm", "train_erm_control@1", "compute_saliency",
          "materialize_masked_dataset@masktune", "finetune@masktune", "evaluate", "choose", "selective"]
SCORES = ["erm", "masktune", "masktune_alone", "erm_control1", "two_erm_control1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        mnist_dir = MNIST_DIR
    else:
        mnist_dir = make_mnist(tmp_path_factory.mktemp("mnist"))
    small = {"dataset": "mnist",
             "prepare": {"mnist": {"mnist_dir": str(mnist_dir), "train_limit": 3000, "test_limit": 1000,
                                   "val_size": 600}},
             "methods": {"erm": ["erm"], "masking": ["masktune"], **NO_GROUP_METHODS},
             "train_erm": {"epochs": 1}}
    return ScratchProject(tmp_path_factory.mktemp("scratch") / "project", small)


def _json(project, path: str):
    return json.loads((project.path / path).read_text())


def test_selective_classification_end_to_end(project):
    assert project.stages_run("repro") == STAGES
    headline = _json(project, "metrics/selective.json")
    assert list(headline) == SCORES
    targets = (80, 85, 90, 95, 100)
    for score in headline.values():
        assert list(score) == ["test"]
        row = score["test"]
        assert set(row) == {"aurc"} and 0 <= row["aurc"] <= 1  # one headline number; the rest in the details
    for score in _json(project, "metrics/selective/details.json")["scores"].values():
        found = score["results"]["test"]["targets"]
        assert [t["target_coverage"] for t in found] == list(targets) and all(0 < t["coverage"] <= 1 for t in found)

    # Wiring: each softmax response is the model `evaluate` measured, on the same split.
    evaluated = _json(project, "metrics/evaluate/details.json")["methods"]
    scores = _json(project, "metrics/selective/details.json")["scores"]
    for name, model in (("erm", "erm"), ("masktune_alone", "masktune")):
        assert scores[name]["results"]["test"]["accuracy"] == evaluated[model]["results"]["test"]["accuracy"]
    assert scores["masktune"]["models"] == ["erm", "masktune"] and scores["two_erm_control1"]["models"] == ["erm", "erm_control1"]
    # Every curve ends at full coverage with the score's error over the whole split.
    with open(project.path / "metrics/selective/risk_coverage.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for name in SCORES:
        last = [r for r in rows if r["score"] == name][-1]
        assert float(last["coverage"]) == 1.0
        assert float(last["risk"]) == pytest.approx(1 - scores[name]["results"]["test"]["accuracy"], abs=1e-6)
    # The control is a second model: ERM's recipe, seed train_erm.seed + 1.
    erm = torch.load(project.path / "models/erm_best.pt", weights_only=True)["model"]
    control = torch.load(project.path / "models/control/erm_control1_best.pt", weights_only=True)["model"]
    assert set(erm) == set(control) and any(not torch.equal(erm[k], control[k]) for k in erm)
    assert _json(project, "metrics/train_erm_control/1/metrics.json")["recipe"]["seed"] == 1
    table = (project.path / "metrics/selective/table.md").read_text()
    assert table.count("| control |") == 2 and table.count("| official |") == 1
    # The risk-coverage plot: one line per score, through the template in .dvc/plots.
    shown = json.loads(project.dvc("plots", "show", "--json", "metrics/selective/risk_coverage.csv").stdout)
    plot = shown["data"]["metrics/selective/risk_coverage.csv"][0]["content"]
    assert plot["spec"]["encoding"]["color"]["field"] == "score"
    assert {v["score"] for v in plot["data"]["values"]} == set(SCORES)
    project.commit("baseline")

    # Target coverages: selective only.
    assert project.stages_run("exp", "run", "-S", "selective.coverages=[50,100]") == ["check_params", "selective"]
    targets = _json(project, "metrics/selective/details.json")["scores"]["masktune"]["results"]["test"]["targets"]
    assert [t["target_coverage"] for t in targets] == [50, 100]
    # No control: its stage leaves the pipeline and its rows the report (`evaluate` reruns too: it depends
    # on the models/ folder, which held the control's checkpoints, and reports the same numbers; and
    # check_params, which stamps the offsets a `foreach` stage is named after).
    before = _json(project, "metrics/evaluate.json")
    assert project.stages_run("exp", "run", "-S", "selective.control_seed_offsets=[]") == [
        "check_params", "evaluate", "selective"]
    assert _json(project, "metrics/evaluate.json") == before
    assert list(_json(project, "metrics/selective.json")) == SCORES[:3]
    assert "train_erm_control" not in project.dvc("stage", "list").stdout


def test_a_control_equal_to_erm_stops_with_one_line(project):
    result = project.dvc("exp", "run", "-S", "selective.control_seed_offsets=[0]", check=False)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert lines and "selective.control_seed_offsets must be a list of distinct integers >= 1, got [0]" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_the_mode_on_a_cifar10_fixture(tmp_path):
    """CIFAR-10 pickles (48 train, 12 val, 10 test images), tiny_cnn for one epoch, ERM and MaskTune."""
    params = merge(copy.deepcopy(SMALL_RUN), {
        "dataset": "cifar10", "prepare": {"cifar10": {"dir": str(make_cifar10(tmp_path / "cifar10"))}},
        "methods": {"erm": ["erm"], "masking": ["masktune"], **NO_GROUP_METHODS},
        "selective": {"control_seed_offsets": [1]}})
    project = InProcessRun(tmp_path / "project", params)  # the stages in this process: CI time (DVC: the test above)
    assert project.stages == STAGES
    assert _json(project, "metrics/train_erm/metrics.json")["recipe"]["lr"] == 0.1  # bash_files/cifar10_masktune.sh
    assert _json(project, "metrics/finetune/masktune.json")["lr"] == 0.1  # constant: the official finetune's rate
    headline = _json(project, "metrics/selective.json")
    assert list(headline) == SCORES and all(list(score) == ["test"] for score in headline.values())
    scores = _json(project, "metrics/selective/details.json")["scores"]
    evaluated = _json(project, "metrics/evaluate/details.json")["methods"]
    assert scores["erm"]["results"]["test"]["accuracy"] == evaluated["erm"]["results"]["test"]["accuracy"]
    assert [t["target_coverage"] for t in scores["masktune"]["results"]["test"]["targets"]] == [80, 85, 90, 95, 100]
