"""One contract test over every registered masker, group inference and trainer (as DomainBed's
test/test_models.py does over its algorithms; the registry, masktune/registry.py, lists them): on a tiny
biased MNIST, every masker writes a masks file its finetune trains on, every group-inference stage writes
groups files that honour the contract (masktune/groups.py), and every trainer, robust and last-layer, trains
on every groups file and leaves a checkpoint the report reads with the right group-label use.

Every stage dvc.yaml expands runs in this process (pipeline_checks.InProcessRun), in its order, for params that pair
every trainer with every groups file: a new group inference, trainer or pair is tested here without a
new test. (tests/test_pipeline_e2e.py runs the default pipeline through DVC itself.)
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import committed_params
from fixtures_datasets import make_mnist
from pipeline_checks import InProcessRun
from scratch import merge

from masktune.groups import read_groups
from masktune.models.checkpoint import load_checkpoint
from masktune.registry import family_names, group_files, specs, trainer_names

REGISTRY = specs()
TRAINERS, LAST_LAYER_TRAINERS = trainer_names(REGISTRY, "robust_train"), trainer_names(REGISTRY, "last_layer")
MASKERS = family_names(REGISTRY)["masking"]

TINY = {"train_erm": {"arch": "small_cnn", "epochs": 1, "batch_size": 32, "workers": 0},
        "saliency": {"batch_size": 128, "workers": 0}, "finetune": {"batch_size": 32, "workers": 0},
        "jtt": {"identification_epochs": 1, "batch_size": 32, "workers": 0},
        "xrm": {"epochs": 1, "batch_size": 32, "workers": 0},
        "lff": {"epochs": 1, "batch_size": 32, "workers": 0},
        "exmap": {"batch_size": 64, "workers": 0},
        "clusterfix": {"clusters_per_class": 2, "workers": 0},
        "upsample": {"epochs": 1, "batch_size": 32, "upweight": 2, "workers": 0},
        "cluster_reweight": {"epochs": 1, "batch_size": 32, "workers": 0},
        "groupdro": {"epochs": 1, "batch_size": 32, "workers": 0},
        "dfr": {"tune_splits": 2, "refits": 2, "held_out_folds": 2, "workers": 0},
        "eval_batch_size": 128, "evaluate": {"workers": 0},
        "selective": {"control_seed_offsets": []}}


def _every_pair(methods: dict) -> dict:
    """Every trainer on every groups file the listed group inference writes."""
    files = group_files(REGISTRY, methods)
    robust = {f"{trainer}_{groups}": {"groups": groups, "trainer": trainer, "selection": "worst_pseudo_group"}
              for trainer in TRAINERS for groups in files}
    last = {f"{trainer}_{groups}": {"groups": groups, "trainer": trainer, "selection": "worst_pseudo_group"}
            for trainer in LAST_LAYER_TRAINERS for groups in files}
    return {**methods, "masking": list(MASKERS), "robust_train": robust, "last_layer": last}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    mnist = make_mnist(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=100)
    params = merge(committed_params(), {**TINY, "prepare": {"biased_mnist": {
        "mnist_dir": str(mnist), "train_limit": 500, "test_limit": 100, "val_size": 150}}})
    params["methods"] = _every_pair(params["methods"])
    run = InProcessRun(tmp_path_factory.mktemp("contract"), params)
    return run.path, params, run.stages


def test_every_group_inference_writes_groups_files_that_honour_the_contract(project):
    path, params, _ = project
    files = group_files(REGISTRY, params["methods"])
    assert set(files.values()) == {name for name, spec in REGISTRY.items() if spec.role == "group_inference"}
    labels = {}
    with __import__("h5py").File(path / "data/prepared.h5", "r") as f:
        for split in ("train", "val"):
            labels[split] = f[f"{split}/labels"][()]
    for name in files:
        groups = read_groups(path / f"data/groups/{name}.h5", {s: len(v) for s, v in labels.items()})
        for split in ("train", "val"):
            assert np.array_equal(np.asarray(groups.classes)[groups.of(split)], labels[split]), name  # refine classes
        assert len(set(groups.names)) == groups.count and groups.inference == name
        assert groups.uses_group_labels == (name == "true_groups"), name
        report = json.loads((path / f"metrics/groups/{name}.json").read_text())
        assert report["groups"] == groups.count and 0 < report["train"]["purity"] <= 1


def test_every_trainer_trains_on_every_groups_file_and_records_its_group_label_use(project):
    path, params, instances = project
    details = json.loads((path / "metrics/evaluate/details.json").read_text())["methods"]
    pairs = {**params["methods"]["robust_train"], **params["methods"]["last_layer"]}
    assert set(details) == {"erm", *MASKERS, *pairs}
    assert {pair["trainer"] for pair in pairs.values()} == {*TRAINERS, *LAST_LAYER_TRAINERS}
    for name, pair in pairs.items():
        _, state = load_checkpoint(path / f"models/{name}.pt", __import__("torch").device("cpu"))
        assert (state["groups"], state["trainer"], state["selection"]) == (pair["groups"], pair["trainer"],
                                                                          pair["selection"])
        assert (path / f"models/oracle/{name}.pt").is_file()  # the model the true worst group picks: the gap
        if pair["trainer"] in TRAINERS:  # a trained network records the resolved config it was trained with
            assert state["config"]["epochs"] == 1 and state["config"]["arch"] == "small_cnn", state["config"]
        gap = details[name]["selection_gap"]
        assert gap["oracle"] == "worst_group" and gap["selection"] == pair["selection"]
        if gap["same_model"]:
            assert gap["results"] == details[name]["results"]
        true = pair["groups"] == "true_groups"  # selected by the worst of its own groups: ✓ only for true ones
        assert details[name]["group_labels"] == ("✓/✓" if true else "✗/✗"), name
        assert 0 <= details[name]["results"]["test_biased"]["worst_group_accuracy"] <= 1
    assert sum(1 for name in instances if name.startswith(("robust_train@", "last_layer@"))) == len(pairs)


def test_every_masker_writes_masks_its_finetune_trains_on(project):
    """Each registered masker: a masks file of every training image, and a fine-tuned model that records the
    masker's title (its spec's) and no group-label use (✗/✗)."""
    path, _, _ = project
    details = json.loads((path / "metrics/evaluate/details.json").read_text())["methods"]
    assert MASKERS == ("masktune", "randmask")
    for name in MASKERS:
        report = json.loads((path / f"metrics/masks/{name}.json").read_text())
        assert 0 < report["masked_pixel_fraction"] < 0.5, name
        _, state = load_checkpoint(path / f"models/{name}.pt", __import__("torch").device("cpu"))
        assert (state["method"], state["title"], state["stage"]) == (name, REGISTRY[name].title, f"finetune@{name}")
        assert details[name]["group_labels"] == "✗/✗" and details[name]["title"] == REGISTRY[name].title
        assert json.loads((path / f"metrics/finetune/{name}.json").read_text())["epochs"] == 1


def test_the_choice_scores_every_label_free_model_of_the_contract_run(project):
    """`choose` over every pair: each label-free model is a candidate (DFR's by its cross-fitted validation
    logits), each model trained or selected with the true groups is not, and every inferred grouping of the
    run (every group inference but the true groups) is a rule."""
    path, params, _ = project
    details = json.loads((path / "metrics/evaluate/details.json").read_text())["methods"]
    choice = json.loads((path / "metrics/choice/details.json").read_text())
    free = [name for name, record in details.items() if record["group_labels"] == "✗/✗"]
    assert choice["candidates"] == free and set(choice["left_out"]) == set(details) - set(free)
    dfr = [name for name, pair in params["methods"]["last_layer"].items() if name in free]
    assert dfr and choice["held_out_val"] == sorted(dfr)
    from masktune.data.prepared import open_prepared
    from masktune.eval.choice import same_partition

    prepared, _ = open_prepared(path / "data/prepared.h5")
    labels = prepared.vectors("val", "labels")[0]
    rows = {split: len(prepared.vectors(split, "labels")[0]) for split in ("train", "val")}
    # every inferred grouping but one that cuts val exactly as the classes do (worst_class is that rule already;
    # on the tiny data a 1-epoch error set can be empty)
    expected = {name for name in set(group_files(REGISTRY, params["methods"])) - {"true_groups", "classes"}
                if not same_partition(read_groups(path / f"data/groups/{name}.h5", rows).val, labels)}
    assert expected and set(choice["groupings"]) == expected
    headline = json.loads((path / "metrics/choice.json").read_text())
    assert headline["model"] in free
    assert headline["rule"] == ("worst_group:xrm" if "xrm" in expected else "mean_worst_group")  # the default list
