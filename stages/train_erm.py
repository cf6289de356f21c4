"""Stage `train_erm`: train the model by ERM; keep the best-validation and the last checkpoint.

The official code masks with the best checkpoint and fine-tunes from the last one
(src/methods/base_method.py, `masktune()`), so both are outputs. Model selection is the official
one: best *average* validation accuracy, no group labels. Hyperparameters left null in
`train_erm` come from `recipes.<dataset>.train_erm` (the official recipe of the dataset).
"""
from __future__ import annotations

import argparse
import math

from dvclive import Live

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.errors import run_stage
from masktune.io.files import atomic_directory
from masktune.models import build_model
from masktune.models.checkpoint import save_checkpoint
from masktune.models.pretrained import load_imagenet_weights
from masktune.train.loop import accuracy, make_optimizer, seed_everything, select_device, train_epoch


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
    model = build_model(config.arch, prepared.num_classes)
    if config.pretrained:
        model = load_imagenet_weights(model, config.arch, config.weights_path)
    model = model.to(device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    best_accuracy, best_epoch = -math.inf, -1
    with atomic_directory(args.live) as live_dir:
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        for epoch in range(config.epochs):
            stats = train_epoch(model, optimizer, train, config.batch_size, generator, device,
                                desc=f"ERM epoch {epoch + 1}/{config.epochs}")
            val_accuracy = accuracy(model, val, config.eval_batch_size, device)
            live.log_metric("train/loss", stats["loss"])
            live.log_metric("train/accuracy", stats["accuracy"])
            live.log_metric("val/accuracy", val_accuracy)
            checkpoint = {"arch": config.arch, "num_classes": prepared.num_classes, "epoch": epoch,
                          "val_accuracy": val_accuracy}
            if val_accuracy > best_accuracy:  # strictly better, as the official train_erm
                best_accuracy, best_epoch = val_accuracy, epoch
                save_checkpoint(args.best, model, optimizer, **checkpoint)
            save_checkpoint(args.last, model, optimizer, **checkpoint)
            print(f"epoch {epoch + 1}/{config.epochs}: train loss {stats['loss']:.4f}, "
                  f"train acc {stats['accuracy']:.4f}, val acc {val_accuracy:.4f}")
            live.next_step()
        live.summary["best/val_accuracy"] = best_accuracy
        live.summary["best/epoch"] = best_epoch + 1  # 1-based, as printed
        live.summary["recipe"] = {"arch": config.arch, "pretrained": config.pretrained, "lr": config.lr,
                                  "epochs": config.epochs, "batch_size": config.batch_size,
                                  "momentum": config.momentum, "weight_decay": config.weight_decay}
        live.end()


if __name__ == "__main__":
    main()
