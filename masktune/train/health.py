"""Training that cannot work as configured, said in one line instead of a silently useless model (issue 43).

Two checks, both cheap and both from numbers `fit` already has:
- BatchNorm's running statistics, which evaluation uses, move towards the data by a fraction `momentum` per
  optimiser step (PyTorch's default 0.1); after n steps the initial values (mean 0, variance 1) still weigh
  (1 - momentum)^n. A folder of 3 x 30 images with the default batch of 128 and 5 epochs gives 5 steps:
  59% of every running mean is still the initial 0, and every network of a 3-class run ended at chance on
  validation while fitting its training set. Below `BN_SETTLED` of the data's weight (about 44 steps at
  momentum 0.1) we warn.
- A model at chance on validation (at most 1.5 x 1 / classes) while it fits its training set (accuracy at
  least 0.9): whatever the cause, the checkpoint is not worth reporting without a word.
The warnings go into the checkpoint (`warnings`, only when there are any, so a healthy run's files are
unchanged) and from there into the report (masktune/eval/report.py)."""
from __future__ import annotations

import math

from torch import nn

BN_SETTLED = 0.99  # the weight of the data in BatchNorm's running statistics below which we warn
FITS_TRAINING = 0.9  # training accuracy from which a model "fits" its training set
CHANCE_FACTOR = 1.5  # validation accuracy up to this times 1 / classes counts as chance


def batchnorm_momentum(model: nn.Module) -> float | None:
    """The smallest running-statistics momentum of the model's BatchNorm layers (None: none track them)."""
    momenta = [layer.momentum for layer in model.modules()
               if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.track_running_stats
               and layer.momentum is not None]
    return min(momenta) if momenta else None


def batchnorm_warning(model: nn.Module, rows: int, batch_size: int, epochs: int) -> str | None:
    """The warning for too few optimiser steps to settle BatchNorm's running statistics, or None."""
    momentum = batchnorm_momentum(model)
    if momentum is None or rows == 0:
        return None
    per_epoch = math.ceil(rows / batch_size)
    steps = per_epoch * epochs
    initial_weight = (1 - momentum) ** steps
    if 1 - initial_weight >= BN_SETTLED:
        return None
    needed = math.ceil(math.log(1 - BN_SETTLED) / math.log(1 - momentum))
    return (f"only {steps} optimiser step(s) ({epochs} epoch(s) of {per_epoch}, {rows:,} images in batches of "
            f"{batch_size}): BatchNorm's running statistics, which evaluation uses, still hold {initial_weight:.0%} "
            f"of their initial values (about {needed} steps settle them at momentum {momentum:g}); lower the "
            "stage's batch_size or raise its epochs (docs/your-own-data.md, small data)")


def chance_warning(train_accuracy: float | None, val_accuracy: float | None, num_classes: int) -> str | None:
    """The warning for a model at chance on validation while it fits its training set, or None."""
    if train_accuracy is None or val_accuracy is None or num_classes < 2:
        return None
    chance = 1 / num_classes
    if train_accuracy >= FITS_TRAINING and val_accuracy <= min(CHANCE_FACTOR * chance, (1 + chance) / 2):
        return (f"validation accuracy {val_accuracy:.1%} is at chance ({chance:.1%} for {num_classes} classes) while "
                f"training accuracy is {train_accuracy:.1%}: the model does not generalise as trained (too few "
                "steps for BatchNorm? see docs/your-own-data.md, small data)")
    return None
