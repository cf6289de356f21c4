"""ClusterFix's self-supervised backbone (masktune/group_inference/ssl.py, stage clusterfix_ssl): the losses
by hand, the views, and the stage on a tiny biased MNIST (synthetic digits: plumbing, never a result)."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT
from fixtures_datasets import make_mnist
from PIL import Image
from scratch import committed_params, merge, run_stage_in_process

from masktune.group_inference.ssl import UNUSED, Denoising, TwoViews, nt_xent, simclr_transform
from masktune.models import build_model
from masktune.models.checkpoint import load_checkpoint
from masktune.precision import MixedPrecision


def test_nt_xent_equals_the_papers_loss_written_out():
    torch.manual_seed(0)
    z, tau = torch.randn(6, 5), 0.5
    unit = z / z.norm(dim=1, keepdim=True)
    half = len(z) // 2
    losses = []
    for i in range(len(z)):  # eq. 1 of SimCLR: -log(exp(sim(i, j) / τ) / Σ_{k ≠ i} exp(sim(i, k) / τ))
        j = (i + half) % len(z)
        others = sum(math.exp(float(unit[i] @ unit[k]) / tau) for k in range(len(z)) if k != i)
        losses.append(-math.log(math.exp(float(unit[i] @ unit[j]) / tau) / others))
    assert nt_xent(z, tau).item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_nt_xent_is_lowest_when_each_view_is_nearest_its_pair():
    pairs = torch.eye(4).repeat(2, 1)  # view i and i + 4 identical, orthogonal to the others
    shuffled = torch.cat([torch.eye(4), torch.eye(4)[[1, 2, 3, 0]]])
    assert nt_xent(pairs, 0.5) < nt_xent(shuffled, 0.5)


def test_two_views_are_independent_draws_of_the_simclr_augmentation():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8))
    torch.manual_seed(0)
    views = TwoViews(simclr_transform((28, 28), 0.5, 0.08, None, None))(image)
    assert views.shape == (6, 28, 28) and 0 <= views.min() and views.max() <= 1
    assert not torch.equal(views[:3], views[3:])
    torch.manual_seed(0)
    assert torch.equal(TwoViews(simclr_transform((28, 28), 0.5, 0.08, None, None))(image), views)  # seeded


def test_denoising_masks_the_asked_share_of_pixels_and_reconstructs_the_clean_image():
    model = build_model("small_cnn", 2)
    seen = {}
    original = model.features

    def features(x):
        seen["input"] = x
        return original(x)

    model.features = features
    objective = Denoising(256, (28, 28), 0.25, torch.device("cpu"))
    inputs = torch.rand(64, 3, 28, 28) + 0.1  # no pixel is 0 before the noise
    torch.manual_seed(0)
    logits, loss, _ = objective.batch_loss(model, model, inputs, None, None, MixedPrecision("float32", torch.device("cpu")))
    zeroed = (seen["input"] == 0).all(dim=1)  # a masked pixel is 0 in every channel
    assert logits is None and (seen["input"] == 0).any(dim=1).eq(zeroed).all()
    assert zeroed.float().mean().item() == pytest.approx(0.25, abs=0.01)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(objective.head(original(seen["input"])), inputs.flatten(1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # 28 x 28 targets are the image itself


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A scratch project with a prepared tiny biased MNIST (500 training digits)."""
    path = tmp_path_factory.mktemp("ssl")
    mnist = make_mnist(tmp_path_factory.mktemp("mnist"), n_train=600, n_test=100)
    params = merge(committed_params(), {"prepare": {"biased_mnist": {
        "mnist_dir": str(mnist), "train_limit": 500, "test_limit": 100, "val_size": 150}}})
    shutil.copy(ROOT / "dvc.yaml", path)  # a stage reads the params its dvc.yaml entry declares
    cwd = os.getcwd()
    os.chdir(path)
    try:
        _write(params)
        run_stage_in_process("python -m stages.prepare --out data/prepared.h5")
        yield path, params
    finally:
        os.chdir(cwd)


def _write(params: dict) -> None:
    with open("params.yaml", "w") as file:
        yaml.safe_dump(params, file, sort_keys=False)


def _train(params: dict, objective: str, out: str) -> None:
    _write(merge(params, {"clusterfix": {"backbone": "ssl", "ssl_objective": objective, "ssl_epochs": 2,
                                         "ssl_batch_size": 64, "workers": 0}}))
    run_stage_in_process(f"python -m stages.clusterfix_ssl --name clusterfix --data data/prepared.h5 --out {out} "
                         f"--live {out.replace('.pt', '_live')}")


@pytest.mark.parametrize("objective", ["simclr", "denoising"])
def test_the_stage_trains_a_backbone_without_labels_deterministically(tiny, objective):
    path, params = tiny
    _train(json.loads(json.dumps(params)), objective, f"{objective}_a.pt")
    _train(json.loads(json.dumps(params)), objective, f"{objective}_b.pt")
    assert (path / f"{objective}_a.pt").read_bytes() == (path / f"{objective}_b.pt").read_bytes()  # seeded
    model, state = load_checkpoint(path / f"{objective}_a.pt", torch.device("cpu"))
    assert state["self_supervised"] == objective and state["epoch"] == 1  # the last of 2 epochs
    assert state["config"]["objective"] == objective and state["arch"] == "small_cnn"
    assert model.features(torch.rand(2, 3, 28, 28)).shape == (2, 256)  # what ClusterFix clusters
    live = json.loads((path / f"{objective}_a_live/metrics.json").read_text())
    assert live["recipe"]["objective"] == objective and math.isfinite(live["train"]["loss"])
    losses = (path / f"{objective}_a_live/plots/metrics/train/loss.tsv").read_text().split("\n")[1:3]
    assert len(losses) == 2 and float(losses[1].split("\t")[1]) < float(losses[0].split("\t")[1])  # it learns


def test_the_stage_trains_nothing_when_clusterfix_uses_another_backbone(tiny):
    path, params = tiny
    _write(merge(json.loads(json.dumps(params)), {"clusterfix": {"backbone": "erm"}}))
    run_stage_in_process("python -m stages.clusterfix_ssl --name clusterfix --data data/prepared.h5 --out unused.pt "
                         "--live unused_live")
    assert (path / "unused.pt").read_bytes() == UNUSED
    assert json.loads((path / "unused_live/metrics.json").read_text()) == {"trained": False}
    assert (path / "unused_live/plots/metrics/train/loss.tsv").read_text() == "step\tloss\n"
