"""Training a model for several epochs with model selection on validation: ERM (`train_erm`) and the
training stages of other methods (JTT's identification and final models) share it.

As the official `train_erm` (src/methods/base_method.py): each epoch one shuffled pass, then the
validation predictions; the checkpoint of the best validation score is kept (strictly better, so the
first of equal epochs), and the last one too when asked. What "best" means is the caller's: `score`
turns the validation predictions into named numbers, logged each epoch, and `select_by` names the
one that selects (ERM: plain accuracy, no group labels; `LAST`: no validation pass, the last epoch).

An optional learning-rate `scheduler` steps once after each epoch's training pass, before validation and
the checkpoints, as ExMap's ERM (rwchakra/exmap src/run_erm.py L66-72: `scheduler.step()` after
`train_epoch`, then the state dict is saved): a checkpoint holds the learning rate of the next epoch, and
its param groups hold the schedule's `initial_lr` (what `restore_optimizer` falls back on).

Preemption: with `resume` (a fingerprint of the stage's inputs and params) the whole training state
after each epoch goes to an `EpochJournal` beside `best_path` (`<best>.partial/epoch.pt`): model,
optimizer, scheduler, the shuffling generator (the sampler's position: the next epoch's permutation and
worker seeds are drawn from it), the global torch / numpy / Python random states, the best score and
checkpoint so far, and every number logged. A rerun after a kill continues after the last finished
epoch, replays the logged numbers into the new dvclive folder, and ends with the same checkpoints and
metrics as an uninterrupted run (tests/test_resume.py); a journal of other inputs or params is
discarded. Under DDP rank 0 writes the journal and broadcasts what it read to the other ranks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from dvclive import Live
from torch import nn

from masktune.data.splits import Split
from masktune.distributed import World, broadcast_object, current_world
from masktune.io.files import atomic_directory, write_bytes_atomically
from masktune.io.journal import EpochJournal, file_identity
from masktune.models.checkpoint import checkpoint_bytes
from masktune.models.precision import MixedPrecision
from masktune.train.loop import predict, train_epoch, validation_accuracy
from masktune.train.objective import ERM, Objective

# `select_by` of a run without validation (self-supervised backbones): every epoch's checkpoint replaces
# the previous one, so the best is the last.
LAST = "last"


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train: Split, val: Split, *, epochs: int,
        batch_size: int, eval_batch_size: int, generator: torch.Generator, device: torch.device, live: Live,
        best_path: str | Path, last_path: str | Path | None = None, checkpoint_info: dict,
        score: Callable[[np.ndarray], dict[str, float]] | None = None, select_by: str = "accuracy",
        name: str = "ERM", scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        objective: Objective = ERM, resume: Mapping | None = None, amp: MixedPrecision | None = None,
        oracle_path: str | Path | None = None, oracle_by: str = "worst_group_accuracy") -> dict:
    """Train `epochs` epochs; save the best checkpoint (and the last); return the best epoch (1-based)
    and its validation scores. `checkpoint_info` (arch, num_classes, ...) goes into every checkpoint.
    `scheduler`, when given, steps after each epoch's training pass (each epoch's learning rate is logged
    as `train/lr`). `objective`: each batch's loss (ERM's, or a method's: GroupDRO, ClusterFix); every
    number the training pass returns is logged as `train/<name>`, and the objective's state (ClusterFix's
    heads and cluster weights, GroupDRO's group weights) is journaled with the rest. `resume`: the
    fingerprint under which an epoch journal is kept and resumed (None: no journal). `amp`: the
    precision of the training passes (None: float32). `oracle_path`: where to keep, beside the chosen one,
    the checkpoint of the best `oracle_by` score (the true groups' worst group: the reference of the
    selection gap, reported only; `score` must compute it). Only rank 0 writes files."""
    world = current_world()
    score = score or validation_accuracy(val)
    amp = amp or MixedPrecision("float32", device)
    state = TrainingState(model, optimizer, scheduler, generator, amp, objective)
    journal = _open_journal(best_path, resume, world)
    start = state.restore(journal, live, {best_path: "best_checkpoint", last_path: "last_checkpoint",
                                          oracle_path: "oracle_checkpoint"}, world, name)
    for epoch in range(start, epochs):
        stats = train_epoch(model, optimizer, train, batch_size, generator, device,
                            desc=f"{name} epoch {epoch + 1}/{epochs}", amp=amp, objective=objective)
        logged = {}
        if scheduler is not None:
            logged["train/lr"] = optimizer.param_groups[0]["lr"]  # this epoch's
            scheduler.step()
        scores = {} if select_by == LAST else score(predict(model, val, eval_batch_size, device, "validate"))
        logged |= {f"train/{key}": value for key, value in stats.items()}
        logged |= {f"val/{key}": value for key, value in scores.items()}
        _log(live, logged)
        checkpoint = {**checkpoint_info, "epoch": epoch, "val_accuracy": scores.get("accuracy", math.nan)}
        improved = select_by == LAST or scores[select_by] > state.best_score
        oracle_improved = oracle_path is not None and scores[oracle_by] > state.oracle_score
        data = (checkpoint_bytes(model, optimizer, **checkpoint)
                if improved or oracle_improved or last_path is not None else None)
        if improved:  # one serialisation serves the best, the oracle's and the last checkpoint of an epoch
            state.best_score, state.best = scores.get(select_by, epoch), {"epoch": epoch + 1, **scores}
            state.best_checkpoint = data
            _write(best_path, data, world)
        if oracle_improved:
            state.oracle_score, state.oracle_checkpoint = scores[oracle_by], data
            _write(oracle_path, data, world)
        if last_path is not None:
            state.last_checkpoint = data
            _write(last_path, data, world)
        state.history.append(logged)
        if journal is not None and world.is_main:
            journal.save(state.snapshot(epoch + 1))
        if world.is_main:
            numbers = {f"train {key}": value for key, value in stats.items() if key in ("loss", "accuracy")}
            numbers |= {f"val {key.replace('_', ' ')}": value for key, value in scores.items()}
            print(f"{name} epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in numbers.items()))
    return state.best


def resume_key(stage: str, config, device: torch.device, *inputs: str | Path) -> dict:
    """The fingerprint of a training stage's epoch journal: its input files (path, size, time), its
    whole config (every param it reads), local weights, device and torch version."""
    weights = getattr(config, "weights_path", None)
    return {"stage": stage, "inputs": [file_identity(path) for path in inputs], "config": dataclasses.asdict(config),
            "weights": weights and file_identity(weights), "device": device.type, "torch": torch.__version__}


def finish_journal(best_path: str | Path, resume: Mapping | None) -> None:
    """Delete the epoch journal once the stage's outputs are written (rank 0; call last)."""
    if resume is not None and current_world().is_main:
        EpochJournal(best_path, resume, create=False).remove()


