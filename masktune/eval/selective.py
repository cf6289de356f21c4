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
every threshold of the test confidences. Beyond the paper too, the two-ERM control: the same product
score over the ERM model and a second ERM model of another seed. The product of two models is an
ensemble; the control asks whether MaskTune's fine-tuned model helps more than any second model would.

Everything here is numpy on per-input arrays (the logits of each model), so it is tested against hand
computations; `stages/selective.py` only loads the models and writes what `selective_report` returns.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from masktune.config.fields import WORKERS, Int, IntSet, MethodLists, NumberList
from masktune.config.params import param

OFFICIAL_COVERAGES = (80, 85, 90, 95, 100)  # percent: the paper's tables (bash_files/*.sh --coverage)


@dataclass(frozen=True, kw_only=True)
class SelectiveConfig:
    """Selective classification (stage `selective`): which models it scores (the masking methods' fine-tuned
    models, with ERM's; the two-ERM controls of `control_seed_offsets`), at which coverages."""
    eval_batch_size: int = param("eval_batch_size", Int(1, recipe=True))
    methods: MappingProxyType = param("methods", MethodLists())
    control_seed_offsets: tuple[int, ...] = param("selective.control_seed_offsets", IntSet(minimum=1))
    coverages: tuple[float, ...] = param("selective.coverages", NumberList(maximum=100))
    workers: int = param("evaluate.workers", WORKERS)


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
    return curve_area(*risk_coverage_curve(confidence, correct))


def curve_area(coverage: np.ndarray, risk: np.ndarray) -> float:
    """The AURC of an exact risk-coverage curve (`risk_coverage_curve`'s points)."""
    return float(np.sum(np.diff(np.r_[0.0, coverage]) * risk))


