"""Stage `jtt_retrain@<method>`: JTT's final model, ERM on the training set with the error set upsampled.

The error set is appended `jtt.upweight` (λ_up) times to the training set, as the official code
(masktune/methods/jtt.py `upsampled_rows`); the model starts as ERM's does and trains `jtt.epochs`
epochs with JTT's recipe, without augmentation (official).
The checkpoint kept is the best by `jtt.selection`: average validation accuracy (default, no group
labels: ✗) or worst-group validation accuracy (the paper's tuning: ✓), which the checkpoint records
for the report.
"""
from __future__ import annotations

import argparse

from masktune.config.stages import load_stage_config
from masktune.data.splits import ResampledSplit, open_split
from masktune.datasets import open_prepared
from masktune.distributed import start_workers
from masktune.errors import run_stage
from masktune.io.hdf5 import read_arrays
from masktune.methods import get_method
from masktune.methods.jtt import upsampled_rows
from masktune.methods.selection import SELECT_BY, selection_score
from masktune.models.precision import MixedPrecision
from masktune.models.pretrained import initial_model
from masktune.train.fit import finish_journal, fit, live_folder, resume_key
from masktune.train.loop import make_optimizer, seed_everything


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the JTT entry of the registry: jtt")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--error-set", required=True, help="the error set of jtt_identify (HDF5)")
    parser.add_argument("--out", required=True, help="checkpoint of the selected epoch")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    method = get_method(args.method)
    config = load_stage_config(f"jtt_retrain@{method.name}")
    device = start_workers(config)
    generator = seed_everything(config.seed)
    prepared, spec = open_prepared(args.data)
    train = open_split(prepared, "train", spec.views, "eval", config.workers)  # no augmentation (official)
    errors = read_arrays(args.error_set, {"error": (len(train),)})["error"]  # UserError unless one per row
    upsampled = ResampledSplit(train, upsampled_rows(errors, config.upweight))
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    model = initial_model(config.arch, prepared.num_classes, config.pretrained, config.weights_path, device)
    optimizer = make_optimizer(model, config.lr, config.momentum, config.weight_decay)
    group_labels = method.group_labels_for(config.selection)
    print(f"JTT: {int(errors.sum()):,} error-set images appended {config.upweight} times -> {len(upsampled):,} "
          "images per epoch; "
          f"selection by {config.selection} validation accuracy (group labels {group_labels})")
    resume = resume_key(f"jtt_retrain@{method.name}", config, device, args.data, args.error_set)
    with live_folder(args.live) as live:
        best = fit(model, optimizer, upsampled, val, epochs=config.epochs, batch_size=config.batch_size,
                   eval_batch_size=config.eval_batch_size, generator=generator, device=device, live=live,
                   best_path=args.out, score=selection_score(val, config.selection),
                   select_by=SELECT_BY[config.selection], name="JTT",
                   checkpoint_info={"arch": config.arch, "num_classes": prepared.num_classes,
                                    **method.checkpoint_info(group_labels)}, resume=resume,
                   amp=MixedPrecision(config.train_precision, device))
        live.summary["best"] = best
        live.summary["error_set_size"] = int(errors.sum())
        live.summary["upsampled_size"] = len(upsampled)
    finish_journal(args.out, resume)


if __name__ == "__main__":
    main()
