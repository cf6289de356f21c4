"""ExMap (Chakraborty, Sletten, Kampffmeyer, CVPR 2024; official code rwchakra/exmap): explainability
heatmaps of the ERM model on the validation set, clustered into pseudo-groups, which replace the true
groups in DFR (masktune/methods/dfr.py). No group labels, for training or for selection.

Three stages, each a function here:
1. `exmap_heatmaps@<name>` (`write_heatmaps`): per validation image, in order, the LRP relevance of the
   predicted class at the input pixels (masktune/saliency/lrp.py; `exmap.heatmaps: lrp`, official),
   or the XGradCAM map that MaskTune's saliency uses (`xgradcam`: ExMap without a second
   explainability method, beyond the paper); resized bilinearly to `exmap.heatmap_size` when set
   (official --downsize: Waterbirds 112, CelebA 20, none for C-MNIST; run_<dataset>.sh L25-29,
   lrp.py L88-92), flattened, stored in HDF5 batch by batch;
2. `exmap_groups@<name>` (`pseudo_groups`): each heatmap divided by its max |value| (cluster.py L82-86),
   clustered per class (L-ExMap) and all together (G-ExMap) (cluster.py L70-74; masktune/methods/
   clustering.py), pseudo-group ids as create_groups.py forms them;
3. `exmap_dfr@<name>`: DFR with each pseudo-grouping, one model per scope.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from masktune.data.splits import Split
from masktune.distributed import is_main_process
from masktune.io.hdf5 import h5_output, write_array
from masktune.methods.base import Method
from masktune.methods.clustering import cluster
from masktune.saliency.xgradcam import xgradcam
from masktune.train.loop import map_rows

SCOPES = {"global": "G-ExMap + DFR", "local": "L-ExMap + DFR"}


class _XGradCamExplainer:
    """XGradCAM maps (B, 1, H, W) in [0, 1] of the predicted class, as `compute_saliency`'s."""

    def __init__(self, model: nn.Module):
        self.model = model.eval().requires_grad_(False)
        self.layer = model.grad_cam_target_layer()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, predicted = xgradcam(self.model, self.layer, inputs)
        return maps[:, None], predicted


def explainer(model: nn.Module, heatmaps: str, gamma: float):
    """A context manager yielding `explain(inputs) -> (maps (B, C, H, W), predicted (B,))`."""
    if heatmaps == "lrp":
        from masktune.saliency.lrp import LrpAttributor  # imports zennit and torchvision (~2 s)

        return LrpAttributor(model, gamma)
    return _XGradCamExplainer(model)


