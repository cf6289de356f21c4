"""docs/contributing.md's recipes, followed: a toy dataset, trainer, masker and group inference, each added
from exactly the files its recipe names (its module, its params; a group inference's stage and dvc.yaml
entry), in a copy of the project, and run by the stages that read it. No list elsewhere names them:
`check_params` finds them through the registries and checks their params with the rest."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, committed_params
from fixtures_datasets import make_mnist

pytestmark = pytest.mark.slow


@pytest.fixture()
def project(tmp_path, tmp_path_factory) -> Path:
    """A copy of the code, dvc.yaml and the committed params, on 300 synthetic digits, tiny_cnn for one epoch."""
    path = tmp_path / "project"
    for name in ("masktune", "stages", "scripts"):
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", path)
    values = committed_params()
    values["prepare"]["biased_mnist"].update(mnist_dir=str(make_mnist(tmp_path_factory.mktemp("mnist"), 400, 80)),
                                             train_limit=300, test_limit=60, val_size=60)
    values["train_erm"].update(arch="tiny_cnn", epochs=1, batch_size=32, workers=0)
    values["saliency"].update(batch_size=64, workers=0)
    values["finetune"].update(batch_size=32, workers=0)
    values["eval_batch_size"] = 64
    _write(path, values)
    return path


def _write(path: Path, values: dict) -> None:
    (path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


def _params(path: Path) -> dict:
    return yaml.safe_load((path / "params.yaml").read_text())


def _stage(path: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], cwd=path, capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"{args[0]}: {result.stdout[-1500:]}{result.stderr[-1500:]}"
    return result


def _add(path: Path, module: str, source: str) -> None:
    (path / module).write_text(textwrap.dedent(source).lstrip())


PREPARE = ("stages.prepare", "--out", "data/prepared.h5")
TRAIN_ERM = ("stages.train_erm", "--data", "data/prepared.h5", "--best", "models/erm_best.pt", "--last",
             "models/erm_last.pt", "--live", "metrics/train_erm", "--oracle", "models/oracle/erm.pt")


def test_a_dataset_is_its_module_and_its_params(project):
    """docs/contributing.md, "A dataset": `masktune/datasets/<name>.py` with `PARAMS` and `SPEC`; in params.yaml
    its `prepare.<name>` section and its recipe."""
    _add(project, "masktune/datasets/toy_digits.py", '''
        """A toy dataset: biased MNIST's digits with a green square (tests/test_contributing.py)."""
        from masktune.config.fields import FilePath, Int
        from masktune.data.views import PLAIN
        from masktune.datasets.biased_mnist import build_biased_mnist
        from masktune.datasets.mnist_idx import load_mnist
        from masktune.datasets.spec import DatasetSpec

        PARAMS = {"mnist_dir": FilePath(), "train_limit": Int(2)}


        def _prepare(config):
            splits = build_biased_mnist(load_mnist(config.options["mnist_dir"]), conflicting_ratio=0.1, square_size=3,
                                        color=(0, 255, 0), placement="official", val_size=60, seed=0,
                                        train_limit=config.options["train_limit"], test_limit=60)
            return {"train": splits["train"], "val": splits["val"], "test": splits["test_biased"]}


        SPEC = DatasetSpec(name="toy_digits", params=PARAMS, num_classes=2,
                           group_names=lambda options: {g: f"group{g}" for g in range(4)}, test_splits=("test",),
                           prepare=_prepare, views=PLAIN)
    ''')
    values = _params(project)
    values["dataset"] = "toy_digits"
    values["prepare"]["toy_digits"] = {"mnist_dir": values["prepare"]["biased_mnist"]["mnist_dir"], "train_limit": 300}
    values["recipes"]["toy_digits"] = copy.deepcopy(values["recipes"]["biased_mnist"])
    _write(project, values)
    _stage(project, "stages.check_params", "--out", "data/checked_names")
    _stage(project, *PREPARE)
    with h5py.File(project / "data/prepared.h5", "r") as f:
        assert f.attrs["dataset"] == "toy_digits" and list(f) == ["test", "train", "val"]
        assert f["train/images"][0, :3, :3].tolist()[0][0] in ([0, 255, 0], [0, 0, 0])


def test_a_trainer_is_its_module_and_its_params(project):
    """"A trainer": `masktune/robust_train/<name>.py` with `TRAINER`, its config and `SPEC`; its params section
    (and its recipe keys under every recipe); a pair naming it is one params entry, no stage, no dvc.yaml edit."""
    _add(project, "masktune/robust_train/toy_reweight.py", '''
        """A toy trainer: ERM, its loss scaled (tests/test_contributing.py)."""
        from dataclasses import dataclass

        import torch.nn.functional as F

        from masktune.config.fields import Number
        from masktune.config.params import param
        from masktune.methods import Spec
        from masktune.robust_train.base import RobustTrainConfig, Trainer
        from masktune.train.objective import Objective


        @dataclass(frozen=True, kw_only=True)
        class ToyConfig(RobustTrainConfig):
            scale: float = param("toy_reweight.scale", Number(0.0, exclusive_minimum=True))


        class Scaled(Objective):
            def __init__(self, scale):
                self.scale = scale

            def batch_loss(self, network, model, inputs, targets, rows, amp):
                logits = network(inputs)
                return logits, self.scale * F.cross_entropy(logits, targets), {}


        class Toy(Trainer):
            name = "toy_reweight"

            def objective(self, config, groups, model, val):
                return Scaled(config.scale)


        TRAINER = Toy()
        SPEC = Spec(name="toy_reweight", role="robust_train", family="robust_train", title="Toy re-weighting",
                    configs={"robust_train": ToyConfig})
    ''')
    values = _params(project)
    values["toy_reweight"] = {"scale": 0.5, "lr": None, "weight_decay": None, "batch_size": 32, "epochs": None,
                              "workers": 0, "seed": 0}
    for recipe in values["recipes"].values():
        recipe["toy_reweight"] = {key: recipe["upsample"][key] for key in ("lr", "weight_decay", "batch_size", "epochs")}
    values["recipes"]["biased_mnist"]["toy_reweight"]["epochs"] = 1
    values["methods"]["robust_train"]["toy_pair"] = {"groups": "true_groups", "trainer": "toy_reweight",
                                                     "selection": "average"}
    _write(project, values)
    _stage(project, "stages.check_params", "--out", "data/checked_names")
    _stage(project, *PREPARE)
    _stage(project, "stages.label_groups", "--groups", "true_groups", "--data", "data/prepared.h5", "--out",
           "data/groups/true_groups.h5", "--metrics", "metrics/groups/true_groups.json")
    _stage(project, "stages.robust_train", "--name", "toy_pair", "--data", "data/prepared.h5", "--groups",
           "data/groups/true_groups.h5", "--out", "models/toy_pair.pt", "--live", "metrics/robust_train/toy_pair",
           "--oracle", "models/oracle/toy_pair.pt")
    state = torch.load(project / "models/toy_pair.pt", weights_only=True)
    title = "Toy re-weighting with the true groups"
    assert (state["trainer"], state["title"], state["config"]["scale"]) == ("toy_reweight", title, 0.5)


def test_a_masker_is_its_module_and_its_params(project):
    """"A masker": `masktune/masking/<name>.py` with its config, `SPEC` and `write_masks`; its params section;
    listed in `methods.masking`, its masks file and its finetune follow."""
    _add(project, "masktune/masking/corner.py", '''
        """A toy masker: the top-left square of every image (tests/test_contributing.py)."""
        from dataclasses import dataclass

        import numpy as np

        from masktune.config.fields import Int
        from masktune.config.params import param
        from masktune.data.masks import write_masks as write_masks_file
        from masktune.methods import Spec


        @dataclass(frozen=True, kw_only=True)
        class CornerConfig:
            side: int = param("corner.side", Int(1))
            examples_per_group: int = param("mask_examples_per_group", Int(1, 16))


        SPEC = Spec(name="corner", role="masking", family="masking", title="Corner", configs={
            "materialize_masked_dataset": CornerConfig})


        def write_masks(config, saliency, out, rows, size, attrs):
            masks = np.zeros((rows, *size), dtype=bool)
            masks[:, :config.side, :config.side] = True
            return write_masks_file(out, rows, size, [(0, masks)], attrs)
    ''')
    values = _params(project)
    values["corner"] = {"side": 4}
    values["methods"]["masking"] = ["corner"]
    _write(project, values)
    _stage(project, "stages.check_params", "--out", "data/checked_names")
    _stage(project, *PREPARE)
    _stage(project, *TRAIN_ERM)
    _stage(project, "stages.compute_saliency", "--data", "data/prepared.h5", "--model", "models/erm_best.pt", "--out",
           "data/saliency.h5")
    _stage(project, "stages.materialize_masked_dataset", "--method", "corner", "--data", "data/prepared.h5",
           "--saliency", "data/saliency.h5", "--out", "data/masks/corner.h5", "--metrics", "metrics/masks/corner.json",
           "--gallery", "metrics/masks/corner")
    _stage(project, "stages.finetune", "--method", "corner", "--data", "data/prepared.h5", "--masks",
           "data/masks/corner.h5", "--checkpoint", "models/erm_last.pt", "--out", "models/corner.pt", "--metrics",
           "metrics/finetune/corner.json", "--live", "metrics/finetune/corner")
    state = torch.load(project / "models/corner.pt", weights_only=True)
    assert (state["method"], state["title"]) == ("corner", "Corner")


def test_a_group_inference_is_its_module_stage_dvc_entry_and_params(project):
    """"A group inference": `masktune/group_inference/<name>.py` (its logic, config, `SPEC`), its stage and its
    dvc.yaml entry (code deps written by scripts/dvc_deps.py), its `methods` family and params; a pair may then
    name its groups file."""
    _add(project, "masktune/group_inference/halves.py", '''
        """A toy group inference: per class, the rows of even and of odd index (tests/test_contributing.py)."""
        from dataclasses import dataclass

        import numpy as np

        from masktune.config.fields import Int
        from masktune.config.params import param
        from masktune.groups import make_groups
        from masktune.methods import Spec


        @dataclass(frozen=True, kw_only=True)
        class HalvesConfig:
            offset: int = param("halves.offset", Int(0, 1))


        SPEC = Spec(name="halves", role="group_inference", family="halves", title="the halves",
                    configs={"halves": HalvesConfig}, groups_files=lambda name: (name,),
                    groups_titles={"halves": "the halves"})


        def halves(labels, class_names, offset):
            ids = {split: 2 * y + (np.arange(len(y)) + offset) % 2 for split, y in labels.items()}
            names = [f"{c}_{h}" for c in class_names for h in ("even", "odd")]
            return make_groups(ids, labels, names, [c for c in range(len(class_names)) for _ in range(2)],
                               inference="halves", description="even and odd rows", uses_group_labels=False,
                               title=SPEC.groups_titles["halves"])
    ''')
    _add(project, "stages/halves.py", '''
        """Stage `halves@<name>`: the toy group inference's groups file."""
        import argparse

        from masktune.config.params import load_config
        from masktune.data.prepared import PreparedFile
        from masktune.errors import run_stage
        from masktune.eval.clusters import write_groups_with_report
        from masktune.group_inference.halves import HalvesConfig, halves


        @run_stage
        def main():
            parser = argparse.ArgumentParser()
            for flag in ("--name", "--data", "--out", "--metrics"):
                parser.add_argument(flag, required=True)
            args = parser.parse_args()
            config = load_config(HalvesConfig, f"halves@{args.name}")
            prepared = PreparedFile(args.data)
            labels = {split: prepared.vectors(split, "labels")[0] for split in ("train", "val")}
            groups = halves(labels, prepared.class_names, config.offset)
            write_groups_with_report(groups, args.out, args.metrics, prepared)


        if __name__ == "__main__":
            main()
    ''')
    entry = textwrap.dedent('''
      halves:
        foreach: ${methods.halves}
        do:
          cmd: >-
            python -m stages.halves --name ${item} --data data/prepared.h5 --out data/groups/${item}.h5
            --metrics metrics/groups/${item}.json
          deps:
            - data/checked_names/${item}
            - data/prepared.h5
          params:
            - halves
          outs:
            - data/groups/${item}.h5
            - metrics/groups/${item}.json
    ''')
    text = (project / "dvc.yaml").read_text().replace("\n  train_erm:\n", "\n" + textwrap.indent(entry, "  ").rstrip()
                                                      + "\n\n  train_erm:\n", 1)
    (project / "dvc.yaml").write_text(text)
    values = _params(project)
    values["methods"]["halves"] = ["halves"]
    values["halves"] = {"offset": 1}
    values["methods"]["robust_train"]["groupdro_halves"] = {"groups": "halves", "trainer": "groupdro",
                                                            "selection": "worst_pseudo_group"}
    _write(project, values)
    _stage(project, "scripts.dvc_deps")  # its code deps, from its imports
    assert yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["halves"]["do"]["deps"][2:4] == [
        "stages/halves.py", "masktune/__init__.py"]
    checked = _stage(project, "stages.check_params", "--out", "data/checked_names")
    assert (project / "data/checked_names/halves").is_file(), checked.stdout
    _stage(project, *PREPARE)
    _stage(project, "stages.halves", "--name", "halves", "--data", "data/prepared.h5", "--out",
           "data/groups/halves.h5", "--metrics", "metrics/groups/halves.json")
    labels = h5py.File(project / "data/prepared.h5", "r")["train/labels"][()]
    with h5py.File(project / "data/groups/halves.h5", "r") as f:
        ids = f["train"][()]
        assert f.attrs["title"] == "the halves"
    assert (ids // 2 == labels).all() and (ids % 2 == (np.arange(len(ids)) + 1) % 2).all()
