"""LfF, Learning from Failure (Nam, Cha, Ahn, Lee, Shin, NeurIPS 2020, arXiv 2007.02561), as an `Objective`:
a biased network trained with the generalized cross-entropy (GCE) to amplify the shortcut, and the debiased
network (the pipeline's `model`) trained with cross-entropy re-weighted towards the examples the biased one
finds relatively hard. No group labels; the biased network's mistakes can serve later as inferred groups
(`biased_mistakes`).

Followed as the official code, alinlab/LfF at e66796e (file and line of each detail):
- GCE (module/loss.py L8-26, `GeneralizedCELoss`, q = 0.7 by default, L10, and train.py L134 builds it with
  the default): per example, cross-entropy x q x p_y^q, p_y the softmax probability of the label, *detached*
  (L20: `Yg.squeeze().detach()**self.q)*self.q`) and multiplied by q. Its gradient is therefore
  q x p_y^q x (softmax - onehot): q times the gradient of the GCE of Zhang & Sabuncu, (1 - p_y^q) / q, and its
  value is not that GCE's value; `generalized_cross_entropy` returns exactly the official per-example values;
- per-example EMA of each network's cross-entropy (util.py L33-47 `EMA`, alpha 0.7 in train.py L136-137),
  indexed by training example: the first update of an example sets it to the loss (the official
  `(1 - alpha * updated) * data` with `updated` 0, L42-43), the next ones alpha * old + (1 - alpha) * new;
  losses are the plain cross-entropies, detached, on the CPU (train.py L188-189), float32;
- order within a step (train.py L182-241): both forwards (biased first), both per-example CE, both EMA
  updates with this batch's losses (L199-201), then the batch's EMA values (L204-205), each divided by the
  largest EMA value of its class over *all* training examples (L214-219, `max_loss`, examples not seen yet
  count as 0), then the weight w = ce_b / (ce_b + ce_d + 1e-8) (L222), then the loss
  mean(GCE(biased logits)) + mean(CE(debiased logits) x w) (L226-233), one backward, both networks step;
- w is built from detached EMA values (L188-189, L204-205): no gradient flows through it, so the biased
  network gets gradient from its GCE only and the debiased network from its weighted CE only;
- two optimizers with the same class and hyper-parameters (train.py L94-128; Colored MNIST: Adam, lr 1e-3,
  weight decay 0, config.py L37-40), both zeroed, one backward, both stepped (L237-241). Adam and SGD
  update every parameter from its own gradient and state only, so one optimizer holding both networks'
  parameters (the debiased model's and `LfFObjective.parameters()`) makes the same updates: that is how the
  pipeline holds them (masktune.train.network builds one optimizer over model + objective parameters). It
  stops being the same only if something couples parameters: a global-norm gradient clipping, or a
  learning-rate schedule meant for one network only (the official code has neither);
- no model selection: the official run keeps the debiased network of the last step (train.py L305-317).
Deviations, each for a reason:
- the official code stops with `NameError` when a loss or weight is NaN (train.py L183-232); here no check
  runs per batch (each would be a device sync). The one NaN the formula can make, a class whose EMA losses
  are all exactly 0 (float32 cross-entropy is 0 beyond a logit margin of about 17), gives normalised 0
  instead of 0/0 (so w = 0 when both are 0, where the official run would have stopped);
- the EMAs are indexed by the pipeline's training rows (`rows`), the official by the dataset index
  (`IdxDataset`, data/util.py L14-22): the same thing for an unresampled training split.
The EMAs follow every batch in order across the whole training set: LfF trains as one process.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masktune.config.fields import Choice, Number
from masktune.config.params import param
from masktune.data.splits import Split
from masktune.groups import Groups
from masktune.methods import Spec
from masktune.models.pretrained import initial_model
from masktune.robust_train.base import RobustTrainConfig, Trainer
from masktune.train.network import OPTIMIZERS
from masktune.train.objective import Objective

OFFICIAL_Q = 0.7          # module/loss.py L10
OFFICIAL_EMA_ALPHA = 0.7  # train.py L136-137
OFFICIAL_EPS = 1e-8       # train.py L222


def generalized_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, q: float = OFFICIAL_Q) -> torch.Tensor:
    """The official GCE per example (module/loss.py L14-26): cross-entropy x q x p_y^q, p_y = softmax(logits)
    at the target, detached; float32 for reduced-precision logits."""
    logits = logits.float()
    target_probability = F.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    weight = target_probability.detach() ** q * q
    return F.cross_entropy(logits, targets, reduction="none") * weight


def relative_difficulty_weights(loss_biased: torch.Tensor, loss_debiased: torch.Tensor,
                                eps: float = OFFICIAL_EPS) -> torch.Tensor:
    """w = loss_b / (loss_b + loss_d + eps) (train.py L222). The official code applies it to each network's
    EMA losses divided by their class's largest (`LossEMA.normalised`)."""
    return loss_biased / (loss_biased + loss_debiased + eps)


