"""The groups file, the one contract between group inference and robust training, and what each group
inference writes into it, on cases computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from masktune.errors import UserError
from masktune.eval.clusters import groups_report
from masktune.group_inference.clusterfix import PseudoLabels, clusterfix_groups
from masktune.group_inference.exmap import dense_groups, exmap_groups
from masktune.group_inference.jtt import error_groups
from masktune.groups import make_groups, read_groups, write_groups

LABELS = {"train": np.array([0, 0, 0, 1, 1, 1, 1]), "val": np.array([0, 1, 1])}


def _groups(**kwargs):
    ids = {"train": np.array([0, 0, 1, 2, 2, 2, 3]), "val": np.array([1, 2, 3])}
    return make_groups(ids, LABELS, ["a0", "b0", "a1", "b1"], [0, 0, 1, 1], inference="test",
                       description="by hand", uses_group_labels=False, **kwargs)


def test_a_partition_names_no_minority_unless_its_method_does():
    assert _groups().minority == ()
    assert _groups(minority=[1, 3]).minority == (1, 3)  # JTT names its error groups
    assert _groups().within_class().tolist() == [0, 1, 0, 1]
    assert _groups().sizes("train").tolist() == [2, 1, 3, 1]


def test_groups_refine_the_classes_and_ids_stay_in_range():
    with pytest.raises(ValueError, match="train row 2 is in group 'a1' of class 1, but its label is 0"):
        make_groups({"train": np.array([0, 0, 2, 2, 2, 2, 3]), "val": np.array([1, 2, 3])}, LABELS,
                    ["a0", "b0", "a1", "b1"], [0, 0, 1, 1], inference="t", description="", uses_group_labels=False)
    with pytest.raises(ValueError, match="val group ids must be in 0..3"):
        make_groups({"train": np.array([0, 0, 1, 2, 2, 2, 3]), "val": np.array([1, 2, 4])}, LABELS,
                    ["a0", "b0", "a1", "b1"], [0, 0, 1, 1], inference="t", description="", uses_group_labels=False)


def test_the_file_round_trips_and_refuses_other_data(tmp_path):
    groups = _groups(minority=[1])
    write_groups(tmp_path / "g.h5", groups, {"dataset": "x"})
    back = read_groups(tmp_path / "g.h5", {"train": 7, "val": 3})
    assert back.train.tolist() == groups.train.tolist() and back.val.tolist() == groups.val.tolist()
    assert (back.names, back.classes, back.minority) == (groups.names, groups.classes, groups.minority)
    assert (back.inference, back.description, back.uses_group_labels) == ("test", "by hand", False)
    with pytest.raises(UserError, match="'train' has shape \\(7,\\), expected \\(8\\)"):
        read_groups(tmp_path / "g.h5", {"train": 8, "val": 3})


def test_jtt_groups_are_right_and_wrong_per_class_the_errors_the_minority():
    errors = {"train": np.array([False, True, False, False, False, True, False]),
              "val": np.array([True, False, False])}
    groups = error_groups(errors, LABELS, ("zero", "one"), "T 1")
    assert groups.names == ("zero_correct", "zero_error", "one_correct", "one_error")
    assert groups.train.tolist() == [0, 1, 0, 2, 2, 3, 2] and groups.val.tolist() == [1, 2, 2]
    assert groups.minority == (1, 3)
    assert np.isin(groups.train, groups.minority).tolist() == errors["train"].tolist()


def test_exmap_pseudo_groups_are_numbered_densely_in_id_order():
    # G-ExMap ids of 6 validation images as global_groups forms them: class 0 clusters 0, 2 (ids 0, 2);
    # class 1 clusters 1, 2 offset by 3 (ids 4, 5)
    val_ids, labels = np.array([0, 2, 2, 4, 5, 5]), np.array([0, 0, 0, 1, 1, 1])
    dense, names, classes = dense_groups(val_ids, labels, ("a", "b"), "global")
    assert dense.tolist() == [0, 1, 1, 2, 3, 3]
    assert names == ["a_global_cluster0", "a_global_cluster2", "b_global_cluster1", "b_global_cluster2"]
    assert classes == [0, 0, 1, 1]
    files = exmap_groups({"global": np.array([2, 0, 5, 4]), "local": np.array([0, 1, 3, 2])},
                         {"global": val_ids, "local": np.array([0, 1, 1, 2, 3, 3])},
                         {"train": np.array([0, 0, 1, 1]), "val": labels}, ("a", "b"), "exmap", "lrp")
    assert list(files) == ["exmap_global", "exmap_local"]
    assert files["exmap_global"].train.tolist() == [1, 0, 3, 2] and files["exmap_global"].val.tolist() == dense.tolist()


def test_clusterfix_groups_keep_the_class_times_k_numbering():
    pseudo = PseudoLabels(2, 2, {"train": np.array([0, 1, 1, 2, 3, 3, 3]), "val": np.array([0, 3, 2])})
    groups = clusterfix_groups(pseudo, LABELS, ("a", "b"), "erm features")
    assert groups.names == ("a_cluster0", "a_cluster1", "b_cluster0", "b_cluster1")
    assert groups.within_class()[groups.train].tolist() == (pseudo.ids["train"] % 2).tolist()  # the heads' targets


def test_the_report_says_how_well_each_true_group_is_found():
    groups = _groups(minority=[1, 3])
    true = {"train": np.array([0, 0, 2, 1, 1, 1, 3]), "val": np.array([2, 1, 3])}
    report = groups_report(groups, true, {0: "y0_a", 1: "y1_a", 2: "y0_b", 3: "y1_b"})
    assert report["minority"] == ["b0", "b1"]
    assert report["train"]["purity"] == 1.0 and report["train"]["true_group_found"]["y0_b"] == 1.0
    assert report["train"]["sizes"] == {"a0": 2, "b0": 1, "a1": 3, "b1": 1}
