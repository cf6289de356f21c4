"""Every key of params.yaml, its type and bounds, in one place; and the check of the whole file.

The choice lists here are the names the registries are keyed by (`masktune.datasets.DATASETS`,
`masktune.models.MODELS`, ...); tests/test_config.py checks that they agree, so a new dataset or model
is one registry entry plus its name here. This module imports nothing of the pipeline but `errors`:
every stage validates the whole params file when it starts without depending on the code of the others.

The naming rule for recipes (written down in params.yaml too): a key declared with `recipe=True`
(`lr`, `train_erm.epochs`, ...) may be null, and then takes `recipes.<dataset>.<the same key>`.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any

from masktune.config.fields import (
    SOURCE,
    AutoInt,
    Bool,
    Choice,
    Field,
    FilePath,
    Int,
    IntList,
    IntSet,
    NameList,
    Number,
    NumberList,
    Pairs,
    Text,
    invalid,
)
from masktune.errors import UserError

DATASET_NAMES = ("biased_mnist", "waterbirds", "celeba", "in9l", "cmnist", "folder", "mnist", "cifar10", "svhn",
                 "cats_vs_dogs")
ARCH_NAMES = ("small_cnn", "resnet18", "resnet50", "tiny_cnn", "resnet18_cifar", "resnet32")
PRECISIONS = ("float32", "bfloat16", "float16")
# The methods one `dvc repro` can compare (params.yaml `methods`). Lists of fixed names: ERM, the masking
# methods, and the group inference to run (each writes groups files, masktune/groups.py; a kind's
# list is a `foreach` in dvc.yaml). Mappings of (groups, trainer) pairs: the robust trainers
# (masktune/robust_train/, one `robust_train@<name>` stage each) and the last-layer trainers
# (masktune/last_layer/, `last_layer@<name>`). tests/test_config.py checks these names against the
# registries of the code.
METHOD_KINDS = {
    "erm": ("erm",),                      # the ERM model of train_erm: no stage of its own
    "masking": ("randmask", "masktune"),  # materialize_masked_dataset@<name>, finetune@<name>
    "labels": ("true_groups", "classes"),  # label_groups@<name>: data/groups/<name>.h5
    "jtt": ("jtt",),                      # jtt_identify@<name>: data/groups/<name>.h5
    "exmap": ("exmap",),                  # exmap_heatmaps, exmap_groups, exmap_extend@<name>: <name>_global, _local
    "clusterfix": ("clusterfix",),        # clusterfix_features, clusterfix_clusters@<name>: data/groups/<name>.h5
}
TRAINERS = ("upsample", "cluster_reweight", "groupdro")   # masktune/robust_train/<trainer>.py
LAST_LAYER_TRAINERS = ("dfr",)                             # masktune/last_layer/<trainer>.py
PAIR_KINDS = ("robust_train", "last_layer")
PAIRS_PREFIXES = tuple(f"methods.{kind}." for kind in PAIR_KINDS)
# model selection on validation (masktune/train/selection.py): average | worst class (✗) | the method's own
# worst group (✗ unless its groups are the true ones) | worst true group | unbiased (mean of the true groups) (✓)
SELECTIONS = ("average", "worst_class", "worst_pseudo_group", "worst_group", "unbiased")
# DFR's choice of C, by the worst of: one group (the accuracy), the classes, its groups (ExMap's rule), the true groups
LAST_LAYER_SELECTIONS = ("average", "worst_class", "worst_pseudo_group", "worst_group")


def group_files(methods: Mapping) -> dict[str, str]:
    """{groups file name: the group inference that writes it} of the listed group inference."""
    files = {name: "labels" for name in methods.get("labels", ())}
    files |= {name: "jtt" for name in methods.get("jtt", ())}
    files |= {f"{name}_{scope}": "exmap" for name in methods.get("exmap", ()) for scope in ("global", "local")}
    return files | {name: "clusterfix" for name in methods.get("clusterfix", ())}


HEATMAPS = ("lrp", "xgradcam")                 # ExMap: its LRP heatmaps (official) | MaskTune's XGradCAM maps
CLUSTERINGS = ("spectral", "umap_kmeans")      # ExMap: spectral + eigengap | UMAP 2-D + k-means
ERROR_SET_PASSES = ("training", "eval")        # JTT: the official training-pass predictions | an eval pass
# ClusterFix's features: the ERM model's | a self-supervised one trained here | an ImageNet network from a file
FEATURE_BACKBONES = ("erm", "ssl", "resnet18", "resnet50")
SSL_OBJECTIVES = ("simclr", "denoising")       # ClusterFix's self-supervised backbone (group_inference/ssl.py)
OPTIMIZERS = ("sgd", "adam")                   # ClusterFix: the ERM recipe's SGD | the official Adam; ERM likewise
WEIGHT_STATISTICS = ("incremental", "recompute")  # ClusterFix's cluster losses: O(batch) | the official O(N K)
WATERBIRDS_TARGETS = ("Object", "Place")       # the bird (the usual task) | the background (BPA, ClusterFix)
ALIGNMENTS = ("crop", "stretch")               # how a view mask is put on the raw image
SQUARE_PLACEMENTS = ("official", "random")
LR_SCHEDULES = ("constant", "cosine")          # ERM: none (MaskTune) | CosineAnnealingLR per epoch (ExMap)
# train_erm only: MultiStepLR, x lr_gamma every lr_milestone_every epochs (the official --schedule/--gamma)
ERM_LR_SCHEDULES = (*LR_SCHEDULES, "multistep")
MAX_WORKERS = 64
FOLDER_TRANSFORMS = ("none", "resize", "imagenet")  # a folder of the user's images: masktune/datasets/folder.py
EXIF_ORIENTATIONS = ("ignore", "apply")  # as masktune.data.prepared.EXIF_ORIENTATIONS
FOLDER_NORMALISATIONS = ("none", "imagenet")

_IMAGE_FOLDER = {"dir": FilePath(nullable=True), "limit": Int(1, nullable=True)}
_PAPER_PIXELS = {"dir": FilePath(nullable=True), "val_fraction": Number(0.0, 1.0, exclusive_minimum=True),
                 "val_seed": Int(0, 2**32 - 1), "train_limit": Int(2, nullable=True), "test_limit": Int(1, nullable=True)}
PREPARE: dict[str, dict[str, Field]] = {
    "biased_mnist": {
        "mnist_dir": FilePath(nullable=True),
        "bias_conflicting_ratio": Number(0.0, 1.0),
        "square_size": Int(1, 28),
        "square_color": IntList(length=3, minimum=0, maximum=255),
        "square_placement": Choice(options=SQUARE_PLACEMENTS),
        "val_size": Int(1),
        "seed": Int(0),
        "train_limit": Int(2, nullable=True),
        "test_limit": Int(1, nullable=True),
    },
    "waterbirds": {**_IMAGE_FOLDER, "target": Choice(options=WATERBIRDS_TARGETS)},
    "celeba": {**_IMAGE_FOLDER, "target": Text(), "spurious": Text()},  # attribute names: checked by the reader
    "in9l": dict(_IMAGE_FOLDER),
    "cmnist": {
        "mnist_dir": FilePath(nullable=True),
        "color_correlation": Number(0.0, 1.0),
        "val_size": Int(1),
        "seed": Int(0),
        "train_limit": Int(2, nullable=True),
        "test_limit": Int(1, nullable=True),
    },
    "mnist": {
        "mnist_dir": FilePath(nullable=True),
        "val_size": Int(1),
        "seed": Int(0),
        "train_limit": Int(2, nullable=True),
        "test_limit": Int(1, nullable=True),
    },
    # The paper's selective-classification sets: official 20% validation draw (val_fraction, val_seed).
    "cifar10": dict(_PAPER_PIXELS),
    "svhn": dict(_PAPER_PIXELS),
    "cats_vs_dogs": {
        "dir": FilePath(nullable=True),
        "test_per_class": Int(1),
        "test_seed": Int(0),
        "val_fraction": Number(0.0, 1.0, exclusive_minimum=True),
        "val_seed": Int(0, 2**32 - 1),
        "limit": Int(1, nullable=True),
    },
    "folder": {
        "dir": FilePath(nullable=True),
        "csv": FilePath(nullable=True),
        "transforms": Choice(options=FOLDER_TRANSFORMS),
        "image_size": Int(8, 4096),
        "normalisation": Choice(options=FOLDER_NORMALISATIONS),
        "limit": Int(1, nullable=True),
        "allow_overlap": Bool(),
        "exif_orientation": Choice(options=EXIF_ORIENTATIONS),
    },
}

SCHEMA: dict[str, Field] = {
    "dataset": Choice(options=DATASET_NAMES),
    "lr": Number(0.0, exclusive_minimum=True, recipe=True),
    "eval_batch_size": Int(1, recipe=True),
    "download": Bool(),
    "download_dir": FilePath(nullable=True),
    **{f"prepare.{name}.{key}": field for name, fields in PREPARE.items() for key, field in fields.items()},
    "train_precision": Choice(options=PRECISIONS),
    "distributed.nproc_per_node": Int(1, 1024),
    "distributed.nnodes": Int(1, 4096),
    "distributed.master_addr": Text(),
    "distributed.master_port": Int(1, 65535),
    "train_erm.arch": Choice(options=ARCH_NAMES, recipe=True),
    "train_erm.pretrained": Bool(recipe=True),
    "train_erm.weights_path": FilePath(nullable=True),
    "train_erm.epochs": Int(1, recipe=True),
    "train_erm.batch_size": Int(1, recipe=True),
    "train_erm.momentum": Number(0.0, 1.0, recipe=True),
    "train_erm.weight_decay": Number(0.0, recipe=True),
    "train_erm.lr_schedule": Choice(options=ERM_LR_SCHEDULES, recipe=True),
    "train_erm.lr_milestone_every": Int(1, recipe=True),
    "train_erm.lr_gamma": Number(0.0, 1.0, exclusive_minimum=True, recipe=True),
    "train_erm.optimizer": Choice(options=OPTIMIZERS, recipe=True),
    "train_erm.workers": Int(0, MAX_WORKERS),
    "train_erm.seed": Int(0),
    "saliency.batch_size": Int(1, recipe=True),
    "saliency.precision": Choice(options=PRECISIONS),
    "saliency.channels_last": Bool(),
    "saliency.fold_batchnorm": Bool(),
    "saliency.workers": Int(0, MAX_WORKERS, recipe=True),
    "saliency.resume_every": Int(1),
    **{f"methods.{kind}": NameList(options=names) for kind, names in METHOD_KINDS.items()},
    "methods.robust_train": Pairs(trainers=TRAINERS, selections=SELECTIONS),
    "methods.last_layer": Pairs(trainers=LAST_LAYER_TRAINERS, selections=LAST_LAYER_SELECTIONS),
    "masktune.threshold_std": Number(0.0),
    "randmask.cutout_sides": IntList(length=2, minimum=1, maximum=10_000, ascending=True),
    "randmask.seed": Int(0),
    "finetune.epochs": Int(1),
    "finetune.lr": Number(0.0, exclusive_minimum=True, nullable=True),  # null: ERM's (checkpoint's or initial)
    "finetune.batch_size": Int(1, recipe=True),
    "finetune.alignment": Choice(options=ALIGNMENTS),
    "finetune.workers": Int(0, MAX_WORKERS),
    "finetune.seed": Int(0),
    "jtt.identification_epochs": Int(0, recipe=True),
    "jtt.error_set_pass": Choice(options=ERROR_SET_PASSES),
    "jtt.lr": Number(0.0, exclusive_minimum=True, recipe=True),
    "jtt.weight_decay": Number(0.0, recipe=True),
    "jtt.batch_size": Int(1, recipe=True),
    "jtt.workers": Int(0, MAX_WORKERS),
    "jtt.seed": Int(0),
    "dfr.c_grid": NumberList(),
    "dfr.tune_splits": Int(1),
    "dfr.refits": Int(1),
    "dfr.seed": Int(0),
    "dfr.workers": Int(0, MAX_WORKERS),
    "exmap.heatmaps": Choice(options=HEATMAPS),
    "exmap.gamma": Number(0.0),
    "exmap.heatmap_size": Int(0, recipe=True),
    "exmap.batch_size": Int(1, recipe=True),
    "exmap.workers": Int(0, MAX_WORKERS),
    "exmap.clustering": Choice(options=CLUSTERINGS, recipe=True),
    "exmap.clusters": AutoInt(minimum=1, recipe=True),
    "exmap.seed": Int(0),
    "clusterfix.backbone": Choice(options=FEATURE_BACKBONES, recipe=True),
    "clusterfix.weights_path": FilePath(nullable=True),
    "clusterfix.clusters_per_class": Int(1, recipe=True),
    "clusterfix.workers": Int(0, MAX_WORKERS),
    "clusterfix.seed": Int(0, nullable=True),
    "clusterfix.ssl_objective": Choice(options=SSL_OBJECTIVES, recipe=True),
    "clusterfix.ssl_epochs": Int(1, recipe=True),
    "clusterfix.ssl_lr": Number(0.0, exclusive_minimum=True, recipe=True),
    "clusterfix.ssl_weight_decay": Number(0.0, recipe=True),
    "clusterfix.ssl_batch_size": Int(2, recipe=True),
    "clusterfix.ssl_temperature": Number(0.0, exclusive_minimum=True),
    "clusterfix.ssl_colour_strength": Number(0.0),
    "clusterfix.ssl_crop_scale": Number(0.0, 1.0, exclusive_minimum=True),
    "clusterfix.ssl_mask_ratio": Number(0.0, 1.0),
    "upsample.upweight": Int(0, recipe=True),
    "upsample.epochs": Int(1, recipe=True),
    "upsample.lr": Number(0.0, exclusive_minimum=True, recipe=True),
    "upsample.weight_decay": Number(0.0, recipe=True),
    "upsample.batch_size": Int(1, recipe=True),
    "upsample.workers": Int(0, MAX_WORKERS),
    "upsample.seed": Int(0),
    "cluster_reweight.beta": Number(0.0, recipe=True),
    "cluster_reweight.momentum": Number(0.0, 1.0),
    "cluster_reweight.optimizer": Choice(options=OPTIMIZERS, recipe=True),
    "cluster_reweight.lr": Number(0.0, exclusive_minimum=True, recipe=True),
    "cluster_reweight.weight_decay": Number(0.0, recipe=True),
    "cluster_reweight.batch_size": Int(1, recipe=True),
    "cluster_reweight.epochs": Int(1, recipe=True),
    "cluster_reweight.lr_schedule": Choice(options=LR_SCHEDULES, recipe=True),
    "cluster_reweight.statistics": Choice(options=WEIGHT_STATISTICS),
    "cluster_reweight.val_losses_into_train_buffer": Bool(),
    "cluster_reweight.workers": Int(0, MAX_WORKERS),
    "cluster_reweight.seed": Int(0, nullable=True),
    "groupdro.step_size": Number(0.0, exclusive_minimum=True),
    "groupdro.adjustment": Number(0.0, recipe=True),
    "groupdro.reweight_groups": Bool(),
    "groupdro.lr": Number(0.0, exclusive_minimum=True, recipe=True),
    "groupdro.weight_decay": Number(0.0, recipe=True),
    "groupdro.batch_size": Int(1, recipe=True),
    "groupdro.epochs": Int(1, recipe=True),
    "groupdro.workers": Int(0, MAX_WORKERS),
    "groupdro.seed": Int(0),
    "mask_examples_per_group": Int(1, 16),
    "evaluate.workers": Int(0, MAX_WORKERS),
    "selective.control_seed_offsets": IntSet(minimum=1),
    "selective.coverages": NumberList(maximum=100),
}
RECIPE_KEYS = tuple(key for key, field in SCHEMA.items() if field.recipe)


def lookup(values: Mapping, key: str) -> Any:
    """The value at dotted `key`; UserError naming the key when it is missing."""
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise UserError(f"{SOURCE}: missing key '{key}'")
        node = node[part]
    return node


def _leaves(node: Mapping, prefix: str = "") -> Iterator[str]:
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value and key not in SCHEMA:  # a mapping-valued param is one leaf
            yield from _leaves(value, key + ".")
        else:
            yield key


def _known_keys() -> list[str]:
    return list(SCHEMA) + [f"recipes.{name}.{key}" for name in DATASET_NAMES for key in RECIPE_KEYS]


def _check_pairs(methods: Mapping) -> None:
    """Every pair reads a groups file the listed group inference writes, and no two models share a name."""
    files = group_files(methods)
    names = [*methods["erm"], *methods["masking"]]
    for kind in PAIR_KINDS:
        for name, pair in methods[kind].items():
            if pair["groups"] not in files:
                raise UserError(f"{SOURCE}: methods.{kind}.{name}.groups is {pair['groups']!r}, which no listed group "
                                f"inference writes (written: {', '.join(files) or 'none'}; e.g. list exmap in "
                                "methods.exmap for exmap_global and exmap_local)")
            if name in names:
                raise UserError(f"{SOURCE}: methods.{kind}.{name}: the name {name!r} is already a model of `methods`")
            names.append(name)


def validate(values: Mapping) -> None:
    """Check every param of the pipeline: each key's type and bounds, every dataset's recipe complete
    and valid, no unknown key (a typo would otherwise be silently ignored). Raises the first problem
    as a one-line UserError naming the key."""
    if not isinstance(values, Mapping):
        raise UserError(f"{SOURCE}: expected a mapping at the top level")
    for key, field in SCHEMA.items():
        field.check(key, lookup(values, key))
    for name in DATASET_NAMES:
        for key in RECIPE_KEYS:
            full = f"recipes.{name}.{key}"
            value = lookup(values, full)
            if value is None:
                raise invalid(full, SCHEMA[key].expected() + " (a recipe value may not be null)", value)
            SCHEMA[key].check(full, value)
    _check_pairs(values["methods"])
    known = _known_keys()
    for key in _leaves(values):
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{SOURCE}: unknown key '{key}'{hint}")
