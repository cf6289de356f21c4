"""Models, looked up by the `train_erm.arch` param. Each names its XGradCAM target layer."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from masktune.errors import UserError


class SmallCNN(nn.Module):
    """The official MNIST network (src/models/simple_cnn.py): four 3x3 conv+BN+ReLU, two max-pools,
    linear 512 -> 256 -> classes. Same module order, so official checkpoints' tensors line up."""

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

    def grad_cam_target_layer(self) -> nn.Module:
        """The last ReLU of the backbone, as the official `get_grad_cam_target_layer`."""
        return self.backbone[-3]

    def forward(self, x):
        return self.linear(self.backbone(x))


class TinyCNN(nn.Module):
    """Not from the paper: a few-thousand-parameter CNN for any input size whose target layer sits at
    1/32 of the input, like ResNet-50's (7 x 7 at 224 x 224). For tests and the data-path benchmarks,
    where ResNet-50's compute on a CPU would hide what is being measured."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 8, stride=8), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def grad_cam_target_layer(self) -> nn.Module:
        return self.features[-1]

    def forward(self, x):
        return self.head(self.features(x))


def _resnet(depth: int) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from masktune.resnet import build_resnet  # imports torchvision: only when a ResNet is built

        return build_resnet(depth, num_classes)
    return build


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet18": _resnet(18),
    "resnet50": _resnet(50),
    "tiny_cnn": TinyCNN,
}


def build_model(arch: str, num_classes: int) -> nn.Module:
    if arch not in MODELS:
        raise UserError(f"params.yaml: train_erm.arch must be one of {', '.join(MODELS)}, got {arch!r}")
    return MODELS[arch](num_classes=num_classes)
