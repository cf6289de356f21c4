"""ERM: the model `train_erm` keeps (best average validation accuracy, no group labels), the baseline
every other method is compared with and the start of MaskTune and RandMask."""
from __future__ import annotations

from pathlib import Path

from masktune.methods.base import Method


class ERM(Method):
    name = "erm"
    kind = "erm"
    title = "ERM"

    def model_file(self, models_dir: str | Path) -> Path:
        return Path(models_dir) / "erm_best.pt"