class LossEMA:
    """The official per-example EMA of a network's losses (util.py L33-47): one float32 value per training
    example, its class label for the per-class maximum. Kept on the CPU, as the official code keeps it."""

    def __init__(self, labels: np.ndarray | torch.Tensor, alpha: float = OFFICIAL_EMA_ALPHA,
                 num_classes: int | None = None):
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).cpu()
        self.alpha = alpha
        self.num_classes = int(self.labels.max()) + 1 if num_classes is None else num_classes
        self.parameter = torch.zeros(len(self.labels))
        self.updated = torch.zeros(len(self.labels))

    def update(self, losses: torch.Tensor, index: torch.Tensor | np.ndarray) -> None:
        """parameter[i] <- alpha * parameter[i] + (1 - alpha * updated[i]) * loss (util.py L41-43): the first
        update of an example sets it to the loss. `index`: distinct rows (a batch)."""
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        losses = losses.detach().float().cpu()
        self.parameter[index] = self.alpha * self.parameter[index] + (1 - self.alpha * self.updated[index]) * losses
        self.updated[index] = 1

    def class_max(self) -> torch.Tensor:
        """(num_classes,) the largest EMA value of each class over all examples (util.py L45-47 `max_loss`,
        for every class at once; 0 for a class with no example)."""
        return torch.zeros(self.num_classes).scatter_reduce(0, self.labels, self.parameter, "amax")

    def normalised(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The EMA values of `index`, each divided by its class's largest (train.py L204-219); 0 where that
        largest is 0 (the official 0/0 NaN, see the module)."""
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        values, largest = self.parameter[index], self.class_max()[self.labels[index]]
        return torch.where(largest > 0, values / torch.where(largest > 0, largest, 1), 0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"parameter": self.parameter.clone(), "updated": self.updated.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in ("parameter", "updated"):
            if state[name].shape != getattr(self, name).shape:
                raise ValueError(f"LossEMA: saved {name} has shape {tuple(state[name].shape)}, "
                                 f"this one {tuple(getattr(self, name).shape)}")
            getattr(self, name).copy_(state[name])


class LfFObjective(Objective):
    """LfF's joint step: the biased network this objective owns (built by `make_network()`, the same
    architecture as the model) trained with GCE, the model with the relative-difficulty weighted CE.

    `train_labels`: the label of every training row (the EMAs' per-class maxima). The optimizer must hold
    `parameters()` (the biased network's) beside the model's; see the module for why one optimizer is the
    official pair of optimizers. `batch_loss` returns the model's logits, the loss to step on and
    {gce_loss, weighted_ce, ce_biased, ce_debiased, mean_weight} (batch means) to log."""

    data_parallel = False  # the EMAs follow every batch of the whole training set in order

    def __init__(self, make_network: Callable[[], nn.Module], train_labels: np.ndarray, *, q: float = OFFICIAL_Q,
                 ema_alpha: float = OFFICIAL_EMA_ALPHA, eps: float = OFFICIAL_EPS, num_classes: int | None = None,
                 device: torch.device | str | None = None):
        self.biased = make_network()
        if device is not None:
            self.biased = self.biased.to(device)
        self.q, self.eps = q, eps
        self.ema_biased = LossEMA(train_labels, ema_alpha, num_classes)
        self.ema_debiased = LossEMA(train_labels, ema_alpha, self.ema_biased.num_classes)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.biased.parameters())

    def epoch_data(self, data: Split, generator: torch.Generator) -> tuple[Split, torch.Generator]:
        self.biased.train()  # the loop sets the model to train mode; the biased network with it
        return data, generator

    def weights(self, rows: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The relative-difficulty weights of `rows` from the current EMAs (train.py L203-222), on the CPU."""
        return relative_difficulty_weights(self.ema_biased.normalised(rows), self.ema_debiased.normalised(rows),
                                           self.eps)

    def batch_loss(self, network, model, inputs, targets, rows, amp):
        with amp.autocast():
            logits_biased = self.biased(inputs)
            logits = network(inputs)
        logits_biased, logits_float = logits_biased.float(), logits.float()
        ce_biased = F.cross_entropy(logits_biased, targets, reduction="none")
        ce_debiased = F.cross_entropy(logits_float, targets, reduction="none")
        rows = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        self.ema_biased.update(ce_biased, rows)
        self.ema_debiased.update(ce_debiased, rows)
        weights = self.weights(rows).to(targets.device)
        gce = generalized_cross_entropy(logits_biased, targets, self.q).mean()
        weighted = (ce_debiased * weights).mean()
        logged = {"gce_loss": gce.detach(), "weighted_ce": weighted.detach(), "ce_biased": ce_biased.mean().detach(),
                  "ce_debiased": ce_debiased.mean().detach(), "mean_weight": weights.mean()}
        return logits, gce + weighted, logged

    def state_dict(self) -> dict:
        """The biased network (copies, so later steps do not change a saved state) and both EMAs."""
        return {"biased": {name: value.detach().clone() for name, value in self.biased.state_dict().items()},
                "ema_biased": self.ema_biased.state_dict(), "ema_debiased": self.ema_debiased.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.biased.load_state_dict(state["biased"])  # in place: the optimizer keeps the same parameters
        self.ema_biased.load_state_dict(state["ema_biased"])
        self.ema_debiased.load_state_dict(state["ema_debiased"])

    def summary(self) -> dict:
        """The recipe and where the EMAs ended: mean EMA loss of each network over the examples seen, and the
        mean weight the current EMAs give every training example."""
        seen = self.ema_biased.updated > 0
        if not seen.any():
            return {"q": self.q, "ema_alpha": self.ema_biased.alpha}
        weights = self.weights(torch.arange(len(seen)))[seen]
        return {"q": self.q, "ema_alpha": self.ema_biased.alpha, "examples_seen": int(seen.sum()),
                "final_mean_ema_loss_biased": round(float(self.ema_biased.parameter[seen].mean()), 6),
                "final_mean_ema_loss_debiased": round(float(self.ema_debiased.parameter[seen].mean()), 6),
                "final_mean_weight": round(float(weights.mean()), 6)}


def biased_mistakes(biased_logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """The biased network's mistakes as inferred groups, int64 per example: 2 * label for the examples it gets
    right (bias-aligned, as far as it can tell) and 2 * label + 1 for those it gets wrong (bias-conflicting),
    the convention of JTT's error groups (masktune/group_inference/jtt.py `error_groups`). `biased_logits`:
    (N, classes) logits, or (N,) predicted classes."""
    scores = biased_logits.detach().cpu().numpy() if isinstance(biased_logits, torch.Tensor) else np.asarray(biased_logits)
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    predicted = scores.argmax(1) if scores.ndim == 2 else scores
    if predicted.shape != labels.shape:
        raise ValueError(f"{len(predicted)} predictions for {len(labels)} labels")
    return 2 * labels.astype(np.int64) + (predicted != labels)


def biased_mistake_names(class_names: tuple[str, ...] | list[str]) -> list[str]:
    """Names of the `biased_mistakes` groups: "<class>_aligned" (2c), "<class>_conflicting" (2c + 1)."""
    return [f"{name}_{kind}" for name in class_names for kind in ("aligned", "conflicting")]


@dataclass(frozen=True, kw_only=True)
class LfFConfig(RobustTrainConfig):
    """A (groups, lff) pair: LfF's two networks with its recipe (`lff.*`, null values from `recipes.<dataset>.lff`).
    The pair's groups serve for their classes only (LfF reads no groups): `classes`."""
    optimizer: str = param("${trainer}.optimizer", Choice(options=OPTIMIZERS, recipe=True))
    q: float = param("${trainer}.q", Number(0.0, 1.0, exclusive_minimum=True))
    ema_alpha: float = param("${trainer}.ema_alpha", Number(0.0, 1.0))


class LfFTrainer(Trainer):
    """LfF on the training set as it is: the objective owns the biased network, built as the model is (its
    own initial draw: the official code builds both with `get_model`, train.py L91-92)."""

    name = "lff"
    title = "LfF"
    data_parallel = False

    def objective(self, config, groups: Groups, model: nn.Module, val: Split) -> LfFObjective:
        labels = np.asarray(groups.classes)[groups.train]
        device = next(model.parameters()).device
        num_classes = model.classifier.out_features
        return LfFObjective(lambda: initial_model(config.arch, num_classes, config.pretrained, config.weights_path,
                                                  device), labels, q=config.q, ema_alpha=config.ema_alpha,
                            num_classes=num_classes)

    def describe(self, config, groups: Groups, rows) -> str:
        return (f"GCE q {config.q}, loss EMA alpha {config.ema_alpha}, {config.optimizer} lr {config.lr}, "
                f"weight decay {config.weight_decay}, {config.epochs} epochs")


TRAINER = LfFTrainer()
SPEC = Spec(name="lff", role="robust_train", family="robust_train", title="LfF", configs={"robust_train": LfFConfig},
            paper_pairs={"classes": "LfF (Nam et al., 2020)"})
