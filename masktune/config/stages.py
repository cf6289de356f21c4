"""Each stage's params, resolved once into a typed, frozen config.

`load_stage_config(stage)` reads params.yaml, validates *every* param of the pipeline (so a typo in
the finetune's params stops `dvc exp run` at its first stage, not hours later at the finetune), then
builds the stage's config from the keys its dvc.yaml entry declares, applying the recipe rule
(a null recipe key takes `recipes.<dataset>.<key>`). Reading an undeclared key is an error: DVC would not rerun the stage when
that key changed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from masktune.config import schema
from masktune.config.files import declared_params, read_yaml, refuse_to_finish_if_params_change
from masktune.errors import UserError


def _key(key: str):
    """A config field read from params key `key` (recipe rule applied where the schema says so)."""
    return dataclasses.field(metadata={"key": key})


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str = _key("dataset")
    options: MappingProxyType = _key("prepare.${dataset}")  # prepare.<dataset>.*, validated
    download: bool = _key("download")
    download_dir: Path | None = _key("download_dir")


@dataclass(frozen=True)
class _Distributed:
    """How many torchrun workers run the stage (masktune.distributed; README "Scaling out")."""
    nproc_per_node: int = _key("distributed.nproc_per_node")
    nnodes: int = _key("distributed.nnodes")
    master_addr: str = _key("distributed.master_addr")
    master_port: int = _key("distributed.master_port")


@dataclass(frozen=True)
class _DataParallelTraining(_Distributed):
    """A training stage that runs as data-parallel workers, in the precision asked."""
    train_precision: str = _key("train_precision")  # float32 | bfloat16 | float16 (autocast + grad scaling)


@dataclass(frozen=True)
class _Network:
    """The network every from-scratch training run starts from (ERM's, and JTT's two models)."""
    dataset: str = _key("dataset")
    eval_batch_size: int = _key("eval_batch_size")
    arch: str = _key("train_erm.arch")
    pretrained: bool = _key("train_erm.pretrained")
    weights_path: Path | None = _key("train_erm.weights_path")
    momentum: float = _key("train_erm.momentum")


@dataclass(frozen=True)
class TrainErmConfig(_Network, _DataParallelTraining):
    lr: float = _key("lr")
    epochs: int = _key("train_erm.epochs")
    batch_size: int = _key("train_erm.batch_size")
    weight_decay: float = _key("train_erm.weight_decay")
    lr_schedule: str = _key("train_erm.lr_schedule")  # constant | cosine (per epoch, ExMap's ERM) | multistep
    lr_milestone_every: int = _key("train_erm.lr_milestone_every")  # multistep: x lr_gamma every N epochs
    lr_gamma: float = _key("train_erm.lr_gamma")
    optimizer: str = _key("train_erm.optimizer")  # sgd | adam (the official Cats vs Dogs recipe)
    workers: int = _key("train_erm.workers")
    seed: int = _key("train_erm.seed")


@dataclass(frozen=True)
class TrainErmControlConfig(TrainErmConfig):
    """`train_erm_control@<k>`: ERM's config with seed `train_erm.seed + k` (a seed sweep over train_erm.seed
    therefore never trains a control equal to its ERM)."""

    def derive_from_item(self, item: str) -> TrainErmControlConfig:
        return dataclasses.replace(self, seed=self.seed + int(item))


@dataclass(frozen=True)
class SaliencyConfig(_Distributed):
    batch_size: int = _key("saliency.batch_size")
    precision: str = _key("saliency.precision")
    channels_last: bool = _key("saliency.channels_last")
    fold_batchnorm: bool = _key("saliency.fold_batchnorm")
    workers: int = _key("saliency.workers")
    resume_every: int = _key("saliency.resume_every")


@dataclass(frozen=True)
class MaskTuneMaskConfig:
    threshold_std: float = _key("masktune.threshold_std")
    examples_per_group: int = _key("mask_examples_per_group")


@dataclass(frozen=True)
class RandMaskMaskConfig:
    cutout_sides: tuple[int, int] = _key("randmask.cutout_sides")
    seed: int = _key("randmask.seed")
    examples_per_group: int = _key("mask_examples_per_group")


@dataclass(frozen=True)
class FinetuneConfig(_DataParallelTraining):
    epochs: int = _key("finetune.epochs")
    lr: float | None = _key("finetune.lr")  # None: ERM's learning rate (the checkpoint's, or its initial one)
    batch_size: int = _key("finetune.batch_size")
    eval_batch_size: int = _key("eval_batch_size")
    alignment: str = _key("finetune.alignment")
    workers: int = _key("finetune.workers")
    seed: int = _key("finetune.seed")


@dataclass(frozen=True)
class JttIdentifyConfig(_Network, _DataParallelTraining):
    """JTT's identification model: ERM for T epochs with JTT's recipe, then the error set."""
    epochs: int = _key("jtt.identification_epochs")
    error_set_pass: str = _key("jtt.error_set_pass")
    lr: float = _key("jtt.lr")
    weight_decay: float = _key("jtt.weight_decay")
    batch_size: int = _key("jtt.batch_size")
    workers: int = _key("jtt.workers")
    seed: int = _key("jtt.seed")


@dataclass(frozen=True)
class LabelGroupsConfig:
    """The true groups or the classes as a groups file: no param of its own (the prepared file has them)."""


@dataclass(frozen=True)
class ExMapHeatmapsConfig(_Distributed):
    """ExMap's heatmaps: of the validation images (exmap_heatmaps), and of the training images, streamed
    into their pseudo-groups (exmap_extend)."""
    heatmaps: str = _key("exmap.heatmaps")
    gamma: float = _key("exmap.gamma")
    heatmap_size: int = _key("exmap.heatmap_size")
    batch_size: int = _key("exmap.batch_size")
    workers: int = _key("exmap.workers")


@dataclass(frozen=True)
class ExMapGroupsConfig:
    clustering: str = _key("exmap.clustering")
    clusters: int | str = _key("exmap.clusters")  # "auto": the eigengap rule
    seed: int = _key("exmap.seed")


@dataclass(frozen=True)
class ClusterFixFeaturesConfig(_Distributed):
    eval_batch_size: int = _key("eval_batch_size")
    backbone: str = _key("clusterfix.backbone")  # erm | ssl | resnet18 | resnet50 (ImageNet)
    weights_path: Path | None = _key("clusterfix.weights_path")
    workers: int = _key("clusterfix.workers")


@dataclass(frozen=True)
class ClusterFixSSLConfig(_Network):
    """ClusterFix's self-supervised backbone (masktune/group_inference/ssl.py): train_erm's network from its
    start, trained without labels by Adam when `backbone` is ssl (else nothing is trained)."""
    optimizer = "adam"  # not a param: the usual optimiser of small-scale SimCLR runs, not tuned
    backbone: str = _key("clusterfix.backbone")
    objective: str = _key("clusterfix.ssl_objective")  # simclr | denoising
    epochs: int = _key("clusterfix.ssl_epochs")
    lr: float = _key("clusterfix.ssl_lr")
    weight_decay: float = _key("clusterfix.ssl_weight_decay")
    batch_size: int = _key("clusterfix.ssl_batch_size")
    temperature: float = _key("clusterfix.ssl_temperature")
    colour_strength: float = _key("clusterfix.ssl_colour_strength")
    crop_scale: float = _key("clusterfix.ssl_crop_scale")
    mask_ratio: float = _key("clusterfix.ssl_mask_ratio")
    workers: int = _key("clusterfix.workers")
    seed: int | None = _key("clusterfix.seed")


@dataclass(frozen=True)
class ClusterFixClustersConfig:
    clusters_per_class: int = _key("clusterfix.clusters_per_class")
    seed: int | None = _key("clusterfix.seed")


@dataclass(frozen=True)
class _RobustTraining(_Network, _DataParallelTraining):
    """A (groups, trainer) pair of `methods.robust_train` (`${name}`: the pair's name) and its model
    selection, trained with its trainer's recipe (`${trainer}`: the trainer's section) on train_erm's
    network from ERM's start."""
    groups: str = _key("methods.robust_train.${name}.groups")
    trainer: str = _key("methods.robust_train.${name}.trainer")
    selection: str = _key("methods.robust_train.${name}.selection")
    lr: float = _key("${trainer}.lr")
    weight_decay: float = _key("${trainer}.weight_decay")
    batch_size: int = _key("${trainer}.batch_size")
    epochs: int = _key("${trainer}.epochs")
    workers: int = _key("${trainer}.workers")
    seed: int | None = _key("${trainer}.seed")  # null (cluster_reweight only): drawn and recorded


