"""compute_saliency streams, resumes after a kill -9 to the same content, and never leaves a half file."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, committed_params
from fixtures_datasets import prepared_attributes

from masktune.data.prepared import PreparedFile, write_prepared
from masktune.data.splits import open_split, to_input
from masktune.data.views import PLAIN
from masktune.datasets.biased_mnist import build_biased_split
from masktune.io.journal import ResumeJournal
from masktune.models import SmallCNN
from masktune.models.checkpoint import save_checkpoint
from masktune.saliency.compute import SaliencyConfig, training_saliency
from masktune.saliency.file import full_maps_at, iter_full_maps
from masktune.saliency.xgradcam import xgradcam
from masktune.train.loop import make_optimizer

N_IMAGES = 20_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, digits):
    """A project folder with 20,000 biased-MNIST training images (real, and the synthetic twin) and a
    SmallCNN checkpoint."""

    folder = tmp_path_factory.mktemp("saliency")
    images, labels = digits["train"]
    train = build_biased_split(images[:N_IMAGES], labels[:N_IMAGES], 0.01, 4, (255, 0, 0))
    write_prepared(folder / "prepared.h5", {"train": train}, prepared_attributes("biased_mnist"))
    torch.manual_seed(0)
    model = SmallCNN(2)
    save_checkpoint(folder / "model.pt", model, make_optimizer(model, 0.01, 0.9, 1e-4), arch="small_cnn",
                    num_classes=2, epoch=1, val_accuracy=0.5)
    params = committed_params()
    params["saliency"].update(batch_size=64, resume_every=512, workers=0)  # many small shards (39)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    return folder


def _stage(folder, out: str) -> list[str]:
    return [sys.executable, "-m", "stages.compute_saliency", "--data", "prepared.h5", "--model", "model.pt",
            "--out", out]


def _env() -> dict:
    return {"PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"], "TQDM_DISABLE": "1"}


def _content(path) -> dict:
    with h5py.File(path, "r") as f:
        attrs = {key: np.asarray(value).tolist() for key, value in f.attrs.items()}
        return {"attrs": attrs, **{name: f[name][()] for name in f}}


def test_killed_run_resumes_to_the_same_content(workdir):
    uninterrupted = subprocess.run(_stage(workdir, "whole.h5"), cwd=workdir, env=_env(), capture_output=True,
                                   text=True, check=True)
    assert "resuming" not in uninterrupted.stdout

    journal = workdir / "cut.h5.partial"
    process = subprocess.Popen(_stage(workdir, "cut.h5"), cwd=workdir, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(journal.glob("rows-*.h5"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    shards = sorted(journal.glob("rows-*.h5"))
    assert 3 <= len(shards) < N_IMAGES // 512, "the run should be killed mid-way"
    assert not (workdir / "cut.h5").exists()  # nothing DVC could take for a finished output

    resumed = subprocess.run(_stage(workdir, "cut.h5"), cwd=workdir, env=_env(), capture_output=True,
                             text=True, check=True)
    done = int(shards[-1].name.split("-")[2].split(".")[0])
    assert f"resuming from image {done:,} of {N_IMAGES:,}" in resumed.stdout
    assert not journal.exists()
    whole, cut = _content(workdir / "whole.h5"), _content(workdir / "cut.h5")
    assert whole.keys() == cut.keys() == {"attrs", "maps", "predicted"}
    np.testing.assert_array_equal(whole["maps"], cut["maps"])
    np.testing.assert_array_equal(whole["predicted"], cut["predicted"])
    assert whole["attrs"] == cut["attrs"]
    assert (workdir / "whole.h5").read_bytes() == (workdir / "cut.h5").read_bytes()


def test_journal_of_other_inputs_is_discarded(tmp_path):
    first = ResumeJournal(tmp_path / "out.h5", {"checkpoint": "a", "batch_size": 8})
    first.write_shard(0, {"cams": np.zeros((4, 2, 2), np.float32)})
    assert ResumeJournal(tmp_path / "out.h5", {"checkpoint": "a", "batch_size": 8}).done_rows() == 4
    other = ResumeJournal(tmp_path / "out.h5", {"checkpoint": "b", "batch_size": 8})
    assert other.discarded and other.done_rows() == 0


def test_journal_resumes_only_the_contiguous_prefix(tmp_path):
    journal = ResumeJournal(tmp_path / "out.h5", {"k": 1})
    for start in (0, 4, 12):  # rows 8..11 missing (a shard lost mid-write)
        journal.write_shard(start, {"x": np.full((4,), start)})
    assert journal.done_rows() == 8
    assert [start for start, _ in journal.read_shards(100)] == [0, 4]


def test_file_matches_direct_computation_and_full_maps_are_recomputed(workdir):
    torch.manual_seed(0)
    model = SmallCNN(2).eval()
    settings = SaliencyConfig(method="xgradcam", gamma=4.0, batch_size=300, precision="float32", channels_last=True,
                              fold_batchnorm=True, workers=1, resume_every=1000, nproc_per_node=1, nnodes=1,
                              master_addr="localhost", master_port=29500)
    out = workdir / "direct.h5"
    predicted_all = training_saliency(model, workdir / "model.pt", PreparedFile(workdir / "prepared.h5"), PLAIN, out,
                                      settings, torch.device("cpu"))
    assert len(predicted_all) == N_IMAGES
    with h5py.File(workdir / "prepared.h5", "r") as f:
        some = f["train/images"][[5, 9_000, 19_999]]
    expected, predicted = xgradcam(model, model.grad_cam_target_layer(), to_input(some, torch.device("cpu")))
    index = np.array([5, 9_000, 19_999])
    np.testing.assert_allclose(full_maps_at(out, N_IMAGES, index), expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(predicted_all[index], predicted.numpy())
    chunks = list(iter_full_maps(out, N_IMAGES, 7_000))
    assert [first for first, _ in chunks] == [0, 7_000, 14_000]
    np.testing.assert_allclose(chunks[1][1][9_000 - 7_000].numpy(), expected[1].numpy(), atol=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_covers_every_row_once_in_order(workdir, workers):
    split = open_split(PreparedFile(workdir / "prepared.h5"), "train", PLAIN)
    seen = list(split.ordered_batches(3_000, torch.device("cpu"), start=1_000, workers=workers))
    assert [first for first, _ in seen] == list(range(1_000, N_IMAGES, 3_000))
    assert sum(len(batch) for _, batch in seen) == N_IMAGES - 1_000
    with h5py.File(workdir / "prepared.h5", "r") as f:
        np.testing.assert_array_equal(seen[-1][1].numpy(), to_input(f["train/images"][19_000:], torch.device("cpu")))
