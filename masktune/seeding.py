"""Seeding: every random generator of a run from one seed, deterministic kernels, and seeds drawn for
params left null (recorded, so an unseeded run can still be repeated)."""
from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed every generator and ask for deterministic kernels; return the generator for shuffling."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    deterministic_kernels()
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def deterministic_kernels() -> None:
    """`torch.use_deterministic_algorithms(True, warn_only=True)` without its import of TorchInductor: since
    torch 2.x the public call also sets `torch._inductor.config.deterministic`, importing inductor and dynamo,
    1.5-2 s of every stage's start on a 2-core CPU (`python bench/stage_start.py`), for a flag read only by
    `torch.compile`, which this project never calls. The flags torch's kernels read are the same
    (tests/test_seeding.py checks them against the public call); where inductor is already loaded, or the
    private setter is gone from a later torch, the public call runs."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def resolve_seed(seed: int | None, param: str) -> int:
    """`seed`, or a fresh one drawn from the OS when it is None (ClusterFix's official code seeds
    nothing): the stage records the seed it used, so an unseeded run can still be repeated."""
    if seed is not None:
        return seed
    import secrets

    drawn = secrets.randbelow(2 ** 31)
    print(f"{param} is null: drew seed {drawn} (recorded in the stage's metrics)")
    return drawn
