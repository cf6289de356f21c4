"""Stage `finetune`: continue the last ERM checkpoint on the masked training set.

As the official `finetune()` (src/methods/base_method.py): load the last ERM checkpoint with its
optimizer state (momentum buffers, learning rate) and train `finetune.epochs` (1) epoch on the
masked images at the same learning rate, unless `finetune.lr` overrides it. The masked images are the
prepared training images with their stored masks applied as each batch is read (image-folder
datasets: the mask is put on the raw image through `mask.alignment`, then the official train
transform is applied, as to the official masked PNG files).
"""
from __future__ import annotations

import argparse

from masktune.errors import run_stage
from masktune.image_store import has_encoded_images
from masktune.loaders import load_split, masking_view_size, raw_masks
from masktune.mask_store import check_masks_file, read_packed_masks
from masktune.params import load_stage_params
from masktune.storage import read_attrs, write_json
from masktune.streaming import split_length
from masktune.training import (
    load_checkpoint,
    make_optimizer,
    predict,
    save_checkpoint,
    seed_everything,
    select_device,
    train_epoch,
)


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5): train and val splits")
    parser.add_argument("--masks", required=True, help="masks of the training images (HDF5)")
    parser.add_argument("--checkpoint", required=True, help="the last ERM checkpoint")
    parser.add_argument("--out", required=True, help="fine-tuned checkpoint to write")
    parser.add_argument("--metrics", required=True, help="JSON: finetune loss and accuracies")
    args = parser.parse_args()

    params = load_stage_params("finetune")
    epochs = params.integer("finetune.epochs", 1)
    lr_override = params.number("finetune.lr", 0.0, optional=True, exclusive_minimum=True)
    batch_size = params.integer(params.recipe_key("finetune.batch_size", "batch_size"), 1)
    eval_batch_size = params.integer(params.recipe_field("eval_batch_size"), 1)
    alignment = params.choice("mask.alignment", ["crop", "stretch"])
    workers = params.integer("finetune.workers", 0, 64)
    generator = seed_everything(params.integer("finetune.seed", 0))

    device = select_device()
    rows = split_length(args.data, "train")
    if has_encoded_images(args.data, "train"):  # masks read row by row, mapped to each raw image
        check_masks_file(args.masks, rows, masking_view_size(args.data))
        masked = load_split(args.data, "train", "train", workers, masks=raw_masks(args.data, args.masks, alignment))
    else:  # 28 x 28: all masks in memory, applied as batches are read
        packed = read_packed_masks(args.masks, rows, masking_view_size(args.data))
        masked = load_split(args.data, "train", "train", packed_masks=packed)
    val = load_split(args.data, "val", "eval", workers)
    model, state = load_checkpoint(args.checkpoint, device)
    optimizer = make_optimizer(model, lr=1.0, momentum=0.0, weight_decay=0.0)
    optimizer.load_state_dict(state["optimizer"])  # restores lr, momentum, weight decay and buffers
    if lr_override is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr_override
    for epoch in range(epochs):
        stats = train_epoch(model, optimizer, masked, batch_size, generator, device,
                            desc=f"finetune epoch {epoch + 1}/{epochs}")
    val_accuracy = float((predict(model, val, eval_batch_size, device, "validate") == val.labels).mean())
    save_checkpoint(args.out, model, optimizer, arch=state["arch"], num_classes=state["num_classes"],
                    epoch=epochs - 1, val_accuracy=val_accuracy)
    report = {"method": read_attrs(args.masks)["method"], "lr": optimizer.param_groups[0]["lr"],
              "train_loss": stats["loss"], "train_accuracy": stats["accuracy"],
              "val_accuracy": val_accuracy}
    write_json(args.metrics, report)
    print(f"finetune ({report['method']} masks, lr {report['lr']}): val acc {val_accuracy:.4f}")


if __name__ == "__main__":
    main()
