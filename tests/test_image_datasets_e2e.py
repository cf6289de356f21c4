"""`dvc exp run -S dataset=<name>` end to end on small fixtures in each real on-disk format.

Waterbirds, CelebA and IN-9L cannot be downloaded here; the fixtures (tests/fixtures_datasets.py)
have their exact file layouts with a few dozen small JPEGs. The model is `tiny_cnn` for one epoch
(the official ResNet-50 recipe is what runs without these overrides); everything else is the
pipeline as a user runs it: prepare reads the folder, the official transforms and masking views,
saliency, masks mapped to the raw images, finetune, group and Background Challenge metrics.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT, committed_params
from fixtures_datasets import (
    CELEBA_COUNTS,
    FOLDER_CLASSES,
    WATERBIRDS_COUNTS,
    make_celeba,
    make_csv_index,
    make_image_folder,
    make_in9l,
    make_waterbirds,
)
from scratch import ScratchProject

from masktune.eval.figures import gallery_file_name
from masktune.eval.report import NO_GROUPS_NOTE
from masktune.methods import reported_models

MODELS = reported_models({kind: tuple(names) for kind, names in committed_params()["methods"].items()}, "models")

ALL_STAGES = ["prepare", "train_erm", "compute_saliency", "materialize_masked_dataset@randmask",
              "materialize_masked_dataset@masktune", "finetune@randmask", "finetune@masktune", "jtt_identify@jtt",
              "jtt_retrain@jtt", "dfr@dfr_classes", "dfr@dfr_groups", "exmap_heatmaps@exmap", "exmap_groups@exmap",
              "exmap_dfr@exmap", "clusterfix_features@clusterfix", "clusterfix_clusters@clusterfix",
              "clusterfix_train@clusterfix", "evaluate"]
# DFR (ExMap's last step and its baselines) balances groups by the smallest one with more than 5
# images, in each random half of the validation set (official rule): the fixtures' validation splits
# are larger than their defaults, so that every half has such a group.
WATERBIRDS = {**WATERBIRDS_COUNTS, "val": (16, 8, 8, 16)}
CELEBA = {**CELEBA_COUNTS, "val": (16, 6, 16, 6)}
SMALL_MODEL = {"arch": "tiny_cnn", "pretrained": False, "epochs": 1, "batch_size": 16, "workers": 0}


def _resnet18_weights(path):
    """A file in torchvision's ResNet-18 format (random weights: the fixtures test the data path, not
    ImageNet features), for ClusterFix's `clusterfix.backbone: resnet18` recipes."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    data = tmp_path_factory.mktemp("datasets")
    weights = _resnet18_weights(data / "resnet18_random.pth")
    make_waterbirds(data / "waterbirds", WATERBIRDS)
    make_celeba(data / "celeba", CELEBA, nested=True)
    make_in9l(data / "in9", val_per_class=13)
    make_image_folder(data / "own_images")
    make_csv_index(data / "own_csv")
    params = {"prepare": {"waterbirds": {"dir": str(data / "waterbirds")}, "celeba": {"dir": str(data / "celeba")},
                          "in9l": {"dir": str(data / "in9")}},
              "folders": {"images": str(data / "own_images"), "csv": str(data / "own_csv" / "index.csv")},
              "train_erm": SMALL_MODEL,
              "saliency": {"batch_size": 16, "workers": 0},
              "finetune": {"batch_size": 16, "workers": 0},
              "jtt": {"identification_epochs": 1, "epochs": 1, "batch_size": 16, "workers": 0},
              # the recipes' ResNet-18 features (a local weights file), 2 clusters per class (the
              # fixtures' smallest class has 3 training images)
              "clusterfix": {"weights_path": str(weights), "clusters_per_class": 2, "epochs": 1, "batch_size": 16,
                             "workers": 0},
              "eval_batch_size": 16,
              "evaluate": {"workers": 0}}
    folders = params.pop("folders")
    project = ScratchProject(tmp_path_factory.mktemp("scratch") / "project", params)
    project.folders = folders
    return project


def _evaluation(project) -> dict:
    """Every model's full results; the contract: each listed method ran and was evaluated (ExMap as
    G-ExMap and L-ExMap), and the pseudo-groups, ExMap's figure and ClusterFix's clusters were written."""
    details = json.loads((project.path / "metrics/evaluate/details.json").read_text())["methods"]
    assert list(details) == list(MODELS)
    for name, method in details.items():
        assert method["group_labels"] == str(MODELS[name][0].group_labels)
    pseudo = json.loads((project.path / "metrics/exmap/pseudo_groups.json").read_text())
    assert pseudo["global"]["pseudo_groups"] >= 2 and 0 < pseudo["local"]["purity"] <= 1
    assert (project.path / "metrics/exmap/embedding.png").read_bytes()[:4] == b"\x89PNG"
    classes = json.loads(h5py.File(project.path / "data/prepared.h5", "r").attrs["class_names"])
    for name in ("randmask", "masktune"):  # the gallery: one PNG per class
        gallery = sorted((project.path / f"metrics/masks/{name}").iterdir())
        assert [p.name for p in gallery] == [gallery_file_name(c, n) for c, n in enumerate(classes)]
        assert all(p.read_bytes()[:4] == b"\x89PNG" for p in gallery)
    clusters = json.loads((project.path / "metrics/clusterfix/pseudo_labels.json").read_text())
    assert clusters["clusters_per_class"] == 2
    with h5py.File(project.path / "data/clusterfix/features.h5", "r") as f:
        if clusters["backbone"] == "resnet18":
            assert f["train"].shape[1] == 512  # ResNet-18's global average pool
        assert np.allclose(np.linalg.norm(f["val"][()], axis=1), 1, atol=1e-5)  # L2-normalised
    for name, method in details.items():  # every model: pooled, unbiased and worst-group accuracy, per class
        test = method["results"]["val"]
        assert test["unbiased_accuracy"] == pytest.approx(np.mean(list(test["groups"].values())))
        assert list(test["classes"]) == classes and test["worst_class_accuracy"] == min(test["classes"].values())
    return {name: method["results"] for name, method in details.items()}