@dataclass(frozen=True)
class UpsampleConfig(_RobustTraining):
    """JTT's retraining: the named minority's rows appended λ_up times (else the groups balanced)."""
    upweight: int = _key("upsample.upweight")


@dataclass(frozen=True)
class ClusterReweightConfig(_RobustTraining):
    """ClusterFix's training: cluster re-weighting and pseudo-label heads."""
    beta: float = _key("cluster_reweight.beta")
    weight_momentum: float = _key("cluster_reweight.momentum")
    optimizer: str = _key("cluster_reweight.optimizer")
    lr_schedule: str = _key("cluster_reweight.lr_schedule")
    statistics: str = _key("cluster_reweight.statistics")
    val_losses_into_train_buffer: bool = _key("cluster_reweight.val_losses_into_train_buffer")


@dataclass(frozen=True)
class GroupDroConfig(_RobustTraining):
    """GroupDRO: online group weights (step size, adjustment), group-balanced sampling."""
    step_size: float = _key("groupdro.step_size")
    adjustment: float = _key("groupdro.adjustment")
    reweight_groups: bool = _key("groupdro.reweight_groups")


@dataclass(frozen=True)
class DfrConfig:
    """DFR on a (groups, dfr) pair of `methods.last_layer`: the last layer of the best ERM model
    retrained on the validation set, balanced over the pair's groups."""
    groups: str = _key("methods.last_layer.${name}.groups")
    trainer: str = _key("methods.last_layer.${name}.trainer")
    selection: str = _key("methods.last_layer.${name}.selection")  # what scores C
    eval_batch_size: int = _key("eval_batch_size")
    c_grid: tuple[float, ...] = _key("dfr.c_grid")
    tune_splits: int = _key("dfr.tune_splits")
    refits: int = _key("dfr.refits")
    seed: int = _key("dfr.seed")
    workers: int = _key("dfr.workers")


