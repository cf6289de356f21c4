"""What the end-to-end runs on image fixtures share: the stages every run executes, a small, fast
training set-up, and the contract every run's evaluation must meet (tests/test_image_datasets_e2e.py,
tests/test_folder_dataset.py)."""
from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT
from scratch import NO_GROUP_METHODS, committed_params, merge, run_stage_in_process  # noqa: F401  (tests import it from here)
from test_architecture import stage_instances

from masktune.eval.figures import gallery_file_name
from masktune.eval.models import reported_models
from masktune.selection import group_labels_used

METHODS = committed_params()["methods"]
MODELS = reported_models(METHODS, "models")
MASKING = ["materialize_masked_dataset@randmask", "materialize_masked_dataset@masktune", "finetune@randmask",
           "finetune@masktune"]
GROUPS = ["label_groups@true_groups", "label_groups@classes", "jtt_identify@jtt", "xrm_twins@xrm", "exmap_heatmaps@exmap",
          "exmap_groups@exmap", "exmap_extend@exmap", "clusterfix_ssl@clusterfix", "clusterfix_features@clusterfix",
          "clusterfix_clusters@clusterfix"]
PAIRS = [f"{kind}@{name}" for kind in ("robust_train", "last_layer") for name in METHODS[kind]]
REPORTS = ["evaluate", "choose", "selective"]  # evaluate and selective read every checkpoint in models/
# the default pipeline, in the order `dvc repro` runs it
ALL_STAGES = ["check_params", "prepare", "train_erm", "compute_saliency", *MASKING, *GROUPS, *PAIRS, *REPORTS]
# what a change of `dataset` (or its data) reruns once the pipeline ran: every stage (check_params: the params changed)
DATA_STAGES = list(ALL_STAGES)
# The runs whose subject is a dataset, not the methods (every method runs on an image folder in
# tests/test_folder_dataset.py, and every registered piece in tests/test_method_contract.py): ERM, both
# masking methods, the two group inferences that read the images (ExMap's heatmaps, ClusterFix's
# features), one trainer and one last layer on them. 17 stages instead of 31: CI time.
FEW_METHODS = {"erm": ["erm"], "masking": ["randmask", "masktune"], "labels": [], "jtt": [], "exmap": ["exmap"],
               "clusterfix": ["clusterfix"], "xrm": [], "robust_train": {"clusterfix": METHODS["robust_train"]["clusterfix"]},
               "last_layer": {"exmap_global": METHODS["last_layer"]["exmap_global"]}}
FEW_MODELS = reported_models(FEW_METHODS, "models")
# ERM and MaskTune alone: the runs whose subject is a dataset's reading and report (CelebA, IN-9L), FEW_METHODS
# having run on Waterbirds' images in the same module.
MASKTUNE_ONLY = {**FEW_METHODS, "masking": ["masktune"], "exmap": [], "clusterfix": [], "robust_train": {},
                 "last_layer": {}}


def stages_of(methods: dict, stages: list[str]) -> list[str]:
    """The stages of `stages` (in their order) that DVC expands from dvc.yaml when `methods` is the param."""
    expanded = stage_instances(yaml.safe_load((ROOT / "dvc.yaml").read_text()), {**committed_params(), "methods": methods})
    return [stage for stage in stages if stage in expanded]


def expected_group_labels(name: str) -> str:
    """The ✗/✓ the report must show for model `name` of the committed `methods`: the true groups' pairs
    train with group labels, and select with them by the rule of their `selection` (DFR: its groups)."""
    pair = {**METHODS["robust_train"], **METHODS["last_layer"]}.get(name)
    if pair is None:
        return "✗/✗"  # ERM and the masking methods
    return str(group_labels_used(pair["groups"] == "true_groups", pair.get("selection", "worst_pseudo_group")))
