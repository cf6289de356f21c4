"""The saliency pass: a saliency method's maps of every image of a split into a saliency file, streamed in
batches and resumable (masktune.saliency.file describes the file and reads it). MaskTune's
`compute_saliency` (the training images through the masking view) and ExMap's `exmap_heatmaps` (the
validation images) are this one pass with their own method and settings.

The images are read through the data contract (`Split.ordered_batches`), a batch at a time; finished rows
go to a resume journal (`masktune.io.journal`) every `resume_every` images from a background thread while
the next batches compute, and the declared output is assembled from the journal only once every row is done.

Under torchrun each rank computes a contiguous range of whole batches (`distributed.row_range`: every
batch holds the rows it holds in one process, so every map is bitwise the one process's) into the
same journal; rank 0 assembles the file once all ranks are done.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from masktune.config.fields import MAX_WORKERS, Bool, Choice, Int, Number
from masktune.config.params import param
from masktune.data.prepared import PreparedFile
from masktune.data.splits import Split, masking_view_size, open_split
from masktune.data.views import DatasetViews
from masktune.distributed import DistributedConfig, barrier, current_world, row_range
from masktune.errors import UserError
from masktune.io.hdf5 import create_rows, h5_output, write_array
from masktune.io.journal import ResumeJournal, file_sha256
from masktune.precision import PRECISIONS
from masktune.saliency import METHODS, load_method


@dataclass(frozen=True, kw_only=True)
class SaliencyConfig(DistributedConfig):
    """Stage `compute_saliency`: MaskTune's saliency of the training images (the official XGradCAM, or LRP)."""
    method: str = param("saliency.method", Choice(options=METHODS))
    gamma: float = param("saliency.gamma", Number(0.0))  # LRP's Gamma rule (ExMap: 4)
    batch_size: int = param("saliency.batch_size", Int(1, recipe=True))
    precision: str = param("saliency.precision", Choice(options=tuple(PRECISIONS)))
    channels_last: bool = param("saliency.channels_last", Bool())
    fold_batchnorm: bool = param("saliency.fold_batchnorm", Bool())
    workers: int = param("saliency.workers", Int(0, MAX_WORKERS, recipe=True))
    resume_every: int = param("saliency.resume_every", Int(1))


@dataclass(frozen=True)
class Pass:
    """One saliency pass: rows in batches of `batch_size`, read by `workers` loader processes, journaled every
    `resume_every` rows; `fingerprint`: what the maps depend on (a journal of another one is discarded);
    `attrs`: the file's attributes (its `method` and `input_size` among them)."""
    batch_size: int
    resume_every: int
    workers: int
    fingerprint: Mapping
    attrs: Mapping
    desc: str = "saliency"


def inputs_fingerprint(checkpoint: str | Path, data: str | Path, settings) -> dict:
    """What a pass's maps depend on besides its rows: the model's bytes, the prepared file (path, size, time)
    and the settings (a dataclass; how many loader processes read the rows left out)."""
    stat = Path(data).stat()
    values = {k: v for k, v in dataclasses.asdict(settings).items() if k != "workers"}
    return {"checkpoint_sha256": file_sha256(checkpoint), "data": str(Path(data).resolve()), "data_size": stat.st_size,
            "data_mtime_ns": stat.st_mtime_ns, **json.loads(json.dumps(values, default=str))}


def compute_saliency_file(explain: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], split: Split,
                          out: str | Path, run: Pass, device: torch.device) -> np.ndarray | None:
    """`explain`'s maps of every row of `split` into `out`; resumes an interrupted run. Returns the predicted
    classes on rank 0, None on the other ranks."""
    world = current_world()
    n = len(split)
    journal = ResumeJournal(out, {**run.fingerprint, "rows": n, "torch": torch.__version__, "device": device.type,
                                  "world_size": world.size}, create=world.is_main)
    barrier(world)  # rank 0 has kept or discarded the journal
    first, stop = row_range(n, run.batch_size, world)
    start = min(journal.done_rows(first), stop)
    if journal.discarded:
        print(f"{journal.folder}: left by other inputs or settings, starting over")
    if start > first:
        print(f"resuming from image {start:,} of {n:,} ({journal.folder})")
    _journal_rows(explain, split, journal, start, stop, run, device)
    barrier(world)  # every rank's rows are in the journal
    if not world.is_main:
        return None
    predicted = _assemble(journal, out, n, run.attrs)
    journal.remove()
    return predicted


def _journal_rows(explain, split: Split, journal: ResumeJournal, start: int, stop: int, run: Pass,
                  device: torch.device) -> None:
    """Compute rows start..stop-1 batch by batch; a background thread writes each finished shard while
    the next batches compute."""
    total = -(-stop // run.batch_size)
    bar = tqdm(total=total, initial=start // run.batch_size, desc=run.desc, unit="batch",
               disable=None if current_world().is_main else True)
    buffer: dict[str, list] = {"maps": [], "predicted": []}
    shard_start, pending = start, None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        for first, inputs in split.ordered_batches(run.batch_size, device, start, run.workers):
            if first >= stop:
                break
            maps, predicted = explain(inputs)
            buffer["maps"].append(maps.float().cpu().numpy())
            buffer["predicted"].append(predicted.cpu().numpy())
            done = first + len(inputs)
            bar.update()
            if done - shard_start >= run.resume_every or done == stop:
                if pending is not None:
                    pending.result()
                arrays = {name: np.concatenate(parts) for name, parts in buffer.items()}
                pending = writer.submit(journal.write_shard, shard_start, arrays)
                buffer = {name: [] for name in buffer}
                shard_start = done
        if pending is not None:
            pending.result()
    bar.close()


def _assemble(journal: ResumeJournal, out: str | Path, n: int, attrs: Mapping) -> np.ndarray:
    """Copy the journal's shards into the declared output, atomically; return the predictions."""
    if journal.done_rows() != n:
        raise UserError(f"{journal.folder}: the journal covers {journal.done_rows()} of {n} rows")
    predicted = np.empty(n, dtype=np.int64)
    with h5_output(out, attrs) as f:
        maps = None
        for first, arrays in journal.read_shards(n):
            if maps is None:
                maps = create_rows(f, "maps", n, arrays["maps"].shape[1:], np.float32)
            maps[first:first + len(arrays["maps"])] = arrays["maps"]
            predicted[first:first + len(arrays["predicted"])] = arrays["predicted"]
        if maps is None:
            raise UserError("no images to explain")
        write_array(f, "predicted", predicted)
    return predicted


def training_saliency(model: nn.Module, checkpoint: str | Path, prepared: PreparedFile, views: DatasetViews,
                      out: str | Path, config: SaliencyConfig, device: torch.device) -> np.ndarray | None:
    """MaskTune's saliency file (stage `compute_saliency`): `config.method`'s maps of every training image seen
    through the masking view, by the model at `checkpoint`; the predicted classes on rank 0, else None."""
    split = open_split(prepared, "train", views, "masking")
    attrs = {"method": config.method, "input_size": list(masking_view_size(prepared, views)),
             "precision": config.precision}
    run = Pass(config.batch_size, config.resume_every, config.workers,
               inputs_fingerprint(checkpoint, prepared.path, config), attrs, desc=config.method)
    with load_method(config.method).explainer(model, device, precision=config.precision, gamma=config.gamma,
                                              channels_last=config.channels_last,
                                              fold_batchnorm=config.fold_batchnorm) as explain:
        return compute_saliency_file(explain, split, out, run, device)
