"""The robust trainers' own pieces, on cases computed by hand: GroupDRO's online group weights and
group-balanced sampler against the official formulas (kohpangwei/group_DRO loss.py, dro_dataset.py),
upsampling's rows, and GroupDRO doing what it is for on a toy problem with a spurious feature."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.models.predict import predict
from masktune.precision import MixedPrecision
from masktune.robust_train.groupdro import GroupDRO
from masktune.robust_train.upsample import balanced_rows
from masktune.selection import worst_group_accuracy
from masktune.train.loop import make_optimizer, train_epoch

CPU = torch.device("cpu")
FLOAT32 = MixedPrecision("float32", CPU)


class _Logits(torch.nn.Module):
    """Returns its input as the logits: the loss of a batch is known in advance."""

    def forward(self, x):
        return x


def test_groupdro_updates_its_weights_by_the_official_exponentiated_gradient_step():
    # groups of the 6 training rows: 0, 0, 0, 1, 1, 2 (sizes 3, 2, 1)
    dro = GroupDRO(np.array([0, 0, 0, 1, 1, 2]), step_size=0.5, adjustment=1.0, reweight_groups=False)
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    targets = torch.tensor([0, 0, 1, 0])
    rows = np.array([0, 1, 3, 4])  # groups 0, 0, 1, 1; group 2 absent from the batch
    _, loss, logged = dro.batch_loss(_Logits(), None, logits, targets, rows, FLOAT32)
    per_sample = F.cross_entropy(logits, targets, reduction="none")
    group_loss = torch.stack([per_sample[:2].mean(), per_sample[2:].mean(), torch.tensor(0.0)])
    adjusted = group_loss + torch.tensor([1 / math.sqrt(3), 1 / math.sqrt(2), 1.0])  # C / sqrt(n_g), C = 1
    q = torch.full((3,), 1 / 3) * torch.exp(0.5 * adjusted)  # loss.py compute_robust_loss
    q = q / q.sum()
    assert dro.q.tolist() == pytest.approx(q.tolist(), rel=1e-6)
    assert loss.item() == pytest.approx(float(group_loss @ q), rel=1e-6)  # the weights after this batch's step
    assert logged["mean_loss"].item() == pytest.approx(per_sample.mean().item())
    # a second batch starts from these weights; the journal restores them
    state = dro.state_dict()
    dro.batch_loss(_Logits(), None, logits, targets, rows, FLOAT32)
    assert dro.q.tolist() != pytest.approx(q.tolist())
    dro.load_state_dict(state)
    assert dro.q.tolist() == pytest.approx(q.tolist(), rel=1e-6)


def test_groupdro_without_adjustment_weighs_the_group_losses_only():
    dro = GroupDRO(np.array([0, 1]), step_size=1.0, adjustment=0.0, reweight_groups=False)
    logits, targets = torch.tensor([[0.0, 0.0], [3.0, 0.0]]), torch.tensor([0, 1])
    dro.batch_loss(_Logits(), None, logits, targets, np.array([0, 1]), FLOAT32)
    losses = F.cross_entropy(logits, targets, reduction="none")
    expected = torch.softmax(losses, 0)  # uniform start x exp(1 * loss), normalised
    assert dro.q.tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_groupdro_ignores_groups_with_no_training_row():
    dro = GroupDRO(np.array([0, 2, 2]), step_size=0.1, adjustment=2.0, reweight_groups=False,
                   names=("a", "b", "c"))
    assert dro.names == ["a", "c"] and len(dro.q) == 2  # group "b" has no training row: no weight, no 1/0


def _split(n: int, groups: np.ndarray) -> PixelSplit:
    images = np.zeros((n, 1, 1, 3), dtype=np.uint8)
    return PixelSplit.from_samples(SampleSet(images=images, labels=np.zeros(n, int), attributes=groups,
                                             source_index=np.arange(n)))


def test_the_group_balanced_sampler_draws_each_group_equally_often_with_replacement():
    groups = np.array([0] * 90 + [1] * 9 + [2])  # sizes 90, 9, 1
    dro = GroupDRO(groups, step_size=0.01, adjustment=0.0, reweight_groups=True)
    drawn, generator = dro.epoch_data(_split(100, groups), torch.Generator().manual_seed(0))
    assert generator is None and len(drawn) == 100  # N rows, read in the order drawn
    rows = drawn.source_rows(np.arange(100))
    again = dro.epoch_data(_split(100, groups), torch.Generator().manual_seed(0))[0].source_rows(np.arange(100))
    assert rows.tolist() == again.tolist()  # seeded
    many = np.concatenate([dro.epoch_data(_split(100, groups), g)[0].source_rows(np.arange(100))
                           for g in [torch.Generator().manual_seed(s) for s in range(60)]])
    shares = np.bincount(groups[many], minlength=3) / len(many)
    assert shares == pytest.approx([1 / 3] * 3, abs=0.02)  # weight N / n_g: each group a third of the draws
    assert (np.bincount(many[groups[many] == 2]) > 0).sum() == 1 and len(many[groups[many] == 2]) > 1000
    plain, shuffled = GroupDRO(groups, 0.01, 0.0, reweight_groups=False).epoch_data(
        _split(100, groups), torch.Generator())
    assert isinstance(plain, PixelSplit) and shuffled is not None  # false: one shuffled pass, as ERM


def test_balanced_upsampling_repeats_each_group_to_its_class_largest():
    # class 0: groups 0 (4 rows) and 1 (1 row); class 1: groups 2 (2 rows) and 3 (2 rows)
    ids = np.array([0, 0, 1, 0, 0, 2, 3, 2, 3])
    rows = balanced_rows(ids, (0, 0, 1, 1))
    assert np.bincount(rows).tolist() == [1, 1, 4, 1, 1, 1, 1, 1, 1]
    assert rows.tolist() == [0, 1, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8]
    # round(n_c / n_g): 5 rows against 2 -> each listed round(2.5) = 2 times (Python's round: half to even)
    assert np.bincount(balanced_rows(np.array([0] * 5 + [1] * 2), (0, 0))).tolist() == [1] * 5 + [2, 2]


def _spurious_problem(n: int, seed: int, agree: float) -> tuple[PixelSplit, np.ndarray]:
    """Label y from a noisy core pixel; a second pixel equals y in `agree` of the rows (the shortcut).
    Groups: 2 * (spurious pixel) + y."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    spurious = np.where(rng.random(n) < agree, y, 1 - y)
    core = np.clip(np.where(y == 1, 170, 85) + rng.normal(0, 40, n), 0, 255)
    images = np.zeros((n, 1, 2, 3), dtype=np.uint8)
    images[:, 0, 0, :] = core[:, None].astype(np.uint8)
    images[:, 0, 1, :] = (spurious * 255)[:, None]
    return PixelSplit.from_samples(SampleSet(images=images, labels=y, attributes=spurious,
                                             source_index=np.arange(n))), 2 * spurious + y


def _train(objective_for, train: PixelSplit, groups: np.ndarray, epochs: int = 30) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
    optimizer = make_optimizer(model, 0.5, 0.9, 0.0)
    objective = objective_for(groups)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        train_epoch(model, optimizer, train, 64, generator, CPU, "toy", **({"objective": objective} if objective else {}))
    return model


def test_groupdro_lifts_the_worst_group_that_erm_leaves_behind():
    train, train_groups = _spurious_problem(2000, 0, agree=0.97)
    test, test_groups = _spurious_problem(2000, 1, agree=0.5)
    erm = _train(lambda g: None, train, train_groups)
    dro = _train(lambda g: GroupDRO(g, step_size=0.05, adjustment=0.0, reweight_groups=True), train, train_groups)
    worst = {name: worst_group_accuracy(test.labels, test_groups, predict(model, test, 512, CPU))
             for name, model in (("erm", erm), ("groupdro", dro))}
    assert worst["erm"] < 0.6 and worst["groupdro"] > 0.8, worst