@dataclass(frozen=True)
class SelectiveScore:
    """One way to accept or reject: the softmax response of one model, or the official product score of
    two (`models`: the names of the models whose logits it reads, the first being ERM's)."""
    name: str
    title: str
    models: tuple[str, ...]
    role: str   # "baseline" | "official" | "control"

    def predict(self, logits: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, confidence) of every input from the logits of its models."""
        if len(self.models) == 1:
            return softmax_response(logits[self.models[0]])
        first, second = self.models
        return product_score(logits[first], logits[second])


ERM_MODEL = "erm"


def control_model_name(offset: int) -> str:
    """The name of the second ERM model of seed train_erm.seed + `offset` (stage `train_erm_control@<offset>`)."""
    return f"erm_control{offset}"


def control_checkpoint(models_dir: str | Path, offset: int) -> Path:
    """The best checkpoint of `train_erm_control@<offset>` (dvc.yaml's path)."""
    return Path(models_dir) / "control" / f"{control_model_name(offset)}_best.pt"


def selective_scores(fine_tuned: Sequence[tuple[str, str]], control_offsets: Sequence[int]) -> list[SelectiveScore]:
    """The scores the `selective` stage reports, in report order: ERM's softmax response; for each method
    that fine-tunes ERM (`fine_tuned`: (name, title)), the official product score with ERM and the
    fine-tuned model's own softmax response; for each control (seed offset), the second ERM's softmax
    response and the product score of the two ERM models."""
    scores = [SelectiveScore(ERM_MODEL, "ERM, softmax response", (ERM_MODEL,), "baseline")]
    for name, title in fine_tuned:
        scores.append(SelectiveScore(name, f"{title}: official score, softmax(p_ERM * p_{name})",
                                     (ERM_MODEL, name), "official"))
        scores.append(SelectiveScore(f"{name}_alone", f"{title} alone, softmax response", (name,), "baseline"))
    for offset in control_offsets:
        second = control_model_name(offset)
        scores.append(SelectiveScore(second, f"second ERM (seed + {offset}), softmax response", (second,), "control"))
        scores.append(SelectiveScore(f"two_erm_control{offset}", f"two ERMs (control): softmax(p_ERM * p_{second})",
                                     (ERM_MODEL, second), "control"))
    return scores


def curve_points(confidence: np.ndarray, correct: np.ndarray, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """About `points` points of the exact risk-coverage curve, spread evenly over the coverage (for a
    plot: the exact curve has one point per distinct confidence, thousands)."""
    return thin_curve(*risk_coverage_curve(confidence, correct), points)


def thin_curve(coverage: np.ndarray, risk: np.ndarray, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """`curve_points` of an exact curve already computed."""
    grid = np.linspace(0, 1, points + 1)[1:]
    pick = np.unique(np.minimum(np.searchsorted(coverage, grid - 1e-12), len(coverage) - 1))
    return coverage[pick], risk[pick]


def selective_report(score: SelectiveScore, val_logits: Mapping[str, np.ndarray],
                     test_logits: Mapping[str, Mapping[str, np.ndarray]], test_labels: Mapping[str, np.ndarray],
                     coverages: Sequence[float] = OFFICIAL_COVERAGES) -> dict:
    """One score on every test split: the official table (thresholds from the validation confidences),
    the AURC, the accuracy at full coverage, and the points of its risk-coverage curve."""
    _, val_confidence = score.predict(val_logits)
    report = {}
    for split, logits in test_logits.items():
        prediction, confidence = score.predict(logits)
        correct = prediction == np.asarray(test_labels[split])
        exact = risk_coverage_curve(confidence, correct)  # once: its area and the plotted points
        coverage, risk = thin_curve(*exact)
        report[split] = {
            "accuracy": float(correct.mean()),
            "aurc": curve_area(*exact),
            "targets": [vars(result) for result in evaluate_coverages(val_confidence, confidence, correct, coverages)],
            "curve": {"coverage": coverage.tolist(), "risk": risk.tolist()},
        }
    return report


def _percent(target: float) -> str:
    return f"{target:g}"


def selective_headline(reports: Mapping[str, Mapping]) -> dict:
    """{score: {split: {"aurc"}}}: the DVC metrics `dvc exp show` lists, one number per score and split (the
    errors and coverages at each target, the curves and thresholds stay in the details and table.md)."""
    return {name: {split: {"aurc": report["aurc"]} for split, report in splits.items()}
            for name, splits in reports.items()}


def selective_markdown(dataset: str, scores: Sequence[SelectiveScore], reports: Mapping[str, Mapping]) -> str:
    """Per test split, a score x target-coverage table of the selective error (realised coverage in
    parentheses), with the AURC."""
    lines = [f"# Selective classification on {dataset}", "",
             ("Selective error (%) at each target coverage, the threshold read from the validation confidences "
              "(the official rule); in parentheses the realised test coverage (%). AURC: area under the "
              "risk-coverage curve (x 100, lower is better)."), ""]
    for split in next(iter(reports.values())):
        targets = [t["target_coverage"] for t in reports[scores[0].name][split]["targets"]]
        lines += [f"## {split}", "", "| score | role | " + " | ".join(f"{_percent(t)}%" for t in targets) + " | AURC |",
                  "|---|---|" + "---|" * (len(targets) + 1)]
        for score in scores:
            report = reports[score.name][split]
            cells = [f"{100 * t['error']:.2f} ({100 * t['coverage']:.1f})" for t in report["targets"]]
            lines.append(f"| {score.title} | {score.role} | " + " | ".join(cells) + f" | {100 * report['aurc']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def write_curves(folder: str | Path, reports: Mapping[str, Mapping]) -> None:
    """risk_coverage.csv, `split, score, coverage, risk` rows: the risk-coverage lines `dvc plots show` draws
    (template .dvc/plots/risk_coverage.json: one line per score, one panel per test split); and its image
    twin risk_coverage.png, drawn without Vega (a machine without internet)."""
    from masktune.eval.figures import save_curves

    splits = list(dict.fromkeys(split for per_split in reports.values() for split in per_split))
    save_curves(Path(folder) / "risk_coverage.png",
                {split: {name: (per_split[split]["curve"]["coverage"], per_split[split]["curve"]["risk"])
                         for name, per_split in reports.items() if split in per_split} for split in splits},
                "risk-coverage curves (metrics/selective/)", "coverage", "selective risk")
    with open(Path(folder) / "risk_coverage.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["split", "score", "coverage", "risk"])
        for name, splits in reports.items():
            for split, report in splits.items():
                for coverage, risk in zip(report["curve"]["coverage"], report["curve"]["risk"]):
                    writer.writerow([split, name, f"{coverage:.6f}", f"{risk:.6f}"])
