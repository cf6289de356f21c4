"""Stage `train_erm`: train the model by ERM; keep the best-validation and the last checkpoint.

The official code masks with the best checkpoint and fine-tunes from the last one
(src/methods/base_method.py, `masktune()`), so both are outputs. Model selection is the official
one: best *average* validation accuracy, no group labels. Hyperparameters left null in
`train_erm` come from `recipes.<dataset>.train_erm` (the official recipe of the dataset).
`train_erm.lr_schedule`: constant (MaskTune's ERM), or cosine, ExMap's ERM: `CosineAnnealingLR(optimizer,
T_max=epochs)`, eta_min 0, stepped once per epoch (rwchakra/exmap src/utils/optimizers.py L25-27,
src/run_erm.py L68).

Runs as `distributed.nproc_per_node` x `distributed.nnodes` DDP workers when asked (masktune.distributed).
Survives preemption: each finished epoch's state goes to `models/erm_best.pt.partial/`, and a rerun
with the same data and params continues after the last finished epoch (masktune.train.fit).
"""
from __future__ import annotations

import argparse

import torch

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.distributed import start_workers
from masktune.errors import run_stage
from masktune.models.precision import MixedPrecision
from masktune.models.pretrained import initial_model
from masktune.train.fit import finish_journal, fit, live_folder, resume_key
from masktune.train.loop import make_optimizer, seed_everything


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--best", required=True, help="checkpoint of the best validation accuracy")
    parser.add_argument("--last", required=True, help="checkpoint after the last epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    config = load_stage_config("train_erm")
    device = start_workers(config)
    generator = seed_everything(config.seed)
    prepared, spec = open_prepared(args.data)
    train = open_split(prepared, "train", spec.views, "train", config.workers)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    model = initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.lr_schedule == "cosine" else None)
    resume = resume_key("train_erm", config, device, args.data)
    with live_folder(args.live) as live:
        best = fit(model, optimizer, train, val, epochs=config.epochs, batch_size=config.batch_size,
                   eval_batch_size=config.eval_batch_size, generator=generator, device=device, live=live,
                   best_path=args.best, last_path=args.last,
                   checkpoint_info={"arch": config.arch, "num_classes": prepared.num_classes},
                   scheduler=scheduler, resume=resume,
                   amp=MixedPrecision(config.train_precision, device))
        live.summary["best/val_accuracy"] = best["accuracy"]
        live.summary["best/epoch"] = best["epoch"]
        live.summary["recipe"] = {"arch": config.arch, "pretrained": config.pretrained, "lr": config.lr,
                                  "epochs": config.epochs, "batch_size": config.batch_size,
                                  "momentum": config.momentum, "weight_decay": config.weight_decay,
                                  "lr_schedule": config.lr_schedule}
    finish_journal(args.best, resume)


if __name__ == "__main__":
    main()
