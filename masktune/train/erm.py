"""ERM training of the network of `train_erm`'s recipe: one function, shared by the stage `train_erm`
and by `train_erm_control@<seed>` (selective classification's two-ERM control), which differ in the
seed only.

Model selection is the official one: best *average* validation accuracy, no group labels.
`lr_schedule`: constant (MaskTune's ERM), or cosine, ExMap's ERM: `CosineAnnealingLR(optimizer,
T_max=epochs)`, eta_min 0, stepped once per epoch (rwchakra/exmap src/utils/optimizers.py L25-27,
src/run_erm.py L68), or multistep, MultiStepLR x `lr_gamma` every `lr_milestone_every` epochs (the
official --schedule/--gamma, `loop.make_scheduler`). `optimizer`: SGD, or Adam (the official Cats vs Dogs
recipe). Each finished epoch's state goes to `<best>.partial/`, so a rerun with the same data and params
continues after the last finished epoch (masktune.train.fit).
"""
from __future__ import annotations

from pathlib import Path

import torch

from masktune.config.stages import TrainErmConfig
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.models.precision import MixedPrecision
from masktune.models.pretrained import initial_model
from masktune.train.fit import finish_journal, fit, live_folder, resume_key
from masktune.train.loop import make_optimizer, make_scheduler, seed_everything


def train_erm(config: TrainErmConfig, device: torch.device, data: str | Path, best: str | Path, last: str | Path,
              live_dir: str | Path, stage: str) -> dict:
    """Train from the recipe's start, keep the best-validation and the last checkpoint, log to dvclive in
    `live_dir`; returns the best epoch's validation scores. `stage`: the journal's owner."""
    generator = seed_everything(config.seed)
    prepared, spec = open_prepared(data)
    train = open_split(prepared, "train", spec.views, "train", config.workers)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    model = initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay, config.optimizer)
    scheduler = make_scheduler(optimizer, config.lr_schedule, config.epochs, config.lr_milestone_every,
                               config.lr_gamma)
    # A multistep checkpoint says so: the finetune continues at its decayed rate (loop.restore_optimizer).
    # Constant and cosine checkpoints stay byte for byte as they were.
    schedule_info = {"lr_schedule": "multistep"} if config.lr_schedule == "multistep" else {}
    resume = resume_key(stage, config, device, data)
    with live_folder(live_dir) as live:
        best_scores = fit(model, optimizer, train, val, epochs=config.epochs, batch_size=config.batch_size,
                          eval_batch_size=config.eval_batch_size, generator=generator, device=device, live=live,
                          best_path=best, last_path=last,
                          checkpoint_info={"arch": config.arch, "num_classes": prepared.num_classes, **schedule_info},
                          scheduler=scheduler, resume=resume, amp=MixedPrecision(config.train_precision, device))
        live.summary["best/val_accuracy"] = best_scores["accuracy"]
        live.summary["best/epoch"] = best_scores["epoch"]
        live.summary["recipe"] = {"arch": config.arch, "pretrained": config.pretrained, "lr": config.lr,
                                  "epochs": config.epochs, "batch_size": config.batch_size,
                                  "momentum": config.momentum, "weight_decay": config.weight_decay,
                                  "lr_schedule": config.lr_schedule, "seed": config.seed}
    finish_journal(best, resume)
    return best_scores