@dataclass(frozen=True)
class CheckMethodsConfig:
    """Stage `check_methods`: reads the names `foreach` stages are made of (the `methods` param and the control's
    seed offsets), which loading it validates."""
    methods: MappingProxyType = _key("methods")
    control_seed_offsets: tuple[int, ...] = _key("selective.control_seed_offsets")


@dataclass(frozen=True)
class EvaluateConfig:
    eval_batch_size: int = _key("eval_batch_size")
    methods: MappingProxyType = _key("methods")  # kind -> names, in report order
    workers: int = _key("evaluate.workers")


@dataclass(frozen=True)
class SelectiveConfig:
    """Selective classification (stage `selective`): which models it scores, at which coverages."""
    eval_batch_size: int = _key("eval_batch_size")
    methods: MappingProxyType = _key("methods")  # the masking methods' fine-tuned models are scored
    control_seed_offsets: tuple[int, ...] = _key("selective.control_seed_offsets")
    coverages: tuple[float, ...] = _key("selective.coverages")
    workers: int = _key("evaluate.workers")


MASK_CONFIGS = {"masktune": MaskTuneMaskConfig, "randmask": RandMaskMaskConfig}
TRAINER_CONFIGS = {"upsample": UpsampleConfig, "cluster_reweight": ClusterReweightConfig, "groupdro": GroupDroConfig}
LAST_LAYER_CONFIGS = {"dfr": DfrConfig}
# Keyed by the stage names DVC gives (`<stage>@<item>` for a foreach stage); `<stage>@*` for a foreach over
# numbers (the control's seed offsets) or over pairs, whose config is the trainer's.
STAGE_CONFIGS = {
    "prepare": PrepareConfig,
    "check_methods": CheckMethodsConfig,
    "train_erm": TrainErmConfig,
    "compute_saliency": SaliencyConfig,
    **{f"materialize_masked_dataset@{name}": MASK_CONFIGS[name] for name in schema.METHOD_KINDS["masking"]},
    **{f"finetune@{name}": FinetuneConfig for name in schema.METHOD_KINDS["masking"]},
    **{f"label_groups@{name}": LabelGroupsConfig for name in schema.METHOD_KINDS["labels"]},
    **{f"jtt_identify@{name}": JttIdentifyConfig for name in schema.METHOD_KINDS["jtt"]},
    **{f"exmap_heatmaps@{name}": ExMapHeatmapsConfig for name in schema.METHOD_KINDS["exmap"]},
    **{f"exmap_groups@{name}": ExMapGroupsConfig for name in schema.METHOD_KINDS["exmap"]},
    **{f"exmap_extend@{name}": ExMapHeatmapsConfig for name in schema.METHOD_KINDS["exmap"]},
    **{f"clusterfix_ssl@{name}": ClusterFixSSLConfig for name in schema.METHOD_KINDS["clusterfix"]},
    **{f"clusterfix_features@{name}": ClusterFixFeaturesConfig for name in schema.METHOD_KINDS["clusterfix"]},
    **{f"clusterfix_clusters@{name}": ClusterFixClustersConfig for name in schema.METHOD_KINDS["clusterfix"]},
    "robust_train@*": TRAINER_CONFIGS,     # by the pair's trainer
    "last_layer@*": LAST_LAYER_CONFIGS,
    "evaluate": EvaluateConfig,
    "train_erm_control@*": TrainErmControlConfig,  # one per selective.control_seed_offsets entry: ERM's, seed + offset
    "selective": SelectiveConfig,
}


