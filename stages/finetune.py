"""Stage `finetune@<method>`: continue the last ERM checkpoint on a masking method's masked training set.

As the official `finetune()` (src/methods/base_method.py): load the last ERM checkpoint with its
optimizer state (momentum buffers, learning rate) and train `finetune.epochs` (1) epoch on the
masked images at the same learning rate, unless `finetune.lr` overrides it. The masked images are the
prepared training images with their stored masks applied as each image is read (put on the raw image
through `finetune.alignment`, then the official train transform, as the official masked PNG files).
Runs as DDP workers when `distributed` asks (masktune.distributed); rank 0 writes the outputs.
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.data.masks import masks_method
from masktune.data.prepared import open_prepared
from masktune.data.splits import mask_source, open_split
from masktune.distributed import is_main_process, start_workers
from masktune.errors import UserError, run_stage
from masktune.io.files import write_json
from masktune.models.checkpoint import load_checkpoint, save_checkpoint, trained_as
from masktune.models.precision import MixedPrecision
from masktune.train.loop import accuracy, restore_optimizer, seed_everything, train_epoch
from masktune.train.selection import GroupLabels


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the masking method: masktune, randmask")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5): train and val splits")
    parser.add_argument("--masks", required=True, help="masks of the training images (HDF5)")
    parser.add_argument("--checkpoint", required=True, help="the last ERM checkpoint")
    parser.add_argument("--out", required=True, help="fine-tuned checkpoint to write")
    parser.add_argument("--metrics", required=True, help="JSON: finetune loss and accuracies")
    args = parser.parse_args()

    config = load_stage_config(f"finetune@{args.method}")
    made_by = masks_method(args.masks)
    if made_by != args.method:
        raise UserError(f"{args.masks}: masks of {made_by}, not of {args.method}")
    device = start_workers(config)
    generator = seed_everything(config.seed)
    prepared, spec = open_prepared(args.data)
    masks = mask_source(prepared, spec.views, args.masks, config.alignment)
    masked = open_split(prepared, "train", spec.views, "train", config.workers, masks=masks)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    model, state = load_checkpoint(args.checkpoint, device)
    optimizer = restore_optimizer(model, state, config.lr)
    amp = MixedPrecision(config.train_precision, device)
    for epoch in range(config.epochs):
        stats = train_epoch(model, optimizer, masked, config.batch_size, generator, device,
                            desc=f"finetune epoch {epoch + 1}/{config.epochs}", amp=amp)
    val_accuracy = accuracy(model, val, config.eval_batch_size, device)
    if not is_main_process():
        return
    save_checkpoint(args.out, model, optimizer, arch=state["arch"], num_classes=state["num_classes"],
                    epoch=config.epochs - 1, val_accuracy=val_accuracy, method=args.method,
                    group_labels=GroupLabels(training=False, model_selection=False).as_dict(),
                    **trained_as(f"finetune@{args.method}", config))
    report = {"method": args.method, "lr": optimizer.param_groups[0]["lr"],
              "train_loss": stats["loss"], "train_accuracy": stats["accuracy"],
              "val_accuracy": val_accuracy}
    write_json(args.metrics, report)
    print(f"finetune ({report['method']} masks, lr {report['lr']}): val acc {val_accuracy:.4f}")


if __name__ == "__main__":
    main()
