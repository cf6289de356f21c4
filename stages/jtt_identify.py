"""Stage `jtt_identify@<method>`: JTT's identification model and its error set.

As the official code (anniesch/jtt; masktune/methods/jtt.py cites the lines): a model trained by ERM
with JTT's recipe, from the same start as ERM (the train_erm network, ImageNet weights where the
recipe has them), without augmentation; after T epochs (`jtt.identification_epochs`), the predicted
class of each training image during the next epoch's training pass (official, `jtt.error_set_pass:
training`) or in an eval-mode pass (`eval`) gives the error set, the misclassified examples. Writes
the error set (HDF5: `error`, `predicted` per training row) and a summary: its size, and, for the
report only, how the groups are represented in it (JTT's premise: the minority groups fill it).
"""
from __future__ import annotations

import argparse

import numpy as np

from masktune.config.stages import load_stage_config
from masktune.data.splits import open_split
from masktune.datasets import open_prepared
from masktune.distributed import is_main_process, start_workers
from masktune.errors import run_stage
from masktune.io.files import write_json
from masktune.io.hdf5 import write_arrays
from masktune.methods import get_method
from masktune.methods.jtt import error_set
from masktune.models.precision import MixedPrecision
from masktune.models.pretrained import initial_model
from masktune.train.loop import make_optimizer, predict, seed_everything, train_epoch


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the JTT entry of the registry: jtt")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--out", required=True, help="HDF5 file: error (bool), predicted (int) per train row")
    parser.add_argument("--metrics", required=True, help="JSON: error set size and group make-up")
    args = parser.parse_args()

    method = get_method(args.method)
    config = load_stage_config(f"jtt_identify@{method.name}")
    device = start_workers(config)
    generator = seed_everything(config.seed)
    prepared, spec = open_prepared(args.data)
    train = open_split(prepared, "train", spec.views, "eval", config.workers)  # no augmentation (official)
    model = initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    amp = MixedPrecision(config.train_precision, device)
    for epoch in range(config.epochs):
        stats = train_epoch(model, optimizer, train, config.batch_size, generator, device,
                            desc=f"JTT identification epoch {epoch + 1}/{config.epochs}", amp=amp)
        print(f"JTT identification epoch {epoch + 1}/{config.epochs}: train loss {stats['loss']:.4f}, "
              f"train acc {stats['accuracy']:.4f}")
    if config.error_set_pass == "training":
        predicted = np.full(len(train), -1, dtype=np.int64)
        train_epoch(model, optimizer, train, config.batch_size, generator, device,
                    desc="JTT error set (training pass)", predictions=predicted, amp=amp)
    else:
        predicted = predict(model, train, config.eval_batch_size, device, "JTT error set (eval pass)")
    errors = error_set(predicted, train.labels)
    if not is_main_process():
        return
    write_arrays(args.out, {"error": errors, "predicted": predicted.astype(np.int64)},
                 {"method": method.name, "dataset": prepared.dataset, "identification_epochs": config.epochs,
                  "error_set_pass": config.error_set_pass})

    names, groups = prepared.group_names, train.groups
    report = {"identification_epochs": config.epochs, "error_set_pass": config.error_set_pass,
              "error_set_size": int(errors.sum()),
              "error_set_fraction": float(errors.mean()),
              "error_rate_by_group": {names[int(g)]: float(errors[groups == g].mean()) for g in np.unique(groups)},
              "error_set_share_by_group": {names[int(g)]: float((groups[errors] == g).mean()) if errors.any() else 0.0
                                           for g in np.unique(groups)}}
    write_json(args.metrics, report)
    print(f"JTT error set: {report['error_set_size']:,} of {len(errors):,} training images "
          f"({report['error_set_fraction']:.2%}) misclassified after {config.epochs} epoch(s) ({config.error_set_pass} pass)")


if __name__ == "__main__":
    main()
