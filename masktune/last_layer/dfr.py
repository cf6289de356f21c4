"""DFR, Deep Feature Reweighting (Kirichenko, Izmailov, Wilson, ICLR 2023), as a last-layer trainer of any
groups file: keep the ERM model's features, retrain its last layer on the validation set, balanced over the
groups and tuned on them. ExMap's last step (with its pseudo-groups), and the two reference points of
ExMap's paper: DFR with class labels only and DFR with the true validation groups (the supervised
reference); any other groups file works the same way (ClusterFix's clusters, JTT's error set). Stage
`last_layer@<name>`.

Followed as ExMap's own DFR, `src/run_dfr.py` of rwchakra/exmap (file and line of each detail):
- embeddings: the penultimate layer of the best-validation-accuracy ERM checkpoint (`model.fc =
  Identity`, L340-372), of the validation set, in order, eval transform;
- L1 logistic regression, liblinear, no class weights, C in [1, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01]
  (L23-24, L119; `penalty="l1"` is `l1_ratio=1` since scikit-learn 1.8);
- C tuning (`dfr_on_validation_tune`, L81-132): 5 random half-splits of the validation set; fit on a
  group-balanced subsample of the second half, standardised by a scaler fit on that subsample, score
  the worst group accuracy on the first half; C maximises the sum over splits (first C on ties). The
  groups are the groups file's: C is selected by the worst of the method's own groups (✓ only with the
  true groups);
- group balance (L99-104, L144-154): every group contributes min_g of its examples, min_g being the
  size of the smallest group with more than 5 examples; smaller groups contribute all of theirs
  (where no group has more than 5, the official code stops; here min_g is then the smallest group's
  size, the original DFR's rule);
- final model (`dfr_on_validation_eval`, L135-185): scaler fit on the whole validation set, 20
  balanced subsamples of it (redrawn when a class is missing, L143-161), one fit each with the chosen
  C, coefficients and intercepts averaged into one linear model.
The official script repeats the final refit 5 times to print a spread; here the spread is over seeds.
Its random draws use numpy's global generator; here one seeded `Generator` (`dfr.seed`).

The linear model is folded into the network (scaler included) as its new classifier, so `evaluate`
reads a DFR model like any other checkpoint.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masktune.config.fields import SEED, WORKERS, Int, NumberList
from masktune.config.params import param
from masktune.data.splits import Split
from masktune.errors import UserError
from masktune.groups import Groups
from masktune.last_layer import LastLayerPairConfig
from masktune.methods import Spec
from masktune.models.checkpoint import load_checkpoint, save_checkpoint, trained_as
from masktune.models.predict import penultimate_features
from masktune.selection import ORACLE, group_labels_used

OFFICIAL_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)  # run_dfr.py L23
MISSING_CLASS_RETRIES = 20                                # run_dfr.py L143


@dataclass(frozen=True, kw_only=True)
class DfrConfig(LastLayerPairConfig):
    """DFR on a (groups, dfr) pair of `methods.last_layer`: the last layer of the best ERM model retrained on the
    validation set, balanced over the pair's groups."""
    eval_batch_size: int = param("eval_batch_size", Int(1, recipe=True))
    c_grid: tuple[float, ...] = param("dfr.c_grid", NumberList())
    tune_splits: int = param("dfr.tune_splits", Int(1))
    refits: int = param("dfr.refits", Int(1))
    held_out_folds: int = param("dfr.held_out_folds", Int(0))
    seed: int = param("dfr.seed", SEED)
    workers: int = param("dfr.workers", WORKERS)


SPEC = Spec(name="dfr", role="last_layer", family="last_layer", title="DFR", configs={"last_layer": DfrConfig},
            paper_pairs={"classes": "DFR, class labels as groups",
                         "true_groups": "DFR, true validation groups (supervised reference)",
                         "exmap_global": "G-ExMap + DFR", "exmap_local": "L-ExMap + DFR"})


