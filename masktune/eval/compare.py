"""The comparison `evaluate` makes: every listed model on every test split and on validation, and, for the
models that select (an epoch, DFR's C), the model the true groups' worst group would have selected: the
"selection gap" says what a label-free selection rule costs against the rule most papers' tables use.

What a model is comes from its checkpoint (its stage records its method, pair, selection and group-label
use), so this imports no method's code.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch

from masktune.config.fields import WORKERS, Int, MethodLists
from masktune.config.params import param
from masktune.data.prepared import DatasetInfo, PreparedFile
from masktune.data.splits import open_split
from masktune.eval.logits import HELD_OUT_VAL
from masktune.eval.metrics import background_challenge_metrics, group_metrics
from masktune.eval.report import method_title
from masktune.models.checkpoint import load_checkpoint
from masktune.models.predict import predict_logits
from masktune.selection import ORACLE, GroupLabels


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """Stage `evaluate`: every model the `methods` param lists, in report order, on every test split."""
    eval_batch_size: int = param("eval_batch_size", Int(1, recipe=True))
    methods: MappingProxyType = param("methods", MethodLists())
    workers: int = param("evaluate.workers", WORKERS)


def describe(name: str, state: Mapping, path: str | Path) -> dict:
    """The report's record of a model, from its checkpoint: title, group-label use (ERM's checkpoints:
    none recorded, ✗/✗), selection rule, which model it selected (its epoch, DFR's C), and its training's
    warnings where it has any (masktune/train/health.py)."""
    labels = GroupLabels(**state.get("group_labels", {"training": False, "model_selection": False}))
    return {"title": method_title(name, state), "checkpoint": str(path), "group_labels": str(labels),
            "selection": state.get("selection"), "selected": {"epoch": state.get("epoch"), "c": state.get("c")},
            "groups": state.get("groups"), "fitted_on_val": bool(state.get("fitted_on_val", False)),
            **({"warnings": list(state["warnings"])} if state.get("warnings") else {})}


def evaluate_models(prepared: PreparedFile, info: DatasetInfo, checkpoints: Mapping[str, Path], *, batch_size: int,
                    workers: int, device: torch.device, skip: Mapping[str, str] | None = None
                    ) -> tuple[dict, dict, dict]:
    """({model: {split: group metrics}}, {model: its record}, {model: {split: logits}}) of every checkpoint,
    on every test split and val (the logits float32, what `selective` reads instead of predicting again;
    for a model fitted on val, its cross-fitted val logits too, as `HELD_OUT_VAL`).
    `skip`: {model: another model of `checkpoints`} it equals (the same selection): not predicted again."""
    skip = skip or {}
    models, described, held_out = {}, {}, {}
    for name, path in checkpoints.items():
        model, state = load_checkpoint(path, device)
        described[name] = describe(name, state, path)
        if name not in skip:
            models[name] = model
        if "held_out_val_logits" in state:  # a model fitted on val (DFR): its cross-fitted val logits
            held_out[name] = state["held_out_val_logits"].float().numpy()
    (train_groups,) = prepared.vectors("train", "groups")
    train_counts = {int(g): int(n) for g, n in zip(*np.unique(train_groups, return_counts=True))}
    results: dict = {name: {} for name in models}
    logits: dict = {name: {} for name in models}
    for split in (*info.test_splits, "val"):
        data = open_split(prepared, split, info.views, "eval", workers)
        for name, model in models.items():
            logits[name][split] = predict_logits(model, data, batch_size, device, f"{name} on {split}")
            results[name][split] = group_metrics(data.labels, data.groups, logits[name][split].argmax(1),
                                                 prepared.group_names, train_counts, prepared.class_names)
    for name, values in held_out.items():
        if name in logits:
            logits[name][HELD_OUT_VAL] = values
    if info.metrics == "background_challenge":
        for name in models:
            results[name]["background_challenge"] = background_challenge_metrics(
                {split.removeprefix("test_"): results[name][split]["accuracy"] for split in info.test_splits})
    return results, described, logits


def oracle_results(prepared: PreparedFile, info: DatasetInfo, oracles: Mapping[str, Path], chosen: Mapping[str, dict],
                   results: Mapping[str, dict], *, batch_size: int, workers: int, device: torch.device) -> dict:
    """{model: {"selection": its rule, "oracle": ORACLE, "same_model": bool, "results": {split: metrics}}} for
    every model with an oracle checkpoint: the oracle's figures, predicted only where it selected another
    model (epoch, C) than the model's own rule."""
    selected = {name: describe(name, load_checkpoint(path, torch.device("cpu"))[1], path)["selected"]
                for name, path in oracles.items()}
    differing = {name: path for name, path in oracles.items() if selected[name] != chosen[name]["selected"]}
    own, _, _ = evaluate_models(prepared, info, differing, batch_size=batch_size, workers=workers, device=device)
    return {name: {"selection": chosen[name]["selection"] or "average", "oracle": ORACLE,
                   "same_model": name not in differing, "results": own.get(name, results[name])}
            for name in oracles}
