"""The training loop shared by `train_erm` and `finetune`, prediction, and checkpoints.

Follows the official src/methods/base_method.py: cross-entropy, SGD, inputs are `ToTensor()` of the
RGB uint8 images (values in [0, 1], no normalisation, as the official MNIST transforms), shuffled
batches, no learning-rate schedule (`train_erm` and `finetune` run with `use_lr_scheduler=False`).
Checkpoints hold the model *and* optimizer state: the finetune continues from the last ERM
checkpoint with its momentum buffers and learning rate, as the official `finetune()` does.
"""
from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from masktune.errors import UserError
from masktune.models import build_model
from masktune.storage import SampleSet, atomic_output


def progress(iterable, desc: str, total: int | None = None) -> tqdm:
    """A batch progress bar on a terminal; silent when output goes to a log (CI, files)."""
    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False, disable=None)


def select_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed every generator and ask for deterministic kernels; return the generator for shuffling."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def to_input(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1]: torchvision's ToTensor, batched. The
    result keeps the NHWC layout in memory (a channels-last tensor), which oneDNN and cuDNN convolve
    fastest; values are the same either way."""
    tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.to(device, non_blocking=True)
    return tensor.permute(0, 3, 1, 2).float().div_(255)


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[np.ndarray]:
    """Index batches over n samples: shuffled with `generator`, in order without one."""
    order = torch.randperm(n, generator=generator).numpy() if generator is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def _as_split(data):
    """A `SampleSet` (arrays in memory) as a split with `.batches`; splits pass through."""
    if isinstance(data, SampleSet):
        from masktune.loaders import ArraySplit

        return ArraySplit(data.images, data.labels, data.groups)
    return data


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data, batch_size: int,
                generator: torch.Generator, device: torch.device, desc: str) -> dict[str, float]:
    """One shuffled pass over `data` (a `SampleSet` or a `loaders` split); returns the mean loss and
    the accuracy over the epoch."""
    data = _as_split(data)
    model.train()
    total_loss, correct = 0.0, 0
    bar = progress(data.batches(batch_size, generator, device), desc, total=-(-len(data) // batch_size))
    for inputs, index in bar:
        targets = torch.from_numpy(np.asarray(data.labels)[index]).to(device)
        logits = model(inputs)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(index)
        correct += (logits.argmax(1) == targets).sum().item()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return {"loss": total_loss / len(data), "accuracy": correct / len(data)}


@torch.inference_mode()
def predict(model: nn.Module, data, batch_size: int, device: torch.device, desc: str = "predict") -> np.ndarray:
    """Predicted class of every sample of `data` (a `SampleSet` or a `loaders` split), in order."""
    data = _as_split(data)
    model.eval()
    bar = progress(data.batches(batch_size, None, device), desc, total=-(-len(data) // batch_size))
    predictions = [model(inputs).argmax(1).cpu().numpy() for inputs, _ in bar]
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, *, arch: str,
                    num_classes: int, epoch: int, val_accuracy: float) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "arch": arch,
             "num_classes": num_classes, "epoch": epoch, "val_accuracy": val_accuracy}
    buffer = io.BytesIO()  # torch.save names the zip's root folder after the file: keep it fixed,
    torch.save(state, buffer)  # so that the same weights give the same bytes
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was saved from; return it with the raw state (optimizer...)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (run `dvc repro` to train it)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model = build_model(state["arch"], state["num_classes"])
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, EOFError, OSError) as error:
        raise UserError(f"{path}: not a checkpoint of this project ({str(error)[:200]})") from None
    return model.to(device), state
