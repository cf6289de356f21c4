"""What later stages know of a dataset comes from the prepared file alone: `open_prepared` reads back what
`prepare` recorded (`DatasetSpec.file_attributes`), a file of an older prepare is one line, and no stage
but `prepare` imports `masktune.datasets` (so editing one dataset's module reruns no other's stages)."""
from __future__ import annotations

import json
from types import MappingProxyType

import numpy as np
import pytest
import torch
from conftest import committed_params
from fixtures_datasets import make_waterbirds
from test_architecture import closure, import_graph, project_modules

from masktune.data.prepared import DatasetInfo, EncodedImages, open_prepared, write_prepared
from masktune.data.samples import SampleSet
from masktune.data.views import PLAIN
from masktune.datasets import DATASETS
from masktune.datasets.spec import PrepareConfig
from masktune.errors import UserError

# What each built-in dataset's file says, written out: evaluate's splits, its average and metrics.
EXPECTED = {
    "biased_mnist": (("test_original", "test_biased"), "accuracy", "groups", True),
    "waterbirds": (("test",), "average_accuracy_train_weighted", "groups", True),
    "celeba": (("test",), "accuracy", "groups", True),
    "in9l": (("test_original", "test_mixed_same", "test_mixed_rand", "test_only_fg"), "accuracy",
             "background_challenge", True),
    "cmnist": (("test",), "accuracy", "groups", True),
    "mnist": (("test",), "accuracy", "groups", False),
    "cifar10": (("test",), "accuracy", "groups", False),
    "svhn": (("test",), "accuracy", "groups", False),
    "cats_vs_dogs": (("test",), "accuracy", "groups", False),
    "colored_mnist_lff": (("test",), "unbiased_accuracy", "groups", True),
}
# The attributes a prepared file had before the views and evaluation settings were recorded in it.
OLD_ATTRIBUTES = ("dataset", "num_classes", "groups_known", "class_names", "group_names")


def _config(name: str, **options) -> PrepareConfig:
    return PrepareConfig(dataset=name, options=MappingProxyType({**committed_params()["prepare"][name], **options}), download=False, download_dir=None)


def _pixels(n: int = 4) -> SampleSet:
    rng = np.random.default_rng(0)
    return SampleSet(rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8), np.arange(n) % 2, np.zeros(n, int), np.arange(n))


def test_every_built_in_dataset_is_listed():
    assert set(EXPECTED) == set(DATASETS) - {"folder"}  # the folder's info is its data's (test_folder_dataset)


@pytest.mark.parametrize("name", EXPECTED)
def test_open_prepared_reads_back_what_the_spec_recorded(name, tmp_path):
    spec, config = DATASETS[name], _config(name)
    write_prepared(tmp_path / "p.h5", {"train": _pixels()}, spec.file_attributes(config))
    prepared, info = open_prepared(tmp_path / "p.h5")
    assert (info.test_splits, info.average, info.metrics, info.groups_known) == EXPECTED[name]
    assert info == DatasetInfo(name, spec.num_classes, prepared.class_names, spec.group_names(config.options),
                               spec.groups_known, spec.test_splits, spec.average, spec.metrics, spec.views)
    assert info.views == spec.views and (info.views == PLAIN) == (name in ("biased_mnist", "cmnist", "mnist",
                                                                         "colored_mnist_lff"))
    assert info.class_names == (spec.class_names or tuple(str(c) for c in range(spec.num_classes)))


def test_prepared_waterbirds_images_are_viewed_as_the_spec_views_them(tmp_path):
    """Real encoded images with ClusterFix's target: the recorded group names follow the options, and the
    eval and (seeded) train transforms read from the file give the spec's tensors."""
    spec, config = DATASETS["waterbirds"], _config("waterbirds", dir=str(make_waterbirds(tmp_path / "raw")),
                                                   target="Place")
    write_prepared(tmp_path / "p.h5", spec.prepare(config), spec.file_attributes(config))
    prepared, info = open_prepared(tmp_path / "p.h5")
    assert info.group_names == {0: "land_landbird", 1: "water_landbird", 2: "land_waterbird", 3: "water_waterbird"}
    image = EncodedImages(prepared.path, "val")[0]
    for kind in ("eval", "train"):
        torch.manual_seed(11)
        ours = info.views.transform(kind)(image)
        torch.manual_seed(11)
        assert torch.equal(ours, spec.views.transform(kind)(image)) and ours.shape == (3, 224, 224)


def _old_file(path, spec_name: str = "waterbirds", **extra) -> None:
    attrs = DATASETS[spec_name].file_attributes(_config(spec_name))
    write_prepared(path, {"train": _pixels()}, {**{k: attrs[k] for k in OLD_ATTRIBUTES}, **extra})


def _one_line(path) -> str:
    with pytest.raises(UserError) as error:
        open_prepared(path)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    return message


def test_a_file_of_an_older_prepare_is_one_line(tmp_path):
    _old_file(tmp_path / "old.h5")
    assert _one_line(tmp_path / "old.h5") == (f"{tmp_path / 'old.h5'}: no 'views' recorded (written by an older "
                                              "prepare): rerun `dvc repro`")
    # a folder's file recorded its preset's options as `views`, and its test splits, but no average or metrics
    _old_file(tmp_path / "folder.h5", test_splits=json.dumps(["test"]),
              views=json.dumps({"transforms": "none", "image_size": 224, "normalisation": "none"}))
    message = _one_line(tmp_path / "folder.h5")
    assert message.startswith(f"{tmp_path / 'folder.h5'}: 'views' is not in this version's format (views must be "
                              "an object with keys masking, evaluation, mean, std, train")
    assert message.endswith("written by an older prepare): rerun `dvc repro`")
    _old_file(tmp_path / "partial.h5", views=PLAIN.to_json(), test_splits=json.dumps(["test"]))
    assert _one_line(tmp_path / "partial.h5").endswith(": no 'average' recorded (written by an older prepare): "
                                                       "rerun `dvc repro`")
    _old_file(tmp_path / "splits.h5", views=PLAIN.to_json(), test_splits="[1]", average="accuracy", metrics="groups")
    assert "'test_splits' is not in this version's format (not a list of split names: [1]" in _one_line(
        tmp_path / "splits.h5")


def test_no_stage_but_prepare_imports_the_datasets():
    """A dataset module's edit reruns `prepare` (and check_params, the cheap stage that checks the whole params
    file, each dataset's section by its own fields), nothing else."""
    graph = import_graph(project_modules())
    stages = sorted(module for module in graph if module.startswith("stages.")
                    and module not in ("stages.prepare", "stages.check_params"))
    assert len(stages) >= 10
    importing = {stage: sorted(m for m in closure(graph, stage) if m.split(".")[:2] == ["masktune", "datasets"])
                 for stage in stages}
    assert importing == {stage: [] for stage in stages}
    assert "masktune.datasets.celeba" in closure(graph, "stages.prepare")  # the check sees a dataset import
