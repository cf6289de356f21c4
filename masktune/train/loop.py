"""The training loop shared by `train_erm` and `finetune`, prediction, seeding and the device.

Follows the official src/methods/base_method.py: cross-entropy, SGD (Adam for Cats vs Dogs), shuffled batches,
no learning-rate schedule (`train_erm` and `finetune` run with `use_lr_scheduler=False`; `train_erm.lr_schedule:
cosine` is ExMap's ERM, `multistep` the official --schedule/--gamma as if stepped, both stepped by `fit`). The finetune continues from the last ERM checkpoint with its optimizer
state (`restore_optimizer`), as the official `finetune()`.
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from masktune.data.splits import ResampledSplit, Split
from masktune.distributed import (
    all_sum,
    batch_share,
    current_world,
    data_parallel,
    gather_objects,
    gather_rows,
    row_range,
    shard_batch,
    sync_buffers,
)
from masktune.models.precision import MixedPrecision
from masktune.train.objective import ERM, Objective


def progress(iterable, desc: str, total: int | None = None) -> tqdm:
    """A batch progress bar on a terminal; silent when output goes to a log (CI, files) and on
    every data-parallel worker but rank 0."""
    return tqdm(iterable, desc=desc, total=total, unit="batch", leave=False,
                disable=None if current_world().is_main else True)


def seed_everything(seed: int) -> torch.Generator:
    """Seed every generator and ask for deterministic kernels; return the generator for shuffling."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def resolve_seed(seed: int | None, param: str) -> int:
    """`seed`, or a fresh one drawn from the OS when it is None (ClusterFix's official code seeds
    nothing): the stage records the seed it used, so an unseeded run can still be repeated."""
    if seed is not None:
        return seed
    import secrets

    drawn = secrets.randbelow(2 ** 31)
    print(f"{param} is null: drew seed {drawn} (recorded in the stage's metrics)")
    return drawn


