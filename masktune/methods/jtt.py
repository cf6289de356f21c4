"""JTT, Just Train Twice (Liu et al., ICML 2021; official code anniesch/jtt): train an identification
model by ERM for T epochs, take the training examples it misclassifies as the error set, then train
the final model by ERM again on the training set with the error set upsampled by λ_up.
No group labels for training; model selection by average validation accuracy by default (✗), or
by worst-group validation accuracy as the official analysis.py picks the epoch (✓,
`jtt.selection: worst_group`). Stages: `jtt_identify@<name>` (the error set) and
`jtt_retrain@<name>` (the final model).

Details of the official code that are followed (file and line of anniesch/jtt):
- the error set is `wrong_1_times = int(y_pred != y_true)` (process_training.py L33), where y_pred is
  the argmax logged during the *training pass* of epoch T (0-based, train.py L139-145, L254): T full
  epochs, then each batch predicted in train mode just before its own step. `jtt.error_set_pass:
  eval` predicts in eval mode after T epochs instead (an option, not the default);
- upsampling concatenates `Subset(train, error rows * up_weight)` to the training set (run_expt.py
  L88-101): each error example is seen λ_up + 1 times per epoch, N + λ_up |E| images; validation is
  not upsampled;
- no data augmentation in either model (`--augment_data` is off in every official command);
- the final model starts from ImageNet weights like ERM, SGD momentum 0.9, constant learning rate.
"""
from __future__ import annotations

import numpy as np

from masktune.methods.selection import SelectedOnValidation


def error_set(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """JTT's error set: True for each training example the identification model misclassifies."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    return predictions != labels


def upsampled_rows(errors: np.ndarray, upweight: int) -> np.ndarray:
    """Rows of JTT's upsampled training set, as the official run_expt.py builds it: every row once,
    then the error-set rows `upweight` more times (each error example is seen upweight + 1 times per
    epoch; one shuffled pass over these rows is an epoch). upweight 0: plain ERM."""
    if upweight < 0:
        raise ValueError(f"upweight must be >= 0, got {upweight}")
    errors = np.asarray(errors, dtype=bool)
    extra = np.tile(np.flatnonzero(errors), upweight)
    return np.concatenate([np.arange(len(errors)), extra]).astype(np.int64)


class JTT(SelectedOnValidation):
    name = "jtt"
    kind = "jtt"
    title = "JTT (Liu et al., 2021)"

