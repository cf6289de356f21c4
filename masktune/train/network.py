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

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from masktune.config.fields import SEED, WORKERS, Bool, Choice, FilePath, Int, Number
from masktune.config.params import DATASET, param
from masktune.data.prepared import DatasetInfo, PreparedFile, open_prepared
from masktune.data.splits import Split, open_split
from masktune.distributed import DistributedConfig
from masktune.models import MODELS
from masktune.models.checkpoint import trained_as
from masktune.models.pretrained import initial_model
from masktune.precision import PRECISIONS, MixedPrecision
from masktune.seeding import seed_everything
from masktune.selection import selection_score
from masktune.train.fit import Keep, Plan, finish_journal, fit, live_folder, resume_key
from masktune.train.loop import make_optimizer, make_scheduler
from masktune.train.objective import ERM, Objective

OPTIMIZERS = ("sgd", "adam")                            # loop.make_optimizer
LR_SCHEDULES = ("constant", "cosine", "multistep")      # loop.make_scheduler


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """The network every from-scratch training run starts from (ERM's, the controls', JTT's identification
    model, every robust pair's, ClusterFix's self-supervised backbone): train_erm's."""
    dataset: str = param("dataset", DATASET)
    eval_batch_size: int = param("eval_batch_size", Int(1, recipe=True))
    arch: str = param("train_erm.arch", Choice(options=tuple(MODELS), recipe=True))
    pretrained: bool = param("train_erm.pretrained", Bool(recipe=True))
    weights_path: Path | None = param("train_erm.weights_path", FilePath(nullable=True))
    momentum: float = param("train_erm.momentum", Number(0.0, 1.0, recipe=True))


@dataclass(frozen=True, kw_only=True)
class TrainingConfig(NetworkConfig):
    """A training run's recipe: each run declares its own `lr`, `weight_decay`, `batch_size`, `epochs`, `workers`
    and `seed`; the optimizer, schedule and precision are SGD, constant and float32 unless its params say
    otherwise (ERM's, ClusterFix's)."""
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    workers: int
    seed: int | None
    optimizer: str = "sgd"
    lr_schedule: str = "constant"
    lr_milestone_every: int = 1
    lr_gamma: float = 1.0
    train_precision: str = "float32"


@dataclass(frozen=True, kw_only=True)
class DataParallelTraining(TrainingConfig, DistributedConfig):
    """A training run that runs as data-parallel workers, in the precision asked."""
    train_precision: str = param("train_precision", Choice(options=tuple(PRECISIONS)))


@dataclass(frozen=True, kw_only=True)
class TrainErmConfig(DataParallelTraining):
    """Stage `train_erm`: ERM with the dataset's recipe (the official MaskTune one: SGD, constant rate)."""
    lr: float = param("lr", Number(0.0, exclusive_minimum=True, recipe=True))
    epochs: int = param("train_erm.epochs", Int(1, recipe=True))
    batch_size: int = param("train_erm.batch_size", Int(1, recipe=True))
    weight_decay: float = param("train_erm.weight_decay", Number(0.0, recipe=True))
    # constant (MaskTune) | cosine (per epoch, ExMap's ERM) | multistep (the official --schedule/--gamma)
    lr_schedule: str = param("train_erm.lr_schedule", Choice(options=LR_SCHEDULES, recipe=True))
    lr_milestone_every: int = param("train_erm.lr_milestone_every", Int(1, recipe=True))
    lr_gamma: float = param("train_erm.lr_gamma", Number(0.0, 1.0, exclusive_minimum=True, recipe=True))
    optimizer: str = param("train_erm.optimizer", Choice(options=OPTIMIZERS, recipe=True))  # adam: Cats vs Dogs
    workers: int = param("train_erm.workers", WORKERS)
    seed: int = param("train_erm.seed", SEED)


@dataclass(frozen=True, kw_only=True)
class TrainErmControlConfig(TrainErmConfig):
    """`train_erm_control@<k>`: ERM's config with seed `train_erm.seed + k` (a seed sweep over train_erm.seed
    therefore never trains a control equal to its ERM)."""

    def derive_from_item(self, item: str) -> TrainErmControlConfig:
        return dataclasses.replace(self, seed=self.seed + int(item))


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
                               config.weight_decay, config.optimizer)
    amp = MixedPrecision(config.train_precision, device)
    return TrainingRun(config, device, prepared, info, train, val, model, objective, optimizer, generator, amp)


def finish_training(run: TrainingRun, *, stage: str, keep: Keep, live_dir: str | Path, name: str = "ERM",
                    resume_inputs: tuple = (), resume_extra: Mapping | None = None, summary: Mapping | None = None,
                    journal_at: str | Path | None = None) -> dict:
    """`fit` the started run for `config.epochs` epochs, keeping the checkpoints `keep` asks for (each records
    the network, the stage and the config it was trained with), logging to dvclive in `live_dir`; returns the
    best epoch's validation scores. `stage` and `resume_inputs` (files read beside the prepared data) key the
    epoch journal, kept beside `journal_at` (default: the best checkpoint); `summary` goes into dvclive's
    summary with the best epoch and the objective's own."""
    config, device = run.config, run.device
    scheduler = make_scheduler(run.optimizer, config.lr_schedule, config.epochs, config.lr_milestone_every,
                               config.lr_gamma)
    resume = {**resume_key(stage, config, device, run.prepared.path, *resume_inputs), **(resume_extra or {})}
    keep = dataclasses.replace(keep, info={"arch": config.arch, "num_classes": run.prepared.num_classes, **keep.info,
                                           **trained_as(stage, config)})
    plan = Plan(epochs=config.epochs, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                objective=run.objective, scheduler=scheduler, amp=run.amp, resume=resume, journal_at=journal_at,
                name=name)
    with live_folder(live_dir) as live:
        best_scores = fit(run.model, run.optimizer, run.train, run.val, run.generator, device, live, plan, keep)
        live.summary.update({**(summary or {}), **run.objective.summary()})
        live.summary["best"] = best_scores
    finish_journal(journal_at or keep.best_path, resume)
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
    keep = Keep(info={**schedule_info, "selection": "average", "title": "ERM"}, best_path=best, last_path=last,
                oracle_path=oracle, score=score)
    return finish_training(run, stage=stage, keep=keep, live_dir=live_dir, summary={"recipe": recipe})
