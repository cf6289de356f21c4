"""scripts/make_coloured_mnist.py: coloured-background MNIST (5 digits x 5 colours = 25 groups) as a
folder dataset with a CSV index, built from a tiny synthetic MNIST in the real IDX format."""
from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_datasets import make_mnist
from PIL import Image

from masktune.datasets.folder import group_names, read_csv_index, to_records
from masktune.datasets.mnist_idx import load_mnist

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_coloured_mnist.py"
LIMIT = 300  # the first 300 images of each synthetic file: about 150 digits 0-4 in each


def _load_script():
    spec = importlib.util.spec_from_file_location("make_coloured_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cm = _load_script()
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
           "magenta": (255, 0, 255)}
COLOUR_INDEX = {name: i for i, name in enumerate(COLOURS)}


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    return make_mnist(tmp_path_factory.mktemp("synthetic-mnist"), n_train=400, n_test=400)


def _run(mnist_dir: Path, out: Path, *extra: str) -> Path:
    cm.main(["--mnist-dir", str(mnist_dir), "--out", str(out), "--limit", str(LIMIT), *extra])
    return out


@pytest.fixture(scope="module")
def built(mnist_dir, tmp_path_factory) -> Path:
    return _run(mnist_dir, tmp_path_factory.mktemp("out") / "coloured")


