"""The CIFAR ResNet-32 of the official code (He et al. 2016, Sec. 4.2), the network of CIFAR-10, SVHN and Cats
vs Dogs (aliasgharkhani/Masktune src/models/resnet.py; bash_files/cifar10_masktune.sh L6, svhn_masktune.sh L6,
catsvsdogs_masktune.sh L6).

As src/models/resnet.py builds it:
- stem: 3 x 3 convolution 3 -> 16, stride 1, no bias, BatchNorm, ReLU (L84-85, L103);
- three stages of 5 basic blocks (`resnet32`: [5, 5, 5], L120-121) of 16, 32 and 64 channels, the first block
  of stages 2 and 3 with stride 2 (L86-88, L93-100); a block is conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut,
  then ReLU (L47-76);
- shortcut "option A" where the shape changes: no parameters, the input subsampled by 2 in each direction and
  zero-padded with planes // 4 channels on each side (L57-64);
- head: average pooling over the whole last map (`F.avg_pool2d(out, out.size()[3])`, L107), then
  `Linear(64, num_classes)` (L89, L109);
- initialisation: Kaiming-normal weights (fan_in, gain sqrt 2) for every Conv2d and Linear, biases and
  BatchNorm at PyTorch's defaults (`_weights_init`, L32-36, applied at L91);
- XGradCAM explains the last block of the last stage, `layer3[-1]` (`get_grad_cam_target_layer`, L112-113).
0.46M parameters for 10 classes (the table at L9-15). Module names are the official ones, so an official
state dict loads. The official `pretrained=True` branch (a local resnet32-d509ac18.th, L122-125) is not offered.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PadShortcut(nn.Module):
    """Option A: x[:, :, ::2, ::2] with `pad` zero channels before and after (the official LambdaLayer)."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, num_blocks: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, blocks, stride in zip((16, 32, 64), num_blocks, (1, 2, 2)):
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, block_stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    @property
    def classifier(self) -> nn.Linear:
        return self.linear

    def grad_cam_target_layer(self) -> nn.Module:
        """`layer3[-1]`, as the official `get_grad_cam_target_layer`."""
        return self.layer3[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-d average of the last stage's map (the official forward up to `linear`)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return out.view(out.size(0), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def resnet32(num_classes: int) -> CifarResNet:
    return CifarResNet((5, 5, 5), num_classes)
