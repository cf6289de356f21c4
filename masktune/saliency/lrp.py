"""LRP relevance at the input pixels, with zennit, as ExMap computes its heatmaps (rwchakra/exmap
src/exmap/lrp.py L51-107):

- composite `EpsilonAlpha2Beta1` (zennit's: Epsilon on linear layers, Norm on sums and average pools,
  Pass on activations and batch norms) with its convolution rule replaced by ExMap's sign-symmetric
  Gamma rule, gamma = 4, on *every* convolution, the first included (L71-78);
- zennit's `ResNetCanonizer` for a torchvision ResNet (L68: batch norms merged into the convolutions,
  residual additions made explicit); for other networks (SmallCNN) its `SequentialMergeBatchNorm`, the
  part of that canonizer that applies to a plain sequence of layers;
- the output relevance is the one-hot vector of the *predicted* class (L80; any number of classes
  here, the official `torch.eye(2)` is binary only); the model in eval mode.

A module of its own: zennit (and torchvision) cost about 2 s to import, paid by ExMap's stage only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1
from zennit.core import BasicHook, stabilize
from zennit.torchvision import ResNetCanonizer
from zennit.types import Convolution


class GammaSymmetric(BasicHook):
    """ExMap's convolution rule (src/exmap/lrp.py L8-48), a zennit hook. Four modified passes of the
    layer: P = conv(x+; W+, b+) + conv(x-; W-, 0) (the positive contributions) and N = conv(x+; W-, b-)
    + conv(x-; W+, 0) (the negative ones). Where P >= |N| the positive contributions are amplified by
    1 + gamma, elsewhere the negative ones; the relevance R_j of an output is shared over the
    contributions in proportion, R_j / stabilize(alpha_j P_j + beta_j N_j), the amplified ones counting
    1 + gamma. zennit's own `Gamma` amplifies the positive weights by the sign of the plain output
    instead, which the ExMap authors found numerically unstable (L71)."""

    def __init__(self, gamma: float = 4.0):
        self.gamma = gamma

        def positive(x):
            return x.clamp(min=0)

        def negative(x):
            return x.clamp(max=0)

        def weights(keep, bias):  # a param modifier: the weight's part `keep`, the bias's part or zero
            return lambda param, name: (keep(param) if name != "bias" or bias else torch.zeros_like(param))

        def share(out_grad, outputs):
            p, n = outputs[0] + outputs[1], outputs[2] + outputs[3]
            alpha = 1 + gamma * (p >= n.abs())
            beta = 1 + gamma * (p < n.abs())
            denominator = stabilize(p * alpha + n * beta)
            return [factor * out_grad / denominator for factor in (alpha, alpha, beta, beta)]

        super().__init__(
            input_modifiers=[positive, negative, positive, negative],
            param_modifiers=[weights(positive, True), weights(negative, False),
                             weights(negative, True), weights(positive, False)],
            output_modifiers=[lambda output: output] * 4,
            gradient_mapper=share,
            reducer=lambda inputs, gradients: sum(x * g for x, g in zip(inputs, gradients)),
        )


def exmap_composite(model: nn.Module, gamma: float = 4.0) -> EpsilonAlpha2Beta1:
    """ExMap's composite for `model`: EpsilonAlpha2Beta1, its canonizer, GammaSymmetric on convolutions."""
    canonizer = ResNetCanonizer() if isinstance(model, ResNet) else SequentialMergeBatchNorm()
    composite = EpsilonAlpha2Beta1(canonizers=[canonizer])
    composite.layer_map = [(kind, GammaSymmetric(gamma) if kind is Convolution else rule)
                           for kind, rule in composite.layer_map]
    return composite


class LrpAttributor:
    """LRP relevance maps of a batch for the predicted classes: `with LrpAttributor(model, gamma) as
    lrp: relevance, predicted = lrp(inputs)`. The composite is registered once for the whole pass."""

    def __init__(self, model: nn.Module, gamma: float = 4.0, composite=None):
        self.model = model.eval().requires_grad_(False)
        self.composite = composite or exmap_composite(model, gamma)
        self._gradient = Gradient(model=self.model, composite=self.composite)

    def __enter__(self):
        self._gradient.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._gradient.__exit__(*exc)

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance (B, C, H, W), signed, as the input; predicted classes (B,). One forward pass: the
        output relevance is the one-hot vector of that pass's argmax (the canonized model's, equal to
        the model's but for rounding)."""
        def predicted_one_hot(logits: torch.Tensor) -> torch.Tensor:
            return F.one_hot(logits.argmax(dim=1), logits.shape[1]).to(logits.dtype)

        logits, relevance = self._gradient(inputs.contiguous(), predicted_one_hot)
        return relevance.detach(), logits.detach().argmax(dim=1)


def explainer(model: nn.Module, device: torch.device, *, precision: str = "float32", channels_last: bool = False,
              fold_batchnorm: bool = False, gamma: float | None = 4.0) -> LrpAttributor:
    """`explain(inputs) -> (relevance at the input pixels (B, C, H, W), predicted (B,))` of `model` with ExMap's
    rules (gamma: the Gamma rule's, 4 in ExMap); float32, the model as trained (the canonizer merges its batch
    norms itself)."""
    if precision != "float32":
        raise ValueError(f"LRP runs in float32, got {precision}")
    return LrpAttributor(model.to(device), 4.0 if gamma is None else gamma)
