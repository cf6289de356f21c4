"""The methods one `dvc repro` compares, in one registry.

A method is one small class in its own module (as DomainBed's `algorithms.py`), registered here by
name, plus its stage entries in dvc.yaml; `masktune.config.schema.METHOD_KINDS` names its kind, the
list under `methods` in params.yaml that runs it. Each declares whether it uses group labels for
training and for model selection (the literature's ✗/✓). The checkpoints the methods' own stages
write record it again (`group_labels`: JTT's depends on `jtt.selection`), and the report reads it
from there; ERM's checkpoints carry no record, and the report takes the registry's.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from masktune.errors import UserError
from masktune.methods.base import GroupLabels, Method
from masktune.methods.clusterfix import ClusterFix
from masktune.methods.dfr import DFR
from masktune.methods.erm import ERM
from masktune.methods.exmap import ExMap
from masktune.methods.jtt import JTT
from masktune.methods.masking import MaskTune, RandMask

METHODS: dict[str, Method] = {method.name: method for method in (
    ERM(), RandMask(), MaskTune(), JTT(),
    DFR("dfr_classes", "DFR, class labels as groups", group_source="classes"),
    DFR("dfr_groups", "DFR, true validation groups (supervised reference)", group_source="groups"),
    ExMap(), ClusterFix())}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[name]


def reported_models(methods: Mapping[str, tuple[str, ...]], models_dir: str | Path) -> dict[str, tuple[Method, str, Path]]:
    """{model name: (its method, title, checkpoint)} of every model the listed methods produce, in order."""
    return {name: (method, title, path) for method in listed_methods(methods)
            for name, (title, path) in method.reported_models(models_dir).items()}


def listed_methods(methods: Mapping[str, tuple[str, ...]]) -> list[Method]:
    """The methods of the `methods` param, kind by kind in its order (the report's order)."""
    return [get_method(name) for names in methods.values() for name in names]


__all__ = ["METHODS", "GroupLabels", "Method", "get_method", "listed_methods", "reported_models"]
