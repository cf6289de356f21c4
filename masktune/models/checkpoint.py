"""Checkpoints: the model *and* its optimizer state, so the finetune continues the last ERM checkpoint
with its momentum buffers and learning rate, as the official `finetune()` does."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from masktune.errors import UserError
from masktune.io.files import write_bytes_atomically
from masktune.models import build_model


def checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None, *, arch: str, num_classes: int,
                     epoch: int, val_accuracy: float, **info) -> bytes:
    """The checkpoint file's bytes: model, optimizer state (None for a model not trained by SGD: DFR's)
    and what the model is (`info`: e.g. the method that trained it and whether it used group labels);
    the same weights give the same bytes."""
    state = {"model": model.state_dict(), "optimizer": None if optimizer is None else optimizer.state_dict(), "arch": arch,
             "num_classes": num_classes, "epoch": epoch, "val_accuracy": val_accuracy, **info}
    buffer = io.BytesIO()  # torch.save names the zip's root folder after the file: keep it fixed,
    torch.save(state, buffer)  # so that the same weights give the same bytes
    return buffer.getvalue()


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, **info) -> None:
    """`checkpoint_bytes` written atomically."""
    write_bytes_atomically(path, checkpoint_bytes(model, optimizer, **info))


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was saved from; return it with the raw state (optimizer...)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (run `dvc repro` to train it)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model = build_model(state["arch"], state["num_classes"])
        model.load_state_dict(state["model"])
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, struct.error, ...
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a checkpoint of this project ({reason})") from None
    return model.to(device), state