def balanced_rows(groups: np.ndarray, rng: np.random.Generator, min_members: int = 5) -> np.ndarray:
    """Rows of a group-balanced subsample (ExMap's rule, run_dfr.py L99-104): min_g random rows of each
    group, min_g the size of the smallest group with more than `min_members` rows; a group with fewer
    rows than min_g contributes all of them. Group ids need not be contiguous (an absent id contributes
    nothing). When no group has more than `min_members` rows (a small validation set cut into many
    pseudo-groups, where the official code stops with an error), min_g is the smallest group's size,
    the original DFR's rule (dfr_evaluate_spurious.py L83)."""
    groups = np.asarray(groups)
    members = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    sizes = [len(m) for m in members if len(m) > min_members] or [len(m) for m in members if len(m)]
    min_g = min(sizes)
    return np.concatenate([rng.permutation(m)[:min_g] for m in members])


def _fit_logistic_regression(x: np.ndarray, y: np.ndarray, c: float, seed: int):
    """The official L1 logistic regression (liblinear) fitted on (x, y); one-vs-rest over more than two
    classes, which is what liblinear did before scikit-learn 1.8 stopped accepting them (the official
    code is binary only)."""
    from sklearn.linear_model import LogisticRegression  # ~1 s: only where a DFR is fitted
    from sklearn.multiclass import OneVsRestClassifier

    model = LogisticRegression(l1_ratio=1.0, C=c, solver="liblinear", random_state=seed)
    return (model if len(np.unique(y)) <= 2 else OneVsRestClassifier(model)).fit(x, y)


def _coefficients(model) -> tuple[np.ndarray, np.ndarray]:
    """(coef (1 or K, D), intercept) of a fitted `_fit_logistic_regression` model."""
    if hasattr(model, "estimators_"):
        return (np.vstack([e.coef_ for e in model.estimators_]),
                np.concatenate([e.intercept_ for e in model.estimators_]))
    return model.coef_, model.intercept_


def _standardiser(x: np.ndarray):
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(x)


def worst_group_score(correct: np.ndarray, groups: np.ndarray) -> float:
    """The lowest accuracy over the groups present (official L122-125)."""
    return float(min(correct[groups == g].mean() for g in np.unique(groups)))


