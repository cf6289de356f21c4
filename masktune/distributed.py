"""Data-parallel stages: one process per device under torchrun, launched by the stage itself.

`dvc.yaml` commands stay `python -m stages.<stage> ...`. A stage that supports data parallelism
calls `start_workers(config)` first: with `distributed.nproc_per_node` x
`distributed.nnodes` = 1 (the default) it returns and the stage runs as one process, exactly as
before; otherwise the stage process becomes torchrun's agent (`torch.distributed.launcher.api
.elastic_launch`, what the `torchrun` command runs) and starts the workers, each the same command.
A stage started by a user's own `torchrun` (its environment has `TORCHELASTIC_RUN_ID`) runs as a
worker directly. Rank, local rank and world size come from torchrun's environment (`current_world`),
never from assumptions about one node.

What is split across ranks, and what that does to the results:
- Training: every rank draws the same permutation from the same seeded generator, each global batch
  of `batch_size` rows is cut into `world_size` near-equal parts (`shard_batch`) and rank r trains on
  part r; DDP averages the gradients, and each rank's loss is scaled by its share of the batch
  (`batch_share`), so the averaged gradient is the gradient of the global batch's mean loss, also for
  a last batch that does not divide evenly. `batch_size` and `lr` therefore mean what they mean in
  one process (the global batch; no linear learning-rate scaling). Exactly equal to one process up to
  float summation order for a model without BatchNorm; with BatchNorm each rank normalises by its
  own part's statistics (DDP's default; SyncBatchNorm needs a GPU), so the losses agree only
  statistically (tests/test_distributed.py states the tolerance). Random augmentations in DataLoader
  workers draw per-worker seeds, so image-file datasets agree statistically too.
- Per-image passes (saliency): rows are cut into contiguous ranges of whole batches (`row_range`),
  so every batch holds the same rows as in one process and the merged file is identical.
- Validation predictions: each rank predicts a contiguous range, gathered in order (`gather_rows`).
- Outputs (checkpoints, metrics, files) are written by global rank 0 only; the other ranks write
  nothing. With several nodes, node 0 (static rendezvous: its ranks are 0 .. nproc_per_node - 1)
  is the one that runs `dvc repro` and gets the outputs.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import tempfile
import weakref
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from masktune.config.fields import Int, Text
from masktune.config.params import param
from masktune.errors import UserError

NODE_RANK_ENV = "MASKTUNE_NODE_RANK"  # differs per node, unlike params.yaml (README "Scaling out")
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among the workers (rank 0 of 1 when not distributed)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


@dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """How many torchrun workers run a stage (`start_workers`; docs/scaling-out.md)."""
    nproc_per_node: int = param("distributed.nproc_per_node", Int(1, 1024))
    nnodes: int = param("distributed.nnodes", Int(1, 4096))
    master_addr: str = param("distributed.master_addr", Text())
    master_port: int = param("distributed.master_port", Int(1, 65535))

def current_world() -> World:
    """From torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                 int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    return current_world().is_main


def select_device() -> torch.device:
    """This worker's GPU (its local rank's) when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        device = torch.device("cuda", current_world().local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def init_workers(device: torch.device) -> World:
    """Join the process group when running as one of several workers (NCCL on GPUs, gloo on CPUs).
    Ranks other than 0 print nothing to stdout (the stage's report is rank 0's); errors still reach
    stderr."""
    world = current_world()
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
        atexit.register(_leave_group)
        if not world.is_main:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the worker
    return world


def _leave_group() -> None:
    """Destroy the process group before the interpreter exits: a rank that returns while rank 0 still
    writes the output otherwise dies in gloo's thread teardown ("terminate called without an active
    exception", SIGABRT), and the stage fails although its work was done (seen on CI, issue 39)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- launching --------------------------------------------------------------------------------------

def start_workers(settings) -> torch.device:
    """The first call of a data-parallel stage: launch its workers when `settings` (nproc_per_node,
    nnodes, master_addr, master_port) ask for several (this process then waits for them and exits with
    their status); in a worker, or in the single process, join the group and return the device."""
    launch_workers(settings)
    device = select_device()
    init_workers(device)
    return device


