"""Our batched XGradCAM equals the grad-cam library's XGradCAM as the official code ran it (1.3.7)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from masktune.data.splits import PixelSplit, to_input
from masktune.masking.rules import saliency_masks, saliency_thresholds
from masktune.models import SmallCNN, build_model
from masktune.saliency.xgradcam import feature_cams, full_resolution, prepare_for_saliency, xgradcam
from masktune.seeding import seed_everything
from masktune.train.loop import make_optimizer, train_epoch

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="install the test extras (grad-cam==1.3.7)")


def library_xgradcam(model, images: torch.Tensor) -> np.ndarray:
    """What the official mask_data got: XGradCAM(model, [target layer])(images), targets=None.
    The library back-propagates into the parameters, so it gets a copy that has them trainable."""
    model = copy.deepcopy(model).requires_grad_(True)
    cam = pytorch_grad_cam.XGradCAM(model=model, target_layers=[model.grad_cam_target_layer()],
                                    use_cuda=False)
    try:
        return cam(images)
    finally:
        cam.activations_and_grads.release()


@pytest.fixture(scope="module")
def trained_model(digits):
    """A SmallCNN trained briefly on biased-MNIST digits (real, and the synthetic twin), so its maps mean something."""
    from masktune.datasets.biased_mnist import build_biased_split

    images, labels = digits["train"]
    samples = build_biased_split(images[:2048], labels[:2048], 0.01, 4, (255, 0, 0))
    generator = seed_everything(0)
    model = SmallCNN(2)
    train_epoch(model, make_optimizer(model, 0.01, 0.9, 1e-4), PixelSplit.from_samples(samples), 128, generator,
                torch.device("cpu"), "train")
    return model.eval().requires_grad_(False), samples


def test_equal_to_the_library_on_trained_digits(trained_model):
    model, samples = trained_model
    inputs = to_input(samples.images[::16], torch.device("cpu"))  # 128 images of every digit
    ours, predicted = xgradcam(model, model.grad_cam_target_layer(), inputs)
    theirs = library_xgradcam(model, inputs)
    assert ours.shape == theirs.shape == (128, 28, 28)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(predicted.numpy(), model(inputs).argmax(1).numpy())
    differ = saliency_masks(ours.numpy()) != saliency_masks(theirs)
    threshold, ours_threshold = saliency_thresholds(theirs), saliency_thresholds(ours.numpy())
    # A pixel may flip only between the two thresholds (mean + 2 std of each map's positive values), its
    # values agreeing to 1e-5. The thresholds agree to 3e-5 while the same pixels are positive; a value
    # within 1e-5 of 0, positive on one side only, moves a threshold by up to ~1e-3 (real digits: none flips).
    assert np.array_equal(np.isnan(threshold), np.isnan(ours_threshold))  # NaN: no positive value, no mask
    shift = np.nan_to_num(np.abs(ours_threshold - threshold), nan=0.0)
    assert shift.max() < 1e-3 and np.median(shift) < 3e-5
    assert differ.mean() < 1e-4
    near = np.broadcast_to((shift + 1e-5)[:, None, None], theirs.shape)
    assert np.all(np.abs(np.broadcast_to(threshold[:, None, None], theirs.shape)[differ] - theirs[differ]) <= near[differ])


@pytest.mark.parametrize(("arch", "size"), [("small_cnn", 28), ("tiny_cnn", 96), ("resnet18", 96)])
def test_equal_to_the_library_on_random_weights_and_inputs(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, 2).eval()
    for module in model.modules():  # BatchNorm statistics as a trained model has them, not 0 and 1
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    inputs = torch.rand(16, 3, size, size)
    theirs = library_xgradcam(model, inputs)
    ours, _ = xgradcam(model, model.grad_cam_target_layer(), inputs)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5, rtol=0)
    fast = prepare_for_saliency(copy.deepcopy(model), torch.device("cpu"), channels_last=True, fold_bn=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # every one folded
    ours_fast, _ = xgradcam(fast, fast.grad_cam_target_layer(), inputs.contiguous(memory_format=torch.channels_last))
    np.testing.assert_allclose(ours_fast.numpy(), theirs, atol=1e-5, rtol=0)


def test_feature_maps_recompute_the_full_maps_exactly(trained_model):
    """What compute_saliency stores (feature-map-resolution maps) gives back the library's maps."""
    model, samples = trained_model
    inputs = to_input(samples.images[:200], torch.device("cpu"))
    cams, _ = feature_cams(model, model.grad_cam_target_layer(), inputs)
    assert cams.shape == (200, 8, 8) and cams.dtype == torch.float32 and cams.min() >= 0
    np.testing.assert_array_equal(full_resolution(cams, (28, 28)).numpy(),
                                  xgradcam(model, model.grad_cam_target_layer(), inputs)[0].numpy())
    np.testing.assert_allclose(full_resolution(cams, (28, 28)).numpy(), library_xgradcam(model, inputs),
                               atol=1e-5, rtol=0)


def test_channels_last_and_batch_size_do_not_change_the_maps(trained_model):
    """Bitwise across batch sizes on one thread; with several, oneDNN may split a small batch's work
    differently (seen with 2 threads on a 2-core AMD EPYC), so the check pins one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _maps_equal_across_batches(trained_model)
    finally:
        torch.set_num_threads(threads)


def _maps_equal_across_batches(trained_model) -> None:
    model, samples = trained_model
    inputs = to_input(samples.images[:300], torch.device("cpu"))
    reference, predicted = feature_cams(model, model.grad_cam_target_layer(), inputs.contiguous())
    fast = prepare_for_saliency(copy.deepcopy(model), torch.device("cpu"), channels_last=True, fold_bn=True)
    maps = {}
    for batch in (300, 64, 7):
        parts = [feature_cams(fast, fast.grad_cam_target_layer(), inputs[i:i + batch]) for i in range(0, 300, batch)]
        maps[batch] = torch.cat([c for c, _ in parts])
        np.testing.assert_allclose(maps[batch].numpy(), reference.numpy(), atol=1e-5)
        np.testing.assert_array_equal(torch.cat([p for _, p in parts]).numpy(), predicted.numpy())
    assert torch.equal(maps[300], maps[64]) and torch.equal(maps[300], maps[7])  # bitwise: batch size is free


def test_bfloat16_changes_few_mask_pixels(trained_model):
    """The fast bfloat16 mode is not bit-equal; the masks it gives differ on few pixels."""
    model, samples = trained_model
    inputs = to_input(samples.images[::8], torch.device("cpu"))
    exact, _ = xgradcam(model, model.grad_cam_target_layer(), inputs)
    fast, _ = xgradcam(model, model.grad_cam_target_layer(), inputs, precision="bfloat16")
    differing = (saliency_masks(exact) != saliency_masks(fast)).mean()
    assert 0 <= differing < 0.01


def test_model_is_untouched(trained_model):
    model, samples = trained_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feature_cams(model, model.grad_cam_target_layer(), to_input(samples.images[:64], torch.device("cpu")))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model.grad_cam_target_layer()._forward_hooks
