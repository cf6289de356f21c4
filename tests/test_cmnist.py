"""C-MNIST as ExMap's official code builds it (rwchakra/exmap src/data/datasets.py L141-204), its ERM
network `resnet18_cifar` (src/models/__init__.py L93-103) and its cosine learning-rate schedule
(src/utils/optimizers.py L25-27, stepped once per epoch by src/run_erm.py L68), with the finetune's
learning rate after such a schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import RecordingLive, committed_params

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.datasets import DATASETS
from masktune.datasets.cmnist import GROUP_NAMES, build_cmnist
from masktune.errors import UserError
from masktune.models import build_model
from masktune.models.checkpoint import load_checkpoint
from masktune.models.pretrained import initial_model
from masktune.train.fit import Keep, Plan, fit
from masktune.train.loop import make_optimizer, restore_optimizer

CPU = torch.device("cpu")


def _synthetic_mnist(n_train: int = 700, n_test: int = 300, seed: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-like arrays (what `load_mnist` returns): random digits, random non-zero grey pixels."""
    rng = np.random.default_rng(seed)
    return {split: (rng.integers(1, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int64))
            for split, n in (("train", n_train), ("test", n_test))}


def _official_colours(digits: np.ndarray, color_correlation: float, seed: int) -> np.ndarray:
    """The official lines L158-166, verbatim, on the global numpy generator (its state restored after)."""
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        y_array = (np.array(digits) > 4).astype(int)
        spurious_array = np.zeros_like(y_array)
        spurious_array[y_array == 0] = np.random.binomial(1, color_correlation, size=(y_array == 0).sum())
        spurious_array[y_array == 1] = np.random.binomial(1, 1 - color_correlation, size=(y_array == 1).sum())
        return spurious_array
    finally:
        np.random.set_state(saved)


def test_construction_follows_the_official_code_on_synthetic_digits():
    mnist = _synthetic_mnist()
    before = np.random.get_state()[1].copy()
    splits = build_cmnist(mnist, color_correlation=0.99, val_size=200, seed=0)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the global generator is not touched
    assert {name: len(s) for name, s in splits.items()} == {"train": 500, "val": 200, "test": 300}
    sources = {"train": (mnist["train"][0][:500], mnist["train"][1][:500], np.arange(500)),
               "val": (mnist["train"][0][500:], mnist["train"][1][500:], np.arange(500, 700)),  # the last 200
               "test": (*mnist["test"], np.arange(300))}
    for name, (grey, digits, index) in sources.items():
        samples = splits[name]
        np.testing.assert_array_equal(samples.source_index, index)
        np.testing.assert_array_equal(samples.labels, (digits > 4).astype(np.int64))
        # Each split draws its colours from seed 0 again, class 0 first: the official draws exactly.
        np.testing.assert_array_equal(samples.attributes, _official_colours(digits, 0.99, 0))
        assert samples.images.shape == (len(digits), 28, 28, 3) and samples.images.dtype == np.uint8
        red, green = samples.attributes == 0, samples.attributes == 1
        np.testing.assert_array_equal(samples.images[red, ..., 0], grey[red])     # s = 0: red channel only
        assert not samples.images[red][..., 1:].any()
        np.testing.assert_array_equal(samples.images[green, ..., 1], grey[green])  # s = 1: green channel only
        assert not samples.images[green][..., [0, 2]].any()
        np.testing.assert_array_equal(samples.groups, 2 * samples.attributes + samples.labels)
        # The same correlation in every split (no reversed test): mostly green for class 0, red for class 1.
        assert samples.attributes[samples.labels == 0].mean() > 0.95
        assert samples.attributes[samples.labels == 1].mean() < 0.05
    # The draw depends on the seed and the correlation.
    assert not np.array_equal(build_cmnist(mnist, color_correlation=0.99, val_size=200, seed=1)["train"].attributes,
                              splits["train"].attributes)
    half = build_cmnist(mnist, color_correlation=0.5, val_size=200, seed=0)["test"]
    np.testing.assert_array_equal(half.attributes, _official_colours(mnist["test"][1], 0.5, 0))


