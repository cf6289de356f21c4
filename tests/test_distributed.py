"""Data-parallel stages under torchrun (gloo, 2 CPU processes) and training that survives preemption.

The stages run as the pipeline runs them (`python -m stages.<stage> ...` in a scratch project, params
from its params.yaml) on the first real MNIST digits (the synthetic twin where ../shared is absent).
"""
from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import MNIST_DIR
from fixtures_datasets import make_mnist
from scratch import PROJECT_ROOT, ScratchProject

from masktune import distributed
from masktune.distributed import World, batch_share, row_range, shard_batch
from masktune.errors import UserError
from masktune.io.journal import EpochJournal

EPOCHS = 3


def _mnist(tmp_path_factory) -> Path:
    if (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        return MNIST_DIR
    return make_mnist(tmp_path_factory.mktemp("mnist"))


# -- how the work is split (no processes) ------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 577])
def test_row_ranges_are_whole_batches_covering_every_row_once(n, size):
    ranges = [row_range(n, 64, World(rank, size)) for rank in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(stop == next_start for (_, stop), (next_start, _) in itertools.pairwise(ranges))
    assert all(start % 64 == 0 for start, stop in ranges if start < stop)


@pytest.mark.parametrize("whole", [1, 2, 5, 64])
def test_scaled_rank_losses_average_to_the_global_mean_loss(whole):
    """DDP averages the ranks' gradients; scaled by `batch_share`, the average is the global mean's."""
    losses = np.random.default_rng(whole).random(whole)
    size = 3
    averaged = 0.0
    for rank in range(size):
        part = shard_batch(np.arange(whole), World(rank, size))
        if len(part):
            averaged += batch_share(len(part), whole, World(rank, size)) * losses[part].mean() / size
    assert averaged == pytest.approx(losses.mean(), rel=1e-12)


def test_more_workers_than_cores_are_refused_before_any_work(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    settings = type("Settings", (), {"nproc_per_node": cores + 1, "nnodes": 1})()
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    with pytest.raises(UserError, match=rf"^distributed.nproc_per_node is {cores + 1}, but this node has {cores} "
                                        rf"CPU core\(s\): set it to at most {cores}$"):
        distributed.launch_workers(settings)  # refused before torchrun starts anything
    distributed.check_workers_fit(cores)


def test_a_worker_killed_by_sigkill_is_reported_as_probably_out_of_memory(capsys):
    failure = type("Failure", (), {"exitcode": -signal.SIGKILL, "pid": 42, "signal_name": lambda self: "SIGKILL"})()
    error = type("Error", (), {"get_first_failure": lambda self: (1, failure)})()
    assert distributed._report_failure(error) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: worker rank 1 (pid 42) was killed by SIGKILL, probably out of memory: lower "
                           "distributed.nproc_per_node") and "\n" not in line


def test_epoch_journal_of_other_inputs_is_discarded(tmp_path):
    EpochJournal(tmp_path / "best.pt", {"lr": 0.01}).save({"epochs_done": 2})
    assert EpochJournal(tmp_path / "best.pt", {"lr": 0.01}).load() == {"epochs_done": 2}
    other = EpochJournal(tmp_path / "best.pt", {"lr": 0.02})
    assert other.discarded and other.load() is None


# -- DDP training equals one process ---------------------------------------------------------------

@pytest.mark.slow
def test_ddp_epochs_equal_one_process_without_batchnorm(tmp_path_factory, tmp_path):
    """A BatchNorm-free model: 2 gloo workers reproduce one process's loss curve and weights to float
    rounding (577 rows, batch 64: the last global batch of 1 row leaves rank 1 a stand-in batch)."""
    mnist = _mnist(tmp_path_factory)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), OMP_NUM_THREADS="1")
    worker = [str(PROJECT_ROOT / "tests" / "ddp_worker.py"), str(mnist)]
    subprocess.run([sys.executable, *worker, str(tmp_path / "one.npz")], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    *worker, str(tmp_path / "two.npz")], env=env, check=True, capture_output=True)
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert int(two["world_size"]) == 2
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-6)
    np.testing.assert_array_equal(two["accuracy"], one["accuracy"])
    np.testing.assert_allclose(two["parameters"], one["parameters"], atol=1e-5)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Biased MNIST from 1,200 digits (1,000 train, 200 val), prepared; train_erm: SmallCNN, 3 epochs."""
    params = {"prepare": {"biased_mnist": {"mnist_dir": str(_mnist(tmp_path_factory)), "train_limit": 1200,
                                           "test_limit": 200, "val_size": 200}},
              "train_erm": {"epochs": EPOCHS, "batch_size": 64},
              "saliency": {"batch_size": 64, "resume_every": 128}}
    project = ScratchProject(tmp_path_factory.mktemp("scratch") / "project", params)
    project.dvc("repro", "prepare")
    return project


def _set_params(project, **changes) -> None:
    path = project.path / "params.yaml"
    values = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, name = key.split("__")
        values[section][name] = value
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def _train_erm(project, out: str, nproc: int = 1, lr: float | None = None) -> list[str]:
    _set_params(project, distributed__nproc_per_node=nproc)
    values = yaml.safe_load((project.path / "params.yaml").read_text())
    values["lr"] = lr
    (project.path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return [sys.executable, "-m", "stages.train_erm", "--data", "data/prepared.h5", "--best", f"{out}/best.pt",
            "--last", f"{out}/last.pt", "--live", f"{out}/live", "--oracle", f"{out}/oracle.pt"]


def _run(project, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=project.path, env=project.env, capture_output=True, text=True, check=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _losses(folder: Path) -> np.ndarray:
    rows = (folder / "live/plots/metrics/train/loss.tsv").read_text().split("\n")[1:]
    return np.array([float(row.split("\t")[1]) for row in rows if row])


@pytest.fixture(scope="module")
def uninterrupted(project):
    """train_erm run through, as one process and as 2 workers (the references of the tests below)."""
    one = _run(project, _train_erm(project, "runs/one", nproc=1))
    two = _run(project, _train_erm(project, "runs/two", nproc=2))
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    return {"one": one, "two": two}


@pytest.mark.slow
def test_ddp_train_erm_follows_one_process_loss_curve(project, uninterrupted):
    """SmallCNN has BatchNorm: each of the 2 workers normalises its 32 rows by their own statistics
    where one process uses all 64, so the curves agree statistically, not to rounding (measured on
    these 1,000 digits: 0.02-0.03 apart per epoch; the bound is 0.06, a tenth of the first epoch's loss)."""
    one, two = _losses(project.path / "runs/one"), _losses(project.path / "runs/two")
    assert len(one) == len(two) == EPOCHS
    np.testing.assert_allclose(two, one, atol=0.06)
    assert two[-1] < two[0] / 3  # and it learns
    out = uninterrupted["two"].stdout
    assert out.count(f"ERM epoch {EPOCHS}/{EPOCHS}") == 1  # rank 0 reports; the other rank prints nothing
    assert "2 worker(s) on this node" in out


PER_IMAGE_PASSES = {
    "compute_saliency": ["--model", "runs/one/best.pt"],
    "exmap_heatmaps": ["--name", "exmap", "--model", "runs/one/best.pt"],
    "clusterfix_features": ["--name", "clusterfix", "--model", "runs/one/best.pt", "--ssl", "runs/none.pt"],
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", PER_IMAGE_PASSES)
def test_sharded_per_image_pass_writes_the_file_of_one_process(project, uninterrupted, stage):
    """Each of 2 workers computes a contiguous range of whole batches; rank 0 writes one file, byte
    for byte the single process's (saliency: through its resume journal)."""
    files = {}
    for nproc in (1, 2):
        _set_params(project, distributed__nproc_per_node=nproc)
        out = project.path / f"runs/{stage}{nproc}.h5"
        result = _run(project, [sys.executable, "-m", f"stages.{stage}", "--data", "data/prepared.h5",
                                *PER_IMAGE_PASSES[stage], "--out", str(out)])
        assert result.returncode == 0, result.stderr
        files[nproc] = out.read_bytes()
        assert not out.with_name(out.name + ".partial").exists()
    assert files[1] == files[2]


def _kill_when_journal_has_an_epoch(project, process: subprocess.Popen, out: str, rank: int | None) -> None:
    """SIGKILL the stage (rank None) or one of its workers as soon as one epoch is in the journal."""
    journal = project.path / out / "best.pt.partial" / "epoch.pt"
    deadline = time.monotonic() + 300
    while not journal.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert journal.exists(), "the run ended before its first epoch was journaled"
    os.kill(process.pid if rank is None else _worker_pid(process.pid, rank), signal.SIGKILL)
    process.wait(timeout=300)


def _worker_pid(agent: int, rank: int) -> int:
    """The pid of the torchrun worker of `rank` started by the stage process `agent`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if parent == agent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under pid {agent}")


@pytest.mark.slow
def test_killed_worker_fails_the_stage_in_one_line_and_the_rerun_resumes(project, uninterrupted):
    command = _train_erm(project, "runs/killed_rank", nproc=2)
    process = subprocess.Popen(command, cwd=project.path, env=project.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _kill_when_journal_has_an_epoch(project, process, "runs/killed_rank", rank=1)
    stderr = process.stderr.read()
    assert process.returncode == 1
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: worker rank 1 (pid ") and "was killed by SIGKILL, probably out of memory" in last, stderr
    assert not (project.path / "runs/killed_rank/live").exists()  # the metrics appear only when complete

    resumed = _run(project, command)
    assert resumed.returncode == 0, resumed.stderr
    assert "ERM: resuming after epoch" in resumed.stdout
    assert not (project.path / "runs/killed_rank/best.pt.partial").exists()
    assert _files(project.path / "runs/killed_rank") == _files(project.path / "runs/two")


@pytest.mark.slow
def test_killed_train_erm_resumes_to_the_uninterrupted_model_and_other_params_start_over(project, uninterrupted):
    out = "runs/killed"
    process = subprocess.Popen(_train_erm(project, out, nproc=1), cwd=project.path, env=project.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when_journal_has_an_epoch(project, process, out, rank=None)
    assert process.returncode == -signal.SIGKILL

    other = _run(project, _train_erm(project, out, nproc=1, lr=0.02))  # another learning rate: starts over
    assert other.returncode == 0, other.stderr
    assert "left by other inputs or params, starting over" in other.stdout and "resuming" not in other.stdout

    process = subprocess.Popen(_train_erm(project, out, nproc=1), cwd=project.path, env=project.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_when_journal_has_an_epoch(project, process, out, rank=None)
    resumed = _run(project, _train_erm(project, out, nproc=1))
    assert resumed.returncode == 0, resumed.stderr
    assert "ERM: resuming after epoch" in resumed.stdout
    assert _files(project.path / out) == _files(project.path / "runs/one")


@pytest.mark.slow
def test_two_nodes_by_static_rendezvous_equal_two_local_workers(project, uninterrupted):
    """`distributed.nnodes: 2` on one machine: node 0 runs the stage as `dvc repro` would, node 1 the
    same command with MASKTUNE_NODE_RANK=1; ranks 0 and 1 are the two local workers' ranks, so node 0
    ends with the outputs of the 2-worker run, byte for byte, and node 1 writes nothing. (One thread
    per worker, as the 2-worker run has: CPU kernels' rounding depends on the thread count.)"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = _train_erm(project, "runs/nodes", nproc=1)
    _set_params(project, distributed__nnodes=2, distributed__master_addr="127.0.0.1", distributed__master_port=port)
    try:
        nodes = [subprocess.Popen(command, cwd=project.path, env={**project.env, "MASKTUNE_NODE_RANK": str(rank), "OMP_NUM_THREADS": "1"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
        results = [(node.wait(timeout=600), *node.communicate()) for node in nodes]
    finally:
        _set_params(project, distributed__nnodes=1, distributed__master_addr="localhost",
                    distributed__master_port=29500)
    assert [code for code, _, _ in results] == [0, 0], results
    assert "(node 1 of 2)" in results[1][1] and f"ERM epoch {EPOCHS}/{EPOCHS}" not in results[1][1]
    assert _files(project.path / "runs/nodes") == _files(project.path / "runs/two")


@pytest.mark.slow
def test_killed_finetune_resumes_to_the_uninterrupted_model(project, uninterrupted):
    """MaskTune's finetune runs on the one training function (issue 40): killed once its first epoch is
    journaled, its rerun (the command `dvc repro` runs) resumes after that epoch and ends with the outputs of an
    uninterrupted run, byte for byte."""
    _set_params(project, distributed__nproc_per_node=1, finetune__epochs=3)
    python = sys.executable
    assert _run(project, [python, "-m", "stages.compute_saliency", "--data", "data/prepared.h5", "--model",
                          "runs/one/best.pt", "--out", "runs/ft/saliency.h5"]).returncode == 0
    assert _run(project, [python, "-m", "stages.materialize_masked_dataset", "--method", "masktune", "--data",
                          "data/prepared.h5", "--saliency", "runs/ft/saliency.h5", "--out", "runs/ft/masks.h5",
                          "--metrics", "runs/ft/masks.json", "--gallery", "runs/ft/gallery"]).returncode == 0

    def finetune(out: str) -> list[str]:
        return [python, "-m", "stages.finetune", "--method", "masktune", "--data", "data/prepared.h5", "--masks",
                "runs/ft/masks.h5", "--checkpoint", "runs/one/last.pt", "--out", f"{out}/model.pt", "--metrics",
                f"{out}/metrics.json", "--live", f"{out}/live"]

    whole = _run(project, finetune("runs/ft_one"))
    assert whole.returncode == 0, whole.stderr
    process = subprocess.Popen(finetune("runs/ft_killed"), cwd=project.path, env=project.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = project.path / "runs/ft_killed/model.pt.partial/epoch.pt"
    deadline = time.monotonic() + 300
    while not journal.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert journal.exists(), "the finetune ended before its first epoch was journaled"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=300)
    resumed = _run(project, finetune("runs/ft_killed"))
    assert resumed.returncode == 0, resumed.stderr
    assert "finetune (masktune): resuming after epoch 1" in resumed.stdout
    assert not journal.parent.exists()
    assert _files(project.path / "runs/ft_killed") == _files(project.path / "runs/ft_one")
