"""What every method is: a name, a kind (its stages), a paper, the model it produces, and whether it
uses group labels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class GroupLabels:
    """Whether a method uses the group labels (label x spurious attribute) of the training set to
    train, and of the validation set to select its model: the ✗/✓ columns of the literature."""
    training: bool
    model_selection: bool

    @staticmethod
    def mark(used: bool) -> str:
        return "✓" if used else "✗"

    def __str__(self) -> str:
        return f"{self.mark(self.training)}/{self.mark(self.model_selection)}"

    def as_dict(self) -> dict[str, bool]:
        return {"training": self.training, "model_selection": self.model_selection}


class Method:
    """One entry of the registry. Subclasses set the class attributes and add their kind's steps."""

    name: ClassVar[str]
    kind: ClassVar[str]           # the list under `methods` that runs it (schema.METHOD_KINDS)
    title: ClassVar[str]          # for reports: the method and its paper
    group_labels: ClassVar[GroupLabels] = GroupLabels(training=False, model_selection=False)
    # True where the model fine-tunes ERM's (MaskTune, RandMask): selective classification scores it
    # with ERM's by the official product score (stage `selective`).
    fine_tunes_erm: ClassVar[bool] = False

    def model_file(self, models_dir: str | Path) -> Path:
        """The checkpoint `evaluate` reads for this method."""
        return Path(models_dir) / f"{self.name}.pt"

    def reported_models(self, models_dir: str | Path) -> dict[str, tuple[str, Path]]:
        """{model name: (title, checkpoint)} of every model `evaluate` reports for this method: one, but
        for methods with variants (ExMap: G-ExMap and L-ExMap)."""
        return {self.name: (self.title, self.model_file(models_dir))}

    def checkpoint_info(self, group_labels: GroupLabels | None = None) -> dict:
        """What a checkpoint of this method records about it (read back by `evaluate`)."""
        return {"method": self.name, "group_labels": (group_labels or self.group_labels).as_dict()}
