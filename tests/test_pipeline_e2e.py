"""The whole DVC pipeline on the quick profile (2,000 + 1,000 MNIST digits), in a throwaway git repository: the real
MNIST when it is beside the project, else its synthetic twin (the same IDX format).

Checks what a researcher relies on: one `dvc repro` runs every method of the `methods` param (ERM,
RandMask, MaskTune, the group inference and every (groups, trainer) pair: JTT, ClusterFix, GroupDRO
with true and inferred groups, the DFR models, G-ExMap, L-ExMap) and compares them; the same params
rerun to the same bytes; a change to one method's params reruns that method's stages and the reports
only (`upsample.*`, `randmask.seed`, `cluster_reweight.*`, `exmap.*`, `clusterfix.*`, `dfr.*`), and a
groups file's consumers; `-S finetune.lr=...` reruns both finetunes; `-S lr=...` reruns train_erm and
everything after it but not prepare, JTT or the pairs on groups that do not come from ERM; `dvc metrics
diff` shows the change; a pair is added or removed with one `-S`; `-S clusterfix.backbone=ssl` trains
ClusterFix's self-supervised backbone and reruns ClusterFix's stages and their consumers only (and then
ERM's learning rate does not reach its clusters); editing one method's module reruns its stages only,
and editing another dataset's module nothing after `prepare`; a second `dvc repro` runs nothing; a bad
param stops `dvc repro` with one clear line, before any work when it belongs to a later stage.
"""
from __future__ import annotations

import contextlib
import json
import subprocess

import pytest
import yaml
from conftest import MNIST_DIR
from fixtures_datasets import make_mnist
from pipeline_checks import ALL_STAGES, METHODS, PAIRS, REPORTS, expected_group_labels
from scratch import RUNNING_STAGE, ScratchProject, merge

pytestmark = pytest.mark.slow

MODELS = ["erm", *METHODS["masking"], *METHODS["robust_train"], *METHODS["last_layer"]]
EXMAP = ["exmap_heatmaps@exmap", "exmap_groups@exmap", "exmap_extend@exmap"]
CLUSTERFIX = ["clusterfix_features@clusterfix", "clusterfix_clusters@clusterfix"]
LAST_LAYER = [pair for pair in PAIRS if pair.startswith("last_layer@")]
READS_PARAMS = [stage for stage in ALL_STAGES[1:] if not stage.startswith("label_groups@")]  # the labels read none


def _consumers(*groups: str) -> list[str]:
    """The pairs that read one of these groups files."""
    return [f"{kind}@{name}" for kind in ("robust_train", "last_layer") for name, pair in METHODS[kind].items()
            if pair["groups"] in groups]


def _ran(project, *args: str) -> tuple[list[str], list[str]]:
    """(stages run before the reports, sorted; the reports) of one dvc command that edits params: check_params,
    which checks the whole params file, runs first whatever the edit."""
    ran = project.stages_run(*args)
    assert ran[0] == "check_params", ran
    return sorted(ran[1:-len(REPORTS)]), ran[-len(REPORTS):]


