"""One contract for every registered network (as DomainBed's test_models): a new model is tested by
registering it. Plus the checkpoint round trip the finetune relies on."""
from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from masktune.errors import UserError
from masktune.models import MODELS, build_model
from masktune.models.checkpoint import load_checkpoint, save_checkpoint
from masktune.saliency.xgradcam import fold_batchnorm
from masktune.train.loop import make_optimizer

INPUT_SIZE = {"small_cnn": 28, "lff_mlp": 28}  # fixed 28 x 28 inputs (the official MNIST networks); others any size
NO_CONVOLUTION = {"lff_mlp"}  # no layer for XGradCAM: the method says so in one line


@pytest.fixture(params=list(MODELS))
def arch(request):
    return request.param


def _inputs(arch: str, n: int = 3) -> torch.Tensor:
    size = INPUT_SIZE.get(arch, 64)
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_logits_are_the_classifier_of_the_features(arch):
    torch.manual_seed(0)
    model = build_model(arch, 5).eval()
    x = _inputs(arch)
    features = model.features(x)
    assert features.shape == (3, model.classifier.in_features)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 5
    torch.testing.assert_close(model(x), model.classifier(features), rtol=0, atol=0)


def test_target_layer_is_a_submodule_that_sees_the_input(arch):
    model = build_model(arch, 2).eval()
    if arch in NO_CONVOLUTION:
        with pytest.raises(UserError, match="no convolutional layer"):
            model.grad_cam_target_layer()
        return
    layer = model.grad_cam_target_layer()
    assert any(layer is m for m in model.modules())
    seen = {}
    handle = layer.register_forward_hook(lambda module, args, out: seen.update(shape=out.shape))
    model(_inputs(arch, 2))
    handle.remove()
    assert len(seen["shape"]) == 4 and seen["shape"][0] == 2  # a (B, C, h, w) activation


def test_folding_batchnorm_keeps_the_function_and_the_target_layer(arch):
    torch.manual_seed(0)
    model = build_model(arch, 2).eval()
    for module in model.modules():  # non-trivial running statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = _inputs(arch)
    expected = model(x)
    folded = fold_batchnorm(model)
    torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)
    if arch not in NO_CONVOLUTION:
        assert any(folded.grad_cam_target_layer() is m for m in folded.modules())


def test_checkpoint_round_trip_is_exact_and_byte_stable(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, 3)
    optimizer = make_optimizer(model, 0.1, 0.9, 1e-4)
    x = _inputs(arch, 4)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()  # momentum buffers exist
    meta = {"arch": arch, "num_classes": 3, "epoch": 2, "val_accuracy": 0.5}
    save_checkpoint(tmp_path / "a.pt", model, optimizer, **meta)
    save_checkpoint(tmp_path / "b.pt", model, optimizer, **meta)
    digests = {hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("a.pt", "b.pt")}
    assert len(digests) == 1  # same weights, same bytes: DVC sees no change
    loaded, state = load_checkpoint(tmp_path / "a.pt", torch.device("cpu"))
    assert {k: state[k] for k in meta} == meta
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_a_file_that_is_no_checkpoint_is_named(tmp_path):
    from masktune.errors import UserError

    (tmp_path / "x.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="x.pt: not a checkpoint of this project"):
        load_checkpoint(tmp_path / "x.pt", torch.device("cpu"))
    with pytest.raises(UserError, match="y.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "y.pt", torch.device("cpu"))


def test_small_cnn_names_its_input_size_instead_of_a_shape_error():
    """The official MNIST network's first linear layer fits 28 x 28 only: a user's 32 x 32 images get a
    one-line error saying what to change, not a matmul shape mismatch."""
    from masktune.errors import UserError

    model = build_model("small_cnn", 3).eval()
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 3)
    with pytest.raises(UserError, match="small_cnn .* takes 28 x 28 images, got 32 x 32: choose another network"):
        model(torch.zeros(2, 3, 32, 32))
