"""ImageNet weights for the ResNets, read from a local file or torchvision's cache, never downloaded.

The paper fine-tunes an ImageNet-pretrained ResNet-50 (torchvision's IMAGENET1K_V1 weights, which
`torchvision.models.resnet50(pretrained=True)` gave the official code). The official bash files turn
pretrained weights on only for CelebA, and the official repository's one open issue
(aliasgharkhani/Masktune#1) reports Waterbirds ERM accuracy "too low" when following them; so the pipeline
loads them where the paper says, from a file the user provides, since these machines have no internet.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import nn

from masktune.errors import UserError
from masktune.models import build_model

HEAD = "fc."  # the classifier head: num_classes outputs, trained from scratch as the official code does
# torchvision's weight files are named <arch>-<first 8+ hex digits of the file's sha256>.pth
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")


def imagenet_weights_url(arch: str) -> str:
    """The download URL of torchvision's IMAGENET1K_V1 weights for `arch` (e.g. "resnet50")."""
    import torchvision.models  # ~0.8 s: only for the stages that load weights

    try:
        weights = torchvision.models.get_model_weights(arch)
    except ValueError:
        weights = None
    if weights is None or not hasattr(weights, "IMAGENET1K_V1"):
        raise UserError(f"no torchvision ImageNet weights for train_erm.arch {arch!r}: "
                        f"set train_erm.pretrained: false")
    return weights.IMAGENET1K_V1.url


def load_imagenet_weights(model: nn.Module, arch: str, local_path: str | Path | None = None,
                          param: str = "train_erm.weights_path",
                          instead: str = "set train_erm.pretrained: false") -> nn.Module:
    """Copy torchvision's IMAGENET1K_V1 weights for `arch` into `model`, all but the head `fc.*`.

    The state dict comes from `local_path` when given (a torchvision .pth, or a checkpoint dict holding
    it under "state_dict" or "model"), else from torchvision's cache
    (`torch.hub.get_dir()/checkpoints/<file name of the URL>`, where `torchvision.models.resnet50(
    weights=...)` would have put it). A file named like torchvision's (`resnet50-0676ba61.pth`) must
    match the sha256 prefix in its name. Every tensor of the file must fit the model except the head,
    which keeps its fresh initialisation. Raises `UserError` naming the file for anything that is wrong,
    and `param` (the params key of the local copy) and `instead` (the other way out) when it is missing.
    Returns `model`.
    """
    url = imagenet_weights_url(arch)
    if local_path is not None:
        path = Path(local_path)
        if not path.is_file():
            raise UserError(f"{param}: {path} not found (expected a copy of {url})")
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        if not path.is_file():
            raise UserError(f"ImageNet weights for {arch} not found: set {param} to a local copy "
                            f"of {url} or put it in torchvision's cache ({path}), or {instead}")
    _check_hash_in_name(path, url)
    state = _read_state_dict(path, url)
    _check_fits(model, state, path, arch)
    # not strict: the head is left out; BatchNorm fills in num_batches_tracked where the file lacks it
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(HEAD)}, strict=False)
    return model


def _check_hash_in_name(path: Path, url: str) -> None:
    match = HASH_IN_NAME.search(path.name)
    if match is None:  # a user's own copy under another name: only the load check applies
        return
    sha256 = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            sha256.update(chunk)
    expected = match.group(1)
    if not sha256.hexdigest().startswith(expected):
        raise UserError(f"{path}: sha256 starts with {sha256.hexdigest()[:len(expected)]}, not {expected} as its "
                        f"name says: the file is corrupt or incomplete; download it again from {url}")


def _read_state_dict(path: Path, url: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a readable PyTorch weights file ({reason}): "
                        f"download it again from {url}") from error
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict (name -> tensor), nor a checkpoint with one under "
                        f"'state_dict' or 'model': expected a copy of {url}")
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_fits(model: nn.Module, state: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD)}
    given = {k: v for k, v in state.items() if not k.startswith(HEAD)}
    missing = [k for k in expected if k not in given and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} is {tuple(given[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in given and given[k].shape != v.shape]
    problems = []
    for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{len(names)} {what}: {', '.join(names[:3])}{more}")
    if problems:
        hint = " (weights of another architecture?)" if shapes or len(missing) + len(unexpected) > 3 else ""
        raise UserError(f"{path} does not fit {arch}{hint}: {'; '.join(problems)}")


def initial_model(arch: str, num_classes: int, pretrained: bool, weights_path: str | Path | None,
                  device: torch.device) -> nn.Module:
    """The network a training run starts from (ERM's and JTT's alike): `arch` freshly initialised,
    with ImageNet weights in all but the head when `pretrained`, on `device`."""
    model = build_model(arch, num_classes)
    if pretrained:
        model = load_imagenet_weights(model, arch, weights_path)
    return model.to(device)
