"""The committed baseline (`dvc.lock` and the git-tracked metrics of one full-MNIST `dvc repro`, README
"Results") still describes the committed pipeline: every stage of `dvc.yaml` is in the lock with the same
command, the same deps and outs and the values `params.yaml` gives its params, and nothing else is. CI
cannot rerun the pipeline (about 15 minutes on 2 cores), so code is not compared: a stage whose code
changed since the baseline is named in a warning, and `dvc repro` refreshes it (README, "Working with
results").
Checked on a clone of HEAD, so workspace experiments and edits do not count."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import ROOT

HEADLINE = ("metrics/evaluate.json", "metrics/selective.json")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("baseline") / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(path)], check=True)
    return path


def _lock(clone: Path) -> dict:
    lock = clone / "dvc.lock"
    assert lock.is_file(), "dvc.lock is not committed: run `dvc repro` on the default params and commit it"
    # read as DVC reads it (YAML 1.2, ruamel): PyYAML's 1.1 takes a float DVC wrote as `1e-06` for a string
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(lock.read_text())["stages"]


def _pipeline(clone: Path) -> dict[str, dict]:
    """Each stage of the committed dvc.yaml as DVC resolves it, in the lock's terms."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(clone)) as repo:
        stages = {}
        for stage in repo.index.stages:
            params = [dep for dep in stage.deps if isinstance(dep, ParamsDependency)]
            stages[stage.name] = {
                "cmd": stage.cmd,
                "deps": sorted(dep.def_path for dep in stage.deps if dep not in params),
                "outs": sorted(out.def_path for out in stage.outs),
                "params": {dep.def_path: dep.read_params() for dep in params}}
        return stages


def test_the_committed_lock_records_the_committed_pipeline_and_params(clone):
    lock, pipeline = _lock(clone), _pipeline(clone)
    assert sorted(lock) == sorted(pipeline), "stages added or removed since the baseline: refresh it"
    for name, stage in pipeline.items():
        locked = lock[name]
        assert locked["cmd"] == stage["cmd"], name
        assert sorted(dep["path"] for dep in locked.get("deps", [])) == stage["deps"], name
        assert sorted(out["path"] for out in locked.get("outs", [])) == stage["outs"], name
        assert locked.get("params", {}) == stage["params"], name


def test_the_baseline_figures_are_committed_and_code_drift_is_named(clone):
    for path in HEADLINE:
        assert (clone / path).is_file(), f"{path} of the baseline run is not committed"
    headline = json.loads((clone / "metrics/evaluate.json").read_text())
    assert {"erm", "masktune"} <= set(headline)
    outs = {out for stage in _pipeline(clone).values() for out in stage["outs"]}

    def is_code(path: str) -> bool:  # not a stage's output, nor a folder holding one (models/)
        return not any(out == path or out.startswith(path + "/") or path.startswith(out + "/") for out in outs)

    status = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=clone, capture_output=True, text=True,
                            check=True)
    stale = sorted(name for name, changes in json.loads(status.stdout or "{}").items()
                   if any(isinstance(change, dict) and any(
                       state == "modified" and is_code(path)
                       for path, state in change.get("changed deps", {}).items() if isinstance(state, str))
                          for change in changes))
    if stale:
        warnings.warn(f"the committed baseline predates code changes of {len(stale)} stage(s) ({', '.join(stale)}): "
                      "`dvc repro` and commit dvc.lock and metrics/ to refresh it", stacklevel=1)
