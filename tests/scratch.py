"""A throwaway copy of this project in its own git + DVC repository, for tests and benchmarks.

Both the end-to-end tests and `bench/pipeline.py` need the real pipeline run by the real `dvc`
without touching the user's workspace, cache or DVC config; this builds that once. The params are
the *committed* defaults (`committed_params`), not the workspace's params.yaml, which `dvc exp run -S`
edits in place: a test must not pass or fail with the user's last experiment.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from masktune.config.files import parse_yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RUNNING_STAGE = re.compile(r"Running stage '([\w@.-]+)'")


def committed_params() -> dict:
    """params.yaml as committed at HEAD (the workspace's copy when the project is not a git checkout)."""
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                           check=False)
    text = shown.stdout if shown.returncode == 0 else (PROJECT_ROOT / "params.yaml").read_text()
    return parse_yaml(text)


# No group inference and no (groups, trainer) pair: ERM and the masking methods only.
NO_GROUP_METHODS = {"labels": [], "jtt": [], "exmap": [], "clusterfix": [], "xrm": [], "robust_train": {},
                    "last_layer": {}}
REPLACED = ("robust_train", "last_layer")  # mappings of pairs: an override lists the pairs, it does not add to them


def run_stage_in_process(command: str) -> None:
    """A dvc.yaml command, `python -m stages.<name> ...`, run in this process (its `main()` with that argv):
    the stages without DVC's start-up, for the tests that call many."""
    import importlib
    import shlex

    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    module = importlib.import_module(words[2])
    argv = sys.argv
    sys.argv = [words[2], *words[3:]]
    try:
        module.main()
    finally:
        sys.argv = argv


def merge(base: dict, overrides: dict) -> dict:
    """`overrides` (nested dicts) merged into `base`, in place; the pairs of `methods` (REPLACED) are
    replaced whole."""
    for key, value in overrides.items():
        if isinstance(value, dict) and key not in REPLACED and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


class ScratchProject:
    """A copy of the pipeline (code, dvc.yaml, params.yaml with overrides) in `path`, committed."""

    def __init__(self, path: Path, params: dict | None = None):
        self.path = Path(path)
        home = self.path.parent / (self.path.name + "-dvc-home")
        for name in ("masktune", "stages"):
            shutil.copytree(PROJECT_ROOT / name, self.path / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(PROJECT_ROOT / "dvc.yaml", self.path)
        values = merge(committed_params(), params or {})
        (self.path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        self.env = dict(
            os.environ, DVC_NO_ANALYTICS="1", DVC_STUDIO_OFFLINE="true",
            DVC_SITE_CACHE_DIR=str(home / "site"), DVC_GLOBAL_CONFIG_DIR=str(home / "global"),
            DVC_SYSTEM_CONFIG_DIR=str(home / "system"), GIT_AUTHOR_NAME="scratch",
            GIT_AUTHOR_EMAIL="scratch@localhost", GIT_COMMITTER_NAME="scratch",
            GIT_COMMITTER_EMAIL="scratch@localhost",
            PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        self.env.pop("PYTHONPATH", None)
        self.run("git", "init", "-q")
        self.dvc("init", "-q")
        self.dvc("config", "core.analytics", "false")
        shutil.copy(PROJECT_ROOT / ".dvcignore", self.path / ".dvcignore")
        shutil.copytree(PROJECT_ROOT / ".dvc" / "plots", self.path / ".dvc" / "plots")  # the plot templates
        self.commit("pipeline")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), cwd=self.path, env=self.env, capture_output=True, text=True,
                                check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"`{' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}")
        return result

    def dvc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "--allow-empty", "-qm", message)

    def stages_run(self, *args: str) -> list[str]:
        """Run a dvc command; return the names of the stages it actually executed."""
        return RUNNING_STAGE.findall(self.dvc(*args).stdout)

    def timed_stages(self, *args: str) -> tuple[float, dict[str, float]]:
        """Run a dvc command, streaming its output; return total seconds and seconds per stage.

        A stage's time runs from its `Running stage` line to the next one (or the end), so it
        includes DVC's own hashing and caching of that stage's outputs.
        """
        start = time.perf_counter()
        marks: list[tuple[str, float]] = []
        with subprocess.Popen([sys.executable, "-m", "dvc", *args], cwd=self.path, env=self.env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            log = []
            for line in proc.stdout:
                log.append(line)
                match = RUNNING_STAGE.search(line)
                if match:
                    marks.append((match.group(1), time.perf_counter()))
        total = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"`dvc {' '.join(args)}` failed:\n{''.join(log)}")
        ends = [t for _, t in marks[1:]] + [start + total]
        return total, {name: end - t for (name, t), end in zip(marks, ends)}
