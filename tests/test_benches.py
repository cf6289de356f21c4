"""Every script in bench/ runs in its quick mode (`--quick`: a few hundred digits, one epoch, the fewest
grid points), so a change that breaks a bench fails here rather than on the day someone needs its
figures. One test parametrised over the folder: a new bench is run without a new test, and must name
its checks in CHECKS. The checks read the bench's last line (its figures as one JSON object) for what
does not depend on speed or on the tiny data: structure, ranges, equalities the bench exists to show.
The full-size figures stay out of CI (the benches' docstrings give their commands).

The quick runs of the benches that drive DVC (DVC_BENCHES: one scratch pipeline or more each, about 21
minutes together on 2 cores) carry the `bench` marker, which the default run deselects (pyproject.toml) so
that CI stays well under 30 minutes; run them with `python -m pytest -n 2 -m bench` after changing a bench,
tests/scratch.py or a stage a bench reads."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MNIST_DIR, ROOT
from fixtures_datasets import make_mnist

BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "common.py")
DVC_BENCHES = {"clusterfix_backbones.py", "dvc_yaml_loader.py", "folder_speed.py", "jtt_sweep.py", "methods.py", "pipeline.py", "queue_grid.py",
               "resized_folder.py", "seed_sweep.py", "selective.py", "xrm_search.py", "lff_table.py"}


def _fraction(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


def _clusterfix_backbones(figures: dict) -> None:
    assert [(run["seed"], run["backbone"]) for run in figures["runs"]] == [(0, "erm"), (0, "ssl_denoising")]
    erm, ssl = figures["runs"]
    assert erm["worst_group"]["erm"] == ssl["worst_group"]["erm"]  # one ERM per seed (the run cache), one backbone apart
    assert ssl["ssl_seconds"] > 0  # the self-supervised network trained in its own stage
    for run in figures["runs"]:
        assert set(run["worst_group"]) == {"erm", "clusterfix", "dfr_clusterfix"}
        assert 0 <= run["nmi"] <= 1 and all(_fraction(v) for v in run["found"].values())
        assert set(run["found"]) == {"y0_no_square", "y0_square", "y1_no_square", "y1_square"}
        summary = figures["summary"][run["backbone"]]
        assert summary["nmi"]["mean"] == run["nmi"] and summary["nmi"]["std"] == 0.0  # one seed: its own figure


def _choice_audit(figures: dict) -> None:
    audit = figures["runs"]["committed"]  # --quick: the committed baseline's reports
    committed = json.loads((ROOT / "metrics/choice/details.json").read_text())
    assert audit["default_rule"] == committed["rule"] and list(audit["rules"]) == list(committed["chosen"])
    for rule, row in audit["rules"].items():
        assert row["reproduced"] and row["chosen"] == committed["chosen"][rule]  # choose's tie rules, unchanged
        assert row["chosen_without"] not in row["left_out"]
        for split, value in row["regret"].items():
            assert value >= 0 and row["regret_without"][split] >= 0
            assert round(value, 4) == row["regret_recorded"][split]  # choose's own audit figure
    assert "groupdro_xrm" in audit["rules"]["worst_group:xrm"]["left_out"]  # selected on XRM's validation groups


def test_choice_audit_leaves_out_the_model_selected_on_the_rules_statistic():
    """A hand-worked run: `b` kept the epoch of the best worst group of `g` and wins `worst_group:g` as run;
    with it left out the rule deploys `a`, 10 points better on test. `c` selected nothing and stays in."""
    sys.path.insert(0, str(ROOT / "bench"))
    from choice_audit import audit_run, self_selected_rule

    def method(selection, groups, test_worst):
        return {"selection": selection, "groups": groups,
                "results": {"test": {"accuracy": 0.95, "worst_group_accuracy": test_worst}}}

    methods = {"a": method("average", "classes", 0.9), "b": method("worst_pseudo_group", "g", 0.8),
               "c": method("last", "classes", 0.85)}
    assert [self_selected_rule(m) for m in methods.values()] == ["average", "worst_group:g", None]
    assert self_selected_rule(method("worst_pseudo_group", "classes", 0)) == "worst_class"
    rules = ("average", "worst_group:g")
    scores = {"a": {"average": 0.99, "worst_group:g": 0.7}, "b": {"average": 0.97, "worst_group:g": 0.9},
              "c": {"average": 0.98, "worst_group:g": 0.6}}
    choice = {"rule": "worst_group:g", "candidates": ["a", "b", "c"], "scores": scores,
              "chosen": {"average": "a", "worst_group:g": "b"},
              "audit": {rule: {"test": {"regret_vs_best_label_free": 0.0}} for rule in rules}}
    audit = audit_run(methods, choice)["rules"]
    assert audit["worst_group:g"]["reproduced"] and audit["worst_group:g"]["left_out"] == ["b"]
    assert audit["worst_group:g"]["chosen_without"] == "a"
    assert audit["worst_group:g"]["regret"]["test"] == pytest.approx(10.0)
    assert audit["worst_group:g"]["regret_without"]["test"] == pytest.approx(0.0)
    assert audit["average"]["left_out"] == ["a"] and audit["average"]["chosen_without"] == "c"  # c 0.98 > b 0.97


def _cpu_kernels(figures: dict) -> None:
    rows = {row["setting"]: row for row in figures["settings"]}
    assert list(rows)[:2] == ["default", "default, rerun"] and figures["steps"] == 4
    assert figures["rerun_equal"] and rows["default"]["digest"] == rows["default, rerun"]["digest"]  # deterministic
    assert all(len(row["digest"]) == 16 for row in rows.values())
    assert all(row["same_as_default"] == (row["digest"] == rows["default"]["digest"]) for row in rows.values())
    assert rows["1 thread"]["threads"] == 1 and rows["2 threads"]["threads"] == 2  # the setting reached the child
    assert rows["ATen capped at AVX2"]["aten_kernels"] in {"AVX2", "DEFAULT"}
    assert figures["machine"]["aten_kernels"] == rows["default"]["aten_kernels"]  # the bench's own kernels, recorded


def _dvc_yaml_loader(figures: dict) -> None:
    assert figures["status_equal"]  # the same answer from DVC whichever loader read its files
    assert list(figures["commands"]) == ["status"] and figures["rounds"] == 1
    status = figures["commands"]["status"]
    assert len(status["c_seconds"]) == len(status["pure_seconds"]) == 1 and status["ratio"] > 0


def _folder_speed(figures: dict) -> None:
    assert figures["figures_equal"]  # the same pixels through the folder's stored view: the same figures
    assert list(figures["folder_stages"]) == list(figures["builtin_stages"])  # the same stages, in the same order
    assert 0 < figures["outside_training_seconds"] < figures["builtin_seconds"] and figures["ratio"] > 0


def test_folder_speed_counts_every_network_fit_as_training():
    """The non-training share divides by the right stages: the two-ERM control (`train_erm_control@<offset>`)
    fits a network; the reports, heatmaps, clustering and DFR's logistic regressions do not."""
    sys.path.insert(0, str(ROOT / "bench"))
    from folder_speed import is_training

    fits = ["train_erm", "train_erm_control@1", "finetune@masktune", "robust_train@jtt", "jtt_identify@jtt",
            "clusterfix_ssl@clusterfix"]
    rest = ["prepare", "compute_saliency", "exmap_extend@exmap", "clusterfix_features@clusterfix",
            "last_layer@dfr_groups", "evaluate", "selective"]
    assert [is_training(stage) for stage in fits + rest] == [True] * len(fits) + [False] * len(rest)