def _importers(project, module: str) -> list[str]:
    """The stages whose dvc.yaml deps hold `module` (the file, or a folder above it), sorted."""
    from dvc.repo import Repo

    with Repo(str(project.path)) as repo:
        return sorted(stage.name for stage in repo.index.stages if any(
            module == dep.def_path or module.startswith(dep.def_path.rstrip("/") + "/") for dep in stage.deps))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The quick profile (`profile: quick`, params.yaml: the first 2,000 / 1,000 digits, one epoch per network in
    batches of 32) on the real MNIST where it is beside the project, else on the synthetic twin (one or the
    other: the readers of both are tested on their own in test_mnist_idx.py and test_biased_mnist.py); no
    selective-classification control (test_selective_e2e.py trains it)."""
    if (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        mnist_dir = MNIST_DIR
    else:
        mnist_dir = make_mnist(tmp_path_factory.mktemp("mnist"))
    params = {"profile": "quick", "prepare": {"biased_mnist": {"mnist_dir": str(mnist_dir)}},
              "selective": {"control_seed_offsets": []}}
    return ScratchProject(tmp_path_factory.mktemp("scratch") / "project", params)


# one stage of every kind: the data, ERM, the saliency, a masking method's masks and finetune, each group inference
# that computes (JTT's errors, ExMap's heatmaps and clusters, ClusterFix's features and clusters), each trainer and
# the last layer once (the other pairs run the same code on other groups), the reports
RERUN = ["prepare", "train_erm", "compute_saliency", "materialize_masked_dataset@masktune", "finetune@masktune",
         "jtt_identify@jtt", "exmap_heatmaps@exmap", "exmap_groups@exmap", "clusterfix_features@clusterfix",
         "clusterfix_clusters@clusterfix", "robust_train@jtt", "robust_train@clusterfix",
         "robust_train@groupdro_true_groups", "last_layer@exmap_global", "evaluate"]


def test_pipeline_reruns_exactly_what_a_change_affects(project):
    assert project.stages_run("repro") == ALL_STAGES
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())
    assert list(headline) == MODELS
    for model in headline.values():  # the headline: two numbers per test split, nothing else
        assert set(model) == {"test_original", "test_biased"}
        assert all(set(m) == {"average", "worst_group"} and 0 <= m["worst_group"] <= m["average"] <= 1
                   for m in model.values())
    details = json.loads((project.path / "metrics/evaluate/details.json").read_text())["methods"]
    for name, method in details.items():
        assert set(method["results"]) == {"test_original", "test_biased", "val"}
        assert method["results"]["test_biased"]["accuracy"] == headline[name]["test_biased"]["average"]
        assert method["group_labels"] == expected_group_labels(name)
    assert [name for name in MODELS if expected_group_labels(name) == "✓/✓"] == ["groupdro_true_groups", "dfr_groups"]
    table = (project.path / "metrics/comparison.md").read_text()
    assert table.count("| ✗/✗ |") == len(MODELS) - 2 and table.count("| ✓/✓ |") == 2
    assert "| GroupDRO, true groups (supervised reference) | ✓/✓ |" in table
    assert "| GroupDRO with G-ExMap's groups | ✗/✗ |" in table
    for name in ("randmask", "masktune"):  # the gallery: one PNG per class
        gallery = sorted((project.path / f"metrics/masks/{name}").iterdir())
        assert [p.name for p in gallery] == ["00_digits_0-4.png", "01_digits_5-9.png"]
        assert all(p.read_bytes()[:4] == b"\x89PNG" for p in gallery)
    project.commit("baseline")

    # Same params, same data: every output (checkpoints, HDF5, metrics, plots) is byte-identical, for one
    # stage of every kind (RERUN: 15 of the 37 stages, for CI time), each rerun from scratch by its command as
    # dvc.lock records it (what `dvc repro --force` runs, without DVC's start and lock rewrite per stage).
    _rerun_from_scratch(project, RERUN)
    assert json.loads(project.dvc("status", "--json").stdout) == {}  # every output's hash is the lock's
    project.run("git", "checkout", "--", ".")  # the .gitignore files DVC writes beside outputs it caches
    assert project.run("git", "status", "--porcelain").stdout == ""  # and nothing undeclared was written

    # A trainer's params rerun the pairs of that trainer, a masking method's its stages, the finetunes' rate both
    # finetunes, and the reports; ClusterFix on a self-supervised backbone its training stage (until now a constant
    # stub), ClusterFix's stages and the pairs on its clusters: five in one run (each run costs DVC's start and the
    # reports), the union of their stages (the ERM-feature variant is the default, above; which stages own each
    # param alone: `dvc status` below).
    errors = json.loads((project.path / "metrics/groups/jtt.json").read_text())["error_set_size"]
    ran, reports = _ran(project, "exp", "run", "-S", "upsample.upweight=3", "-S", "randmask.seed=1",
                        "-S", "cluster_reweight.beta=0.5", "-S", "clusterfix.backbone=ssl", "-S", "finetune.lr=0.005")
    upsample = [f"robust_train@{n}" for n, p in METHODS["robust_train"].items() if p["trainer"] == "upsample"]
    assert ran == sorted({"materialize_masked_dataset@randmask", "finetune@randmask", "finetune@masktune",
                          "robust_train@clusterfix", *upsample, "clusterfix_ssl@clusterfix", *CLUSTERFIX,
                          *_consumers("clusterfix")})
    assert reports == REPORTS
    live = json.loads((project.path / "metrics/robust_train/jtt/metrics.json").read_text())
    assert live["upsampled_size"] == 1500 + 3 * errors  # the error set appended 3 times to the 1,500 (official)
    assert json.loads((project.path / "metrics/groups/clusterfix.json").read_text())["backbone"] == "ssl"
    assert json.loads((project.path / "metrics/clusterfix_ssl/metrics.json").read_text())["recipe"]["epochs"] == 1
    assert json.loads((project.path / "metrics/finetune/masktune.json").read_text())["lr"] == 0.005
    diff = json.loads(project.dvc("metrics", "diff", "--all", "--json").stdout)["metrics/evaluate.json"]
    assert set(diff) == {f"{m}.{s}.{k}" for m in MODELS for s in ("test_original", "test_biased")
                         for k in ("average", "worst_group")}  # the headline only, every method side by side
    after = json.loads((project.path / "metrics/evaluate.json").read_text())
    untouched = [name for name in MODELS if _training_stage(name) not in ran]
    assert {"erm", "groupdro_true_groups", "dfr_groups"} <= set(untouched)
    assert all(after[name] == headline[name] for name in untouched)  # a model not retrained: the same figures
    params_diff = json.loads(project.dvc("params", "diff", "--json").stdout)["params.yaml"]
    assert (params_diff["finetune.lr"]["old"], params_diff["finetune.lr"]["new"]) == (None, 0.005)  # null: ERM's

    # A param belongs to the stages that read it, read from `dvc status` (what a run would start from; the run
    # above shows DVC carrying a rerun on through the data). ERM's learning rate (null: recipes.biased_mnist.lr)
    # is train_erm's only, not JTT's (from its own start); the finetunes' rate both finetunes'; ClusterFix's
    # clustering params its clustering stage's, not its features'; ExMap's heatmap method the two stages that
    # compute heatmaps (its clustering reruns through the data); DFR's params every last-layer pair's; the
    # profile every stage that reads a param, and the values of a profile not in use none. (That each stage
    # honours its param: tests/pipeline_checks.py, test_exmap.py, test_config.py.) A profile reaches the stages
    # through the file check_params writes (data/checked_names/_profile), so there the stale set is read after
    # check_params has run, and check_params is run again once the edit is undone.
    project.commit("five params")
    for edit, stale in [({"lr": 0.02}, ["train_erm"]),
                        ({"finetune": {"lr": 0.01}}, ["finetune@masktune", "finetune@randmask"]),
                        ({"clusterfix": {"clusters_per_class": 3}}, CLUSTERFIX[1:]),
                        ({"exmap": {"heatmaps": "xgradcam"}}, [EXMAP[0], EXMAP[2]]),
                        ({"dfr": {"refits": 3}}, LAST_LAYER),
                        ({"profiles": {"full": {"train_erm": {"epochs": 2}}}}, []),  # a profile not in use: nothing
                        ({"profile": "full"}, READS_PARAMS)]:  # every stage that reads a param, through the profile
        profiled = not {"profile", "profiles"}.isdisjoint(edit)
        with _params_edited(project, lambda values, edit=edit: merge(values, edit)):
            if profiled:
                project.dvc("repro", "--single-item", "check_params")
            expected = sorted(([] if profiled else ["check_params"]) + stale)
            assert sorted(json.loads(project.dvc("status", "--json").stdout)) == expected, edit
        if profiled:
            project.dvc("repro", "--single-item", "check_params")  # the stamps as they were (DVC's run cache)

    # A pair in or out is one -S (here one of each, in one run): its stage joins or leaves the pipeline, its row
    # the report (check_params, which reads `methods`, reruns first; its stamp is unchanged, so no other
    # method's stage reruns).
    added = "+methods.robust_train.groupdro_clusterfix={groups: clusterfix, trainer: groupdro, selection: average}"
    assert project.stages_run("exp", "run", "-S", added, "-S", "~methods.robust_train.jtt") == [
        "check_params", "robust_train@groupdro_clusterfix", *REPORTS]
    assert "GroupDRO with ClusterFix's clusters" in (project.path / "metrics/comparison.md").read_text()
    assert "jtt" not in json.loads((project.path / "metrics/evaluate.json").read_text())
    assert "robust_train@jtt" not in project.dvc("stage", "list").stdout

    assert project.stages_run("repro") == []


def _training_stage(model: str) -> str:
    """The stage that writes model `model`'s checkpoint."""
    if model == "erm":
        return "train_erm"
    if model in METHODS["masking"]:
        return f"finetune@{model}"
    return f"{'robust_train' if model in METHODS['robust_train'] else 'last_layer'}@{model}"


