"""Selective classification, the MaskTune paper's second use: a classifier that may abstain, judged by
its error on the inputs it accepts at a given coverage.

Reference: aliasgharkhani/Masktune, src/methods/base_method.py, `test_selective_classification`:
- the score: p = softmax(ERM logits), q = softmax(fine-tuned logits), s = softmax(p * q) over the
  classes (a softmax of a product of probabilities, as written); prediction argmax s, confidence max s;
- the threshold of a target coverage c (percent): the validation confidences sorted in decreasing
  order (`torch.sort(..., descending=True)`), the one at index min(round(c / 100 * N_val), N_val - 1)
  (Python's `round`: halves to even);
- on test, the inputs whose confidence is >= the threshold are accepted; reported: the realised
  coverage (accepted / N_test) and the selective error (1 - accuracy on the accepted ones).
Baselines and the risk-coverage curve are beyond the official code: the softmax response (max softmax
probability) of one model, and the area under the risk-coverage curve (AURC, Geifman et al. 2019) over
every threshold of the test confidences.

Everything here is numpy on per-input arrays, so it is tested against hand computations.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OFFICIAL_COVERAGES = (80, 85, 90, 95, 100)  # percent: the paper's tables (bash_files/*.sh --coverage)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row maximum (no overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def softmax_response(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, confidence) of one model: the argmax and the max of its softmax."""
    p = softmax(logits)
    return p.argmax(axis=1), p.max(axis=1)


def product_score(first_logits: np.ndarray, second_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, confidence) of the official MaskTune score: softmax(softmax(a) * softmax(b))."""
    s = softmax(softmax(first_logits) * softmax(second_logits))
    return s.argmax(axis=1), s.max(axis=1)


def coverage_threshold(val_confidence: np.ndarray, target_coverage: float) -> float:
    """The official threshold for a target coverage in percent (module docstring)."""
    ordered = np.sort(np.asarray(val_confidence, dtype=np.float64))[::-1]
    if len(ordered) == 0:
        raise ValueError("no validation confidences to set a threshold from")
    index = round(target_coverage / 100 * len(ordered))
    return float(ordered[min(index, len(ordered) - 1)])


@dataclass(frozen=True)
class SelectiveResult:
    target_coverage: float   # percent
    threshold: float
    coverage: float          # fraction of the test inputs accepted
    error: float             # 1 - accuracy on the accepted ones (NaN when none is accepted)


def selective_error(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> tuple[float, float]:
    """(coverage, selective error) when the inputs with confidence >= threshold are accepted."""
    accepted = np.asarray(confidence) >= threshold
    correct = np.asarray(correct, dtype=bool)
    coverage = float(accepted.mean()) if len(accepted) else float("nan")
    error = float(1 - correct[accepted].mean()) if accepted.any() else float("nan")
    return coverage, error


def evaluate_coverages(val_confidence: np.ndarray, test_confidence: np.ndarray, test_correct: np.ndarray,
                       coverages: Sequence[float] = OFFICIAL_COVERAGES) -> list[SelectiveResult]:
    """The official table: for each target coverage, the validation threshold and the test coverage and
    selective error it gives."""
    results = []
    for target in coverages:
        threshold = coverage_threshold(val_confidence, target)
        coverage, error = selective_error(test_confidence, test_correct, threshold)
        results.append(SelectiveResult(float(target), threshold, coverage, error))
    return results


def risk_coverage_curve(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) at every distinct confidence, from the most confident input down: accepting the
    inputs with confidence >= each distinct value (ties enter together, as a threshold takes them)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    errors = ~np.asarray(correct, dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    confidence, errors = confidence[order], errors[order]
    cumulative = np.cumsum(errors)
    # the last position of each run of equal confidences: where a threshold at that value stops
    ends = np.flatnonzero(np.r_[confidence[1:] != confidence[:-1], True])
    accepted = ends + 1
    return accepted / len(confidence), cumulative[ends] / accepted


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve: the mean, over the curve's points weighted by the inputs each
    adds, of the risk there (Geifman et al. 2019's AURC; ties counted together). Lower is better."""
    coverage, risk = risk_coverage_curve(confidence, correct)
    added = np.diff(np.r_[0.0, coverage])
    return float(np.sum(added * risk))
