"""A shared DVC remote, round trip: one clone runs the pipeline and pushes its outputs, a second clone
pulls them and has nothing left to compute.

Origin: a scratch repository with a local directory as its default remote (`dvc remote add -d shared`,
committed), the pipeline with ERM as its only method on 600 synthetic digits (the cheapest run that still has
every kind of output: HDF5 data, checkpoints, DVC-cached JSON, and git-tracked metrics and plot folders;
MaskTune's two stages would add about 8 s on 2 cores and nothing new to the round trip); `dvc repro`,
commit, `dvc push`.
Then the digits are deleted, and a `git clone` of the origin, with DVC config and site-cache folders of
its own (so nothing reaches it except through git and the remote), runs `dvc pull`. Checked in the
clone: `dvc status` and `dvc status --cloud` report nothing, `dvc repro` runs no stage and restores
none from a run cache (every stage "didn't change"; prepare could not run anyway: its MNIST folder is
gone), every output is byte-identical to the origin's, the worktree stays clean, and the metrics are
the origin's (`dvc metrics show` equal, `dvc metrics diff` empty).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fixtures_datasets import make_mnist
from pipeline_checks import NO_GROUP_METHODS, SMALL_MODEL
from scratch import RUNNING_STAGE, ScratchProject

STAGES = ["check_params", "prepare", "train_erm", "train_erm_control@1", "compute_saliency", "evaluate", "choose", "selective"]
UNCHANGED = re.compile(r"Stage '([\w@.-]+)' didn't change, skipping")
RESTORED = re.compile(r"Stage '([\w@.-]+)' is cached - skipping run")


def _small_params(mnist_dir: Path) -> dict:
    """ERM only (every other method's list empty) and its selective-classification control, 600 synthetic
    digits, tiny_cnn for one epoch."""
    return {"prepare": {"biased_mnist": {"mnist_dir": str(mnist_dir), "val_size": 100}},
            "methods": {"erm": ["erm"], "masking": [], **NO_GROUP_METHODS},
            "train_erm": dict(SMALL_MODEL), "saliency": {"batch_size": 64, "workers": 0},
            "eval_batch_size": 256, "evaluate": {"workers": 0}}


class Clone(ScratchProject):
    """`git clone` of a scratch project into `path`, with DVC config and site-cache folders of its own."""

    def __init__(self, origin: ScratchProject, path: Path):
        self.path = Path(path)
        home = self.path.parent / (self.path.name + "-dvc-home")
        self.env = dict(origin.env, DVC_SITE_CACHE_DIR=str(home / "site"), DVC_GLOBAL_CONFIG_DIR=str(home / "global"),
                        DVC_SYSTEM_CONFIG_DIR=str(home / "system"))
        subprocess.run(["git", "clone", "-q", str(origin.path), str(self.path)], env=self.env, check=True,
                       capture_output=True)


def _with_remote(tmp_path: Path, params: dict | None = None) -> tuple[ScratchProject, Path]:
    remote = tmp_path / "remote"
    origin = ScratchProject(tmp_path / "origin", params)
    origin.dvc("remote", "add", "-d", "shared", str(remote))
    origin.commit("shared remote")
    return origin, remote


def _outputs(root: Path) -> dict[str, str]:
    """sha256 of every file under the folders the pipeline writes (DVC-cached and git-tracked alike)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("data", "models", "metrics") for p in sorted((root / folder).rglob("*")) if p.is_file()}


def _lock_outs(root: Path) -> set[str]:
    """Every output path in dvc.lock (files and folders)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_the_shared_remote_is_committed_and_reaches_a_clone(tmp_path):
    """The remote is in the committed .dvc/config (not config.local), so a clone gets it as its default;
    the clone's DVC config and site-cache folders are its own."""
    origin, remote = _with_remote(tmp_path)
    assert origin.run("git", "status", "--porcelain").stdout == ""
    clone = Clone(origin, tmp_path / "clone")
    assert clone.dvc("config", "core.remote").stdout.strip() == "shared"
    assert clone.dvc("config", "remote.shared.url").stdout.strip() == str(remote)
    assert not (clone.path / ".dvc/config.local").exists()
    for key in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        assert clone.env[key] != origin.env[key]


@pytest.mark.slow
def test_a_clone_pulls_the_outputs_and_recomputes_nothing(tmp_path):
    mnist_dir = make_mnist(tmp_path / "mnist", n_train=600, n_test=200)
    origin, remote = _with_remote(tmp_path, _small_params(mnist_dir))
    assert origin.stages_run("repro") == STAGES
    origin.commit("outputs")  # dvc.lock, metrics/evaluate.json and the plots (cache: false)
    origin.dvc("push")
    assert json.loads(origin.dvc("status", "--cloud", "--json").stdout) == {}
    assert any(p.is_file() for p in remote.rglob("*"))
    shutil.rmtree(mnist_dir)  # the clone must not need the dataset: the pull brings prepare's output

    clone = Clone(origin, tmp_path / "clone")
    assert not (clone.path / "data/prepared.h5").exists() and not (clone.path / "models/erm_best.pt").exists()
    clone.dvc("pull")
    assert json.loads(clone.dvc("status", "--json").stdout) == {}
    assert json.loads(clone.dvc("status", "--cloud", "--json").stdout) == {}

    # Nothing recomputes: no stage runs, none is restored from a run cache (the pull brings none), and
    # every stage is one DVC found unchanged.
    log = clone.dvc("repro").stdout
    assert RUNNING_STAGE.findall(log) == [] and RESTORED.findall(log) == []
    assert sorted(UNCHANGED.findall(log)) == sorted(STAGES)

    # The pulled outputs are the origin's, byte for byte, and the clone's worktree is the committed one.
    pulled = _outputs(clone.path)
    assert all(out in pulled or any(f.startswith(out + "/") for f in pulled) for out in _lock_outs(origin.path))
    assert pulled == _outputs(origin.path)
    assert clone.run("git", "status", "--porcelain").stdout == ""
    assert (clone.path / "dvc.lock").read_bytes() == (origin.path / "dvc.lock").read_bytes()

    # The metrics DVC reads in the clone are the origin's, and differ in nothing from the clone's commit.
    shown = json.loads(clone.dvc("metrics", "show", "--json").stdout)[""]["data"]["metrics/evaluate.json"]["data"]
    assert shown == json.loads((origin.path / "metrics/evaluate.json").read_text())
    assert list(shown) == ["erm"]
    assert json.loads(clone.dvc("metrics", "diff", "--json").stdout) == {}
