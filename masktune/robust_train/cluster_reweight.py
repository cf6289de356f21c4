"""ClusterFix's training (Capitani et al., WACV 2024), as a trainer of any groups file (`cluster_reweight`):
the network of train_erm from the same start as ERM, one linear pseudo-label head per class predicting
each row's group within its class, and the target loss re-weighted per group by how hard its rows'
pseudo-labels are. With ClusterFix's own clusters (masktune/group_inference/clusterfix.py) this is
ClusterFix; with any other groups (ExMap's, JTT's error set, the true groups) the same rule on them.
No group labels for training; model selection by the pair's `selection`.

Followed as the public code, ICCV11624/ICCV11624 (file and line of each detail, `trainers/cfix.py`):
- the network: a shared backbone, the target head, and one pseudo-label head of k outputs per class
  (models/resnet.py `ResNet18Cfix`: `pfc0`, `pfc1`, Xavier-uniform weights and bias 0.01); a sample's
  pseudo-label is predicted by its own class's head (`pseudo[target==1] -= k`, L383); k here is the
  largest number of groups of a class (ClusterFix's: `clusters_per_class`);
- loss (`update`, L318-338, `train`, L374-394): per-sample target cross-entropy times the sample's
  weight, averaged, plus beta x the unweighted mean pseudo-label cross-entropy;
- weights (`get_cluster_weights`, L188-206, `compute_stats`, L219-258): each training sample keeps its
  latest pseudo-head loss (written before the step on its batch); a cluster's loss is the mean over
  its samples seen so far; per cluster w_c = (its share of the summed cluster losses) x (N / its
  size); the batch's new weights are normalised to mean 1, mixed with the stored ones with momentum
  0.3 (stored = 0.7 stored + 0.3 new), and the mixed weights, normalised to mean 1 within the batch,
  multiply the target losses;
- Adam, lr 1e-4, weight decay 1e-2, batch 256, 100 epochs, cosine schedule with T_max = 100, stepped
  per epoch (run.py L82-95, configurations/run_cfix_*.json).
Known defects of the official code, each fixed behind a param that defaults to the fix:
- `update_val` (L340-358) writes the validation pseudo losses into the *training* loss buffer at the
  validation rows' indices (`cluster_reweight.val_losses_into_train_buffer`, default false);
- `compute_stats` loops over every cluster and every training sample at every step, O(N K)
  (`cluster_reweight.statistics: incremental`, O(batch), the same numbers; `recompute` is the official
  loop);
- nothing is seeded (`cluster_reweight.seed`; null draws a seed and records it);
- checkpoints are selected by true validation groups (`best_avg_acc`, `best_worst_acc`, L433-442):
  here by the pair's `selection` (`average` by default, ✗; `unbiased` or `worst_group`, ✓).
ClusterFix's cluster weights follow every batch's losses in order: it trains as one process, in float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masktune.config.fields import SEED_OR_RANDOM, Bool, Choice, Number
from masktune.config.params import param
from masktune.data.splits import Split
from masktune.groups import Groups
from masktune.methods import Spec
from masktune.robust_train.base import RobustTrainConfig, Trainer
from masktune.train.network import OPTIMIZERS
from masktune.train.objective import Objective


class ClusterWeights:
    """The per-sample weights of ClusterFix's target loss (`get_cluster_weights`, `compute_stats`).

    Keeps each training sample's latest pseudo-head loss and, per cluster, the sum and count of those
    seen; `incremental` updates them by the batch's change (O(batch)), `recompute` redoes the official
    per-cluster loop over all N samples at every step (O(N K)): the same cluster losses to rounding.
    """

    def __init__(self, clusters: np.ndarray, num_clusters: int, momentum: float, incremental: bool = True):
        self.clusters = torch.as_tensor(np.asarray(clusters), dtype=torch.long)
        if (self.clusters < 0).any() or (self.clusters >= num_clusters).any():
            raise ValueError(f"cluster ids must be in 0..{num_clusters - 1}")
        self.num_clusters, self.momentum, self.incremental = num_clusters, momentum, incremental
        counts = torch.bincount(self.clusters, minlength=num_clusters).double()
        self.size_weight = len(self.clusters) / counts          # N / |cluster| (inf for an empty one: never read)
        self.weights = torch.ones(len(self.clusters), dtype=torch.float64)
        self.losses = torch.full((len(self.clusters),), float("nan"), dtype=torch.float64)
        self.loss_sum = torch.zeros(num_clusters, dtype=torch.float64)
        self.seen = torch.zeros(num_clusters, dtype=torch.float64)
        self.cluster_losses = torch.zeros(num_clusters, dtype=torch.float64)

    def record(self, rows: torch.Tensor, losses: torch.Tensor) -> None:
        """Store the latest pseudo-head losses of `rows` (distinct) and update the cluster losses."""
        rows, losses = torch.as_tensor(rows, dtype=torch.long), losses.detach().double().cpu()
        if self.incremental:
            old = self.losses[rows]
            was_seen = ~torch.isnan(old)
            clusters = self.clusters[rows]
            self.loss_sum.index_add_(0, clusters, losses - torch.where(was_seen, old, 0.0))
            self.seen.index_add_(0, clusters, (~was_seen).double())
            self.losses[rows] = losses
            seen = self.seen > 0
            self.cluster_losses[seen] = self.loss_sum[seen] / self.seen[seen]
        else:
            self.losses[rows] = losses
            for cluster in range(self.num_clusters):  # the official loop, every step
                members = self.losses[self.clusters == cluster]
                members = members[~torch.isnan(members)]
                if len(members):
                    self.cluster_losses[cluster] = members.mean()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What changes during training (each sample's latest loss and weight, the cluster statistics):
        for the epoch journal."""
        return {name: getattr(self, name).clone() for name in ("weights", "losses", "loss_sum", "seen", "cluster_losses")}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            getattr(self, name).copy_(value)

    def cluster_weights(self) -> torch.Tensor:
        """w_c = (cluster c's share of the summed cluster losses) x (N / |c|), per cluster."""
        return self.cluster_losses / self.cluster_losses.sum() * self.size_weight

    def batch_weights(self, rows: torch.Tensor) -> torch.Tensor:
        """The weights of `rows`' target losses: new weights (mean 1 in the batch) mixed into the stored
        ones with `momentum`, stored, and returned normalised to mean 1 within the batch."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        new = self.cluster_weights()[self.clusters[rows]]
        new = new / new.mean()
        mixed = (1 - self.momentum) * self.weights[rows] + self.momentum * new
        self.weights[rows] = mixed
        return mixed / mixed.mean()


class PseudoHeads(nn.Module):
    """One linear pseudo-label head of k outputs per class on the shared features; each sample's
    logits come from its own class's head (official `pfc0`/`pfc1`, Xavier-uniform, bias 0.01)."""

    def __init__(self, in_features: int, num_classes: int, k: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(in_features, k) for _ in range(num_classes))
        for head in self.heads:
            nn.init.xavier_uniform_(head.weight)
            nn.init.constant_(head.bias, 0.01)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([head(features) for head in self.heads], dim=1)  # (B, classes, k)
        return logits[torch.arange(len(labels), device=labels.device), labels]