def test_group_ids_names_and_spec():
    samples = SampleSet(np.zeros((4, 28, 28, 3), np.uint8), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]),
                        np.arange(4))
    assert samples.groups.tolist() == [0, 1, 2, 3]  # 2 * colour + label
    assert [GROUP_NAMES[g] for g in samples.groups] == ["y0_red", "y1_red", "y0_green", "y1_green"]
    spec = DATASETS["cmnist"]
    assert (spec.name, spec.num_classes, spec.test_splits) == ("cmnist", 2, ("test",))
    assert spec.group_names({}) == GROUP_NAMES


def test_limits_and_a_validation_set_too_large():
    mnist = _synthetic_mnist()
    splits = build_cmnist(mnist, color_correlation=0.99, val_size=30, seed=0, train_limit=100, test_limit=40)
    assert {name: len(s) for name, s in splits.items()} == {"train": 70, "val": 30, "test": 40}
    np.testing.assert_array_equal(splits["val"].source_index, np.arange(70, 100))  # the last 30 of the first 100
    np.testing.assert_array_equal(splits["val"].labels, (mnist["train"][1][70:100] > 4).astype(np.int64))
    with pytest.raises(UserError, match=r"^params.yaml: prepare.cmnist.val_size must be between 1 and 99 "
                                        r"\(the training set has 100 images\), got 100$"):
        build_cmnist(mnist, color_correlation=0.99, val_size=100, seed=0, train_limit=100)


def test_group_counts_on_the_real_mnist(mnist):
    """Counts computed with the official rule (np.random.seed(0), binomial draws, class 0 first) on the
    full MNIST, and checked against the official lines run verbatim. Ours are numbered 2 * s + y:
    y0_red, y1_red, y0_green, y1_green (ExMap's 2 * y + s swaps the middle two)."""
    splits = build_cmnist(mnist, color_correlation=0.99, val_size=10000, seed=0)
    counts = {name: np.bincount(s.groups, minlength=4).tolist() for name, s in splits.items()}
    assert counts == {"train": [254, 24231, 25284, 231], "val": [45, 4893, 5013, 49], "test": [48, 4815, 5091, 46]}
    np.testing.assert_array_equal(splits["val"].attributes, _official_colours(mnist["train"][1][-10000:], 0.99, 0))
    np.testing.assert_array_equal(splits["test"].attributes, _official_colours(mnist["test"][1], 0.99, 0))


def test_committed_recipe_is_exmaps_erm():
    recipe = committed_params()["recipes"]["cmnist"]
    assert recipe["lr"] == 0.003
    assert recipe["train_erm"] == {"arch": "resnet18_cifar", "pretrained": False, "epochs": 10, "batch_size": 128,
                                   "momentum": 0.9, "weight_decay": 0.0001, "lr_schedule": "cosine",
                                   "lr_milestone_every": 25, "lr_gamma": 0.5,  # multistep's, unused
                                   "optimizer": "sgd"}
    for name in ("biased_mnist", "waterbirds", "celeba", "in9l"):  # MaskTune's code has no schedule
        assert committed_params()["recipes"][name]["train_erm"]["lr_schedule"] == "constant"
    prepare = committed_params()["prepare"]["cmnist"]
    assert (prepare["color_correlation"], prepare["val_size"], prepare["seed"]) == (0.99, 10000, 0)


