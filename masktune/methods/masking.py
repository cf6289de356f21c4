"""The methods that mask the training images and fine-tune the last ERM checkpoint on them for one
epoch (stages `materialize_masked_dataset@<name>` and `finetune@<name>`): MaskTune and the paper's
RandMask baseline differ only in the masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from masktune.masking.compute import write_random_masks, write_saliency_masks
from masktune.methods.base import Method


class MaskingMethod(Method):
    kind = "masking"
    fine_tunes_erm = True

    def write_masks(self, config, saliency: str | Path, out: str | Path, rows: int, size: tuple[int, int],
                    attrs: dict) -> np.ndarray:
        """Write the mask of every training image; return each image's masked pixel fraction."""
        raise NotImplementedError


class MaskTune(MaskingMethod):
    """Asgari et al., NeurIPS 2022: mask the pixels of each image whose XGradCAM saliency (of the best
    ERM model) is above mean + threshold_std * std of its positive values (src/utils/masking.py)."""
    name = "masktune"
    title = "MaskTune (Asgari et al., 2022)"

    def write_masks(self, config, saliency, out, rows, size, attrs):
        return write_saliency_masks(saliency, out, rows, size, config.threshold_std, attrs)


class RandMask(MaskingMethod):
    """The paper's RandMask baseline: one Cutout square per image (src/utils/cutout.py), the same finetune."""
    name = "randmask"
    title = "RandMask (MaskTune's baseline)"

    def write_masks(self, config, saliency, out, rows, size, attrs):
        return write_random_masks(out, rows, size, config.cutout_sides, config.seed, attrs)
