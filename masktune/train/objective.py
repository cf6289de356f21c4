"""The objective of a training run: the one hook a method overrides.

As facebookresearch/BalancingGroups `models.py` (ERM computes each batch's loss in one method; GroupDRO and
JTT override only that), every training run here is the same loop (`train.loop.train_epoch` inside
`train.fit.fit`) and differs only in its `Objective`: ERM's is the batch's mean cross-entropy, GroupDRO's
(masktune/robust_train/groupdro.py) its online group weights, ClusterFix's
(masktune/robust_train/cluster_reweight.py) its per-cluster weights and pseudo-label heads. An objective
may also choose the rows of each epoch (GroupDRO's group-balanced sampler) and keep state from batch to
batch, which the epoch journal saves with the network.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masktune.data.splits import Split
from masktune.precision import MixedPrecision


class Objective:
    """ERM: each batch's mean cross-entropy, one shuffled pass over the training rows per epoch."""

    # Whether a batch's loss is a mean over its rows, so that DDP's gradient average over the ranks' parts
    # of a batch equals one process's gradient (masktune.distributed); a loss with state across the whole
    # batch (GroupDRO's group weights, ClusterFix's cluster weights) runs as one process.
    data_parallel = True
    precisions = ("float32", "bfloat16", "float16")
    # Whether `batch_loss` returns class logits (the epoch's training accuracy); a self-supervised
    # objective (masktune/group_inference/ssl.py) returns None instead.
    classifies = True

    def parameters(self) -> list[nn.Parameter]:
        """Trainable tensors beside the network's (ClusterFix's pseudo-label heads), optimised with it."""
        return []

    def epoch_data(self, data: Split, generator: torch.Generator) -> tuple[Split, torch.Generator | None]:
        """The rows of one epoch: the split and the generator that shuffles it (None: in the split's order)."""
        return data, generator

    def batch_loss(self, network: nn.Module, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   rows: np.ndarray, amp: MixedPrecision) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(logits, the loss to step on, other numbers to log) of one batch; `network` is `model` as it
        trains (under DDP, its wrapper), `rows` the training rows of the batch. Logits are None where the
        objective does not classify (`classifies`)."""
        with amp.autocast():
            logits = network(inputs)
        return logits, F.cross_entropy(logits.float(), targets), {}

    def end_epoch(self, model: nn.Module, device: torch.device) -> None:
        """After each epoch's training pass (ClusterFix's official validation-loss defect)."""

    def state_dict(self) -> dict:
        """What changes from batch to batch, for the epoch journal."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        """What the trained run reports of its objective (dvclive summary)."""
        return {}


ERM = Objective()
