"""Batched XGradCAM (Fu et al. 2020), as the official code runs it through `grad-cam` 1.3.7.

The official `mask_data` calls `pytorch_grad_cam.XGradCAM(model, [target_layer])(images)` with no
targets, so the target is the model's predicted class. For each image the library computes, at the
target layer's activation A (C x h x w) and the gradient G of the target logit with respect to A:

    w_c  = sum_ij(G_cij * A_cij) / (sum_ij A_cij + 1e-7)
    cam  = ReLU(sum_c w_c * A_c)
    cam  = (cam - min) / (1e-7 + max(cam - min))          # scale_cam_image, per image
    cam  = cv2.resize(cam, (W, H))                         # bilinear, half-pixel centres
    cam  = (cam - min) / (1e-7 + max(cam - min))          # aggregate_multi_layers re-scales

Here every step runs batched in torch, on the GPU when there is one. Only the gradient with respect
to A is taken: the hook makes A a leaf of the graph and the model's parameters need no gradient,
so nothing below the target layer is kept for backward.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from masktune.storage import SampleSet
from masktune.training import batches, progress, to_input

EPS = 1e-7  # the library's epsilon, in the weights and in scale_cam_image


def _min_max_scale(maps: torch.Tensor) -> torch.Tensor:
    """Per-map (x - min) / (1e-7 + max(x - min)), as the library's scale_cam_image."""
    shifted = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return shifted / (EPS + shifted.amax(dim=(-2, -1), keepdim=True))


def xgradcam(model: nn.Module, target_layer: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Saliency maps (B, H, W) in [0, 1] at input resolution, and the predicted classes (B,)."""
    captured: dict[str, torch.Tensor] = {}

    def keep_activation(module, args, output):
        captured["activation"] = output.detach().requires_grad_(True)
        return captured["activation"]

    handle = target_layer.register_forward_hook(keep_activation)
    try:
        with torch.enable_grad():
            logits = model(inputs)
            predicted = logits.argmax(dim=1)
            score = logits.gather(1, predicted[:, None]).sum()
            activation = captured["activation"]
            (gradient,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    with torch.no_grad():
        weights = (gradient * activation).sum(dim=(2, 3)) / (activation.sum(dim=(2, 3)) + EPS)
        cam = F.relu((weights[:, :, None, None] * activation).sum(dim=1))
        cam = _min_max_scale(cam)
        cam = F.interpolate(cam[:, None], size=inputs.shape[-2:], mode="bilinear",
                            align_corners=False)[:, 0]
        cam = _min_max_scale(cam.clamp_min(0))
    return cam, predicted


def compute_saliency(model: nn.Module, samples: SampleSet, batch_size: int,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """XGradCAM of every sample with `model.grad_cam_target_layer()`: maps (N, H, W), predictions."""
    model = model.to(device).eval().requires_grad_(False)
    target_layer = model.grad_cam_target_layer()
    maps = np.empty(samples.images.shape[:3], dtype=np.float32)
    predicted = np.empty(len(samples), dtype=np.int64)
    for index in progress(list(batches(len(samples), batch_size)), desc="XGradCAM"):
        cam, pred = xgradcam(model, target_layer, to_input(samples.images[index], device))
        maps[index] = cam.cpu().numpy()
        predicted[index] = pred.cpu().numpy()
    return maps, predicted
