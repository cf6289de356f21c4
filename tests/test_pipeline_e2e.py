"""The whole DVC pipeline on a few thousand MNIST digits, in a throwaway git repository: the real
MNIST when it is beside the project, else its synthetic twin (the same IDX format).

Checks what a researcher relies on: one `dvc repro` runs every method of the `methods` param (ERM,
RandMask, MaskTune, JTT, DFR with classes and with true groups, G-ExMap, L-ExMap and ClusterFix) and
compares them; the same params rerun to the same bytes; a change to one method's params reruns that
method's stages and evaluate only (`jtt.upweight`, `randmask.seed`, `exmap.*`, `dfr.*`, `clusterfix.*`);
`-S finetune.lr=...` reruns both finetunes; `-S lr=...` reruns train_erm and everything after it
but not prepare or JTT; `dvc metrics diff` shows the change; removing a method from `methods` drops
its stages; a second `dvc repro` runs nothing; a bad param stops `dvc repro` with one clear line,
before any work when it belongs to a later stage.
"""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from conftest import MNIST_DIR
from fixtures_datasets import make_mnist
from scratch import RUNNING_STAGE, ScratchProject

pytestmark = pytest.mark.slow

MASKING = ["materialize_masked_dataset@randmask", "materialize_masked_dataset@masktune", "finetune@randmask",
           "finetune@masktune"]
JTT = ["jtt_identify@jtt", "jtt_retrain@jtt"]
DFR = ["dfr@dfr_classes", "dfr@dfr_groups"]
EXMAP = ["exmap_heatmaps@exmap", "exmap_groups@exmap", "exmap_dfr@exmap"]
CLUSTERFIX = ["clusterfix_features@clusterfix", "clusterfix_clusters@clusterfix", "clusterfix_train@clusterfix"]
REPORTS = ["evaluate", "selective"]  # both read every checkpoint in models/
ALL_STAGES = ["prepare", "train_erm", "compute_saliency", *MASKING, *JTT, *DFR, *EXMAP, *CLUSTERFIX, *REPORTS]
METHODS = ["erm", "randmask", "masktune", "jtt", "dfr_classes", "dfr_groups", "exmap_global", "exmap_local",
           "clusterfix"]
