"""Checkpoints: the model *and* its optimizer state, so the finetune continues the last ERM checkpoint
with its momentum buffers and learning rate, as the official `finetune()` does."""
from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import torch
from torch import nn

from masktune.config.files import declared_values
from masktune.config.params import recorded_config
from masktune.errors import UserError, in_stage
from masktune.io.files import write_bytes_atomically
from masktune.models import build_model


def checkpoint_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None, *, arch: str, num_classes: int,
                     epoch: int, val_accuracy: float, **info) -> bytes:
    """The checkpoint file's bytes: model, optimizer state (None for a model not trained by SGD: DFR's)
    and what the model is (`info`: e.g. the method that trained it and whether it used group labels);
    the same weights give the same bytes."""
    state = {"model": model.state_dict(), "optimizer": None if optimizer is None else optimizer.state_dict(), "arch": arch,
             "num_classes": num_classes, "epoch": epoch, "val_accuracy": val_accuracy, **info}
    buffer = io.BytesIO()  # torch.save names the zip's root folder after the file: keep it fixed,
    torch.save(state, buffer)  # so that the same weights give the same bytes
    return buffer.getvalue()


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, **info) -> None:
    """`checkpoint_bytes` written atomically."""
    write_bytes_atomically(path, checkpoint_bytes(model, optimizer, **info))


def trained_as(stage: str, config) -> dict:
    """What a checkpoint records of the stage that trained it: its name, its resolved config (`recorded_config`,
    for whoever reads the model) and the values of the params dvc.yaml declares for it (`declared_values`, as
    DVC records them), which a stage loading it checks (`check_trained_as_declared`)."""
    return {"stage": stage, "config": recorded_config(config),
            "params": training_params(json.loads(json.dumps(declared_values(stage), default=str)))}


EXECUTION_PARAMS = ("distributed",)  # how many workers ran it, not what was trained: the same model either way


def training_params(declared: dict) -> dict:
    """The declared params that say what a model was trained with: all but the execution settings (a model
    trained on 2 workers or 2 nodes is loaded by a stage running on 1, and both record the same)."""
    return {key: value for key, value in declared.items() if key.split(".")[0] not in EXECUTION_PARAMS}


def check_trained_as_declared(path: str | Path, state: dict, params_file: str | Path = "params.yaml",
                              dvc_file: str | Path = "dvc.yaml") -> None:
    """Refuse a checkpoint whose recorded params differ from what params.yaml now gives the stage that trained
    it, inside a stage (`errors.in_stage`: run from the project root, as DVC runs it). DVC records a stage's
    params in dvc.lock a moment after the stage's process exits; a params.yaml edited in that moment is
    recorded for outputs made with the old values, and `dvc status` calls them up to date. Every stage that
    loads a checkpoint finds that here."""
    if not in_stage() or "stage" not in state or "params" not in state:
        return  # outside a stage (tests, benchmarks), or a model trained outside the pipeline
    stage, files = str(state["stage"]), (Path(params_file).resolve(), Path(dvc_file).resolve())
    stamps = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else None for f in files)
    declared = training_params(_declared_values(stage, *files, stamps))
    trained = training_params(state["params"])
    changed = sorted(key for key in declared.keys() | trained.keys() if declared.get(key) != trained.get(key))
    if changed:
        shown = ", ".join(f"{key} {trained.get(key)!r}" for key in changed[:3]) + (", ..." if len(changed) > 3 else "")
        now = ", ".join(f"{key} {declared.get(key)!r}" for key in changed[:3])
        raise UserError(f"{path}: trained by stage '{stage}' with {shown}, but {files[0]} now gives {now} (it changed "
                        f"after the model was written, before DVC recorded it): run `dvc repro -f -s {stage}`")


@functools.cache
def _declared_values(stage: str, params_file: Path, dvc_file: Path, stamps: tuple) -> dict:
    """`declared_values` of `stage`, once per version of the files (`stamps`: their modification times and
    sizes; `evaluate` loads a checkpoint of each stage twice)."""
    return json.loads(json.dumps(declared_values(stage, params_file, dvc_file), default=str))


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint was saved from; return it with the raw state (optimizer...). Inside a
    stage, a checkpoint trained with other params than params.yaml declares is refused
    (`check_trained_as_declared`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (run `dvc repro` to train it)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model = build_model(state["arch"], state["num_classes"])
        model.load_state_dict(state["model"])
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, struct.error, ...
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a checkpoint of this project ({reason})") from None
    check_trained_as_declared(path, state)
    return model.to(device), state
