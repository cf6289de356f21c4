"""Training a model for several epochs with model selection on validation: ERM (`train_erm`) and the
training stages of other methods (JTT's identification and final models) share it.

As the official `train_erm` (src/methods/base_method.py): each epoch one shuffled pass, then the
validation predictions; the checkpoint of the best validation score is kept (strictly better, so the
first of equal epochs), and the last one too when asked. What "best" means is the caller's: `score`
turns the validation predictions into named numbers, logged each epoch, and `select_by` names the
one that selects (ERM: plain accuracy, no group labels).

An optional learning-rate `scheduler` steps once after each epoch's training pass, before validation and
the checkpoints, as ExMap's ERM (rwchakra/exmap src/run_erm.py L66-72: `scheduler.step()` after
`train_epoch`, then the state dict is saved): a checkpoint holds the learning rate of the next epoch, and
its param groups hold the schedule's `initial_lr` (what `restore_optimizer` falls back on).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch import nn

from masktune.data.splits import Split
from masktune.models.checkpoint import save_checkpoint
from masktune.train.loop import predict, train_epoch, validation_accuracy


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train: Split, val: Split, *, epochs: int,
        batch_size: int, eval_batch_size: int, generator: torch.Generator, device: torch.device, live: Live,
        best_path: str | Path, last_path: str | Path | None = None, checkpoint_info: dict,
        score: Callable[[np.ndarray], dict[str, float]] | None = None, select_by: str = "accuracy",
        name: str = "ERM", scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        epoch_fn: Callable[..., dict[str, float]] = train_epoch) -> dict:
    """Train `epochs` epochs; save the best checkpoint (and the last); return the best epoch (1-based)
    and its validation scores. `checkpoint_info` (arch, num_classes, ...) goes into every checkpoint.
    `scheduler`, when given, steps after each epoch's training pass (each epoch's learning rate is logged
    as `train/lr`). `epoch_fn` is one training pass with `train_epoch`'s signature (a method's own loss:
    ClusterFix); every number it returns is logged as `train/<name>`."""
    score = score or validation_accuracy(val)
    best_score, best = -math.inf, {}
    for epoch in range(epochs):
        stats = epoch_fn(model, optimizer, train, batch_size, generator, device,
                         desc=f"{name} epoch {epoch + 1}/{epochs}")
        if scheduler is not None:
            live.log_metric("train/lr", optimizer.param_groups[0]["lr"])  # this epoch's
            scheduler.step()
        scores = score(predict(model, val, eval_batch_size, device, "validate"))
        for key, value in stats.items():
            live.log_metric(f"train/{key}", value)
        for key, value in scores.items():
            live.log_metric(f"val/{key}", value)
        checkpoint = {**checkpoint_info, "epoch": epoch, "val_accuracy": scores.get("accuracy", math.nan)}
        if scores[select_by] > best_score:
            best_score, best = scores[select_by], {"epoch": epoch + 1, **scores}
            save_checkpoint(best_path, model, optimizer, **checkpoint)
        if last_path is not None:
            save_checkpoint(last_path, model, optimizer, **checkpoint)
        print(f"{name} epoch {epoch + 1}/{epochs}: train loss {stats['loss']:.4f}, train acc {stats['accuracy']:.4f}, "
              + ", ".join(f"val {key.replace('_', ' ')} {value:.4f}" for key, value in scores.items()))
        live.next_step()
    return best
