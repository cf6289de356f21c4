"""Training that survives preemption, in process: `fit` stopped after an epoch and called again with
the same journal key ends exactly as an uninterrupted run (checkpoints and every logged number), for
plain ERM (with a learning-rate schedule), for ClusterFix, whose heads and cluster weights change
from epoch to epoch beside the network, and for GroupDRO, whose group weights and group-balanced draws
do. The same with real kills, as the stage runs: tests/test_distributed.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.models import SmallCNN
from masktune.robust_train.cluster_reweight import ClusterReweight, ClusterWeights, PseudoHeads
from masktune.robust_train.groupdro import GroupDRO
from masktune.seeding import seed_everything
from masktune.train import fit as fit_module
from masktune.train.fit import Keep, Plan, fit, live_folder
from masktune.train.loop import make_optimizer

CPU = torch.device("cpu")
EPOCHS = 3


class Preempted(Exception):
    """Stands in for the kill: raised when an epoch would start past `stop_before`."""


def _split(n: int, seed: int) -> PixelSplit:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 60, (n, 28, 28, 3)).astype(np.uint8)
    images[labels == 1, 10:18, 10:18] = 255
    return PixelSplit.from_samples(SampleSet(images, labels, np.zeros(n, dtype=np.int64), np.arange(n)))


def _run(folder: Path, method: str, monkeypatch, stop_before: int | None = None) -> None:
    """Train EPOCHS epochs into `folder` (best.pt, last.pt, live/); raise Preempted before epoch
    `stop_before` (1-based) when given. Everything is rebuilt from the seed, as a rerun of the stage."""
    generator = seed_everything(0)
    train, val = _split(96, 0), _split(32, 1)
    model = SmallCNN(2)
    groups = train.labels * 2 + np.arange(96) % 2
    extra: dict = {}
    if method == "clusterfix":
        heads = PseudoHeads(model.classifier.in_features, 2, 2)
        optimizer = torch.optim.SGD([*model.parameters(), *heads.parameters()], lr=0.05, momentum=0.9)
        extra = {"objective": ClusterReweight(heads, ClusterWeights(groups, 4, 0.3),
                                              {"train": np.arange(96) % 2, "val": np.zeros(32, int)}, beta=0.5)}
    elif method == "groupdro":
        optimizer = make_optimizer(model, 0.05, 0.9, 1e-4)
        extra = {"objective": GroupDRO(groups, step_size=0.5, adjustment=1.0, reweight_groups=True)}
    else:
        optimizer = make_optimizer(model, 0.05, 0.9, 1e-4)
        extra = {"scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)}
    train_epoch = fit_module.train_epoch

    def epoch(*args, **kwargs):
        number = int(kwargs["desc"].split(" epoch ")[1].split("/")[0])  # fit's "<name> epoch k/EPOCHS"
        if stop_before is not None and number >= stop_before:
            raise Preempted
        return train_epoch(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(fit_module, "train_epoch", epoch)
        with live_folder(folder / "live") as live:
            fit(model, optimizer, train, val, generator, CPU, live,
                Plan(epochs=EPOCHS, batch_size=16, eval_batch_size=32, resume={"key": method}, **extra),
                Keep(info={"arch": "small_cnn", "num_classes": 2}, best_path=folder / "best.pt",
                     last_path=folder / "last.pt"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".partial" not in p.parts[-2]}


@pytest.mark.parametrize("method", ["erm", "clusterfix", "groupdro"])
def test_a_preempted_fit_resumes_to_the_uninterrupted_result(tmp_path, method, capsys, monkeypatch):
    _run(tmp_path / "whole", method, monkeypatch)
    for stop_before in (2, 3):  # killed after epoch 1, then again after epoch 2
        with pytest.raises(Preempted):
            _run(tmp_path / "cut", method, monkeypatch, stop_before=stop_before)
    assert (tmp_path / "cut/best.pt.partial/epoch.pt").is_file()
    _run(tmp_path / "cut", method, monkeypatch)
    assert "resuming after epoch 2" in capsys.readouterr().out
    whole = _files(tmp_path / "whole")
    assert {"best.pt", "last.pt", "live/metrics.json", "live/plots/metrics/train/loss.tsv"} <= set(whole)
    assert _files(tmp_path / "cut") == whole


class _Hostile:
    """Unpickling this runs code (writes a marker file): what a weights-only load must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


@pytest.mark.parametrize("journal", ["hostile", "truncated"])
def test_an_unreadable_or_hostile_journal_is_discarded_unexecuted_and_training_starts_over(
        tmp_path, journal, capsys, monkeypatch):
    _run(tmp_path / "whole", "erm", monkeypatch)
    with pytest.raises(Preempted):
        _run(tmp_path / "cut", "erm", monkeypatch, stop_before=2)
    epoch_file = tmp_path / "cut/best.pt.partial/epoch.pt"
    marker = tmp_path / "marker"
    if journal == "hostile":
        torch.save({"epochs_done": 1, "model": _Hostile(marker)}, epoch_file)
    else:
        epoch_file.write_bytes(epoch_file.read_bytes()[:1000])
    capsys.readouterr()
    _run(tmp_path / "cut", "erm", monkeypatch)
    out = capsys.readouterr().out
    assert not marker.exists()  # the pickled code never ran
    assert f"{epoch_file}: unreadable resume journal" in out and "discarded, starting over" in out
    assert "resuming" not in out
    assert _files(tmp_path / "cut") == _files(tmp_path / "whole")  # started over: the uninterrupted result
