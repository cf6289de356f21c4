"""Reduced precision for the forward passes (XGradCAM, training) and float16 gradient scaling.

`float32` runs as it always did (no autocast at all: bitwise the float32 results). `bfloat16` and
`float16` run the forward pass under `torch.autocast` (on GPUs' tensor cores and on CPUs with
AVX512-BF16 about twice as fast); float16 training also scales the loss (`torch.amp.GradScaler`) so
that small gradients do not flush to zero, skipping a step whose gradients overflowed. bfloat16 has
float32's exponent range and needs no scaling.
"""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def precision_autocast(device: torch.device, precision: str):
    """Autocast to `precision` (a key of PRECISIONS) on `device`; float32: no autocast at all."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class MixedPrecision:
    """The precision of a training run: its autocast and, for float16, one gradient scaler kept for
    the whole run (its scale carries from epoch to epoch and into the epoch journal)."""

    def __init__(self, precision: str, device: torch.device):
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "float16")

    def autocast(self):
        return precision_autocast(self.device, self.precision)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """`loss.backward()` and `optimizer.step()`, through the scaler when it is enabled."""
        if not self.scaler.is_enabled():
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scaler.load_state_dict(state)
