"""How well inferred groups match the true groups: a diagnostic of group inference (JTT's error set,
ExMap's and ClusterFix's clusters), written beside every groups file. It reads the true group labels,
so it is only ever reported, never used to train or to select."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from masktune.data.prepared import PreparedFile
from masktune.groups import SPLITS, Groups, write_groups
from masktune.io.files import write_json


def purity(pseudo: np.ndarray, true_groups: np.ndarray, group_names: Mapping[int, str]) -> dict:
    """Per pseudo-group its size, make-up and purity (share of its majority true group); overall purity
    (size-weighted), adjusted Rand index, normalised mutual information; and per true group the share
    of its examples that sit in a pseudo-group where it is the majority (is a minority group found?)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters, majority_correct = {}, 0
    found = dict.fromkeys(np.unique(true_groups).tolist(), 0)
    for pid in np.unique(pseudo):
        members = true_groups[pseudo == pid]
        ids, counts = np.unique(members, return_counts=True)
        major = int(ids[counts.argmax()])
        majority_correct += int(counts.max())
        found[major] += int(counts.max())
        clusters[str(int(pid))] = {"size": len(members), "majority": group_names[major],
                                   "purity": float(counts.max() / len(members)),
                                   "make_up": {group_names[int(g)]: int(c) for g, c in zip(ids, counts)}}
    sizes = {g: int((true_groups == g).sum()) for g in found}
    return {"pseudo_groups": len(clusters), "purity": majority_correct / len(pseudo),
            "adjusted_rand_index": float(adjusted_rand_score(true_groups, pseudo)),
            "normalized_mutual_information": float(normalized_mutual_info_score(true_groups, pseudo)),
            "true_group_found": {group_names[g]: found[g] / sizes[g] for g in found},
            "clusters": clusters}


def groups_report(groups: Groups, true_groups: Mapping[str, np.ndarray], group_names: Mapping[int, str]) -> dict:
    """The diagnostic of a groups file on its train and val rows, with
    how it was inferred and its group sizes (`metrics/groups/<name>.json`)."""
    return {"inference": groups.inference, "description": groups.description,
            "uses_group_labels": groups.uses_group_labels, "groups": len(groups.names),
            "minority": [groups.names[g] for g in groups.minority],
            **{split: {"sizes": {groups.names[g]: int(n) for g, n in enumerate(groups.sizes(split)) if n},
                       **purity(groups.of(split), true_groups[split], group_names)}
               for split in SPLITS}}


def write_groups_with_report(groups: Groups, out: str | Path, metrics: str | Path, prepared: PreparedFile,
                             extra: Mapping | None = None) -> dict:
    """What every group-inference stage writes: the groups file and its diagnostic against the true
    groups (with the method's own `extra` figures); prints how well each true group was found."""
    write_groups(out, groups, {"dataset": prepared.dataset})
    true = {split: prepared.vectors(split, "groups")[0] for split in SPLITS}
    report = {**groups_report(groups, true, prepared.group_names), **(extra or {})}
    write_json(metrics, report)
    for split in SPLITS:
        found = ", ".join(f"{g} {share:.0%}" for g, share in report[split]["true_group_found"].items())
        print(f"{groups.inference} {split}: {report['groups']} groups, purity {report[split]['purity']:.2%}, "
              f"NMI {report[split]['normalized_mutual_information']:.3f}; true groups found: {found}")
    return report
