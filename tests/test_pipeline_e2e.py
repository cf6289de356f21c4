"""The whole DVC pipeline on a few thousand MNIST digits, in a throwaway git repository: the real
MNIST when it is beside the project, and always its synthetic twin (the same IDX format).

Checks what a researcher relies on: `dvc repro` runs every stage; the same params rerun to the same
bytes; `dvc exp run -S finetune.lr=...` reruns only finetune and evaluate; `-S lr=...` reruns
train_erm and everything after it but not prepare; `dvc metrics diff` shows the change;
`-S mask.method=random` (RandMask) reruns from the masking on; a second `dvc repro` runs nothing;
a bad param stops `dvc repro` with one clear line, before any work when it belongs to a later stage.
"""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import MNIST_DIR
from fixtures_datasets import make_mnist
from scratch import RUNNING_STAGE, ScratchProject

pytestmark = pytest.mark.slow

ALL_STAGES = ["prepare", "train_erm", "compute_saliency", "materialize_masked_dataset", "finetune",
              "evaluate"]


@pytest.fixture(scope="module", params=["real", "synthetic"])
def project(request, tmp_path_factory):
    if request.param == "real":
        if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
            pytest.skip(f"real MNIST not found at {MNIST_DIR} (set MASKTUNE_MNIST_DIR); the synthetic twin runs")
        mnist_dir = MNIST_DIR
    else:
        mnist_dir = make_mnist(tmp_path_factory.mktemp("mnist"))
    small = {"prepare": {"biased_mnist": {"mnist_dir": str(mnist_dir), "train_limit": 3000, "test_limit": 1000,
                                          "val_size": 600}},
             "train_erm": {"epochs": 1}}
    return ScratchProject(tmp_path_factory.mktemp("scratch") / "project", small)


def test_pipeline_reruns_exactly_what_a_change_affects(project):
    assert project.stages_run("repro") == ALL_STAGES
    evaluation = json.loads((project.path / "metrics/evaluate.json").read_text())
    assert set(evaluation) == {"erm", "masktune"}
    for model in evaluation.values():
        assert set(model) == {"test_original", "test_biased", "val"}
        assert 0 <= model["test_biased"]["worst_group_accuracy"] <= model["test_biased"]["accuracy"] <= 1
    assert (project.path / "metrics/evaluate/mask_examples.png").read_bytes()[:4] == b"\x89PNG"
    project.commit("baseline")

    # Same params, same data: every output (checkpoints, HDF5, metrics, plots) is byte-identical.
    assert project.stages_run("repro", "--force", "--no-run-cache") == ALL_STAGES
    assert project.run("git", "status", "--porcelain").stdout == ""

    assert project.stages_run("exp", "run", "-S", "finetune.lr=0.005") == ["finetune", "evaluate"]
    assert json.loads((project.path / "metrics/finetune.json").read_text())["lr"] == 0.005

    assert project.stages_run("exp", "run", "-S", "lr=0.02") == ALL_STAGES[1:]
    diff = json.loads(project.dvc("metrics", "diff", "--json").stdout)
    erm_loss = diff["metrics/train_erm/metrics.json"]["train.loss"]
    assert erm_loss["diff"] != 0 and erm_loss["old"] != erm_loss["new"]
    params_diff = json.loads(project.dvc("params", "diff", "--json").stdout)["params.yaml"]
    assert (params_diff["lr"]["old"], params_diff["lr"]["new"]) == (None, 0.02)  # null: recipes.biased_mnist.lr
    assert json.loads((project.path / "metrics/train_erm/metrics.json").read_text())["recipe"]["lr"] == 0.02

    assert project.stages_run("exp", "run", "-S", "mask.method=random") == [
        "materialize_masked_dataset", "finetune", "evaluate"]
    assert set(json.loads((project.path / "metrics/evaluate.json").read_text())) == {"erm", "randmask"}

    assert project.stages_run("repro") == []


def _repro_with_params(project, edit) -> subprocess.CompletedProcess:
    """`dvc repro` with params.yaml edited by `edit(values)`, restored afterwards."""
    params = (project.path / "params.yaml").read_text()
    edited = yaml.safe_load(params)
    edit(edited)
    (project.path / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    try:
        return project.dvc("repro", check=False)
    finally:
        (project.path / "params.yaml").write_text(params)


def test_bad_param_of_a_later_stage_stops_the_first_stage_before_any_work(project):
    """`-S lr=0.03 -S finetune.lr=abc`: train_erm (the first stage to rerun) stops at once, naming
    finetune.lr, instead of training and computing saliency first."""
    def edit(values):
        values["lr"], values["finetune"]["lr"] = 0.03, "abc"

    lock = (project.path / "dvc.lock").read_text()
    result = _repro_with_params(project, edit)
    assert result.returncode != 0
    assert RUNNING_STAGE.findall(result.stdout) == ["train_erm"]
    assert "error: params.yaml: finetune.lr must be a number > 0.0 or null, got 'abc'" in result.stderr
    assert "epoch 1/" not in result.stdout  # no training happened
    assert (project.path / "dvc.lock").read_text() == lock


def test_bad_param_stops_repro_with_one_clear_line(project):
    def edit(values):
        values["mask"]["threshold_std"] = "high"

    result = _repro_with_params(project, edit)
    assert result.returncode != 0
    assert "error: params.yaml: mask.threshold_std must be a number >= 0.0, got 'high'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