def _rerun_from_scratch(project, stages: list[str]) -> None:
    """Each stage's command as dvc.lock records it, in the project root, after removing its outputs (as `dvc repro
    --force` does: no stage may find its last run's files and resume from them)."""
    import shutil

    lock = yaml.safe_load((project.path / "dvc.lock").read_text())["stages"]
    for stage in stages:
        for out in lock[stage]["outs"]:
            path = project.path / out["path"]
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        result = subprocess.run(lock[stage]["cmd"], shell=True, cwd=project.path, env=project.env,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, (stage, result.stderr[-3000:])


@contextlib.contextmanager
def _params_edited(project, edit):
    """params.yaml of the scratch project edited by `edit(values)`, restored after."""
    path = project.path / "params.yaml"
    original = path.read_text()
    values = yaml.safe_load(original)
    edit(values)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


@contextlib.contextmanager
def _edited(project, module: str):
    """`module` of the scratch project with one more line, as a contributor's edit, restored after."""
    path = project.path / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        yield
    finally:
        path.write_text(original)


def test_editing_one_module_reruns_only_the_stages_that_import_it(project):
    """Precise deps: another dataset's module reruns `prepare` only, whose output is unchanged, so nothing
    after it; a group inference's module its own stages; a trainer's module the pairs that use it."""
    def stale() -> list[str]:
        return sorted(json.loads(project.dvc("status", "--json").stdout))

    project.stages_run("repro")  # up to date (a no-op after the test above)
    project.commit("current")
    groupdro = [f"robust_train@{n}" for n, p in yaml.safe_load((project.path / "params.yaml").read_text())[
        "methods"]["robust_train"].items() if p["trainer"] == "groupdro"]
    # check_params imports every method's and dataset's config (it checks the whole file): it reruns too
    with _edited(project, "masktune/group_inference/clusterfix.py"):
        assert stale() == _importers(project, "masktune/group_inference/clusterfix.py")
        assert set(CLUSTERFIX) | {"check_params"} <= set(stale())
    with _edited(project, "masktune/robust_train/groupdro.py"):
        assert stale() == sorted(["check_params", *groupdro])
    with _edited(project, "masktune/datasets/celeba.py"):
        assert stale() == ["check_params", "prepare"]
        assert project.stages_run("repro") == ["check_params", "prepare"]  # the same files: nothing after reruns
    assert set(project.stages_run("repro")) <= {"check_params", "prepare"}  # back (or from the run cache)


def test_adding_a_key_to_one_methods_config_reruns_only_its_stages_and_check_params(project):
    """Params live beside the code that reads them (issue 40): a new GroupDRO key is one field in
    masktune/robust_train/groupdro.py and one line in params.yaml, and makes stale only the pairs that train with
    GroupDRO and check_params (which checks the whole file), not the 30 other stages."""
    project.stages_run("repro")
    project.commit("current")
    groupdro = [f"robust_train@{n}" for n, p in yaml.safe_load((project.path / "params.yaml").read_text())[
        "methods"]["robust_train"].items() if p["trainer"] == "groupdro"]
    module, params = project.path / "masktune/robust_train/groupdro.py", project.path / "params.yaml"
    originals = module.read_text(), params.read_text()
    field = '    reweight_groups: bool = param("groupdro.reweight_groups", Bool())\n'
    assert field in originals[0]
    module.write_text(originals[0].replace(field, field + '    temperature: float = param("groupdro.temperature", '
                                           'Number(0.0))\n'))
    params.write_text(originals[1].replace("\ngroupdro:\n", "\ngroupdro:\n  temperature: 1.0\n", 1))
    try:
        assert sorted(json.loads(project.dvc("status", "--json").stdout)) == sorted(["check_params", *groupdro])
    finally:
        module.write_text(originals[0])
        params.write_text(originals[1])


def _repro_with_params(project, edit, *targets: str) -> subprocess.CompletedProcess:
    """`dvc repro [targets]` with params.yaml edited by `edit(values)`, restored afterwards."""
    with _params_edited(project, edit):
        return project.dvc("repro", *targets, check=False)


HOSTILE = "x;touch PWNED"


@pytest.mark.parametrize("targets", [("-s", f"robust_train@{HOSTILE}"), ()])
def test_a_name_with_shell_characters_never_reaches_a_shell(project, targets):
    """DVC pastes a pair's name into its stage's command unquoted. Its stamp from check_params is missing (a
    name outside the schema's alphabet gets none), so DVC refuses the stage before running its command, even
    when asked for that stage alone (`dvc repro -s`), where check_params does not run first; a whole `dvc
    repro` ends in check_params, naming the pair."""
    def edit(values):
        pairs = values["methods"]["robust_train"]  # an earlier test of the module may have removed jtt
        pairs[HOSTILE] = dict(next(iter(pairs.values())))

    lock = (project.path / "dvc.lock").read_text()
    result = _repro_with_params(project, edit, *targets)
    assert result.returncode != 0 and not (project.path / "PWNED").exists()
    assert not RUNNING_STAGE.findall(result.stdout) or RUNNING_STAGE.findall(result.stdout) == ["check_params"]
    if not targets:
        assert f"must be a mapping whose names are lower-case identifiers, got {HOSTILE!r}" in result.stderr
    assert (project.path / "dvc.lock").read_text() == lock


def test_bad_param_of_a_later_stage_stops_the_first_stage_before_any_work(project):
    """`-S lr=0.03 -S finetune.lr=abc`: check_params (the first stage to rerun) stops at once, naming
    finetune.lr, instead of training and computing saliency first."""
    def edit(values):
        values["lr"], values["finetune"]["lr"] = 0.03, "abc"

    lock = (project.path / "dvc.lock").read_text()
    result = _repro_with_params(project, edit)
    assert result.returncode != 0
    assert RUNNING_STAGE.findall(result.stdout) == ["check_params"]  # the whole file checked first (issue 40)
    assert "error: params.yaml: finetune.lr must be a number > 0.0 or null, got 'abc'" in result.stderr
    assert "epoch 1/" not in result.stdout  # no training happened
    assert (project.path / "dvc.lock").read_text() == lock


@pytest.mark.parametrize("edit, message", [
    (lambda values: values["methods"].update(masking=["masktune", "gradcam"]),
     "methods.masking must be a list of distinct names from 'masktune', 'randmask', got ['masktune', 'gradcam']"),
    (lambda values: values["methods"]["robust_train"]["clusterfix"].update(trainer="dfr"),
     "methods.robust_train.clusterfix.trainer must be one of 'cluster_reweight', 'groupdro', 'lff', 'upsample', got 'dfr'"),
])
def test_unknown_method_name_stops_repro_with_the_valid_names(project, edit, message):
    """An unknown name in `methods` ends `dvc repro` with the valid names, from stage check_params, which
    every method's stage depends on, before DVC would say "Parameters 'gradcam' are missing"."""
    lock = (project.path / "dvc.lock").read_text()
    result = _repro_with_params(project, edit)
    assert result.returncode != 0
    assert RUNNING_STAGE.findall(result.stdout) == ["check_params"]
    assert f"error: params.yaml: {message}" in result.stderr
    assert "are missing" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert (project.path / "dvc.lock").read_text() == lock


def test_bad_param_stops_repro_with_one_clear_line(project):
    def edit(values):
        values["masktune"]["threshold_std"] = "high"

    result = _repro_with_params(project, edit)
    assert result.returncode != 0
    assert "error: params.yaml: masktune.threshold_std must be a number >= 0.0, got 'high'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_file_size_limit_stops_every_hdf5_writing_stage_in_one_line_leaving_nothing(project):
    """`ulimit -f` on each stage that writes HDF5 (its command as dvc.lock records it): exit 2, one line naming
    the output and the limit, no temporary file, and the outputs of the last run untouched (HDF5 ended some of
    them in a segfault or a RuntimeError traceback before, issue 39)."""
    import resource
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    project.stages_run("repro")  # up to date: a test above stopped check_params on a bad param, and DVC removed its stamps
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())["stages"]
    writers = {name: stage["cmd"] for name, stage in lock.items()
               if any(out["path"].endswith(".h5") for out in stage.get("outs", []))}
    assert {"prepare", "compute_saliency", "materialize_masked_dataset@masktune", "jtt_identify@jtt",
            "exmap_heatmaps@exmap", "clusterfix_features@clusterfix", "evaluate"} <= set(writers)
    for name, cmd in writers.items():
        env = {**project.env, "PATH": f"{__import__('os').path.dirname(sys.executable)}:/usr/bin:/bin",
               "PYTHONDONTWRITEBYTECODE": "1"}  # a .pyc written under the limit is left truncated (CPython)
        result = subprocess.run(cmd, shell=True, cwd=project.path, capture_output=True, text=True, preexec_fn=limit,
                                env=env, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (name, result.stderr[-2000:])
        # a stage that loads in DataLoader workers is refused first (their shared-memory files hit the limit too)
        assert ("cannot write it, the file size limit was reached" in lines[0]
                or "a file size limit is set (ulimit -f: 16 KiB)" in lines[0]), (name, lines[0])
        leftovers = [p for folder in ("data", "models", "metrics") for p in (project.path / folder).rglob("*.tmp")]
        assert not leftovers, (name, leftovers)
    status = json.loads(project.dvc("status", "--json").stdout or "{}")
    assert not status, status  # every output as the last run left it
