"""Batched XGradCAM (Fu et al. 2020) at about the cost of one inference pass.

The official `mask_data` calls `pytorch_grad_cam.XGradCAM(model, [target_layer])(images)` with no
targets, so the target is the model's predicted class. For each image the library (1.3.7, the version
the official requirements pin) computes, at the target layer's activation A (C x h x w) and the
gradient G of the target logit with respect to A:

    w_c  = sum_ij(G_cij * A_cij) / (sum_ij A_cij + 1e-7)
    cam  = ReLU(sum_c w_c * A_c)                           # (h, w): the feature-map-resolution map
    cam  = (cam - min) / (1e-7 + max(cam - min))          # scale_cam_image, per image
    cam  = cv2.resize(cam, (W, H))                         # bilinear, half-pixel centres
    cam  = (cam - min) / (1e-7 + max(cam - min))          # aggregate_multi_layers re-scales

The library gets there with a full backward pass (gradients of every parameter and of the input),
copies activations and gradients to host memory and resizes map by map with OpenCV. Here:

- only the gradient with respect to A is taken: a forward hook makes A a leaf of the graph and the
  parameters need no gradient, so autograd records nothing below the target layer and the backward
  pass covers only the layers above it (SmallCNN: a max-pool and the linear head; ResNet: the pooling
  and the fc layer);
- every step runs batched on the device, channels-last, with each BatchNorm folded into the
  convolution before it (one pass over the activations instead of two; the maps stay within 1e-5)
  and, optionally, in bfloat16/float16;
- the maps are *stored* at feature-map resolution (`feature_cams`, 7 x 7 for ResNet-50 at 224 x 224);
  `full_resolution` recomputes the input-resolution maps from them exactly when they are needed (the
  masking stage and the figures), so the saliency file is 1,000 times smaller than full maps.

`xgradcam` = `full_resolution(feature_cams(...))` equals the library's output to 1e-5 in float32
(tests/test_saliency.py).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from masktune.precision import precision_autocast

EPS = 1e-7  # the library's epsilon, in the weights and in scale_cam_image


def _min_max_scale(maps: torch.Tensor) -> torch.Tensor:
    """Per-map (x - min) / (1e-7 + max(x - min)), as the library's scale_cam_image."""
    shifted = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return shifted / (EPS + shifted.amax(dim=(-2, -1), keepdim=True))


def feature_cams(model: nn.Module, target_layer: nn.Module, inputs: torch.Tensor,
                 precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """Feature-map-resolution XGradCAM maps (B, h, w) float32, before any scaling, and the
    predicted classes (B,). The model must be in eval mode with `requires_grad_(False)`."""
    captured: dict[str, torch.Tensor] = {}

    def keep_activation(module, args, output):
        captured["activation"] = output.detach().requires_grad_(True)
        return captured["activation"]

    handle = target_layer.register_forward_hook(keep_activation)
    try:
        with torch.enable_grad(), precision_autocast(inputs.device, precision):
            logits = model(inputs)
            predicted = logits.argmax(dim=1)
            score = logits.gather(1, predicted[:, None]).sum()
            activation = captured["activation"]
            (gradient,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    with torch.no_grad():
        activation, gradient = activation.float(), gradient.float()
        weights = (gradient * activation).sum(dim=(2, 3)) / (activation.sum(dim=(2, 3)) + EPS)
        cams = F.relu(torch.einsum("bc,bchw->bhw", weights, activation))
    return cams, predicted


def full_resolution(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The library's maps at input resolution (B, H, W) in [0, 1] from `feature_cams` output:
    scale, bilinear resize (half-pixel centres, as cv2.resize), scale again."""
    with torch.no_grad():
        maps = _min_max_scale(cams.float())
        maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        return _min_max_scale(maps.clamp_min(0))


def xgradcam(model: nn.Module, target_layer: nn.Module, inputs: torch.Tensor,
             precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """Saliency maps (B, H, W) in [0, 1] at input resolution, and the predicted classes (B,):
    what `pytorch_grad_cam.XGradCAM(model, [target_layer])(inputs)` returns."""
    cams, predicted = feature_cams(model, target_layer, inputs, precision)
    return full_resolution(cams, inputs.shape[-2:]), predicted


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d that feeds only it, in place (the BatchNorm
    becomes an Identity). Inference-time folding as oneDNN and TensorRT do it: same function up to
    float rounding, one memory pass fewer per convolution (ResNet-50 on a CPU: about 1.25x faster).
    The pairs are found on the traced graph, so any model torch.fx can trace is handled; the target
    layer is never a folded convolution (its output would change). Untraceable models are left as
    they are."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - tracing is an optimisation; any failure means "do not fold"
        return model
    modules = dict(model.named_modules())
    target = model.grad_cam_target_layer() if hasattr(model, "grad_cam_target_layer") else None
    for node in graph.nodes:
        source = node.args[0] if node.args else None
        if (node.op == "call_module" and isinstance(modules[node.target], nn.BatchNorm2d)
                and isinstance(source, torch.fx.Node) and source.op == "call_module"
                and isinstance(modules[source.target], nn.Conv2d) and len(source.users) == 1
                and modules[source.target] is not target):
            _replace(model, source.target, fuse_conv_bn_eval(modules[source.target], modules[node.target]))
            _replace(model, node.target, nn.Identity())
    return model


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def prepare_for_saliency(model: nn.Module, device: torch.device, channels_last: bool,
                         fold_bn: bool = False) -> nn.Module:
    """Eval mode, no parameter gradients, on `device`; optionally BatchNorm folded into the
    convolutions and channels-last (faster convolutions on oneDNN CPUs and tensor-core GPUs).
    Changes `model` in place."""
    model = model.to(device).eval().requires_grad_(False)
    if fold_bn:
        model = fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


@contextlib.contextmanager
def explainer(model: nn.Module, device: torch.device, *, precision: str = "float32", channels_last: bool = False,
              fold_batchnorm: bool = False, gamma: float | None = None) -> Iterator:
    """`explain(inputs) -> (feature-map-resolution maps (B, h, w), predicted (B,))` of `model`, prepared
    (`prepare_for_saliency`: optionally BatchNorm folded, channels-last) for the pass. `gamma` is LRP's."""
    model = prepare_for_saliency(model, device, channels_last, fold_batchnorm)
    layer = model.grad_cam_target_layer()
    yield lambda inputs: feature_cams(model, layer, inputs, precision)