class ClusterReweight(Objective):
    """ClusterFix's loss and weights over a groups file's training groups."""

    data_parallel = False
    precisions = ("float32",)

    def __init__(self, heads: PseudoHeads, weights: ClusterWeights, targets: dict[str, np.ndarray], beta: float,
                 val: Split | None = None, eval_batch_size: int = 256):
        self.heads, self.weights, self.targets, self.beta = heads, weights, targets, beta
        self.val, self.eval_batch_size = val, eval_batch_size  # val set: the official defect (see the module)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def epoch_data(self, data: Split, generator: torch.Generator) -> tuple[Split, torch.Generator]:
        self.heads.train()  # the network is set to train mode by the loop; its heads with it
        return data, generator

    def batch_loss(self, network, model, inputs, targets, rows, amp):
        pseudo = torch.from_numpy(self.targets["train"][rows]).to(targets.device)
        features = model.features(inputs)
        logits = model.classifier(features)
        pseudo_losses = F.cross_entropy(self.heads(features, targets), pseudo, reduction="none")
        self.weights.record(torch.from_numpy(rows), pseudo_losses)
        weights = self.weights.batch_weights(torch.from_numpy(rows)).to(targets.device, logits.dtype)
        target_loss = (F.cross_entropy(logits, targets, reduction="none") * weights).mean()
        pseudo_loss = pseudo_losses.mean()
        return logits, target_loss + self.beta * pseudo_loss, {"target_loss": target_loss, "pseudo_loss": pseudo_loss}

    def end_epoch(self, model: nn.Module, device: torch.device) -> None:
        if self.val is not None:
            self._leak_validation_losses(model, device)

    @torch.no_grad()
    def _leak_validation_losses(self, model: nn.Module, device: torch.device) -> None:
        """The official `update_val`: validation pseudo losses stored at the same row numbers of the
        *training* buffer (rows beyond the training set are dropped)."""
        model.eval()
        self.heads.eval()
        n_train = len(self.weights.losses)
        for inputs, index in self.val.batches(self.eval_batch_size, device):
            keep = index < n_train
            targets = torch.from_numpy(np.asarray(self.val.labels)[index]).to(device)
            pseudo = torch.from_numpy(self.targets["val"][index]).to(device)
            losses = F.cross_entropy(self.heads(model.features(inputs), targets), pseudo, reduction="none")
            self.weights.record(torch.from_numpy(index[keep]), losses[torch.from_numpy(keep).to(device)])
        model.train()
        self.heads.train()

    def state_dict(self) -> dict:
        """The heads and the weights' statistics (fit's epoch journal keeps them beside the network)."""
        return {"heads": self.heads.state_dict(), "weights": self.weights.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        self.weights.load_state_dict(state["weights"])

    def summary(self) -> dict:
        return {"final_cluster_weights": [round(w, 6) for w in self.weights.cluster_weights().tolist()]}


@dataclass(frozen=True, kw_only=True)
class ClusterReweightConfig(RobustTrainConfig):
    """ClusterFix's training: cluster re-weighting and pseudo-label heads, with its own optimiser and schedule."""
    beta: float = param("cluster_reweight.beta", Number(0.0, recipe=True))
    weight_momentum: float = param("cluster_reweight.momentum", Number(0.0, 1.0))
    optimizer: str = param("cluster_reweight.optimizer", Choice(options=OPTIMIZERS, recipe=True))
    lr_schedule: str = param("cluster_reweight.lr_schedule", Choice(options=("constant", "cosine"), recipe=True))
    statistics: str = param("cluster_reweight.statistics", Choice(options=("incremental", "recompute")))
    val_losses_into_train_buffer: bool = param("cluster_reweight.val_losses_into_train_buffer", Bool())
    seed: int | None = param("cluster_reweight.seed", SEED_OR_RANDOM)  # random: drawn and recorded


class ClusterReweightTrainer(Trainer):
    name = "cluster_reweight"
    title = "ClusterFix's cluster re-weighting"
    data_parallel = False

    def objective(self, config, groups: Groups, model: nn.Module, val: Split) -> Objective:
        ranks, num_classes = groups.within_class(), model.classifier.out_features
        per_class = int(np.bincount(groups.classes, minlength=num_classes).max())
        heads = PseudoHeads(model.classifier.in_features, num_classes, per_class).to(next(model.parameters()).device)
        weights = ClusterWeights(groups.train, groups.count, config.weight_momentum,
                                 incremental=config.statistics == "incremental")
        return ClusterReweight(heads, weights, {"train": ranks[groups.train], "val": ranks[groups.val]}, config.beta,
                               val if config.val_losses_into_train_buffer else None, config.eval_batch_size)

    def describe(self, config, groups: Groups, rows) -> str:
        return (f"{groups.count} groups, beta {config.beta}, {config.optimizer} lr {config.lr}, "
                f"{config.lr_schedule} schedule")


TRAINER = ClusterReweightTrainer()
SPEC = Spec(name="cluster_reweight", role="robust_train", family="robust_train", title="ClusterFix's re-weighting",
            configs={"robust_train": ClusterReweightConfig},
            paper_pairs={"clusterfix": "ClusterFix (Capitani et al., 2024)"})
