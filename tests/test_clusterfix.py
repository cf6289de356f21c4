"""ClusterFix's pieces on hand-checked cases: the cluster weights and their momentum, spherical k-means
against scikit-learn, nearest-centroid assignment, the per-class pseudo-labels and heads, and the
official defect kept behind `cluster_reweight.val_losses_into_train_buffer`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.errors import UserError
from masktune.group_inference.clusterfix import nearest_centroid, pseudo_labels, spherical_kmeans
from masktune.robust_train.cluster_reweight import ClusterReweight, ClusterWeights, PseudoHeads
from masktune.train.loop import train_epoch


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "official_recompute"])
def test_cluster_weights_and_momentum_by_hand(incremental):
    weights = ClusterWeights(np.array([0, 0, 1, 1, 1, 2]), num_clusters=3, momentum=0.3, incremental=incremental)
    # step 1: rows 0, 2, 5 (clusters 0, 1, 2) with pseudo losses 1, 2, 4: cluster losses 1, 2, 4 (seen rows
    # only); shares 1/7, 2/7, 4/7 times N/size = 3, 2, 6 -> w = 3/7, 4/7, 24/7
    weights.record(torch.tensor([0, 2, 5]), torch.tensor([1.0, 2.0, 4.0]))
    assert weights.cluster_weights().tolist() == pytest.approx([3 / 7, 4 / 7, 24 / 7])
    # new (mean 1 in the batch) = 9/31, 12/31, 72/31; stored = 0.7 * 1 + 0.3 * new; returned / its mean (1)
    first = weights.batch_weights(torch.tensor([0, 2, 5]))
    assert first.tolist() == pytest.approx([24.4 / 31, 25.3 / 31, 43.3 / 31])
    # step 2: rows 1 (cluster 0) and 2 (cluster 1, again: its loss replaced) with losses 3, 1:
    # cluster losses mean(1, 3) = 2, 1, 4 -> w = 2/7 * 3, 1/7 * 2, 4/7 * 6 = 6/7, 2/7, 24/7
    weights.record(torch.tensor([1, 2]), torch.tensor([3.0, 1.0]))
    assert weights.cluster_losses.tolist() == pytest.approx([2.0, 1.0, 4.0])
    second = weights.batch_weights(torch.tensor([1, 2]))
    # new = (6/7, 2/7) / (4/7) = 1.5, 0.5; mixed = 0.7 * (1, 25.3/31) + 0.3 * (1.5, 0.5); / mean
    mixed = np.array([0.7 + 0.45, 0.7 * 25.3 / 31 + 0.15])
    assert second.tolist() == pytest.approx((mixed / mixed.mean()).tolist())
    assert weights.weights[[1, 2]].tolist() == pytest.approx(mixed.tolist())  # stored before normalising
    assert weights.weights[[3, 4]].tolist() == [1.0, 1.0]  # untouched rows keep their weight


def test_incremental_statistics_equal_the_official_recompute_over_many_steps():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 6, size=200)
    fast, official = (ClusterWeights(clusters, 6, 0.3, incremental=flag) for flag in (True, False))
    for _ in range(30):
        rows = torch.from_numpy(rng.choice(200, size=16, replace=False))
        losses = torch.from_numpy(rng.exponential(size=16))
        for weights in (fast, official):
            weights.record(rows, losses)
        assert fast.cluster_losses.tolist() == pytest.approx(official.cluster_losses.tolist(), rel=1e-12)
        assert fast.batch_weights(rows).tolist() == pytest.approx(official.batch_weights(rows).tolist(), rel=1e-12)


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated directions in 8-d, 40 unit vectors around each."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[[0, 3, 6]]
    x = np.concatenate([c + 0.1 * rng.normal(size=(40, 8)) for c in centres])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(3), 40)


def test_spherical_kmeans_agrees_with_scikit_learn_on_normalised_data():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    x, truth = _blobs()
    init = x[[0, 40, 80]]
    ours, centroids = spherical_kmeans(x, 3, np.random.default_rng(0), init=init)
    library = KMeans(3, init=init, n_init=1).fit(x)
    assert ours.tolist() == library.labels_.tolist()
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1)
    # the library's (Euclidean) centroids point the same way as ours
    assert np.allclose(centroids, library.cluster_centers_ / np.linalg.norm(library.cluster_centers_, axis=1,
                                                                             keepdims=True), atol=1e-6)
    # from random starts (seeded): the true clusters, reproducibly
    again = [spherical_kmeans(x, 3, np.random.default_rng(seed))[0] for seed in (1, 1, 2)]
    assert again[0].tolist() == again[1].tolist()
    assert adjusted_rand_score(truth, again[0]) == 1.0 and adjusted_rand_score(truth, again[2]) == 1.0


def test_nearest_centroid_is_by_cosine_not_euclidean_distance():
    centroids = np.array([[1.0, 0.0], [10.0, 10.0]])
    x = np.array([[5.0, 4.0], [3.0, 0.5], [-1.0, 0.1]])  # (-1, 0.1): cos -0.99 vs -0.63
    # (5, 4): Euclidean-nearest is (1, 0) (5.7 vs 7.8), but its direction is (10, 10)'s (cos 0.99 vs 0.78)
    assert nearest_centroid(x, centroids).tolist() == [1, 0, 1]


def test_pseudo_labels_cluster_each_class_and_assign_other_splits_to_its_centroids():
    x, truth = _blobs()
    labels = (truth == 2).astype(int)  # class 0: blobs 0 and 1; class 1: blob 2
    features = {"train": x, "val": x[::-1]}
    pseudo = pseudo_labels(features, {"train": labels, "val": labels[::-1]}, k=2, num_classes=2, seed=0)
    assert pseudo.num_clusters == 4
    train = pseudo.ids["train"]
    assert set(train[labels == 0]) == {0, 1} and set(train[labels == 1]) <= {2, 3}
    assert len({*train[:40]}) == 1 and len({*train[40:80]}) == 1 and train[0] != train[40]  # blobs 0, 1 split
    assert pseudo.ids["val"].tolist() == train[::-1].tolist()  # the same points: the same centroids
    with pytest.raises(UserError, match="class 1 has 40 training images, fewer than clusterfix.clusters_per_class = 41"):
        pseudo_labels(features, {"train": labels, "val": labels[::-1]}, k=41, num_classes=2, seed=0)


def test_each_sample_is_predicted_by_its_own_class_head():
    heads = PseudoHeads(4, num_classes=3, k=2)
    features = torch.randn(5, 4)
    labels = torch.tensor([0, 2, 1, 2, 0])
    logits = heads(features, labels)
    for i, c in enumerate(labels.tolist()):
        assert torch.allclose(logits[i], heads.heads[c](features[i]))
    assert heads.heads[1].bias.tolist() == pytest.approx([0.01, 0.01])  # official initialisation


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        self.classifier = torch.nn.Linear(3, 2)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def _split(n: int, seed: int) -> PixelSplit:
    rng = np.random.default_rng(seed)
    return PixelSplit.from_samples(SampleSet(images=rng.integers(0, 255, (n, 2, 2, 3), dtype=np.uint8),
                                             labels=np.arange(n) % 2, attributes=np.zeros(n, int),
                                             source_index=np.arange(n)))


@pytest.mark.parametrize("leak", [False, True], ids=["fixed", "official_defect"])
def test_validation_losses_enter_the_training_buffer_only_with_the_official_defect(leak):
    torch.manual_seed(0)
    train, val = _split(8, 0), _split(3, 1)
    ids = {"train": np.array([0, 2, 1, 3, 0, 2, 1, 3]), "val": np.array([1, 2, 0])}
    model, heads = _Net(), PseudoHeads(3, 2, 2)
    optimizer = torch.optim.SGD([*model.parameters(), *heads.parameters()], lr=0.0)  # nothing changes
    weights = ClusterWeights(ids["train"], 4, 0.3)
    objective = ClusterReweight(heads, weights, {split: cluster % 2 for split, cluster in ids.items()}, beta=0.5,
                                val=val if leak else None, eval_batch_size=2)
    stats = train_epoch(model, optimizer, train, 4, torch.Generator().manual_seed(0), torch.device("cpu"), "t",
                        objective=objective)
    assert stats["loss"] == pytest.approx(stats["target_loss"] + 0.5 * stats["pseudo_loss"])

    def pseudo_losses(split, cluster_ids):
        inputs = torch.stack([split[i][0] for i in range(len(split))])
        targets = torch.as_tensor(split.labels)
        return torch.nn.functional.cross_entropy(heads(model.features(inputs), targets),
                                                 torch.as_tensor(cluster_ids % 2), reduction="none")

    with torch.no_grad():
        train_losses = pseudo_losses(train, ids["train"]).double()
        val_losses = pseudo_losses(val, ids["val"]).double()
    expected = train_losses.clone()
    if leak:
        expected[:3] = val_losses  # the official update_val writes at the validation rows' indices
    assert weights.losses.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
