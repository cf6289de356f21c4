"""Running a trained network over a split without training it: predictions, logits, penultimate features,
and the row-sharded pass under them (`map_rows`), which every stage that only reads a network shares
(evaluation, DFR, ClusterFix's features, ExMap's heatmaps, validation during training)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from masktune.data.splits import ResampledSplit, Split
from masktune.distributed import current_world, gather_objects, row_range


def progress(iterable, desc: str, total: int | None = None) -> tqdm:
    """A batch progress bar on a terminal; silent when output goes to a log (CI, files) and on
    every data-parallel worker but rank 0."""
    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False,
                disable=None if current_world().is_main else True)


def map_rows(data: Split, batch_size: int, device: torch.device, desc: str,
             compute: Callable[..., dict[str, torch.Tensor | np.ndarray]], with_rows: bool = False) -> dict[str, np.ndarray]:
    """`compute(inputs)` (named per-row results of a batch; with `with_rows`, `compute(inputs, rows)`, the
    rows of the split in the batch) over every row of `data`, in row order, batches read in order. Under
    torchrun each rank computes a contiguous range of whole batches (every batch holds the rows it holds
    in one process) and every rank gets all rows."""
    world = current_world()
    if world.distributed:
        start, stop = row_range(len(data), batch_size, world)
        data = ResampledSplit(data, np.arange(start, stop))
    parts: dict[str, list[np.ndarray]] = {}
    for inputs, index in progress(data.batches(batch_size, device), desc, total=-(-len(data) // batch_size)):
        results = compute(inputs, data.source_rows(index)) if with_rows else compute(inputs)
        for name, values in results.items():
            parts.setdefault(name, []).append(values.cpu().numpy() if isinstance(values, torch.Tensor) else values)
    mine = {name: np.concatenate(values) for name, values in parts.items()}
    if not world.distributed:
        return mine
    ranks = [part for part in gather_objects(mine, world) if part]  # a rank may have no rows
    return {name: np.concatenate([part[name] for part in ranks]) for name in (ranks[0] if ranks else {})}


@torch.inference_mode()
def predict(model: nn.Module, data: Split, batch_size: int, device: torch.device, desc: str = "predict") -> np.ndarray:
    """Predicted class of every sample of `data`, in order (under torchrun: `map_rows` shares the work)."""
    model.eval()
    rows = map_rows(data, batch_size, device, desc, lambda inputs: {"predicted": model(inputs).argmax(1)})
    return rows.get("predicted", np.zeros(0, dtype=np.int64))


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Split, batch_size: int, device: torch.device,
                   desc: str = "predict") -> np.ndarray:
    """The logits (N, classes) of every sample of `data`, in order, in float32 (selective
    classification scores them; under torchrun `map_rows` shares the work)."""
    model.eval()
    rows = map_rows(data, batch_size, device, desc, lambda inputs: {"logits": model(inputs).float()})
    return rows.get("logits", np.zeros((0, 0), dtype=np.float32))


def penultimate_features(model: nn.Module, data: Split, batch_size: int, device: torch.device,
                         desc: str = "embeddings") -> np.ndarray:
    """float32 (N, D): `model.features` of every row of `data`, in order (eval mode; under torchrun
    the ranks share the rows, `map_rows`): what DFR retrains on and ClusterFix clusters."""
    model.eval()
    with torch.no_grad():
        rows = map_rows(data, batch_size, device, desc, lambda inputs: {"features": model.features(inputs).float()})
    return rows.get("features", np.empty((0, model.classifier.in_features), dtype=np.float32))


def validation_accuracy(val: Split) -> Callable[[np.ndarray], dict[str, float]]:
    """The default model-selection score: plain validation accuracy (no group labels)."""
    return lambda predictions: {"accuracy": float((predictions == val.labels).mean())}


def accuracy(model: nn.Module, data: Split, batch_size: int, device: torch.device, desc: str = "validate") -> float:
    return float((predict(model, data, batch_size, device, desc) == data.labels).mean())
