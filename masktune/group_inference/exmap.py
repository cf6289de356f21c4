"""ExMap (Chakraborty, Sletten, Kampffmeyer, CVPR 2024; official code rwchakra/exmap): explainability
heatmaps of the ERM model on the validation set, clustered into pseudo-groups, which replace the true
groups in DFR (masktune/last_layer/dfr.py) or in any other trainer. No group labels, for training or for
selection.

Three stages (the network's parts, the heatmaps, in masktune/group_inference/exmap_heatmaps.py; the
clustering here, which needs no network):
1. `exmap_heatmaps@<name>`: per validation image, in order, the LRP relevance of the
   predicted class at the input pixels (masktune/saliency/lrp.py; `exmap.heatmaps: lrp`, official),
   or the XGradCAM map that MaskTune's saliency uses (`xgradcam`: ExMap without a second
   explainability method, beyond the paper); resized bilinearly to `exmap.heatmap_size` when set
   (official --downsize: Waterbirds 112, CelebA 20, none for C-MNIST; run_<dataset>.sh L25-29,
   lrp.py L88-92) and flattened as they are read (`heatmap_vectors`); stored by the saliency pass
   (masktune.saliency.compute), so an interrupted pass resumes;
2. `exmap_groups@<name>` (`pseudo_groups`): each heatmap divided by its max |value| (cluster.py L82-86),
   clustered per class (L-ExMap) and all together (G-ExMap) (cluster.py L70-74;
   masktune/group_inference/clustering.py), pseudo-group ids as create_groups.py forms them;
3. `exmap_extend@<name>` (`extend_to_train`): beyond the paper, which infers validation groups only (DFR
   retrains on validation), the training images get pseudo-groups too, so that trainers that train on
   the training set (GroupDRO, upsampling) can use ExMap's groups: each training image's heatmap, computed
   as in 1 and normalised as in 2, takes the majority pseudo-group of its k nearest validation heatmaps of
   its class (k = floor(ln N_c), N_c the class's validation images: the k of ExMap's own neighbour
   graph). The two groups files, `<name>_global` and `<name>_local`, hold both splits.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from masktune.config.fields import SEED, WORKERS, AutoInt, Choice, Int, Number
from masktune.config.params import param
from masktune.distributed import DistributedConfig
from masktune.errors import UserError
from masktune.group_inference.clustering import CLUSTERINGS, cluster, neighbours
from masktune.groups import make_groups
from masktune.io.hdf5 import open_h5
from masktune.saliency import METHODS
from masktune.saliency.file import input_resolution, saliency_layout

SCOPES = ("global", "local")  # G-ExMap: one clustering of all heatmaps; L-ExMap: one per class
TITLES = {"global": "G-ExMap's groups", "local": "L-ExMap's groups"}


@dataclass(frozen=True, kw_only=True)
class ExMapHeatmapsConfig(DistributedConfig):
    """ExMap's heatmaps: of the validation images (exmap_heatmaps), and of the training images, streamed into
    their pseudo-groups (exmap_extend)."""
    heatmaps: str = param("exmap.heatmaps", Choice(options=METHODS))  # lrp (official) | MaskTune's xgradcam
    gamma: float = param("exmap.gamma", Number(0.0))
    heatmap_size: int = param("exmap.heatmap_size", Int(0, recipe=True))
    batch_size: int = param("exmap.batch_size", Int(1, recipe=True))
    workers: int = param("exmap.workers", WORKERS)


@dataclass(frozen=True, kw_only=True)
class ExMapGroupsConfig:
    clustering: str = param("exmap.clustering", Choice(options=CLUSTERINGS, recipe=True))
    clusters: int | str = param("exmap.clusters", AutoInt(minimum=1, recipe=True))  # "auto": the eigengap rule
    seed: int = param("exmap.seed", SEED)
    heatmap_size: int = param("exmap.heatmap_size", Int(0, recipe=True))  # as the heatmaps are read


def resize_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """The official --downsize: bilinear (align_corners False) to size x size; 0 keeps the maps."""
    return maps if not size else F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)


def heatmap_vectors(maps: torch.Tensor, method: str, input_size: tuple[int, int], size: int) -> np.ndarray:
    """Flattened float32 heatmaps (N, D) of stored saliency maps: at input resolution (B, C, H, W; XGradCAM's
    one channel), resized to `size` (the official --downsize; 0: as they are)."""
    full = input_resolution(maps, method, input_size).float()
    full = full[:, None] if full.ndim == 3 else full
    return resize_maps(full, size).reshape(len(full), -1).numpy()


def read_heatmaps(path: str | Path, rows: int, size: int) -> np.ndarray:
    """The flattened heatmaps (N, D) of an ExMap heatmaps file (a saliency file of the validation images)."""
    _, input_size = saliency_layout(path, rows)
    with open_h5(path) as f:
        maps, method = torch.from_numpy(f["maps"][()]), str(f.attrs.get("method", "lrp"))
    return heatmap_vectors(maps, method, input_size, size)



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


def dense_groups(val_ids: np.ndarray, val_labels: np.ndarray, class_names: tuple[str, ...],
                 scope: str) -> tuple[np.ndarray, list[str], list[int]]:
    """The pseudo-groups of one scope numbered 0..G-1 in the order of their ids (which keeps DFR's draws
    as they were: an empty id draws nothing), named `<class>_<scope>_cluster<j>` (j: the cluster within
    the clustering of the class or of everything), with each group's class."""
    present = np.unique(val_ids)
    names, classes = [], []
    for g in present:
        label = int(val_labels[val_ids == g][0])
        offset = int(val_ids[val_labels < label].max()) + 1 if (val_labels < label).any() else 0
        names.append(f"{class_names[label]}_{scope}_cluster{int(g) - offset}")
        classes.append(label)
    return np.searchsorted(present, val_ids), names, classes


