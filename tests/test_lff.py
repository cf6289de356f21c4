"""LfF's Colored MNIST, its MLP and the LfF objective against the official code (alinlab/LfF e66796e), on
cases computed by hand: the dataset's colour counts against the official `make_attr_labels` rule written out
as a loop, its colouring against the closed form, GCE and its gradient against the formula, the loss EMA
on a hand-worked sequence, the weights, and one LfF step against its hand computation."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.datasets.colored_mnist_lff import (
    COLOURS,
    OFFICIAL_RATIOS,
    SEVERITY_STD,
    aligned_share,
    assign_colours,
    build_colored_mnist_lff,
    colour_counts,
    group_names,
)
from masktune.errors import UserError
from masktune.models.mlp import LfFMLP
from masktune.precision import MixedPrecision
from masktune.robust_train.lff import (
    LfFObjective,
    LossEMA,
    biased_mistake_names,
    biased_mistakes,
    generalized_cross_entropy,
    relative_difficulty_weights,
)
from masktune.train.loop import make_optimizer, train_epoch

CPU = torch.device("cpu")
FLOAT32 = MixedPrecision("float32", CPU)


# ---------------------------------------------------------------------------------------------------------
# the dataset

def _official_colour_loop(labels: np.ndarray, aligned_ratio: float) -> np.ndarray:
    """make_dataset.py `make_attr_labels` (L17-50), restated as a plain loop: per class, the k-th image in
    file order gets the first colour j whose rounded milestone n_c * (cumulative share up to j) exceeds k."""
    classes = labels.max() + 1
    colours = np.zeros_like(labels)
    for cls in range(classes):
        n = int((labels == cls).sum())
        shares = [aligned_ratio if j == cls else (1 - aligned_ratio) / (classes - 1) for j in range(classes)]
        milestones = (n * np.cumsum(shares)).round()
        for k, row in enumerate(np.flatnonzero(labels == cls)):
            colours[row] = min(j for j in range(classes) if milestones[j] > k)
    return colours


@pytest.mark.parametrize("ratio", [*OFFICIAL_RATIOS, 0.1, 1.0])
def test_colours_are_given_out_as_the_official_make_attr_labels(ratio):
    labels = np.random.default_rng(3).integers(0, 10, 1237)
    assert assign_colours(labels, ratio).tolist() == _official_colour_loop(labels, ratio).tolist()


def test_shuffled_assignment_keeps_the_official_counts_at_other_positions():
    labels = np.random.default_rng(0).integers(0, 10, 3000)
    official = assign_colours(labels, 0.95)
    shuffled = assign_colours(labels, 0.95, "shuffled", np.random.default_rng(1))
    assert np.bincount(shuffled * 10 + labels, minlength=100).tolist() == \
        np.bincount(official * 10 + labels, minlength=100).tolist()
    assert (shuffled != official).any()


@pytest.mark.parametrize("ratio", OFFICIAL_RATIOS)
def test_every_class_has_the_aligned_share_and_the_rest_spread_evenly(digits, ratio):
    labels = digits["train"][1]
    colours = assign_colours(labels, ratio)
    for cls in range(10):
        n = int((labels == cls).sum())
        per_colour = np.bincount(colours[labels == cls], minlength=10)
        assert abs(per_colour[cls] / n - ratio) <= 1 / n  # within one image of the exact share
        others = np.delete(per_colour, cls)
        assert np.abs(others - (1 - ratio) / 9 * n).max() <= 1  # each other colour (1 - ratio) / 9, rounded


def test_colour_counts_refuse_shares_that_do_not_add_up():
    assert colour_counts([10, 10], 1.0).tolist() == [[10, 0], [0, 10]]
    with pytest.raises(ValueError):
        colour_counts([10, 10], 1.5)


@pytest.fixture(scope="module")
def built(digits):
    return build_colored_mnist_lff(digits, ratio=0.99, seed=0)


def test_splits_shapes_types_and_groups(built, digits):
    assert set(built) == {"train", "val", "test"}
    assert len(built["train"]) == len(digits["train"][1]) and len(built["test"]) == len(digits["test"][1])
    for samples in built.values():
        assert samples.images.dtype == np.uint8 and samples.images.shape == (len(samples), 28, 28, 3)
        assert samples.num_classes == 10 and samples.labels.dtype == np.int64
        assert samples.groups.tolist() == (samples.attributes * 10 + samples.labels).tolist()
    assert built["train"].labels.tolist() == digits["train"][1].tolist()  # file order, labels = digits
    assert built["train"].source_index.tolist() == list(range(len(built["train"])))
    assert aligned_share(built["train"]) == pytest.approx([0.99] * 10, abs=1e-3)
    names = group_names()
    assert len(names) == 100 and names[73] == "digit3_colour7" and names[0] == "digit0_colour0"


def test_the_test_split_is_unbiased_and_the_official_val_is_the_test_split(built):
    test = built["test"]
    for cls in range(10):
        n = int((test.labels == cls).sum())
        per_colour = np.bincount(test.attributes[test.labels == cls], minlength=10)
        assert np.abs(per_colour - n / 10).max() <= 1  # every colour a tenth of every class
    shares = np.bincount(test.groups, minlength=100).reshape(10, 10) / len(test)  # colour x digit
    independent = np.outer(shares.sum(1), shares.sum(0))
    assert np.abs(shares - independent).max() < 2e-3  # colour independent of the digit
    val = built["val"]
    assert np.array_equal(val.images, test.images) and val.groups.tolist() == test.groups.tolist()
    assert val.images is not test.images  # a copy


def test_only_the_strokes_are_coloured_with_the_official_noise(built, digits):
    images, grey, colours = built["train"].images[:6000], digits["train"][0][:6000], built["train"].attributes[:6000]
    assert not images[grey == 0].any()  # black background stays black
    rows = np.flatnonzero((grey == 255).any(axis=(1, 2)))[:2000]  # images with a full-intensity pixel
    full = (grey[rows] == 255)[..., None]
    colour = (images[rows] * full).sum(axis=(1, 2)) / full.sum(axis=(1, 2)) / 255  # trunc(255 c) / 255
    offset = colour - COLOURS[colours[rows]]
    std = SEVERITY_STD[4]
    assert np.abs(offset).max() < 6 * std + 1 / 255  # each image's colour: its mean colour + N(0, 0.005^2)
    assert 0.8 * std < offset.std(0).min() and offset.std(0).max() < 1.3 * std
    # every stroke pixel is that colour times the grey value (truncated)
    expected = grey[rows][..., None] * colour[:, None, None, :]
    assert np.abs(images[rows] - expected).max() <= 2


def test_without_noise_the_images_are_the_closed_form(digits):
    splits = build_colored_mnist_lff(digits, ratio=0.95, colour_std=0.0, seed=0, train_limit=500, test_limit=100)
    for name, split in (("train", "train"), ("test", "test")):
        grey = digits[split][0][:len(splits[name])].astype(np.float32)
        expected = (grey[..., None] * COLOURS[splits[name].attributes][:, None, None, :]).astype(np.uint8)
        assert np.array_equal(splits[name].images, expected)


def test_the_seed_draws_the_noise_not_the_official_colours(digits):
    one = build_colored_mnist_lff(digits, ratio=0.98, seed=1, train_limit=2000, test_limit=300)
    again = build_colored_mnist_lff(digits, ratio=0.98, seed=1, train_limit=2000, test_limit=300)
    other = build_colored_mnist_lff(digits, ratio=0.98, seed=2, train_limit=2000, test_limit=300)
    for name in one:
        assert np.array_equal(one[name].images, again[name].images)
        assert one[name].attributes.tolist() == other[name].attributes.tolist()
    assert not np.array_equal(one["train"].images, other["train"].images)
    # the test split does not depend on how much of the training file is used
    shorter = build_colored_mnist_lff(digits, ratio=0.98, seed=1, train_limit=1000, test_limit=300)
    assert np.array_equal(shorter["test"].images, one["test"].images)


def test_a_held_out_validation_split_keeps_the_training_bias(digits):
    splits = build_colored_mnist_lff(digits, ratio=0.95, seed=0, val_source="train", val_size=2000,
                                     train_limit=10_000, test_limit=100)
    train, val = splits["train"], splits["val"]
    assert len(train) == 8000 and len(val) == 2000
    rows = np.concatenate([train.source_index, val.source_index])
    assert sorted(rows.tolist()) == list(range(10_000))
    assert (val.attributes == val.labels).mean() == pytest.approx(0.95, abs=0.02)
    with pytest.raises(UserError):
        build_colored_mnist_lff(digits, ratio=0.95, seed=0, val_source="train", val_size=0, train_limit=100)
    with pytest.raises(UserError):
        build_colored_mnist_lff(digits, ratio=95, seed=0)


# ---------------------------------------------------------------------------------------------------------
# the MLP

def test_the_mlp_has_the_official_layers_and_the_model_protocol():
    torch.manual_seed(0)
    model = LfFMLP(10)
    assert list(model.state_dict()) == ["feature.0.weight", "feature.0.bias", "feature.2.weight", "feature.2.bias",
                                        "feature.4.weight", "feature.4.bias", "classifier.weight", "classifier.bias"]
    assert [tuple(model.state_dict()[f"feature.{i}.weight"].shape) for i in (0, 2, 4)] == [(100, 2352), (100, 100),
                                                                                          (100, 100)]
    assert isinstance(model.classifier, nn.Linear) and tuple(model.classifier.weight.shape) == (10, 100)
    x = torch.rand(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    features = model.features(x)
    assert features.shape == (4, 100) and (features >= 0).all()  # after the last ReLU
    torch.testing.assert_close(model(x), model.classifier(features), rtol=0, atol=0)
    # the official x.view(B, -1) / 255, in (channel, row, column) order even for channels-last batches
    by_hand = model.feature(x.reshape(4, -1) / 255)
    torch.testing.assert_close(model.features(x.contiguous(memory_format=torch.channels_last)), by_hand)
    unscaled = LfFMLP(10, official_input_scale=False)
    unscaled.load_state_dict(model.state_dict())
    torch.testing.assert_close(unscaled.features(x), model.feature(x.reshape(4, -1)))


def test_the_mlp_refuses_grad_cam_and_other_image_sizes():
    model = LfFMLP(10)
    with pytest.raises(NotImplementedError, match="XGradCAM"):
        model.grad_cam_target_layer()
    with pytest.raises(UserError, match="XGradCAM"):  # one line from run_stage, not a traceback
        model.grad_cam_target_layer()
    with pytest.raises(UserError, match="28 x 28"):
        model(torch.zeros(2, 3, 32, 32))


# ---------------------------------------------------------------------------------------------------------
# GCE, the loss EMA, the weights

@pytest.mark.parametrize("q", [0.3, 0.7, 1.0])
def test_gce_is_the_official_detached_q_times_p_to_the_q_weighted_cross_entropy(q):
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 0.0], [1.0, 1.0, 1.0]], requires_grad=True)
    targets = torch.tensor([0, 2, 0, 1])
    losses = generalized_cross_entropy(logits, targets, q)
    p = torch.softmax(logits.detach().double(), 1)
    p_y = p[torch.arange(4), targets]
    assert losses.shape == (4,)
    torch.testing.assert_close(losses.double(), -torch.log(p_y) * q * p_y ** q, rtol=1e-6, atol=1e-7)
    # the gradient: p_y^q is a constant (detached), so d/dz = q * p_y^q * (softmax - onehot)
    losses.mean().backward()
    onehot = F.one_hot(targets, 3).double()
    expected = (q * p_y ** q)[:, None] * (p - onehot) / 4
    torch.testing.assert_close(logits.grad.double(), expected, rtol=1e-5, atol=1e-7)
    # which is q times the gradient of Zhang & Sabuncu's GCE, (1 - p_y^q) / q
    z = logits.detach().clone().requires_grad_(True)
    p_true = torch.softmax(z, 1)[torch.arange(4), targets]
    ((1 - p_true ** q) / q).mean().backward()
    torch.testing.assert_close(logits.grad, q * z.grad, rtol=1e-5, atol=1e-7)


def test_the_loss_ema_on_a_hand_worked_sequence():
    ema = LossEMA(np.array([0, 0, 1, 1]), alpha=0.7)
    ema.update(torch.tensor([2.0, 4.0]), np.array([0, 2]))  # first updates: the losses themselves
    assert ema.parameter.tolist() == [2.0, 0.0, 4.0, 0.0]
    ema.update(torch.tensor([1.0, 3.0]), np.array([0, 1]))  # row 0: 0.7 * 2 + 0.3 * 1; row 1: first, 3
    assert ema.parameter.tolist() == pytest.approx([1.7, 3.0, 4.0, 0.0])
    ema.update(torch.tensor([0.0]), np.array([2]))  # row 2: 0.7 * 4
    assert ema.parameter.tolist() == pytest.approx([1.7, 3.0, 2.8, 0.0])
    assert ema.class_max().tolist() == pytest.approx([3.0, 2.8])  # over all rows of the class, 0 if unseen
    assert ema.normalised(np.array([0, 1, 2, 3])).tolist() == pytest.approx([1.7 / 3, 1.0, 1.0, 0.0])
    assert ema.normalised(np.array([0])).tolist() == pytest.approx([1.7 / 3])  # the class's max, not the batch's
    state = ema.state_dict()
    ema.update(torch.tensor([9.0]), np.array([3]))
    assert state["parameter"].tolist() == pytest.approx([1.7, 3.0, 2.8, 0.0])  # a copy
    ema.load_state_dict(state)
    assert ema.parameter.tolist() == pytest.approx([1.7, 3.0, 2.8, 0.0]) and ema.updated.tolist() == [1, 1, 1, 0]
    zero = LossEMA(np.array([0, 0]))
    zero.update(torch.zeros(2), np.array([0, 1]))
    assert zero.normalised(np.array([0, 1])).tolist() == [0.0, 0.0]  # 0 / 0: 0, not NaN


def test_relative_difficulty_weights_by_hand():
    b, d = torch.tensor([0.5, 1.0, 0.0, 0.0]), torch.tensor([0.5, 0.25, 1.0, 0.0])
    weights = relative_difficulty_weights(b, d)
    assert weights.tolist() == pytest.approx([0.5 / (1 + 1e-8), 1 / (1.25 + 1e-8), 0.0, 0.0], rel=1e-7)


# ---------------------------------------------------------------------------------------------------------
# the objective

def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 3))


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 1, 2, 3, generator=g), torch.tensor([0, 1, 2, 0, 1])


def test_one_lff_step_is_the_hand_computation():
    torch.manual_seed(0)
    model = _linear()
    train_labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])  # 8 training rows
    objective = LfFObjective(_linear, train_labels, q=0.7, ema_alpha=0.7)
    inputs, targets = _batch()
    rows = np.array([6, 1, 2, 0, 4])
    assert train_labels[rows].tolist() == targets.tolist()
    logits, loss, logged = objective.batch_loss(model, model, inputs, targets, rows, FLOAT32)
    with torch.no_grad():
        z_b, z_d = objective.biased(inputs), model(inputs)
    ce_b = F.cross_entropy(z_b, targets, reduction="none")
    ce_d = F.cross_entropy(z_d, targets, reduction="none")
    # first EMA update: the losses; class max over the training rows (unseen rows 0): this batch's, per class
    max_b = torch.stack([ce_b[targets == c].max() for c in range(3)])[targets]
    max_d = torch.stack([ce_d[targets == c].max() for c in range(3)])[targets]
    w = (ce_b / max_b) / (ce_b / max_b + ce_d / max_d + 1e-8)
    p_b = torch.softmax(z_b, 1)[torch.arange(5), targets]
    expected = (ce_b * 0.7 * p_b ** 0.7).mean() + (ce_d * w).mean()
    torch.testing.assert_close(logits, z_d)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logged["mean_weight"], w.mean())
    torch.testing.assert_close(logged["gce_loss"], (ce_b * 0.7 * p_b ** 0.7).mean())
    # gradients: the biased network from its GCE only, the model from its weighted CE only (w is a constant)
    loss.backward()
    z_b2 = objective.biased(inputs)
    p2 = torch.softmax(z_b2, 1)[torch.arange(5), targets].detach()
    grad_b = torch.autograd.grad((F.cross_entropy(z_b2, targets, reduction="none") * 0.7 * p2 ** 0.7).mean(),
                                 list(objective.biased.parameters()))
    grad_d = torch.autograd.grad((F.cross_entropy(model(inputs), targets, reduction="none") * w).mean(),
                                 list(model.parameters()))
    for param, grad in zip([*objective.biased.parameters(), *model.parameters()], [*grad_b, *grad_d]):
        torch.testing.assert_close(param.grad, grad)
    # a second batch mixes its losses into the EMA of the rows seen before: 0.7 * old + 0.3 * new
    first = objective.ema_biased.parameter.clone()
    objective.batch_loss(model, model, inputs, targets, rows, FLOAT32)
    torch.testing.assert_close(objective.ema_biased.parameter[rows], 0.7 * first[rows] + 0.3 * ce_b)
    assert objective.ema_biased.parameter[[3, 5, 7]].tolist() == [0.0, 0.0, 0.0]


def _train_steps(seed: int, steps: int = 3, objective_state: dict | None = None):
    torch.manual_seed(seed)
    model = _linear()
    objective = LfFObjective(_linear, np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    if objective_state is not None:
        objective.load_state_dict(objective_state)
    optimizer = make_optimizer([*model.parameters(), *objective.parameters()], 1e-2, 0.0, 0.0, "adam")
    losses = []
    for step in range(steps):
        inputs, targets = _batch(step)
        _, loss, _ = objective.batch_loss(model, model, inputs, targets, np.array([6, 1, 2, 0, 4]), FLOAT32)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, objective, losses


def test_the_same_seed_gives_the_same_numbers_and_the_state_round_trips():
    model, objective, losses = _train_steps(0)
    _, again, losses_again = _train_steps(0)
    assert losses == losses_again
    state = objective.state_dict()
    assert set(state) == {"biased", "ema_biased", "ema_debiased"}
    for name, value in again.state_dict()["biased"].items():
        assert torch.equal(state["biased"][name], value)
    saved = copy.deepcopy(state)
    inputs, targets = _batch(9)
    loss = objective.batch_loss(model, model, inputs, targets, np.array([3, 4, 5, 6, 7]), FLOAT32)[1]
    loss.backward()
    with torch.no_grad():
        for param in objective.parameters():
            param -= param.grad  # the biased network moves on
    assert not torch.equal(objective.biased[1].weight, saved["biased"]["1.weight"])
    assert torch.equal(state["biased"]["1.weight"], saved["biased"]["1.weight"])  # the saved state is a copy
    parameters = objective.parameters()
    objective.load_state_dict(saved)
    assert all(a is b for a, b in zip(parameters, objective.parameters()))  # the optimizer's tensors, restored
    assert torch.equal(objective.biased[1].weight, saved["biased"]["1.weight"])
    for ema in ("ema_biased", "ema_debiased"):
        assert torch.equal(getattr(objective, ema).parameter, saved[ema]["parameter"])
        assert torch.equal(getattr(objective, ema).updated, saved[ema]["updated"])
    summary = objective.summary()
    assert summary["q"] == 0.7 and summary["ema_alpha"] == 0.7 and summary["examples_seen"] == 5


def test_one_optimizer_over_both_networks_steps_as_the_official_two():
    def run(joint: bool):
        torch.manual_seed(0)
        model = _linear()
        objective = LfFObjective(_linear, np.array([0, 1, 2, 0, 1, 2, 0, 1]))
        if joint:
            optimizers = [torch.optim.Adam([*model.parameters(), *objective.parameters()], lr=1e-3)]
        else:  # train.py L113-117 and L237-241
            optimizers = [torch.optim.Adam(objective.parameters(), lr=1e-3), torch.optim.Adam(model.parameters(), lr=1e-3)]
        for step in range(4):
            inputs, targets = _batch(step)
            loss = objective.batch_loss(model, model, inputs, targets, np.array([6, 1, 2, 0, 4]), FLOAT32)[1]
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
        return [p.detach().clone() for p in (*model.parameters(), *objective.parameters())]

    for joint, separate in zip(run(True), run(False)):
        torch.testing.assert_close(joint, separate, rtol=0, atol=0)


def test_lff_trains_in_the_project_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    samples = SampleSet(rng.integers(0, 255, (60, 1, 2, 3), dtype=np.uint8), labels, np.zeros(60, int),
                        np.arange(60), num_classes=3)
    train = PixelSplit.from_samples(samples)
    torch.manual_seed(0)
    model = _linear()
    objective = LfFObjective(_linear, labels)
    optimizer = make_optimizer([*model.parameters(), *objective.parameters()], 1e-2, 0.0, 0.0, "adam")
    before = [p.detach().clone() for p in objective.parameters()]
    stats = train_epoch(model, optimizer, train, 16, torch.Generator().manual_seed(0), CPU, "lff", objective=objective)
    assert {"loss", "accuracy", "gce_loss", "weighted_ce", "mean_weight"} <= set(stats)
    assert all(not torch.equal(a, b) for a, b in zip(before, objective.parameters()))
    assert (objective.ema_biased.updated == 1).all()  # every training row seen once in the epoch
    bf16 = objective.batch_loss(model, model, torch.randn(4, 1, 2, 3), torch.tensor([0, 1, 2, 0]), np.arange(4),
                                MixedPrecision("bfloat16", CPU))[1]
    assert torch.isfinite(bf16)


def test_biased_mistakes_are_groups_per_class():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 3.0], [3.0, 0.0]])
    labels = np.array([0, 0, 1, 1])
    assert biased_mistakes(logits, labels).tolist() == [0, 1, 2, 3]  # 2 * label + wrong
    assert biased_mistakes(np.array([0, 1, 1, 0]), labels).tolist() == [0, 1, 2, 3]  # predicted classes
    assert biased_mistake_names(("a", "b")) == ["a_aligned", "a_conflicting", "b_aligned", "b_conflicting"]
    with pytest.raises(ValueError):
        biased_mistakes(logits, labels[:3])
