"""Seeding: every random generator of a run from one seed, deterministic kernels, and seeds drawn for
params left null (recorded, so an unseeded run can still be repeated)."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed every generator and ask for deterministic kernels; return the generator for shuffling."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def resolve_seed(seed: int | None, param: str) -> int:
    """`seed`, or a fresh one drawn from the OS when it is None (ClusterFix's official code seeds
    nothing): the stage records the seed it used, so an unseeded run can still be repeated."""
    if seed is not None:
        return seed
    import secrets

    drawn = secrets.randbelow(2 ** 31)
    print(f"{param} is null: drew seed {drawn} (recorded in the stage's metrics)")
    return drawn
