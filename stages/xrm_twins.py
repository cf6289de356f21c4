"""Stage `xrm_twins@<name>`: XRM's inferred groups (Pezeshki et al., ICML 2024), with no group labels anywhere.

Twin networks (train_erm's, each on one random half of the training set) imitate each other's confident
held-out mistakes by flipping labels; after the last epoch every training and validation image is annotated
by the cross-mistake rule: per class, the images neither twin misclassifies and those one does (the
minority that GroupDRO, XRM's own second phase, and any other trainer read). masktune/group_inference/xrm.py
cites the official lines it follows. Writes the groups file and, for the report only, how the true groups
are represented in it.
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.distributed import select_device
from masktune.errors import run_stage
from masktune.eval.clusters import write_groups_with_report
from masktune.group_inference.xrm import XrmConfig, infer


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help="the XRM entry of methods.xrm: xrm")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--out", required=True, help="the groups file (HDF5): per class, agreed or mistaken")
    parser.add_argument("--metrics", required=True, help="JSON: the flip rate, the groups against the true groups")
    parser.add_argument("--live", required=True, help="dvclive folder of the twins' training")
    args = parser.parse_args()

    stage = f"xrm_twins@{args.name}"
    config = load_config(XrmConfig, stage)
    groups, summary, run = infer(config, select_device(), args.data, stage=stage, journal_at=args.out,
                                 live_dir=args.live)
    write_groups_with_report(groups, args.out, args.metrics, run.prepared, summary)
    mistakes = summary["mistake_fraction"]
    print(f"XRM: flip rate {summary['flip_rate']:.2%} after {config.epochs} epoch(s); cross-mistakes: "
          f"{mistakes['train']:.2%} of train, {mistakes['val']:.2%} of val"
          + ("; degenerate: some class has all its images in one environment (the official code would "
             "write no file)" if summary["degenerate"] else ""))


if __name__ == "__main__":
    main()