class TrainingState:
    """Everything a resumed run needs to continue exactly where an uninterrupted one would be."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, generator: torch.Generator,
                 amp: MixedPrecision, objective: Objective = ERM):
        self.model, self.optimizer, self.scheduler, self.generator = model, optimizer, scheduler, generator
        self.amp, self.objective = amp, objective
        self.best_score, self.best = -math.inf, {}
        self.best_checkpoint: bytes | None = None
        self.last_checkpoint: bytes | None = None
        self.oracle_score = -math.inf
        self.oracle_checkpoint: bytes | None = None
        self.history: list[dict[str, float]] = []

    def snapshot(self, epochs_done: int) -> dict:
        return {"epochs_done": epochs_done, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "grad_scaler": self.amp.state_dict(),
                "epoch_state": self.objective.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy_rng": _numpy_rng_state(), "python_rng": random.getstate(),
                "best_score": self.best_score, "best": self.best, "best_checkpoint": self.best_checkpoint,
                "last_checkpoint": self.last_checkpoint, "oracle_score": self.oracle_score,
                "oracle_checkpoint": self.oracle_checkpoint, "history": self.history}

    def restore(self, journal: EpochJournal | None, live: Live, checkpoints: Mapping[str | Path | None, str],
                world: World, name: str) -> int:
        """Load the journal's state (rank 0 reads, every rank receives); rewrite the checkpoints DVC
        removed (`checkpoints`: path -> which of them) and replay the logged numbers; return the number of
        epochs already done."""
        saved = journal.load() if journal is not None and world.is_main else None
        saved = broadcast_object(saved, world) if journal is not None else None
        if saved is None:
            return 0
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.amp.load_state_dict(saved["grad_scaler"])
        self.objective.load_state_dict(saved["epoch_state"])
        self.generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        _set_numpy_rng_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])
        self.best_score, self.best = saved["best_score"], saved["best"]
        self.oracle_score = saved["oracle_score"]
        for attribute in ("best_checkpoint", "last_checkpoint", "oracle_checkpoint"):
            setattr(self, attribute, saved[attribute])
        self.history = saved["history"]
        for logged in self.history:
            _log(live, logged)
        for path, attribute in checkpoints.items():  # rewrite the checkpoints DVC removed
            if path is not None and getattr(self, attribute) is not None:
                _write(path, getattr(self, attribute), world)
        if world.is_main:
            print(f"{name}: resuming after epoch {saved['epochs_done']} ({journal.folder})")
        return saved["epochs_done"]


def _numpy_rng_state() -> tuple:
    """NumPy's global state with its key array as a tensor: the journal loads weights-only."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian


def _set_numpy_rng_state(state: tuple) -> None:
    name, keys, position, has_gauss, cached_gaussian = state
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))


def _open_journal(best_path: str | Path, resume: Mapping | None, world: World) -> EpochJournal | None:
    if resume is None:
        return None
    journal = EpochJournal(best_path, {**resume, "world_size": world.size}, create=world.is_main)
    if journal.discarded:
        print(f"{journal.folder}: left by other inputs or params, starting over")
    return journal


def _log(live: Live, logged: Mapping[str, float]) -> None:
    for key, value in logged.items():
        live.log_metric(key, value)
    live.next_step()


def _write(path: str | Path, data: bytes, world: World) -> None:
    if world.is_main:
        write_bytes_atomically(path, data)


class _Silent:
    """Stands in for dvclive on the ranks that write nothing."""

    def __init__(self):
        self.summary: dict = {}

    def log_metric(self, *args, **kwargs) -> None:
        pass

    def next_step(self) -> None:
        pass

    def end(self) -> None:
        pass


@contextlib.contextmanager
def live_folder(path: str | Path) -> Iterator[Live]:
    """A dvclive logger writing `path` atomically (the folder appears when the block succeeds), as a
    pipeline stage uses it (no dvc.yaml rewrite, no experiment commit); a silent stand-in on ranks
    other than 0."""
    if not current_world().is_main:
        yield _Silent()
        return
    with atomic_directory(path) as folder:
        live = Live(str(folder), dvcyaml=False, save_dvc_exp=False, report=None)
        yield live
        live.end()
