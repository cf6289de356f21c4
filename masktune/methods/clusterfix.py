"""ClusterFix (Capitani et al., WACV 2024): pseudo-labels from k-means on the features of a frozen
backbone, then one training run that re-weights each cluster by how hard its pseudo-labels are to
predict. No group labels for training. Stages `clusterfix_features@<name>` (the features),
`clusterfix_clusters@<name>` (the pseudo-labels) and `clusterfix_train@<name>` (the model).

Followed as the public code, ICCV11624/ICCV11624 (a descendant of BPA, skynbe/pseudo-attributes),
file and line of each detail (`trainers/cfix.py` unless named):
- features: L2-normalised global-average-pooled backbone features of train (eval transform), val and
  test (`_extract_features`, L115-147; the extraction script that wrote them is not published);
- pseudo-labels: per class, k-means with cosine distance (kmeans_pytorch, `distance='cosine'`) on the
  training features, k = `k` (8) per class; validation and test points of that class go to the nearest
  training centroid (`kmeans_predict`); cluster ids are offset by class x k (`_cluster_features`,
  L149-171). Cosine k-means with mean centroids and spherical k-means (normalised centroids) make the
  same assignments, since the cosine of a point to a centroid does not depend on the centroid's norm;
  kmeans_pytorch starts from k random training points and stops when the centroids move less than
  1e-4 (squared summed shift), as `spherical_kmeans` here, seeded;
- the network: a shared backbone, the target head, and one pseudo-label head of k outputs per class
  (models/resnet.py `ResNet18Cfix`: `pfc0`, `pfc1`, Xavier-uniform weights and bias 0.01); a sample's
  pseudo-label is predicted by its own class's head (`pseudo[target==1] -= k`, L383);
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
  validation rows' indices (`clusterfix.val_losses_into_train_buffer`, default false);
- `compute_stats` loops over every cluster and every training sample at every step, O(N K)
  (`clusterfix.statistics: incremental`, O(batch), the same numbers; `recompute` is the official
  loop);
- nothing is seeded (`clusterfix.seed`; null draws a seed and records it);
- checkpoints are selected by true validation groups (`best_avg_acc`, `best_worst_acc`, L433-442):
  here by average validation accuracy (✗), or `clusterfix.selection: worst_group | unbiased` (✓).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masktune.data.splits import Split
from masktune.errors import UserError
from masktune.methods.dfr import penultimate_features
from masktune.methods.selection import SelectedOnValidation
from masktune.models import build_model
from masktune.models.checkpoint import load_checkpoint
from masktune.models.pretrained import load_imagenet_weights
from masktune.train.loop import progress

KMEANS_TOL = 1e-4        # kmeans_pytorch's default tol: stop when the squared centroid shift is below it
KMEANS_MAX_ITER = 300    # kmeans_pytorch has no cap; scikit-learn's default


def resolve_seed(seed: int | None) -> int:
    """`seed`, or a fresh one drawn from the OS when it is None (the official code seeds nothing): the
    stage records the seed it used, so an unseeded run can still be repeated."""
    if seed is not None:
        return seed
    import secrets

    drawn = secrets.randbelow(2 ** 31)
    print(f"ClusterFix: clusterfix.seed is null, drew seed {drawn} (recorded in the stage's metrics)")
    return drawn


def feature_network(backbone: str, erm_checkpoint: str | Path, weights_path: str | Path | None, num_classes: int,
                    device: torch.device) -> nn.Module:
    """The frozen network whose penultimate features ClusterFix clusters: the ERM model ("erm", the
    MNIST-family setting), or torchvision's ImageNet ResNet-18 ("resnet18", 512-d global average pool:
    the official Waterbirds backbone, and here CelebA's, whose official Barlow Twins ResNet-18 is not
    published)."""
    if backbone == "erm":
        model, _ = load_checkpoint(erm_checkpoint, device)
        return model.eval()
    model = load_imagenet_weights(build_model(backbone, num_classes), backbone, weights_path,
                                  param="clusterfix.weights_path", instead="set clusterfix.backbone: erm")
    return model.to(device).eval()


def split_features(network: nn.Module, data: Split, batch_size: int, device: torch.device, desc: str) -> np.ndarray:
    """L2-normalised penultimate features of every row of `data` (official `_extract_features`)."""
    return l2_normalise(penultimate_features(network, data, batch_size, device, desc))


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (torch.nn.functional.normalize, eps 1e-12), as the official features."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the centroid of highest cosine similarity for each row (kmeans_predict, 'cosine');
    the first on ties."""
    return (l2_normalise(x) @ l2_normalise(centroids).T).argmax(axis=1)


def spherical_kmeans(x: np.ndarray, k: int, rng: np.random.Generator, init: np.ndarray | None = None,
                     max_iter: int = KMEANS_MAX_ITER, tol: float = KMEANS_TOL) -> tuple[np.ndarray, np.ndarray]:
    """k-means with cosine similarity (Lloyd's iterations: assign each row to its most similar
    centroid, move each centroid to the normalised mean of its rows), from k distinct random rows or
    from `init`. An emptied cluster restarts from the row least similar to its centroid (kmeans_pytorch
    would produce a NaN centroid). Returns (labels, unit-norm centroids)."""
    x = l2_normalise(x).astype(np.float64)
    if not 1 <= k <= len(x):
        raise UserError(f"ClusterFix: cannot make {k} clusters of {len(x)} feature vectors "
                        "(lower clusterfix.clusters_per_class)")
    centroids = (x[rng.choice(len(x), size=k, replace=False)] if init is None
                 else l2_normalise(init).astype(np.float64))
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(max_iter):
        similarity = x @ centroids.T
        labels = similarity.argmax(axis=1)
        moved = np.zeros_like(centroids)
        np.add.at(moved, labels, x)
        for empty in np.flatnonzero(np.bincount(labels, minlength=k) == 0):
            farthest = int(similarity[np.arange(len(x)), labels].argmin())
            labels[farthest], moved[empty] = empty, x[farthest]
        moved = l2_normalise(moved).astype(np.float64)
        shift = float(np.sqrt(((moved - centroids) ** 2).sum(axis=1)).sum())
        centroids = moved
        if shift ** 2 < tol:
            break
    return (x @ centroids.T).argmax(axis=1), centroids


