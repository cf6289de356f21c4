"""The groups a prepared file already knows: the true groups (label x spurious attribute, ✓: the
supervised references, DFR and GroupDRO with group labels) and the classes (one group per class, ✗:
DFR with class labels only). Stage `label_groups@<true_groups | classes>`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from masktune.data.prepared import PreparedFile
from masktune.groups import SPLITS, Groups, make_groups
from masktune.methods import Spec

KINDS = {"true_groups": "the true groups (label x spurious attribute) of the prepared file",
         "classes": "the classes as groups (no group labels)"}
TITLES = {"true_groups": "the true groups", "classes": "the classes"}


@dataclass(frozen=True, kw_only=True)
class LabelGroupsConfig:
    """The true groups or the classes as a groups file: no param of its own (the prepared file has them)."""


SPEC = Spec(name="labels", role="group_inference", family="labels", title="the labels", names=tuple(KINDS),
            configs={"label_groups": LabelGroupsConfig}, groups_files=lambda name: (name,), groups_titles=TITLES)


def label_groups(kind: str, prepared: PreparedFile) -> Groups:
    """The groups file content of `kind` ("true_groups" or "classes") for the prepared data."""
    if kind not in KINDS:
        raise ValueError(f"unknown label groups {kind!r} (known: {', '.join(KINDS)})")
    labels, true = {}, {}
    for split in SPLITS:
        labels[split], true[split] = prepared.vectors(split, "labels", "groups")
    num_classes = prepared.num_classes
    if kind == "classes":
        return make_groups(labels, labels, prepared.class_names, range(num_classes), inference=kind,
                           description=KINDS[kind], uses_group_labels=False, title=TITLES[kind])
    count = max([*prepared.group_names, *(int(ids.max()) for ids in true.values() if len(ids))]) + 1
    names = [prepared.group_names.get(g, f"group_{g}") for g in range(count)]
    # prepared files number a group attribute * num_classes + label
    return make_groups(true, labels, names, np.arange(count) % num_classes, inference=kind,
                       description=KINDS[kind], uses_group_labels=True, title=TITLES[kind])
