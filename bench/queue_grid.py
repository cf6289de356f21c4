"""Benchmark: a seed x learning-rate grid through DVC's experiment queue, against the same grid run by
plain `dvc exp run` one experiment after another, on the full biased MNIST.

In a scratch copy of the project (your workspace, cache and DVC config are left alone), with ERM and
MaskTune as the only methods (`methods.masking=[masktune]`, every other kind `[]`) and, unless `--set`
says otherwise, `train_erm.epochs=1`, so that one experiment is a minute or two on 2 cores:

0. `dvc repro prepare check_params` (biased MNIST built from --mnist-dir, as bench/methods.py builds it), committed:
   the experiments start from it and neither side pays for it;
1. sequential: every grid point as `dvc exp run -n seq-... -S lr=L -S <every seed key>=S`, in the
   workspace, one after another, timed (per experiment and per stage);
2. queued: the workspace reset to the commit, DVC's run cache emptied, every grid point queued with
   `dvc exp run --queue -n queue-... -S ...`, then `dvc queue start -j J` (--jobs, default 2), waiting
   for every task to end (every --poll seconds: the experiment refs, cheap; `dvc queue status` only now
   and then, see below). Timed from the first `--queue` to the last experiment's commit (git's committer
   time of its `refs/exps/...` ref, 1 s resolution), so the poll interval does not add to it; the time
   at which the poll saw the queue done is printed beside it;
3. unless --no-probe: one more queued experiment, with a line added to the scratch copy's
   `stages/evaluate.py` (reverted right after queueing) that prints where the stage and `masktune` were
   imported from.

It prints `dvc exp show` (the grid's params and the headline metrics only), each experiment's wall time,
the two totals and their ratio (queued / sequential), whether every queued experiment's metrics and
output hashes (checkpoints, saliency, masks: the hashes in the experiment's commit) equal its sequential
twin's (the pipeline is deterministic on CPU), and, as its last line, one JSON object with every figure.

Why neither side can reuse the other's results: `dvc exp run` (3.67) has no `--no-run-cache`, and the run
cache (`.dvc/cache/runs`) is shared by the workspace and every queue worker, so the sequential grid would
let the queued one restore every stage without running it. The bench therefore deletes
`.dvc/cache/runs` between the two (the outputs stay in the cache, unused: no lock file names them) and
resets the workspace to the commit (else a queued experiment whose params equal the last sequential
one's would start from that one's dvc.lock and outputs). It then checks, in every queued experiment's
log (`dvc queue logs`), that every stage after prepare ran and none was restored from the run cache.

Queue behaviour measured here (dvc 3.67.1, 2-core Intel Xeon shared with other jobs, 2026-11-30;
../shared/notes/dvc-on-this-machine.md has more):
- The grid (4 experiments, 1 ERM epoch): sequential 307 s (67-98 s each), queued with -j 2 416 s (ratio
  1.36; the two pairs finished after 237 and 416 s; another run: 306 s against 397 s, 1.30), identical
  metrics and outputs. Two workers on 2 cores do not help: every stage's torch still uses its default threads (the core count), so two
  workers run 4 compute threads on 2 cores, and each queued experiment also pays for its own checkout.
  On a tiny pipeline (3,000 digits) the two orders tied (ratio 0.96-1.02).
- Each queued experiment runs in its own temporary git checkout (`.dvc/tmp/exps/tmp*`) of the commit plus
  the workspace's uncommitted changes at queueing time; untracked and ignored files are not there
  (`-C PATH` copies some), and DVC outputs are checked out from the cache by copy (ext4: no reflinks):
  `data/prepared.h5` (25 MiB) once per experiment. Stages run as `python -m stages.<name>` from that
  checkout, so they import its `stages/` and `masktune/` (the probe prints the paths), not the
  workspace's; an editable install of the code would break that (the note above).
- All workers share the project's cache and run cache: a queued experiment restores any stage an
  earlier run (workspace or queue) already ran with the same deps and params (the probe's stages before
  evaluate are restored so), and the outputs of every run stay in the cache (disk grows with the grid).
  `dvc exp run` has no `--no-run-cache` (`dvc repro` has): the bench empties `.dvc/cache/runs` instead.
- `dvc queue start` returns at once, but its workers inherit its stdout: run from a script that
  captures it through a pipe (`subprocess.run(..., capture_output=True)`), the call does not return
  before the last worker exits. Send its output to a file (`_start_queue`).
- A second `dvc queue start` right after the first said "Started '0' new ... worker" in most runs and
  "Started '1'" in one (the first one's worker did not answer the status broadcast yet); sampling every
  2 s never showed more than one worker process for the worker name. A `dvc exp run` in the workspace
  while the queue ran was not refused, and both finished, sharing the cores. Workers stay up
  about 10 s idle after the queue empties, then exit: a scratch folder must outlive them.
- `dvc queue status` costs 2-10 s per call and `dvc exp show --json` 7-12 s while two workers run on 2
  cores: poll them sparingly. `dvc queue logs -f` refuses a task that has not started, so it cannot be
  the wait either; the `refs/exps/...` refs (one per finished experiment) are the cheap signal.
- A worker is a `dvc` found on PATH (`dvc exp queue-worker`): run the bench with the project's venv
  first on PATH (ScratchProject does it).

    python bench/queue_grid.py --mnist-dir ../shared/data/mnist [--seeds 0 1] [--lrs 0.01 0.02] [--jobs 2]
    python bench/queue_grid.py --quick    # one grid point each way on 600 digits, one worker (tests)
        [--set train_erm.epochs=1 ...] [--poll 10] [--keep DIR] [--no-probe]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import product
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import add_quick_flag, emit_json, machine, print_table, quick_params, seed_overrides
from pipeline import mnist_overrides
from scratch import NO_GROUP_METHODS, RUNNING_STAGE, ScratchProject, merge

METHODS = {"erm": ["erm"], "masking": ["masktune"], **NO_GROUP_METHODS}
EXPERIMENT_STAGES = ["train_erm", "compute_saliency", "materialize_masked_dataset@masktune", "finetune@masktune",
                     "evaluate", "selective"]
HEADLINE = [f"{m}.{s}" for m in METHODS["erm"] + METHODS["masking"]
            for s in ("test_biased.average", "test_biased.worst_group", "test_original.average")]
RESTORED = re.compile(r"Stage '([\w@.-]+)' is cached - skipping run")
TASK_ROW = re.compile(r"^\s*([0-9a-f]{7})\s+(\S+)\s+.*\s(Queued|Running|Success|Failed)\s*$", re.MULTILINE)
WORKERS = re.compile(r"Worker status: (\d+) active, (\d+) idle")
PROBE = "queue probe:"


def _sets(seed: int, lr: float) -> list[str]:
    return seed_overrides(seed, [f"lr={lr}"])


def _queue_status(project: ScratchProject) -> tuple[dict[str, str], int]:
    """Status of each queue task by name, and the number of live workers (active + idle)."""
    text = project.dvc("queue", "status").stdout
    workers = WORKERS.search(text)
    return ({name: status for _, name, status in TASK_ROW.findall(text)},
            int(workers.group(1)) + int(workers.group(2)) if workers else 0)


def _start_queue(project: ScratchProject, jobs: int) -> str:
    """`dvc queue start -j jobs`; its output read from a file: the workers it spawns inherit its stdout, so
    with a pipe (`capture_output`) the call would not return before the last worker exits."""
    with tempfile.TemporaryFile("w+") as out:
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)], cwd=project.path,
                       env=project.env, stdout=out, stderr=subprocess.STDOUT, check=True)
        out.seek(0)
        return out.read().strip()


def _wait_for(project: ScratchProject, names: list[str], poll: float, timeout: float) -> tuple[dict[str, str], list]:
    """Wait until every task in `names` has ended; return their statuses and the duration of each
    `dvc queue status` call made (the cost of asking: seconds of CPU while the workers run). Each poll
    reads the experiment refs (git, cheap); `dvc queue status` is asked once every name has its ref (a
    success), when this project's workers are gone (a failure leaves no ref), and every 5th poll."""
    deadline, costs, polls = time.monotonic() + timeout, [], 0
    while True:
        polls += 1
        if set(names) <= set(_commit_times(project)) or not _worker_processes(project) or polls % 5 == 0:
            start = time.monotonic()
            statuses, _ = _queue_status(project)
            costs.append(time.monotonic() - start)
            if all(statuses.get(n) in ("Success", "Failed") for n in names):
                return {n: statuses[n] for n in names}, costs
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not done after {timeout:.0f} s")
        time.sleep(poll)


