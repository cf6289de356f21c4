"""The prepared file and HDF5 helpers: round trip, byte-identical rewrites, atomic writes, clear errors."""
from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest

from masktune.data.prepared import PreparedFile, write_prepared
from masktune.data.samples import SampleSet
from masktune.errors import UserError
from masktune.io.files import atomic_directory, atomic_output
from masktune.io.hdf5 import read_arrays, write_arrays

ATTRS = {"dataset": "x", "num_classes": 2, "group_names": json.dumps({0: "a", 1: "b", 2: "c", 3: "d"})}


def read_split(path, split):
    return PreparedFile(path).samples(split)


def _samples(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return SampleSet(rng.integers(0, 256, (n, 6, 7, 3), dtype=np.uint8), rng.integers(0, 2, n),
                     rng.integers(0, 2, n), np.arange(n) * 3)


def test_round_trip_and_byte_identical_rewrites(tmp_path):
    samples = _samples()
    write_prepared(tmp_path / "a.h5", {"train": samples, "val": samples.subset(np.array([1, 3]))}, ATTRS)
    back = read_split(tmp_path / "a.h5", "train")
    for field in ("images", "labels", "attributes", "source_index", "groups"):
        np.testing.assert_array_equal(getattr(back, field), getattr(samples, field))
    assert len(read_split(tmp_path / "a.h5", "val")) == 2
    write_prepared(tmp_path / "b.h5", {"train": samples, "val": samples.subset(np.array([1, 3]))}, ATTRS)
    digest = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]  # no timestamps: same inputs, same bytes, DVC sees no change


def test_wrong_shapes_and_missing_pieces_are_named(tmp_path):
    path = tmp_path / "d.h5"
    write_prepared(path, {"train": _samples()}, ATTRS)
    with pytest.raises(UserError, match="no split 'val'"):
        read_split(path, "val")
    with h5py.File(path, "a") as f:
        del f["train/labels"]
        f["train/labels"] = np.zeros(4, dtype=np.int64)
    with pytest.raises(UserError, match=r"d.h5: train/labels has shape \(4,\), expected \(5,\)"):
        read_split(path, "train")
    with h5py.File(path, "a") as f:
        del f["train/images"]
        f["train/images"] = np.zeros((5, 6, 7), dtype=np.uint8)
    with pytest.raises(UserError, match=r"train/images must be uint8 of shape \(N, H, W, 1 or 3\)"):
        read_split(path, "train")
    write_arrays(tmp_path / "s.h5", {"saliency": np.zeros((5, 6, 6), dtype=np.float32)})
    with pytest.raises(UserError, match=r"'saliency' has shape \(5, 6, 6\), expected \(4, N, N\)"):
        read_arrays(tmp_path / "s.h5", {"saliency": (4, None, None)})
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="junk.h5: not a readable HDF5 file"):
        read_split(tmp_path / "junk.h5", "train")
    with pytest.raises(UserError, match="missing.h5: file not found"):
        read_split(tmp_path / "missing.h5", "train")


