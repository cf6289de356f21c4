"""The models one `dvc repro` compares, read from the `methods` param: ERM (train_erm's best
checkpoint), each masking method's fine-tuned model (`methods.masking`: MaskTune, RandMask), and each
(groups, trainer) pair (`methods.robust_train`, `methods.last_layer`: JTT, ClusterFix, GroupDRO, DFR,
ExMap, and any combination). Only names and files: what a model is (its title, its group-label use) is
recorded in its checkpoint by the stage that trained it, so the reports (`evaluate`, `selective`) import
no method's code, and editing one method reruns its own stages only.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

ERM_MODEL = "erm"
TRAINED = ("masking", "robust_train", "last_layer")  # the kinds of `methods` whose entries are models


def model_file(models_dir: str | Path, name: str) -> Path:
    """The checkpoint the reports read for model `name` (ERM: its best-validation checkpoint)."""
    return Path(models_dir) / ("erm_best.pt" if name == ERM_MODEL else f"{name}.pt")


def reported_models(methods: Mapping, models_dir: str | Path) -> dict[str, Path]:
    """{model name: checkpoint} of every model the `methods` param lists, in report order: ERM, the
    masking methods, the robust trainers, the last-layer trainers."""
    names = [ERM_MODEL] if ERM_MODEL in methods.get("erm", ()) else []
    for kind in TRAINED:
        names += list(methods.get(kind, ()))
    return {name: model_file(models_dir, name) for name in names}


def oracle_models(methods: Mapping, models_dir: str | Path) -> dict[str, Path]:
    """{model name: the checkpoint its training would have kept under the true groups' worst group}, for the
    models that select (ERM's epoch, a robust pair's epoch, a last-layer pair's C): the selection gap."""
    names = [name for name in reported_models(methods, models_dir) if name not in methods.get("masking", ())]
    return {name: Path(models_dir) / "oracle" / f"{name}.pt" for name in names}
