"""Last-layer retraining: trainers that keep the ERM model's features and retrain its classifier on the
validation set with the groups of any groups file (`methods.last_layer` in params.yaml: (groups, trainer)
pairs). One module per trainer, with its config, its `SPEC` and `train_pair(...)`, imported by its own stage
only (`load_trainer`): `dfr` (DFR, as ExMap runs it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from masktune.config.fields import NAME, Choice, Text
from masktune.config.params import param

# DFR's choice of C, by the worst of: one group (the accuracy), the classes, its groups (ExMap's rule), the true groups
SELECTIONS = ("average", "worst_class", "worst_pseudo_group", "worst_group")


@dataclass(frozen=True, kw_only=True)
class LastLayerPairConfig:
    """A (groups, trainer) pair of `methods.last_layer` (`${name}`: the pair's name) and what selects its model."""
    groups: str = param("methods.last_layer.${name}.groups", Text())
    trainer: str = param("methods.last_layer.${name}.trainer", Text())
    selection: str = param("methods.last_layer.${name}.selection", Choice(options=SELECTIONS))


def load_trainer(name: str):
    """The module of last-layer trainer `name`, importing it only."""
    if not NAME.fullmatch(name) or not (Path(__file__).parent / f"{name}.py").is_file():
        raise ValueError(f"unknown last-layer trainer {name!r}")
    return importlib.import_module(f"masktune.last_layer.{name}")