def test_atomic_output_leaves_nothing_when_interrupted(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_leftovers_of_a_killed_writer_go_at_the_next_write(tmp_path):
    """SIGKILL skips the clean-up; the next write of the same output removes what it left, and
    nothing of another output whose name starts the same."""
    (tmp_path / ".out.bin.k1l2e3d4.tmp").write_bytes(b"half")
    (tmp_path / ".live.a1b2c3d4.tmp").mkdir()
    (tmp_path / ".live.a1b2c3d4.tmp" / "metrics.json").write_text("{}")
    kept = tmp_path / ".out.bin.old.q1w2e3r4.tmp"  # a temporary of `out.bin.old`
    kept.write_bytes(b"other")
    with atomic_output(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"new")
    with atomic_directory(tmp_path / "live") as folder:
        (folder / "metrics.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept.name, "live", "out.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_permissions_of_the_umask_as_a_plain_write_would(tmp_path, umask):
    """mkstemp / mkdtemp create 0600 / 0700: without the fix every output of a shared machine or cache
    would be unreadable to its other users."""
    import os

    previous = os.umask(umask)
    try:
        with atomic_output(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"x")
        with atomic_directory(tmp_path / "folder") as folder:
            (folder / "a.json").write_text("{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~umask


def test_leftovers_of_an_interrupted_stage_do_not_change_a_folder_dependency(tmp_path):
    """A killed training leaves `models/<out>.partial/` (its resume journal) and perhaps a temporary file
    in models/, which `evaluate` depends on as a folder: the project's .dvcignore keeps both out of the
    folder's hash, so nothing reruns and dvc.lock does not change (issue 27: `nfiles: 7`)."""
    import os
    import shutil
    import subprocess
    import sys

    from conftest import ROOT

    env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_STUDIO_OFFLINE="true",
               DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    project = tmp_path / "project"
    project.mkdir()

    def run(*args: str) -> str:
        return subprocess.run(list(args), cwd=project, env=env, capture_output=True, text=True, check=True).stdout

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvcignore", project / ".dvcignore")
    (project / "dvc.yaml").write_text(
        "stages:\n"
        "  train:\n    cmd: mkdir -p models && echo weights > models/erm.pt\n    outs: [models/erm.pt]\n"
        "  evaluate:\n    cmd: ls models > report.txt\n    deps: [models]\n    outs: [report.txt]\n")
    run(sys.executable, "-m", "dvc", "repro", "-q")
    lock = (project / "dvc.lock").read_text()
    (project / "models/erm.pt.partial").mkdir()
    (project / "models/erm.pt.partial/epoch.pt").write_bytes(b"journal")
    (project / "models/.erm.pt.k1l2e3d4.tmp").write_bytes(b"half")
    assert run(sys.executable, "-m", "dvc", "status", "--json").strip() in ("{}", "")
    assert "Running stage" not in run(sys.executable, "-m", "dvc", "repro")
    assert (project / "dvc.lock").read_text() == lock


WRITERS = {
    "hdf5": "write_arrays(out, {'x': np.random.default_rng(0).random((1000, 1000))})",
    "torch": "buffer = io.BytesIO(); torch.save({'w': torch.randn(1000, 1000)}, buffer); "
             "write_bytes_atomically(out, buffer.getvalue())",
    "json": "write_json(out, {'x': list(range(200000))})",
    # a resume journal's shard (h5py's own failure is a RuntimeError here: issue 39)
    "journal": "ResumeJournal(out, {'k': 1}).write_shard(0, {'x': np.random.default_rng(0).random((1000, 100))})",
    "folder": "with atomic_directory(out) as d:\n        (d / 'a.bin').write_bytes(bytes(300_000))",
    # dvclive opens the DVC repository's state database (SQLite) first: SQLITE_IOERR, no errno (issue 39)
    "dvclive": "from masktune.train.fit import live_folder\n    with live_folder(out) as live:\n"
               "        live.log_metric('a', 1.0)",
}


def _under_file_size_limit(command: list[str], cwd, kilobytes: int = 100):
    import resource
    import subprocess

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (kilobytes * 1024, kilobytes * 1024))

    from conftest import ROOT
    # no bytecode written: CPython writes a .pyc with one unchecked raw write, so under the limit a module compiled
    # here would be left truncated for every later import ("marshal data too short")
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, preexec_fn=limit, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})


@pytest.mark.parametrize("writer", WRITERS)
def test_a_file_size_limit_ends_every_writer_in_one_line_leaving_nothing(tmp_path, writer):
    """`ulimit -f` (EFBIG; ENOSPC takes the same path): exit 2, one line naming the output and the free
    space, no temporary file; HDF5 crashed with a segfault in its clean-up before (issue 27)."""
    import subprocess
    import sys

    script = ("import io, sys\nimport numpy as np\nimport torch\nfrom masktune.errors import run_stage\n"
              "from masktune.io.files import write_bytes_atomically, write_json\n"
              "from masktune.io.files import atomic_directory\nfrom masktune.io.hdf5 import write_arrays\n"
              "from masktune.io.journal import ResumeJournal\n"
              f"@run_stage\ndef main():\n    out = sys.argv[1]\n    {WRITERS[writer]}\nmain()\n")
    out = tmp_path / "out" / f"output.{writer}"
    out.parent.mkdir()
    if writer == "dvclive":
        subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    kilobytes = 16 if writer == "dvclive" else 100  # the database's first write is 32 KiB
    result = _under_file_size_limit([sys.executable, "-c", script, str(out)], tmp_path, kilobytes)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    written = f"{out}.partial/rows-000000000000-000000001000.h5" if writer == "journal" else str(out)
    assert result.stderr.startswith(f"error: {written}: cannot write it, the file size limit was reached (")
    assert "GiB free on its file system); nothing was written" in result.stderr
    # the journal keeps its folder and fingerprint (it resumes once there is room), never a temporary file
    left = sorted(p.relative_to(out.parent).as_posix() for p in out.parent.rglob("*"))
    assert left == ([f"{out.name}.partial", f"{out.name}.partial/meta.json"] if writer == "journal" else [])


