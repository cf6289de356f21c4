"""Robust training: trainers that read any groups file (masktune/groups.py) and train the network of
train_erm from ERM's start. A method is a (groups, trainer) pair in params.yaml (`methods.robust_train`):
JTT is (JTT's error set, `upsample`), ClusterFix (ClusterFix's clusters, `cluster_reweight`), GroupDRO
with group labels (the true groups, `groupdro`), and any other pair is one `-S` away.

One module per trainer, each exposing `TRAINER` (a `base.Trainer`); this package imports none of them, so
a stage imports its own trainer only and editing one trainer reruns only the stages that use it.
"""
from __future__ import annotations

import importlib

TRAINERS = ("upsample", "cluster_reweight", "groupdro")


def load_trainer(name: str):
    """The `Trainer` of `name`, importing its module only."""
    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r} (known: {', '.join(TRAINERS)})")
    return importlib.import_module(f"masktune.robust_train.{name}").TRAINER
