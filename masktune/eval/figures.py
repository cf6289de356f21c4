"""The figures `dvc plots show` renders: the mask gallery (one image per class: original / saliency /
masked for its most and least masked training images, per group), ExMap's 2-D embedding of its
heatmaps, and the CSV of group accuracies behind the bar chart."""
from __future__ import annotations

import csv
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from masktune.io.files import atomic_output


def pick_gallery(labels: np.ndarray, groups: np.ndarray, fraction: np.ndarray, per_group: int) -> dict[int, np.ndarray]:
    """Rows to show per class: in each of its groups (a class without a known attribute is one group),
    the ceil(per_group / 2) most masked images, most first, then the floor(per_group / 2) least masked,
    least first; the extremes are what tells whether the saliency sits on the object or on a shortcut.
    Ties keep the dataset order (a stable sort), so the choice is deterministic."""
    gallery = {}
    for c in np.unique(labels):
        rows = []
        for g in np.unique(groups[labels == c]):
            members = np.flatnonzero((labels == c) & (groups == g))
            order = members[np.argsort(-fraction[members], kind="stable")]
            most = order[:(per_group + 1) // 2]
            shown = set(most.tolist())
            least = [r for r in order[::-1][:per_group // 2] if r not in shown]
            rows += [*most, *least]
        gallery[int(c)] = np.asarray(rows, dtype=np.int64)
    return gallery


def gallery_file_name(class_id: int, class_name: str) -> str:
    """`<id>_<name>.png` with the name reduced to characters every file system takes."""
    return f"{class_id:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', class_name).strip('_') or 'class'}.png"


def save_mask_gallery(folder: str | Path, rows_by_class: Mapping[int, np.ndarray], class_names: Sequence[str],
                      picked: np.ndarray, images: np.ndarray, saliency: np.ndarray, masked: np.ndarray,
                      captions: Mapping[int, str], title: str) -> None:
    """One PNG per class in `folder` (which must exist): `save_mask_grid` of that class's rows. `images`,
    `saliency` and `masked` hold the rows `picked`, in that order; `captions` is keyed by row."""
    position = {int(row): i for i, row in enumerate(picked)}
    for c, rows in rows_by_class.items():
        at = [position[int(r)] for r in rows]
        save_mask_grid(Path(folder) / gallery_file_name(c, class_names[c]), images[at], saliency[at], masked[at],
                       [captions[int(r)] for r in rows], f"{title}\nclass {class_names[c]}")


def save_mask_grid(path: str | Path, originals: np.ndarray, saliency: np.ndarray, masked: np.ndarray,
                   row_labels: list[str], title: str) -> None:
    """One row per image: the raw image, its saliency map over it, the masked image."""
    rows = len(originals)
    title = "\n".join(textwrap.fill(line, 64) for line in title.splitlines())
    head = 0.16 * (title.count("\n") + 1) + 0.05  # inches the title takes
    fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.7 * rows + head), squeeze=False)
    for row in range(rows):
        image = originals[row]
        axes[row, 0].imshow(image)
        axes[row, 1].imshow(image.mean(axis=-1), cmap="gray")
        axes[row, 1].imshow(saliency[row], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[row, 2].imshow(masked[row])
        axes[row, 0].set_ylabel(textwrap.fill(row_labels[row], 24), fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], ("original", "XGradCAM", "masked")):
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - head / fig.get_figheight()))
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


GROUP_LABEL_COLOURS = {"✗/✗": "#4c72b0", "✗/✓": "#dd8452", "✓/✓": "#c44e52"}  # none; selection only; both


def save_method_panels(path: str | Path, panels: Mapping[str, Mapping[str, tuple[float, float | None]]],
                       uses: Mapping[str, str], title: str, reference: str | None = "erm") -> None:
    """The method comparison at a glance: one panel per (split, measure), a bar per model in the same order in
    every panel, coloured by its group-label use (train / select: ✗/✗, ✗/✓, ✓/✓; the legend says which),
    +- whiskers where a spread is given (over seeds), and `reference`'s value (ERM) as a dashed line across
    the panel. `panels`: {panel title: {model: (value, spread or None)}}; `uses`: {model: "✗/✗"}."""
    models = list(uses)
    columns = min(len(panels), 2)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 0.28 * len(models) * rows + 1.6 * rows),
                             squeeze=False, sharey=True)
    for ax, (panel, values) in zip(axes.flat, panels.items()):
        means = [values[m][0] for m in models]
        spreads = [values[m][1] or 0.0 for m in models]
        ax.barh(range(len(models)), means, xerr=spreads if any(spreads) else None, capsize=2,
                color=[GROUP_LABEL_COLOURS.get(uses[m], "#8c8c8c") for m in models])
        if reference in values:
            ax.axvline(values[reference][0], color="black", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_title(panel, fontsize=10)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_yticks(range(len(models)), models, fontsize=8)
    axes[0, 0].invert_yaxis()  # the report's order from the top (the panels share the axis: once)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUP_LABEL_COLOURS.values()]
    labels = [f"group labels {u} (train/select)" for u in GROUP_LABEL_COLOURS]
    if reference is not None:
        handles.append(plt.Line2D([0], [0], color="black", linestyle="--"))
        labels.append(f"{reference} (reference)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def save_curves(path: str | Path, panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                title: str, xlabel: str, ylabel: str) -> None:
    """One panel per key of `panels`, one step line per curve {name: (x, y)}: the image twin of the
    risk-coverage `dvc plots` template."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (panel, curves) in zip(axes[0], panels.items()):
        for name, (x, y) in curves.items():
            ax.step(x, y, where="post", label=name, linewidth=1)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=6)
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