def _wait_for_workers_to_exit(project: ScratchProject, timeout: float = 120) -> None:
    """Workers exit about 10 s after the queue empties; the scratch folder must outlive them."""
    deadline = time.monotonic() + timeout
    while _queue_status(project)[1] and time.monotonic() < deadline:
        time.sleep(5)
    if _queue_status(project)[1]:
        project.dvc("queue", "stop", check=False)


def _worker_processes(project: ScratchProject) -> int:
    """Live `dvc exp queue-worker` processes of this project (their node names carry a hash of its
    queue folder, as dvc's LocalCeleryQueue names them)."""
    wdir = os.path.join(project.path, ".dvc", "tmp", "exps", "celery")
    node = "dvc-exp-" + hashlib.sha256(wdir.encode("utf-8")).hexdigest()[:6] + "-"
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    return sum("queue-worker" in line and node in line for line in listing.splitlines())


def _commit_times(project: ScratchProject) -> dict[str, int]:
    """Committer time (unix seconds) of every experiment ref, by experiment name."""
    out = project.run("git", "for-each-ref", "refs/exps", "--format=%(refname) %(committerdate:unix)").stdout
    return {ref.rsplit("/", 1)[1]: int(t) for ref, t in (line.split() for line in out.splitlines())
            if not ref.startswith("refs/exps/exec/")}


