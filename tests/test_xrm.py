"""XRM's pieces (masktune/group_inference/xrm.py) on cases worked by hand against the official code
(facebookresearch/XRM: algorithms.py L97-138, main.py L31-55, utils.py L83-85, L170-213): the halves,
the label flips, the twins' loss, the objective and its journal state, the cross-mistake annotation, the
groups it gives and the flip-rate selection; then XRM on a toy problem with a spurious pixel, where the
twins' cross-mistakes are the minority."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit, ResampledSplit
from masktune.group_inference.xrm import (
    XRMTwins,
    annotate,
    class_balanced_loss,
    cross_mistake_annotation,
    final_flip_rate,
    flip_labels,
    flip_probability,
    flip_rate,
    held_in_logits,
    held_out_logits,
    is_degenerate,
    random_halves,
    select_by_flip_rate,
    twin_loss,
    xrm_groups,
)
from masktune.precision import MixedPrecision
from masktune.train.loop import make_optimizer, train_epoch

CPU = torch.device("cpu")
FLOAT32 = MixedPrecision("float32", CPU)
BIG = 50.0  # softmax([50, -50]) is exactly [1, 0] in float32: a certain prediction, flip probability 1


def _linear(weight) -> torch.nn.Linear:
    """A bias-free linear twin with the given (classes, inputs) weight: logits = x @ weight.T."""
    net = torch.nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return net


IDENTITY, SWAP = [[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]


def test_the_halves_are_a_seeded_fair_coin_per_row():
    halves = random_halves(10_000, 0)
    assert halves.dtype == np.int64 and set(np.unique(halves)) == {0, 1}
    assert abs(int((halves == 0).sum()) - 5_000) < 300  # Bernoulli(0.5) per row: sd 50
    assert random_halves(10_000, 0).tolist() == halves.tolist()  # a seed, or a generator seeded alike
    assert random_halves(10_000, torch.Generator().manual_seed(0)).tolist() == halves.tolist()
    assert random_halves(10_000, 1).tolist() != halves.tolist()
    # independent coins, not a split into equal halves: sizes vary with the seed
    sizes = {int((random_halves(101, seed) == 0).sum()) for seed in range(10)}
    assert len(sizes) > 1
    generator = torch.Generator().manual_seed(3)
    first, second = random_halves(50, generator), random_halves(50, generator)
    assert first.tolist() != second.tolist()  # a generator is advanced by its draws


def test_the_flip_probability_grows_from_0_at_a_uniform_to_1_at_a_certain_prediction():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [BIG, -BIG], [0.0, math.log(4)]])
    probability, predicted = flip_probability(logits)
    # (p - 1/K) K / (K - 1), K = 2: p = 0.5, 0.75, 1, 0.8 -> 0, 0.5, 1, 0.6
    assert probability.tolist() == pytest.approx([0.0, 0.5, 1.0, 0.6], abs=1e-6)
    assert predicted.tolist()[1:] == [0, 0, 1]
    # K = 3: p = 4/6 -> (2/3 - 1/3) * 3/2 = 0.5; p = 1/3 -> 0
    probability, predicted = flip_probability(torch.tensor([[0.0, math.log(4), 0.0], [1.0, 1.0, 1.0]]))
    assert probability.tolist() == pytest.approx([0.5, 0.0], abs=1e-6) and predicted[0].item() == 1


def test_a_row_takes_its_held_out_twins_confident_prediction_never_its_own_twins():
    # rows 0-2 train twin A (held out by B), rows 3-5 train twin B (held out by A)
    halves = np.array([0, 0, 0, 1, 1, 1])
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    u, one, zero = [0.0, 0.0], [-BIG, BIG], [BIG, -BIG]  # uniform, certain of class 1, certain of class 0
    # each twin is certain and wrong on every row it trains on: those predictions must play no part
    logits_a = torch.tensor([one, zero, one, zero, u, one])
    logits_b = torch.tensor([u, zero, one, zero, one, zero])
    assert held_out_logits(logits_a, logits_b, halves).tolist() == [u, zero, one, zero, u, one]
    assert held_in_logits(logits_a, logits_b, halves).tolist() == [one, zero, one, zero, one, zero]
    for seed in range(5):  # probabilities 0 or 1: the same whatever the draws
        new = flip_labels(logits_a, logits_b, halves, labels, seed)
        # row 0: B uniform, kept; row 1: B certain of 0, flipped; row 2: B certain of 1, flipped;
        # row 3: A certain of 0, flipped; row 4: A uniform, kept; row 5: A agrees with the label
        assert new.tolist() == [0, 0, 1, 0, 0, 1]
        assert new.dtype == torch.int64
    # a twin uniform on its held-out rows flips nothing, however certain it is on its own
    assert flip_labels(torch.tensor([one] * 3 + [u] * 3), torch.tensor([u] * 3 + [zero] * 3), halves, labels,
                       0).tolist() == labels.tolist()


def test_flips_overwrite_the_current_label_they_do_not_accumulate():
    original = torch.tensor([1, 1])
    flipped = flip_labels(torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[BIG, -BIG], [0.0, 0.0]]),
                          np.array([0, 0]), original, 0)
    assert flipped.tolist() == [0, 1] and flip_rate(flipped, original) == 0.5
    # the held-out twin now predicts the original class with certainty: the row flips back
    back = flip_labels(torch.tensor([[0.0, 0.0]] * 2), torch.tensor([[-BIG, BIG]] * 2), np.array([0, 0]), flipped, 0)
    assert back.tolist() == [1, 1] and flip_rate(back, original) == 0.0


def test_flips_happen_with_the_official_probability_one_draw_per_row():
    n = 20_000
    held_out = torch.tensor([[math.log(3), 0.0]]).repeat(n, 1)  # p = 0.75: flip probability 0.5, to class 0
    labels = torch.ones(n, dtype=torch.int64)
    new = flip_labels(torch.zeros(n, 2), held_out, np.zeros(n, dtype=np.int64), labels, 0)
    assert (new == 0).float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert new.tolist() == flip_labels(torch.zeros(n, 2), held_out, np.zeros(n, dtype=np.int64), labels, 0).tolist()
    assert new.tolist() != flip_labels(torch.zeros(n, 2), held_out, np.zeros(n, dtype=np.int64), labels, 1).tolist()


def _hand_batch():
    """4 rows, twin A the identity, twin B swaps the two logits; rows 0, 2 train A, rows 1, 3 train B."""
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 0.0]])
    halves, labels = np.array([0, 1, 0, 1]), torch.tensor([0, 1, 1, 0])
    # held-in logits: row 0 A [2, 0] (label 0), row 1 B [1, 0] (label 1), row 2 A [1, 1] (label 1),
    # row 3 B [0, 3] (label 0); cross-entropy log(sum exp) - logit of the label
    ce = [math.log1p(math.exp(-2)), math.log1p(math.e), math.log(2), math.log1p(math.exp(3))]
    expected = (ce[0] + ce[3]) / 2 + (ce[1] + ce[2]) / 2  # the sum over classes of each class's mean
    return x, halves, labels, expected


def test_the_twins_loss_is_the_class_balanced_loss_of_the_held_in_rows():
    x, halves, labels, expected = _hand_batch()
    a, b = _linear(IDENTITY), _linear(SWAP)
    loss = twin_loss(a(x), b(x), halves, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert class_balanced_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item() == pytest.approx(math.log(2))
    # each twin learns from its own rows only: all rows on A's side leave B without gradient
    loss = twin_loss(a(x), b(x), np.zeros(4, dtype=np.int64), labels)
    loss.backward()
    assert b.weight.grad is None or not b.weight.grad.any()
    assert a.weight.grad.abs().sum() > 0


def test_one_batch_of_the_objective_steps_on_the_twins_loss_then_flips_by_its_generator():
    x, halves, labels, expected = _hand_batch()
    a = _linear(IDENTITY)
    twins = XRMTwins(lambda: _linear(SWAP), np.array([0, 1, 1, 0, 1]), seed=0, halves=np.array([0, 1, 0, 1, 1]))
    assert twins.parameters() == list(twins.twin_b.parameters()) and twins.data_parallel is False
    rows = np.array([0, 1, 2, 3])
    draws = torch.Generator()
    draws.set_state(twins.generator.get_state())
    logits, loss, logged = twins.batch_loss(a, a, x, labels, rows, FLOAT32)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert logits.tolist() == held_in_logits(a(x), twins.twin_b(x), halves).tolist()
    flipped = flip_labels(a(x), twins.twin_b(x), halves, labels, draws)  # the same rule, the same draws
    assert twins.labels[:4].tolist() == flipped.tolist() and twins.labels[4].item() == 1  # row 4 not in the batch
    assert logged["flip_rate"].item() == pytest.approx((flipped != labels).float().mean().item())
    assert twins.flip_rate() == pytest.approx((flipped != labels).sum().item() / 5)
    loss.backward()  # one optimizer over both twins: both get gradients
    assert a.weight.grad.abs().sum() > 0 and twins.twin_b.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not the original labels"):
        twins.batch_loss(a, a, x, torch.tensor([1, 1, 1, 1]), rows, FLOAT32)


def test_the_objective_flips_held_out_rows_and_keeps_the_flip_rate_per_epoch():
    # A says class 0 for sure on [50, 0], B class 1; both uniform on [0, 0]
    x = torch.tensor([[BIG, 0.0], [BIG, 0.0], [0.0, 0.0]])
    twins = XRMTwins(lambda: _linear(SWAP), np.array([0, 1, 1]), seed=0, halves=np.array([0, 1, 0]))
    _, _, logged = twins.batch_loss(_linear(IDENTITY), None, x, torch.tensor([0, 1, 1]), np.arange(3), FLOAT32)
    # row 0 (held out by B) -> 1; row 1 (held out by A) -> 0; row 2 (uniform) kept
    assert twins.labels.tolist() == [1, 0, 1]
    assert logged["flip_rate"].item() == pytest.approx(2 / 3) and logged["relabelled"].item() == pytest.approx(2 / 3)
    # the next batch's loss reads the flipped labels: row 0's held-in twin A (certain of 0) now pays for 1
    loss = twins.batch_loss(_linear(IDENTITY), None, x[:1], torch.tensor([0]), np.array([0]), FLOAT32)[1]
    assert loss.item() == pytest.approx(BIG, rel=1e-5)
    twins.end_epoch(None, CPU)
    assert twins.history == [pytest.approx(2 / 3)]
    assert twins.summary() == {"flip_rate": round(2 / 3, 6), "flipped_labels": 2,
                               "flip_rate_per_epoch": [round(2 / 3, 6)], "half_sizes": [2, 1]}


def test_the_state_round_trip_resumes_the_same_flips():
    torch.manual_seed(0)
    n, x = 64, 2 * torch.randn(64, 3)
    labels = np.arange(n) % 3
    twins = XRMTwins(lambda: torch.nn.Linear(3, 3), labels, seed=3)
    a, rows, targets = torch.nn.Linear(3, 3), np.arange(n), torch.as_tensor(labels)
    twins.batch_loss(a, a, x, targets, rows, FLOAT32)
    twins.end_epoch(a, CPU)
    state = twins.state_dict()
    first = twins.batch_loss(a, a, x, targets, rows, FLOAT32)[1].item()
    after = twins.labels.clone()
    assert not torch.equal(after, state["labels"])  # the batch flipped more labels
    with torch.no_grad():
        twins.twin_b.weight.add_(1.0)
    twins.load_state_dict(state)
    assert twins.history == state["history"] and twins.labels.tolist() == state["labels"].tolist()
    assert twins.twin_b.weight.tolist() == state["twin_b"]["weight"].tolist()
    assert twins.batch_loss(a, a, x, targets, rows, FLOAT32)[1].item() == first
    assert twins.labels.tolist() == after.tolist()  # the generator resumed: the same draws, the same flips
    other = XRMTwins(lambda: torch.nn.Linear(3, 3), labels, seed=4)
    with pytest.raises(ValueError, match="halves differ"):
        other.load_state_dict(state)


def test_a_seed_fixes_the_halves_and_the_flips():
    torch.manual_seed(0)
    x, labels = torch.randn(32, 3), np.arange(32) % 3
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    runs = []
    for seed in (7, 7, 8):
        twins = XRMTwins(lambda: b, labels, seed=seed)
        twins.batch_loss(a, a, x, torch.as_tensor(labels), np.arange(32), FLOAT32)
        runs.append((twins.halves.tolist(), twins.labels.tolist()))
    assert runs[0] == runs[1] and runs[0][0] != runs[2][0]


def test_the_cross_mistake_rule_annotates_train_and_val_by_either_twins_mistake():
    labels = np.array([0, 1, 1, 0, 2])
    logits_a = np.array([[2.0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 2, 0], [0, 0, 2]])  # predicts 0, 0, 1, 1, 2
    logits_b = np.array([[2.0, 0, 0], [0, 2, 0], [2, 0, 0], [0, 0, 2], [0, 0, 2]])  # predicts 0, 1, 0, 2, 2
    # both right, A wrong, B wrong, both wrong, both right (algorithms.py L136-138, train and val alike)
    env = cross_mistake_annotation(logits_a, logits_b, labels)
    assert env.tolist() == [0, 1, 1, 1, 0] and env.dtype == np.int64
    assert cross_mistake_annotation(torch.tensor(logits_a), torch.tensor(logits_b), torch.tensor(labels)).tolist() \
        == env.tolist()
    # the non-official variant: the held-out twin's mistake only (rows 0, 2, 4 train A: held out by B)
    halves = np.array([0, 1, 0, 0, 1])
    assert cross_mistake_annotation(logits_a, logits_b, labels, halves, rule="held_out").tolist() == [0, 1, 1, 1, 0]
    assert cross_mistake_annotation(logits_a, logits_b, labels, np.array([1, 0, 1, 1, 0]),
                                    rule="held_out").tolist() == [0, 0, 0, 1, 0]
    with pytest.raises(ValueError, match="reads no halves"):
        cross_mistake_annotation(logits_a, logits_b, labels, halves)
    with pytest.raises(ValueError, match="needs the halves"):
        cross_mistake_annotation(logits_a, logits_b, labels, rule="held_out")


def test_xrm_groups_are_class_times_environment_the_mistakes_the_minority():
    envs = {"train": np.array([0, 1, 0, 1, 1, 0]), "val": np.array([1, 0, 0, 1])}
    labels = {"train": np.array([0, 0, 1, 1, 1, 0]), "val": np.array([0, 0, 1, 1])}
    groups = xrm_groups(envs, labels, ("land", "water"))
    assert groups.names == ("land_agree", "land_mistake", "water_agree", "water_mistake")
    assert groups.classes == (0, 0, 1, 1) and groups.minority == (1, 3)
    assert groups.train.tolist() == [0, 1, 2, 3, 3, 0] and groups.val.tolist() == [1, 0, 2, 3]
    assert (groups.inference, groups.uses_group_labels) == ("xrm", False)
    assert not is_degenerate(envs, labels)
    # class 1 of val all in one environment: the official run writes no file and scores 0
    assert is_degenerate({**envs, "val": np.array([1, 0, 0, 0])}, labels)
    with pytest.raises(ValueError, match="0 or 1"):
        xrm_groups({**envs, "val": np.array([2, 0, 0, 1])}, labels, ("land", "water"))


def test_the_run_of_the_highest_final_flip_rate_is_selected_at_its_last_epoch():
    histories = [[0.1, 0.5, 0.2], [0.05, 0.25], [0.4, 0.2, 0.25, 0.3]]
    assert final_flip_rate(histories[0]) == 0.2 and final_flip_rate(histories[0], degenerate=True) == 0.0
    assert select_by_flip_rate(histories) == (2, 3)  # run 0's peak (0.5) is the highest, but not its last
    assert select_by_flip_rate(histories, degenerate=[False, False, True]) == (1, 1)  # degenerate: 0
    assert select_by_flip_rate([[0.2], [0.2]]) == (0, 0)  # a tie: the first run


def test_class_balanced_epochs_draw_each_class_equally_often():
    labels = np.array([0] * 90 + [1] * 10)
    twins = XRMTwins(lambda: torch.nn.Linear(2, 2), labels, seed=0, class_balanced=True)
    split = _toy(100, 0, 0.9)[0]
    split.labels = labels
    drawn, generator = twins.epoch_data(split, torch.Generator().manual_seed(0))
    assert isinstance(drawn, ResampledSplit) and generator is None and len(drawn) == 100
    rows = np.concatenate([twins.epoch_data(split, torch.Generator().manual_seed(s))[0].source_rows(np.arange(100))
                           for s in range(30)])
    assert (labels[rows] == 1).mean() == pytest.approx(0.5, abs=0.03)


def _toy(n: int, seed: int, agree: float) -> tuple[PixelSplit, np.ndarray]:
    """Label y from a noisy core pixel; a second pixel equals y in `agree` of the rows (the shortcut).
    Returns the split and which rows disagree with the shortcut (the minority)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    spurious = np.where(rng.random(n) < agree, y, 1 - y)
    core = np.clip(np.where(y == 1, 170, 85) + rng.normal(0, 40, n), 0, 255)
    images = np.zeros((n, 1, 2, 3), dtype=np.uint8)
    images[:, 0, 0, :] = core[:, None].astype(np.uint8)
    images[:, 0, 1, :] = (spurious * 255)[:, None]
    split = PixelSplit.from_samples(SampleSet(images=images, labels=y, attributes=spurious, source_index=np.arange(n)))
    return split, spurious != y