def _jtt_sweep(figures: dict) -> None:
    assert [(p["identification_epochs"], p["upweight"]) for p in figures["grid"]] == [(1, 5), (1, 20)]
    assert all(_fraction(p["val_average"]) and p["error_set_size"] >= 0 for p in figures["grid"])
    assert figures["chosen"] == max(figures["grid"], key=lambda p: p["val_average"])


def _methods(figures: dict) -> None:
    assert [run["seed"] for run in figures["runs"]] == [0, 1]
    models = {"erm", "masktune", "jtt", "dfr_groups"}
    assert set(figures["runs"][0]["results"]) == models
    rows = figures["summary"]["rows"]
    assert rows and all(row["n"] == 2 for row in rows)  # every seed's experiment found and grouped
    assert {row["model"] for row in rows} == models
    for row in rows:  # mean and sample std of the two seeds' own figures
        values = [run["results"][row["model"]][row["split"]][row["measure"]] for run in figures["runs"]]
        assert row["mean"] == pytest.approx(sum(values) / 2)
        assert row["std"] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    gap = figures["summary"]["selection_gap"]
    assert set(gap) == {"erm", "jtt", "dfr_groups"}  # the models that select, each with its oracle twin
    for splits in gap.values():
        for columns in splits.values():
            assert columns["gap"]["values"] == pytest.approx(
                [own - oracle for own, oracle in zip(columns["own"]["values"], columns["oracle"]["values"])])
    assert set(figures["summary"]) >= {"purity/jtt", "purity/true_groups"}
    assert figures["summary"]["purity/true_groups"]["train"]["mean"] == 1.0  # the true groups against themselves


