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
from dataclasses import dataclass
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
from masktune.models.predict import predict, validation_accuracy
from masktune.precision import MixedPrecision
from masktune.train.health import batchnorm_warning, chance_warning
from masktune.train.loop import train_epoch
from masktune.train.objective import ERM, Objective

# `select_by` of a run without validation (self-supervised backbones): every epoch's checkpoint replaces
# the previous one, so the best is the last.
LAST = "last"


@dataclass
class Plan:
    """How `fit` trains: `epochs` of the objective's per-batch loss (ERM's, or a method's: GroupDRO, ClusterFix,
    LfF), in batches of `batch_size`, validation predicted in batches of `eval_batch_size`. `scheduler`, when
    given, steps after each epoch's training pass (each epoch's learning rate is logged as `train/lr`); every
    number the training pass returns is logged as `train/<name>`, and the objective's state is journaled with
    the rest. `resume`: the fingerprint under which an epoch journal is kept and resumed, in
    `<journal_at>.partial/` (None: no journal). `amp`: the precision of the training passes (None: float32).
    `name` prefixes the progress lines."""
    epochs: int
    batch_size: int
    eval_batch_size: int
    objective: Objective = ERM
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    amp: MixedPrecision | None = None
    resume: Mapping | None = None
    journal_at: str | Path | None = None
    name: str = "ERM"


@dataclass
class Keep:
    """Which checkpoints `fit` writes: at `best_path` the best epoch by `select_by` (a key of `score`'s
    validation scores; `LAST`: each epoch replaces the previous one), at `last_path` the last epoch, at
    `oracle_path` the best by `oracle_by` (the true groups' worst group: the reference of the selection gap,
    reported only; `score` must compute it). `score` turns validation predictions into named numbers, logged
    each epoch (default: plain accuracy; `NO_VALIDATION`: no validation pass). `info` goes into every
    checkpoint (arch, num_classes, what the model is). A None path writes nothing there."""
    info: dict
    best_path: str | Path | None = None
    last_path: str | Path | None = None
    oracle_path: str | Path | None = None
    score: Callable[[np.ndarray], dict[str, float]] | str | None = None
    select_by: str = "accuracy"
    oracle_by: str = "worst_group_accuracy"


NO_VALIDATION = "none"  # `Keep.score`: no validation pass (self-supervised backbones)


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, train: Split, val: Split, generator: torch.Generator,
        device: torch.device, live: Live, plan: Plan, keep: Keep) -> dict:
    """Train `plan.epochs` epochs; keep the checkpoints `keep` asks for; return the best epoch (1-based) and
    its validation scores. Resumes from the plan's journal. Only rank 0 writes files."""
    world = current_world()
    score = None if keep.score == NO_VALIDATION else keep.score or validation_accuracy(val)
    amp = plan.amp or MixedPrecision("float32", device)
    state = TrainingState(model, optimizer, plan.scheduler, generator, amp, plan.objective)
    journal = _open_journal(plan.journal_at or keep.best_path, plan.resume, world)
    start = state.restore(journal, live, {keep.best_path: "best_checkpoint", keep.last_path: "last_checkpoint",
                                          keep.oracle_path: "oracle_checkpoint"}, world, plan.name)
    steps_warning = batchnorm_warning(model, len(train), plan.batch_size, plan.epochs)
    if steps_warning and world.is_main:
        print(f"warning: {plan.name}: {steps_warning}", flush=True)  # the log (stdout): stderr is for errors
    for epoch in range(start, plan.epochs):
        stats = train_epoch(model, optimizer, train, plan.batch_size, generator, device,
                            desc=f"{plan.name} epoch {epoch + 1}/{plan.epochs}", amp=amp, objective=plan.objective)
        logged = {}
        if plan.scheduler is not None:
            logged["train/lr"] = optimizer.param_groups[0]["lr"]  # this epoch's
            plan.scheduler.step()
        scores = {} if score is None else score(predict(model, val, plan.eval_batch_size, device, "validate"))
        logged |= {f"train/{key}": value for key, value in stats.items()}
        logged |= {f"val/{key}": value for key, value in scores.items()}
        _log(live, logged)
        warnings = [w for w in (steps_warning, chance_warning(stats.get("accuracy"), scores.get("accuracy"),
                                                              keep.info.get("num_classes", 0))) if w]
        state.keep(epoch, scores, keep, world, warnings)
        state.history.append(logged)
        if journal is not None and world.is_main:
            journal.save(state.snapshot(epoch + 1))
        if world.is_main:
            numbers = {f"train {key}": value for key, value in stats.items() if key in ("loss", "accuracy")}
            numbers |= {f"val {key.replace('_', ' ')}": value for key, value in scores.items()}
            print(f"{plan.name} epoch {epoch + 1}/{plan.epochs}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in numbers.items()))
    if world.is_main:
        for warning in state.best_warnings:
            if warning != steps_warning:
                print(f"warning: {plan.name}, the kept epoch: {warning}", flush=True)
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
        self.best_warnings: list[str] = []

    def keep(self, epoch: int, scores: Mapping[str, float], keep: Keep, world: World,
             warnings: list[str] | None = None) -> None:
        """Write this epoch's checkpoints where `keep` asks (one serialisation serves all of them), with the
        training's `warnings` (masktune/train/health.py) where there are any."""
        checkpoint = {**keep.info, "epoch": epoch, "val_accuracy": scores.get("accuracy", math.nan)}
        if warnings:
            checkpoint["warnings"] = list(warnings)
        improved = keep.select_by == LAST or scores[keep.select_by] > self.best_score
        oracle_improved = keep.oracle_path is not None and scores[keep.oracle_by] > self.oracle_score
        wanted = (improved and keep.best_path is not None) or oracle_improved or keep.last_path is not None
        data = checkpoint_bytes(self.model, self.optimizer, **checkpoint) if wanted else None
        if improved:
            self.best_score, self.best = scores.get(keep.select_by, epoch), {"epoch": epoch + 1, **scores}
            self.best_warnings = list(warnings or [])
            self.best_checkpoint = data
            if keep.best_path is not None:
                _write(keep.best_path, data, world)
        if oracle_improved:
            self.oracle_score, self.oracle_checkpoint = scores[keep.oracle_by], data
            _write(keep.oracle_path, data, world)
        if keep.last_path is not None:
            self.last_checkpoint = data
            _write(keep.last_path, data, world)

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
                "oracle_checkpoint": self.oracle_checkpoint, "history": self.history,
                "best_warnings": self.best_warnings}

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
        self.best_warnings = saved.get("best_warnings", [])
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
