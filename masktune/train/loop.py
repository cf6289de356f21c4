"""The training loop every training run shares (`train.fit.fit`), its optimizer and learning-rate schedule.

Follows the official src/methods/base_method.py: cross-entropy, SGD (Adam for Cats vs Dogs), shuffled batches,
no learning-rate schedule (`train_erm` and `finetune` run with `use_lr_scheduler=False`; `train_erm.lr_schedule:
cosine` is ExMap's ERM, `multistep` the official --schedule/--gamma as if stepped, both stepped by `fit`). The finetune continues from the last ERM checkpoint with its optimizer
state (`restore_optimizer`), as the official `finetune()`.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from masktune.data.splits import Split
from masktune.distributed import (
    all_sum,
    batch_share,
    current_world,
    data_parallel,
    shard_batch,
    sync_buffers,
)
from masktune.models.predict import progress
from masktune.precision import MixedPrecision
from masktune.train.objective import ERM, Objective


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


def trains_on_one_row(model: nn.Module, n: int, batch_size: int) -> bool:
    """Whether an epoch of `n` rows in batches of `batch_size` ends on a batch of one row in a network
    with BatchNorm, which cannot normalise one row in training (PyTorch raises "Expected more than 1
    value per channel when training"; e.g. JTT's upsampled set or a folder of 129 images at batch 128).
    `train_epoch` then leaves that row out of the epoch, as `DataLoader(drop_last=True)` would leave out
    the whole short batch; every other epoch length is trained whole."""
    return n > 1 and n % batch_size == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                  for m in model.modules())


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: Split, batch_size: int,
                generator: torch.Generator, device: torch.device, desc: str, amp: MixedPrecision | None = None,
                objective: Objective = ERM) -> dict[str, float]:
    """One pass over `data` (shuffled by `generator`, or as the objective's `epoch_data` draws it), each
    batch stepped on `objective.batch_loss` (ERM's mean cross-entropy by default); returns the mean loss
    (weighted by batch size, so it is the mean over samples), the accuracy (where the objective
    classifies) and the objective's other logged numbers over the epoch.

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
    if trains_on_one_row(model, n, batch_size):
        n -= 1  # the shuffle's last row sits out this epoch (the permutation is drawn whole: same draws)
    bar = progress(data.batches(batch_size, device, generator, world), desc, total=-(-n // batch_size))
    for step, (inputs, index) in enumerate(bar):
        if step * batch_size >= n:
            break
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
                totals["accuracy"] += (logits.argmax(1) == targets).sum().item()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    sync_buffers(model, world)
    objective.end_epoch(model, device)
    return dict(zip(totals, (total / n for total in all_sum(list(totals.values()), world))))