def _rows(out: Path) -> tuple[list[str], list[dict]]:
    with open(out / "index.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _expected_draw(mnist, correlation: float, seed: int, limit: int):
    """The documented draw, reproduced independently: colours of train/val/test and the val mask."""
    rng = np.random.default_rng(seed)
    train_digits = mnist["train"][1][:limit]
    labels = train_digits[train_digits < 5]
    n = len(labels)
    keep = rng.random(n) < correlation
    other = rng.integers(0, 4, n)
    others = [[c for c in range(5) if c != label] for label in labels]
    colours = np.array([label if k else others[i][o] for i, (label, k, o) in enumerate(zip(labels, keep, other))])
    val = np.zeros(n, dtype=bool)
    val[rng.permutation(n)[:round(0.2 * n)]] = True
    test_digits = mnist["test"][1][:limit]
    test_colours = rng.integers(0, 5, (test_digits < 5).sum())
    return labels, colours, val, test_digits[test_digits < 5], test_colours


def test_csv_columns_rows_and_layout(built, mnist_dir):
    columns, rows = _rows(built)
    assert columns == ["path", "label", "split", "spurious"]
    mnist = load_mnist(mnist_dir)
    labels, colours, val, test_labels, test_colours = _expected_draw(mnist, 0.95, 0, LIMIT)
    assert len(rows) == len(labels) + len(test_labels) == 153 + 151
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    assert [len(v) for v in by_split.values()] == [122, 31, 151]  # round(0.2 * 153) in val
    expected = {"train": (labels[~val], colours[~val]), "val": (labels[val], colours[val]),
                "test": (test_labels, test_colours)}
    for split, split_rows in by_split.items():
        width = len(str(len(split_rows)))
        digits, split_colours = expected[split]
        assert [r["label"] for r in split_rows] == [f"digit_{d}" for d in digits]
        assert [COLOUR_INDEX[r["spurious"]] for r in split_rows] == split_colours.tolist()  # exactly as drawn
        assert [r["path"] for r in split_rows] == [f"{split}/{r['label']}/{i:0{width}d}.png"
                                                   for i, r in enumerate(split_rows)]
    pngs = sorted(p.relative_to(built).as_posix() for p in built.rglob("*.png"))
    assert pngs == sorted(r["path"] for r in rows)
    assert sorted(p.name for p in built.iterdir()) == ["index.csv", "test", "train", "val"]  # no temporary left
    assert not built.with_name(built.name + ".partial").exists()


def test_pixels_are_the_white_digit_over_the_colour(built, mnist_dir):
    _, rows = _rows(built)
    mnist = load_mnist(mnist_dir)
    train_grey = mnist["train"][0][:LIMIT][mnist["train"][1][:LIMIT] < 5]
    _, _, val, _, _ = _expected_draw(mnist, 0.95, 0, LIMIT)
    grey = {"train": train_grey[~val], "val": train_grey[val],
            "test": mnist["test"][0][:LIMIT][mnist["test"][1][:LIMIT] < 5]}
    index = {"train": 0, "val": 0, "test": 0}
    checked_background = 0
    for row in rows:
        image = Image.open(built / row["path"])
        assert image.mode == "RGB" and image.size == (28, 28)
        pixels = np.asarray(image)
        g = grey[row["split"]][index[row["split"]]]
        index[row["split"]] += 1
        colour = np.array(COLOURS[row["spurious"]], dtype=np.float64)
        v = g.astype(np.float64)[..., None] / 255
        np.testing.assert_array_equal(pixels, np.rint(v * 255 + (1 - v) * colour).astype(np.uint8))
        assert (pixels[g == 255] == 255).all()  # the synthetic digit's stroke: white
        assert (pixels[10:20, 5 + 2 * int(row["label"][-1])] == 255).all()
        if (g == 0).any():  # a background pixel without digit ink: exactly the colour
            assert tuple(pixels[g == 0][0]) == COLOURS[row["spurious"]]
            checked_background += 1
    assert checked_background > 250


def test_folder_reader_sees_5_classes_and_25_groups(built):
    data = read_csv_index(built / "index.csv")
    assert data.class_names() == tuple(f"digit_{d}" for d in range(5))
    assert data.attribute_column == "spurious"
    assert data.attribute_names() == tuple(sorted(COLOURS))
    names = group_names(data)
    assert len(names) == 25 and len(set(names.values())) == 25
    assert names[0] == "digit_0, spurious=blue" and names[24] == "digit_4, spurious=yellow"
    records = to_records(data)
    assert {split: len(r) for split, r in records.items()} == {"train": 122, "val": 31, "test": 151}
    test_groups = {a * 5 + c for a, c in zip(records["test"].attributes, records["test"].labels)}
    assert len(test_groups) > 20  # 151 images spread over (almost) all 25 groups


def test_colour_agreement_follows_the_correlation_on_a_larger_set():
    rng = np.random.default_rng(1)
    n = 40_000
    mnist = {split: (np.zeros((n, 28, 28), np.uint8), rng.integers(0, 10, n)) for split in ("train", "test")}
    for correlation in (0.95, 0.7):
        splits = cm.build(mnist, correlation, seed=3)
        for name in ("train", "val"):
            counts = splits[name].group_counts()
            agree = np.trace(counts) / counts.sum()
            assert abs(agree - correlation) < 0.015, (name, correlation, agree)
            # the other colours are uniform: each off-diagonal cell about (1 - correlation) / 4 of its row
            off = (counts / counts.sum(1, keepdims=True))[~np.eye(5, dtype=bool)]
            assert np.abs(off - (1 - correlation) / 4).max() < 0.02
        assert len(splits["val"]) == round(0.2 * (len(splits["train"]) + len(splits["val"])))
        test = splits["test"].group_counts()
        assert (np.abs(test.sum(0) / test.sum() - 0.2) < 0.015).all()  # colours uniform in test
        assert abs(np.trace(test) / test.sum() - 0.2) < 0.015  # and independent of the class
    assert set(np.unique(cm.build(mnist, 0.95, seed=3)["test"].colours)) == set(range(5))


def test_test_colours_are_spread_over_all_five(built):
    _, rows = _rows(built)
    test = [r["spurious"] for r in rows if r["split"] == "test"]
    counts = {c: test.count(c) for c in COLOURS}
    assert min(counts.values()) >= 15, counts  # 151 images, about 30 each
    train = [r for r in rows if r["split"] == "train"]
    agree = sum(COLOURS[r["spurious"]] == list(COLOURS.values())[int(r["label"][-1])] for r in train)
    assert agree / len(train) > 0.85


def test_same_seed_same_bytes_other_seed_other_files(built, mnist_dir, tmp_path):
    again = _run(mnist_dir, tmp_path / "again")
    assert _files(again) == _files(built)
    other = _run(mnist_dir, tmp_path / "other", "--seed", "1")
    assert (other / "index.csv").read_bytes() != (built / "index.csv").read_bytes()
    assert _files(other) != _files(built)


def test_errors_are_one_line(tmp_path, built, mnist_dir):
    result = subprocess.run([sys.executable, str(SCRIPT), "--mnist-dir", str(tmp_path / "nowhere"),
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: --mnist-dir")
    assert "no such folder" in result.stderr and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit, match="exists"):
        _run(mnist_dir, built)
    with pytest.raises(SystemExit, match="too few digits"):
        _run(mnist_dir, tmp_path / "tiny", "--limit", "3")
    assert not (tmp_path / "tiny").exists() and not (tmp_path / "tiny.partial").exists()
