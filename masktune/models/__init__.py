"""Networks, registered by name (the `train_erm.arch` param), all behind one protocol.

Every registered network is an `nn.Module` with
- `features(x)`: the penultimate features (B, D), what DFR, ExMap and ClusterFix work on;
- `classifier`: the last `nn.Linear`, so that `model(x) == model.classifier(model.features(x))`;
- `grad_cam_target_layer()`: the layer whose activation XGradCAM explains (the official
  `get_grad_cam_target_layer`); a network without a convolutional layer (LfF's MLP) says so in one line.
`tests/test_models.py` checks this contract for every entry of `MODELS`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from masktune.errors import UserError
from masktune.models.cnn import SmallCNN, TinyCNN
from masktune.models.mlp import LfFMLP
from masktune.models.resnet_cifar import resnet32


class Network(Protocol):
    classifier: nn.Linear

    def features(self, x: torch.Tensor) -> torch.Tensor: ...

    def grad_cam_target_layer(self) -> nn.Module: ...


def _resnet(depth: int) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from masktune.models.resnet import build_resnet  # imports torchvision: only when a ResNet is built

        return build_resnet(depth, num_classes)
    return build


def _resnet18_cifar(num_classes: int) -> nn.Module:
    from masktune.models.resnet import build_resnet18_cifar  # imports torchvision: only when built

    return build_resnet18_cifar(num_classes)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": _resnet(18),
    "resnet50": _resnet(50),
    "tiny_cnn": TinyCNN,
    "resnet18_cifar": _resnet18_cifar,  # ExMap's C-MNIST network: 3 x 3 stride-1 stem, no max-pool, from scratch
    "resnet32": resnet32,  # the official CIFAR ResNet-32 (CIFAR-10, SVHN, Cats vs Dogs): option-A shortcuts, 0.46M
    "lff_mlp": LfFMLP,  # LfF's Colored MNIST MLP (3 x 28 x 28 only): no convolutional layer, so no XGradCAM
}


def build_model(arch: str, num_classes: int) -> nn.Module:
    if arch not in MODELS:
        raise UserError(f"params.yaml: train_erm.arch must be one of {', '.join(MODELS)}, got {arch!r}")
    return MODELS[arch](num_classes=num_classes)
