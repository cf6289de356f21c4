"""Training a network from the recipe's start: the one training sequence (seed -> data -> initial
model -> objective -> optimizer -> schedule -> `fit` -> journal), shared by ERM (`train_erm`, the
selective-classification control) and every robust trainer (JTT's upsampling, ClusterFix's cluster
re-weighting, GroupDRO: masktune/robust_train/); JTT's identification model uses its first half
(`start_training`) and its own epochs.

The network is train_erm's (`arch`, `pretrained`, `weights_path`, `momentum`); the rest of the recipe is
the caller's config: `lr`, `weight_decay`, `batch_size`, `epochs`, `seed`, `workers`, and where the config
has them `optimizer` (default SGD), `lr_schedule` (default constant; cosine: ExMap's ERM,
`CosineAnnealingLR(T_max=epochs)` stepped per epoch, rwchakra/exmap src/utils/optimizers.py L25-27;
multistep: the official --schedule/--gamma, `loop.make_scheduler`) and `train_precision` (default float32).
Model selection is the caller's `score` and `select_by`; ERM's is the official one, best *average*
validation accuracy, no group labels. Each finished epoch's state goes to `<best>.partial/`, so a rerun with
the same data and params continues after the last finished epoch (masktune.train.fit).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masktune.data.prepared import DatasetInfo, PreparedFile, open_prepared
from masktune.data.splits import Split, open_split
from masktune.models.checkpoint import trained_as
from masktune.models.precision import MixedPrecision
from masktune.models.pretrained import initial_model
from masktune.train.fit import finish_journal, fit, live_folder, resume_key
from masktune.train.loop import make_optimizer, make_scheduler, seed_everything
from masktune.train.objective import ERM, Objective
from masktune.train.selection import selection_score


@dataclass
class TrainingRun:
    """A training run once started: its data (the train split as this run reads it), network, objective,
    optimizer and generator."""
    config: object
    device: torch.device
    prepared: PreparedFile
    info: DatasetInfo
    train: Split
    val: Split
    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    amp: MixedPrecision


def start_training(config, device: torch.device, data: str | Path, *, train_view: str = "train",
                   objective_for: Callable[[nn.Module, Split], Objective] | None = None,
                   seed: int | None = None) -> TrainingRun:
    """Seed, open the train (through `train_view`: "eval" for the runs the official code trains without
    augmentation, JTT's) and val splits, build the recipe's initial model, its objective
    (`objective_for(model, val)`, ERM's by default: its extra parameters, ClusterFix's heads, are
    drawn after the network's weights) and the optimizer over both. `seed`: the config's by default."""
    generator = seed_everything(config.seed if seed is None else seed)
    prepared, info = open_prepared(data)
    train = open_split(prepared, "train", info.views, train_view, config.workers)
    val = open_split(prepared, "val", info.views, "eval", config.workers)
    model = initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)
    objective = ERM if objective_for is None else objective_for(model, val)
    optimizer = make_optimizer([*model.parameters(), *objective.parameters()], config.lr, config.momentum,
                               config.weight_decay, getattr(config, "optimizer", "sgd"))
    amp = MixedPrecision(getattr(config, "train_precision", "float32"), device)
    return TrainingRun(config, device, prepared, info, train, val, model, objective, optimizer, generator, amp)


def finish_training(run: TrainingRun, *, stage: str, best: str | Path, live_dir: str | Path,
                    last: str | Path | None = None, checkpoint_info: Mapping | None = None,
                    score: Callable[[np.ndarray], dict[str, float]] | None = None, select_by: str = "accuracy",
                    name: str = "ERM", resume_inputs: tuple = (), resume_extra: Mapping | None = None,
                    summary: Mapping | None = None, oracle: str | Path | None = None) -> dict:
    """`fit` the started run for `config.epochs` epochs, keeping the best checkpoint by `select_by` (and
    the last one when `last` is given; at `oracle`, the best by the true groups' worst group, the reference
    of the selection gap: `score` must compute it), logging to dvclive in `live_dir`; returns the best
    epoch's validation scores. `stage` and `resume_inputs` (files read beside the prepared data) key the
    epoch journal; `summary` goes into dvclive's summary with the best epoch and the objective's own."""
    config, device = run.config, run.device
    scheduler = make_scheduler(run.optimizer, getattr(config, "lr_schedule", "constant"), config.epochs,
                               getattr(config, "lr_milestone_every", 1), getattr(config, "lr_gamma", 1.0))
    resume = {**resume_key(stage, config, device, run.prepared.path, *resume_inputs), **(resume_extra or {})}
    # The stage and resolved config it was trained with (recipe values filled in), checked by whoever loads it.
    info = {"arch": config.arch, "num_classes": run.prepared.num_classes, **(checkpoint_info or {}),
            **trained_as(stage, config)}
    with live_folder(live_dir) as live:
        best_scores = fit(run.model, run.optimizer, run.train, run.val, epochs=config.epochs,
                          batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                          generator=run.generator, device=device, live=live, best_path=best, last_path=last,
                          checkpoint_info=info, score=score, select_by=select_by, name=name, scheduler=scheduler,
                          objective=run.objective, resume=resume, amp=run.amp, oracle_path=oracle)
        live.summary.update({**(summary or {}), **run.objective.summary()})
        live.summary["best"] = best_scores
    finish_journal(best, resume)
    return best_scores


def train_erm(config, device: torch.device, data: str | Path, best: str | Path, last: str | Path,
              live_dir: str | Path, stage: str, oracle: str | Path | None = None) -> dict:
    """ERM from the recipe's start (stage `train_erm`, and `train_erm_control@<k>` with another seed):
    the checkpoint of the best average validation accuracy (the official rule, ✗), the last one, and at
    `oracle` the one of the best true worst group (reported only: the selection gap); returns the best
    epoch's validation scores."""
    run = start_training(config, device, data)
    score = selection_score(run.val.labels, "average", true_groups=run.val.groups, oracle=oracle is not None)
    # A multistep checkpoint says so: the finetune continues at its decayed rate (loop.restore_optimizer).
    schedule_info = {"lr_schedule": "multistep"} if config.lr_schedule == "multistep" else {}
    recipe = {"arch": config.arch, "pretrained": config.pretrained, "lr": config.lr, "epochs": config.epochs,
              "batch_size": config.batch_size, "momentum": config.momentum, "weight_decay": config.weight_decay,
              "lr_schedule": config.lr_schedule, "seed": config.seed}
    return finish_training(run, stage=stage, best=best, last=last, live_dir=live_dir, score=score,
                           checkpoint_info={**schedule_info, "selection": "average"}, summary={"recipe": recipe},
                           oracle=oracle)
