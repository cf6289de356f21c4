"""ExMap's network parts (masktune/group_inference/exmap.py says what ExMap is): the heatmaps of the
validation images (stage `exmap_heatmaps@<name>`, the saliency pass of masktune.saliency.compute with
ExMap's method, LRP, and settings: resumable) and the training images' pseudo-groups, their heatmaps
streamed into `exmap.NeighbourVote` (stage `exmap_extend@<name>`: the training heatmaps are never stored).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from masktune.data.splits import Split
from masktune.group_inference.exmap import (
    TITLES,
    ExMapGroupsConfig,
    ExMapHeatmapsConfig,
    NeighbourVote,
    heatmap_vectors,
)
from masktune.methods import Spec
from masktune.models.predict import map_rows
from masktune.saliency import load_method

SPEC = Spec(name="exmap", role="group_inference", family="exmap", title="ExMap's pseudo-groups",
            configs={"exmap_heatmaps": ExMapHeatmapsConfig, "exmap_groups": ExMapGroupsConfig,
                     "exmap_extend": ExMapHeatmapsConfig},
            groups_files=lambda name: (f"{name}_global", f"{name}_local"),
            groups_titles={f"exmap_{scope}": title for scope, title in TITLES.items()})


def explainer(model: nn.Module, config: ExMapHeatmapsConfig, device: torch.device):
    """ExMap's explainer: its method (`exmap.heatmaps`) on the model as trained, float32 (no folding, no
    channels-last: the maps ExMap's own code computes)."""
    return load_method(config.heatmaps).explainer(model, device, gamma=config.gamma)


def extend_to_train(model: nn.Module, train: Split, vote: NeighbourVote, config: ExMapHeatmapsConfig,
                    device: torch.device) -> dict[str, np.ndarray]:
    """{scope: pseudo-group id of every training row}: each training image's heatmap, computed as the
    validation heatmaps were, voted on by its nearest validation heatmaps (`vote`). Streamed."""
    labels = np.asarray(train.labels)

    def compute(inputs: torch.Tensor, rows: np.ndarray) -> dict[str, np.ndarray]:
        maps, _ = explain(inputs)
        flat = heatmap_vectors(maps.detach().cpu(), config.heatmaps, tuple(inputs.shape[-2:]), config.heatmap_size)
        return vote(flat, labels[rows])

    with explainer(model, config, device) as explain:
        return map_rows(train, config.batch_size, device, f"ExMap: training pseudo-groups ({config.heatmaps})",
                        compute, with_rows=True)
