"""Upsampling, JTT's second half (Liu et al., ICML 2021; anniesch/jtt), as a trainer of any groups file:
the network of train_erm trained by ERM from ERM's start on the training set with its minority rows
repeated. A groups file that names its minority (JTT's error set: the misclassified rows) has those rows
appended `upsample.upweight` (λ_up) times: JTT's final model. A partition that names none (ExMap's or
ClusterFix's clusters, the true groups) is upsampled to balance instead: within each class, every row of
group g is listed round(n_c / n_g) times, n_c the size of the class's largest group, so that its groups
weigh about the same (beyond JTT; the upsampling of the group-balancing literature), at a cost of at most
the number of groups times the largest one per epoch.

As the official code: the upsampled set is the training set concatenated with `Subset(train, error rows *
up_weight)` (run_expt.py L88-101), so each upweighted example is seen λ_up + 1 times per epoch, N + λ_up
|E| images, one shuffled pass an epoch; validation is not upsampled; no data augmentation (`--augment_data`
is off in every official command: the eval view); SGD, momentum 0.9, constant learning rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from masktune.config.fields import Int
from masktune.config.params import param
from masktune.groups import Groups
from masktune.methods import Spec
from masktune.robust_train.base import RobustTrainConfig, Trainer


def upsampled_rows(upweighted: np.ndarray, upweight: int) -> np.ndarray:
    """Rows of JTT's upsampled training set, as the official run_expt.py builds it: every row once, then
    the upweighted rows `upweight` more times (each is seen upweight + 1 times per epoch). upweight 0:
    plain ERM."""
    if upweight < 0:
        raise ValueError(f"upweight must be >= 0, got {upweight}")
    upweighted = np.asarray(upweighted, dtype=bool)
    extra = np.tile(np.flatnonzero(upweighted), upweight)
    return np.concatenate([np.arange(len(upweighted)), extra]).astype(np.int64)


def balanced_rows(ids: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """Every row of group g listed round(n_c / n_g) times (at least once), n_c the size of the largest
    group of g's class: the groups of each class upsampled to about the same size. Rows in order, each
    repeated in place."""
    sizes = np.bincount(ids, minlength=len(classes))
    largest = {c: max(sizes[g] for g in range(len(classes)) if classes[g] == c) for c in set(classes)}
    repeats = np.array([max(1, round(largest[classes[g]] / n)) if n else 0 for g, n in enumerate(sizes)])
    return np.repeat(np.arange(len(ids)), repeats[ids]).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class UpsampleConfig(RobustTrainConfig):
    """JTT's retraining: the named minority's rows appended λ_up times (else the groups balanced)."""
    upweight: int = param("upsample.upweight", Int(0, recipe=True))


class Upsample(Trainer):
    name = "upsample"
    title = "upsampling (JTT's retraining)"
    train_view = "eval"

    def training_rows(self, config, groups: Groups) -> np.ndarray:
        if groups.minority:
            return upsampled_rows(np.isin(groups.train, groups.minority), config.upweight)
        return balanced_rows(groups.train, groups.classes)

    def describe(self, config, groups: Groups, rows: np.ndarray) -> str:
        if groups.minority:
            upweighted = int(np.isin(groups.train, groups.minority).sum())
            return (f"{upweighted:,} images of the named minority appended {config.upweight} times -> {len(rows):,} "
                    "images per epoch")
        return f"{groups.count} groups upsampled to balance within each class -> {len(rows):,} images per epoch"

    def summary(self, config, groups: Groups, rows: np.ndarray) -> dict:
        return {"minority_rows": int(np.isin(groups.train, groups.minority).sum()), "upsampled_size": len(rows),
                "rule": "named minority x upweight" if groups.minority else "balance within classes"}


TRAINER = Upsample()
SPEC = Spec(name="upsample", role="robust_train", family="robust_train", title="Upsampling",
            configs={"robust_train": UpsampleConfig}, paper_pairs={"jtt": "JTT (Liu et al., 2021)"})
