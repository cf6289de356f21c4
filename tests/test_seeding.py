"""`seed_everything`'s deterministic kernels: the flags torch's kernels read set as the public
`torch.use_deterministic_algorithms(True, warn_only=True)` sets them, without importing TorchInductor
(masktune/seeding.py `deterministic_kernels`). Each case in a fresh interpreter: the test process may
have imported inductor already."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

FLAGS = ("import json, sys, torch; print(json.dumps([torch.are_deterministic_algorithms_enabled(), "
         "torch.is_deterministic_algorithms_warn_only_enabled(), 'torch._inductor.config' in sys.modules]))")


def _flags(setup: str) -> list[bool]:
    result = subprocess.run([sys.executable, "-c", f"{setup}\n{FLAGS}"], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout)


def test_deterministic_kernels_set_the_flags_of_the_public_call_without_importing_inductor():
    public = _flags("import torch; torch.use_deterministic_algorithms(True, warn_only=True)")
    ours = _flags("from masktune.seeding import seed_everything; seed_everything(0)")
    assert public[:2] == ours[:2] == [True, True]  # deterministic kernels, a warning where none exists
    assert public[2] and not ours[2]  # the public call imports inductor; ours does not
    assert _flags("import torch")[:2] == [False, False]  # what the two calls change


def test_with_inductor_loaded_the_public_call_sets_its_flag_too():
    flags = ("import torch._inductor.config as c; from masktune.seeding import deterministic_kernels; "
             "deterministic_kernels(); assert c.deterministic is True")
    assert _flags(flags) == [True, True, True]
