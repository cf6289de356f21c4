"""Errors a user can fix, and `run_stage`, the wrapper every stage's `main` runs in.

Researchers run the stages through `dvc repro`; a traceback for a missing file or a typo in
params.yaml hides the one thing they need to know. Library code raises `UserError` with a message
that names the file or key and what to do; `run_stage` prints it on one line and exits with 2.
A data-parallel worker whose collective fails because another worker died exits quietly: the
launching stage names the worker that died (masktune.distributed), in one line.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections.abc import Callable

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: batch tensors (a few MB to tens of MB) stay on the heap
_TRIM_THRESHOLD_BYTES = 1 << 30
PEER_FAILURE_EXIT = 3  # a worker stopped because another worker died


class UserError(Exception):
    """A problem with the user's input (params, data files) that the message fully explains."""


class DiskFullError(UserError):
    """An output could not be written (full disk, quota, file size limit). The stage ends at once after
    its line (`os._exit`): an HDF5 file that failed to flush would only fail again, and crash, when the
    interpreter cleans up."""

    cause = "the disk is full"  # what ran out: space, quota or the file size limit (masktune.io.files)


_RUNNING: list[str] = []  # the stage `main` running in this process (`run_stage`)


def in_stage() -> bool:
    """Whether a stage's `main` is running in this process (in the project root, as DVC runs it), as opposed
    to library code called from a test, a benchmark or a notebook."""
    return bool(_RUNNING)


# Functions that turn a library's exception into the one line a user can act on (or None for another
# exception): e.g. an HDF5 read of damaged data (masktune.io.hdf5.corrupted_read), which h5py reports
# without the file's name.
_TRANSLATORS: list[Callable[[BaseException], UserError | None]] = []


def register_translator(translate: Callable[[BaseException], UserError | None]) -> None:
    if translate not in _TRANSLATORS:
        _TRANSLATORS.append(translate)


def translated(error: BaseException) -> UserError | None:
    """`error` as a UserError by the first translator that knows it, or None."""
    return next((found for found in (translate(error) for translate in _TRANSLATORS) if found is not None), None)


def run_stage(main: Callable[[], None]) -> Callable[[], None]:
    """Decorate a stage's `main` so that a `UserError` ends it with `error: <message>` and exit 2."""

    @functools.wraps(main)
    def wrapper() -> None:
        keep_freed_memory()
        _RUNNING.append(main.__module__)
        try:
            main()
        except DiskFullError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            os._exit(2)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: no output was written", file=sys.stderr)
            sys.exit(130)
        except Exception as error:
            if is_peer_failure(error):
                sys.exit(PEER_FAILURE_EXIT)
            known = translated(error)
            if known is not None:
                print(f"error: {known}", file=sys.stderr)
                sys.exit(2)
            raise
        finally:
            _RUNNING.pop()

    return wrapper


def is_peer_failure(error: BaseException) -> bool:
    """Whether `error` is a collective (all-reduce, broadcast) failing because another data-parallel
    worker died: a traceback from every survivor would bury the line that names the dead worker.
    (torch is looked up, not imported: stages that never load it stay light.)"""
    torch = sys.modules.get("torch")
    if torch is None or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    if isinstance(error, torch.distributed.DistError):
        return True
    return isinstance(error, RuntimeError) and any(
        marker in str(error) for marker in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))


def keep_freed_memory() -> None:
    """Let glibc keep freed batch-sized buffers for reuse instead of returning them to the kernel.

    By default glibc serves every allocation above its (adaptive) mmap threshold with a fresh mmap and
    unmaps it on free, so each batch's activations page-fault in anew (in one timing of the XGradCAM
    pass over the full biased MNIST on a 2-core Intel Xeon: 3.1 s that way, 2.0 s with the threshold
    fixed at 32 MB; `bench/official_masking.py` run on the old and the new code shows the stages' total).
    Values are unchanged; memory stays bounded by the largest batch.
    A no-op where the C library has no `mallopt` (not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
