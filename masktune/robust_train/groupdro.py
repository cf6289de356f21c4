"""GroupDRO (Sagawa, Koh, Hashimoto, Liang, ICLR 2020), as a trainer of any groups file: minimise the
worst group's expected loss by online exponentiated-gradient weights on the groups. With the true groups
(✓) it is the supervised reference of every paper in this field; with inferred groups (ExMap's, JTT's
error set, ClusterFix's clusters) no group label is used.

Followed as the official code, kohpangwei/group_DRO (file and line):
- the objective, `LossComputer` with `is_robust` (loss.py L39-69): per batch, the mean loss of each group
  (0 for a group absent from the batch, `compute_group_avg`), the adversary's weights
  q <- q * exp(eta * (group loss + C / sqrt(n_g))) then normalised (`compute_robust_loss`), and the loss
  q . group losses; q starts uniform (L31). eta is `groupdro.step_size` (--robust_step_size, 0.01), C the
  group adjustment `groupdro.adjustment` (--generalization_adjustment, applied when it is > 0; the
  official code adds it to the group losses in place, which changes the logged loss, not the gradient);
- `--reweight_groups` (every README command): each epoch draws N training rows with replacement, each
  row with weight N / n_g (data/dro_dataset.py L48-59, `WeightedRandomSampler`), so the groups are
  seen equally often; `groupdro.reweight_groups: false` shuffles the training set instead;
- SGD, momentum 0.9, the recipe's weight decay, constant learning rate (train.py L107-124, no
  --scheduler); the paper's point is strong regularisation: the recipes are its strong-ℓ2 settings;
- model selection with `--save_best` under `--robust`: the best worst-group validation accuracy
  (train.py L184-186), here the pair's `selection` (`worst_group`, ✓, for the supervised reference).
Groups with no training row have no loss and no weight (the official code would divide by their zero
count). The group weights follow every batch in order: GroupDRO trains as one process.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from masktune.config.fields import Bool, Number
from masktune.config.params import param
from masktune.data.splits import ResampledSplit, Split
from masktune.groups import Groups
from masktune.methods import Spec
from masktune.robust_train.base import RobustTrainConfig, Trainer
from masktune.train.objective import Objective


class GroupDRO(Objective):
    """The online GroupDRO objective over the training rows' groups (`train_groups`, one id per row)."""

    data_parallel = False

    def __init__(self, train_groups: np.ndarray, step_size: float, adjustment: float, reweight_groups: bool,
                 names: tuple[str, ...] = ()):
        present, self.groups = np.unique(np.asarray(train_groups), return_inverse=True)
        self.groups = torch.from_numpy(self.groups.astype(np.int64))
        self.names = [names[g] if names else str(int(g)) for g in present]
        self.counts = torch.bincount(self.groups, minlength=len(present)).float()
        self.step_size, self.reweight_groups = step_size, reweight_groups
        self.adjustment = adjustment / self.counts.sqrt() if adjustment > 0 else torch.zeros(len(present))
        self.q = torch.full((len(present),), 1.0 / len(present))

    def epoch_data(self, data: Split, generator: torch.Generator) -> tuple[Split, torch.Generator | None]:
        """The official group-balanced sampler: N rows drawn with replacement, weight N / n_g each, read in
        the order drawn."""
        if not self.reweight_groups:
            return data, generator
        weights = (len(self.groups) / self.counts)[self.groups].double()
        rows = torch.multinomial(weights, len(self.groups), replacement=True, generator=generator).numpy()
        return ResampledSplit(data, rows), None

    def group_losses(self, losses: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Each group's mean loss in the batch, 0 where the batch has none of it (`compute_group_avg`)."""
        groups = self.groups[torch.as_tensor(rows)].to(losses.device)
        totals = torch.zeros(len(self.q), device=losses.device).index_add(0, groups, losses)
        counts = torch.bincount(groups, minlength=len(self.q)).to(losses.dtype)
        return totals / counts.clamp(min=1)

    def batch_loss(self, network, model, inputs, targets, rows, amp):
        with amp.autocast():
            logits = network(inputs)
        losses = F.cross_entropy(logits.float(), targets, reduction="none")
        group_loss = self.group_losses(losses, rows)
        self.q, self.adjustment = self.q.to(losses.device), self.adjustment.to(losses.device)  # once: then in place
        q = self.q * torch.exp(self.step_size * (group_loss.detach() + self.adjustment))
        self.q = q / q.sum()
        return logits, group_loss @ self.q, {"mean_loss": losses.mean().detach()}

    def state_dict(self) -> dict:
        return {"q": self.q.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.q = state["q"].clone().to(self.q.device)

    def summary(self) -> dict:
        return {"group_weights": {name: round(float(w), 6) for name, w in zip(self.names, self.q.cpu())}}


@dataclass(frozen=True, kw_only=True)
class GroupDroConfig(RobustTrainConfig):
    """GroupDRO: online group weights (step size, adjustment), group-balanced sampling."""
    step_size: float = param("groupdro.step_size", Number(0.0, exclusive_minimum=True))
    adjustment: float = param("groupdro.adjustment", Number(0.0, recipe=True))
    reweight_groups: bool = param("groupdro.reweight_groups", Bool())


class GroupDROTrainer(Trainer):
    name = "groupdro"
    title = "GroupDRO (Sagawa et al., 2020)"
    data_parallel = False

    def objective(self, config, groups: Groups, model, val: Split) -> Objective:
        return GroupDRO(groups.train, config.step_size, config.adjustment, config.reweight_groups, groups.names)

    def describe(self, config, groups: Groups, rows) -> str:
        sizes = groups.sizes("train")
        return (f"{int((sizes > 0).sum())} groups (smallest {int(sizes[sizes > 0].min()):,} images), step size "
                f"{config.step_size}, adjustment {config.adjustment}, weight decay {config.weight_decay}, "
                f"{'group-balanced sampling' if config.reweight_groups else 'shuffled'}")


TRAINER = GroupDROTrainer()
SPEC = Spec(name="groupdro", role="robust_train", family="robust_train", title="GroupDRO",
            configs={"robust_train": GroupDroConfig},
            # XRM's second phase is GroupDRO on its groups, selected by their worst validation group
            paper_pairs={"true_groups": "GroupDRO, true groups (supervised reference)",
                         "xrm": "XRM (Pezeshki et al., 2024)"})
