"""Every method of the project, found by its module's `SPEC` (masktune/methods says what a spec is), and the
lists derived from them. Imported by `check_params` and the tests only: a stage imports its own method."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from masktune.methods import Spec

# the packages whose every module this one imports by name (scripts/dvc_deps.py reads this literal)
DISCOVERS = ("masktune.masking", "masktune.group_inference", "masktune.robust_train", "masktune.last_layer")
ROLES = dict(zip(("masking", "group_inference", "robust_train", "last_layer"), DISCOVERS))


def _modules(package: str) -> list[str]:
    imported = importlib.import_module(package)
    return sorted(m.name for m in pkgutil.iter_modules(imported.__path__, package + "."))


def specs() -> dict[str, Spec]:
    """{method name: spec} of every method of the project, found by its module's `SPEC` (or `SPECS`)."""
    found: dict[str, Spec] = {}
    for role, package in ROLES.items():
        for name in _modules(package):
            module = importlib.import_module(name)
            for spec in getattr(module, "SPECS", ()) or ((module.SPEC,) if hasattr(module, "SPEC") else ()):
                if spec.role != role:
                    raise ValueError(f"{name}: SPEC {spec.name!r} has role {spec.role!r}, its package is {role!r}")
                if spec.name in found:
                    raise ValueError(f"two methods are named {spec.name!r}")
                found[spec.name] = Spec(**{**spec.__dict__, "module": name})
    return found


def family_names(registry: Mapping[str, Spec]) -> dict[str, tuple[str, ...]]:
    """{family of `methods`: the names it accepts}: ERM, the maskers, each group inference's names."""
    families: dict[str, tuple[str, ...]] = {"erm": ("erm",)}
    for spec in registry.values():
        if spec.role in ("masking", "group_inference"):
            families[spec.family] = families.get(spec.family, ()) + (spec.names or (spec.name,))
    return families


def trainer_names(registry: Mapping[str, Spec], role: str) -> tuple[str, ...]:
    return tuple(name for name, spec in registry.items() if spec.role == role)


def group_files(registry: Mapping[str, Spec], methods: Mapping) -> dict[str, str]:
    """{groups file: the group inference that writes it} of the group inference `methods` lists."""
    files = {}
    for spec in registry.values():
        if spec.role == "group_inference":
            for name in methods.get(spec.family, ()):
                if name in (spec.names or (spec.name,)):
                    files |= {file: spec.name for file in spec.groups_files(name)}
    return files


def groups_title(registry: Mapping[str, Spec], file: str) -> str:
    """The report's name of a groups file ("JTT's error set"), from the spec that writes it."""
    for spec in registry.values():
        if file in spec.groups_titles:
            return spec.groups_titles[file]
    return file


def pipeline_configs() -> dict[str, type]:
    """{stage of dvc.yaml: its config class} of the stages that are no method's own: the pipeline's spine."""
    from masktune.datasets.spec import PrepareConfig
    from masktune.eval.choice import ChooseConfig
    from masktune.eval.compare import EvaluateConfig
    from masktune.eval.selective import SelectiveConfig
    from masktune.saliency.compute import SaliencyConfig
    from masktune.train.finetune import FinetuneConfig
    from masktune.train.network import TrainErmConfig, TrainErmControlConfig

    return {"prepare": PrepareConfig, "train_erm": TrainErmConfig, "train_erm_control": TrainErmControlConfig,
            "compute_saliency": SaliencyConfig, "finetune": FinetuneConfig, "evaluate": EvaluateConfig,
            "choose": ChooseConfig, "selective": SelectiveConfig}


def stage_config(stage: str, methods: Mapping, registry: Mapping[str, Spec] | None = None) -> type:
    """The config class of DVC's stage `stage` (`robust_train@jtt`: its pair's trainer's) for the `methods` param."""
    name, _, item = stage.partition("@")
    shared = pipeline_configs()
    if name in shared:
        return shared[name]
    registry = registry or specs()
    if name in ("robust_train", "last_layer"):
        trainer = methods.get(name, {}).get(item, {}).get("trainer")
        if trainer in registry and name in registry[trainer].configs:
            return registry[trainer].configs[name]
    for spec in registry.values():
        if name in spec.configs and item in (spec.names or (spec.name,)):
            return spec.configs[name]
    raise ValueError(f"no stage config named {stage!r}")