@pytest.mark.slow
def test_waterbirds_runs_end_to_end(project):
    assert project.stages_run("exp", "run", "-S", "dataset=waterbirds") == ALL_STAGES
    with h5py.File(project.path / "data/prepared.h5", "r") as f:
        assert f.attrs["dataset"] == "waterbirds"
        for split, counts in WATERBIRDS.items():  # groups = 2 * place + y, as built
            assert np.bincount(f[f"{split}/groups"][()], minlength=4).tolist() == list(counts)
            assert len(f[f"{split}/offsets"]) == sum(counts) + 1
    with h5py.File(project.path / "data/masks/masktune.h5", "r") as f:
        assert f["masks"].shape == (sum(WATERBIRDS_COUNTS["train"]), 224 * 224 // 8)  # masking view 224 x 224
    evaluation = _evaluation(project)
    for model in MODELS:
        test = evaluation[model]["test"]
        assert set(test["groups"]) == {"landbird_land", "waterbird_land", "landbird_water", "waterbird_water"}
        assert test["worst_group_accuracy"] == min(test["groups"].values())
        assert 0 <= test["average_accuracy_train_weighted"] <= 1
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())  # Waterbirds' "average"
    assert headline["jtt"]["test"]["average"] == evaluation["jtt"]["test"]["average_accuracy_train_weighted"]


@pytest.mark.slow
def test_celeba_runs_end_to_end(project):
    assert project.stages_run("exp", "run", "-S", "dataset=celeba") == ALL_STAGES
    evaluation = _evaluation(project)
    assert set(evaluation["erm"]["test"]["groups"]) <= {"not_blond_female", "blond_female", "not_blond_male",
                                                        "blond_male"}
    live = json.loads((project.path / "metrics/train_erm/metrics.json").read_text())
    assert live["recipe"]["lr"] == 0.0001  # recipes.celeba (bash_files/celeba_masktune.sh)


@pytest.mark.slow
def test_in9l_runs_end_to_end_with_the_background_challenge(project):
    assert project.stages_run("exp", "run", "-S", "dataset=in9l") == ALL_STAGES
    evaluation = _evaluation(project)
    for model in MODELS:
        challenge = evaluation[model]["background_challenge"]
        assert set(challenge) == {"original", "mixed_same", "mixed_rand", "only_fg", "bg_gap"}
        assert challenge["bg_gap"] == pytest.approx(challenge["mixed_same"] - challenge["mixed_rand"])
        assert challenge["original"] == evaluation[model]["test_original"]["accuracy"]


@pytest.mark.slow
def test_own_image_folder_runs_every_method_and_reports_classes(project):
    """An ImageFolder tree: 3 classes, JPEG and PNG, greyscale, nested folders, sizes varying (resized to
    32 x 32), two test splits, no spurious attribute: the report is per class and says so."""
    assert project.stages_run("exp", "run", "-S", "dataset=folder", "-S", f"prepare.folder.dir={project.folders['images']}",
                              "-S", "prepare.folder.transforms=resize",
                              "-S", "prepare.folder.image_size=32") == ALL_STAGES
    evaluation = _evaluation(project)
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())
    for model in MODELS:
        assert list(headline[model]) == ["test", "test_shifted"]
        test = evaluation[model]["test_shifted"]
        assert set(test["classes"]) == set(FOLDER_CLASSES) == set(test["groups"])
        assert headline[model]["test_shifted"] == {
            "average": test["accuracy"], "mean_class": test["mean_class_accuracy"],
            "worst_class": test["worst_class_accuracy"]}
    assert NO_GROUPS_NOTE in (project.path / "metrics/comparison.md").read_text()


@pytest.mark.slow
def test_own_csv_index_runs_every_method_with_its_groups(project):
    """A CSV index with extra columns and a spurious attribute: 3 classes x 2 attributes = 6 groups,
    28 x 28 PNGs (some greyscale) stored as pixels, group metrics reported."""
    project.commit("image folder")
    assert project.stages_run("exp", "run", "-S", "prepare.folder.dir=null",
                              "-S", f"prepare.folder.csv={project.folders['csv']}",
                              "-S", "prepare.folder.transforms=none") == ALL_STAGES
    with h5py.File(project.path / "data/prepared.h5", "r") as f:
        assert f["train/images"].shape[1:] == (28, 28, 3)  # pixels, as biased MNIST
    evaluation = _evaluation(project)
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())
    for model in MODELS:
        test = evaluation[model]["test"]
        assert len(test["groups"]) == 6 and "dog, spurious=sand" in test["groups"]
        assert headline[model]["test"]["worst_group"] == min(test["groups"].values())


@pytest.mark.slow
def test_mask_alignment_reruns_only_finetune_and_evaluate(project):
    """Back to Waterbirds (restored from DVC's run cache), then the official stretch of the masks."""
    project.commit("in9l")
    assert project.stages_run("exp", "run", "-S", "dataset=waterbirds") == []
    project.commit("waterbirds")
    assert project.stages_run("exp", "run", "-S", "finetune.alignment=stretch") == [
        "finetune@randmask", "finetune@masktune", "evaluate"]


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
