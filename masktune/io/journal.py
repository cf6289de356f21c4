"""A resume journal for long row-by-row stages (`compute_saliency` on CelebA takes hours on a CPU).

Finished rows go to shard files in `<output>.partial/`, each written atomically (temporary name,
then rename), so a crash, a kill -9 or a full disk loses at most the shard being written and never
leaves a half shard that looks complete. `meta.json` holds a fingerprint of everything the rows
depend on (model checkpoint hash, data file, batch size, precision, ...): a journal left by other
inputs is discarded, never resumed. When every row is done the stage assembles the shards into its
declared output (atomically as well) and deletes the journal, so DVC only ever sees a complete file.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from masktune.io.files import atomic_output

_SHARD = re.compile(r"rows-(\d{12})-(\d{12})\.h5")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class ResumeJournal:
    """Shards of finished rows beside `output`, valid only for the inputs in `fingerprint`."""

    def __init__(self, output: str | Path, fingerprint: Mapping):
        output = Path(output)
        self.folder = output.with_name(output.name + ".partial")
        self.fingerprint = json.loads(json.dumps(dict(fingerprint)))  # normalise tuples, numbers
        meta = self.folder / "meta.json"
        self.discarded = False
        if self.folder.exists() and (not meta.is_file() or json.loads(meta.read_text()) != self.fingerprint):
            shutil.rmtree(self.folder)
            self.discarded = True
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            with atomic_output(meta) as tmp:
                tmp.write_text(json.dumps(self.fingerprint, indent=2, sort_keys=True))

    def _shards(self) -> list[tuple[int, int, Path]]:
        found = []
        for path in self.folder.iterdir():
            match = _SHARD.fullmatch(path.name)
            if match:
                found.append((int(match[1]), int(match[2]), path))
        return sorted(found)

    def done_rows(self) -> int:
        """Rows 0 .. done_rows() - 1 are in the journal (the contiguous prefix of shards)."""
        done = 0
        for start, stop, _ in self._shards():
            if start != done:
                break
            done = stop
        return done

    def write_shard(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Record rows start .. start + len - 1 (every array has that many rows)."""
        stop = start + len(next(iter(arrays.values())))
        with atomic_output(self.folder / f"rows-{start:012d}-{stop:012d}.h5") as tmp, h5py.File(tmp, "w") as f:
            for name, array in arrays.items():
                f.create_dataset(name, data=array, track_times=False)

    def read_shards(self, stop: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(first row, arrays) of each shard of the contiguous prefix, in order, up to row `stop`."""
        done = 0
        for start, end, path in self._shards():
            if start != done or start >= stop:
                break
            with h5py.File(path, "r") as f:
                yield start, {name: f[name][()] for name in f}
            done = end

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