def _official_masking(figures: dict) -> None:
    assert figures["images"] == 450  # the first 600 digits, 150 of them drawn for validation
    # The official approach (grad-cam + NumPy + OpenCV) and ours mask the same pixels, up to maps that
    # tie the mean + 2 std threshold within float error.
    assert figures["pixels_differing"] < 1e-3
    assert figures["official_seconds"] > 0 and figures["ours_seconds"] > 0


def _pipeline(figures: dict) -> None:
    assert set(figures["accuracy"]) == {"erm", "masktune", "jtt"}
    assert all(_fraction(v) for model in figures["accuracy"].values() for v in model.values())
    # `-S upsample.upweight=...` reruns JTT's pair and the reports, nothing before them
    reran = {key.removeprefix("jtt_exp_run_stage_") for key in figures["seconds"] if key.startswith("jtt_exp_run_stage_")}
    assert reran == {"robust_train@jtt", "evaluate", "selective"}


def _queue_grid(figures: dict) -> None:
    assert figures["problems"] == [] and figures["identical"] == {"s0-lr0.01": True}
    assert figures["queued"]["s0-lr0.01"]["status"] == "Success" and figures["queued"]["s0-lr0.01"]["restored"] == []


def _saliency_throughput(figures: dict) -> None:
    assert [(r["model"], r["precision"]) for r in figures["rows"]] == [
        ("small_cnn", "float32"), ("small_cnn", "bfloat16"), ("resnet50", "float32"), ("resnet50", "bfloat16")]
    assert all(r["saliency"] > 0 and r["ratio"] == pytest.approx(r["saliency"] / r["inference"]) for r in figures["rows"])


def _resized_folder(figures: dict) -> None:
    """MaskTune masks a folder of 32 x 32 files read at 28 as the official code does, so its worst group is
    not more than 2 points below the same digits stored at 28 x 28 (issue 38: masking the stored view lost
    16 on a held-out folder, 46 on this one at --quick size; above it is the official masking's own margin,
    bench/resized_folder.py). The bound holds only where ERM learned the shortcut (the real MNIST: 10,000
    digits); on the synthetic twin's 1,000 the check is the structure."""
    assert figures["seeds"] == [0] and set(figures["runs"]) == {"stored_28", "resized"}
    for runs in figures["runs"].values():
        assert all(_fraction(run["results"][m][s][k]) for run in runs for m in ("erm", "masktune")
                   for s in ("test_biased", "test_original") for k in ("average", "worst_group"))
    if figures["train_images"] >= 5_000:  # 8,000 of the real MNIST's first 10,000 digits (2,000 go to val)
        gap = figures["summary"]["masktune_worst_group_gap"]
        assert all(gap[split]["mean"] >= -figures["tolerance"] for split in gap), gap


def _seed_sweep(figures: dict) -> None:
    assert [(r["epochs"], r["seed"]) for r in figures["runs"]] == [(1, 0), (1, 1)]
    for key, spread in figures["summary"]["1"].items():
        values = [r[key] for r in figures["runs"]]
        assert (spread["min"], spread["max"]) == (min(values), max(values)) and _fraction(spread["mean"])


def _selective(figures: dict) -> None:
    assert [run["seed"] for run in figures["runs"]] == [0, 1]
    assert {"masktune", "two_erm_control1"} <= set(figures["summary"])
    comparison = figures["masktune_minus_control"]
    assert comparison["aurc"]["differences"] == pytest.approx(
        [100 * (run["scores"]["masktune"]["aurc"] - run["scores"]["two_erm_control1"]["aurc"]) for run in figures["runs"]])