def resize_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """The official --downsize: bilinear (align_corners False) to size x size; 0 keeps the maps."""
    return maps if not size else F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def write_heatmaps(model: nn.Module, data: Split, out: str | Path, *, heatmaps: str, gamma: float, size: int,
                   batch_size: int, device: torch.device, attrs: Mapping) -> None:
    """Every image's flattened heatmap (`heatmaps`, float32 (N, D)) and predicted class, in row order
    (under torchrun the ranks share the rows, `map_rows`, and rank 0 writes the file)."""
    def compute(inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        maps, classes = explain(inputs)
        return {"heatmaps": resize_maps(maps.float(), size).reshape(len(inputs), -1), "predicted": classes}

    with explainer(model, heatmaps, gamma) as explain:
        rows = map_rows(data, batch_size, device, f"ExMap heatmaps ({heatmaps})", compute)
    if not is_main_process():
        return
    with h5_output(out, attrs) as f:
        write_array(f, "heatmaps", rows["heatmaps"].astype(np.float32))
        write_array(f, "predicted", rows["predicted"].astype(np.int64))


def normalise(heatmaps: np.ndarray) -> np.ndarray:
    """Each heatmap divided by its largest absolute value (an all-zero heatmap stays zero)."""
    scale = np.abs(heatmaps).max(axis=1, keepdims=True)
    return heatmaps / np.where(scale > 0, scale, 1.0)


def local_groups(labels: np.ndarray, clusters_by_class: Mapping[int, np.ndarray]) -> np.ndarray:
    """L-ExMap's ids (create_groups.py L4-14): class c's cluster j is offset + j, the offset counting
    the clusters of the classes before it (max id + 1 each)."""
    groups, offset = np.zeros(len(labels), dtype=np.int64), 0
    for label in sorted(clusters_by_class):
        ids = clusters_by_class[label]
        groups[labels == label] = offset + ids
        offset += int(ids.max()) + 1 if len(ids) else 0
    return groups


def global_groups(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """G-ExMap's ids (create_groups.py L16-24): one clustering of all heatmaps, split by class; class
    c's ids offset by the largest id among the classes before it, plus one (ids may have gaps).
    (The official run_dfr.py offsets them once more, L246-248: the same grouping, other ids.)"""
    groups, offset = np.zeros(len(labels), dtype=np.int64), 0
    for label in np.unique(labels):
        members = labels == label
        groups[members] = offset + clusters[members]
        offset += int(clusters[members].max()) + 1
    return groups


def pseudo_groups(heatmaps: np.ndarray, labels: np.ndarray, *, method: str, k: int | None,
                  seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """{"global": ids, "local": ids} of the validation images, and the k chosen per clustered subset
    ("all", "y0", "y1", ...; the eigengap picks each independently, cluster.py L70-74)."""
    x = normalise(np.asarray(heatmaps, dtype=np.float32))
    chosen: dict[str, int] = {}
    per_class = {}
    for label in np.unique(labels):
        per_class[int(label)], chosen[f"y{label}"] = cluster(x[labels == label], method, k, seed)
    everything, chosen["all"] = cluster(x, method, k, seed)
    return {"global": global_groups(labels, everything), "local": local_groups(labels, per_class)}, chosen


def purity(pseudo: np.ndarray, true_groups: np.ndarray, group_names: Mapping[int, str]) -> dict:
    """How well pseudo-groups match the true groups (a diagnostic: uses true groups, never selects):
    per pseudo-group its size, make-up and purity (share of its majority true group); overall purity
    (size-weighted), adjusted Rand index, normalised mutual information; and per true group the share
    of its examples that sit in a pseudo-group where it is the majority (is a minority group found?)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters, majority_correct = {}, 0
    found = dict.fromkeys(np.unique(true_groups).tolist(), 0)
    for pid in np.unique(pseudo):
        members = true_groups[pseudo == pid]
        ids, counts = np.unique(members, return_counts=True)
        major = int(ids[counts.argmax()])
        majority_correct += int(counts.max())
        found[major] += int(counts.max())
        clusters[str(int(pid))] = {"size": len(members), "majority": group_names[major],
                                   "purity": float(counts.max() / len(members)),
                                   "make_up": {group_names[int(g)]: int(c) for g, c in zip(ids, counts)}}
    sizes = {g: int((true_groups == g).sum()) for g in found}
    return {"pseudo_groups": len(clusters), "purity": majority_correct / len(pseudo),
            "adjusted_rand_index": float(adjusted_rand_score(true_groups, pseudo)),
            "normalized_mutual_information": float(normalized_mutual_info_score(true_groups, pseudo)),
            "true_group_found": {group_names[g]: found[g] / sizes[g] for g in found},
            "clusters": clusters}


class ExMap(Method):
    name = "exmap"
    kind = "exmap"
    title = "ExMap (Chakraborty et al., 2024)"

    def reported_models(self, models_dir: str | Path) -> dict[str, tuple[str, Path]]:
        return {f"{self.name}_{scope}": (title, Path(models_dir) / f"{self.name}_{scope}.pt")
                for scope, title in SCOPES.items()}

    def retraining_groups(self, val: Split, pseudo: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        return {f"{self.name}_{scope}": np.asarray(pseudo[scope]) for scope in SCOPES}
