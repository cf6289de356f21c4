"""Selective classification (masktune/eval/selective.py): the official score and threshold rule on
hand-computed cases, ties included, the risk-coverage curve and its area, the scores the `selective`
stage reports and one score's report by hand. The stage end to end: tests/test_selective_e2e.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from masktune.eval.selective import (
    SelectiveScore,
    aurc,
    control_checkpoint,
    coverage_threshold,
    curve_points,
    evaluate_coverages,
    product_score,
    risk_coverage_curve,
    selective_error,
    selective_headline,
    selective_markdown,
    selective_report,
    selective_scores,
    softmax,
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


def test_the_scores_reported_and_the_models_each_reads():
    scores = selective_scores([("masktune", "MaskTune")], control_offsets=(7,))
    assert [(s.name, s.models, s.role) for s in scores] == [
        ("erm", ("erm",), "baseline"),
        ("masktune", ("erm", "masktune"), "official"),   # the official score: ERM's and the fine-tuned model's
        ("masktune_alone", ("masktune",), "baseline"),
        ("erm_control7", ("erm_control7",), "control"),
        ("two_erm_control7", ("erm", "erm_control7"), "control"),  # the same product over two ERM models
    ]
    assert control_checkpoint("models", 7) == Path("models/control/erm_control7_best.pt")  # dvc.yaml's outs
    logits = {"erm": np.array([[2.0, 0.0], [0.0, 1.0]]), "masktune": np.array([[0.0, 3.0], [0.0, 2.0]])}
    prediction, confidence = scores[1].predict(logits)
    p, q = softmax(logits["erm"]), softmax(logits["masktune"])
    direct = np.exp(p * q) / np.exp(p * q).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(confidence, direct.max(axis=1))
    assert list(prediction) == list(direct.argmax(axis=1))


def test_report_of_one_score_by_hand():
    """Validation confidences set the thresholds, test inputs at or above them are accepted (ties too)."""
    score = SelectiveScore("erm", "ERM", ("erm",), "baseline")
    # two classes; logit gaps give confidences sigmoid(gap): val gaps 4, 3, 2, 1 -> thresholds by rank
    val = {"erm": np.array([[4.0, 0.0], [3.0, 0.0], [2.0, 0.0], [1.0, 0.0]])}
    test = {"test": {"erm": np.array([[3.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.5, 0.0], [0.0, 4.0]])}}
    labels = {"test": np.array([0, 0, 0, 1, 1])}   # inputs 1 and 3 wrong; test gaps 3, 2, 2, 0.5, 4
    report = selective_report(score, val, test, labels, coverages=(50, 75, 100))["test"]
    # 50%: round(2) = 2 -> val gap 2; accepted gaps >= 2: inputs 0, 1, 2, 4 (1 wrong): coverage 4/5, error 1/4
    # 75%: round(3) = 3 -> gap 1: the same four; 100%: index 4 clamped to 3 -> gap 1 again
    assert [(t["target_coverage"], t["coverage"], t["error"]) for t in report["targets"]] == [
        (50.0, 0.8, 0.25), (75.0, 0.8, 0.25), (100.0, 0.8, 0.25)]
    assert report["accuracy"] == pytest.approx(3 / 5)
    # the curve by hand: gap 4 (right), 3 (right), the two 2s together (one wrong), 0.5 (wrong)
    assert report["curve"]["coverage"] == pytest.approx([0.2, 0.4, 0.8, 1.0])
    assert report["curve"]["risk"] == pytest.approx([0, 0, 0.25, 0.4])
    assert report["aurc"] == pytest.approx(0.2 * 0 + 0.2 * 0 + 0.4 * 0.25 + 0.2 * 0.4)
    headline = selective_headline({"erm": {"test": report}})
    assert headline == {"erm": {"test": {"aurc": report["aurc"]}}}  # the targets' figures: details, table.md
    table = selective_markdown("mnist", [score], {"erm": {"test": report}})
    assert "| ERM | baseline | 25.00 (80.0) | 25.00 (80.0) | 25.00 (80.0) | 18.000 |" in table


def test_plotted_curve_is_points_of_the_exact_curve_ending_at_full_coverage():
    rng = np.random.default_rng(1)
    confidence, correct = rng.random(5000).round(3), rng.random(5000) < 0.9   # many ties
    exact = dict(zip(*risk_coverage_curve(confidence, correct)))
    coverage, risk = curve_points(confidence, correct, points=100)
    assert 90 <= len(coverage) <= 100 and coverage[-1] == 1.0 and risk[-1] == pytest.approx(1 - correct.mean())
    assert all(exact[c] == r for c, r in zip(coverage, risk))
    assert np.all(np.diff(coverage) > 0)


def test_evaluates_logits_are_read_only_for_the_checkpoints_they_came_from(tmp_path):
    """`selective` reads `evaluate`'s logits instead of predicting again, but only a model whose
    checkpoint is the one they came from, with every split at its length: else it predicts it."""
    from masktune.eval.logits import read_logits, write_logits

    checkpoints = {name: tmp_path / f"{name}.pt" for name in ("erm", "masktune", "randmask")}
    for i, path in enumerate(checkpoints.values()):
        path.write_bytes(bytes([i]) * 100)
    rng = np.random.default_rng(0)
    logits = {name: {"val": rng.standard_normal((6, 2)).astype(np.float32),
                     "test": rng.standard_normal((4, 2)).astype(np.float32)} for name in ("erm", "masktune")}
    logits["randmask"] = {"val": logits["erm"]["val"]}  # a split missing
    write_logits(tmp_path / "logits.h5", logits, checkpoints)
    rows = {"val": 6, "test": 4}

    found = read_logits(tmp_path / "logits.h5", checkpoints, ("val", "test"), rows)
    assert list(found) == ["erm", "masktune"]
    for name in found:
        for split in rows:
            np.testing.assert_array_equal(found[name][split], logits[name][split])
    checkpoints["masktune"].write_bytes(b"retrained")  # a newer checkpoint than the logits'
    assert list(read_logits(tmp_path / "logits.h5", checkpoints, ("val", "test"), rows)) == ["erm"]
    assert read_logits(tmp_path / "logits.h5", checkpoints, ("val", "test"), {"val": 6, "test": 5}) == {}
