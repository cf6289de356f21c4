"""The label-free choice of the model to deploy (masktune/eval/choice.py, stage `choose`): its rules on
hand-worked predictions, its tie-breaking, its fallbacks, and the stage, which must give the same answer when
the true groups are taken out of its inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, committed_params
from scratch import run_stage_in_process

from masktune.data.prepared import write_prepared
from masktune.data.samples import SampleSet
from masktune.errors import UserError
from masktune.eval.choice import audit, choose, deployed_rule, inferred_groupings, rule_scores, same_partition
from masktune.eval.clusters import groups_report
from masktune.eval.logits import HELD_OUT_VAL, write_logits
from masktune.groups import make_groups, write_groups


def test_rule_scores_on_a_hand_worked_case():
    labels = np.array([0, 0, 0, 1, 1, 1])
    predictions = np.array([0, 0, 1, 1, 1, 0])
    xrm = np.array([0, 0, 1, 2, 2, 3])       # per class: agreed / mistaken
    jtt = np.array([0, 0, 0, 2, 2, 2])       # every row "correct": no mistaken group present
    scores = rule_scores(predictions, labels, {"xrm": xrm, "jtt": jtt})
    assert scores["average"] == pytest.approx(4 / 6)
    assert scores["worst_class"] == pytest.approx(2 / 3)          # both classes 2 of 3
    assert scores["worst_group:xrm"] == 0.0                        # group 1 (row 2) and group 3 (row 5) wrong
    assert scores["worst_group:jtt"] == pytest.approx(2 / 3)
    assert scores["mean_worst_group"] == pytest.approx((0 + 2 / 3) / 2)


def test_choose_prefers_the_score_then_the_average_then_the_earlier_model():
    scores = {"erm": {"r": 0.5, "average": 0.99}, "masktune": {"r": 0.9, "average": 0.95},
              "jtt": {"r": 0.9, "average": 0.96}}
    assert choose(scores, "r") == "jtt"                           # tie on r: the higher average
    scores["jtt"]["average"] = 0.95
    assert choose(scores, "r") == "masktune"                      # tie on both: the earlier model
    flat = {name: {"r": 0.7, "average": 0.9} for name in ("erm", "masktune")}
    assert choose(flat, "r") == "erm"                             # a rule that cannot separate them keeps ERM
    assert choose({"erm": {"r": float("nan"), "average": 0.9}, "dfr": {"r": 0.1, "average": 0.5}}, "r") == "dfr"


def test_the_first_computable_rule_is_deployed_and_an_unknown_one_refused():
    preferred = ("worst_group:xrm", "mean_worst_group", "worst_class")
    assert deployed_rule(preferred, ("jtt", "xrm")) == "worst_group:xrm"
    assert deployed_rule(preferred, ("jtt",)) == "mean_worst_group"    # a run without XRM
    assert deployed_rule(preferred, ()) == "worst_class"                # no inferred grouping at all
    with pytest.raises(UserError, match="unknown rule 'worst_grup:xrm'"):
        deployed_rule(("worst_grup:xrm",), ("xrm",))
    with pytest.raises(UserError, match=r"none of worst_group:xrm \(its inferred groupings: jtt\)"):
        deployed_rule(("worst_group:xrm",), ("jtt",))


def test_audit_regret_against_the_best_label_free_and_the_best_model():
    results = {name: {"test": {"accuracy": acc, "worst_group_accuracy": worst}} for name, acc, worst in
               (("erm", 0.99, 0.50), ("masktune", 0.97, 0.90), ("groupdro_true_groups", 0.96, 0.95))}
    report = audit("erm", ["erm", "masktune"], results, ["test"], "worst_group_accuracy")["test"]
    assert report == {"average": 0.99, "worst": 0.50, "regret_vs_best_label_free": pytest.approx(40.0),
                      "regret_vs_best": pytest.approx(45.0)}


def test_inferred_groupings_are_those_of_label_free_models_and_partitions_compare_by_sets():
    models = {"erm": {"group_labels": "✗/✗", "groups": None},
              "groupdro_true_groups": {"group_labels": "✓/✓", "groups": "true_groups"},
              "dfr_groups": {"group_labels": "✓/✓", "groups": "true_groups"},
              "groupdro_xrm": {"group_labels": "✗/✗", "groups": "xrm"}, "dfr_xrm": {"group_labels": "✗/✗", "groups": "xrm"},
              "jtt": {"group_labels": "✗/✗", "groups": "jtt"}}
    assert inferred_groupings(models) == ("xrm", "jtt")
    assert same_partition(np.array([0, 0, 1, 1]), np.array([5, 5, 2, 2]))
    assert not same_partition(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert not same_partition(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]))


# ---- the stage: the true groups out of its inputs, the same answer ----

VAL_LABELS = np.array([0] * 10 + [1] * 10)
MINORITY = np.array([0, 1, 10, 11])  # the rows against the shortcut (attribute != label)


def _prepared(path: Path, attributes: np.ndarray) -> None:
    def split(labels, attrs):
        n = len(labels)
        return SampleSet(np.zeros((n, 2, 2, 3), dtype=np.uint8), labels, attrs, np.arange(n))
    train_labels = np.array([0, 1] * 10)
    write_prepared(path, {"train": split(train_labels, train_labels), "val": split(VAL_LABELS, attributes),
                          "test": split(VAL_LABELS, attributes)},
                   {"dataset": "cmnist", "num_classes": 2, "class_names": json.dumps(["0", "1"]),
                    "group_names": json.dumps({"0": "a", "1": "b", "2": "c", "3": "d"}), "groups_known": True})


def _logits(predictions: np.ndarray) -> np.ndarray:
    return np.eye(2, dtype=np.float32)[predictions]


def _fixture(tmp_path: Path) -> Path:
    """A project folder with what `choose` reads: three label-free models (ERM follows the shortcut, MaskTune
    gets the minority right, DFR on XRM's groups whose val logits are training predictions but whose
    cross-fitted ones are mediocre) and a GroupDRO on the true groups (✓, best of all)."""
    project = tmp_path / "project"
    (project / "data/groups").mkdir(parents=True)
    (project / "metrics/evaluate").mkdir(parents=True)
    values = committed_params()
    (project / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    shutil.copy(ROOT / "dvc.yaml", project)
    attributes = VAL_LABELS.copy()
    attributes[MINORITY] = 1 - VAL_LABELS[MINORITY]
    _prepared(project / "data/prepared.h5", attributes)
    shortcut = attributes  # ERM predicts the attribute
    truth = VAL_LABELS.copy()
    mediocre = VAL_LABELS.copy()
    mediocre[[0, 10]] = 1 - VAL_LABELS[[0, 10]]
    logits = {"erm": {"val": _logits(shortcut)}, "masktune": {"val": _logits(truth)},
              "dfr_xrm": {"val": _logits(truth), HELD_OUT_VAL: _logits(mediocre)},
              "groupdro_true_groups": {"val": _logits(truth)}}
    checkpoints = {}
    for name in logits:
        checkpoints[name] = project / f"{name}.pt"
        checkpoints[name].write_bytes(name.encode())
    write_logits(project / "data/evaluate/logits.h5", logits, checkpoints)
    xrm_val = 2 * VAL_LABELS + np.isin(np.arange(20), MINORITY)  # XRM found the minority
    labels = {"train": np.array([0, 1] * 10), "val": VAL_LABELS}
    xrm = make_groups(
        {"train": 2 * labels["train"], "val": xrm_val}, labels, ["0_agree", "0_mistake", "1_agree", "1_mistake"],
        [0, 0, 1, 1], inference="xrm", description="", uses_group_labels=False, minority=[1, 3])
    write_groups(project / "data/groups/xrm.h5", xrm)
    true = {"train": 2 * labels["train"], "val": 2 * VAL_LABELS + (attributes != VAL_LABELS)}
    (project / "metrics/groups").mkdir(parents=True)  # the diagnostic xrm_twins writes beside its groups file
    (project / "metrics/groups/xrm.json").write_text(json.dumps(groups_report(xrm, true, dict(enumerate("abcd")))))
    write_groups(project / "data/groups/true_groups.h5", make_groups(
        {"train": 2 * labels["train"], "val": 2 * VAL_LABELS + (attributes != VAL_LABELS)}, labels,
        ["a", "b", "c", "d"], [0, 0, 1, 1], inference="true_groups", description="", uses_group_labels=True))
    test = {name: {"test": {"accuracy": acc, "worst_group_accuracy": worst}} for name, acc, worst in
            (("erm", 0.9, 0.1), ("masktune", 0.95, 0.9), ("dfr_xrm", 0.93, 0.8), ("groupdro_true_groups", 0.96, 0.95))}
    records = {"erm": ("✗/✗", None, False), "masktune": ("✗/✗", None, False), "dfr_xrm": ("✗/✗", "xrm", True),
               "groupdro_true_groups": ("✓/✓", "true_groups", False)}
    details = {"dataset": "cmnist", "methods": {name: {"title": name.upper(), "group_labels": labels_used,
                                                       "groups": groups, "fitted_on_val": fitted, "results": test[name]}
                                                for name, (labels_used, groups, fitted) in records.items()}}
    (project / "metrics/evaluate/details.json").write_text(json.dumps(details))
    return project


COMMAND = ("python -m stages.choose --data data/prepared.h5 --logits data/evaluate/logits.h5 "
           "--evaluation metrics/evaluate/details.json --groups data/groups --group-reports metrics/groups "
           "--metrics metrics/choice.json "
           "--report metrics/choice.md --details metrics/choice/details.json")


def _run(project: Path, monkeypatch) -> tuple[dict, dict]:
    monkeypatch.chdir(project)
    run_stage_in_process(COMMAND)
    return (json.loads((project / "metrics/choice.json").read_text()),
            json.loads((project / "metrics/choice/details.json").read_text()))


def test_choose_deploys_by_xrms_groups_and_reads_no_true_group(tmp_path, monkeypatch):
    project = _fixture(tmp_path)
    headline, details = _run(project, monkeypatch)
    assert headline["rule"] == "worst_group:xrm" and headline["model"] == "masktune"
    assert headline["test"] == {"average": 0.95, "worst": 0.9, "regret_vs_best_label_free": pytest.approx(0.0),
                                "regret_vs_best": pytest.approx(5.0)}
    assert details["candidates"] == ["erm", "masktune", "dfr_xrm"]   # the ✓ model is never one
    assert details["left_out"] == {"groupdro_true_groups": "used group labels"}
    assert details["held_out_val"] == ["dfr_xrm"]
    # DFR by its cross-fitted logits (2 of 20 wrong, one per xrm mistake group of 2), not its training predictions
    assert details["scores"]["dfr_xrm"]["average"] == pytest.approx(0.9)
    assert details["scores"]["dfr_xrm"]["worst_group:xrm"] == pytest.approx(0.5)
    assert details["chosen"]["average"] == "masktune" and details["scores"]["erm"]["worst_group:xrm"] == 0.0
    assert "**worst_group:xrm** | MASKTUNE" in (project / "metrics/choice.md").read_text()
    # XRM's diagnostic, as xrm_twins wrote it, in the committed report: its val groups hold the minority (b, d) apart
    assert details["group_inference"]["xrm"]["val"]["purity"] == 1.0
    assert "| `xrm` | 4 | 100.00 | 100.00 | a 100%, c 100% |" in (project / "metrics/choice.md").read_text()

    # the true groups out of the inputs: their groups file gone, the val and test groups of the prepared file
    # scrambled. The choice and every score are the same (the audit reads evaluate's figures, unchanged).
    (project / "data/groups/true_groups.h5").unlink()
    scrambled = np.random.default_rng(0).permutation(VAL_LABELS)
    _prepared(project / "data/prepared.h5", scrambled)
    headline_again, details_again = _run(project, monkeypatch)
    assert (headline_again, details_again) == (headline, details)


def test_choose_names_a_missing_diagnostic(tmp_path, monkeypatch, capsys):
    project = _fixture(tmp_path)
    (project / "metrics/groups/xrm.json").unlink()
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit):
        run_stage_in_process(COMMAND)
    assert "error: metrics/groups/xrm.json is missing, though its groups file is there" in capsys.readouterr().err


def test_choose_refuses_a_label_free_model_on_a_file_made_with_group_labels(tmp_path, monkeypatch, capsys):
    project = _fixture(tmp_path)
    shutil.copy(project / "data/groups/true_groups.h5", project / "data/groups/xrm.h5")
    monkeypatch.chdir(project)
    with pytest.raises(SystemExit) as stopped:
        run_stage_in_process(COMMAND)
    assert stopped.value.code == 2
    assert "error: data/groups/xrm.h5 was made with group labels" in capsys.readouterr().err
    assert not (project / "metrics/choice.json").exists()
