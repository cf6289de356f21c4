"""The small-data checks (masktune/train/health.py, issue 43): a case that trips each, one that does not, and
the warning carried from `fit` into the checkpoint and the report."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.eval.report import comparison_markdown
from masktune.models import SmallCNN
from masktune.seeding import seed_everything
from masktune.train.fit import Keep, Plan, fit, live_folder
from masktune.train.health import batchnorm_warning, chance_warning
from masktune.train.loop import make_optimizer

CPU = torch.device("cpu")
RESULT = {"accuracy": 0.5, "unbiased_accuracy": 0.5, "worst_group_accuracy": 0.0}


def test_too_few_steps_for_batchnorm_are_named_with_the_fix():
    """3 classes x 30 images, the default batch of 128 and 5 epochs: 5 steps, 0.9^5 = 59% of the initial
    statistics left; 48,000 images are 1,875 steps; a network without BatchNorm has nothing to settle."""
    warning = batchnorm_warning(SmallCNN(3), rows=90, batch_size=128, epochs=5)
    assert warning.startswith("only 5 optimiser step(s) (5 epoch(s) of 1, 90 images in batches of 128)")
    assert "still hold 59% of their initial values (about 44 steps settle them at momentum 0.1)" in warning
    assert "lower the stage's batch_size or raise its epochs" in warning
    assert batchnorm_warning(SmallCNN(3), rows=90, batch_size=4, epochs=2) is None  # 46 steps: 99.2% settled
    assert batchnorm_warning(SmallCNN(3), rows=90, batch_size=4, epochs=1) is not None  # 23 steps
    assert batchnorm_warning(SmallCNN(2), rows=48_000, batch_size=128, epochs=5) is None
    assert batchnorm_warning(nn.Sequential(nn.Flatten(), nn.Linear(10, 2)), rows=90, batch_size=128, epochs=1) is None


def test_a_model_at_chance_while_it_fits_training_is_named():
    assert "validation accuracy 33.3% is at chance (33.3% for 3 classes) while training accuracy is 100.0%" \
        in chance_warning(1.0, 1 / 3, 3)
    assert chance_warning(1.0, 0.96, 3) is None  # generalises
    assert chance_warning(0.5, 0.33, 3) is None  # does not fit training either: a visible failure already
    assert chance_warning(0.99, 0.70, 2) is not None and chance_warning(0.99, 0.80, 2) is None


def _split(per_class: int, seed: int) -> PixelSplit:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    images = rng.integers(0, 60, (len(labels), 28, 28, 3)).astype(np.uint8)
    for k in range(3):
        images[labels == k, 4 + 7 * k:10 + 7 * k, 4:24] = 255  # a bar per class
    return PixelSplit.from_samples(SampleSet(images, labels, labels.copy(), np.arange(len(labels))))


def _train(folder, batch_size: int, epochs: int) -> dict:
    generator = seed_everything(0)
    model = SmallCNN(3)
    with live_folder(folder / "live") as live:
        fit(model, make_optimizer(model, 0.05, 0.9, 1e-4), _split(30, 0), _split(30, 1), generator, CPU, live,
            Plan(epochs=epochs, batch_size=batch_size, eval_batch_size=32),
            Keep(info={"arch": "small_cnn", "num_classes": 3}, best_path=folder / "best.pt"))
    return torch.load(folder / "best.pt", map_location="cpu", weights_only=True)


def test_the_3_by_30_case_is_flagged_in_the_log_the_checkpoint_and_the_report(tmp_path, capsys):
    """The folder case of issue 43 in miniature (3 classes x 30 images, batch 128, 5 epochs): one line in
    the log, the warnings in the checkpoint, a line under the report's table; with batch 4 the statistics
    settle, nothing is said and the checkpoint holds no `warnings` key (a healthy run's files unchanged)."""
    flagged = _train(tmp_path / "flagged", batch_size=128, epochs=5)
    out = capsys.readouterr().out
    assert out.count("warning: ERM: only 5 optimiser step(s)") == 1
    assert flagged["warnings"][0].startswith("only 5 optimiser step(s)")
    report = comparison_markdown("folder", {"erm": {"val": RESULT}},
                                 {"erm": {"title": "ERM", "group_labels": "✗/✗", "warnings": flagged["warnings"]}},
                                 ["val"], "accuracy")
    assert "Warnings (the training of these models" in report and "- ERM: only 5 optimiser step(s)" in report

    healthy = _train(tmp_path / "healthy", batch_size=4, epochs=3)
    assert "warnings" not in healthy and "warning:" not in capsys.readouterr().out
    assert healthy["val_accuracy"] > 0.9  # above chance once the statistics settle
    plain = comparison_markdown("folder", {"erm": {"val": RESULT}},
                                {"erm": {"title": "ERM", "group_labels": "✗/✗"}}, ["val"], "accuracy")
    assert "Warnings" not in plain
