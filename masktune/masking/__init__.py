"""Maskers: the methods that mask the training images a finetune then trains on, one module each, found by
name (`load_masker`): `masktune` (the saliency above mean + k std, the paper's) and `randmask` (one random
square per image, the paper's baseline). A masker module holds its config, its `SPEC` (masktune/methods) and
`write_masks(config, saliency, out, rows, size, attrs)`, which writes the masks file
(`masktune.data.masks`) and returns each image's masked fraction. Adding one is its module and its params.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from masktune.config.fields import NAME

PIXELS_PER_CHUNK = 1 << 20  # full-resolution maps thresholded at a time (float64 intermediates: ~30 MB)


def chunk_rows(height: int, width: int) -> int:
    """Images of height x width per chunk of about a million pixels: masks stream, memory does not grow."""
    return max(1, PIXELS_PER_CHUNK // (height * width))


def load_masker(name: str):
    """The module of masker `name`, importing it only."""
    if not NAME.fullmatch(name) or name == "rules" or not (Path(__file__).parent / f"{name}.py").is_file():
        raise ValueError(f"unknown masking method {name!r}")
    return importlib.import_module(f"masktune.masking.{name}")