def _experiments(project: ScratchProject) -> dict[str, dict]:
    """From `dvc exp show --json`: each experiment's headline metrics and output hashes, by name."""
    found = {}
    for commit in json.loads(project.dvc("exp", "show", "--json").stdout):
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev.get("data") or {}
                found[rev["name"]] = {
                    "metrics": ((data.get("metrics") or {}).get("metrics/evaluate.json") or {}).get("data"),
                    "outs": {path: out["hash"] for path, out in (data.get("outs") or {}).items() if out.get("use_cache")}}
    return found


def _add_probe(stage_file: Path) -> None:
    text = stage_file.read_text()
    probe = ("import os as _probe_os, masktune as _probe_pkg; "
             f"print('{PROBE} stage', _probe_os.path.abspath(__file__), 'masktune', "
             "_probe_os.path.abspath(_probe_pkg.__file__), flush=True)\n")
    marker = "from __future__ import annotations\n"
    stage_file.write_text(text.replace(marker, marker + probe, 1) if marker in text else probe + text)


class LoadSampler:
    """The 1-minute load average every 10 s, by phase: the machine may be shared (ours included in it)."""

    def __init__(self):
        self.phase, self.samples = "setup", {}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            self.samples.setdefault(self.phase, []).append(os.getloadavg()[0])
            time.sleep(10)

    def means(self) -> dict[str, float]:
        return {phase: round(statistics.mean(values), 2) for phase, values in self.samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.02])
    parser.add_argument("-j", "--jobs", type=int, default=2, help="queue workers (`dvc queue start -j`)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="param override of the scratch project's params.yaml (default: train_erm.epochs=1)")
    parser.add_argument("--poll", type=float, default=10, help="seconds between two looks at the queue")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds to wait for the queue")
    parser.add_argument("--keep", type=Path, help="build the scratch project here and keep it")
    parser.add_argument("--no-probe", action="store_true", help="skip the import-path probe experiment")
    add_quick_flag(parser)
    args = parser.parse_args()
    overrides = args.set if args.set is not None else ["train_erm.epochs=1"]
    params = merge({"methods": dict(METHODS), "selective": {"control_seed_offsets": []}},
                   mnist_overrides(overrides, args.mnist_dir))
    if args.quick:  # one grid point each way, one worker, the probe
        params = merge(quick_params(), params)
        args.seeds, args.lrs, args.jobs, args.poll = args.seeds[:1], args.lrs[:1], 1, 2
    grid = list(product(args.seeds, args.lrs))
    load = LoadSampler()

    with tempfile.TemporaryDirectory(prefix="masktune-queue-") as tmp:
        path = args.keep or Path(tmp) / "project"
        project = ScratchProject(path, params)
        project.env["COLUMNS"] = "320"  # `dvc exp show`'s table: rich wraps it to the terminal's width otherwise
        prepare_seconds, _ = project.timed_stages("repro", "prepare", "check_params")  # shared by every run
        project.commit("prepared")
        prepared_mb = (path / "data/prepared.h5").stat().st_size / 2**20
        print(f"prepare: {prepare_seconds:.0f} s (data/prepared.h5: {prepared_mb:.0f} MiB); grid seeds {args.seeds} "
              f"x lr {args.lrs}; overrides {overrides}", flush=True)

        # 1. Sequential: plain `dvc exp run` in the workspace.
        load.phase = "sequential"
        sequential, problems = {}, []
        for seed, lr in grid:
            name = f"seq-s{seed}-lr{lr}"
            seconds, stages = project.timed_stages("exp", "run", "-n", name, *_sets(seed, lr))
            sequential[(seed, lr)] = {"name": name, "seconds": seconds, "stages": stages}
            if list(stages) != EXPERIMENT_STAGES:
                problems.append(f"{name} ran {list(stages)}")
            print(f"sequential {name}: {seconds:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in stages.items())})",
                  flush=True)
        sequential_total = sum(run["seconds"] for run in sequential.values())

        # 2. Queued: the workspace back to the commit, the run cache emptied, then the same grid.
        project.run("git", "reset", "--hard", "-q")
        project.run("git", "clean", "-fdxq", "-e", "/.dvc")  # every output, ignored or not, but not the cache
        project.dvc("checkout", "prepare", "check_params")
        shutil.rmtree(path / ".dvc/cache/runs", ignore_errors=True)
        if dirty := project.run("git", "status", "--porcelain").stdout:
            problems.append(f"the workspace is not the commit after the reset:\n{dirty}")
        queued = {(seed, lr): {"name": f"queue-s{seed}-lr{lr}"} for seed, lr in grid}
        load.phase = "queued"
        start_wall, start = time.time(), time.monotonic()
        for (seed, lr), run in queued.items():
            project.dvc("exp", "run", "--queue", "-n", run["name"], *_sets(seed, lr))
        queueing = time.monotonic() - start
        started = _start_queue(project, args.jobs)
        statuses, poll_costs = _wait_for(project, [r["name"] for r in queued.values()], args.poll, args.timeout)
        seen_done = time.monotonic() - start
        committed = _commit_times(project)
        for run in queued.values():
            run["status"] = statuses[run["name"]]
            run["done_after"] = committed[run["name"]] - start_wall if run["name"] in committed else None
            log = project.dvc("queue", "logs", run["name"], check=False).stdout
            run["ran"], run["restored"] = RUNNING_STAGE.findall(log), RESTORED.findall(log)
            if run["status"] != "Success":
                problems.append(f"{run['name']} {run['status']}:\n{log[-3000:]}")
            elif run["ran"] != EXPERIMENT_STAGES or run["restored"]:
                problems.append(f"{run['name']} ran {run['ran']}, restored {run['restored']} from the run cache")
        done = [r["done_after"] for r in queued.values() if r["done_after"] is not None]
        queue_total = max(done) if len(done) == len(queued) else seen_done
        load.phase = "after"
        _wait_for_workers_to_exit(project)
        print(f"queued: {queueing:.0f} s to queue {len(queued)}, `dvc queue start -j {args.jobs}`: {started!r}; "
              f"last experiment committed after {queue_total:.0f} s, the poll saw the queue done after "
              f"{seen_done:.0f} s (`dvc queue status` asked {len(poll_costs)} times, {min(poll_costs):.1f}-"
              f"{max(poll_costs):.1f} s per call)",
              flush=True)

        # Same grid point, same results?
        experiments = _experiments(project)
        identical = {}
        for point in grid:
            seq, que = experiments.get(sequential[point]["name"]), experiments.get(queued[point]["name"])
            identical[point] = bool(seq and que and seq["metrics"] and seq["metrics"] == que["metrics"]
                                    and seq["outs"] == que["outs"])
        table = project.dvc("exp", "show", "--no-pager", "--drop", ".*", "--keep",
                            r"^(Experiment|lr|train_erm\.seed|" + "|".join(map(re.escape, HEADLINE)) + ")$",
                            check=False).stdout

        # 3. Where a queued stage imports its code from.
        probe = None
        if not args.no_probe:
            _add_probe(path / "stages/evaluate.py")
            seed, lr = grid[0]
            project.dvc("exp", "run", "--queue", "-n", "probe", *_sets(seed, lr))
            project.run("git", "checkout", "-q", "--", "stages/evaluate.py")
            _start_queue(project, 1)
            second_start = _start_queue(project, 1)
            worker_processes = 0
            for _ in range(15):  # a worker process shows up seconds after `dvc queue start` returns
                time.sleep(2)
                worker_processes = max(worker_processes, _worker_processes(project))
            probe_status, _ = _wait_for(project, ["probe"], 5, 1800)
            log = project.dvc("queue", "logs", "probe", check=False).stdout
            line = next((ln for ln in log.splitlines() if ln.startswith(PROBE)), "")
            probe = {"status": probe_status["probe"], "line": line, "ran": RUNNING_STAGE.findall(log),
                     "restored": RESTORED.findall(log), "second_queue_start": second_start,
                     "worker_processes_after_two_starts": worker_processes,
                     "imports_experiment_copy": line.count("/.dvc/tmp/exps/") == 2}
            _wait_for_workers_to_exit(project)

    print("\n`dvc exp show` (grid params and headline metrics):")
    print(table.rstrip())
    rows = [{"seed": seed, "lr": lr, "sequential s": sequential[(seed, lr)]["seconds"],
             "queued: committed after s": queued[(seed, lr)]["done_after"],
             "queued stages ran": len(queued[(seed, lr)]["ran"]),
             "same metrics and outputs": identical[(seed, lr)]} for seed, lr in grid]
    print_table(rows, f"per experiment (queue: {args.jobs} workers, times from the first `--queue`)")
    print(f"\nsequential total {sequential_total:.0f} s; queued total {queue_total:.0f} s "
          f"(queueing {queueing:.0f} s of it); queued / sequential = {queue_total / sequential_total:.2f}")
    print("queued experiments equal their sequential twins (metrics and output hashes): "
          + ("yes, all" if all(identical.values()) else
             "NO: " + ", ".join(f"seed {s} lr {lr}" for (s, lr), same in identical.items() if not same)))
    print("mean 1-min load average by phase (2 cores; this bench's own processes included): "
          + ", ".join(f"{phase} {value}" for phase, value in load.means().items() if phase in ("sequential", "queued")))
    if probe:
        print(f"probe ({probe['status']}): {probe['line'] or 'no probe line in its log'}; "
              f"imports the experiment's copy: {probe['imports_experiment_copy']}; ran {probe['ran']}, restored "
              f"from the shared run cache {probe['restored']}; a second `dvc queue start -j 1` at once: "
              f"{probe['second_queue_start']!r}, then at most {probe['worker_processes_after_two_starts']} worker "
              "process(es) in 30 s")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    emit_json({"machine": machine(), "seeds": args.seeds, "lrs": args.lrs, "jobs": args.jobs, "overrides": overrides,
               "prepare_seconds": prepare_seconds, "prepared_mib": prepared_mb,
               "sequential": {f"s{s}-lr{lr}": {"seconds": r["seconds"], "stages": r["stages"]}
                              for (s, lr), r in sequential.items()},
               "queued": {f"s{s}-lr{lr}": {k: r[k] for k in ("status", "done_after", "ran", "restored")}
                          for (s, lr), r in queued.items()},
               "sequential_total": sequential_total, "queue_total": queue_total, "queueing": queueing,
               "queue_seen_done": seen_done, "poll_seconds": poll_costs,
               "ratio": queue_total / sequential_total,
               "identical": {f"s{s}-lr{lr}": same for (s, lr), same in identical.items()},
               "load": load.means(), "probe": probe, "problems": problems})
    if problems or not all(identical.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
