"""Each paper dataset end to end on small fixtures in its real on-disk format.

Waterbirds, CelebA and IN-9L cannot be downloaded here; the fixtures (tests/fixtures_datasets.py)
have their exact file layouts with a few dozen small JPEGs. The model is `tiny_cnn` for one epoch
(the official ResNet-50 recipe is what runs without these overrides); everything else is the
pipeline as a user runs it: prepare reads the folder, the official transforms and masking views,
saliency, masks mapped to the raw images, finetune, group and Background Challenge metrics. Each
dataset's stages run in this process (pipeline_checks.InProcessRun: CI time); one Waterbirds run goes
through `dvc exp run -S dataset=waterbirds` itself, and its mask alignment reruns what it should.
"""
from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT, committed_params
from fixtures_datasets import CELEBA_COUNTS, WATERBIRDS_COUNTS, make_celeba, make_in9l, make_waterbirds
from pipeline_checks import (
    ALL_STAGES,
    DATA_STAGES,
    FEW_METHODS,
    FEW_MODELS,
    MASKTUNE_ONLY,
    SMALL_RUN,
    InProcessRun,
    evaluation_of,
    resnet18_weights,
    stages_of,
)
from scratch import ScratchProject, merge

from masktune.eval.models import reported_models

# DFR (ExMap's last step and its baselines) balances groups by the smallest one with more than 5
# images, in each random half of the validation set (official rule): the fixtures' validation splits
# are larger than their defaults, so that every half has such a group.
WATERBIRDS = {**WATERBIRDS_COUNTS, "val": (16, 8, 8, 16)}
CELEBA = {**CELEBA_COUNTS, "val": (16, 6, 16, 6)}


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("datasets")
    weights = resnet18_weights(data / "resnet18_random.pth")
    make_waterbirds(data / "waterbirds", WATERBIRDS)
    make_celeba(data / "celeba", CELEBA, nested=True)
    make_in9l(data / "in9", val_per_class=13)
    return merge(copy.deepcopy(SMALL_RUN), {
        "prepare": {"waterbirds": {"dir": str(data / "waterbirds")}, "celeba": {"dir": str(data / "celeba")},
                    "in9l": {"dir": str(data / "in9")}},
        "clusterfix": {"weights_path": str(weights)},  # the recipes' ResNet-18 features, from a local file
        "methods": FEW_METHODS})  # every method runs on an image folder in tests/test_folder_dataset.py


@pytest.mark.slow
def test_waterbirds_runs_end_to_end(params, tmp_path):
    project = InProcessRun(tmp_path / "project", {**params, "dataset": "waterbirds"})
    assert project.stages == stages_of(FEW_METHODS, ALL_STAGES)
    with h5py.File(project.path / "data/prepared.h5", "r") as f:
        assert f.attrs["dataset"] == "waterbirds"
        for split, counts in WATERBIRDS.items():  # groups = 2 * place + y, as built
            assert np.bincount(f[f"{split}/groups"][()], minlength=4).tolist() == list(counts)
            assert len(f[f"{split}/offsets"]) == sum(counts) + 1
    with h5py.File(project.path / "data/masks/masktune.h5", "r") as f:
        assert f["masks"].shape == (sum(WATERBIRDS_COUNTS["train"]), 224 * 224 // 8)  # masking view 224 x 224
    evaluation = evaluation_of(project, FEW_MODELS)
    for model in FEW_MODELS:
        test = evaluation[model]["test"]
        assert set(test["groups"]) == {"landbird_land", "waterbird_land", "landbird_water", "waterbird_water"}
        assert test["worst_group_accuracy"] == min(test["groups"].values())
        assert 0 <= test["average_accuracy_train_weighted"] <= 1
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())  # Waterbirds' "average"
    assert headline["clusterfix"]["test"]["average"] == evaluation["clusterfix"]["test"]["average_accuracy_train_weighted"]


@pytest.mark.slow
def test_celeba_runs_end_to_end(params, tmp_path):
    project = InProcessRun(tmp_path / "project", {**params, "dataset": "celeba", "methods": MASKTUNE_ONLY})
    assert project.stages == stages_of(MASKTUNE_ONLY, DATA_STAGES)
    evaluation = evaluation_of(project, reported_models(MASKTUNE_ONLY, "models"))
    assert set(evaluation["erm"]["test"]["groups"]) <= {"not_blond_female", "blond_female", "not_blond_male",
                                                        "blond_male"}
    live = json.loads((project.path / "metrics/train_erm/metrics.json").read_text())
    assert live["recipe"]["lr"] == 0.0001  # recipes.celeba (bash_files/celeba_masktune.sh)