def _derived(config, stage: str):
    """The config a stage runs with, where it derives a value from its item (`derive_from_item`)."""
    derive = getattr(config, "derive_from_item", None)
    return derive(stage.partition("@")[2]) if derive is not None else config


def _config_class(stage: str, values: dict):
    """The config of `stage`: by its name; for a foreach over numbers (`train_erm_control@1`) by `<stage>@*`;
    for a pair (`robust_train@jtt`), its trainer's."""
    name, at, item = stage.partition("@")
    config = STAGE_CONFIGS.get(stage) or (STAGE_CONFIGS.get(f"{name}@*") if at else None)
    if isinstance(config, dict):
        pair = values.get("methods", {}).get(name, {}).get(item)
        config = config.get(pair.get("trainer")) if isinstance(pair, dict) else None
    if config is None:
        raise UserError(f"no stage config named '{stage}' (known: {', '.join(STAGE_CONFIGS)})")
    return config


class _Resolver:
    """Reads validated values of the declared keys only."""

    def __init__(self, stage: str, values: dict, declared: list[str]):
        self.stage, self.values, self.declared = stage, values, declared
        self.item = stage.partition("@")[2]

    def read(self, key: str) -> Any:
        if not any(key == d or key.startswith(d + ".") for d in self.declared):
            raise UserError(f"stage '{self.stage}' reads param '{key}' but dvc.yaml does not declare it "
                            f"(declared: {', '.join(self.declared)})")
        return schema.lookup(self.values, key)

    def resolve(self, key: str) -> Any:
        if "${dataset}" in key:
            key = key.replace("${dataset}", self.read("dataset"))
        key = key.replace("${name}", self.item)
        if "${trainer}" in key:  # a pair's trainer section (robust_train@<name>)
            key = key.replace("${trainer}", self.read(f"methods.robust_train.{self.item}.trainer"))
        if key.startswith(schema.PAIRS_PREFIXES):  # a field of one (groups, trainer) pair, checked as a whole
            return self.read(key)
        if key in schema.SCHEMA:
            value = self.read(key)
            if value is None and schema.SCHEMA[key].recipe:
                value = self.read(f"recipes.{self.read('dataset')}.{key}")
            return schema.SCHEMA[key].check(key, value)
        prefix = key + "."  # a whole section (prepare.<dataset>): every key of it, checked
        self.read(key)
        return MappingProxyType({k[len(prefix):]: field.check(k, self.read(k))
                                 for k, field in schema.SCHEMA.items() if k.startswith(prefix)})


def recorded_config(config) -> dict:
    """A stage config as a checkpoint records it: JSON values (paths as strings), how the stage was launched
    (`LAUNCH_SETTINGS`: workers, nodes, loader processes) left out, since the model is the same either way."""
    values = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return {key: value for key, value in values.items() if key not in LAUNCH_SETTINGS}


LAUNCH_SETTINGS = ("nproc_per_node", "nnodes", "master_addr", "master_port", "workers")


def load_stage_config(stage: str, params_file: str | Path = "params.yaml", dvc_file: str | Path = "dvc.yaml"):
    """The typed config of `stage`, after validating every param of params.yaml."""
    values = read_yaml(params_file)
    schema.validate(values)
    config = _config_class(stage, values)
    declared = declared_params(stage, dvc_file, values)
    resolver = _Resolver(stage, values, declared)
    resolved = _derived(config(**{f.name: resolver.resolve(f.metadata["key"]) for f in dataclasses.fields(config)}), stage)
    refuse_to_finish_if_params_change(stage, params_file, declared, values)
    return resolved
