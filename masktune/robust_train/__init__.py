"""Robust training: trainers that read any groups file (masktune/groups.py) and train the network of
train_erm from ERM's start. A method is a (groups, trainer) pair in params.yaml (`methods.robust_train`):
JTT is (JTT's error set, `upsample`), ClusterFix (ClusterFix's clusters, `cluster_reweight`), GroupDRO
with group labels (the true groups, `groupdro`), and any other pair is one `-S` away.

One module per trainer, each exposing `TRAINER` (a `base.Trainer`), its config and its `SPEC`
(masktune/methods); this package imports none of them, so a stage imports its own trainer only and editing
one trainer reruns only the stages that use it. Adding a trainer is its module and its params section.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from masktune.config.fields import NAME


def load_trainer(name: str):
    """The module of trainer `name` (its `TRAINER`, config and `SPEC`), importing it only."""
    if not NAME.fullmatch(name) or name == "base" or not (Path(__file__).parent / f"{name}.py").is_file():
        raise ValueError(f"unknown trainer {name!r}")
    return importlib.import_module(f"masktune.robust_train.{name}")
