"""The `compute_saliency` step: XGradCAM of every training image into the saliency file, streamed
in batches and resumable (masktune.saliency.file describes the file and reads it).

The images are read through the data contract as the masking view (`Split.ordered_batches`), a batch
at a time; finished rows go to a resume journal (`masktune.io.journal`) every `resume_every` images
from a background thread while the next batches compute, and the declared output is assembled from
the journal only once every row is done.

Under torchrun each rank computes a contiguous range of whole batches (`distributed.row_range`: every
batch holds the rows it holds in one process, so every map is bitwise the one process's) into the
same journal; rank 0 assembles the file once all ranks are done.
"""
from __future__ import annotations

import concurrent.futures
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from masktune.config.stages import SaliencyConfig
from masktune.data.prepared import PreparedFile
from masktune.data.splits import Split, masking_view_size, open_split
from masktune.data.views import DatasetViews
from masktune.distributed import barrier, current_world, row_range
from masktune.errors import UserError
from masktune.io.hdf5 import create_rows, h5_output, write_array
from masktune.io.journal import ResumeJournal, file_sha256
from masktune.saliency.xgradcam import feature_cams, prepare_for_saliency


def compute_saliency_file(model: nn.Module, checkpoint: str | Path, prepared: PreparedFile, views: DatasetViews,
                          out: str | Path, settings: SaliencyConfig, device: torch.device) -> dict | None:
    """XGradCAM of every training image of `prepared`, seen through its masking view, into `out`;
    resumes an interrupted run. Returns the summary on rank 0, None on the other ranks."""
    world = current_world()
    split = open_split(prepared, "train", views, "masking")
    n = len(split)
    input_size = masking_view_size(prepared, views)
    data_stat = prepared.path.stat()
    fingerprint = {"checkpoint_sha256": file_sha256(checkpoint), "data": str(prepared.path.resolve()),
                   "data_size": data_stat.st_size, "data_mtime_ns": data_stat.st_mtime_ns, "rows": n,
                   "torch": torch.__version__, "device": device.type, "world_size": world.size, **asdict(settings)}
    fingerprint.pop("workers")  # how the rows are read does not change them
    journal = ResumeJournal(out, fingerprint, create=world.is_main)
    barrier(world)  # rank 0 has kept or discarded the journal
    first, stop = row_range(n, settings.batch_size, world)
    start = min(journal.done_rows(first), stop)
    if journal.discarded:
        print(f"{journal.folder}: left by other inputs or settings, starting over")
    if start > first:
        print(f"resuming from image {start:,} of {n:,} ({journal.folder})")
    model = prepare_for_saliency(model, device, settings.channels_last, settings.fold_batchnorm)
    _journal_rows(model, split, journal, start, stop, settings, device)
    barrier(world)  # every rank's rows are in the journal
    if not world.is_main:
        return None
    predicted = _assemble(journal, out, n, input_size, settings)
    journal.remove()
    return {"images": n, "resumed_from": start, "predicted": predicted}


def _journal_rows(model: nn.Module, split: Split, journal: ResumeJournal, start: int, stop: int,
                  settings: SaliencyConfig, device: torch.device) -> None:
    """Compute rows start..stop-1 batch by batch; a background thread writes each finished shard while
    the next batches compute."""
    layer = model.grad_cam_target_layer()
    total = -(-stop // settings.batch_size)
    bar = tqdm(total=total, initial=start // settings.batch_size, desc="XGradCAM", unit="batch",
               disable=None if current_world().is_main else True)
    buffer: dict[str, list] = {"cams": [], "predicted": []}
    shard_start, pending = start, None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        for first, inputs in split.ordered_batches(settings.batch_size, device, start, settings.workers):
            if first >= stop:
                break
            cams, predicted = feature_cams(model, layer, inputs, settings.precision)
            buffer["cams"].append(cams.cpu().numpy())
            buffer["predicted"].append(predicted.cpu().numpy())
            done = first + len(inputs)
            bar.update()
            if done - shard_start >= settings.resume_every or done == stop:
                if pending is not None:
                    pending.result()
                arrays = {name: np.concatenate(parts) for name, parts in buffer.items()}
                pending = writer.submit(journal.write_shard, shard_start, arrays)
                buffer = {name: [] for name in buffer}
                shard_start = done
        if pending is not None:
            pending.result()
    bar.close()


def _assemble(journal: ResumeJournal, out: str | Path, n: int, input_size: tuple[int, int],
              settings: SaliencyConfig) -> np.ndarray:
    """Copy the journal's shards into the declared output, atomically; return the predictions."""
    if journal.done_rows() != n:
        raise UserError(f"{journal.folder}: the journal covers {journal.done_rows()} of {n} rows")
    predicted = np.empty(n, dtype=np.int64)
    attrs = {"method": "xgradcam", "input_size": list(input_size), "precision": settings.precision}
    with h5_output(out, attrs) as f:
        cams = None
        for first, arrays in journal.read_shards(n):
            if cams is None:
                cams = create_rows(f, "cams", n, arrays["cams"].shape[1:], np.float32)
            cams[first:first + len(arrays["cams"])] = arrays["cams"]
            predicted[first:first + len(arrays["predicted"])] = arrays["predicted"]
        if cams is None:
            raise UserError("no training images to explain")
        write_array(f, "predicted", predicted)
    return predicted


