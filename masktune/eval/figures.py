"""The figures `dvc plots show` renders: the mask image grid (original / saliency / masked, a few images
per group), ExMap's 2-D embedding of its heatmaps, and the CSV of group accuracies behind the bar chart."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from masktune.io.files import atomic_output


def pick_per_group(groups: np.ndarray, per_group: int) -> np.ndarray:
    """`per_group` indices spread evenly over each group present (datasets are often sorted by
    class or digit, so the first few would all look alike), group by group."""
    picked = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        picked.append(members[np.unique(np.linspace(0, len(members) - 1, per_group).round().astype(int))])
    return np.concatenate(picked)


def save_mask_grid(path: str | Path, originals: np.ndarray, saliency: np.ndarray, masked: np.ndarray,
                   row_labels: list[str], title: str) -> None:
    """One row per image: the raw image, its saliency map over it, the masked image."""
    rows = len(originals)
    fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.7 * rows + 0.5), squeeze=False)
    for row in range(rows):
        image = originals[row]
        axes[row, 0].imshow(image)
        axes[row, 1].imshow(image.mean(axis=-1), cmap="gray")
        axes[row, 1].imshow(saliency[row], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[row, 2].imshow(masked[row])
        axes[row, 0].set_ylabel(row_labels[row], fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], ("original", "XGradCAM", "masked")):
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def save_embedding_figure(path: str | Path, xy: np.ndarray, colourings: dict[str, tuple[np.ndarray, dict]],
                          title: str) -> None:
    """A 2-D embedding of points, one panel per colouring: {panel title: (ids per point, {id: name})}."""
    fig, axes = plt.subplots(1, len(colourings), figsize=(4.2 * len(colourings), 4.4), squeeze=False)
    for ax, (name, (ids, names)) in zip(axes[0], colourings.items()):
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for i, key in enumerate(sorted(names)):
            chosen = ids == key
            ax.scatter(xy[chosen, 0], xy[chosen, 1], s=2, color=cmap(i % cmap.N), label=f"{names[key]} ({chosen.sum()})",
                       rasterized=True)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=6, markerscale=4, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_group_csv(path: str | Path, results: dict) -> None:
    """`model | split | group, accuracy` rows: the bar chart `dvc plots show` draws."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model_split_group", "accuracy"])
        for name, splits in results.items():
            for split, metrics in splits.items():
                for group, accuracy in metrics.get("groups", {}).items():
                    writer.writerow([f"{name} | {split} | {group}", f"{accuracy:.6f}"])
