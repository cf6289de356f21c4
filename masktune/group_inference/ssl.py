"""Self-supervised backbones for ClusterFix's features (`clusterfix.backbone: ssl`, stage `clusterfix_ssl@<name>`).

ClusterFix's README: "feature embeddings are extracted through a self-supervised or pretrained CNN", then
k-means gives the pseudo-labels. Its CelebA backbone is a Barlow Twins ResNet-18 that is not published, and
ImageNet weights neither download here nor suit 28 x 28 digits, so this trains one on the training images,
without labels: train_erm's network from its start (`arch`, `pretrained`), one of two objectives, each one
`train.objective.Objective` run by the same training function as ERM (`train.network`):

- `simclr`, contrastive (Chen et al., "A Simple Framework for Contrastive Learning of Visual
  Representations", ICML 2020): two random views of every image (random resized crop, scale (crop_scale, 1),
  aspect ratio (3/4, 4/3); horizontal flip; colour jitter of strength s with probability 0.8,
  `ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)`; grayscale with probability 0.2: the paper's Appendix A, without
  the Gaussian blur, which its CIFAR-10 runs leave out too, Appendix B.9), a projection head g (one hidden
  layer of the feature width, ReLU, 128 outputs, §2.1) and the NT-Xent loss at temperature τ over the
  2B views of a batch (eq. 1, every other view a negative). The features are the backbone's, before g.
- `denoising`, a denoising autoencoder (Vincent et al., "Extracting and Composing Robust Features with
  Denoising Autoencoders", ICML 2008): "masking noise" sets a random share ν (`mask_ratio`) of the input's
  pixels to 0 (all channels of a pixel); a decoder (one hidden layer of 512, ReLU) reconstructs the clean
  image from the features, at most 32 x 32 (area-averaged), by mean squared error. It sees the evaluation
  view, without augmentation, so nothing of the image (colour included) is made invariant.

Neither reads a label or a group; no validation pass (the last epoch is kept). When no ClusterFix entry uses
`backbone: ssl`, the stage writes `UNUSED` instead, a constant file, so that it costs nothing and changing
its params reruns nothing after it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from masktune.config.fields import SEED_OR_RANDOM, WORKERS, Choice, Int, Number
from masktune.config.params import param
from masktune.data.prepared import DatasetInfo, PreparedFile, open_prepared
from masktune.data.splits import Split, open_transformed_split
from masktune.group_inference.clusterfix import BACKBONES
from masktune.io.files import atomic_directory, write_bytes_atomically
from masktune.precision import MixedPrecision
from masktune.train.fit import LAST, NO_VALIDATION, Keep
from masktune.train.network import TrainingConfig, finish_training, start_training
from masktune.train.objective import Objective

PROJECTION_DIM = 128     # SimCLR §2.1 / B.9: the projection head's output
SSL_OBJECTIVES = ("simclr", "denoising")
DECODER_HIDDEN = 512     # the denoising decoder's hidden layer
RECONSTRUCTION_SIZE = 32  # the denoising target's largest side (area-averaged): 28 x 28 digits stay whole
UNUSED = b"clusterfix_ssl: not trained (no ClusterFix entry uses clusterfix.backbone: ssl)\n"


@dataclass(frozen=True, kw_only=True)
class ClusterFixSSLConfig(TrainingConfig):
    """ClusterFix's self-supervised backbone: train_erm's network from its start, trained without labels by
    Adam (the usual optimiser of small-scale SimCLR runs, not a param, not tuned) when `backbone` is ssl
    (else nothing is trained)."""
    optimizer: str = "adam"
    backbone: str = param("clusterfix.backbone", Choice(options=BACKBONES, recipe=True))
    objective: str = param("clusterfix.ssl_objective", Choice(options=SSL_OBJECTIVES, recipe=True))
    epochs: int = param("clusterfix.ssl_epochs", Int(1, recipe=True))
    lr: float = param("clusterfix.ssl_lr", Number(0.0, exclusive_minimum=True, recipe=True))
    weight_decay: float = param("clusterfix.ssl_weight_decay", Number(0.0, recipe=True))
    batch_size: int = param("clusterfix.ssl_batch_size", Int(2, recipe=True))
    temperature: float = param("clusterfix.ssl_temperature", Number(0.0, exclusive_minimum=True))
    colour_strength: float = param("clusterfix.ssl_colour_strength", Number(0.0))
    crop_scale: float = param("clusterfix.ssl_crop_scale", Number(0.0, 1.0, exclusive_minimum=True))
    mask_ratio: float = param("clusterfix.ssl_mask_ratio", Number(0.0, 1.0))
    workers: int = param("clusterfix.workers", WORKERS)
    seed: int | None = param("clusterfix.seed", SEED_OR_RANDOM)


class TwoViews:
    """Two independent draws of a random transform of one image, stacked along the channels (2C, H, W):
    SimCLR's positive pair, made in the DataLoader workers like any random train view."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, image) -> torch.Tensor:
        return torch.cat([self.transform(image), self.transform(image)])