def majority_ids(neighbour_ids: np.ndarray) -> np.ndarray:
    """Per row of (N, k) ids, the most frequent id, ties to the lowest (scipy's mode): scikit-learn's
    `KNeighborsClassifier.predict` with uniform weights (tests/test_exmap.py checks it against it)."""
    from scipy import stats

    return stats.mode(neighbour_ids, axis=1, keepdims=False).mode


class NeighbourVote:
    """ExMap's extension to the training images: each normalised heatmap takes the majority id of its k =
    floor(ln N_c) nearest validation heatmaps of its class (scikit-learn's exact k-nearest-neighbour search;
    ties to the lower id). One search serves every scope: the scopes share the neighbours and differ only in
    the ids that vote (two searches, one per scope, took 34 of the stage's 74 s on biased MNIST)."""

    def __init__(self, val_heatmaps: np.ndarray, val_labels: np.ndarray, val_ids: Mapping[str, np.ndarray]):
        from sklearn.neighbors import NearestNeighbors

        x = normalise(np.asarray(val_heatmaps, dtype=np.float32))
        self.searches, self.voters = {}, {}
        for label in np.unique(val_labels):
            members = val_labels == label
            k = min(neighbours(int(members.sum())), int(members.sum()))
            self.searches[int(label)] = NearestNeighbors(n_neighbors=k).fit(x[members])
            self.voters[int(label)] = {scope: ids[members] for scope, ids in val_ids.items()}
        self.scopes = tuple(val_ids)

    def __call__(self, heatmaps: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """{scope: id} of each (flattened, not yet normalised) training heatmap of class `labels`."""
        flat = normalise(np.asarray(heatmaps, dtype=np.float32))
        out = {scope: np.zeros(len(labels), dtype=np.int64) for scope in self.scopes}
        for label in np.unique(labels):
            if int(label) not in self.searches:
                raise UserError(f"ExMap: class {label} has training images but no validation image to vote")
            members = labels == label
            nearest = self.searches[int(label)].kneighbors(flat[members], return_distance=False)
            for scope, ids in self.voters[int(label)].items():
                out[scope][members] = majority_ids(ids[nearest])
        return out


def exmap_groups(train_ids: Mapping[str, np.ndarray], val_ids: Mapping[str, np.ndarray],
                 labels: Mapping[str, np.ndarray], class_names: tuple[str, ...], name: str, how: str) -> dict:
    """{`<name>_<scope>`: Groups} of both scopes, dense ids on both splits."""
    files = {}
    for scope in val_ids:
        present = np.unique(val_ids[scope])
        val, names, classes = dense_groups(val_ids[scope], labels["val"], class_names, scope)
        train = np.searchsorted(present, train_ids[scope])
        description = (f"ExMap {'G' if scope == 'global' else 'L'}-ExMap pseudo-groups ({how}); training images: "
                       "the majority pseudo-group of their nearest validation heatmaps of their class")
        files[f"{name}_{scope}"] = make_groups({"train": train, "val": val}, labels, names, classes,
                                               inference=f"{name}_{scope}", description=description,
                                               uses_group_labels=False, title=TITLES[scope])
    return files