SMALL_MODEL = {"arch": "tiny_cnn", "pretrained": False, "epochs": 1, "batch_size": 16, "workers": 0}
# tiny_cnn for one epoch and small batches everywhere (the official recipes are what runs without
# these); 2 ClusterFix clusters per class (the fixtures' smallest class has 3 training images).
SMALL_RUN = {
    "train_erm": SMALL_MODEL,
    "saliency": {"batch_size": 16, "workers": 0},
    "finetune": {"batch_size": 16, "workers": 0},
    "jtt": {"identification_epochs": 1, "batch_size": 16, "workers": 0},
    "xrm": {"epochs": 1, "batch_size": 16, "workers": 0},
    "lff": {"epochs": 1, "batch_size": 16, "workers": 0},
    "upsample": {"epochs": 1, "batch_size": 16, "workers": 0},
    "clusterfix": {"clusters_per_class": 2, "workers": 0},
    "cluster_reweight": {"epochs": 1, "batch_size": 16, "workers": 0},
    "groupdro": {"epochs": 1, "batch_size": 16, "workers": 0},
    "eval_batch_size": 16,
    "evaluate": {"workers": 0},
    "selective": {"control_seed_offsets": []},  # the control's training: tests/test_selective_e2e.py
}


class InProcessRun:
    """The pipeline on `params` (the committed params merged with them), every stage dvc.yaml expands for them
    run in this process in dvc.yaml's order, as its command names it (`scratch.run_stage_in_process`), in
    `path`. For the runs whose subject is a dataset's reading and report, not DVC (which runs the pipeline in
    tests/test_pipeline_e2e.py, on images in test_image_datasets_e2e.py): the same stage code without DVC's
    start and lock rewrite and a fresh interpreter per stage (CI time). `stages`: the stages run, in order."""

    def __init__(self, path, params: dict):
        from masktune.io import files

        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        values = merge(committed_params(), params)
        (self.path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        shutil.copy(ROOT / "dvc.yaml", self.path)
        instances = stage_instances(yaml.safe_load((ROOT / "dvc.yaml").read_text()), values)
        self.stages = list(instances)
        cwd = os.getcwd()
        os.chdir(self.path)
        try:
            for _, entry in instances.values():
                files._COMMIT_CHECKS.clear()  # each stage checks its own params while it runs, as in its own process
                run_stage_in_process(" ".join(entry["cmd"].split()))
        finally:
            files._COMMIT_CHECKS.clear()
            os.chdir(cwd)


def evaluation_of(project, models: list[str] = MODELS) -> dict:
    """Every model's full results; the contract: each listed method ran and was evaluated with its
    group-label use, and the pseudo-groups, ExMap's figure and ClusterFix's clusters were written."""
    details = json.loads((project.path / "metrics/evaluate/details.json").read_text())["methods"]
    assert list(details) == list(models)
    for name, method in details.items():
        assert method["group_labels"] == expected_group_labels(name), name
    pairs = {**METHODS["robust_train"], **METHODS["last_layer"]}
    groups = {pairs[name]["groups"] for name in models if name in pairs}  # the groups files the models read
    if groups & {"exmap_global", "exmap_local"}:
        pseudo = json.loads((project.path / "metrics/exmap/pseudo_groups.json").read_text())
        assert pseudo["global"]["pseudo_groups"] >= 2 and 0 < pseudo["local"]["purity"] <= 1
        assert (project.path / "metrics/exmap/embedding.png").read_bytes()[:4] == b"\x89PNG"
    with h5py.File(project.path / "data/prepared.h5", "r") as f:
        classes = json.loads(f.attrs["class_names"])
    for name in {"randmask", "masktune"} & set(models):  # the gallery: one PNG per class
        gallery = sorted((project.path / f"metrics/masks/{name}").iterdir())
        assert [p.name for p in gallery] == [gallery_file_name(c, n) for c, n in enumerate(classes)]
        assert all(p.read_bytes()[:4] == b"\x89PNG" for p in gallery)
    if "clusterfix" in groups:
        clusters = json.loads((project.path / "metrics/groups/clusterfix.json").read_text())
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


def resnet18_weights(path):
    """A file in torchvision's ResNet-18 format (random weights: the fixtures test the data path, not
    ImageNet features), for ClusterFix's `clusterfix.backbone: resnet18` recipes."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path
