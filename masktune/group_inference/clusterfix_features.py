"""ClusterFix's network part (masktune/group_inference/clusterfix.py says what ClusterFix is): the
L2-normalised penultimate features of a frozen backbone, for every split (stage `clusterfix_features@<name>`),
which `clusterfix_clusters` clusters; and ClusterFix's `SPEC`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masktune.config.fields import WORKERS, Choice, FilePath, Int
from masktune.config.params import param
from masktune.data.splits import Split
from masktune.distributed import DistributedConfig
from masktune.group_inference.clusterfix import BACKBONES, TITLE, ClusterFixClustersConfig, l2_normalise
from masktune.group_inference.ssl import ClusterFixSSLConfig
from masktune.methods import Spec
from masktune.models import build_model
from masktune.models.checkpoint import load_checkpoint
from masktune.models.predict import penultimate_features
from masktune.models.pretrained import load_imagenet_weights


@dataclass(frozen=True, kw_only=True)
class ClusterFixFeaturesConfig(DistributedConfig):
    eval_batch_size: int = param("eval_batch_size", Int(1, recipe=True))
    backbone: str = param("clusterfix.backbone", Choice(options=BACKBONES, recipe=True))
    weights_path: Path | None = param("clusterfix.weights_path", FilePath(nullable=True))
    workers: int = param("clusterfix.workers", WORKERS)


SPEC = Spec(name="clusterfix", role="group_inference", family="clusterfix", title=TITLE,
            configs={"clusterfix_ssl": ClusterFixSSLConfig, "clusterfix_features": ClusterFixFeaturesConfig,
                     "clusterfix_clusters": ClusterFixClustersConfig},
            groups_files=lambda name: (name,), groups_titles={"clusterfix": TITLE})


def feature_network(backbone: str, checkpoints: dict[str, str | Path], weights_path: str | Path | None,
                    num_classes: int, device: torch.device) -> nn.Module:
    """The frozen network whose penultimate features ClusterFix clusters: a checkpoint of this pipeline
    (`checkpoints[backbone]`: "erm", the ERM model, the MNIST-family setting; "ssl", the self-supervised
    backbone of stage clusterfix_ssl, ClusterFix's README's "self-supervised ... CNN"), or a torchvision
    network with its ImageNet weights from `weights_path` ("resnet18", 512-d global average pool: the
    official Waterbirds backbone, and here CelebA's, whose official Barlow Twins ResNet-18 is not
    published; "resnet50")."""
    if backbone in checkpoints:
        model, _ = load_checkpoint(checkpoints[backbone], device)
        return model.eval()
    model = load_imagenet_weights(build_model(backbone, num_classes), backbone, weights_path,
                                  param="clusterfix.weights_path", instead="set clusterfix.backbone: erm or ssl")
    return model.to(device).eval()


def split_features(network: nn.Module, data: Split, batch_size: int, device: torch.device, desc: str) -> np.ndarray:
    """L2-normalised penultimate features of every row of `data` (official `_extract_features`)."""
    return l2_normalise(penultimate_features(network, data, batch_size, device, desc))
