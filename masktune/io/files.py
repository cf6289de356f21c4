"""Atomic outputs: every file a stage writes appears complete or not at all.

A file is written under a temporary name in the same folder and renamed over the target only when
complete, so an interrupted stage never leaves a half-written file that looks done (DVC would take it
for an output). A process killed outright (SIGKILL, a lost node) cannot delete its temporary file;
the next write of the same output removes such leftovers (`.<name>.XXXXXXXX.tmp`: only one run writes an
output at a time, DVC locks the workspace while a stage runs).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import resource
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from masktune.errors import DiskFullError

# Checks run before any output is renamed into place (`before_commit`): a stage registers, e.g., that the
# params it declared are still those in params.yaml, so that it refuses to finish rather than let DVC
# record params it did not run with.
_COMMIT_CHECKS: dict[object, Callable[[], None]] = {}


def before_commit(key: object, check: Callable[[], None]) -> None:
    """Run `check` before every atomic rename of this process (it raises to stop the write); a later
    check under the same `key` replaces it."""
    _COMMIT_CHECKS[key] = check


def _run_commit_checks() -> None:
    for check in list(_COMMIT_CHECKS.values()):
        check()


WRITE_ERRORS = (OSError, RuntimeError, sqlite3.Error)  # what a full disk reaches Python as (disk_full_cause)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the output from the machine's other users
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _run_commit_checks()
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent)
    except WRITE_ERRORS as error:
        raise_if_disk_full(error, path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Like `atomic_output`, for a folder: build it under a temporary name, then swap it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp_path, 0o777 & ~_umask())  # as a plain mkdir would make it (mkdtemp: 0700)
    try:
        yield tmp_path
        _run_commit_checks()
        for file in sorted(tmp_path.rglob("*")):
            _fsync(file)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
        _fsync(path.parent)
    except DiskFullError as error:  # met by a writer of a file inside: name the folder, not its temporary name
        raise disk_full(error.cause, path) from None
    except WRITE_ERRORS as error:
        raise_if_disk_full(error, path)
        raise
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


DISK_FULL = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file size limit was reached",
             errno.EDQUOT: "the disk quota is exhausted"}


def file_size_limit() -> int | None:
    """The process's file size limit in bytes (`ulimit -f`), None when there is none. It caps every file the
    process writes, shared-memory files and SQLite's included, which report it without an errno."""
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if limit == resource.RLIM_INFINITY else limit


def disk_full_cause(error: BaseException) -> str | None:
    """Why `error` is a full disk, a quota or a file size limit (None: it is something else). Python and
    torch raise OSError with its errno; HDF5's failures reach h5py as OSError or, for a failure while a
    dataset is freed or flushed (h5py 3.16), RuntimeError, each naming the errno in its message
    ("unable to extend file properly, errno = 27, error message = 'File too large'")."""
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return DISK_FULL[error.errno]
    if isinstance(error, sqlite3.Error):
        return _sqlite_disk_full_cause(error)
    if not isinstance(error, (OSError, RuntimeError)):
        return None
    text = str(error)
    return next((why for code, why in DISK_FULL.items() if os.strerror(code) in text or f"errno = {code}," in text),
                None)


def _sqlite_disk_full_cause(error: sqlite3.Error) -> str | None:
    """SQLite (DVC's state database, which dvclive opens beside every training log) reports a refused write
    as SQLITE_FULL, or as an I/O error without the errno (SQLITE_IOERR_*: `ulimit -f` gives
    SQLITE_IOERR_SHMSIZE); an I/O error is put down to the file size limit only when one is set."""
    name = getattr(error, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return DISK_FULL[errno.ENOSPC]
    if name.startswith("SQLITE_IOERR") and file_size_limit() is not None:
        return DISK_FULL[errno.EFBIG]
    return None


def raise_if_disk_full(error: BaseException, path: Path) -> None:
    """A full disk, a quota or a file size limit (`ulimit -f`) while writing `path`, whichever writer met
    it (HDF5 reports it in its message, Python and torch by errno): one line naming the output and the
    free space, instead of a traceback. The temporary file is removed by the caller."""
    cause = disk_full_cause(error)
    if cause is not None:
        raise disk_full(cause, path) from None


def disk_full(cause: str, path: Path) -> DiskFullError:
    """The one line for output `path` that could not be written because of `cause`."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**30:.2f} GiB free on its file system"
    except OSError:
        free = "free space unknown"
    error = DiskFullError(f"{path}: cannot write it, {cause} ({free}); nothing was written: make room (or raise "
                          "the limit) and rerun")
    error.cause = cause
    return error


def _fsync(path: Path) -> None:
    """Flush `path` (a file, or a folder's entries) to the disk: a rename is durable only once both the
    file's data and its folder are, or a power cut can leave an empty or garbage file under the final name
    (a resume journal's meta.json that then blocks its stage)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomically(path: str | Path, data: bytes) -> None:
    """`data` as the whole content of `path`, through `atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def _remove_leftovers(path: Path) -> None:
    """Delete temporaries of `path` left by a killed writer."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.????????.tmp"):  # tempfile: 8 random chars
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def write_json(path: str | Path, data: Mapping) -> None:
    """Write a metrics file atomically (keys in the order given, indented for readable diffs)."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