@pytest.mark.slow
def test_in9l_runs_end_to_end_with_the_background_challenge(params, tmp_path):
    project = InProcessRun(tmp_path / "project", {**params, "dataset": "in9l", "methods": MASKTUNE_ONLY})
    evaluation = evaluation_of(project, reported_models(MASKTUNE_ONLY, "models"))
    for model in reported_models(MASKTUNE_ONLY, "models"):
        challenge = evaluation[model]["background_challenge"]
        assert set(challenge) == {"original", "mixed_same", "mixed_rand", "only_fg", "bg_gap"}
        assert challenge["bg_gap"] == pytest.approx(challenge["mixed_same"] - challenge["mixed_rand"])
        assert challenge["original"] == evaluation[model]["test_original"]["accuracy"]


@pytest.mark.slow
def test_waterbirds_through_dvc_and_the_mask_alignment_reruns_only_finetune_and_the_reports(params, tmp_path):
    """`dvc exp run -S dataset=waterbirds` (ERM and MaskTune) runs every stage through DVC on images (the runs
    above call the same stages in process); then the official stretch of the masks reruns MaskTune's finetune
    and the three report stages only."""
    project = ScratchProject(tmp_path / "project", {**params, "methods": MASKTUNE_ONLY})
    assert project.stages_run("exp", "run", "-S", "dataset=waterbirds") == stages_of(MASKTUNE_ONLY, DATA_STAGES)
    evaluation_of(project, reported_models(MASKTUNE_ONLY, "models"))
    project.commit("waterbirds")
    assert project.stages_run("exp", "run", "-S", "finetune.alignment=stretch") == [
        "check_params", "finetune@masktune", "evaluate", "choose", "selective"]


def _prepare(tmp_path, dataset: str, folder, **options) -> subprocess.CompletedProcess:
    params = committed_params()
    params["dataset"] = dataset
    params["prepare"][dataset]["dir"] = None if folder is None else str(folder)
    params["prepare"][dataset].update(options)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    return subprocess.run([sys.executable, "-m", "stages.prepare", "--out", "prepared.h5"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          check=False)


def test_corrupted_image_is_named_and_nothing_is_written(tmp_path):
    folder = make_waterbirds(tmp_path / "waterbirds")
    image = next(folder.rglob("*.jpg"))
    image.write_bytes(image.read_bytes()[:200])  # truncated JPEG
    result = _prepare(tmp_path, "waterbirds", folder)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {image}: cannot read image")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "prepared.h5").exists()


def test_missing_column_and_wrong_split_code_name_the_file(tmp_path):
    folder = make_waterbirds(tmp_path / "waterbirds")
    metadata = folder / "metadata.csv"
    text = metadata.read_text()
    metadata.write_text(text.replace(",place,", ",location,", 1))
    result = _prepare(tmp_path, "waterbirds", folder)
    assert result.returncode == 2 and f"{metadata}: missing column 'place'" in result.stderr
    lines = text.splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("split")] = "7"
    metadata.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    result = _prepare(tmp_path, "waterbirds", folder)
    assert result.returncode == 2 and f"{metadata}: line 2: column 'split' must be 0, 1 or 2" in result.stderr


def test_no_folder_and_no_download_says_which_param_to_set(tmp_path):
    result = _prepare(tmp_path, "celeba", None)
    assert result.returncode == 2
    assert "set prepare.celeba.dir to its folder, or download: true" in result.stderr


# BPA's (Seo et al. 2022) CelebA targets, with Male as the bias; ClusterFix reports on the same ones.
BPA_TARGETS = ("Double_Chin", "Wearing_Necklace", "Chubby", "Pale_Skin", "Receding_Hairline", "Wearing_Hat", "Bangs",
               "Big_Lips", "Brown_Hair", "Wavy_Hair")


def test_clusterfix_protocols_waterbirds_place_and_any_celeba_target(tmp_path):
    """`-S prepare.waterbirds.target=Place`: the background is the label; `-S prepare.celeba.target=<BPA's>`."""
    folder = make_waterbirds(tmp_path / "waterbirds")
    assert _prepare(tmp_path, "waterbirds", folder, target="Place").returncode == 0
    with h5py.File(tmp_path / "prepared.h5", "r") as f:
        assert json.loads(f.attrs["group_names"])["0"] == "land_landbird"
        for split, (g0, g1, g2, g3) in WATERBIRDS_COUNTS.items():  # (bird, place) groups re-indexed 2 * bird + place
            assert np.bincount(f[f"{split}/groups"][()], minlength=4).tolist() == [g0, g2, g1, g3]
    celeba = make_celeba(tmp_path / "celeba")
    with open(celeba / "list_attr_celeba.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    n_train = sum(CELEBA_COUNTS["train"])  # the first ids are the training images, in order
    for target in BPA_TARGETS:
        result = _prepare(tmp_path, "celeba", celeba, target=target)
        assert result.returncode == 0, result.stderr
        with h5py.File(tmp_path / "prepared.h5", "r") as f:
            assert json.loads(f.attrs["group_names"])["3"] == f"{target.lower()}_male"
            column = header.index(target)
            assert f["train/labels"][()].tolist() == [int(row[column] == "1") for row in rows[:n_train]]
