"""ClusterFix (Capitani et al., WACV 2024), its first half: pseudo-labels from k-means on the features of a
frozen backbone, as groups (stages `clusterfix_features@<name>`, masktune/group_inference/clusterfix_features.py,
and `clusterfix_clusters@<name>`, here: the clustering needs no network): per class, its k clusters. Its second half, the training that re-weights each cluster by how hard its pseudo-labels
are, is the trainer `cluster_reweight` (masktune/robust_train/cluster_reweight.py), which reads any groups
file. No group labels.

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
- nothing is seeded in the official code (`clusterfix.seed`; null draws a seed and records it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from masktune.config.fields import SEED_OR_RANDOM, Int
from masktune.config.params import param
from masktune.errors import UserError
from masktune.groups import Groups, make_groups

KMEANS_TOL = 1e-4        # kmeans_pytorch's default tol: stop when the squared centroid shift is below it
KMEANS_MAX_ITER = 300    # kmeans_pytorch has no cap; scikit-learn's default
TITLE = "ClusterFix's clusters"
# whose features are clustered: ERM's model | the self-supervised one trained here | ImageNet's, from a file
BACKBONES = ("erm", "ssl", "resnet18", "resnet50")


@dataclass(frozen=True, kw_only=True)
class ClusterFixClustersConfig:
    clusters_per_class: int = param("clusterfix.clusters_per_class", Int(1, recipe=True))
    seed: int | None = param("clusterfix.seed", SEED_OR_RANDOM)  # random: drawn and recorded (official: unseeded)



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


def clusterfix_groups(pseudo: PseudoLabels, labels: dict[str, np.ndarray], class_names: tuple[str, ...],
                      how: str) -> Groups:
    """The train and val clusters as a groups file: cluster j of class c is group c * k + j."""
    names = [f"{name}_cluster{j}" for name in class_names for j in range(pseudo.k)]
    classes = [c for c in range(pseudo.num_classes) for _ in range(pseudo.k)]
    return make_groups({split: pseudo.ids[split] for split in ("train", "val")}, labels, names, classes,
                       inference="clusterfix", description=f"ClusterFix clusters ({how})", uses_group_labels=False,
                       title=TITLE)
