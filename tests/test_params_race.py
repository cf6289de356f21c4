"""A checkpoint records the stage and the config that trained it, and every stage that loads one refuses it
when params.yaml now declares another config for that stage: the moment between a stage's exit and DVC
recording its params in dvc.lock (an edit there is recorded for outputs made with the old values, and
`dvc status` says up to date) is closed by the stage that reads the outputs."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
import yaml
from conftest import ROOT, committed_params
from fixtures_datasets import make_mnist
from scratch import merge, run_stage_in_process

from masktune.models.checkpoint import load_checkpoint

TRAIN = ("python -m stages.train_erm --data data/prepared.h5 --best models/erm_best.pt --last models/erm_last.pt "
         "--live metrics/train_erm --oracle models/oracle/erm.pt")
SALIENCY = "python -m stages.compute_saliency --model models/erm_last.pt --data data/prepared.h5 --out data/saliency.h5"


@pytest.fixture()
def trained(tmp_path, tmp_path_factory):
    """A project with ERM trained by its stage (in process) on 300 synthetic digits, one epoch."""
    mnist = make_mnist(tmp_path_factory.mktemp("mnist"), n_train=400, n_test=60)
    params = merge(committed_params(), {
        "prepare": {"biased_mnist": {"mnist_dir": str(mnist), "train_limit": 300, "test_limit": 60, "val_size": 60}},
        "train_erm": {"epochs": 1}})
    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run_stage_in_process("python -m stages.prepare --out data/prepared.h5")
        run_stage_in_process(TRAIN)
        yield tmp_path, params
    finally:
        os.chdir(cwd)


def test_the_checkpoint_records_the_stage_and_config_that_trained_it(trained):
    path, _ = trained
    state = torch.load(path / "models/erm_last.pt", weights_only=True)
    assert state["stage"] == "train_erm"
    assert (state["config"]["lr"], state["config"]["epochs"], state["config"]["arch"]) == (0.01, 1, "small_cnn")
    assert "workers" not in state["config"]  # how it was launched is not what it is


def test_a_stage_refuses_a_checkpoint_trained_with_other_params(trained, capsys):
    path, params = trained
    run_stage_in_process(SALIENCY)  # the params it was trained with: accepted
    (path / "params.yaml").write_text(yaml.safe_dump(merge(params, {"lr": 0.05}), sort_keys=False))
    with pytest.raises(SystemExit) as stopped:
        run_stage_in_process(SALIENCY.replace("saliency.h5", "saliency_b.h5"))
    assert stopped.value.code == 2 and not (path / "data/saliency_b.h5").exists()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"error: models/erm_last.pt: trained by stage 'train_erm' with lr None, but {path / 'params.yaml'} "
                    "now gives lr 0.05 (it changed after the model was written, before DVC recorded it): run "
                    "`dvc repro -f -s train_erm`")
    load_checkpoint(path / "models/erm_last.pt", torch.device("cpu"))  # outside a stage: no params to hold it to
