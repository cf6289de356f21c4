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

import numpy as np
import torch

from masktune.groups import Groups, make_groups
from masktune.train.loop import predict, train_epoch
from masktune.train.network import TrainingRun, start_training


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
                       minority=range(1, len(names), 2))


def identify(config, device: torch.device, data) -> tuple[Groups, dict, TrainingRun]:
    """Train the identification model (T = `config.epochs` epochs of ERM with JTT's recipe, from ERM's
    start, no augmentation), take its error set (training or eval pass) and its validation errors; the
    groups, a summary of the error set and the run (its data, for the report)."""
    run = start_training(config, device, data, train_view="eval")
    train, model = run.train, run.model
    for epoch in range(config.epochs):
        stats = train_epoch(model, run.optimizer, train, config.batch_size, run.generator, device,
                            desc=f"JTT identification epoch {epoch + 1}/{config.epochs}", amp=run.amp)
        print(f"JTT identification epoch {epoch + 1}/{config.epochs}: train loss {stats['loss']:.4f}, "
              f"train acc {stats['accuracy']:.4f}")
    if config.error_set_pass == "training":
        predicted = np.full(len(train), -1, dtype=np.int64)
        train_epoch(model, run.optimizer, train, config.batch_size, run.generator, device,
                    desc="JTT error set (training pass)", predictions=predicted, amp=run.amp)
    else:
        predicted = predict(model, train, config.eval_batch_size, device, "JTT error set (eval pass)")
    val_predicted = predict(model, run.val, config.eval_batch_size, device, "JTT validation errors")
    errors = {"train": error_set(predicted, train.labels), "val": error_set(val_predicted, run.val.labels)}
    groups = error_groups(errors, {"train": train.labels, "val": run.val.labels}, run.prepared.class_names,
                          f"JTT error set: the identification model's errors after {config.epochs} epoch(s) "
                          f"({config.error_set_pass} pass; validation: eval mode)")
    summary = {"identification_epochs": config.epochs, "error_set_pass": config.error_set_pass,
               "error_set_size": int(errors["train"].sum()), "error_set_fraction": float(errors["train"].mean()),
               "validation_errors": int(errors["val"].sum())}
    return groups, summary, run
