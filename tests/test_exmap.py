"""ExMap and DFR (masktune/group_inference/exmap.py, clustering.py; masktune/last_layer/dfr.py;
masktune/saliency/lrp.py), piece by
piece against zennit, hand computations and the official rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from masktune.eval.clusters import purity
from masktune.group_inference.clustering import (
    eigengap_k,
    knn_affinity,
    laplacian_eigenvalues,
    neighbours,
    spectral_clusters,
    umap_2d,
)
from masktune.group_inference.exmap import (
    ExMapHeatmapsConfig,
    NeighbourVote,
    global_groups,
    heatmap_vectors,
    local_groups,
    normalise,
    pseudo_groups,
    read_heatmaps,
    resize_maps,
)
from masktune.group_inference.exmap_heatmaps import explainer, extend_to_train
from masktune.last_layer.dfr import LinearHead, balanced_rows, fit_dfr, fit_final, install_head, tune_c
from masktune.models import build_model


def _model_with_batchnorm_stats(arch: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(arch, 2).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # not the identity, so that merging matters
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("arch, size", [("small_cnn", 28), ("resnet18", 32)])
def test_lrp_heatmaps_equal_a_direct_zennit_call(arch, size):
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import Convolution

    from masktune.saliency.lrp import GammaSymmetric, LrpAttributor

    model = _model_with_batchnorm_stats(arch)
    inputs = torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model(inputs).argmax(dim=1)
    canonizer = ResNetCanonizer() if arch.startswith("resnet") else SequentialMergeBatchNorm()
    composite = EpsilonAlpha2Beta1(canonizers=[canonizer])
    composite.layer_map = [(kind, GammaSymmetric(gamma=4) if kind is Convolution else rule)
                           for kind, rule in composite.layer_map]
    with Gradient(model=model, composite=composite) as attributor:
        _, expected = attributor(inputs, torch.eye(2)[predicted])

    with LrpAttributor(model, gamma=4.0) as lrp:
        relevance, ours_predicted = lrp(inputs)
    assert torch.equal(ours_predicted, predicted)
    assert relevance.shape == inputs.shape
    assert relevance.abs().max() > 0
    torch.testing.assert_close(relevance, expected, rtol=1e-5, atol=1e-8)


def test_gamma_symmetric_rule_matches_a_hand_computation():
    """One convolution whose output is one value per channel: the rule's relevance by its formula."""
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.types import Convolution

    from masktune.saliency.lrp import GammaSymmetric

    gamma = 4.0
    rng = torch.Generator().manual_seed(3)
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=rng))
        conv.bias.copy_(torch.randn(3, generator=rng))
    model = nn.Sequential(conv, nn.Flatten()).eval()
    x = torch.randn(1, 2, 3, 3, generator=rng)
    r_out = torch.tensor([[0.5, -1.0, 2.0]])
    composite = LayerMapComposite(layer_map=[(Convolution, GammaSymmetric(gamma))])
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, r_out)

    xs = x.reshape(-1).double()                      # (18,)
    w = conv.weight.detach().reshape(3, -1).double()  # (3, 18)
    b = conv.bias.detach().double()
    xp, xn, wp, wn = xs.clamp(min=0), xs.clamp(max=0), w.clamp(min=0), w.clamp(max=0)
    positive = xp * wp + xn * wn                     # (3, 18): contributions to P
    negative = xp * wn + xn * wp                     # contributions to N
    p = positive.sum(1) + b.clamp(min=0)
    n = negative.sum(1) + b.clamp(max=0)
    alpha = 1 + gamma * (p >= n.abs()).double()
    beta = 1 + gamma * (p < n.abs()).double()
    z = alpha * p + beta * n
    z = z + ((z == 0).double() + z.sign()) * 1e-6   # zennit's stabilize
    expected = ((alpha[:, None] * positive + beta[:, None] * negative) * (r_out[0].double() / z)[:, None]).sum(0)
    torch.testing.assert_close(relevance.reshape(-1).double(), expected, rtol=1e-5, atol=1e-9)


def test_resize_and_normalise_heatmaps():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert resize_maps(maps, 0) is maps
    resized = resize_maps(maps, 2)
    torch.testing.assert_close(resized, torch.nn.functional.interpolate(maps, size=(2, 2), mode="bilinear"))
    flat = np.array([[1.0, -4.0, 2.0], [0.0, 0.0, 0.0], [0.5, 0.25, 0.0]])
    np.testing.assert_array_equal(normalise(flat), [[0.25, -1.0, 0.5], [0, 0, 0], [1.0, 0.5, 0.0]])


