"""Params: each stage gets a typed, frozen config from the keys it declares, each checked by the field its
module declares beside the code that reads it, with the recipe rule applied; `check_params` validates the
whole file against every declared field once; the lists derive from the registries."""
from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, committed_params

from masktune.config.files import PROFILE_STAMP
from masktune.config.params import config_params, load_config
from masktune.datasets import load_prepare_config
from masktune.errors import UserError
from masktune.registry import family_names, pipeline_configs, specs, stage_config, trainer_names
from stages.check_params import check, schema


def _write(tmp_path, values: dict, dvc_text: str | None = None):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text(dvc_text or (ROOT / "dvc.yaml").read_text())
    return tmp_path / "params.yaml", tmp_path / "dvc.yaml"


def _load(tmp_path, stage: str, values: dict, dvc_text: str | None = None):
    files = _write(tmp_path, values, dvc_text)
    if stage == "prepare":
        return load_prepare_config(*files)
    return load_config(stage_config(stage, values["methods"]), stage, *files)


def _load_files(stage: str, folder):
    return load_config(stage_config(stage, {}), stage, folder / "params.yaml", folder / "dvc.yaml")


def _set(values: dict, key: str, value) -> dict:
    values = copy.deepcopy(values)
    *parents, leaf = key.split(".")
    node = values
    for part in parents:
        node = node[part]
    node[leaf] = value
    return values


def _stages(methods: dict) -> list[str]:
    """Every stage DVC expands from dvc.yaml for `methods` (and the control's offset 1)."""
    from test_architecture import stage_instances

    return list(stage_instances(yaml.safe_load((ROOT / "dvc.yaml").read_text()),
                                {**committed_params(), "methods": methods}))


