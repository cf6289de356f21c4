"""The prepared file and HDF5 helpers: round trip, byte-identical rewrites, atomic writes, clear errors."""
from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest

from masktune.data.prepared import PreparedFile, write_prepared
from masktune.data.samples import SampleSet
from masktune.errors import UserError
from masktune.io.files import atomic_directory, atomic_output
from masktune.io.hdf5 import read_arrays, write_arrays

ATTRS = {"dataset": "x", "num_classes": 2, "group_names": json.dumps({0: "a", 1: "b", 2: "c", 3: "d"})}


def read_split(path, split):
    return PreparedFile(path).samples(split)


def _samples(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return SampleSet(rng.integers(0, 256, (n, 6, 7, 3), dtype=np.uint8), rng.integers(0, 2, n),
                     rng.integers(0, 2, n), np.arange(n) * 3)


def test_round_trip_and_byte_identical_rewrites(tmp_path):
    samples = _samples()
    write_prepared(tmp_path / "a.h5", {"train": samples, "val": samples.subset(np.array([1, 3]))}, ATTRS)
    back = read_split(tmp_path / "a.h5", "train")
    for field in ("images", "labels", "attributes", "source_index", "groups"):
        np.testing.assert_array_equal(getattr(back, field), getattr(samples, field))
    assert len(read_split(tmp_path / "a.h5", "val")) == 2
    write_prepared(tmp_path / "b.h5", {"train": samples, "val": samples.subset(np.array([1, 3]))}, ATTRS)
    digest = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]  # no timestamps: same inputs, same bytes, DVC sees no change


def test_wrong_shapes_and_missing_pieces_are_named(tmp_path):
    path = tmp_path / "d.h5"
    write_prepared(path, {"train": _samples()}, ATTRS)
    with pytest.raises(UserError, match="no split 'val'"):
        read_split(path, "val")
    with h5py.File(path, "a") as f:
        del f["train/labels"]
        f["train/labels"] = np.zeros(4, dtype=np.int64)
    with pytest.raises(UserError, match=r"d.h5: train/labels has shape \(4,\), expected \(5,\)"):
        read_split(path, "train")
    with h5py.File(path, "a") as f:
        del f["train/images"]
        f["train/images"] = np.zeros((5, 6, 7), dtype=np.uint8)
    with pytest.raises(UserError, match=r"train/images must be uint8 of shape \(N, H, W, 1 or 3\)"):
        read_split(path, "train")
    write_arrays(tmp_path / "s.h5", {"saliency": np.zeros((5, 6, 6), dtype=np.float32)})
    with pytest.raises(UserError, match=r"'saliency' has shape \(5, 6, 6\), expected \(4, N, N\)"):
        read_arrays(tmp_path / "s.h5", {"saliency": (4, None, None)})
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="junk.h5: not a readable HDF5 file"):
        read_split(tmp_path / "junk.h5", "train")
    with pytest.raises(UserError, match="missing.h5: file not found"):
        read_split(tmp_path / "missing.h5", "train")


def test_atomic_output_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_leftovers_of_a_killed_writer_go_at_the_next_write(tmp_path):
    """SIGKILL skips the clean-up; the next write of the same output removes what it left, and
    nothing of another output whose name starts the same."""
    (tmp_path / ".out.bin.k1l2e3d4.tmp").write_bytes(b"half")
    (tmp_path / ".live.a1b2c3d4.tmp").mkdir()
    (tmp_path / ".live.a1b2c3d4.tmp" / "metrics.json").write_text("{}")
    kept = tmp_path / ".out.bin.old.q1w2e3r4.tmp"  # a temporary of `out.bin.old`
    kept.write_bytes(b"other")
    with atomic_output(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"new")
    with atomic_directory(tmp_path / "live") as folder:
        (folder / "metrics.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name, "live", "out.bin"]