def _blobs(sizes, dim=5, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:len(sizes)] * 10
    x = np.concatenate([c + spread * rng.standard_normal((n, dim)) for c, n in zip(centres, sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("clusters", [2, 4, 7])
def test_eigengap_picks_the_number_of_separated_clusters(clusters):
    x, truth = _blobs([40 + 7 * i for i in range(clusters)], dim=8)
    affinity = knn_affinity(x)
    assert affinity.shape == (len(x), len(x))
    # the kNN graph has no edge between blobs: as many zero eigenvalues as blobs, then a jump
    eigenvalues = laplacian_eigenvalues(affinity, seed=0)
    assert len(eigenvalues) == 13
    np.testing.assert_allclose(eigenvalues[:clusters], 0, atol=1e-6)
    assert eigenvalues[clusters] > 1e-3
    assert eigengap_k(eigenvalues) == clusters
    ids, k = spectral_clusters(x, None, seed=0)
    assert k == clusters
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(truth, ids) == 1.0


def test_eigengap_rule_on_given_eigenvalues():
    # gaps: k=2: 0.01, k=3: 0.5 (largest), k=4: 0.1 ...; the gap lambda_1 - lambda_0 (k=1) is never chosen
    eigenvalues = np.array([0.0, 0.9, 0.91, 1.41, 1.51, 1.52, 1.53, 1.54, 1.55, 1.56, 1.57, 1.58, 1.59])
    assert eigengap_k(eigenvalues) == 3
    assert neighbours(10_000) == 9 and neighbours(933) == 6 and neighbours(3) == 2


def test_pseudo_group_ids_as_the_official_create_groups():
    labels = np.array([0, 1, 0, 1, 1, 0])
    # L-ExMap: class 0's clusters {0, 1} keep their ids, class 1's are offset by max + 1 = 2
    local = local_groups(labels, {0: np.array([1, 0, 1]), 1: np.array([0, 2, 1])})
    np.testing.assert_array_equal(local, [1, 2, 0, 4, 3, 1])
    # G-ExMap: one clustering; class 1's ids offset by (max id among class 0) + 1 = 3
    global_ = global_groups(labels, np.array([2, 0, 0, 2, 1, 2]))
    np.testing.assert_array_equal(global_, [2, 3, 0, 5, 4, 2])


def test_pseudo_groups_cluster_each_class_and_all():
    x, truth = _blobs([150, 150, 150, 150], dim=6)
    labels = truth % 2                 # blobs 0, 2 are class 0; 1, 3 class 1: each class holds two blobs
    groups, chosen = pseudo_groups(x, labels, method="spectral", k=None, seed=0)
    assert chosen == {"y0": 2, "y1": 2, "all": 4}
    for scope in ("global", "local"):
        report = purity(groups[scope], truth, {g: f"g{g}" for g in range(4)})
        assert report["purity"] == 1.0 and report["pseudo_groups"] == 4
        assert report["true_group_found"] == {"g0": 1.0, "g1": 1.0, "g2": 1.0, "g3": 1.0}


def test_purity_report_by_hand():
    pseudo = np.array([0, 0, 0, 0, 1, 1])
    true = np.array([0, 0, 0, 1, 1, 1])
    report = purity(pseudo, true, {0: "a", 1: "b"})
    assert report["purity"] == pytest.approx(5 / 6)
    assert report["clusters"]["0"] == {"size": 4, "majority": "a", "purity": 0.75, "make_up": {"a": 3, "b": 1}}
    assert report["true_group_found"] == {"a": 1.0, "b": pytest.approx(2 / 3)}


def test_balanced_rows_follow_the_official_rule():
    groups = np.repeat([0, 1, 2, 3, 5], [10, 7, 3, 20, 6])  # id 4 absent; group 2 has <= 5 rows
    rows = balanced_rows(groups, np.random.default_rng(0))
    counts = np.bincount(groups[rows], minlength=6)
    # min_g = 6, the smallest group with more than 5 rows; group 2 gives all 3 of its rows
    np.testing.assert_array_equal(counts, [6, 6, 3, 6, 0, 6])
    assert len(np.unique(rows)) == len(rows)
    # no group above 5 (the official code stops): the smallest group's size, the original DFR's rule
    rows = balanced_rows(np.repeat([0, 1, 3], [5, 3, 4]), np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(np.repeat([0, 1, 3], [5, 3, 4])[rows]), [3, 3, 0, 3])


def _spurious_validation_set(seed=0):
    """Class = sign of feature 0 (core, weak), feature 1 = the spurious attribute, aligned with the class
    in groups 0 and 3, against it in the small groups 1 and 2."""
    rng = np.random.default_rng(seed)
    sizes = {(0, 0): 200, (0, 1): 20, (1, 0): 20, (1, 1): 200}
    x, y, g = [], [], []
    for (label, attribute), n in sizes.items():
        core = (2 * label - 1) * 1.0 + 0.3 * rng.standard_normal(n)
        spurious = (2 * attribute - 1) * 3.0 + 0.3 * rng.standard_normal(n)
        x.append(np.column_stack([core, spurious, rng.standard_normal((n, 3))]))
        y += [label] * n
        g += [2 * attribute + label] * n
    return np.concatenate(x), np.array(y), np.array(g)


def test_c_selection_by_hand():
    x, y, g = _spurious_validation_set()
    # C = 0.01 with an L1 penalty zeroes every coefficient: one class predicted, worst group 0;
    # the separable groups give 1.0 at the larger Cs, and ties go to the first C of the grid
    c, scores = tune_c(x, y, g, (1.0, 0.1, 0.001), splits=3, rng=np.random.default_rng(0), seed=0)["groups"]
    assert scores[0.001] == 0.0
    assert scores[1.0] == 1.0 and scores[0.1] == 1.0
    assert c == 1.0
    c, _ = tune_c(x, y, g, (0.001, 0.1, 1.0), splits=3, rng=np.random.default_rng(0), seed=0)["groups"]
    assert c == 0.1  # the first of the tied best


def test_dfr_with_groups_beats_dfr_with_classes_on_the_minority_groups():
    x, y, g = _spurious_validation_set()
    test_x, test_y, test_g = _spurious_validation_set(seed=1)
    worst = {}
    for name, groups in {"classes": y, "groups": g}.items():
        head, info = fit_dfr(x, y, groups, c_grid=(1.0, 0.1, 0.01), tune_splits=3, refits=5, seed=0)["groups"]
        correct = head.predict(test_x) == test_y
        worst[name] = min(correct[test_g == k].mean() for k in range(4))
        assert info["groups"] == len(np.unique(groups))
    assert worst["groups"] == 1.0 and worst["groups"] >= worst["classes"]


def test_final_model_is_the_average_of_the_refits():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y, g = _spurious_validation_set()
    head = fit_final(x, y, g, c=0.3, refits=3, rng=np.random.default_rng(5), seed=0)
    rng = np.random.default_rng(5)
    scaled = StandardScaler().fit(x).transform(x)
    fits = [LogisticRegression(l1_ratio=1.0, C=0.3, solver="liblinear", random_state=0).fit(scaled[r], y[r])
            for r in (balanced_rows(g, rng) for _ in range(3))]
    np.testing.assert_allclose(head.coef, np.mean([f.coef_ for f in fits], axis=0))
    np.testing.assert_allclose(head.intercept, np.mean([f.intercept_ for f in fits], axis=0))


def test_installed_head_predicts_as_the_logistic_regression():
    model = _model_with_batchnorm_stats("small_cnn")
    inputs = torch.rand(40, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = model.features(inputs).numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    head = LinearHead(coef=rng.standard_normal((1, features.shape[1])), intercept=np.array([0.1]),
                      mean=features.mean(0), scale=features.std(0) + 0.1, classes=np.array([0, 1]))
    expected = head.predict(features)
    assert 0 < expected.mean() < 1
    install_head(model, head, 2)
    with torch.no_grad():
        assert np.array_equal(model(inputs).argmax(1).numpy(), expected)


def _heatmaps_config(heatmaps: str, size: int, batch_size: int) -> ExMapHeatmapsConfig:
    return ExMapHeatmapsConfig(heatmaps=heatmaps, gamma=4.0, heatmap_size=size, batch_size=batch_size, workers=0,
                               nproc_per_node=1, nnodes=1, master_addr="localhost", master_port=29500)


@pytest.mark.parametrize("heatmaps, size, dim", [("lrp", 0, 3 * 28 * 28), ("lrp", 14, 3 * 14 * 14),
                                                 ("xgradcam", 0, 28 * 28)])
def test_heatmap_file_holds_every_row_in_order_at_any_batch_size(tmp_path, heatmaps, size, dim):
    """ExMap's heatmaps are the shared saliency pass (masktune.saliency.compute) with ExMap's method, read back
    at input resolution, resized and flattened (`read_heatmaps`)."""
    from masktune.data.samples import SampleSet
    from masktune.data.splits import PixelSplit
    from masktune.io.hdf5 import read_arrays
    from masktune.saliency.compute import Pass, compute_saliency_file
    from masktune.saliency.lrp import LrpAttributor

    rng = np.random.default_rng(0)
    n = 23
    samples = SampleSet(rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8), rng.integers(0, 2, n),
                        np.zeros(n, dtype=np.int64), np.arange(n))
    model = _model_with_batchnorm_stats("small_cnn")
    stored, predicted = {}, {}
    for batch_size in (5, 23):
        path = tmp_path / f"{batch_size}.h5"
        config = _heatmaps_config(heatmaps, size, batch_size)
        with explainer(model, config, torch.device("cpu")) as explain:
            compute_saliency_file(explain, PixelSplit.from_samples(samples), path,
                                  Pass(batch_size, 10, 0, {"b": batch_size}, {"method": heatmaps, "input_size": [28, 28]}),
                                  torch.device("cpu"))
        stored[batch_size] = read_heatmaps(path, n, size)
        predicted[batch_size] = read_arrays(path, {"predicted": (n,)})["predicted"]
        assert stored[batch_size].shape == (n, dim)
    # the same maps at any batch size, to float32 rounding: oneDNN picks its convolution kernels by batch size
    # (on a 2-core AMD EPYC, 7 of 18,032 values of the XGradCAM maps, in [0, 1], moved by up to 6.4e-7)
    np.testing.assert_allclose(stored[5], stored[23], rtol=1e-5, atol=1e-6)
    inputs = torch.from_numpy(samples.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        np.testing.assert_array_equal(predicted[5], model(inputs).argmax(1).numpy())
    if heatmaps == "lrp":
        with LrpAttributor(model) as lrp:
            direct = resize_maps(lrp(inputs[7:8])[0], size).reshape(-1).numpy()
        np.testing.assert_allclose(stored[5][7], direct, rtol=1e-5, atol=1e-9)


def test_dfr_over_three_classes_is_one_versus_rest():
    """liblinear takes two classes since scikit-learn 1.8: more are fitted one-versus-rest (IN-9L)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    x = np.eye(3)[y] * 3 + 0.3 * rng.standard_normal((120, 3))
    head, _ = fit_dfr(x, y, y, c_grid=(1.0, 0.1), tune_splits=2, refits=3, seed=0)["groups"]
    assert head.coef.shape == (3, 3) and head.intercept.shape == (3,)
    assert (head.predict(x) == y).mean() > 0.95
    weight, bias = head.logits_layer(3)  # folded into a linear layer, it predicts as the head
    logits = torch.tensor(x, dtype=torch.float32) @ weight.T + bias
    assert np.array_equal(logits.argmax(1).numpy(), head.predict(x))


def test_training_images_take_the_pseudo_group_of_their_nearest_validation_heatmaps():
    """ExMap's groups on the training set (beyond the paper): a training image's heatmap votes among its
    class's validation heatmaps; copies of the validation images get their own pseudo-groups back, and a
    class's images never get another class's."""
    from masktune.data.samples import SampleSet
    from masktune.data.splits import PixelSplit

    rng = np.random.default_rng(0)
    n = 40  # per class: two kinds of image (bright left half / bright right half), 10 of each
    images = rng.integers(0, 30, (n, 28, 28, 3), dtype=np.uint8)
    images[np.arange(n) % 4 < 2, :, :14] = 250
    images[np.arange(n) % 4 >= 2, :, 14:] = 250
    labels = np.arange(n) % 2
    model = _model_with_batchnorm_stats("small_cnn")
    data = PixelSplit.from_samples(SampleSet(images, labels, np.zeros(n, dtype=np.int64), np.arange(n)))
    inputs = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    config = _heatmaps_config("xgradcam", 0, 7)
    with explainer(model, config, torch.device("cpu")) as explain:
        heatmaps = heatmap_vectors(explain(inputs)[0], "xgradcam", (28, 28), 0)
    val_ids = {"local": np.where(labels == 0, 0, 2) + (np.arange(n) % 4 >= 2)}
    train_ids = extend_to_train(model, data, NeighbourVote(heatmaps, labels, val_ids), config, torch.device("cpu"))
    assert train_ids["local"].tolist() == val_ids["local"].tolist()


def test_majority_vote_is_scikit_learns_k_nearest_neighbour_prediction():
    """One neighbour search votes for every scope: the vote equals `KNeighborsClassifier.predict` (uniform
    weights) on its own fit, ties (k even, and ids absent from a row) to the lowest id."""
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    from masktune.group_inference.exmap import majority_ids

    rng = np.random.default_rng(0)
    val, train = rng.normal(size=(300, 6)), rng.normal(size=(500, 6))
    for k, ids in ((4, rng.integers(3, 9, 300)), (7, rng.integers(0, 2, 300)), (6, 10 * rng.integers(0, 5, 300))):
        nearest = NearestNeighbors(n_neighbors=k).fit(val).kneighbors(train, return_distance=False)
        expected = KNeighborsClassifier(n_neighbors=k).fit(val, ids).predict(train)
        assert np.array_equal(majority_ids(ids[nearest]), expected)
        counts = np.stack([(ids[nearest] == i).sum(axis=1) for i in np.unique(ids)], axis=1)
        ties = ((counts == counts.max(axis=1, keepdims=True)).sum(axis=1) > 1).sum()
        assert ties > 0 or k == 7  # the rule for ties is exercised (k = 7 of two ids cannot tie)


def test_c_is_selected_by_the_scoring_asked_and_each_scoring_keeps_its_own_head():
    """Balanced over the classes (DFR with class labels), C scored by the class's worst (its rule) and by
    the true groups' worst (the selection gap's reference): one tuning, and a scoring that picks the same
    C gets the same head."""
    x, y, g = _spurious_validation_set()
    fitted = fit_dfr(x, y, y, c_grid=(1.0, 0.1, 0.001), tune_splits=3, refits=3, seed=0,
                     score_groups={"classes": y, "true": g, "average": np.zeros_like(y)})
    alone = fit_dfr(x, y, y, c_grid=(1.0, 0.1, 0.001), tune_splits=3, refits=3, seed=0)["groups"]
    assert np.array_equal(fitted["classes"][0].coef, alone[0].coef)  # the default is the classes' own rule
    tuned = tune_c(x, y, y, (1.0, 0.1, 0.001), 3, np.random.default_rng(0), 0,
                   score_groups={"classes": y, "true": g, "average": np.zeros_like(y)})
    for name in ("classes", "true", "average"):
        assert fitted[name][1]["c"] == tuned[name][0]
        same = [other for other in fitted if fitted[other][1]["c"] == fitted[name][1]["c"]]
        assert all(np.array_equal(fitted[other][0].coef, fitted[name][0].coef) for other in same)
    assert tuned["true"][1][0.001] == 0.0  # an all-zero model: one class, its worst group 0


def test_figure_umap_builds_on_the_exact_neighbours_not_nn_descent(monkeypatch):
    """Above 4,096 points umap-learn runs NN-descent (30 s of numba compiling per process); the figure's
    UMAP hands it the exact k-NN graph instead: NN-descent must not run, and the embedding still keeps
    two separated blobs apart."""
    import umap.umap_

    class NoNNDescent:
        def __init__(self, *args, **kwargs):
            raise AssertionError("NN-descent ran although the exact neighbours were given")

    monkeypatch.setattr(umap.umap_, "NNDescent", NoNNDescent)
    x, truth = _blobs([2100, 2100], dim=6)
    xy = umap_2d(x, seed=0, exact_neighbours=True)
    assert xy.shape == (4200, 2)
    centres = np.stack([xy[truth == b].mean(axis=0) for b in (0, 1)])
    nearest = np.linalg.norm(xy[:, None, :] - centres[None], axis=2).argmin(axis=1)
    assert (nearest == truth).all()
