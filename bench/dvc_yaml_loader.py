"""Benchmark: DVC's own cost with ruamel.yaml's C loader (ruamel.yaml.clib, requirements.txt) against its
pure-Python loader, side by side in one run on one machine.

DVC reads params.yaml once for every stage that declares params (no cache: `dvc/dependency/param.py`
`read_param_file`), dvc.yaml and dvc.lock on every command, and rewrites the whole dvc.lock after every
stage it runs. On this project's full pipeline, `dvc status` spent about 80% of its time in ruamel.yaml's
pure-Python scanner (cProfile). With ruamel.yaml.clib installed, ruamel's safe loader scans with libyaml;
the values come from the same YAML 1.2 resolver (tests/test_config.py checks both loaders read params.yaml,
dvc.yaml and dvc.lock alike). dvc.lock's round-trip rewrite is pure Python either way.

In a scratch copy of the project with the committed dvc.lock (your workspace is left alone), the same
commands run alternately under both loaders (the pure one by hiding the C extension from the process):
`dvc status`, and `dvc repro --force --single-item check_params` (one cheap stage: DVC's cost per stage
run, the lock rewrite included). Prints the medians and their ratios, then one JSON line.

    python bench/dvc_yaml_loader.py              # 3 rounds of both commands
    python bench/dvc_yaml_loader.py --quick      # 1 round of `dvc status` (tests)
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import ROOT, add_quick_flag, machine
from scratch import ScratchProject

STATUS = ("status", "--json")
ONE_STAGE = ("repro", "--force", "--single-item", "check_params")
# sitecustomize for the pure arm: ruamel.yaml imports its C parser as `_ruamel_yaml` and falls back to pure
# Python when that import fails (ruamel/yaml/main.py)
HIDE_C_LOADER = "import sys\nsys.modules['_ruamel_yaml'] = None\n"
PARSER = "from ruamel.yaml import YAML; print(YAML(typ='safe').Parser.__name__)"


def _arms(project: ScratchProject, scratch: Path) -> dict[str, dict]:
    """The environment of each arm, the C loader's first; each checked to load YAML as its name says."""
    hide = scratch / "pure-loader"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_C_LOADER)
    arms = {"c": dict(project.env), "pure": {**project.env, "PYTHONPATH": str(hide)}}
    for name, env in arms.items():
        parser = subprocess.run([sys.executable, "-c", PARSER], env=env, capture_output=True, text=True,
                                check=True).stdout.strip()
        if (parser == "CParser") != (name == "c"):
            sys.exit(f"error: the {name} arm loads YAML with {parser}"
                     + (" (pip install -r requirements.txt installs ruamel.yaml.clib)" if name == "c" else ""))
    return arms


def _timed(project: ScratchProject, env: dict, args: tuple[str, ...]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project.path, env=env, capture_output=True,
                            text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"error: `dvc {' '.join(args)}` failed:\n{result.stdout}\n{result.stderr}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two arms per command")
    add_quick_flag(parser)
    args = parser.parse_args()
    commands = {"status": STATUS} if args.quick else {"status": STATUS, "one_stage": ONE_STAGE}
    rounds = 1 if args.quick else args.rounds
    scratch = Path(tempfile.mkdtemp(prefix="masktune-yaml-"))
    try:
        project = ScratchProject(scratch / "project")
        shutil.copy(ROOT / "dvc.lock", project.path / "dvc.lock")  # the full pipeline's lock: its real size
        project.commit("lock")
        arms = _arms(project, scratch)
        seconds = {command: {arm: [] for arm in arms} for command in commands}
        outputs = {arm: None for arm in arms}
        for _ in range(rounds):
            for command, dvc_args in commands.items():
                for arm, env in arms.items():
                    elapsed, stdout = _timed(project, env, dvc_args)
                    seconds[command][arm].append(elapsed)
                    if command == "status":
                        outputs[arm] = json.loads(stdout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = {"machine": machine(), "rounds": rounds, "lock_lines": (ROOT / "dvc.lock").read_text().count("\n"),
               "status_equal": outputs["c"] == outputs["pure"], "commands": {}}
    for command, dvc_args in commands.items():
        c, pure = (statistics.median(seconds[command][arm]) for arm in ("c", "pure"))
        figures["commands"][command] = {"dvc": " ".join(dvc_args), "c_seconds": seconds[command]["c"],
                                        "pure_seconds": seconds[command]["pure"], "ratio": pure / c}
        print(f"dvc {' '.join(dvc_args)}: pure Python {pure:.1f} s, C loader {c:.1f} s (medians of {rounds}), "
              f"{pure / c:.2f}x")
    print(f"`dvc status` reports the same with both loaders: {figures['status_equal']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