def tune_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c_grid: Sequence[float], splits: int,
           rng: np.random.Generator, seed: int, min_members: int = 5,
           score_groups: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[float, dict[float, float]]]:
    """Per scoring (`score_groups`: name -> the groups whose worst accuracy scores a C; default: the
    balancing `groups`, ExMap's rule), the C of the grid with the best summed worst-group accuracy over
    `splits` random half-splits (fit on a subsample of one half balanced over `groups`, score on the
    other; first C of the grid on ties), and every C's mean score. The fits are shared by the scorings."""
    score_groups = score_groups or {"groups": groups}
    totals = {name: dict.fromkeys(c_grid, 0.0) for name in score_groups}
    for _ in range(splits):
        order = rng.permutation(len(x))
        held_out, fit_half = order[:len(x) // 2], order[len(x) // 2:]
        rows = fit_half[balanced_rows(groups[fit_half], rng, min_members)]
        scaler = _standardiser(x[rows])
        x_fit, x_held = scaler.transform(x[rows]), scaler.transform(x[held_out])
        for c in c_grid:
            model = _fit_logistic_regression(x_fit, y[rows], c, seed)
            correct = model.predict(x_held) == y[held_out]
            for name, scoring in score_groups.items():
                totals[name][c] += worst_group_score(correct, scoring[held_out])
    return {name: (max(c_grid, key=lambda c: (total[c], -list(c_grid).index(c))),
                   {c: value / splits for c, value in total.items()}) for name, total in totals.items()}


@dataclass(frozen=True)
class LinearHead:
    """The averaged logistic regression on standardised features: decision = coef . (x - mean) / scale
    + intercept, one row per class (two classes: one row, the score of class 1)."""
    coef: np.ndarray        # (1 or K, D)
    intercept: np.ndarray   # (1 or K,)
    mean: np.ndarray        # (D,)
    scale: np.ndarray       # (D,)
    classes: np.ndarray     # (K,)

    def decision(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict(self, x: np.ndarray) -> np.ndarray:
        scores = self.decision(x)
        if self.coef.shape[0] == 1:
            return self.classes[(scores[:, 0] > 0).astype(int)]
        return self.classes[scores.argmax(axis=1)]

    def logits_layer(self, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (K, D) and bias (K,) of a linear layer over the raw features whose argmax is
        `predict`: the scaler folded in; two classes as logits (0, score)."""
        weight = self.coef / self.scale
        bias = self.intercept - weight @ self.mean
        if self.coef.shape[0] == 1:
            weight = np.vstack([np.zeros_like(weight), weight])
            bias = np.concatenate([[0.0], bias])
        if len(self.classes) != num_classes:
            raise UserError(f"DFR: the validation set has classes {self.classes.tolist()}, the model {num_classes}")
        return torch.tensor(weight, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32)


def fit_final(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, refits: int, rng: np.random.Generator,
              seed: int, min_members: int = 5) -> LinearHead:
    """The official final model: scaler on all of x, `refits` fits on balanced subsamples (redrawn when a
    class is missing), coefficients and intercepts averaged."""
    scaler = _standardiser(x)
    x_std = scaler.transform(x)
    classes = np.unique(y)
    coefs, intercepts = [], []
    for _ in range(refits):
        for _ in range(MISSING_CLASS_RETRIES):
            rows = balanced_rows(groups, rng, min_members)
            if np.array_equal(np.unique(y[rows]), classes):
                break
        else:
            raise UserError(f"DFR: {MISSING_CLASS_RETRIES} balanced subsamples in a row missed a class")
        coef, intercept = _coefficients(_fit_logistic_regression(x_std[rows], y[rows], c, seed))
        coefs.append(coef)
        intercepts.append(intercept)
    return LinearHead(np.mean(coefs, axis=0), np.mean(intercepts, axis=0), scaler.mean_, scaler.scale_, classes)


def held_out_logits(x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, *, folds: int, refits: int,
                    seed: int, num_classes: int, min_members: int = 5) -> np.ndarray:
    """Cross-fitted validation logits (N, num_classes) of DFR's final model of C `c`: the validation rows cut
    into `folds` random folds, each fold's logits from the final model (`fit_final`, balanced over `groups`)
    fitted on the other folds. DFR's own model is fitted on the whole validation set, so its validation
    predictions are training predictions; these are what a label-free choice across models compares with
    the other models' validation predictions (masktune/eval/choice.py). Not in DFR's paper."""
    rng = np.random.default_rng([seed, folds])
    fold_of = np.empty(len(x), dtype=np.int64)
    fold_of[rng.permutation(len(x))] = np.arange(len(x)) % folds
    logits = np.zeros((len(x), num_classes), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Liblinear failed to converge")
        for fold in range(folds):
            fit, held = fold_of != fold, fold_of == fold
            head = fit_final(x[fit], y[fit], groups[fit], c, refits, rng, seed, min_members)
            weight, bias = head.logits_layer(num_classes)
            logits[held] = x[held] @ weight.numpy().T + bias.numpy()
    return logits


def fit_dfr(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, c_grid: Sequence[float], tune_splits: int,
            refits: int, seed: int, min_members: int = 5,
            score_groups: Mapping[str, np.ndarray] | None = None) -> dict[str, tuple[LinearHead, dict]]:
    """DFR on embeddings x (N, D) with labels y, balanced over `groups`: C tuned by each scoring of
    `score_groups` (default {"groups": groups}, ExMap's rule), then the final model of each C; per
    scoring, (head, summary). Every scoring starts its final refits from the same random state, so two
    that choose the same C give the same head."""
    if len(np.unique(y)) < 2:
        raise UserError("DFR: the validation set has a single class")
    rng = np.random.default_rng(seed)
    sizes = np.bincount(groups)
    fitted, heads = {}, {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Liblinear failed to converge")
        tuned = tune_c(x, y, groups, c_grid, tune_splits, rng, seed, min_members, score_groups)
        state = rng.bit_generator.state
        for name, (c, scores) in tuned.items():
            if c not in heads:
                rng.bit_generator.state = state
                heads[c] = fit_final(x, y, groups, c, refits, rng, seed, min_members)
            fitted[name] = (heads[c], {"c": c, "tuning_worst_group_accuracy": {str(k): v for k, v in scores.items()},
                                       "groups": int((sizes > 0).sum()),
                                       "group_sizes": [int(n) for n in sizes if n > 0],
                                       "nonzero_features": int((np.abs(heads[c].coef) > 0).any(axis=0).sum())})
    return fitted


def install_head(model: nn.Module, head: LinearHead, num_classes: int) -> nn.Module:
    """`model` with DFR's linear model as its classifier (the network's own last layer, new weights)."""
    weight, bias = head.logits_layer(num_classes)
    with torch.no_grad():
        model.classifier.weight.copy_(weight.to(model.classifier.weight.device))
        model.classifier.bias.copy_(bias.to(model.classifier.bias.device))
    return model


def retrain_last_layer(model_path: str | Path, val: Split, groups: np.ndarray, config, device: torch.device,
                       outputs: Mapping[str | Path, tuple[np.ndarray, Mapping]]) -> dict[str, dict]:
    """DFR balanced over `groups` (one id per validation row: the groups file's): for each output path,
    (the groups whose worst accuracy selects C, what its checkpoint records), the ERM checkpoint at
    `model_path` with the averaged logistic regression of that C as its classifier; the first output (the
    pair's model) also records its cross-fitted validation logits (`held_out_logits`, `config.held_out_folds`
    folds; none below 2). Returns each output's DFR summary (C chosen, group sizes). `config`: a last-layer
    stage's config (`dfr.*`)."""
    model, state = load_checkpoint(model_path, device)
    features = penultimate_features(model, val, config.eval_batch_size, device, "DFR: validation embeddings")
    groups = np.asarray(groups, dtype=np.int64)
    fitted = fit_dfr(features, val.labels, groups, c_grid=config.c_grid, tune_splits=config.tune_splits,
                     refits=config.refits, seed=config.seed,
                     score_groups={str(out): scoring for out, (scoring, _) in outputs.items()})
    for index, (out, (_, info)) in enumerate(outputs.items()):
        head, report = fitted[str(out)]
        held_out = {}
        if index == 0 and config.held_out_folds > 1:  # the pair's own model (not the oracle's)
            held_out["held_out_val_logits"] = torch.from_numpy(held_out_logits(
                features, val.labels, groups, report["c"], folds=config.held_out_folds, refits=config.refits,
                seed=config.seed, num_classes=state["num_classes"]))
        install_head(model, head, state["num_classes"])
        save_checkpoint(out, model, None, arch=state["arch"], num_classes=state["num_classes"], epoch=state["epoch"],
                        val_accuracy=float("nan"), c=report["c"], fitted_on_val=True, **info, **held_out)
    return {str(out): fitted[str(out)][1] for out in outputs}


def train_pair(name: str, model_path: str | Path, val: Split, groups: Groups, config, device: torch.device,
               out: str | Path, oracle: str | Path) -> dict:
    """The last-layer pair `name`: DFR balanced over the groups file's validation groups, C chosen by the
    pair's `selection`, saved at `out` recording the pair and its group-label use; at `oracle` the model
    of the C the true groups' worst group picks (the selection gap, reported only). Returns the summary."""
    scoring = {"average": np.zeros_like(val.labels), "worst_class": val.labels, "worst_pseudo_group": groups.val,
               "worst_group": val.groups}
    pair = {"method": name, "groups": groups.inference, "trainer": config.trainer, "title": SPEC.pair_title(groups),
            **trained_as(f"last_layer@{name}", config)}
    outputs = {out: (scoring[config.selection], {**pair, "selection": config.selection, "group_labels": group_labels_used(
                   groups.uses_group_labels, config.selection).as_dict()}),
               oracle: (scoring[ORACLE], {**pair, "selection": ORACLE, "group_labels": group_labels_used(
                   groups.uses_group_labels, ORACLE).as_dict()})}
    report = retrain_last_layer(model_path, val, groups.val, config, device, outputs)
    return {"groups": groups.inference, "selection": config.selection,
            "group_labels": str(group_labels_used(groups.uses_group_labels, config.selection)),
            **report[str(out)], "oracle_c": report[str(oracle)]["c"]}
