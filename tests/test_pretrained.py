"""ImageNet weights from a local file or torchvision's cache, with a fake "ImageNet" ResNet-18 state dict."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from masktune.errors import UserError
from masktune.models import build_model, pretrained
from masktune.models.pretrained import imagenet_weights_url, load_imagenet_weights

REAL_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


def fake_imagenet_state(seed: int) -> dict[str, torch.Tensor]:
    """torchvision's ResNet-18 with 1000 classes, seeded; BatchNorm weights and buffers moved off their
    initial 1s and 0s so that equality after loading shows they were loaded."""
    torch.manual_seed(seed)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    return {k: v + torch.rand_like(v) if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    return fake_imagenet_state(0)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub dir in place of the user's."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "hub"


def save_in_cache_as_torchvision_would(state, hub_dir: Path, monkeypatch) -> Path:
    """Save under torchvision's naming (resnet18-<sha256 prefix>.pth), and point the URL at that name."""
    path = hub_dir / "checkpoints" / "tmp.pth"
    torch.save(state, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    named = path.rename(path.with_name(f"resnet18-{sha[:8]}.pth"))
    monkeypatch.setattr(pretrained, "imagenet_weights_url", lambda arch: REAL_URL.replace("f37072fd", sha[:8]))
    return named


def test_url_is_torchvisions_imagenet1k_v1():
    assert imagenet_weights_url("resnet18") == REAL_URL
    assert imagenet_weights_url("resnet50") == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    with pytest.raises(UserError, match="no torchvision ImageNet weights for train_erm.arch 'small_cnn'"):
        imagenet_weights_url("small_cnn")


def test_loads_every_tensor_but_the_head_from_the_cache(imagenet_state, hub_dir, monkeypatch):
    save_in_cache_as_torchvision_would(imagenet_state, hub_dir, monkeypatch)
    model = build_model("resnet18", 2)
    head = {k: v.clone() for k, v in model.fc.state_dict().items()}
    assert load_imagenet_weights(model, "resnet18", None) is model
    loaded = model.state_dict()
    for name, tensor in imagenet_state.items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], tensor), name
    assert model.fc.weight.shape == (2, 512)
    assert all(torch.equal(model.fc.state_dict()[k], v) for k, v in head.items())


def test_local_path_wins_over_the_cache_and_may_be_a_checkpoint(imagenet_state, hub_dir, monkeypatch, tmp_path):
    save_in_cache_as_torchvision_would(imagenet_state, hub_dir, monkeypatch)
    other = fake_imagenet_state(1)
    local = tmp_path / "my_resnet18.pth"  # not torchvision's naming: no hash check, only the load check
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in other.items()}}, local)
    model = load_imagenet_weights(build_model("resnet18", 2), "resnet18", str(local))
    assert torch.equal(model.conv1.weight, other["conv1.weight"])
    assert not torch.equal(model.conv1.weight, imagenet_state["conv1.weight"])


def test_weights_nowhere_tells_where_to_put_them(hub_dir, tmp_path):
    with pytest.raises(UserError) as error:
        load_imagenet_weights(build_model("resnet18", 2), "resnet18", None)
    message = str(error.value)
    assert message.startswith("ImageNet weights for resnet18 not found: set train_erm.weights_path")
    assert REAL_URL in message and str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "train_erm.pretrained: false" in message and "\n" not in message
    with pytest.raises(UserError, match="train_erm.weights_path: .*nowhere.pth not found"):
        load_imagenet_weights(build_model("resnet18", 2), "resnet18", tmp_path / "nowhere.pth")


def test_missing_tensor_is_named(imagenet_state, tmp_path):
    path = tmp_path / "resnet18_partial.pth"
    torch.save({k: v for k, v in imagenet_state.items() if k != "layer2.0.bn1.running_mean"}, path)
    with pytest.raises(UserError, match=r"resnet18_partial.pth does not fit resnet18: 1 missing: "
                                        r"layer2.0.bn1.running_mean$"):
        load_imagenet_weights(build_model("resnet18", 2), "resnet18", path)


def test_wrong_hash_prefix_names_the_file(imagenet_state, hub_dir):
    path = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"  # the real name, but not the real file
    torch.save(imagenet_state, path)
    with pytest.raises(UserError, match=r"resnet18-f37072fd.pth: sha256 starts with [0-9a-f]{8}, not f37072fd"):
        load_imagenet_weights(build_model("resnet18", 2), "resnet18", None)


@pytest.mark.parametrize("content", ["truncated", "not a state dict"])
def test_unreadable_file_is_named(imagenet_state, tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "truncated":
        torch.save(imagenet_state, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expected = r"weights.pth is not a readable PyTorch weights file \(.*\): download it again from"
    else:
        torch.save({"epoch": 3}, path)
        expected = r"weights.pth does not hold a state dict"
    with pytest.raises(UserError, match=expected) as error:
        load_imagenet_weights(build_model("resnet18", 2), "resnet18", path)
    assert "\n" not in str(error.value)


def test_weights_of_another_architecture(imagenet_state, tmp_path):
    path = tmp_path / "resnet18_weights.pth"
    torch.save(imagenet_state, path)
    with pytest.raises(UserError) as error:
        load_imagenet_weights(build_model("resnet50", 2), "resnet50", path)
    message = str(error.value)
    assert "resnet18_weights.pth does not fit resnet50 (weights of another architecture?)" in message
    assert "missing: conv1.weight" not in message and "missing: layer1.0.conv3.weight" in message
    assert "layer1.0.conv1.weight is (64, 64, 3, 3) in the file, (64, 64, 1, 1) in the model" in message


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_clusterfix_clusters_any_imagenet_network_from_a_local_file(arch, tmp_path, hub_dir):
    """`clusterfix.backbone: <arch>` with `clusterfix.weights_path`: the file's every tensor but the head,
    or one line naming the param when the file is missing or of another network."""
    from masktune.group_inference.clusterfix_features import feature_network

    torch.manual_seed(1)
    state = getattr(torchvision.models, arch)(num_classes=1000).state_dict()
    path = tmp_path / f"my_{arch}.pth"
    torch.save(state, path)
    network = feature_network(arch, {"erm": "unused", "ssl": "unused"}, path, 2, torch.device("cpu"))
    loaded = network.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items() if not key.startswith("fc."))
    assert not network.training and network.features(torch.rand(1, 3, 64, 64)).shape == (1, state["fc.weight"].shape[1])
    with pytest.raises(UserError, match=r"clusterfix.weights_path: .*missing.pth not found"):
        feature_network(arch, {}, tmp_path / "missing.pth", 2, torch.device("cpu"))
    other = "resnet50" if arch == "resnet18" else "resnet18"
    torch.save(getattr(torchvision.models, other)(num_classes=1000).state_dict(), tmp_path / "other.pth")
    with pytest.raises(UserError, match=f"other.pth does not fit {arch}"):
        feature_network(arch, {}, tmp_path / "other.pth", 2, torch.device("cpu"))
