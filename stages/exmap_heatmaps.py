"""Stage `exmap_heatmaps@<name>`: ExMap's heatmaps of the validation images.

The ERM model (its best validation-accuracy checkpoint, as the official scripts' best_acc_checkpoint.pt)
explains its predicted class on every validation image, in order: LRP relevance with zennit
(`exmap.heatmaps: lrp`, official) or XGradCAM (`xgradcam`), through the saliency pass every saliency
stage shares (masktune.saliency.compute: batched, resumable from its journal, data-parallel under
torchrun), stored as the method gives them (`maps`, `predicted`); `exmap_groups` reads them resized to
`exmap.heatmap_size` (0: kept) and flattened (masktune/group_inference/exmap.py cites the official lines).
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.prepared import open_prepared
from masktune.data.splits import open_split
from masktune.distributed import start_workers
from masktune.errors import run_stage
from masktune.group_inference.exmap_heatmaps import ExMapHeatmapsConfig, explainer
from masktune.models.checkpoint import load_checkpoint
from masktune.saliency.compute import Pass, compute_saliency_file, inputs_fingerprint

RESUME_EVERY = 4096  # heatmaps journaled at a time (a restart redoes fewer than these)


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the ExMap entry of methods.exmap: exmap")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--model", required=True, help="the best ERM checkpoint")
    parser.add_argument("--out", required=True, help="HDF5 file of the validation heatmaps")
    args = parser.parse_args()

    config = load_config(ExMapHeatmapsConfig, f"exmap_heatmaps@{args.name}")
    device = start_workers(config)
    prepared, spec = open_prepared(args.data)
    val = open_split(prepared, "val", spec.views, "eval", config.workers)
    model, _ = load_checkpoint(args.model, device)
    attrs = {"method": config.heatmaps, "input_size": list(val[0][0].shape[-2:]), "dataset": prepared.dataset,
             "gamma": config.gamma}
    run = Pass(config.batch_size, RESUME_EVERY, config.workers,
               inputs_fingerprint(args.model, args.data, config), attrs, desc=f"ExMap heatmaps ({config.heatmaps})")
    with explainer(model, config, device) as explain:
        compute_saliency_file(explain, val, args.out, run, device)
    print(f"ExMap: {config.heatmaps} heatmaps of {len(val):,} validation images -> {args.out}")


if __name__ == "__main__":
    main()