def test_xrm_flips_the_minority_and_its_cross_mistakes_find_it():
    train, minority = _toy(600, 0, agree=0.9)
    val, val_minority = _toy(300, 1, agree=0.9)
    torch.manual_seed(0)

    def make_network():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))

    model = make_network()
    twins = XRMTwins(make_network, train.labels, seed=0)
    optimizer = make_optimizer([*model.parameters(), *twins.parameters()], 0.5, 0.9, 0.0)
    generator = torch.Generator().manual_seed(0)
    logged = [train_epoch(model, optimizer, train, 64, generator, CPU, "xrm", objective=twins)["flip_rate"]
              for _ in range(5)]
    assert logged == pytest.approx(twins.history)  # each row read once per epoch: the epoch's mean is exact
    assert twins.history[-1] == pytest.approx(minority.mean(), abs=0.03)  # the shortcut's exceptions flip
    assert ((twins.labels.numpy() != train.labels) == minority).mean() > 0.95
    envs = {"train": annotate(model, twins.twin_b, train, 256, CPU), "val": annotate(model, twins.twin_b, val, 256, CPU)}
    groups = xrm_groups(envs, {"train": train.labels, "val": val.labels}, ("zero", "one"))
    assert (np.isin(groups.train, groups.minority) == minority).mean() > 0.95
    assert (np.isin(groups.val, groups.minority) == val_minority).mean() > 0.95
