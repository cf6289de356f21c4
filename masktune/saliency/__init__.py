"""Saliency methods, one module each, behind one interface, and the one pass that writes their maps.

- `xgradcam`: batched XGradCAM, MaskTune's (its maps stored at feature-map resolution);
- `lrp`: LRP relevance with ExMap's rules (zennit), ExMap's (stored at input resolution, per channel).

A method module exposes `explainer(model, device, *, precision, channels_last, fold_batchnorm, gamma)`, a
context manager yielding `explain(inputs) -> (maps, predicted classes)`: its maps as stored. `compute` streams
any method over a split into a saliency file, resumable (MaskTune's `compute_saliency`, ExMap's
`exmap_heatmaps`), and `file` reads it back at input resolution. So MaskTune can mask with LRP
(`saliency.method: lrp`) and ExMap's heatmaps of XGradCAM (`exmap.heatmaps: xgradcam`). A stage imports the
module of its method only (`load_method`).
"""
from __future__ import annotations

import importlib

METHODS = ("xgradcam", "lrp")


def load_method(name: str):
    """The module of saliency method `name`, importing it only."""
    if name not in METHODS:
        raise ValueError(f"unknown saliency method {name!r} (known: {', '.join(METHODS)})")
    return importlib.import_module(f"masktune.saliency.{name}")
