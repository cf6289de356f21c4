"""torchvision's ResNets with the XGradCAM target layer the official code uses.

A module of its own because `import torchvision` costs about 0.8 s (it loads every model family and
its ops); only the stages that build a ResNet pay it, not the MNIST pipeline.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 50: (Bottleneck, [3, 4, 6, 3])}


class TorchvisionResNet(ResNet):
    """torchvision's ResNet (same parameter names, so torchvision's ImageNet weights load into it)
    with a `num_classes` head, as the official code builds it (src/models/resnet.py). Features: the
    global-average-pooled output of `layer4` (2048-d for ResNet-50, 512-d for ResNet-18)."""

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def grad_cam_target_layer(self) -> nn.Module:
        """`layer4[-1]`, the last residual block, as the official `get_grad_cam_target_layer`."""
        return self.layer4[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's `_forward_impl` up to the head (`forward` is torchvision's own)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def build_resnet(depth: int, num_classes: int) -> TorchvisionResNet:
    block, layers = LAYERS[depth]
    return TorchvisionResNet(block, layers, num_classes=num_classes)


def build_resnet18_cifar(num_classes: int) -> TorchvisionResNet:
    """ExMap's C-MNIST network, `cifar_resnet18` (rwchakra/exmap src/models/__init__.py L93-103):
    torchvision's ResNet-18 with a 3 x 3 stride-1 stem `Conv2d(3, 64, 3, 1, 1, bias=False)` and no
    max-pool, trained from scratch. The stem is replaced after construction, as the official code does, so
    it keeps PyTorch's default Conv2d initialisation (not torchvision's Kaiming-normal one). On 28 x 28
    inputs `layer4` is 4 x 4; features are 512-d."""
    model = build_resnet(18, num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
