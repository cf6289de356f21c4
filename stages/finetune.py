"""Stage `finetune@<method>`: continue the last ERM checkpoint on a masking method's masked training set.

As the official `finetune()` (src/methods/base_method.py): the last ERM checkpoint with its optimizer state,
`finetune.epochs` (1) epoch on the masked images at the same learning rate unless `finetune.lr` overrides
it (masktune/train/finetune.py). On the one training function: dvclive curves, resumable after preemption
(its epoch journal beside the checkpoint), data-parallel when `distributed` asks (rank 0 writes the outputs).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.masks import masks_method
from masktune.distributed import is_main_process, start_workers
from masktune.errors import UserError, run_stage
from masktune.io.files import write_json
from masktune.train.finetune import FinetuneConfig, finetune


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", required=True, help="the masking method: masktune, randmask")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5): train and val splits")
    parser.add_argument("--masks", required=True, help="masks of the training images (HDF5)")
    parser.add_argument("--checkpoint", required=True, help="the last ERM checkpoint")
    parser.add_argument("--out", required=True, help="fine-tuned checkpoint to write")
    parser.add_argument("--metrics", required=True, help="JSON: the finetune's learning rate and val accuracy")
    parser.add_argument("--live", required=True, help="dvclive folder (metrics.json, plots/)")
    args = parser.parse_args()

    config = load_config(FinetuneConfig, f"finetune@{args.method}")
    made_by = masks_method(args.masks)
    if made_by != args.method:
        raise UserError(f"{args.masks}: masks of {made_by}, not of {args.method}")
    report = finetune(config, start_workers(config), method=args.method, data=args.data, masks=args.masks,
                      checkpoint=args.checkpoint, out=args.out, live_dir=args.live)
    if not is_main_process():
        return
    write_json(args.metrics, report)
    print(f"finetune ({report['method']} masks, lr {report['lr']}): val acc {report['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