def _this_command() -> list[str]:
    """The arguments that start this process again: `-m stages.<stage> ...` or the script path."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return (["-m", spec.name] if spec is not None else [sys.argv[0]]) + sys.argv[1:]


def launch_workers(settings) -> None:
    """Run this stage as `settings.nproc_per_node` x `settings.nnodes` torchrun workers when asked
    (and exit with their status); return at once when one process is asked or when this process is
    already a torchrun worker."""
    if "TORCHELASTIC_RUN_ID" in os.environ or settings.nproc_per_node * settings.nnodes == 1:
        return
    check_workers_fit(settings.nproc_per_node)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # we report failures ourselves
    node_rank = int(os.environ.get(NODE_RANK_ENV, "0"))
    if settings.nnodes == 1:  # a free local port: stages running side by side (a DVC queue) do not collide
        rendezvous = {"rdzv_backend": "c10d", "rdzv_endpoint": "localhost:0"}
    else:  # static: node k holds ranks k * nproc_per_node .., so node 0 (running dvc) holds rank 0
        rendezvous = {"rdzv_backend": "static", "rdzv_endpoint": f"{settings.master_addr}:{settings.master_port}",
                      "rdzv_configs": {"rank": node_rank}}
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs

    command = _this_command()
    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun: the node's cores shared, not oversubscribed
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // settings.nproc_per_node))
    print(f"{' '.join(command[:2])}: {settings.nproc_per_node} worker(s) on this node (node {node_rank} of "
          f"{settings.nnodes})", flush=True)
    with tempfile.TemporaryDirectory(prefix="masktune-torchelastic-") as logs:  # the agent's (empty) log folders
        config = LaunchConfig(min_nodes=settings.nnodes, max_nodes=settings.nnodes,
                              nproc_per_node=settings.nproc_per_node, run_id="masktune", max_restarts=0,
                              logs_specs=DefaultLogsSpecs(log_dir=logs), **rendezvous)
        try:
            elastic_launch(config, sys.executable)(*command)
        except ChildFailedError as error:
            sys.exit(_report_failure(error))
    sys.exit(0)


def check_workers_fit(nproc_per_node: int) -> None:
    """Refuse, before any work, more workers on this node than it has GPUs (on CUDA) or CPU cores: each
    worker holds a model and its data loaders, and past the cores they only compete for them (64 workers
    on 2 cores ran 145 s, then one was killed for memory)."""
    if torch.cuda.is_available():
        have, what = torch.cuda.device_count(), "GPU(s)"
    else:
        have, what = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1), \
            "CPU core(s)"
    if nproc_per_node > have:
        raise UserError(f"distributed.nproc_per_node is {nproc_per_node}, but this node has {have} {what}: "
                        f"set it to at most {have}")


def _report_failure(error) -> int:
    """One line naming the worker that failed first; its exit status for the stage."""
    rank, failure = error.get_first_failure()
    if failure.exitcode == 2:  # a UserError: the worker printed its own one-line message
        return 2
    how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
           else f"exited with status {failure.exitcode}")
    if failure.exitcode == -signal.SIGKILL:  # the kernel's OOM killer sends SIGKILL
        print(f"error: worker rank {rank} (pid {failure.pid}) was killed by SIGKILL, probably out of memory: "
              "lower distributed.nproc_per_node (each worker holds the model and its data loaders) or the "
              "stage's batch_size / workers; the other workers were stopped and no output was written",
              file=sys.stderr)
        return 1
    print(f"error: worker rank {rank} (pid {failure.pid}) {how}; the other workers were stopped and no "
          "output was written. `dvc repro` runs the stage again (training resumes from its last finished "
          "epoch when the inputs are unchanged)", file=sys.stderr)
    return 1


# -- splitting the work -----------------------------------------------------------------------------

def shard_batch(index: np.ndarray, world: World) -> np.ndarray:
    """This rank's part of a global batch: near-equal contiguous parts, rank order."""
    return np.array_split(index, world.size)[world.rank] if world.distributed else index


def batch_share(part: int, whole: int, world: World) -> float:
    """The factor on a rank's mean loss over `part` of a global batch of `whole` rows that makes DDP's
    gradient average the gradient of the global batch's mean loss."""
    return part * world.size / whole if world.distributed else 1.0


def row_range(n: int, batch_size: int, world: World) -> tuple[int, int]:
    """Rows [start, stop) of this rank in a per-image pass: whole batches, contiguous, rank order."""
    batches = np.array_split(np.arange(-(-n // batch_size)), world.size)[world.rank]
    if len(batches) == 0:
        return n, n
    return int(batches[0]) * batch_size, min(int(batches[-1] + 1) * batch_size, n)


def gather_objects(value, world: World) -> list:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not world.distributed:
        return [value]
    values: list = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def gather_rows(part: np.ndarray, world: World) -> np.ndarray:
    """The ranks' parts concatenated in rank order, on every rank."""
    return part if not world.distributed else np.concatenate(gather_objects(part, world))


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum over the ranks, on every rank (float64)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(value, world: World):
    """Rank 0's `value` on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def data_parallel(model: nn.Module, world: World) -> nn.Module:
    """`model` wrapped in DistributedDataParallel (once per model; the wrapper shares its parameters,
    so checkpoints of `model` stay plain), or `model` itself in one process."""
    if not world.distributed:
        return model
    if model not in _WRAPPED:
        device = next(model.parameters()).device
        _WRAPPED[model] = nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    return _WRAPPED[model]


def sync_buffers(model: nn.Module, world: World) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank updated its own during
    its last forward, and validation and the checkpoint must see one model."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
