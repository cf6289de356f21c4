"""The whole DVC pipeline on a few thousand real MNIST digits, in a throwaway git repository.

Checks what a researcher relies on: `dvc repro` runs every stage; the same params rerun to the same
bytes; `dvc exp run -S finetune.lr=...` reruns only finetune and evaluate; `-S lr=...` reruns
train_erm and everything after it but not prepare; `dvc metrics diff` shows the change;
`-S mask.method=random` (RandMask) reruns from the masking on; a second `dvc repro` runs nothing;
a bad param stops `dvc repro` with one clear line.
"""
from __future__ import annotations

import json

import pytest

from masktune.scratch import ScratchProject

ALL_STAGES = ["prepare", "train_erm", "compute_saliency", "materialize_masked_dataset", "finetune",
              "evaluate"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, mnist_dir):
    small = {"prepare": {"mnist_dir": str(mnist_dir), "train_limit": 3000, "test_limit": 1000,
                         "val_size": 600},
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


def test_bad_param_stops_repro_with_one_clear_line(project):
    params = (project.path / "params.yaml").read_text()
    (project.path / "params.yaml").write_text(params.replace("threshold_std: 2.0", "threshold_std: high"))
    try:
        result = project.dvc("repro", check=False)
    finally:
        (project.path / "params.yaml").write_text(params)
    assert result.returncode != 0
    assert "error: params.yaml: mask.threshold_std must be a number >= 0.0, got 'high'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
