"""Our batched XGradCAM equals the grad-cam library's XGradCAM as the official code ran it (1.3.7)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from masktune.masking import saliency_masks
from masktune.models import SmallCNN
from masktune.saliency import compute_saliency, xgradcam
from masktune.training import make_optimizer, seed_everything, to_input, train_epoch

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam", reason="install the test extras (grad-cam==1.3.7)")


def library_xgradcam(model, images: torch.Tensor) -> np.ndarray:
    """What the official mask_data got: XGradCAM(model, [target layer])(images), targets=None."""
    cam = pytorch_grad_cam.XGradCAM(model=model, target_layers=[model.grad_cam_target_layer()],
                                    use_cuda=False)
    try:
        return cam(images)
    finally:
        cam.activations_and_grads.release()


@pytest.fixture(scope="module")
def trained_model(mnist):
    """A SmallCNN trained briefly on real biased-MNIST digits, so its maps are meaningful."""
    from masktune.datasets.biased_mnist import build_biased_split

    images, digits = mnist["train"]
    samples = build_biased_split(images[:2048], digits[:2048], 0.01, 4, (255, 0, 0))
    generator = seed_everything(0)
    model = SmallCNN(2)
    train_epoch(model, make_optimizer(model, 0.01, 0.9, 1e-4), samples, 128, generator,
                torch.device("cpu"), "train")
    return model.eval(), samples


def test_equal_to_the_library_on_real_digits(trained_model):
    model, samples = trained_model
    inputs = to_input(samples.images[::16], torch.device("cpu"))  # 128 images of every digit
    ours, predicted = xgradcam(model, model.grad_cam_target_layer(), inputs)
    theirs = library_xgradcam(model, inputs)
    assert ours.shape == theirs.shape == (128, 28, 28)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(predicted.numpy(), model(inputs).argmax(1).numpy())
    np.testing.assert_array_equal(saliency_masks(ours.numpy()), saliency_masks(theirs))


def test_equal_to_the_library_on_random_weights_and_inputs():
    torch.manual_seed(0)
    model = SmallCNN(2).eval()
    inputs = torch.rand(64, 3, 28, 28)
    ours, _ = xgradcam(model, model.grad_cam_target_layer(), inputs)
    np.testing.assert_allclose(ours.numpy(), library_xgradcam(model, inputs), atol=1e-5, rtol=0)


def test_batch_size_does_not_change_the_maps_and_model_is_untouched(trained_model):
    model, samples = trained_model
    subset = samples.subset(np.arange(300))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    maps_a, pred_a = compute_saliency(model, subset, 256, torch.device("cpu"))
    maps_b, pred_b = compute_saliency(model, subset, 7, torch.device("cpu"))
    np.testing.assert_allclose(maps_a, maps_b, atol=1e-6)
    np.testing.assert_array_equal(pred_a, pred_b)
    assert maps_a.min() >= 0 and maps_a.max() <= 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model.grad_cam_target_layer()._forward_hooks
