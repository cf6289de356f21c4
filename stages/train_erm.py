"""Stage `train_erm`: train the model by ERM; keep the best-validation and the last checkpoint.

The official code masks with the best checkpoint and fine-tunes from the last one
(src/methods/base_method.py, `masktune()`), so both are outputs. Model selection is the official
one: best *average* validation accuracy, no group labels. Hyperparameters left null in
`train_erm` come from `recipes.<dataset>.train_erm` (the official recipe of the dataset).
`train_erm.lr_schedule`: constant (MaskTune's ERM), or cosine, ExMap's ERM: `CosineAnnealingLR(optimizer,
T_max=epochs)`, eta_min 0, stepped once per epoch (rwchakra/exmap src/utils/optimizers.py L25-27,
src/run_erm.py L68).
"""
from __future__ import annotations

import argparse

import torch
from dvclive import Live

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.errors import run_stage
from masktune.io.files import atomic_directory
from masktune.models.pretrained import initial_model
from masktune.train.fit import fit
from masktune.train.loop import make_optimizer, seed_everything, select_device


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--best", required=True, help="checkpoint of the best validation accuracy")
    parser.add_argument("--last", required=True, help="checkpoint after the last epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    config = load_stage_config("train_erm")
    generator = seed_everything(config.seed)
    prepared, spec = open_prepared(args.data)
    train = open_split(prepared, "train", spec.views, "train", config.workers)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    device = select_device()
    model = initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
                 if config.lr_schedule == "cosine" else None)
    with atomic_directory(args.live) as live_dir:
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        best = fit(model, optimizer, train, val, epochs=config.epochs, batch_size=config.batch_size,
                   eval_batch_size=config.eval_batch_size, generator=generator, device=device, live=live,
                   best_path=args.best, last_path=args.last,
                   checkpoint_info={"arch": config.arch, "num_classes": prepared.num_classes},
                   scheduler=scheduler)
        live.summary["best/val_accuracy"] = best["accuracy"]
        live.summary["best/epoch"] = best["epoch"]
        live.summary["recipe"] = {"arch": config.arch, "pretrained": config.pretrained, "lr": config.lr,
                                  "epochs": config.epochs, "batch_size": config.batch_size,
                                  "momentum": config.momentum, "weight_decay": config.weight_decay,
                                  "lr_schedule": config.lr_schedule}
        live.end()


if __name__ == "__main__":
    main()
