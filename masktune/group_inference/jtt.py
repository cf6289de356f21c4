"""JTT, Just Train Twice (Liu et al., ICML 2021; official code anniesch/jtt), its first half: train an
identification model by ERM for T epochs and take the training examples it misclassifies as the error
set. As groups (stage `jtt_identify@<name>`): per class, the rows it gets right and the rows it gets
wrong, the error groups being the minority that JTT's second half upsamples (`upsample`,
masktune/robust_train/upsample.py: the error set appended λ_up times, JTT's final model) and that any
other trainer can use (GroupDRO on the error set, ...). No group labels.

Details of the official code that are followed (file and line of anniesch/jtt):
- the error set is `wrong_1_times = int(y_pred != y_true)` (process_training.py L33), where y_pred is
  the argmax logged during the *training pass* of epoch T (0-based, train.py L139-145, L254): T full
  epochs, then each batch predicted in train mode just before its own step. `jtt.error_set_pass:
  eval` predicts in eval mode after T epochs instead (an option, not the default);
- no data augmentation (`--augment_data` is off in every official command): the model trains on the
  eval view;
- the model starts from ImageNet weights like ERM, SGD momentum 0.9, constant learning rate.
Beyond the official code: the validation rows are grouped too (by the identification model's eval-mode
predictions after the error-set pass), so that a trainer can select by the worst of these groups
(`selection: worst_pseudo_group`) without group labels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masktune.config.fields import SEED, WORKERS, Choice, Int, Number
from masktune.config.params import param
from masktune.data.prepared import PreparedFile
from masktune.distributed import current_world, gather_rows
from masktune.groups import Groups, make_groups
from masktune.methods import Spec
from masktune.models.predict import predict
from masktune.precision import MixedPrecision
from masktune.train.fit import LAST, NO_VALIDATION, Keep
from masktune.train.network import DataParallelTraining, TrainingRun, finish_training, start_training
from masktune.train.objective import Objective

ERROR_SET_PASSES = ("training", "eval")  # the official training-pass predictions | an eval pass after T epochs


@dataclass(frozen=True, kw_only=True)
class JttIdentifyConfig(DataParallelTraining):
    """JTT's identification model: ERM for T epochs with JTT's recipe (from ERM's start, no augmentation), then
    the error set."""
    epochs: int = param("jtt.identification_epochs", Int(0, recipe=True))   # T (the official --final_epoch)
    error_set_pass: str = param("jtt.error_set_pass", Choice(options=ERROR_SET_PASSES))
    lr: float = param("jtt.lr", Number(0.0, exclusive_minimum=True, recipe=True))
    weight_decay: float = param("jtt.weight_decay", Number(0.0, recipe=True))
    batch_size: int = param("jtt.batch_size", Int(1, recipe=True))
    workers: int = param("jtt.workers", WORKERS)
    seed: int = param("jtt.seed", SEED)


SPEC = Spec(name="jtt", role="group_inference", family="jtt", title="JTT's error set",
            configs={"jtt_identify": JttIdentifyConfig}, groups_files=lambda name: (name,),
            groups_titles={"jtt": "JTT's error set"})


class ErrorSetPass(Objective):
    """ERM's loss, and the official error set's predictions: during the training pass of epoch `record_epoch`
    (0-based; anniesch/jtt train.py L139-145, L254), each training row's predicted class as its batch computes
    it, just before the step on that batch. Journaled with the run (`state_dict`), so a preempted
    identification resumes; under torchrun every rank ends the epoch with every row's prediction."""

    def __init__(self, rows: int, record_epoch: int):
        self.predicted = np.full(rows, -1, dtype=np.int64)
        self.record_epoch, self.epoch = record_epoch, 0
        self._seen: list[tuple[np.ndarray, np.ndarray]] = []

    def batch_loss(self, network: nn.Module, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   rows: np.ndarray, amp: MixedPrecision):
        logits, loss, logged = super().batch_loss(network, model, inputs, targets, rows, amp)
        if self.epoch == self.record_epoch:
            self._seen.append((np.asarray(rows), logits.argmax(1).detach().cpu().numpy()))
        return logits, loss, logged

    def end_epoch(self, model: nn.Module, device: torch.device) -> None:
        if self.epoch == self.record_epoch:
            world = current_world()
            rows = np.concatenate([r for r, _ in self._seen]) if self._seen else np.zeros(0, dtype=np.int64)
            classes = np.concatenate([c for _, c in self._seen]) if self._seen else np.zeros(0, dtype=np.int64)
            self.predicted[gather_rows(rows, world)] = gather_rows(classes, world)
            self._seen = []
        self.epoch += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "predicted": torch.from_numpy(self.predicted.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.predicted = int(state["epoch"]), state["predicted"].numpy().copy()


def error_set(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """JTT's error set: True for each training example the identification model misclassifies."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    return predictions != labels


def error_groups(errors: dict[str, np.ndarray], labels: dict[str, np.ndarray], class_names: tuple[str, ...],
                 description: str) -> Groups:
    """Per class c, group 2c its rows predicted right and group 2c + 1 its errors (the minority)."""
    names = [f"{name}_{kind}" for name in class_names for kind in ("correct", "error")]
    classes = [c for c in range(len(class_names)) for _ in range(2)]
    ids = {split: 2 * np.asarray(labels[split], dtype=np.int64) + errors[split] for split in errors}
    return make_groups(ids, labels, names, classes, inference="jtt", description=description, uses_group_labels=False,
                       minority=range(1, len(names), 2), title=SPEC.groups_titles["jtt"])


def identify(config, device: torch.device, data, *, stage: str, out: str | Path,
             live_dir: str | Path) -> tuple[Groups, dict, TrainingRun]:
    """Train the identification model (T = `config.epochs` epochs of ERM with JTT's recipe, from ERM's start, no
    augmentation) on the one training function (`finish_training`: dvclive in `live_dir`, an epoch journal
    beside `out`), take its error set (the training pass of epoch T, recorded by `ErrorSetPass`, or an eval
    pass after T epochs) and its validation errors; the groups, a summary of the error set and the run."""
    training_pass = config.error_set_pass == "training"
    rows = PreparedFile(data).length("train")
    recorder = ErrorSetPass(rows, config.epochs) if training_pass else None
    run = start_training(config, device, data, train_view="eval",
                         objective_for=(lambda model, val: recorder) if training_pass else None)
    run.config = dataclasses.replace(config, epochs=config.epochs + 1) if training_pass else config
    finish_training(run, stage=stage, keep=Keep(info={}, score=NO_VALIDATION, select_by=LAST), live_dir=live_dir,
                    name="JTT identification", journal_at=out)
    train = run.train
    if training_pass:
        predicted = recorder.predicted
    else:
        predicted = predict(run.model, train, config.eval_batch_size, device, "JTT error set (eval pass)")
    val_predicted = predict(run.model, run.val, config.eval_batch_size, device, "JTT validation errors")
    errors = {"train": error_set(predicted, train.labels), "val": error_set(val_predicted, run.val.labels)}
    groups = error_groups(errors, {"train": train.labels, "val": run.val.labels}, run.prepared.class_names,
                          f"JTT error set: the identification model's errors after {config.epochs} epoch(s) "
                          f"({config.error_set_pass} pass; validation: eval mode)")
    summary = {"identification_epochs": config.epochs, "error_set_pass": config.error_set_pass,
               "error_set_size": int(errors["train"].sum()), "error_set_fraction": float(errors["train"].mean()),
               "validation_errors": int(errors["val"].sum())}
    return groups, summary, run