def test_every_stage_resolves_the_committed_defaults_with_the_recipe(tmp_path):
    methods = committed_params()["methods"]
    stages = [stage for stage in _stages(methods) if stage != "check_params"] + ["train_erm_control@1"]
    configs = {stage: _load(tmp_path, stage, committed_params()) for stage in stages}
    for stage, config in configs.items():  # every field resolved to a value of its declared type
        for field in dataclasses.fields(config):
            declared = field.metadata.get("field")
            if declared is not None and not declared.nullable:
                assert getattr(config, field.name) is not None, f"{stage}.{field.name}"
    erm = configs["train_erm"]  # recipes.biased_mnist (bash_files/mnist_masktune.sh)
    assert (erm.arch, erm.lr, erm.epochs, erm.batch_size, erm.momentum, erm.weight_decay) == \
        ("small_cnn", 0.01, 5, 128, 0.9, 0.0001)
    assert (erm.eval_batch_size, configs["evaluate"].eval_batch_size, configs["finetune@masktune"].eval_batch_size) == \
        (1024, 1024, 1024)
    assert (configs["compute_saliency"].batch_size, configs["compute_saliency"].workers) == (256, 0)
    assert configs["finetune@masktune"] == configs["finetune@randmask"]  # one finetune for both masking methods
    control = configs["train_erm_control@1"]  # the control: ERM's params, its seed train_erm.seed + 1
    assert dataclasses.asdict(control) == {**dataclasses.asdict(erm), "seed": erm.seed + 1}
    assert configs["selective"].control_seed_offsets == (1,) and configs["selective"].coverages == (80, 85, 90, 95, 100)
    assert configs["finetune@masktune"].batch_size == 128
    assert configs["finetune@masktune"].lr is None  # the ERM checkpoint's learning rate, as the official finetune
    assert configs["prepare"].options["mnist_dir"] is None and configs["prepare"].options["val_size"] == 12000
    assert configs["materialize_masked_dataset@randmask"].cutout_sides == (2, 14)
    assert configs["materialize_masked_dataset@masktune"].threshold_std == 2.0
    identify, retrain = configs["jtt_identify@jtt"], configs["robust_train@jtt"]  # recipes.biased_mnist.jtt, .upsample
    assert (identify.arch, identify.momentum, identify.lr, identify.epochs, retrain.lr, retrain.upweight) == \
        ("small_cnn", 0.9, 0.01, 2, 0.01, 100)
    assert (retrain.groups, retrain.trainer, retrain.selection) == ("jtt", "upsample", "average")
    assert type(configs["robust_train@groupdro_true_groups"]).__name__ == "GroupDroConfig"  # by the pair's trainer
    dro = configs["robust_train@groupdro_true_groups"]
    assert (dro.step_size, dro.adjustment, dro.reweight_groups, dro.lr, dro.selection) == \
        (0.01, 0.0, True, 0.01, "worst_group")
    assert dict(configs["evaluate"].methods)["labels"] == ("true_groups", "classes")
    assert (configs["last_layer@dfr_groups"].groups, configs["last_layer@exmap_global"].groups) == \
        ("true_groups", "exmap_global")  # one DFR for the baselines and ExMap
    assert configs["last_layer@dfr_groups"].c_grid == (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    heatmaps, groups = configs["exmap_heatmaps@exmap"], configs["exmap_groups@exmap"]  # recipes.biased_mnist.exmap
    assert (heatmaps.heatmaps, heatmaps.gamma, heatmaps.heatmap_size, groups.clustering, groups.clusters) == \
        ("lrp", 4.0, 0, "spectral", "auto")
    assert (configs["compute_saliency"].method, configs["compute_saliency"].gamma) == ("xgradcam", 4.0)
    features, cfix = configs["clusterfix_features@clusterfix"], configs["robust_train@clusterfix"]
    assert (features.backbone, configs["clusterfix_clusters@clusterfix"].clusters_per_class) == ("erm", 8)
    assert (cfix.arch, cfix.optimizer, cfix.lr, cfix.beta, cfix.weight_momentum, cfix.selection, cfix.statistics,
            cfix.val_losses_into_train_buffer) == ("small_cnn", "sgd", 0.01, 0.01, 0.3, "average", "incremental", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        erm.lr = 1.0


def test_overrides_and_the_dataset_switch_follow_the_naming_rule(tmp_path):
    values = _set(_set(committed_params(), "dataset", "celeba"), "train_erm.epochs", 3)
    erm = _load(tmp_path, "train_erm", values)
    assert (erm.arch, erm.lr, erm.epochs, erm.batch_size, erm.eval_batch_size) == ("resnet50", 0.0001, 3, 512, 512)
    cfix = _load(tmp_path, "robust_train@clusterfix", values)  # ClusterFix's official CelebA recipe
    assert (cfix.optimizer, cfix.lr, cfix.weight_decay, cfix.batch_size, cfix.epochs, cfix.beta, cfix.lr_schedule) == \
        ("adam", 0.0001, 0.01, 256, 100, 0.5, "cosine")
    assert _load(tmp_path, "prepare", values).options["target"] == "Blond_Hair"
    saliency = _load(tmp_path, "compute_saliency", _set(values, "saliency.batch_size", 7))
    assert (saliency.batch_size, saliency.workers) == (7, 1)  # the override, and recipes.celeba.saliency.workers


@pytest.mark.parametrize("key, value, message", [
    ("train_erm.epochs", "three", "train_erm.epochs must be an integer >= 1, got 'three'"),
    ("train_erm.epochs", 0, "train_erm.epochs must be an integer >= 1, got 0"),
    ("train_erm.epochs", True, "train_erm.epochs must be an integer >= 1, got True"),
    ("lr", -0.1, "lr must be a number > 0.0, got -0.1"),
    ("finetune.lr", "abc", "finetune.lr must be a number > 0.0 or null, got 'abc'"),
    ("methods.masking", ["masktune", "gradcam"],
     "methods.masking must be a list of distinct names from 'masktune', 'randmask', got"),
    ("methods.jtt", ["jtt", "jtt"], "methods.jtt must be a list of distinct names from 'jtt', got"),
    ("methods.robust_train.jtt.selection", "test", ("methods.robust_train.jtt.selection must be one of 'average', "
                                                    "'worst_class', 'worst_pseudo_group', 'worst_group', 'unbiased', "
                                                    "'last', got 'test'")),
    ("methods.robust_train.jtt.trainer", "dfr", ("methods.robust_train.jtt.trainer must be one of "
                                                 "'cluster_reweight', 'groupdro', 'lff', 'upsample', got 'dfr'")),
    ("methods.last_layer.x", {"groups": "classes"}, ("methods.last_layer.x must be a mapping with exactly the keys "
                                                     "groups, trainer, selection, got")),
    ("methods.robust_train.jtt.groups", "exmap_globl", (r"methods.robust_train.jtt.groups is 'exmap_globl', which no "
                                                        r"listed group inference writes \(written: clusterfix, "
                                                        r"exmap_global, exmap_local, jtt, true_groups, classes, xrm;")),
    ("methods.robust_train.masktune", {"groups": "jtt", "trainer": "groupdro", "selection": "average"},
     "methods.robust_train.masktune: the name 'masktune' is already a model of `methods`"),
    ("methods.robust_train.My-Pair", {}, ("methods.robust_train must be a mapping whose names are lower-case "
                                          "identifiers, got 'My-Pair'")),
    ("recipes.celeba.upsample.upweight", -1, "recipes.celeba.upsample.upweight must be an integer >= 0, got -1"),
    ("randmask.cutout_sides", [14, 2], r"randmask.cutout_sides must be a list of 2 integers in \[1, 10000\], in asc"),
    ("recipes.celeba.train_erm.epochs", None, ("recipes.celeba.train_erm.epochs must be an integer >= 1 "
                                               r"\(a recipe value may not be null\), got None")),
    ("recipes.waterbirds.lr", "fast", "recipes.waterbirds.lr must be a number > 0.0, got 'fast'"),
    ("prepare.in9l.limit", 0, "prepare.in9l.limit must be an integer >= 1 or null, got 0"),
    ("dfr.c_grid", [1.0, float("inf")], r"dfr.c_grid must be a non-empty list of distinct finite numbers > 0, got \[1.0, inf\]"),
    ("profile", "fast", "profile must be one of 'full', 'quick', got 'fast'"),
    ("profiles.quick.train_erm.epochs", 0, "profiles.quick.train_erm.epochs must be an integer >= 1, got 0"),
    ("profiles.quick.train_erm.epoch", 1, (r"unknown key 'profiles.quick.train_erm.epoch' \(did you mean "
                                           r"profiles.quick.train_erm.epochs\?\)")),
    ("profiles.quick.dataset", "celeba", "unknown key 'profiles.quick.dataset'"),  # DVC expands the stages from it
    ("profiles.quick.prepare.biased_mnist.train_limit", None, "profiles.quick.prepare.biased_mnist.train_limit may not"),
    ("methods.robust_train.x\n", {"groups": "jtt", "trainer": "groupdro", "selection": "average"},
     "methods.robust_train must be a mapping whose names are lower-case identifiers, got 'x\\\\n'"),
])
def test_a_bad_value_anywhere_stops_check_params_naming_the_key(key, value, message):
    """check_params (the first stage of every run: it depends on the whole file) refuses it, whichever stage reads it."""
    with pytest.raises(UserError, match=f"^params.yaml: {message}"):
        check(_set(committed_params(), key, value))


def test_the_quick_profile_presets_its_keys_above_params_and_recipes(tmp_path):
    """`-S profile=quick`: the profile's values win over params.yaml and the recipe for the keys it sets (a preset,
    edited where it is written), the rest stays as it was; every stage resolves under it, and a stage that reads a
    key the profile sets without depending on the profile's stamp (DVC would not rerun it) is refused."""
    full, quick = committed_params(), _set(committed_params(), "profile", "quick")
    erm = _load(tmp_path, "train_erm", full)
    assert (erm.epochs, erm.lr) == (5, 0.01)  # recipes.biased_mnist
    erm = _load(tmp_path, "train_erm", quick)
    assert (erm.epochs, erm.lr, erm.batch_size) == (1, 0.01, 32)  # profiles.quick; the recipe's lr
    assert _load(tmp_path, "train_erm", _set(quick, "train_erm.epochs", 3)).epochs == 1  # the preset wins...
    assert _load(tmp_path, "train_erm", _set(quick, "profiles.quick.train_erm.epochs", 3)).epochs == 3  # ...edited here
    options = _load(tmp_path, "prepare", quick).options
    assert (options["train_limit"], options["test_limit"], options["val_size"], options["seed"]) == (2000, 1000, 500, 0)
    assert _load(tmp_path, "prepare", full).options["val_size"] == 12000
    for stage in _stages(quick["methods"]):
        if stage != "check_params":
            _load(tmp_path, stage, quick)  # every declared read: an undeclared one raises
    dvc_text = (ROOT / "dvc.yaml").read_text().replace(f"deps: [{PROFILE_STAMP}, ", "deps: [", 2)  # prepare's, train_erm's
    assert dvc_text.count(PROFILE_STAMP) == (ROOT / "dvc.yaml").read_text().count(PROFILE_STAMP) - 2
    with pytest.raises(UserError, match=r"stage 'train_erm' reads param 'profiles\.quick\.train_erm\.\w+' but dvc.yaml"):
        _load(tmp_path, "train_erm", quick, dvc_text)


def test_the_profile_stamp_holds_the_chosen_profiles_values_only():
    """check_params writes the chosen profile's values where the stages' dep points; the same values give the
    same bytes (editing a profile not in use, or key order, reruns nothing), other values other bytes."""
    from stages.check_params import PROFILE_FILE, profile_bytes

    out = re.search(r"python -m stages\.check_params --out (\S+)", (ROOT / "dvc.yaml").read_text())[1]
    assert f"{out}/{PROFILE_FILE}" == PROFILE_STAMP
    full, quick = committed_params(), _set(committed_params(), "profile", "quick")
    assert profile_bytes(full) == b"{}\n"
    assert json.loads(profile_bytes(quick)) == quick["profiles"]["quick"]
    assert profile_bytes(_set(full, "profiles.quick.train_erm.epochs", 2)) == profile_bytes(full)
    assert profile_bytes(_set(quick, "profiles.quick.train_erm.epochs", 2)) != profile_bytes(quick)
    reordered = _set(quick, "profiles.quick", dict(reversed(list(quick["profiles"]["quick"].items()))))
    assert profile_bytes(reordered) == profile_bytes(quick)


def test_no_profile_can_set_a_key_dvc_reads_itself():
    """Every `${key}` dvc.yaml templates (but the foreach item and the profile's own) is one a profile may not
    set: DVC reads it to expand the stages or their deps, and would not see the profile's value."""
    from masktune.config.validate import DVC_TEMPLATED

    templated = set(re.findall(r"\$\{([a-z_.]+)\}", (ROOT / "dvc.yaml").read_text()))
    keys = {key for key in templated if key.split(".")[0] not in ("item", "key", "profile")}
    assert {key if key.split(".")[0] != "methods" else "methods" for key in keys} == set(DVC_TEMPLATED)
    with pytest.raises(UserError, match="unknown key 'profiles.quick.saliency.method'"):
        check(_set(committed_params(), "profiles.quick.saliency", {"method": "gradcam"}))


def test_a_stage_checks_the_keys_it_reads(tmp_path):
    with pytest.raises(UserError, match="^params.yaml: train_erm.epochs must be an integer >= 1, got 'three'"):
        _load(tmp_path, "train_erm", _set(committed_params(), "train_erm.epochs", "three"))
    assert _load(tmp_path, "evaluate", _set(committed_params(), "train_erm.epochs", "three"))  # not evaluate's


def test_unknown_and_missing_keys_are_named():
    values = _set(committed_params(), "train_erm.epoch", 3)
    with pytest.raises(UserError, match=r"unknown key 'train_erm.epoch' \(did you mean train_erm.epochs\?\)"):
        check(values)
    values = committed_params()
    del values["randmask"]["seed"]
    with pytest.raises(UserError, match="missing key 'randmask.seed'"):
        check(values)


def test_a_stage_cannot_read_an_undeclared_param(tmp_path):
    dvc_text = (ROOT / "dvc.yaml").read_text().replace(', "recipes.${dataset}.train_erm"]', ']', 1)
    assert dvc_text != (ROOT / "dvc.yaml").read_text()
    with pytest.raises(UserError, match="stage 'train_erm' reads param 'recipes.biased_mnist.train_erm.arch' "
                                        "but dvc.yaml does not declare it"):
        _load(tmp_path, "train_erm", committed_params(), dvc_text)
    values = _set(committed_params(), "train_erm.arch", "small_cnn")  # an override needs no recipe key
    dvc_text = dvc_text.replace("eval_batch_size, train_erm,", "eval_batch_size, train_erm.arch,", 1)
    with pytest.raises(UserError, match="reads param 'train_erm.pretrained'"):
        _load(tmp_path, "train_erm", values, dvc_text)


def test_every_list_derives_from_the_registries():
    """The names `methods` accepts, the trainers, the datasets and the architectures come from one place each:
    the method specs, the dataset specs, the model registry; every param key is declared once, alike."""
    from masktune.datasets import DATASETS
    from masktune.models import MODELS

    registry = specs()
    families = family_names(registry)
    assert families == {"erm": ("erm",), "masking": ("masktune", "randmask"), "clusterfix": ("clusterfix",),
                        "exmap": ("exmap",), "jtt": ("jtt",), "labels": ("true_groups", "classes"), "xrm": ("xrm",)}
    assert trainer_names(registry, "robust_train") == ("cluster_reweight", "groupdro", "lff", "upsample")
    assert trainer_names(registry, "last_layer") == ("dfr",)
    fields = schema(registry)  # raises where a key is declared twice with different fields
    assert fields["dataset"].options == tuple(DATASETS) and fields["train_erm.arch"].options == tuple(MODELS)
    assert sorted(committed_params()["methods"]) == sorted([*families, "robust_train", "last_layer"])
    for stage, config in pipeline_configs().items():
        assert config_params(config), stage


def test_a_foreach_stage_reads_its_own_methods_params_only(tmp_path):
    """`materialize_masked_dataset@randmask` declares `randmask` (its `${item}`), not MaskTune's keys."""
    values = committed_params()
    assert _load(tmp_path, "materialize_masked_dataset@randmask", _set(values, "masktune.threshold_std", 9.0)).seed == 0
    dvc_text = (ROOT / "dvc.yaml").read_text().replace("        - ${item}\n", "        - masktune\n")
    with pytest.raises(UserError, match="stage 'materialize_masked_dataset@randmask' reads param 'randmask.cutout_sides'"):
        _load(tmp_path, "materialize_masked_dataset@randmask", values, dvc_text)
    with pytest.raises(ValueError, match="no stage config named 'label_groups@gradcam'"):
        _load(tmp_path, "label_groups@gradcam", values)


def test_stage_with_a_bad_param_exits_2_with_one_line_and_writes_nothing(tmp_path):
    _write(tmp_path, _set(committed_params(), "train_erm.epochs", "abc"))
    result = subprocess.run([sys.executable, "-m", "stages.train_erm", "--data", "x.h5", "--best", "b.pt", "--last",
                             "l.pt", "--live", "live", "--oracle", "o.pt"], cwd=tmp_path, capture_output=True,
                            text=True, check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert result.stderr.strip() == "error: params.yaml: train_erm.epochs must be an integer >= 1, got 'abc'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


def test_a_pair_stage_reads_its_pair_and_its_trainer_section_only(tmp_path):
    """`robust_train@<name>` declares `methods.robust_train.${key}` and `${item.trainer}` (its trainer's
    section): another trainer's params do not reach it, and a new pair is a params edit, no code."""
    values = _set(committed_params(), "methods.robust_train.groupdro_clusterfix",
                  {"groups": "clusterfix", "trainer": "groupdro", "selection": "worst_pseudo_group"})
    pair = _load(tmp_path, "robust_train@groupdro_clusterfix", values)
    assert (pair.groups, pair.trainer, pair.selection, pair.step_size) == ("clusterfix", "groupdro",
                                                                          "worst_pseudo_group", 0.01)
    assert _load(tmp_path, "robust_train@groupdro_clusterfix", _set(values, "upsample.upweight", 7)) == pair
    dvc_text = (ROOT / "dvc.yaml").read_text().replace('"methods.robust_train.${key}", "${item.trainer}",',
                                                       '"methods.robust_train.${key}", upsample,', 1)
    assert dvc_text != (ROOT / "dvc.yaml").read_text()
    with pytest.raises(UserError, match="stage 'robust_train@groupdro_clusterfix' reads param 'groupdro\\."):
        _load(tmp_path, "robust_train@groupdro_clusterfix", values, dvc_text)


def _flatten(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_every_recipe_resolves_to_its_pinned_values():
    """params.yaml writes most recipes as differences from a base (YAML merge keys); the resolved values
    are pinned in tests/data/recipes_resolved.json, so a rewrite of the file cannot move one silently.
    A recipe changed on purpose: change the pinned value beside it, in the same commit."""
    pinned = json.loads((ROOT / "tests" / "data" / "recipes_resolved.json").read_text())
    recipes = yaml.safe_load((ROOT / "params.yaml").read_text())["recipes"]
    resolved = {name: _flatten(recipe) for name, recipe in recipes.items()}
    assert sorted(resolved) == sorted(pinned)
    for name in pinned:
        changed = {key: (pinned[name].get(key), resolved[name].get(key))
                   for key in pinned[name].keys() | resolved[name].keys()
                   if pinned[name].get(key, "missing") != resolved[name].get(key, "missing")}
        assert not changed, f"recipes.{name} (pinned, now): {changed}"


def test_no_two_recipes_share_a_section_so_an_override_edits_one_recipe():
    """`dvc exp run -S recipes.in9l.train_erm.epochs=3` edits the mapping it finds under that path
    (ruamel's round trip, as DVC loads the file): a plain alias (`train_erm: *waterbirds_train_erm`)
    would be the base's own mapping and the edit would change waterbirds too. Every section of every
    recipe must be its own mapping (a merge, `{<<: *waterbirds_train_erm}`)."""
    from ruamel.yaml import YAML

    recipes = YAML().load((ROOT / "params.yaml").read_text())["recipes"]
    owners: dict[int, str] = {}
    for name, recipe in recipes.items():
        for section, mapping in recipe.items():
            if isinstance(mapping, dict):
                path = f"recipes.{name}.{section}"
                assert id(mapping) not in owners, f"{path} is the same mapping as {owners[id(mapping)]}"
                owners[id(mapping)] = path


def test_a_stage_refuses_to_write_outputs_when_a_declared_param_changed_while_it_ran(tmp_path):
    """The race of issue 27: `dvc exp run -S lr=0.05` refused while `train_erm` runs still leaves lr 0.05
    in params.yaml, and DVC would record it for a model trained with 0.01. An undeclared key may change."""
    from masktune.io.files import atomic_output, write_bytes_atomically

    params, dvc_file = _write(tmp_path, _set(committed_params(), "lr", 0.01))
    load_config(stage_config("train_erm", {}), "train_erm", params, dvc_file)
    write_bytes_atomically(tmp_path / "before.pt", b"ok")  # nothing changed yet
    _write(tmp_path, _set(_set(committed_params(), "lr", 0.01), "finetune.lr", 0.5))  # not train_erm's
    write_bytes_atomically(tmp_path / "unrelated.pt", b"ok")
    _write(tmp_path, _set(committed_params(), "lr", 0.05))
    refused = (r"params.yaml changed while stage 'train_erm' ran \(lr: 0.01 -> 0.05\): it refuses to write outputs "
               r"made with the old values; `dvc repro` runs it again")
    with pytest.raises(UserError, match=refused), atomic_output(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"trained with 0.01")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.pt", "dvc.yaml", "params.yaml", "unrelated.pt"]
    _write(tmp_path, _set(committed_params(), "lr", 0.01))  # back to the values it started with
    write_bytes_atomically(tmp_path / "model.pt", b"ok")


def test_params_are_read_as_dvc_reads_them_yaml_1_2(tmp_path):
    """`epochs: 010` is 10 (as DVC records it; YAML 1.1 read octal 8), `yes` is a string a bool field refuses,
    `1:30` is no sexagesimal 90, and the exponent form DVC writes for small floats is a float."""
    text = yaml.safe_dump(committed_params(), sort_keys=False)
    text = text.replace("  epochs: null\n", "  epochs: 010\n", 1)  # train_erm.epochs, the first `epochs: null`
    text = text.replace("\nlr: null\n", "\nlr: 1e-05\n")
    (tmp_path / "params.yaml").write_text(text)
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    from dvc.utils.serialize import load_yaml

    dvc_view = load_yaml(str(tmp_path / "params.yaml"))
    config = _load_files("train_erm", tmp_path)
    assert (config.epochs, config.lr) == (dvc_view["train_erm"]["epochs"], dvc_view["lr"]) == (10, 1e-05)
    for key, value, message in (("train_erm.pretrained", "yes", "must be true or false"),
                                ("train_erm.epochs", "1:30", "must be an integer")):
        (tmp_path / "params.yaml").write_text(text.replace("  epochs: 010\n", "  epochs: null\n").replace(
            f"  {key.split('.')[1]}: null\n", f"  {key.split('.')[1]}: {value}\n", 1))
        with pytest.raises(UserError, match=message):
            _load_files("train_erm", tmp_path)


@pytest.mark.slow
def test_dvc_exp_run_sets_a_rate_below_1e_4(tmp_path):
    """`dvc exp run -S lr=0.00001` writes `lr: 1e-05` (DVC's exponent form); every stage reads it as the float
    DVC records (the Waterbirds and CelebA recipes' rates): check_params validates the whole file."""
    from scratch import ScratchProject

    project = ScratchProject(tmp_path / "project")
    result = project.dvc("exp", "run", "-S", "lr=0.00001", "check_params", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\nlr: 1e-05\n" in (project.path / "params.yaml").read_text()
    config = _load_files("train_erm", project.path)
    assert config.lr == 1e-05


@pytest.mark.parametrize("name", ["params.yaml", "dvc.yaml", "dvc.lock"])
def test_the_c_and_the_pure_yaml_loader_read_the_pipeline_files_alike(name):
    """DVC reads these files with ruamel.yaml's safe loader, which parses with libyaml when ruamel.yaml.clib is
    installed (requirements.txt: `dvc status` 2.1x faster, bench/dvc_yaml_loader.py), and in pure
    Python otherwise; the resolver, ruamel's YAML 1.2, is the same. libyaml scans as YAML 1.1 does: it refuses
    a `:` inside an unquoted item of a flow list (`[worst_group:xrm]`), which the pure scanner reads. Both must
    give the same values, so that DVC, the stages and a user's installation without clib agree."""
    from ruamel.yaml import YAML

    text = (ROOT / name).read_text()
    c_loader = YAML(typ="safe")
    assert c_loader.Parser is not None and c_loader.Parser.__name__ == "CParser", "ruamel.yaml.clib not installed"
    assert c_loader.load(text) == YAML(typ="safe", pure=True).load(text)
