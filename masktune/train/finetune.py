"""MaskTune's finetune (and RandMask's): continue the last ERM checkpoint on the masked training set, on the
one training function.

As the official `finetune()` (aliasgharkhani/Masktune src/methods/base_method.py): the last ERM checkpoint
with its optimizer state (momentum buffers, learning rate; `loop.restore_optimizer`), `finetune.epochs` (1)
epoch on the masked images at the same learning rate unless `finetune.lr` overrides it, and the model after
the last epoch (no selection). The masked images are the prepared training images with their stored masks
applied as each image is read (put on the raw image through `finetune.alignment`, then the official train
transform, as the official masked PNG files; masktune.data.masks). Through `fit`, so the finetune logs to
dvclive, survives preemption (an epoch journal beside its checkpoint) and runs data-parallel like every
training run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from masktune.config.fields import SEED, WORKERS, Choice, Int, Number
from masktune.config.params import param
from masktune.data.masks import read_masks_attrs
from masktune.data.prepared import open_prepared
from masktune.data.splits import mask_source, open_split
from masktune.data.views import ALIGNMENTS
from masktune.distributed import DistributedConfig
from masktune.models.checkpoint import load_checkpoint, trained_as
from masktune.precision import PRECISIONS, MixedPrecision
from masktune.seeding import seed_everything
from masktune.selection import GroupLabels
from masktune.train.fit import LAST, Keep, Plan, finish_journal, fit, live_folder, resume_key
from masktune.train.loop import restore_optimizer


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(DistributedConfig):
    """The finetune of every masking method (`finetune@<masker>`)."""
    train_precision: str = param("train_precision", Choice(options=tuple(PRECISIONS)))
    epochs: int = param("finetune.epochs", Int(1))
    # null: ERM's learning rate (the checkpoint's, or its initial one after a schedule: the official finetune's)
    lr: float | None = param("finetune.lr", Number(0.0, exclusive_minimum=True, nullable=True))
    batch_size: int = param("finetune.batch_size", Int(1, recipe=True))
    eval_batch_size: int = param("eval_batch_size", Int(1, recipe=True))
    alignment: str = param("finetune.alignment", Choice(options=ALIGNMENTS))
    workers: int = param("finetune.workers", WORKERS)
    seed: int = param("finetune.seed", SEED)


def finetune(config: FinetuneConfig, device: torch.device, *, method: str, data: str | Path, masks: str | Path,
             checkpoint: str | Path, out: str | Path, live_dir: str | Path) -> dict:
    """Fine-tune the ERM checkpoint on the training images masked by `masks` (masker `method`) and write the
    model after the last epoch at `out`; returns its summary (learning rate, last epoch's losses, val accuracy)."""
    stage = f"finetune@{method}"
    generator = seed_everything(config.seed)
    prepared, info = open_prepared(data)
    masked = open_split(prepared, "train", info.views, "train", config.workers,
                        masks=mask_source(prepared, info.views, masks, config.alignment))
    val = open_split(prepared, "val", info.views, "eval", config.workers)
    model, state = load_checkpoint(checkpoint, device)
    optimizer = restore_optimizer(model, state, config.lr)
    lr = optimizer.param_groups[0]["lr"]
    info_ = {"arch": state["arch"], "num_classes": state["num_classes"], "method": method,
             "title": read_masks_attrs(masks).get("title", method),
             "group_labels": GroupLabels(training=False, model_selection=False).as_dict(), **trained_as(stage, config)}
    resume = resume_key(stage, config, device, prepared.path, masks, checkpoint)
    plan = Plan(epochs=config.epochs, batch_size=config.batch_size, eval_batch_size=config.eval_batch_size,
                amp=MixedPrecision(config.train_precision, device), resume=resume, name=f"finetune ({method})")
    with live_folder(live_dir) as live:
        last = fit(model, optimizer, masked, val, generator, device, live, plan,
                   Keep(info=info_, best_path=out, select_by=LAST))
        live.summary["last"] = last
    finish_journal(out, resume)
    return {"method": method, "lr": lr, "epochs": config.epochs, "val_accuracy": last["accuracy"]}
