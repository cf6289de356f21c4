"""The saliency file: written by `compute_saliency` in batches, resumably; read by masking and figures.

Storage design (measured in bench/storage_scaling.py, numbers in the README): the file holds the
XGradCAM maps at *feature-map resolution*, before any scaling (`cams`, float32 (N, h, w): 8 x 8 for
SmallCNN, 7 x 7 for ResNet-50 at 224 x 224), and the predicted class of every image. The
input-resolution maps the masks are thresholded on are a fixed function of these
(`saliency.full_resolution`), recomputed exactly where needed, so the file costs 196 bytes per
ResNet-50 image instead of 200 KB for float32 maps at 224 x 224 (CelebA: 32 MB instead of 33 GB).
"""
from __future__ import annotations

import concurrent.futures
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from masktune.errors import UserError
from masktune.journal import ResumeJournal, file_sha256
from masktune.loaders import masking_view_size, saliency_batches
from masktune.saliency import feature_cams, full_resolution, prepare_for_saliency
from masktune.storage import STREAM_CACHE_BYTES, create_rows, h5_output, open_h5, read_rows
from masktune.streaming import split_length


@dataclass(frozen=True)
class SaliencySettings:
    batch_size: int
    precision: str = "float32"   # float32 | bfloat16 | float16 (autocast)
    channels_last: bool = True
    fold_batchnorm: bool = True  # BatchNorm folded into the convolutions (maps within 1e-5)
    workers: int = 1             # DataLoader processes reading and decompressing the next batches
    resume_every: int = 8192     # rows per journal shard: at most this much work is lost on a crash


def compute_saliency_file(model: nn.Module, checkpoint: str | Path, data: str | Path, out: str | Path,
                          settings: SaliencySettings, device: torch.device) -> dict:
    """XGradCAM of every training image of `data` into `out`; resumes an interrupted run."""
    n = split_length(data, "train")
    input_size = masking_view_size(data)
    data_stat = Path(data).stat()
    fingerprint = {"checkpoint_sha256": file_sha256(checkpoint), "data": str(Path(data).resolve()),
                   "data_size": data_stat.st_size, "data_mtime_ns": data_stat.st_mtime_ns, "rows": n,
                   "torch": torch.__version__, "device": device.type, **asdict(settings)}
    fingerprint.pop("workers")  # how the rows are read does not change them
    journal = ResumeJournal(out, fingerprint)
    start = journal.done_rows()
    if journal.discarded:
        print(f"{journal.folder}: left by other inputs or settings, starting over")
    if start:
        print(f"resuming from image {start:,} of {n:,} ({journal.folder})")
    model = prepare_for_saliency(model, device, settings.channels_last, settings.fold_batchnorm)
    _journal_rows(model, data, journal, start, n, settings, device)
    predicted = _assemble(journal, out, n, input_size, settings)
    journal.remove()
    return {"images": n, "resumed_from": start, "predicted": predicted}


def _journal_rows(model: nn.Module, data: str | Path, journal: ResumeJournal, start: int, n: int,
                  settings: SaliencySettings, device: torch.device) -> None:
    """Compute rows start..n-1 batch by batch; a background thread writes each finished shard while
    the next batches compute."""
    layer = model.grad_cam_target_layer()
    total = -(-n // settings.batch_size)
    bar = tqdm(total=total, initial=start // settings.batch_size, desc="XGradCAM", unit="batch", disable=None)
    buffer: dict[str, list] = {"cams": [], "predicted": []}
    shard_start, pending = start, None
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        for first, inputs in saliency_batches(data, start, settings.batch_size, settings.workers, device):
            cams, predicted = feature_cams(model, layer, inputs, settings.precision)
            buffer["cams"].append(cams.cpu().numpy())
            buffer["predicted"].append(predicted.cpu().numpy())
            done = first + len(inputs)
            bar.update()
            if done - shard_start >= settings.resume_every or done == n:
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
              settings: SaliencySettings) -> np.ndarray:
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
        f.create_dataset("predicted", data=predicted, track_times=False)
    return predicted


def saliency_layout(path: str | Path, rows: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(feature-map size, input size) of a saliency file, checked to hold `rows` maps."""
    with open_h5(path) as f:
        if "cams" not in f or "input_size" not in f.attrs:
            raise UserError(f"{path}: not a saliency file of this project (no 'cams'); rerun compute_saliency")
        shape = f["cams"].shape
        if len(shape) != 3 or shape[0] != rows:
            raise UserError(f"{path}: 'cams' has shape {shape}, expected ({rows}, h, w) for the {rows} "
                            "training images: saliency and data disagree")
        return (int(shape[1]), int(shape[2])), tuple(int(s) for s in f.attrs["input_size"])


def iter_full_maps(path: str | Path, rows: int, chunk: int):
    """Yield (first row, input-resolution maps (B, H, W) float32 tensor), `chunk` rows at a time."""
    _, input_size = saliency_layout(path, rows)
    with open_h5(path, STREAM_CACHE_BYTES) as f:
        for first in range(0, rows, chunk):
            cams = torch.from_numpy(f["cams"][first:first + chunk])
            yield first, full_resolution(cams, input_size)


def full_maps_at(path: str | Path, rows: int, index: np.ndarray) -> np.ndarray:
    """Input-resolution maps of the rows `index` only (for figures)."""
    _, input_size = saliency_layout(path, rows)
    return full_resolution(torch.from_numpy(read_rows(path, "cams", index)), input_size).numpy()
