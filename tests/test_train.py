"""The training core: determinism under the generator, the epoch loss as the mean over samples,
prediction order, and the finetune continuing ERM's optimizer (momentum buffers, learning rate), as
the official `finetune()` does."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit, to_input
from masktune.models import SmallCNN
from masktune.models.checkpoint import load_checkpoint, save_checkpoint
from masktune.models.predict import predict
from masktune.precision import PRECISIONS, MixedPrecision
from masktune.seeding import seed_everything
from masktune.train.loop import make_optimizer, restore_optimizer, train_epoch, trains_on_one_row

CPU = torch.device("cpu")


def _split(n: int = 50, seed: int = 0) -> PixelSplit:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 28, 28, 3)).astype(np.uint8)
    images[labels == 1, 10:18, 10:18] = 255  # learnable
    return PixelSplit.from_samples(SampleSet(images, labels, np.zeros(n, dtype=np.int64), np.arange(n)))


def _trained(seed: int, epochs: int = 2) -> nn.Module:
    generator = seed_everything(seed)
    model = SmallCNN(2)
    optimizer = make_optimizer(model, 0.05, 0.9, 1e-4)
    for _ in range(epochs):
        train_epoch(model, optimizer, _split(), 16, generator, CPU, "test")
    return model


def test_training_is_deterministic_under_the_seed():
    a, b, c = _trained(0), _trained(0), _trained(1)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_epoch_loss_is_the_mean_over_samples_with_a_short_last_batch():
    """lr 0: the model does not move, so the epoch's loss must be the mean per-sample cross-entropy of
    the whole split (a mean of batch means would weight the last batch of 2 like the others of 16)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28 * 3, 2))  # no BatchNorm: batches do not interact
    data = _split(50)
    stats = train_epoch(model, make_optimizer(model, 0.0, 0.0, 0.0), data, 16, torch.Generator().manual_seed(0),
                        CPU, "test")
    logits = model(to_input(data.pixels(np.arange(50)), CPU))
    labels = torch.from_numpy(data.labels)
    assert stats["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert stats["accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    batch_means = np.mean([F.cross_entropy(logits[i:i + 16], labels[i:i + 16]).item() for i in range(0, 50, 16)])
    assert abs(stats["loss"] - batch_means) > 1e-4  # the check can tell the two apart


def test_a_last_batch_of_one_row_sits_out_only_where_batchnorm_cannot_train_on_it():
    """17 rows at batch 16: PyTorch's BatchNorm raises on the one-row batch, so a network with BatchNorm
    trains on the shuffle's first 16 rows (lr 0: the epoch's loss is their training-mode cross-entropy,
    one batch); a network without keeps all 17 (the loss is over every row)."""
    data, batch = _split(17), 16
    torch.manual_seed(0)
    with_bn = SmallCNN(2)
    order = torch.randperm(17, generator=torch.Generator().manual_seed(0)).numpy()
    expected = F.cross_entropy(copy.deepcopy(with_bn).train()(to_input(data.pixels(order[:16]), CPU)),
                               torch.from_numpy(data.labels[order[:16]])).item()
    stats = train_epoch(with_bn, make_optimizer(with_bn, 0.0, 0.0, 0.0), data, batch,
                        torch.Generator().manual_seed(0), CPU, "test")
    assert stats["loss"] == pytest.approx(expected, rel=1e-5)

    plain = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28 * 3, 2))
    stats = train_epoch(plain, make_optimizer(plain, 0.0, 0.0, 0.0), data, batch, torch.Generator().manual_seed(0),
                        CPU, "test")
    every_row = F.cross_entropy(plain(to_input(data.pixels(np.arange(17)), CPU)), torch.from_numpy(data.labels))
    assert stats["loss"] == pytest.approx(every_row.item(), rel=1e-6)
    assert [trains_on_one_row(with_bn, n, batch) for n in (1, 16, 17, 18, 33)] == [False, False, True, False, True]
    assert not trains_on_one_row(plain, 17, batch)


def test_prediction_is_in_row_order_and_independent_of_batch_size():
    model = _trained(0).eval()
    data = _split(50)
    expected = model(to_input(data.pixels(np.arange(50)), CPU)).argmax(1).numpy()
    for batch_size in (1, 7, 64):
        np.testing.assert_array_equal(predict(model, data, batch_size, CPU), expected)


