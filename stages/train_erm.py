"""Stage `train_erm`: train the model by ERM; keep the best-validation and the last checkpoint.

The official code masks with the best checkpoint and fine-tunes from the last one
(src/methods/base_method.py, `masktune()`), so both are outputs. Model selection is the official
one: best *average* validation accuracy, no group labels. Hyperparameters left null in
`train_erm` come from `recipes.<dataset>` (the official recipe of the dataset).
"""
from __future__ import annotations

import argparse
import math

from dvclive import Live

from masktune.errors import run_stage
from masktune.loaders import load_split
from masktune.models import MODELS, build_model
from masktune.params import load_stage_params
from masktune.storage import atomic_directory, read_attrs
from masktune.training import make_optimizer, predict, save_checkpoint, seed_everything, select_device, train_epoch


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--best", required=True, help="checkpoint of the best validation accuracy")
    parser.add_argument("--last", required=True, help="checkpoint after the last epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    params = load_stage_params("train_erm")
    recipe = params.recipe_key
    lr = params.number(recipe("lr", "lr"), 0.0, exclusive_minimum=True)
    arch = params.choice(recipe("train_erm.arch", "arch"), list(MODELS))
    pretrained = params.boolean(recipe("train_erm.pretrained", "pretrained"))
    weights_path = params.optional_path("train_erm.weights_path")
    epochs = params.integer(recipe("train_erm.epochs", "epochs"), 1)
    batch_size = params.integer(recipe("train_erm.batch_size", "batch_size"), 1)
    momentum = params.number(recipe("train_erm.momentum", "momentum"), 0.0, 1.0)
    weight_decay = params.number(recipe("train_erm.weight_decay", "weight_decay"), 0.0)
    eval_batch_size = params.integer(params.recipe_field("eval_batch_size"), 1)
    workers = params.integer("train_erm.workers", 0, 64)
    generator = seed_everything(params.integer("train_erm.seed", 0))

    num_classes = int(read_attrs(args.data)["num_classes"])
    train = load_split(args.data, "train", "train", workers)
    val = load_split(args.data, "val", "eval", workers)
    device = select_device()
    model = build_model(arch, num_classes)
    if pretrained:
        from masktune.pretrained import load_imagenet_weights

        model = load_imagenet_weights(model, arch, weights_path)
    model = model.to(device)
    optimizer = make_optimizer(model, lr, momentum, weight_decay)
    best_accuracy, best_epoch = -math.inf, -1
    with atomic_directory(args.live) as live_dir:
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
        for epoch in range(epochs):
            stats = train_epoch(model, optimizer, train, batch_size, generator, device,
                                desc=f"ERM epoch {epoch + 1}/{epochs}")
            val_accuracy = float((predict(model, val, eval_batch_size, device, "validate") == val.labels).mean())
            live.log_metric("train/loss", stats["loss"])
            live.log_metric("train/accuracy", stats["accuracy"])
            live.log_metric("val/accuracy", val_accuracy)
            checkpoint = {"arch": arch, "num_classes": num_classes, "epoch": epoch, "val_accuracy": val_accuracy}
            if val_accuracy > best_accuracy:  # strictly better, as the official train_erm
                best_accuracy, best_epoch = val_accuracy, epoch
                save_checkpoint(args.best, model, optimizer, **checkpoint)
            save_checkpoint(args.last, model, optimizer, **checkpoint)
            print(f"epoch {epoch + 1}/{epochs}: train loss {stats['loss']:.4f}, "
                  f"train acc {stats['accuracy']:.4f}, val acc {val_accuracy:.4f}")
            live.next_step()
        live.summary["best/val_accuracy"] = best_accuracy
        live.summary["best/epoch"] = best_epoch + 1  # 1-based, as printed
        live.summary["recipe"] = {"arch": arch, "pretrained": pretrained, "lr": lr, "epochs": epochs,
                                  "batch_size": batch_size, "momentum": momentum, "weight_decay": weight_decay}
        live.end()


if __name__ == "__main__":
    main()