def _storage_scaling(figures: dict) -> None:
    assert {(r["N"], r["stage"]) for r in figures["rows"]} == {
        (n, stage) for n in (300, 600) for stage in ("compute_saliency", "materialize_masked_dataset")}
    raw = {row["option"]: row["raw_bytes_per_image"] for row in figures["options"]}
    assert raw == {  # 224 x 224 images, tiny_cnn's 7 x 7 target layer: the sizes behind the storage design
        "feature-map cams float32 (chosen)": 7 * 7 * 4, "full-resolution maps float32": 224 * 224 * 4,
        "full-resolution maps float16": 224 * 224 * 2, "bit-packed masks (chosen)": 224 * 224 / 8,
        "masked image copies uint8": 224 * 224 * 3}
    assert all(row["bytes_per_image"] > 0 for row in figures["rows"])


def _test_threads(figures: dict) -> None:
    assert figures["files"] == ["tests/test_splits.py"] and figures["ratio"] > 0


def _xgradcam_vs_library(figures: dict) -> None:
    float32 = [r for r in figures["rows"] if r["precision"] == "float32"]
    assert [r["model"] for r in float32] == ["small_cnn", "resnet50"]
    assert all(r["max_abs_diff"] <= 1e-5 for r in float32)  # our XGradCAM is the library's, in float32


def _xrm_search(figures: dict) -> None:
    assert [run["h"] for run in figures["runs"]] == [0, 1]
    assert all(_fraction(run["flip_rate"]) and run["score"] == (0.0 if run["degenerate"] else run["flip_rate"])
               for run in figures["runs"])
    assert figures["chosen"] == max(figures["runs"], key=lambda run: run["score"])  # the official rule


def _lff_table(figures: dict) -> None:
    assert [(run["ratio"], run["seed"]) for run in figures["runs"]] == [(0.99, 0), (0.99, 0)]  # ERM + LfF, then all
    lff_run, all_run = figures["runs"]
    assert set(lff_run["results"]) == {"erm", "lff", "erm_last"} and lff_run["results"]["lff"]["group_labels"] == "✗/✗"
    assert lff_run["results"]["erm_last"] == lff_run["results"]["erm"]  # one epoch: the best checkpoint is the last
    assert {"erm", "masktune", "lff", "dfr_groups"} <= set(all_run["results"])  # every default model at that ratio
    for run in figures["runs"]:
        assert all(_fraction(r["unbiased"]) and _fraction(r["worst_group"]) and r["worst_group"] <= r["unbiased"]
                   for r in run["results"].values())
    cell = figures["summary"]["lff"]["0.99"]["lff"]["unbiased"]
    assert cell["mean"] == lff_run["results"]["lff"]["unbiased"] and cell["std"] == 0.0  # one seed: its own figure


CHECKS = {"choice_audit.py": _choice_audit, "clusterfix_backbones.py": _clusterfix_backbones,
          "cpu_kernels.py": _cpu_kernels,
          "dvc_yaml_loader.py": _dvc_yaml_loader,
          "folder_speed.py": _folder_speed,
          "jtt_sweep.py": _jtt_sweep, "lff_table.py": _lff_table, "methods.py": _methods, "official_masking.py": _official_masking,
          "pipeline.py": _pipeline, "queue_grid.py": _queue_grid, "resized_folder.py": _resized_folder,
          "saliency_throughput.py": _saliency_throughput,
          "seed_sweep.py": _seed_sweep, "selective.py": _selective, "storage_scaling.py": _storage_scaling,
          "test_threads.py": _test_threads, "xgradcam_vs_library.py": _xgradcam_vs_library,
          "xrm_search.py": _xrm_search}


@pytest.fixture(scope="module")
def bench_mnist(tmp_path_factory) -> Path:
    """The real MNIST beside the project, else its synthetic twin (the quick runs read 800 digits)."""
    if (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        return MNIST_DIR
    return make_mnist(tmp_path_factory.mktemp("mnist"), n_train=1000, n_test=300)


def test_every_bench_has_its_checks():
    assert sorted(CHECKS) == BENCHES


@pytest.mark.parametrize("bench", [pytest.param(name, marks=[pytest.mark.slow, pytest.mark.bench])
                                   if name in DVC_BENCHES else name for name in BENCHES])
def test_bench_runs_quickly_and_its_figures_hold(bench, bench_mnist):
    script = ROOT / "bench" / bench
    extra = ["--mnist-dir", str(bench_mnist)] if "--mnist-dir" in script.read_text() else []
    result = subprocess.run([sys.executable, str(script), "--quick", *extra], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    CHECKS[bench](json.loads(result.stdout.strip().splitlines()[-1]))
