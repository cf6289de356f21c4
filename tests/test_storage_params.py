"""HDF5 round trip, atomic writes, and the clear errors for bad files and bad params."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT

from masktune.errors import UserError
from masktune.params import StageParams, load_stage_params
from masktune.storage import SampleSet, atomic_output, read_arrays, read_split, write_arrays, write_splits


def _samples(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return SampleSet(rng.integers(0, 256, (n, 6, 7, 3), dtype=np.uint8), rng.integers(0, 2, n),
                     rng.integers(0, 2, n), np.arange(n) * 3)


def test_round_trip_and_byte_identical_rewrites(tmp_path):
    samples = _samples()
    write_splits(tmp_path / "a.h5", {"train": samples, "val": samples.subset(np.array([1, 3]))},
                 attrs={"dataset": "x"})
    back = read_split(tmp_path / "a.h5", "train")
    for field in ("images", "labels", "attributes", "source_index", "groups"):
        np.testing.assert_array_equal(getattr(back, field), getattr(samples, field))
    assert len(read_split(tmp_path / "a.h5", "val")) == 2
    write_splits(tmp_path / "b.h5", {"train": samples, "val": samples.subset(np.array([1, 3]))},
                 attrs={"dataset": "x"})
    digest = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]  # no timestamps: same inputs, same bytes, DVC sees no change


def test_wrong_shapes_and_missing_pieces_are_named(tmp_path):
    path = tmp_path / "d.h5"
    write_splits(path, {"train": _samples()})
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


@pytest.mark.parametrize("key, value, getter, message", [
    ("train_erm.epochs", "three", lambda p: p.integer("train_erm.epochs", 1),
     "train_erm.epochs must be an integer >= 1, got 'three'"),
    ("train_erm.epochs", 0, lambda p: p.integer("train_erm.epochs", 1),
     "train_erm.epochs must be an integer >= 1, got 0"),
    ("train_erm.epochs", True, lambda p: p.integer("train_erm.epochs", 1), "got True"),
    ("lr", -0.1, lambda p: p.number("lr", 0.0, exclusive_minimum=True), "lr must be a number > 0.0"),
    ("mask.method", "gradcam", lambda p: p.choice("mask.method", ["xgradcam", "random"]),
     "mask.method must be one of 'xgradcam', 'random', got 'gradcam'"),
])
def test_bad_params_name_the_key(key, value, getter, message):
    values = {"lr": 0.01, "train_erm": {"epochs": 3}, "mask": {"method": "xgradcam"}}
    section, _, leaf = key.rpartition(".")
    (values[section] if section else values)[leaf] = value
    params = StageParams("s", values, ["lr", "train_erm", "mask"])
    with pytest.raises(UserError, match=message):
        getter(params)


def test_a_stage_cannot_read_an_undeclared_param():
    params = load_stage_params("finetune", ROOT / "params.yaml", ROOT / "dvc.yaml")
    assert params.integer("finetune.epochs", 1) == 1
    with pytest.raises(UserError, match="stage 'finetune' reads param 'lr' but dvc.yaml does not declare it"):
        params.number("lr")


def test_every_stage_declares_its_params_and_the_defaults_validate():
    """Each stage's defaults pass its own validation (the stage scripts call the same getters)."""
    for stage in ("prepare", "train_erm", "compute_saliency", "materialize_masked_dataset", "finetune",
                  "evaluate"):
        load_stage_params(stage, ROOT / "params.yaml", ROOT / "dvc.yaml")


def test_stage_with_a_bad_param_exits_2_with_one_line(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train_erm"]["epochs"] = "three"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    result = subprocess.run([sys.executable, "-m", "stages.train_erm", "--data", "x.h5", "--best", "b.pt",
                             "--last", "l.pt", "--live", "live"], cwd=tmp_path, capture_output=True,
                            text=True, check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: params.yaml: train_erm.epochs must be an integer >= 1, got 'three'"
    assert list(tmp_path.iterdir()) and not (tmp_path / "live").exists()