def test_prepare_under_a_file_size_limit_stops_in_one_line_leaving_nothing(tmp_path):
    import sys

    import yaml
    from conftest import ROOT, committed_params
    from fixtures_datasets import make_mnist

    params = committed_params()
    params["prepare"]["biased_mnist"].update(mnist_dir=str(make_mnist(tmp_path / "mnist")), val_size=100)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    (tmp_path / "data").mkdir()
    result = _under_file_size_limit([sys.executable, "-m", "stages.prepare", "--out", "data/prepared.h5"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: {'data/prepared.h5'}: cannot write it, the file size limit was reached")
    assert "Traceback" not in result.stderr and list((tmp_path / "data").iterdir()) == []


def test_disk_full_is_recognised_whichever_layer_reports_it():
    """HDF5's failures reach h5py 3.16 as a RuntimeError naming the errno, not an OSError (issue 39)."""
    from masktune.io.files import disk_full_cause

    assert disk_full_cause(OSError(28, "No space left on device")) == "no space left on the device"
    assert disk_full_cause(RuntimeError("Can't decrement id ref count (unable to extend file properly, errno = 27, "
                                        "error message = 'File too large')")) == "the file size limit was reached"
    assert disk_full_cause(RuntimeError("Can't write data (errno = 28, error message = 'No space left on device')"))
    assert disk_full_cause(RuntimeError("dataset is closed")) is None and disk_full_cause(ValueError("x")) is None


def test_an_sqlite_io_error_is_a_full_disk_only_under_a_file_size_limit(monkeypatch):
    """SQLite gives no errno: SQLITE_FULL is a full disk; an I/O error is the size limit only when one is set."""
    import resource
    import sqlite3

    from masktune.io.files import disk_full_cause

    def sqlite_error(name: str) -> sqlite3.Error:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorname = name
        return error

    assert disk_full_cause(sqlite_error("SQLITE_FULL")) == "no space left on the device"
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert disk_full_cause(sqlite_error("SQLITE_IOERR_SHMSIZE")) is None
    monkeypatch.setattr(resource, "getrlimit", lambda _: (16 << 10, 16 << 10))
    assert disk_full_cause(sqlite_error("SQLITE_IOERR_SHMSIZE")) == "the file size limit was reached"
    assert disk_full_cause(sqlite_error("SQLITE_CORRUPT")) is None


def _flip_byte_in(path, dataset: str, offset: int = 16) -> None:
    """Change one byte of `dataset`'s first chunk on disk, as an edit in place or a bad sector would."""
    with h5py.File(path, "r") as f:
        where = f[dataset].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[where + offset] ^= 0xFF
    path.write_bytes(data)


def test_a_byte_changed_in_a_prepared_file_stops_the_stage_in_one_line_naming_it(tmp_path):
    """Every array is checksummed (Fletcher-32): five test labels edited in data/prepared.h5 changed the reported
    accuracies silently before (issue 39); now the read fails, and a stage says which file and dataset."""
    import subprocess
    import sys

    from conftest import ROOT

    write_prepared(tmp_path / "prepared.h5", {"train": _samples(40), "test": _samples(30, seed=1)}, ATTRS)
    with h5py.File(tmp_path / "prepared.h5", "r") as f:
        assert all(f[f"{split}/{name}"].fletcher32 for split in ("train", "test") for name in ("images", "labels"))
    _flip_byte_in(tmp_path / "prepared.h5", "test/labels")
    script = ("from masktune.errors import run_stage\nfrom masktune.data.prepared import PreparedFile\n"
              "@run_stage\ndef main():\n    PreparedFile('prepared.h5').vectors('test', 'labels')\nmain()\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: prepared.h5: dataset '/test/labels' does not read back (")
    assert "restore it with `dvc checkout` or rebuild it with `dvc repro`" in result.stderr


def test_an_unreadable_journal_part_is_discarded_saying_so(tmp_path, capsys):
    """A garbage or empty meta.json (a power cut during its write) discarded the journal with a traceback on
    every rerun until deleted by hand; a shard changed after its write failed the assembly. Both are now
    discarded with one line, and the work starts over (issue 39)."""
    from masktune.io.journal import ResumeJournal

    out = tmp_path / "saliency.h5"
    journal = ResumeJournal(out, {"inputs": 1})
    for text in ("", "{not json", "\x00\x00\x00"):
        (journal.folder / "meta.json").write_text(text)
        assert ResumeJournal(out, {"inputs": 1}).discarded
        assert "meta.json: unreadable resume journal" in capsys.readouterr().out
    journal = ResumeJournal(out, {"inputs": 1})
    journal.write_shard(0, {"x": np.arange(4000, dtype=np.float64).reshape(1000, 4)})
    journal.write_shard(1000, {"x": np.ones((1000, 4))})
    assert ResumeJournal(out, {"inputs": 1}).done_rows() == 2000
    _flip_byte_in(journal.folder / "rows-000000001000-000000002000.h5", "x")
    resumed = ResumeJournal(out, {"inputs": 1})
    assert not resumed.discarded and resumed.done_rows() == 1000  # the damaged shard's rows are done again
    assert "rows-000000001000-000000002000.h5: unreadable resume shard" in capsys.readouterr().out


def test_dataloader_workers_are_refused_under_a_file_size_limit_instead_of_hanging(monkeypatch):
    """Workers hand batches over in shared-memory files that `ulimit -f` caps too: exmap_heatmaps waited forever
    under the limit; now one line names the limit and the param, and in-process loading (0) is kept."""
    import resource

    from masktune.data.splits import loader_workers

    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert loader_workers(2) == 2
    monkeypatch.setattr(resource, "getrlimit", lambda _: (16 << 10, 16 << 10))
    assert loader_workers(0) == 0
    with pytest.raises(UserError, match=r"ulimit -f: 16 KiB.*set this stage's `workers` param to 0"):
        loader_workers(2)
