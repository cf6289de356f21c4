"""The methods' shared pieces on small cases computed by hand: JTT's error set and upsampling, model
selection and its group-label use, the report's names and table."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit, ResampledSplit
from masktune.eval.models import reported_models
from masktune.eval.report import comparison_markdown, headline, method_title
from masktune.group_inference.jtt import error_set
from masktune.robust_train.upsample import upsampled_rows
from masktune.selection import GroupLabels, group_labels_used, selection_score


def test_error_set_is_the_misclassified_training_examples():
    labels = np.array([0, 1, 1, 0, 1])
    predictions = np.array([0, 0, 1, 1, 1])
    assert error_set(predictions, labels).tolist() == [False, True, False, True, False]
    with pytest.raises(ValueError, match="4 predictions for 5 labels"):
        error_set(predictions[:4], labels)


def test_upsampling_appends_the_error_set_upweight_times_as_the_official_code():
    errors = np.array([False, True, False, True, False])
    # rows 0..4 once, then rows 1 and 3 twice more (run_expt.py: train + Subset(train, error * 2))
    assert upsampled_rows(errors, 2).tolist() == [0, 1, 2, 3, 4, 1, 3, 1, 3]
    assert np.bincount(upsampled_rows(errors, 2)).tolist() == [1, 3, 1, 3, 1]  # λ_up + 1 times each
    assert upsampled_rows(errors, 0).tolist() == [0, 1, 2, 3, 4]  # λ_up = 0: plain ERM
    assert upsampled_rows(np.zeros(3, bool), 50).tolist() == [0, 1, 2]  # empty error set: plain ERM
    with pytest.raises(ValueError, match="upweight must be >= 0"):
        upsampled_rows(errors, -1)


def _split(n: int = 5) -> PixelSplit:
    images = np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3)
    labels = np.array([0, 1, 1, 0, 1][:n])
    return PixelSplit.from_samples(SampleSet(images=images, labels=labels, attributes=np.arange(n) % 2,
                                             source_index=np.arange(n)))


def test_an_upsampled_epoch_shows_each_error_image_upweight_times():
    base = _split()
    upsampled = ResampledSplit(base, upsampled_rows(np.array([False, True, False, True, False]), 2))
    assert len(upsampled) == 9
    seen = []
    for inputs, index in upsampled.batches(4, torch.device("cpu"), torch.Generator().manual_seed(0)):
        rows = (inputs[:, 0, 0, 0] * 255).round().long().tolist()  # each test image holds its row number
        assert upsampled.labels[index].tolist() == base.labels[rows].tolist()
        seen += rows
    assert sorted(seen) == [0, 1, 1, 1, 2, 3, 3, 3, 4]
    image, label, group, position = upsampled[6]  # position 6 is row 3 again
    assert (round(float(image[0, 0, 0]) * 255), label, group, position) == (3, 0, int(base.groups[3]), 6)


def test_selection_reads_group_labels_only_for_group_scores():
    val = _split()  # groups (2 * attribute + label): [0, 3, 1, 2, 1]
    predictions = np.array([0, 1, 1, 1, 0])  # wrong on rows 3 and 4

    def score(selection, **groups):
        return selection_score(val.labels, selection, **groups)(predictions)

    assert score("average") == {"accuracy": 0.6}
    assert score("worst_group", true_groups=val.groups) == {"accuracy": 0.6, "worst_group_accuracy": 0.0}
    # group accuracies: g0 1, g1 0.5 (rows 2 and 4), g2 0, g3 1 -> unweighted mean 0.625
    assert score("unbiased", true_groups=val.groups) == {"accuracy": 0.6, "unbiased_accuracy": 0.625}
    # classes: 0 (rows 0, 3) 0.5, 1 (rows 1, 2, 4) 2/3
    assert score("worst_class") == {"accuracy": 0.6, "worst_class_accuracy": 0.5}
    pseudo = np.array([0, 0, 1, 1, 1])  # the method's own groups: rows 2-4 have 1 of 3 right
    assert score("worst_pseudo_group", pseudo_groups=pseudo) == {"accuracy": 0.6,
                                                                 "worst_pseudo_group_accuracy": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match="unknown selection 'best'"):
        selection_score(val.labels, "best")


@pytest.mark.parametrize("selection,inferred,true", [("average", "✗/✗", "✓/✗"), ("worst_class", "✗/✗", "✓/✗"),
                                                     ("worst_pseudo_group", "✗/✗", "✓/✓"),
                                                     ("worst_group", "✗/✓", "✓/✓"), ("unbiased", "✗/✓", "✓/✓")])
def test_group_label_use_follows_the_groups_file_and_the_selection(selection, inferred, true):
    assert str(group_labels_used(False, selection)) == inferred  # inferred groups (JTT's, ExMap's, ...)
    assert str(group_labels_used(True, selection)) == true       # the true groups


def test_a_training_pass_records_each_prediction_before_its_step():
    """JTT's official error set: the argmax of each row during the training pass of epoch T (the objective
    hook `ErrorSetPass`, recorded only in its epoch)."""
    from masktune.group_inference.jtt import ErrorSetPass
    from masktune.train.loop import train_epoch

    data = _split()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # no step changes the model: the same predictions
    recorder = ErrorSetPass(len(data), record_epoch=1)
    cpu, generator = torch.device("cpu"), torch.Generator().manual_seed(0)
    train_epoch(model, optimizer, data, 2, generator, cpu, "t", objective=recorder)
    assert (recorder.predicted == -1).all()  # epoch 0 is not the one recorded
    stats = train_epoch(model, optimizer, data, 2, generator, cpu, "t", objective=recorder)
    model.train()
    with torch.no_grad():
        expected = model(torch.stack([data[i][0] for i in range(len(data))])).argmax(1).numpy()
    assert recorder.predicted.tolist() == expected.tolist()
    assert stats["accuracy"] == (recorder.predicted == data.labels).mean()


def test_the_report_lists_the_models_of_the_params_in_order_and_names_them_from_their_checkpoints():
    methods = {"erm": ("erm",), "masking": ("masktune",), "jtt": ("jtt",),
               "robust_train": {"jtt": {}, "groupdro_exmap": {}}, "last_layer": {"dfr_groups": {}}}
    assert {name: path.as_posix() for name, path in reported_models(methods, "models").items()} == {
        "erm": "models/erm_best.pt", "masktune": "models/masktune.pt", "jtt": "models/jtt.pt",
        "groupdro_exmap": "models/groupdro_exmap.pt", "dfr_groups": "models/dfr_groups.pt"}
    assert method_title("erm", {}) == "ERM"
    assert method_title("masktune", {"title": "MaskTune (Asgari et al., 2022)"}) == "MaskTune (Asgari et al., 2022)"
    assert method_title("mine", {}) == "mine"  # a checkpoint that records no title: its name
    from types import SimpleNamespace

    from masktune.last_layer.dfr import SPEC as DFR
    from masktune.robust_train.groupdro import SPEC as GROUPDRO
    from masktune.robust_train.upsample import SPEC as UPSAMPLE

    jtt, exmap = SimpleNamespace(inference="jtt", title="JTT's error set"), SimpleNamespace(inference="exmap",
                                                                                             title="G-ExMap's groups")
    assert UPSAMPLE.pair_title(jtt) == "JTT (Liu et al., 2021)"
    assert GROUPDRO.pair_title(exmap) == "GroupDRO with G-ExMap's groups"  # no paper pairs them: the trainer with the groups
    assert DFR.pair_title(exmap) == "DFR with G-ExMap's groups"  # the last layer's pairs are named by the same rule
    assert GroupLabels(training=True, model_selection=False).as_dict() == {"training": True, "model_selection": False}


def test_the_comparison_puts_group_label_use_beside_every_row():
    results = {"erm": {"test": {"accuracy": 0.9, "average_accuracy_train_weighted": 0.8, "unbiased_accuracy": 0.7,
                                "worst_group_accuracy": 0.5}},
               "jtt": {"test": {"accuracy": 0.85, "average_accuracy_train_weighted": 0.84, "unbiased_accuracy": 0.8,
                                "worst_group_accuracy": 0.75}}}
    top = headline(results, ("test",), "average_accuracy_train_weighted")
    assert top == {"erm": {"test": {"average": 0.8, "worst_group": 0.5}},
                   "jtt": {"test": {"average": 0.84, "worst_group": 0.75}}}
    table = comparison_markdown("waterbirds", results, {"erm": {"title": "ERM", "group_labels": "✗/✗"},
                                                        "jtt": {"title": "JTT", "group_labels": "✗/✓"}},
                                ("test",), "average_accuracy_train_weighted")
    assert "| ERM | ✗/✗ | 80.00% | 70.00% | 50.00% |" in table
    assert "| JTT | ✗/✓ | 84.00% | 80.00% | 75.00% |" in table
    assert "training group proportions" in table  # says which average it is
