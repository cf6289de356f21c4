"""LfF's Colored MNIST network (alinlab/LfF module/mlp.py, `MLP`, selected by `model_tag = "MLP"` in config.py
L59 through module/util.py L25-26): the image flattened, three Linear(., 100) + ReLU, a Linear(100, classes).

Followed as the official code (file and line of alinlab/LfF e66796e):
- layers: Linear(3 * 28 * 28, 100), ReLU, Linear(100, 100), ReLU, Linear(100, 100), ReLU in `feature`, then
  `classifier` = Linear(100, classes) (mlp.py L7-15); the module names are the official ones, so an official
  state dict loads as it is; the penultimate features are `feature`'s output, what the official
  `forward(x, return_feat=True)` returns (L17-25);
- the input: `x.view(B, -1) / 255` (L18). The official images reach the network through `ToTensor()`
  (data/util.py L45-48), already in [0, 1], so the official MLP sees pixels in [0, 1/255]: a quirk of the
  official code, with which its published results were obtained.
  The pipeline's inputs are `ToTensor`'s too (masktune.data.splits.to_input), so `official_input_scale=True`
  (the default) divides by 255 again exactly as the official; False feeds [0, 1] as they are;
- initialisation: the official code sets none: PyTorch's `nn.Linear` default (Kaiming-uniform weights with
  a = sqrt(5), uniform bias), the same rule in torch 1.4 (the official requirement) and here.
The flattening is over (channel, row, column), the order of the official `view` on a CHW tensor, whatever
the memory layout of the input (the pipeline's batches are channels-last).
"""
from __future__ import annotations

import torch
from torch import nn

from masktune.errors import UserError

INPUT_SHAPE = (3, 28, 28)
HIDDEN = 100


class NoConvolutionalLayerError(UserError, NotImplementedError):
    """A method needs a convolutional layer (XGradCAM's target) that the network does not have."""


class LfFMLP(nn.Module):
    """The official LfF MLP behind the project's model protocol: `features(x)` (B, 100) penultimate
    features, `classifier` the last Linear, `forward(x) == classifier(features(x))`."""

    def __init__(self, num_classes: int = 10, official_input_scale: bool = True):
        super().__init__()
        in_features = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2]
        self.feature = nn.Sequential(
            nn.Linear(in_features, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        )
        self.classifier = nn.Linear(HIDDEN, num_classes)
        self.official_input_scale = official_input_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != INPUT_SHAPE:
            raise UserError(f"lff_mlp (LfF's Colored MNIST MLP) takes 3 x 28 x 28 images, got "
                            f"{' x '.join(map(str, x.shape[1:]))}: choose another network or a 28 x 28 RGB dataset")
        x = torch.flatten(x, 1)  # (C, H, W) order, as the official view of a CHW tensor
        if self.official_input_scale:
            x = x / 255
        return self.feature(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def grad_cam_target_layer(self) -> nn.Module:
        raise NoConvolutionalLayerError(
            "lff_mlp is a multilayer perceptron: it has no convolutional layer whose activation XGradCAM could "
            "explain, so MaskTune's saliency masks cannot be computed with it; train a convolutional network "
            "for the masking methods, e.g. `dvc exp run -S train_erm.arch=small_cnn` (every default method on "
            "LfF's Colored MNIST: docs/results.md)")
