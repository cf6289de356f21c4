"""The registry of methods: one `Spec` per method, declared in the method's own module, from which every list
of the project derives (the names `methods` accepts, the groups files, the stages, the titles of the report,
the tests' registries).

A method is one module of its role's package, found by its `SPEC` (DomainBed's registry of algorithms, by
module): a masker (`masking/<name>.py`: MaskTune, RandMask), a group inference (`group_inference/<name>.py`:
the labels, JTT, ExMap, ClusterFix), a robust trainer (`robust_train/<name>.py`: upsampling, ClusterFix's
re-weighting, GroupDRO) or a last-layer trainer (`last_layer/<name>.py`: DFR). Adding one is its module (with
its `SPEC` and config) and its params section; no list elsewhere names it. Only `check_params` and the tests
import every method (`masktune.registry.specs()`); a stage imports its own method's module only, so
that editing one method reruns its own stages only, and a stage records what it needs of its spec (its title)
in its outputs.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    """What the pipeline knows of a method.

    `family`: the key of params.yaml's `methods` that lists it (`masking`, `labels`, `jtt`, `exmap`,
    `clusterfix`), or `robust_train` / `last_layer` for a trainer, which pairs name. `names`: the names that
    list accepts for it (a family may hold several: the labels' `true_groups` and `classes`). `stages`: the
    `foreach` stages of dvc.yaml it runs, each with its config class (`configs`). `groups_files(name)`: the
    groups files a group inference writes under that name. `title`: the report's name of its model, or of
    its groups ("JTT's error set"). `paper_pairs` (a trainer): {groups file: title} of the pairs its paper
    runs (JTT is the error set with upsampling)."""

    name: str
    role: str
    family: str
    title: str
    names: tuple[str, ...] = ()
    configs: Mapping[str, type] = field(default_factory=dict)
    groups_files: Callable[[str], tuple[str, ...]] | None = None
    groups_titles: Mapping[str, str] = field(default_factory=dict)
    paper_pairs: Mapping[str, str] = field(default_factory=dict)
    module: str = ""

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.configs)

    def pair_title(self, groups) -> str:
        """The report's name of this trainer on `groups` (a `masktune.groups.Groups`): its paper's
        (`paper_pairs`: JTT is the error set with upsampling), or `<trainer> with <groups>`."""
        return self.paper_pairs.get(groups.inference) or f"{self.title} with {groups.title}"