def test_finetune_continues_the_erm_optimizer_momentum_and_learning_rate(tmp_path):
    generator = seed_everything(0)
    model = SmallCNN(2)
    optimizer = make_optimizer(model, 0.05, 0.9, 1e-4)
    train_epoch(model, optimizer, _split(), 16, generator, CPU, "erm")
    save_checkpoint(tmp_path / "last.pt", model, optimizer, arch="small_cnn", num_classes=2, epoch=0,
                    val_accuracy=0.0)

    loaded, state = load_checkpoint(tmp_path / "last.pt", CPU)
    restored = restore_optimizer(loaded, state)
    group = restored.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.05, 0.9, 1e-4)
    buffers = [restored.state[p]["momentum_buffer"] for p in loaded.parameters()]
    for buffer, original in zip(buffers, (optimizer.state[p]["momentum_buffer"] for p in model.parameters())):
        assert torch.equal(buffer, original) and buffer.abs().sum() > 0

    # One more epoch from the checkpoint equals one more epoch of the original run; a fresh optimizer
    # (no momentum) does not.
    continued, fresh = SmallCNN(2), SmallCNN(2)
    continued.load_state_dict(loaded.state_dict())
    fresh.load_state_dict(loaded.state_dict())
    for target, opt in ((model, optimizer), (continued, restore_optimizer(continued, state)),
                        (fresh, make_optimizer(fresh, 0.05, 0.9, 1e-4))):
        train_epoch(target, opt, _split(), 16, torch.Generator().manual_seed(5), CPU, "finetune")
    for key, value in model.state_dict().items():
        assert torch.equal(continued.state_dict()[key], value), key
    assert any(not torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())


def test_finetune_lr_overrides_only_the_learning_rate(tmp_path):
    model = SmallCNN(2)
    optimizer = make_optimizer(model, 0.05, 0.9, 1e-4)
    train_epoch(model, optimizer, _split(), 16, torch.Generator().manual_seed(0), CPU, "erm")
    state = {"optimizer": optimizer.state_dict()}
    restored = restore_optimizer(model, state, lr=0.005)
    assert restored.param_groups[0]["lr"] == 0.005 and restored.param_groups[0]["momentum"] == 0.9
    p = next(model.parameters())
    assert torch.equal(restored.state[p]["momentum_buffer"], optimizer.state[p]["momentum_buffer"])


def _trained_in(precision: str | None, epochs: int = 3) -> tuple[nn.Module, list[float]]:
    generator = seed_everything(0)
    model = SmallCNN(2)
    optimizer = make_optimizer(model, 0.05, 0.9, 1e-4)
    amp = None if precision is None else MixedPrecision(precision, CPU)
    losses = [train_epoch(model, optimizer, _split(200), 16, generator, CPU, "test", amp=amp)["loss"]
              for _ in range(epochs)]
    return model, losses


def test_float32_precision_is_bitwise_the_plain_training():
    plain, plain_losses = _trained_in(None)
    float32, float32_losses = _trained_in("float32")
    assert float32_losses == plain_losses
    for key, value in plain.state_dict().items():
        assert torch.equal(value, float32.state_dict()[key]), key


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_trains_under_autocast_like_float32(precision):
    """The forward runs in the reduced dtype, and the model learns what float32 learns (a loss curve
    within 0.05: autocast rounds the activations, so not to the bit)."""
    with MixedPrecision(precision, CPU).autocast():
        assert SmallCNN(2)(torch.rand(4, 3, 28, 28)).dtype == PRECISIONS[precision]
    _, reduced = _trained_in(precision)
    _, full = _trained_in("float32")
    np.testing.assert_allclose(reduced, full, atol=0.05)
    assert reduced[-1] < reduced[0] / 2


def test_float16_scaling_skips_a_step_whose_gradients_overflow_and_backs_off():
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    amp = MixedPrecision("float16", CPU)
    before = [p.detach().clone() for p in model.parameters()]
    amp.backward_and_step(model(torch.ones(2, 4)).sum() * 1e36, optimizer)  # x 65536: inf gradients
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert amp.state_dict()["scale"] == 32768.0
    optimizer.zero_grad()
    amp.backward_and_step(model(torch.ones(2, 4)).sum(), optimizer)  # a finite step is taken, unscaled
    np.testing.assert_allclose(model.bias.detach().numpy(), before[1].numpy() - 0.1 * 2, rtol=1e-6)
