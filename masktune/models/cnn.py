"""The small CNNs: the official MNIST network, and a tiny one for tests and data-path benchmarks."""
from __future__ import annotations

import torch
from torch import nn

from masktune.errors import UserError


def _check_input_size(model: nn.Module, inputs: tuple) -> None:
    """SmallCNN's first linear layer takes 32 x 4 x 4 = 512 features: 28 x 28 inputs (MNIST's) only.
    Any other size gets one line saying what to change, not a matrix-shape error."""
    height, width = inputs[0].shape[-2:]
    if (height, width) != (28, 28):
        raise UserError(f"small_cnn (the official MNIST network) takes 28 x 28 images, got {height} x {width}: "
                        "choose another network (-S train_erm.arch=resnet18, tiny_cnn) or resize the images to 28 "
                        "(-S prepare.folder.transforms=resize -S prepare.folder.image_size=28)")


class SmallCNN(nn.Module):
    """The official MNIST network (src/models/simple_cnn.py): four 3x3 conv+BN+ReLU, two max-pools,
    linear 512 -> 256 -> classes. Same module names, so official checkpoints' tensors line up; the
    penultimate features are the 256-d output of the first linear block."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Flatten(),
        )
        self.linear = nn.Sequential(
            nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, num_classes),
        )
        # A hook, not a test in forward: forward stays traceable (torch.fx), which BatchNorm folding needs.
        self.register_forward_pre_hook(_check_input_size)

    @property
    def classifier(self) -> nn.Linear:
        return self.linear[-1]

    def grad_cam_target_layer(self) -> nn.Module:
        """The last ReLU of the backbone, as the official `get_grad_cam_target_layer`."""
        return self.backbone[-3]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        _check_input_size(self, (x,))
        x = self.backbone(x)
        for layer in list(self.linear)[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.backbone(x))  # = classifier(features(x)), as the official forward


class TinyCNN(nn.Module):
    """Not from the paper: a few-thousand-parameter CNN for any input size whose target layer sits at
    1/32 of the input, like ResNet-50's (7 x 7 at 224 x 224). For tests and the data-path benchmarks,
    where ResNet-50's compute on a CPU would hide what is being measured."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 8, 8, stride=8), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(32, num_classes)

    @property
    def classifier(self) -> nn.Linear:
        return self.head

    def grad_cam_target_layer(self) -> nn.Module:
        return self.convs[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