def make_optimizer(parameters: nn.Module | Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                   kind: str = "sgd") -> torch.optim.Optimizer:
    """SGD (momentum, no Nesterov), or Adam with torch's default betas and eps and L2 weight decay (not
    AdamW), `momentum` unused, over a model's parameters or a list of them: the official
    `prepare_optimizer` (aliasgharkhani/Masktune src/methods/base_method.py L129-143; Adam: Cats vs Dogs,
    and ClusterFix's run.py L85)."""
    parameters = parameters.parameters() if isinstance(parameters, nn.Module) else parameters
    if kind == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if kind != "sgd":
        raise ValueError(f"unknown optimizer {kind!r}")
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, milestone_every: int = 1,
                   gamma: float = 1.0) -> torch.optim.lr_scheduler.LRScheduler | None:
    """ERM's learning-rate schedule, stepped once per epoch by `fit`: None (constant, MaskTune's ERM);
    cosine, ExMap's ERM: `CosineAnnealingLR(T_max=epochs)`, eta_min 0 (rwchakra/exmap src/utils/optimizers.py
    L25-27); multistep: `MultiStepLR` x `gamma` at epochs milestone_every, 2 * milestone_every, ... below
    `epochs`, the official `--schedule 25 50 ... 275 --gamma 0.5` of CIFAR-10 and SVHN (aliasgharkhani/Masktune
    src/methods/base_method.py L115-127, bash_files/cifar10_masktune.sh L11-12). The official `train_erm`
    steps it only with `use_lr_scheduler=True`, which no official call passes (base_method.py L243, L303-304,
    L390, L402; src/main.py L36, L42): its runs train at the constant initial rate."""
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "multistep":
        milestones = list(range(milestone_every, epochs, milestone_every))
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def restore_optimizer(model: nn.Module, checkpoint: dict, lr: float | None = None) -> torch.optim.Optimizer:
    """The checkpoint's SGD (or Adam) optimizer over `model`'s parameters, state included (momentum buffers,
    learning rate, momentum, weight decay; Adam's moments), as the official `finetune()` continues ERM; `lr`
    overrides the learning rate when given.

    With `lr` None, each param group continues at ERM's learning rate: after a multistep schedule (the
    checkpoint says `lr_schedule: multistep`) the checkpoint's own, decayed `lr`, as the official
    `finetune()` gets it: `load_checkpoint` restores the optimizer's state dict, lr included, and the
    finetune does not step the scheduler (aliasgharkhani/Masktune src/methods/base_method.py L337-348,
    L357-358 with use_lr_scheduler=False from L410; src/utils/data_save_load.py L67-68). Otherwise its
    `initial_lr` when the checkpoint has one (torch's schedulers set it, e.g. `train_erm.lr_schedule:
    cosine`, after which the checkpoint's own `lr` is 0 at the end of the schedule), else the checkpoint's
    `lr` (no schedule: the official MaskTune behaviour, unchanged)."""
    saved = checkpoint["optimizer"]
    kind = "adam" if "betas" in saved["param_groups"][0] else "sgd"  # what the state dict was saved from
    optimizer = make_optimizer(model, lr=1.0, momentum=0.0, weight_decay=0.0, kind=kind)
    optimizer.load_state_dict(saved)
    decayed = checkpoint.get("lr_schedule") == "multistep"
    for group in optimizer.param_groups:
        group["lr"] = lr if lr is not None else group["lr"] if decayed else group.get("initial_lr", group["lr"])
    return optimizer


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: Split, batch_size: int,
                generator: torch.Generator, device: torch.device, desc: str,
                predictions: np.ndarray | None = None, amp: MixedPrecision | None = None,
                objective: Objective = ERM) -> dict[str, float]:
    """One pass over `data` (shuffled by `generator`, or as the objective's `epoch_data` draws it), each
    batch stepped on `objective.batch_loss` (ERM's mean cross-entropy by default); returns the mean loss
    (weighted by batch size, so it is the mean over samples), the accuracy (where the objective
    classifies) and the objective's other logged numbers over the epoch. With `predictions` (an array of
    len(data)), each sample's predicted class is written there as the pass computes it, before the step
    on its batch (what JTT's official code logs to form its error set).

    Under torchrun each rank trains on its part of every global batch of `batch_size` through DDP
    (masktune.distributed says how that equals one process); the returned numbers are over all ranks.
    `amp`: the run's precision (autocast, float16 gradient scaling); None: float32."""
    amp = amp or MixedPrecision("float32", device)
    world = current_world()
    if world.distributed and not objective.data_parallel:
        raise ValueError(f"{type(objective).__name__} trains as one process")
    if amp.precision not in objective.precisions:
        raise ValueError(f"{type(objective).__name__} trains in {', '.join(objective.precisions)} only")
    network = data_parallel(model, world)
    model.train()
    data, generator = objective.epoch_data(data, generator)
    totals: dict[str, float] = {"loss": 0.0, "accuracy": 0.0} if objective.classifies else {"loss": 0.0}
    n = len(data)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    bar = progress(data.batches(batch_size, device, generator, world), desc, total=-(-n // batch_size))
    for step, (inputs, index) in enumerate(bar):
        whole = min(batch_size, n - step * batch_size)
        own = len(shard_batch(np.arange(whole), world))  # 0: a stand-in batch that only keeps DDP in step
        targets = torch.from_numpy(np.asarray(data.labels)[index]).to(device)
        logits, loss, logged = objective.batch_loss(network, model, inputs, targets, data.source_rows(index), amp)
        optimizer.zero_grad(set_to_none=True)
        amp.backward_and_step(loss * batch_share(own, whole, world) if world.distributed else loss, optimizer)
        if own:
            for key, value in (("loss", loss), *logged.items()):
                totals[key] = totals.get(key, 0.0) + value.item() * len(index)
            if objective.classifies:
                predicted = logits.argmax(1)
                totals["accuracy"] += (predicted == targets).sum().item()
                if predictions is not None:
                    seen.append((index, predicted.cpu().numpy()))
        bar.set_postfix(loss=f"{loss.item():.4f}")
    sync_buffers(model, world)
    objective.end_epoch(model, device)
    if predictions is not None:
        _record_predictions(predictions, seen, world)
    return dict(zip(totals, (total / n for total in all_sum(list(totals.values()), world))))


def _record_predictions(predictions: np.ndarray, seen: list[tuple[np.ndarray, np.ndarray]], world) -> None:
    """Write every rank's (rows, predicted classes) into `predictions`, on every rank."""
    rows = np.concatenate([index for index, _ in seen]) if seen else np.zeros(0, dtype=np.int64)
    classes = np.concatenate([value for _, value in seen]) if seen else np.zeros(0, dtype=np.int64)
    predictions[gather_rows(rows, world)] = gather_rows(classes, world)


def map_rows(data: Split, batch_size: int, device: torch.device, desc: str,
             compute: Callable[..., dict[str, torch.Tensor | np.ndarray]], with_rows: bool = False) -> dict[str, np.ndarray]:
    """`compute(inputs)` (named per-row results of a batch; with `with_rows`, `compute(inputs, rows)`, the
    rows of the split in the batch) over every row of `data`, in row order, batches read in order. Under
    torchrun each rank computes a contiguous range of whole batches (every batch holds the rows it holds
    in one process) and every rank gets all rows."""
    world = current_world()
    if world.distributed:
        start, stop = row_range(len(data), batch_size, world)
        data = ResampledSplit(data, np.arange(start, stop))
    parts: dict[str, list[np.ndarray]] = {}
    for inputs, index in progress(data.batches(batch_size, device), desc, total=-(-len(data) // batch_size)):
        results = compute(inputs, data.source_rows(index)) if with_rows else compute(inputs)
        for name, values in results.items():
            parts.setdefault(name, []).append(values.cpu().numpy() if isinstance(values, torch.Tensor) else values)
    mine = {name: np.concatenate(values) for name, values in parts.items()}
    if not world.distributed:
        return mine
    ranks = [part for part in gather_objects(mine, world) if part]  # a rank may have no rows
    return {name: np.concatenate([part[name] for part in ranks]) for name in (ranks[0] if ranks else {})}


@torch.inference_mode()
def predict(model: nn.Module, data: Split, batch_size: int, device: torch.device, desc: str = "predict") -> np.ndarray:
    """Predicted class of every sample of `data`, in order (under torchrun: `map_rows` shares the work)."""
    model.eval()
    rows = map_rows(data, batch_size, device, desc, lambda inputs: {"predicted": model(inputs).argmax(1)})
    return rows.get("predicted", np.zeros(0, dtype=np.int64))


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Split, batch_size: int, device: torch.device,
                   desc: str = "predict") -> np.ndarray:
    """The logits (N, classes) of every sample of `data`, in order, in float32 (selective
    classification scores them; under torchrun `map_rows` shares the work)."""
    model.eval()
    rows = map_rows(data, batch_size, device, desc, lambda inputs: {"logits": model(inputs).float()})
    return rows.get("logits", np.zeros((0, 0), dtype=np.float32))


def penultimate_features(model: nn.Module, data: Split, batch_size: int, device: torch.device,
                         desc: str = "embeddings") -> np.ndarray:
    """float32 (N, D): `model.features` of every row of `data`, in order (eval mode; under torchrun
    the ranks share the rows, `map_rows`): what DFR retrains on and ClusterFix clusters."""
    model.eval()
    with torch.no_grad():
        rows = map_rows(data, batch_size, device, desc, lambda inputs: {"features": model.features(inputs).float()})
    return rows.get("features", np.empty((0, model.classifier.in_features), dtype=np.float32))


def validation_accuracy(val: Split) -> Callable[[np.ndarray], dict[str, float]]:
    """The default model-selection score: plain validation accuracy (no group labels)."""
    return lambda predictions: {"accuracy": float((predictions == val.labels).mean())}


def accuracy(model: nn.Module, data: Split, batch_size: int, device: torch.device, desc: str = "validate") -> float:
    return float((predict(model, data, batch_size, device, desc) == data.labels).mean())