def test_resnet18_cifar_has_a_3x3_stride_1_stem_and_no_maxpool():
    torch.manual_seed(0)
    model = build_model("resnet18_cifar", 2).eval()
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.bias) == \
        (3, 64, (3, 3), (1, 1), (1, 1), None)
    assert isinstance(model.maxpool, torch.nn.Identity)
    x = torch.rand(5, 3, 28, 28)
    assert model(x).shape == (5, 2) and model.features(x).shape == (5, 512)
    seen = {}
    model.grad_cam_target_layer().register_forward_hook(lambda m, a, out: seen.update(shape=tuple(out.shape)))
    model(x)
    assert seen["shape"] == (5, 512, 4, 4)  # 28 -> 28 (stem) -> 28, 14, 7, 4: no downsampling in the stem
    # torchvision's ImageNet ResNet-18 reduces 28 x 28 to 1 x 1 at layer4; this one keeps 16 positions.
    with pytest.raises(UserError, match="no torchvision ImageNet weights for train_erm.arch 'resnet18_cifar': "
                                        "set train_erm.pretrained: false"):
        initial_model("resnet18_cifar", 2, True, None, CPU)


def _tiny_split(n: int = 40) -> PixelSplit:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 255, (n, 28, 28, 3)).astype(np.uint8)
    return PixelSplit.from_samples(SampleSet(images, labels, np.zeros(n, dtype=np.int64), np.arange(n)))


def test_cosine_schedule_steps_once_per_epoch_and_the_finetune_restarts_at_the_initial_lr(tmp_path):
    epochs, lr = 4, 0.003
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 2)
    optimizer = make_optimizer(model, lr, 0.9, 1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    log = RecordingLive()
    data = _tiny_split()
    fit(model, optimizer, data, data, torch.Generator().manual_seed(0), CPU, log,
        Plan(epochs=epochs, batch_size=16, eval_batch_size=64, scheduler=scheduler),
        Keep(info={"arch": "tiny_cnn", "num_classes": 2}, best_path=tmp_path / "best.pt", last_path=tmp_path / "last.pt"))
    used = [value for _, name, value in log.metrics if name == "train/lr"]
    # torch's CosineAnnealingLR on a bare optimizer, stepped once per epoch, gives the same rates ...
    reference_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_optimizer, T_max=epochs)
    expected = []
    for _ in range(epochs):
        expected.append(reference_optimizer.param_groups[0]["lr"])
        reference_optimizer.step()
        reference.step()
    assert used == expected
    # ... which are lr * (1 + cos(pi * t / T)) / 2, eta_min 0: 0.003, 0.00256, 0.0015, 0.00044.
    assert used == pytest.approx([lr * (1 + math.cos(math.pi * t / epochs)) / 2 for t in range(epochs)], rel=1e-12)
    assert used[2] == pytest.approx(0.0015, rel=1e-12)

    # The last checkpoint holds the rate after the last step (0) and the schedule's initial_lr.
    _, state = load_checkpoint(tmp_path / "last.pt", CPU)
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.0, abs=1e-15) and group["initial_lr"] == lr
    # restore_optimizer with lr None: the initial learning rate (not 0); an explicit lr still wins.
    continued, _ = load_checkpoint(tmp_path / "last.pt", CPU)
    assert restore_optimizer(continued, state).param_groups[0]["lr"] == lr
    assert restore_optimizer(continued, state, lr=0.02).param_groups[0]["lr"] == 0.02
    # Without a schedule there is no initial_lr: the checkpoint's own lr, as before.
    plain = make_optimizer(model, 0.05, 0.9, 1e-4)
    assert "initial_lr" not in plain.state_dict()["param_groups"][0]
    assert restore_optimizer(model, {"optimizer": plain.state_dict()}).param_groups[0]["lr"] == 0.05


def test_no_scheduler_keeps_the_learning_rate(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 2)
    optimizer = make_optimizer(model, 0.01, 0.9, 1e-4)
    log = RecordingLive()
    data = _tiny_split()
    fit(model, optimizer, data, data, torch.Generator().manual_seed(0), CPU, log,
        Plan(epochs=2, batch_size=16, eval_batch_size=64),
        Keep(info={"arch": "tiny_cnn", "num_classes": 2}, best_path=tmp_path / "best.pt"))
    assert optimizer.param_groups[0]["lr"] == 0.01
    assert not [m for m in log.metrics if m[1] == "train/lr"]  # logged only with a schedule