@dataclass(frozen=True)
class PseudoLabels:
    """Cluster ids per split, global (class c's clusters are c*k .. c*k + k - 1)."""
    k: int
    num_classes: int
    ids: dict[str, np.ndarray]

    @property
    def num_clusters(self) -> int:
        return self.k * self.num_classes


def pseudo_labels(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], k: int, num_classes: int,
                  seed: int) -> PseudoLabels:
    """ClusterFix's pseudo-labels: per class, spherical k-means on the training features; the other
    splits' points of that class assigned to the nearest training centroid (`_cluster_features`)."""
    rng = np.random.default_rng(seed)
    ids = {split: np.full(len(y), -1, dtype=np.int64) for split, y in labels.items()}
    for c in range(num_classes):
        train_rows = np.flatnonzero(labels["train"] == c)
        if len(train_rows) < k:
            raise UserError(f"ClusterFix: class {c} has {len(train_rows)} training images, fewer than "
                            f"clusterfix.clusters_per_class = {k}")
        clusters, centroids = spherical_kmeans(features["train"][train_rows], k, rng)
        ids["train"][train_rows] = c * k + clusters
        for split, split_labels in labels.items():
            if split != "train":
                rows = np.flatnonzero(split_labels == c)
                ids[split][rows] = c * k + nearest_centroid(features[split][rows], centroids)
    return PseudoLabels(k, num_classes, ids)


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


@dataclass
class ClusterFixTraining:
    """What one ClusterFix epoch needs beside the network: the heads, the weights, the pseudo-labels."""
    heads: PseudoHeads
    weights: ClusterWeights
    pseudo: PseudoLabels
    beta: float
    val: Split | None = None   # set: the official defect, validation losses into the training buffer
    eval_batch_size: int = 256

    def state_dict(self) -> dict:
        """The heads and the weights' statistics (fit's epoch journal keeps them beside the network)."""
        return {"heads": self.heads.state_dict(), "weights": self.weights.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        self.weights.load_state_dict(state["weights"])

    def within_class(self, split: str, rows: np.ndarray) -> np.ndarray:
        """Pseudo-label targets of the heads: cluster id minus class x k."""
        return self.pseudo.ids[split][rows] % self.pseudo.k

    def epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, data: Split, batch_size: int,
              generator: torch.Generator, device: torch.device, desc: str, amp=None) -> dict[str, float]:
        """One shuffled pass with ClusterFix's loss (the signature of `train.loop.train_epoch`, for `fit`).
        float32 only (`amp` is fit's float32 default: clusterfix_train has no precision param)."""
        if amp is not None and amp.precision != "float32":
            raise ValueError("ClusterFix trains in float32 only")
        model.train()
        self.heads.train()
        totals = {"loss": 0.0, "target_loss": 0.0, "pseudo_loss": 0.0, "accuracy": 0.0}
        bar = progress(data.batches(batch_size, device, generator), desc, total=-(-len(data) // batch_size))
        for inputs, index in bar:
            targets = torch.from_numpy(np.asarray(data.labels)[index]).to(device)
            pseudo = torch.from_numpy(self.within_class("train", index)).to(device)
            features = model.features(inputs)
            logits = model.classifier(features)
            pseudo_losses = F.cross_entropy(self.heads(features, targets), pseudo, reduction="none")
            self.weights.record(torch.from_numpy(index), pseudo_losses)
            weights = self.weights.batch_weights(torch.from_numpy(index)).to(device, logits.dtype)
            target_loss = (F.cross_entropy(logits, targets, reduction="none") * weights).mean()
            pseudo_loss = pseudo_losses.mean()
            loss = target_loss + self.beta * pseudo_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("target_loss", target_loss), ("pseudo_loss", pseudo_loss)):
                totals[key] += value.item() * len(index)
            totals["accuracy"] += (logits.argmax(1) == targets).sum().item()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if self.val is not None:
            self._leak_validation_losses(model, device)
        return {key: value / len(data) for key, value in totals.items()}

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
            pseudo = torch.from_numpy(self.within_class("val", index)).to(device)
            losses = F.cross_entropy(self.heads(model.features(inputs), targets), pseudo, reduction="none")
            self.weights.record(torch.from_numpy(index[keep]), losses[torch.from_numpy(keep).to(device)])
        model.train()
        self.heads.train()


def make_adam(parameters, lr: float, weight_decay: float) -> torch.optim.Adam:
    """The official optimiser (run.py L85): Adam with L2 weight decay (not AdamW)."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


class ClusterFix(SelectedOnValidation):
    name = "clusterfix"
    kind = "clusterfix"
    title = "ClusterFix (Capitani et al., 2024)"