SUPERVISED = {"dfr_groups"}  # the supervised reference: true validation groups (✓/✓)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The real MNIST's first 3,000 / 1,000 digits where they are beside the project, else the
    synthetic twin (one or the other: each run is 11 minutes on a 2-core CI machine, and the readers
    of both are tested on their own in test_mnist_idx.py and test_biased_mnist.py)."""
    if (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        mnist_dir = MNIST_DIR
    else:
        mnist_dir = make_mnist(tmp_path_factory.mktemp("mnist"))
    small = {"prepare": {"biased_mnist": {"mnist_dir": str(mnist_dir), "train_limit": 3000, "test_limit": 1000,
                                          "val_size": 600}},
             "train_erm": {"epochs": 1}, "jtt": {"epochs": 2}, "clusterfix": {"epochs": 1},
             "selective": {"control_seed_offsets": []}}  # the control's training: tests/test_selective_e2e.py
    return ScratchProject(tmp_path_factory.mktemp("scratch") / "project", small)


def test_pipeline_reruns_exactly_what_a_change_affects(project):
    assert project.stages_run("repro") == ALL_STAGES
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())
    assert list(headline) == METHODS
    for model in headline.values():  # the headline: three numbers per test split, nothing else
        assert set(model) == {"test_original", "test_biased"}
        assert all(set(m) == {"average", "unbiased", "worst_group"} and 0 <= m["worst_group"] <= m["average"] <= 1
                   and m["worst_group"] <= m["unbiased"] <= 1
                   for m in model.values())
    details = json.loads((project.path / "metrics/evaluate/details.json").read_text())["methods"]
    for name, method in details.items():
        assert set(method["results"]) == {"test_original", "test_biased", "val"}
        assert method["results"]["test_biased"]["accuracy"] == headline[name]["test_biased"]["average"]
        assert method["group_labels"] == ("✓/✓" if name in SUPERVISED else "✗/✗")
    table = (project.path / "metrics/comparison.md").read_text()
    assert table.count("| ✗/✗ |") == len(METHODS) - 1 and table.count("| ✓/✓ |") == 1
    for name in ("randmask", "masktune"):  # the gallery: one PNG per class
        gallery = sorted((project.path / f"metrics/masks/{name}").iterdir())
        assert [p.name for p in gallery] == ["00_digits_0-4.png", "01_digits_5-9.png"]
        assert all(p.read_bytes()[:4] == b"\x89PNG" for p in gallery)
    project.commit("baseline")

    # Same params, same data: every output (checkpoints, HDF5, metrics, plots) is byte-identical.
    assert project.stages_run("repro", "--force", "--no-run-cache") == ALL_STAGES
    assert project.run("git", "status", "--porcelain").stdout == ""

    # One method's params rerun that method's stages and the reports only: three methods' params in one run
    # (each run costs DVC's start and the reports), the union of their stages and nothing else.
    errors = json.loads((project.path / "metrics/jtt/error_set.json").read_text())["error_set_size"]
    ran = project.stages_run("exp", "run", "-S", "jtt.upweight=3", "-S", "randmask.seed=1", "-S", "clusterfix.beta=0.5")
    assert sorted(ran[:-2]) == sorted(["materialize_masked_dataset@randmask", "finetune@randmask", "jtt_retrain@jtt",
                                       "clusterfix_train@clusterfix"]) and ran[-2:] == REPORTS
    live = json.loads((project.path / "metrics/jtt/train/metrics.json").read_text())
    assert live["upsampled_size"] == 2400 + 3 * errors  # the error set appended 3 times (official)

    # ExMap's params rerun ExMap's stages from the one that reads them, ClusterFix's ClusterFix's (both in
    # one run); DFR's, every DFR and ExMap's last.
    assert project.stages_run("exp", "run", "-S", "exmap.clusters=3", "-S", "clusterfix.clusters_per_class=3") == [
        "exmap_groups@exmap", "exmap_dfr@exmap", *CLUSTERFIX[1:], *REPORTS]
    clusters = json.loads((project.path / "metrics/clusterfix/pseudo_labels.json").read_text())
    assert clusters["clusters_per_class"] == 3 and len(clusters["train"]["clusters"]) == 6
    assert 0 < clusters["train"]["purity"] <= 1
    assert json.loads((project.path / "metrics/exmap/pseudo_groups.json").read_text())["clusters_chosen"] == {
        "y0": 3, "y1": 3, "all": 3}
    ran = project.stages_run("exp", "run", "-S", "exmap.heatmaps=xgradcam", "-S", "dfr.refits=3")
    assert sorted(ran[:-2]) == sorted([*DFR, *EXMAP]) and ran[-2:] == REPORTS

    assert project.stages_run("exp", "run", "-S", "finetune.lr=0.005") == [
        "finetune@randmask", "finetune@masktune", *REPORTS]
    assert json.loads((project.path / "metrics/finetune/masktune.json").read_text())["lr"] == 0.005

    before = json.loads((project.path / "metrics/evaluate.json").read_text())
    assert project.stages_run("exp", "run", "-S", "lr=0.02") == ["train_erm", "compute_saliency", *MASKING, *DFR,
                                                                  *EXMAP, *CLUSTERFIX, *REPORTS]
    diff = json.loads(project.dvc("metrics", "diff", "--all", "--json").stdout)["metrics/evaluate.json"]
    assert set(diff) == {f"{m}.{s}.{k}" for m in METHODS for s in ("test_original", "test_biased")
                         for k in ("average", "unbiased", "worst_group")}  # the headline only, every method side by side
    assert json.loads((project.path / "metrics/evaluate.json").read_text())["jtt"] == before["jtt"]  # not from ERM
    # ClusterFix trains from scratch too, but clusters the ERM model's features (its biased_mnist recipe)
    params_diff = json.loads(project.dvc("params", "diff", "--json").stdout)["params.yaml"]
    assert (params_diff["lr"]["old"], params_diff["lr"]["new"]) == (None, 0.02)  # null: recipes.biased_mnist.lr
    assert json.loads((project.path / "metrics/train_erm/metrics.json").read_text())["recipe"]["lr"] == 0.02

    # Dropping a method from the list drops its stages from the pipeline and its row from the report.
    assert project.stages_run("exp", "run", "-S", "methods.jtt=[]") == REPORTS
    assert list(json.loads((project.path / "metrics/evaluate.json").read_text())) == [m for m in METHODS if m != "jtt"]
    assert "jtt_retrain" not in project.dvc("stage", "list").stdout

    assert project.stages_run("repro") == []


def _repro_with_params(project, edit) -> subprocess.CompletedProcess:
    """`dvc repro` with params.yaml edited by `edit(values)`, restored afterwards."""
    params = (project.path / "params.yaml").read_text()
    edited = yaml.safe_load(params)
    edit(edited)
    (project.path / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    try:
        return project.dvc("repro", check=False)
    finally:
        (project.path / "params.yaml").write_text(params)


def test_bad_param_of_a_later_stage_stops_the_first_stage_before_any_work(project):
    """`-S lr=0.03 -S finetune.lr=abc`: train_erm (the first stage to rerun) stops at once, naming
    finetune.lr, instead of training and computing saliency first."""
    def edit(values):
        values["lr"], values["finetune"]["lr"] = 0.03, "abc"

    lock = (project.path / "dvc.lock").read_text()
    result = _repro_with_params(project, edit)
    assert result.returncode != 0
    assert RUNNING_STAGE.findall(result.stdout) == ["train_erm"]
    assert "error: params.yaml: finetune.lr must be a number > 0.0 or null, got 'abc'" in result.stderr
    assert "epoch 1/" not in result.stdout  # no training happened
    assert (project.path / "dvc.lock").read_text() == lock


def test_bad_param_stops_repro_with_one_clear_line(project):
    def edit(values):
        values["masktune"]["threshold_std"] = "high"

    result = _repro_with_params(project, edit)
    assert result.returncode != 0
    assert "error: params.yaml: masktune.threshold_std must be a number >= 0.0, got 'high'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
