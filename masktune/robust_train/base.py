"""What a robust trainer is, and the one function that runs any of them on any groups file.

A trainer (one module of masktune/robust_train/) says which training rows an epoch reads (JTT's
upsampled set) and what each batch's loss is (its `train.objective.Objective`: GroupDRO's, ClusterFix's);
everything else, the network, its start, the recipe, the epochs with model selection, checkpoints,
dvclive and the epoch journal, is `masktune.train.network`'s, shared with ERM.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from masktune.config.fields import SEED, WORKERS, Choice, Int, Number, Text
from masktune.config.params import param
from masktune.data.prepared import PreparedFile
from masktune.data.splits import ResampledSplit, Split
from masktune.errors import UserError
from masktune.groups import Groups, read_groups
from masktune.seeding import resolve_seed
from masktune.selection import SELECT_BY, SELECTIONS, group_labels_used, selection_score
from masktune.train.fit import Keep
from masktune.train.network import DataParallelTraining, finish_training, start_training
from masktune.train.objective import ERM, Objective


@dataclass(frozen=True, kw_only=True)
class PairConfig:
    """A (groups, trainer) pair of `methods.robust_train` (`${name}`: the pair's name) and its model selection."""
    groups: str = param("methods.robust_train.${name}.groups", Text())
    trainer: str = param("methods.robust_train.${name}.trainer", Text())
    selection: str = param("methods.robust_train.${name}.selection", Choice(options=SELECTIONS))


@dataclass(frozen=True, kw_only=True)
class RobustTrainConfig(DataParallelTraining, PairConfig):
    """A pair trained with its trainer's recipe (`${trainer}`: the trainer's section, null values from
    `recipes.<dataset>.<trainer>`) on train_erm's network from ERM's start; each trainer's config adds its own."""
    lr: float = param("${trainer}.lr", Number(0.0, exclusive_minimum=True, recipe=True))
    weight_decay: float = param("${trainer}.weight_decay", Number(0.0, recipe=True))
    batch_size: int = param("${trainer}.batch_size", Int(1, recipe=True))
    epochs: int = param("${trainer}.epochs", Int(1, recipe=True))
    workers: int = param("${trainer}.workers", WORKERS)
    seed: int | None = param("${trainer}.seed", SEED)


class Trainer:
    """ERM on the training set as it is: subclasses override the rows and the objective."""

    name: ClassVar[str]
    title: ClassVar[str]
    train_view: ClassVar[str] = "train"   # "eval": no augmentation (JTT's official runs)
    # False where the objective keeps state over whole batches in order (GroupDRO's and ClusterFix's
    # weights): the stage then runs as one process whatever `distributed` asks
    data_parallel: ClassVar[bool] = True

    def training_rows(self, config, groups: Groups) -> np.ndarray | None:
        """The training rows one epoch shuffles, repeats allowed (None: each row once)."""
        return None

    def objective(self, config, groups: Groups, model: nn.Module, val: Split) -> Objective:
        return ERM

    def describe(self, config, groups: Groups, rows: np.ndarray | None) -> str:
        """One line on what this run trains with."""
        return f"lr {config.lr}, {config.epochs} epochs"

    def summary(self, config, groups: Groups, rows: np.ndarray | None) -> dict:
        return {}


def train_robust(trainer: Trainer, spec, config, device: torch.device, data: str | Path, groups_path: str | Path,
                 out: str | Path, live_dir: str | Path, name: str, oracle: str | Path | None = None) -> dict:
    """Train the method `name` of the pair (the groups file at `groups_path`, `trainer`) with `config` (the
    trainer's recipe and the pair's `selection`); keep the best checkpoint by the selection, recording in
    it what the model is and its group-label use, and at `oracle` the one the true groups' worst group
    would pick (the selection gap, reported only); returns the best epoch's validation scores."""
    prepared = PreparedFile(data)
    groups = read_groups(groups_path, {split: prepared.length(split) for split in ("train", "val")})
    seed = resolve_seed(config.seed, f"{trainer.name}.seed")
    run = start_training(config, device, data, train_view=trainer.train_view, seed=seed,
                         objective_for=lambda model, val: trainer.objective(config, groups, model, val))
    if run.amp.precision not in run.objective.precisions:
        raise UserError(f"params.yaml: train_precision is {run.amp.precision}, but {trainer.name} trains in "
                        f"{' or '.join(run.objective.precisions)} only (methods.robust_train.{name})")
    rows = trainer.training_rows(config, groups)
    if rows is not None:
        run.train = ResampledSplit(run.train, rows)
    labels = group_labels_used(groups.uses_group_labels, config.selection)
    score = selection_score(run.val.labels, config.selection, true_groups=run.val.groups, pseudo_groups=groups.val,
                            oracle=oracle is not None)
    print(f"{name} ({trainer.name} on {groups.inference}): {trainer.describe(config, groups, rows)}; "
          f"selection by {config.selection} (group labels {labels})")
    info = {"method": name, "groups": groups.inference, "trainer": trainer.name, "selection": config.selection,
            "group_labels": labels.as_dict(), "title": spec.pair_title(groups)}
    keep = Keep(info=info, best_path=out, oracle_path=oracle, score=score, select_by=SELECT_BY[config.selection])
    return finish_training(run, stage=f"robust_train@{name}", keep=keep, live_dir=live_dir, name=name,
                           resume_inputs=(groups_path,), resume_extra={"seed": seed},
                           summary={"seed": seed, "groups": groups.inference, **trainer.summary(config, groups, rows)})
