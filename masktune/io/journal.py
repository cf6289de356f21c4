"""Resume journals for long stages: `compute_saliency` on CelebA takes hours on a CPU, a paper recipe
trains for 100 epochs, and a spot instance or a node can be taken away at any point (after `kill -9`
DVC removes a stage's outputs, so nothing declared survives).

A journal is a folder `<output>.partial/` beside the stage's first output, outside what DVC tracks
(`.gitignore`: `*.partial/`). `meta.json` holds a fingerprint of everything the work depends on
(inputs' hashes or sizes and times, the stage's params, world size, torch version, ...): a journal
left by other inputs or params is discarded, never resumed. Every file in it is written atomically
(temporary name, then rename), so a crash loses at most the piece being written and never leaves a
half file that looks complete. The stage deletes the journal once its declared outputs are written.

- `ResumeJournal`: finished rows of a per-image pass in shard files (`compute_saliency`), assembled
  into the output when every row is done; several ranks each journal their own contiguous range.
- `EpochJournal`: one file holding the whole training state after the last finished epoch
  (`masktune.train.fit`).
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np
import torch

from masktune.io.files import atomic_output, write_bytes_atomically
from masktune.io.hdf5 import write_arrays

_SHARD = re.compile(r"rows-(\d{12})-(\d{12})\.h5")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(path: str | Path) -> dict:
    """Path, size and modification time of an input too large to hash at every start (a prepared
    dataset of several GB): DVC writes a changed input as a new file, so a change shows in these."""
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_meta(meta: Path) -> dict | None:
    """A journal's fingerprint, or None when it has none (a folder left before its meta.json was written) or
    one that does not read (empty or garbage, e.g. a power cut during a write): such a journal is discarded
    with one line, never kept to block its stage."""
    if not meta.is_file():
        return None
    try:
        value = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        print(f"{meta}: unreadable resume journal ({type(error).__name__}: {str(error)[:120]}); discarded, starting over")
        return None
    return value if isinstance(value, dict) else None


class JournalFolder:
    """`<output>.partial/`, valid only for the inputs in `fingerprint`: an existing folder with another
    fingerprint is deleted (`discarded`). `create=False` only looks (the other ranks of a
    distributed stage, after rank 0 has made the folder)."""

    def __init__(self, output: str | Path, fingerprint: Mapping, create: bool = True):
        output = Path(output)
        self.folder = output.with_name(output.name + ".partial")
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), default=str))  # normalise tuples, paths
        meta = self.folder / "meta.json"
        self.discarded = False
        if not create:
            return
        if self.folder.exists() and _read_meta(meta) != self.fingerprint:
            shutil.rmtree(self.folder)
            self.discarded = True
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            with atomic_output(meta) as tmp:
                tmp.write_text(json.dumps(self.fingerprint, indent=2, sort_keys=True))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class ResumeJournal(JournalFolder):
    """Shards of finished rows beside `output`."""

    def __init__(self, output: str | Path, fingerprint: Mapping, create: bool = True):
        super().__init__(output, fingerprint, create)
        if create:
            self._discard_unreadable_shards()

    def _discard_unreadable_shards(self) -> None:
        """Delete every shard that does not read back whole (truncated, or a chunk whose checksum fails: changed
        after it was renamed into place), saying so: its rows are computed again instead of failing the
        assembly hours later. Read once when a stage starts on a journal it resumes."""
        for _, _, path in self._shards():
            try:
                with h5py.File(path, "r") as f:
                    for name in f:
                        f[name][()]
            except (OSError, RuntimeError, KeyError) as error:
                print(f"{path}: unreadable resume shard ({str(error).splitlines()[0][:120]}); discarded, its rows are "
                      "computed again")
                path.unlink()

    def _shards(self) -> list[tuple[int, int, Path]]:
        found = []
        for path in self.folder.iterdir():
            match = _SHARD.fullmatch(path.name)
            if match:
                found.append((int(match[1]), int(match[2]), path))
        return sorted(found)

    def done_rows(self, start: int = 0) -> int:
        """Rows start .. done_rows(start) - 1 are in the journal (the contiguous run of shards from
        `start`; a rank of a distributed pass asks from the start of its range)."""
        done = start
        for first, stop, _ in self._shards():
            if first == done:
                done = stop
        return done

    def write_shard(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Record rows start .. start + len - 1 (every array has that many rows)."""
        stop = start + len(next(iter(arrays.values())))
        write_arrays(self.folder / f"rows-{start:012d}-{stop:012d}.h5", arrays, compress=False)

    def read_shards(self, stop: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(first row, arrays) of each shard of the contiguous run from row 0, in order, up to row `stop`."""
        done = 0
        for start, end, path in self._shards():
            if start != done:
                continue
            if start >= stop:
                break
            with h5py.File(path, "r") as f:
                yield start, {name: f[name][()] for name in f}
            done = end


class EpochJournal(JournalFolder):
    """The training state after the last finished epoch, in one atomically replaced file."""

    def save(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_bytes_atomically(self.folder / "epoch.pt", buffer.getvalue())

    def load(self) -> dict | None:
        """The saved state, or None when no epoch has finished under these inputs. Read weights-only
        (tensors and plain Python values, never arbitrary objects: the folder is outside what DVC tracks,
        so anyone who can write there could otherwise run code at the next `dvc repro`); a file that
        does not load so is discarded with one line, and training starts over."""
        path = self.folder / "epoch.pt"
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 (truncated, corrupt or hostile: any failure discards it)
            reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            print(f"{path}: unreadable resume journal ({reason}); discarded, starting over")
            path.unlink()
            return None
