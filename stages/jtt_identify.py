"""Stage `jtt_identify@<name>`: JTT's identification model and its error set, as a groups file.

As the official code (anniesch/jtt; masktune/group_inference/jtt.py cites the lines): a model trained by
ERM with JTT's recipe, from the same start as ERM (the train_erm network, ImageNet weights where the
recipe has them), without augmentation; after T epochs (`jtt.identification_epochs`), the predicted
class of each training image during the next epoch's training pass (official, `jtt.error_set_pass:
training`) or in an eval-mode pass (`eval`) gives the error set, the misclassified examples. Groups: per
class, right and wrong (the minority, which `upsample` appends λ_up times: JTT's final model). Writes the
groups file and, for the report only, how the true groups are represented in it (JTT's premise: the
minority groups fill the error set).
"""
from __future__ import annotations

import argparse

import numpy as np

from masktune.config.params import load_config
from masktune.distributed import is_main_process, start_workers
from masktune.errors import run_stage
from masktune.eval.clusters import write_groups_with_report
from masktune.group_inference.jtt import JttIdentifyConfig, identify


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the JTT entry of methods.jtt: jtt")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--out", required=True, help="the groups file (HDF5): per class, right or wrong")
    parser.add_argument("--metrics", required=True, help="JSON: the error set against the true groups")
    parser.add_argument("--live", required=True, help="dvclive folder of the identification model's training")
    args = parser.parse_args()

    stage = f"jtt_identify@{args.name}"
    config = load_config(JttIdentifyConfig, stage)
    groups, summary, run = identify(config, start_workers(config), args.data, stage=stage, out=args.out,
                                    live_dir=args.live)
    if not is_main_process():
        return
    errors, true = np.isin(groups.train, groups.minority), run.train.groups
    summary["error_rate_by_group"] = {run.prepared.group_names[int(g)]: float(errors[true == g].mean())
                                      for g in np.unique(true)}
    write_groups_with_report(groups, args.out, args.metrics, run.prepared, summary)
    print(f"JTT error set: {summary['error_set_size']:,} of {len(errors):,} training images "
          f"({summary['error_set_fraction']:.2%}) misclassified after {config.epochs} epoch(s) "
          f"({config.error_set_pass} pass)")


if __name__ == "__main__":
    main()
