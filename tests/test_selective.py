"""Selective classification (masktune/eval/selective.py): the official score and threshold rule on
hand-computed cases, ties included, and the risk-coverage curve and its area."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from masktune.eval.selective import (
    aurc,
    coverage_threshold,
    evaluate_coverages,
    product_score,
    risk_coverage_curve,
    selective_error,
    softmax_response,
)


def test_product_score_equals_a_direct_torch_computation():
    generator = torch.Generator().manual_seed(0)
    erm, tuned = torch.randn(50, 10, generator=generator) * 4, torch.randn(50, 10, generator=generator) * 4
    direct = torch.softmax(torch.softmax(erm, dim=1) * torch.softmax(tuned, dim=1), dim=1)
    prediction, confidence = product_score(erm.numpy(), tuned.numpy())
    np.testing.assert_allclose(confidence, direct.max(dim=1).values.numpy(), rtol=1e-6)
    assert np.array_equal(prediction, direct.argmax(dim=1).numpy())
    # a product of probabilities is at most 1, so its softmax is flat: confidences sit near 1 / classes
    assert confidence.max() < np.e / (np.e + 9)
    prediction, confidence = softmax_response(erm.numpy())
    np.testing.assert_allclose(confidence, torch.softmax(erm, dim=1).max(dim=1).values.numpy(), rtol=1e-6)


def test_threshold_is_the_official_rank_with_pythons_rounding():
    val = np.array([0.6, 0.9, 0.8, 0.7, 0.8])          # sorted descending: 0.9 0.8 0.8 0.7 0.6
    assert coverage_threshold(val, 80) == 0.6           # round(4.0) = 4
    assert coverage_threshold(val, 50) == 0.8           # round(2.5) = 2 (halves to even)
    assert coverage_threshold(val, 30) == 0.8           # round(1.5) = 2
    assert coverage_threshold(val, 10) == 0.9           # round(0.5) = 0
    assert coverage_threshold(val, 100) == 0.6          # round(5) = 5, clamped to the last
    with pytest.raises(ValueError):
        coverage_threshold(np.array([]), 90)


def test_ties_at_the_threshold_are_all_accepted():
    confidence = np.array([0.8, 0.8, 0.75, 0.6, 0.9])
    correct = np.array([True, False, True, True, True])
    assert selective_error(confidence, correct, 0.8) == pytest.approx((3 / 5, 1 / 3))
    assert np.isnan(selective_error(confidence, correct, 0.95)[1])  # nothing accepted
    results = evaluate_coverages(np.array([0.6, 0.9, 0.8, 0.7, 0.8]), confidence, correct, (50, 100))
    assert [(r.threshold, r.coverage) for r in results] == [(0.8, 0.6), (0.6, 1.0)]
    assert results[1].error == pytest.approx(1 / 5)


def test_risk_coverage_curve_and_its_area_by_hand():
    confidence = np.array([0.9, 0.8, 0.8, 0.5])
    correct = np.array([True, False, True, False])
    coverage, risk = risk_coverage_curve(confidence, correct)
    np.testing.assert_allclose(coverage, [0.25, 0.75, 1.0])  # the two 0.8s enter together
    np.testing.assert_allclose(risk, [0.0, 1 / 3, 0.5])
    assert aurc(confidence, correct) == pytest.approx(0.25 * 0 + 0.5 * (1 / 3) + 0.25 * 0.5)
    # without ties, AURC is the mean over k of the error rate of the k most confident inputs
    rng = np.random.default_rng(0)
    confidence, correct = rng.random(200), rng.random(200) < 0.8
    order = np.argsort(-confidence)
    expected = np.mean(np.cumsum(~correct[order]) / np.arange(1, 201))
    assert aurc(confidence, correct) == pytest.approx(expected)
