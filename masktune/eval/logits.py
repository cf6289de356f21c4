"""The logits `evaluate` computed, kept for `selective` (issue 28: the same model was predicted twice).

One HDF5 file: dataset `<model>/<split>` (N, classes) float32 per model and split (and `<model>/val_held_out`
for a model fitted on the validation set), and per model the
SHA-256 of the checkpoint it came from (attribute `checkpoint_sha256/<model>`). A reader takes a
model's logits only where its checkpoint still has that digest, so a file left by older checkpoints
(a stage run by hand, outside `dvc repro`) is never used for newer ones: those models are predicted.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from masktune.io.hdf5 import h5_output, open_h5, write_array
from masktune.io.journal import file_sha256

DIGEST = "checkpoint_sha256/"
TITLE = "title/"
# A model fitted on the validation set (DFR) has, beside its val logits, cross-fitted ones: what a choice
# across models compares (masktune/eval/choice.py)
HELD_OUT_VAL = "val_held_out"


def write_logits(path: str | Path, logits: Mapping[str, Mapping[str, np.ndarray]],
                 checkpoints: Mapping[str, Path], titles: Mapping[str, str] | None = None) -> None:
    """{model: {split: logits}} to `path` atomically, each model with its checkpoint's digest and its title."""
    attrs = {DIGEST + name: file_sha256(checkpoints[name]) for name in logits}
    attrs |= {TITLE + name: title for name, title in (titles or {}).items()}
    with h5_output(path, attrs) as f:
        for name, splits in logits.items():
            for split, values in splits.items():
                write_array(f, f"{name}/{split}", np.asarray(values, dtype=np.float32))


def model_titles(path: str | Path) -> dict[str, str]:
    """{model: the report's title of it}, as `evaluate` read them from the checkpoints."""
    with open_h5(path) as f:
        return {key[len(TITLE):]: str(value) for key, value in f.attrs.items() if key.startswith(TITLE)}


def read_logits(path: str | Path, checkpoints: Mapping[str, Path], splits: Iterable[str],
                rows: Mapping[str, int]) -> dict[str, dict[str, np.ndarray]]:
    """{model: {split: logits}} for each model of `checkpoints` that the file holds for every split,
    with `rows[split]` rows, from the checkpoint it names now. The others are left out (to predict)."""
    splits, found = tuple(splits), {}
    with open_h5(path) as f:
        for name, checkpoint in checkpoints.items():
            keys = {split: f"{name}/{split}" for split in splits}
            if (Path(checkpoint).is_file() and f.attrs.get(DIGEST + name) == file_sha256(checkpoint)
                    and all(key in f and f[key].shape[0] == rows[split] for split, key in keys.items())):
                found[name] = {split: f[key][()] for split, key in keys.items()}
    return found


def validation_logits(path: str | Path, models: Iterable[str],
                      fitted_on_val: Iterable[str] = ()) -> tuple[dict[str, np.ndarray], set[str]]:
    """({model: the validation logits to compare it by}, the models whose are cross-fitted): a model's
    `HELD_OUT_VAL` logits where it has them, else its val logits, except for a model of `fitted_on_val`
    (DFR's), left out without held-out logits (`dfr.held_out_folds` below 2): its val logits are training
    predictions."""
    found, held_out = {}, set()
    with open_h5(path) as f:
        for name in models:
            if f"{name}/{HELD_OUT_VAL}" in f:
                found[name] = f[f"{name}/{HELD_OUT_VAL}"][()]
                held_out.add(name)
            elif f"{name}/val" in f and name not in set(fitted_on_val):
                found[name] = f[f"{name}/val"][()]
    return found, held_out