def simclr_transform(size: tuple[int, int], strength: float, crop_scale: float, mean, std) -> Callable:
    """SimCLR's augmentation of one PIL image (Appendix A, torchvision as the paper's code), then the
    dataset's normalisation (none for pixel datasets)."""
    from torchvision import transforms

    normalise = [] if mean is None else [transforms.Normalize(mean, std)]
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=(crop_scale, 1.0)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomApply([transforms.ColorJitter(0.8 * strength, 0.8 * strength, 0.8 * strength,
                                                       0.2 * strength)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.ToTensor(), *normalise])


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss (eq. 1) of 2B projections, views i and i + B a positive pair: the mean over
    all 2B anchors of the cross-entropy of its positive among the other 2B - 1 by cosine / τ."""
    z = F.normalize(z.float(), dim=1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    half = len(z) // 2
    positives = torch.cat([torch.arange(half, 2 * half), torch.arange(half)]).to(z.device)
    return F.cross_entropy(similarity, positives)


class _SelfSupervised(Objective):
    """An objective without labels over train_erm's network and a head of its own (saved in the journal)."""

    classifies = False
    data_parallel = False  # the loss couples a whole batch (SimCLR's negatives), and the head is not DDP's
    precisions = ("float32", "bfloat16", "float16")

    def __init__(self, head: nn.Module):
        self.head = head

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def state_dict(self) -> dict:
        return {"head": self.head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])


class SimCLR(_SelfSupervised):
    """NT-Xent over the two views of each image (inputs (B, 2C, H, W): `TwoViews`)."""

    def __init__(self, width: int, temperature: float, device: torch.device):
        super().__init__(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, PROJECTION_DIM)).to(device))
        self.temperature = temperature

    def batch_loss(self, network, model, inputs, targets, rows, amp: MixedPrecision):
        views = torch.cat(inputs.chunk(2, dim=1))
        with amp.autocast():
            projections = self.head(model.features(views))
        return None, nt_xent(projections, self.temperature), {}


class Denoising(_SelfSupervised):
    """Masking noise on the input, mean squared error of the clean image reconstructed from the features."""

    def __init__(self, width: int, image_size: tuple[int, int], mask_ratio: float, device: torch.device):
        self.target_size = tuple(min(side, RECONSTRUCTION_SIZE) for side in image_size)
        outputs = 3 * self.target_size[0] * self.target_size[1]
        super().__init__(nn.Sequential(nn.Linear(width, DECODER_HIDDEN), nn.ReLU(),
                                       nn.Linear(DECODER_HIDDEN, outputs)).to(device))
        self.mask_ratio = mask_ratio

    def batch_loss(self, network, model, inputs, targets, rows, amp: MixedPrecision):
        kept = torch.rand(len(inputs), 1, *inputs.shape[2:], device=inputs.device) >= self.mask_ratio
        target = F.adaptive_avg_pool2d(inputs, self.target_size).flatten(1)
        with amp.autocast():
            reconstruction = self.head(model.features(inputs * kept))
        return None, F.mse_loss(reconstruction.float(), target), {}


def image_size(prepared: PreparedFile, info: DatasetInfo) -> tuple[int, int]:
    """(height, width) of the training images as the network sees them (the evaluation view)."""
    if prepared.stores_pixels("train"):
        return prepared.pixel_size("train")
    return info.views.evaluation.output_size(*prepared.first_image_size("train"))


def ssl_objective(config, model: nn.Module, size: tuple[int, int], device: torch.device) -> Objective:
    """`config.objective`'s loss over `model`'s features (their width sizes its head), for images of `size`."""
    width = model.classifier.in_features
    if config.objective == "simclr":
        return SimCLR(width, config.temperature, device)
    return Denoising(width, size, config.mask_ratio, device)


def ssl_train_split(config, prepared: PreparedFile, info: DatasetInfo, size: tuple[int, int]) -> Split:
    """The training images without labels as the objective reads them: SimCLR's pairs of random views,
    or the evaluation view."""
    if config.objective == "simclr":
        views = info.views
        transform = TwoViews(simclr_transform(size, config.colour_strength, config.crop_scale, views.mean, views.std))
        return open_transformed_split(prepared, "train", views, transform, config.workers)
    return open_transformed_split(prepared, "train", info.views, None, config.workers)


def train_ssl(config, device: torch.device, data: str | Path, out: str | Path, live_dir: str | Path,
              stage: str, seed: int) -> dict:
    """Train the self-supervised backbone (`config.objective`) and write its last checkpoint at `out`, a
    model checkpoint of train_erm's network (its classifier untrained) that `load_checkpoint` reads."""
    prepared, info = open_prepared(data)
    size = image_size(prepared, info)
    run = start_training(config, device, data, seed=seed,
                         objective_for=lambda model, val: ssl_objective(config, model, size, device))
    run.train = ssl_train_split(config, prepared, info, size)
    print(f"{stage}: {config.objective} on {len(run.train):,} training images without labels, "
          f"{config.epochs} epochs, batch {config.batch_size}")
    recipe = {key: getattr(config, key) for key in ("objective", "epochs", "lr", "batch_size", "weight_decay")}
    keep = Keep(info={"self_supervised": config.objective}, best_path=out, score=NO_VALIDATION, select_by=LAST)
    return finish_training(run, stage=stage, keep=keep, live_dir=live_dir, name=f"SSL ({config.objective})",
                           resume_extra={"seed": seed}, summary={"seed": seed, "recipe": recipe})


def write_unused(out: str | Path, live_dir: str | Path) -> None:
    """What the stage writes when ClusterFix does not cluster SSL features: constant files, so that nothing
    after it reruns: a line in the checkpoint's place, and dvclive's files of a run of no epochs
    (`{"trained": false}`, the loss plot's header only)."""
    write_bytes_atomically(out, UNUSED)
    with atomic_directory(live_dir) as folder:
        (Path(folder) / "metrics.json").write_text(json.dumps({"trained": False}) + "\n")
        plot = Path(folder) / "plots" / "metrics" / "train" / "loss.tsv"
        plot.parent.mkdir(parents=True)
        plot.write_text("step\tloss\n")
