"""Stage `label_groups@<true_groups | classes>`: the groups the prepared file already knows, as a groups
file (masktune/group_inference/labels.py): the true groups (label x spurious attribute: the supervised
references use them, ✓) or the classes (DFR with class labels only, ✗). Writes the groups file and its
diagnostic against the true groups.
"""
from __future__ import annotations

import argparse

from masktune.config.params import load_config
from masktune.data.prepared import PreparedFile
from masktune.errors import run_stage
from masktune.eval.clusters import write_groups_with_report
from masktune.group_inference.labels import LabelGroupsConfig, label_groups


@run_stage
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--groups", required=True, help="true_groups or classes")
    parser.add_argument("--data", required=True, help="prepared dataset (HDF5)")
    parser.add_argument("--out", required=True, help="the groups file (HDF5)")
    parser.add_argument("--metrics", required=True, help="JSON: the groups against the true groups")
    args = parser.parse_args()

    load_config(LabelGroupsConfig, f"label_groups@{args.groups}")  # its declared params (none of its own)
    prepared = PreparedFile(args.data)
    write_groups_with_report(label_groups(args.groups, prepared), args.out, args.metrics, prepared)


if __name__ == "__main__":
    main()
