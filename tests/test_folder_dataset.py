"""The `folder` dataset (a user's own images): both layouts on fixtures in their real on-disk form,
against torchvision's ImageFolder, and every error a user can make, each as one line from `prepare`."""
from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
import sys
from types import MappingProxyType

import h5py
import numpy as np
import pytest
import yaml
from conftest import ROOT, committed_params
from fixtures_datasets import (
    CSV_CLASSES,
    CSV_COUNTS,
    FOLDER_CLASSES,
    FOLDER_COUNTS,
    make_csv_index,
    make_image_folder,
    save_huge_png,
)
from PIL import Image
from pipeline_checks import ALL_STAGES, FEW_METHODS, FEW_MODELS, SMALL_RUN, InProcessRun, evaluation_of, stages_of

from masktune.data.prepared import open_prepared
from masktune.data.views import PLAIN, DatasetViews
from masktune.datasets.folder import (
    group_names,
    read_csv_index,
    read_image_folder,
    stores_view_pixels,
    to_records,
    view_preset,
)
from masktune.datasets.spec import PrepareConfig
from masktune.errors import UserError
from masktune.eval.report import NO_GROUPS_NOTE


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("own") / "images")


@pytest.fixture(scope="module")
def csv_index(tmp_path_factory):
    return make_csv_index(tmp_path_factory.mktemp("own_csv"))


def test_image_folder_lists_what_torchvision_imagefolder_lists(image_folder):
    from torchvision.datasets import ImageFolder

    data = read_image_folder(image_folder)
    records = to_records(data)
    assert list(records) == ["train", "val", "test", "test_shifted"]
    assert data.class_names() == FOLDER_CLASSES
    for split, r in records.items():
        reference = ImageFolder(str(image_folder / split))
        assert [str(r.path(i)) for i in range(len(r))] == [path for path, _ in reference.samples]
        assert r.labels.tolist() == [label for _, label in reference.samples]
        assert len(r) == FOLDER_COUNTS[split] * len(FOLDER_CLASSES)
    assert any("/more/" in p for p in records["train"].paths)  # nested folders are walked
    assert group_names(data) == {0: "cat", 1: "dog", 2: "fox"}  # no attribute: the groups are the classes
    assert records["test"].groups.tolist() == records["test"].labels.tolist()


def test_csv_index_keeps_its_order_ignores_extra_columns_and_groups_by_attribute(csv_index):
    data = read_csv_index(csv_index)
    with open(csv_index, newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = to_records(data)
    assert data.class_names() == ("bird", "cat", "dog") and data.attribute_names() == ("grass", "sand")
    train = [row for row in rows if row["split"] == "train"]
    assert list(records["train"].paths) == [row["path"] for row in train]  # the file's order
    classes = {"bird": 0, "cat": 1, "dog": 2}
    assert records["train"].labels.tolist() == [classes[row["label"]] for row in train]
    # group = attribute * classes + label: sand (1) dog (2) is 1 * 3 + 2 = 5
    expected = [(row["spurious"] == "sand") * 3 + classes[row["label"]] for row in train]
    assert records["train"].groups.tolist() == expected
    for split, per_group in CSV_COUNTS.items():
        assert np.bincount(records[split].groups, minlength=6).tolist() == list(per_group)
    assert group_names(data)[5] == "dog, spurious=sand"


def test_csv_integer_labels_sort_numerically(tmp_path):
    index = make_csv_index(tmp_path)
    text = index.read_text().replace(",bird,", ",10,").replace(",cat,", ",2,").replace(",dog,", ",9,")
    index.write_text(text)
    assert read_csv_index(index).class_names() == ("2", "9", "10")


def test_view_presets():
    assert view_preset("none", 224, "none") == PLAIN
    views = view_preset("imagenet", 64, "imagenet")
    assert views.evaluation.output_size(100, 80) == (64, 64)  # resize to 73 x 73, centre-crop 64
    assert views.masking == views.evaluation and views.mean == (0.485, 0.456, 0.406)
    assert view_preset("resize", 32, "none").masking.output_size(50, 70) == (32, 32)


def test_which_views_are_stored_as_pixels():
    options = {"transforms": "resize", "image_size": 32, "normalisation": "none"}
    assert stores_view_pixels(options, [10, 5], limit=10 * 32 * 32 * 3)
    assert not stores_view_pixels(options, [10, 5], limit=10 * 32 * 32 * 3 - 1)  # the largest split decides
    assert not stores_view_pixels({**options, "normalisation": "imagenet"}, [10, 5])
    assert not stores_view_pixels({**options, "transforms": "imagenet"}, [10, 5])  # random crops: per pass
    assert stores_view_pixels({**options, "transforms": "none"}, [10, 5], limit=0)  # as before: one size, small


def _prepare(tmp_path, **options) -> subprocess.CompletedProcess:
    params = committed_params()
    params["dataset"] = "folder"
    params["prepare"]["folder"].update({key: (str(v) if hasattr(v, "parent") else v) for key, v in options.items()})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    return subprocess.run([sys.executable, "-m", "stages.prepare", "--out", "prepared.h5"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          check=False)


def _one_line_error(result: subprocess.CompletedProcess, tmp_path) -> str:
    """The stage failed with exit 2, one line on stderr, and wrote nothing."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert not (tmp_path / "prepared.h5").exists()
    return lines[0]


def test_csv_prepares_pixels_as_they_are(tmp_path):
    """transforms none + normalisation none: decoded once and stored as pixels, like biased MNIST, with
    greyscale images copied to three channels; the file records classes, groups and test splits."""
    index = make_csv_index(tmp_path / "data")
    result = _prepare(tmp_path, csv=index)
    assert result.returncode == 0, result.stderr
    prepared, spec = open_prepared(tmp_path / "prepared.h5")
    assert spec.views == PLAIN and spec.test_splits == ("test",) and spec.num_classes == 3 and spec.groups_known
    assert prepared.class_names == ("bird", "cat", "dog")
    assert prepared.group_names[5] == "dog, spurious=sand"
    with h5py.File(tmp_path / "prepared.h5", "r") as f:
        images = f["train/images"][()]
    paths = read_csv_index(index).paths["train"]
    assert images.shape == (sum(CSV_COUNTS["train"]), 28, 28, 3)
    grey = next(i for i, p in enumerate(paths) if Image.open(index.parent / p).mode == "L")
    expected = np.asarray(Image.open(index.parent / paths[grey]))
    assert np.array_equal(images[grey], np.repeat(expected[..., None], 3, axis=-1))


def test_image_folder_resized_once_is_stored_as_the_pixels_every_pass_would_see(tmp_path, image_folder):
    """transforms resize: the view decoded and resized once by prepare (JPEG and PNG, greyscale, sizes
    varying), exactly torchvision's Resize on the decoded image, which every pass computed before; the
    later stages read it as it is."""
    from torchvision.transforms import Compose

    result = _prepare(tmp_path, dir=image_folder, transforms="resize", image_size=32)
    assert result.returncode == 0, result.stderr
    prepared, spec = open_prepared(tmp_path / "prepared.h5")
    assert spec.test_splits == ("test", "test_shifted") and not spec.groups_known
    assert spec.views == PLAIN and json.loads(prepared.attrs["stored_view"]) == [["Resize", [32, 32]]]
    assert prepared.group_names == {0: "cat", 1: "dog", 2: "fox"}
    resize = Compose(view_preset("resize", 32, "none").evaluation.transforms())
    records = to_records(read_image_folder(image_folder))
    for split in ("train", "test_shifted"):
        pixels = prepared.pixels(split)
        assert pixels.shape == (len(records[split]), 32, 32, 3)
        for i in range(len(records[split])):
            with Image.open(records[split].path(i)) as image:
                assert np.array_equal(pixels[i], np.asarray(resize(image.convert("RGB"))))


@pytest.mark.parametrize("alignment", ["stretch", "crop"])
def test_masktune_masks_a_resized_folder_on_its_files_as_the_official_code_does(tmp_path, image_folder, alignment):
    """The finetune's masked images of a folder stored as a resized view are the official recipe, written
    out by hand (src/utils/data_save_load.py, apply_mask_and_save_individual_image_in_png): the view mask
    resized to the file with cv2's nearest neighbour (`stretch`), the file's pixels zeroed under it, then
    the view's Resize again. Zeroing the stored view instead (issue 38) differs on every masked image."""
    import cv2
    from torchvision.transforms import Compose

    from masktune.data.masks import write_masks
    from masktune.data.splits import RemaskedViewSplit, mask_source, open_split

    assert _prepare(tmp_path, dir=image_folder, transforms="resize", image_size=32).returncode == 0
    prepared, spec = open_prepared(tmp_path / "prepared.h5")
    assert prepared.stores_files("train") and not any(prepared.stores_files(s) for s in ("val", *spec.test_splits))
    rows = prepared.length("train")
    masks = np.random.default_rng(0).random((rows, 32, 32)) < 0.3
    write_masks(tmp_path / "masks.h5", rows, (32, 32), [(0, masks)], {"method": "masktune"})
    source = mask_source(prepared, spec.views, tmp_path / "masks.h5", alignment)
    split = open_split(prepared, "train", spec.views, "train", masks=source)
    assert isinstance(split, RemaskedViewSplit)
    index = np.arange(rows)[::-1]
    got = split.pixels(index)
    resize = Compose(view_preset("resize", 32, "none").evaluation.transforms())
    records = to_records(read_image_folder(image_folder))["train"]
    for k, i in enumerate(index):
        original = np.asarray(Image.open(records.path(i)).convert("RGB"))
        if alignment == "stretch":  # the official line, cv2 and all
            on_file = cv2.resize(np.where(masks[i], 0, 1).astype(np.uint8), dsize=original.shape[1::-1],
                                 interpolation=cv2.INTER_NEAREST)[..., None]
        else:  # through the resize's exact geometry: the view pixel each file pixel's centre falls in
            rows_, cols_ = ((np.arange(n) + 0.5) * 32 / n for n in original.shape[:2])
            on_file = (~masks[i][rows_.astype(int)[:, None], cols_.astype(int)[None]])[..., None]
        expected = np.asarray(resize(Image.fromarray((original * on_file).astype(np.uint8))))
        assert np.array_equal(got[k], expected), (alignment, i)
    stored = prepared.pixels("train", index)
    assert not np.array_equal(got, np.where(masks[index][..., None], 0, stored))  # not the view zeroed


def test_files_of_the_views_size_are_not_kept_beside_their_pixels(tmp_path):
    """28 x 28 files read with `resize` to 28: the view is the file, so masking the view is masking the file
    (no bytes kept, the pixel path's speed); to 32, the training files are kept, and only theirs."""
    index = make_csv_index(tmp_path / "data")
    for size, kept in ((28, False), (32, True)):
        assert _prepare(tmp_path, csv=index, transforms="resize", image_size=size).returncode == 0
        prepared, spec = open_prepared(tmp_path / "prepared.h5")
        assert spec.views == PLAIN and prepared.stores_files("train") is kept
        assert not any(prepared.stores_files(split) for split in ("val", *spec.test_splits))


def test_image_folder_prepares_encoded_files_with_their_views(tmp_path, image_folder):
    """A normalisation (or a random train transform, or pixels over the limit): the files' bytes."""
    result = _prepare(tmp_path, dir=image_folder, transforms="resize", image_size=32, normalisation="imagenet")
    assert result.returncode == 0, result.stderr
    prepared, spec = open_prepared(tmp_path / "prepared.h5")
    assert spec.views == view_preset("resize", 32, "imagenet") and prepared.attrs["stored_view"] == ""
    with h5py.File(tmp_path / "prepared.h5", "r") as f:
        first = f["train/paths"][0].decode()
        assert f["train/encoded"][f["train/offsets"][0]:f["train/offsets"][1]].tobytes() == \
            (image_folder / first).read_bytes()  # the file's bytes, not re-encoded


def test_layout_params_are_exactly_one(tmp_path, image_folder, csv_index):
    assert "set exactly one of prepare.folder.dir" in _one_line_error(_prepare(tmp_path), tmp_path)
    both = _one_line_error(_prepare(tmp_path, dir=image_folder, csv=csv_index), tmp_path)
    assert "are both set; keep one: add `-S prepare.folder.csv=null` to read the folder" in both
    assert str(image_folder) in both and str(csv_index) in both  # the stale value is named


def test_missing_listed_image_is_named(tmp_path):
    index = make_csv_index(tmp_path / "data")
    with open(index, newline="") as handle:
        row = list(csv.DictReader(handle))[3]
    (index.parent / row["path"]).unlink()
    line = _one_line_error(_prepare(tmp_path, csv=index), tmp_path)
    assert line.startswith(f"error: {index.parent / row['path']}: image listed in {index} (line 5) not found")


def test_unreadable_image_is_named(tmp_path):
    """Both storage paths: decoded to pixels (a CSV of 28 x 28 PNGs), and kept encoded (resized)."""
    index = make_csv_index(tmp_path / "data")
    with open(index, newline="") as handle:
        broken = index.parent / list(csv.DictReader(handle))[7]["path"]
    broken.write_bytes(broken.read_bytes()[:60])  # truncated PNG
    assert _one_line_error(_prepare(tmp_path, csv=index), tmp_path).startswith(f"error: {broken}: cannot read image")
    folder = make_image_folder(tmp_path / "images", {"train": 2, "val": 1, "test": 1})
    broken = folder / "val" / "dog" / "dog_000.jpg"
    broken.write_bytes(broken.read_bytes()[:100])  # truncated JPEG
    line = _one_line_error(_prepare(tmp_path, dir=folder, transforms="resize"), tmp_path)
    assert line.startswith(f"error: {broken}: cannot read image")


def test_unknown_split_is_named(tmp_path):
    index = make_csv_index(tmp_path / "data")
    lines = index.read_text().splitlines()
    lines[4] = lines[4].replace(",train,", ",trian,").replace(",val,", ",trian,").replace(",test,", ",trian,")
    index.write_text("\n".join(lines) + "\n")
    line = _one_line_error(_prepare(tmp_path, csv=index), tmp_path)
    assert line == f"error: {index}: line 5: unknown split 'trian' (splits are train, val, test and test_<name>)"
    folder = make_image_folder(tmp_path / "images", {"train": 1, "val": 1, "validation": 1})
    line = _one_line_error(_prepare(tmp_path, dir=folder), tmp_path)
    assert line == f"error: {folder / 'validation'}: unknown split 'validation' (splits are train, val, test and test_<name>)"


def test_label_only_in_test_is_refused(tmp_path):
    folder = make_image_folder(tmp_path / "images", {"train": 1, "val": 1, "test": 1})
    make_image_folder(tmp_path / "extra", {"test": 1}, classes=("wolf",))
    (folder / "test" / "wolf").symlink_to(tmp_path / "extra" / "test" / "wolf")
    line = _one_line_error(_prepare(tmp_path, dir=folder, transforms="resize"), tmp_path)
    assert line == (f"error: {folder}: label 'wolf' appears in 'test' but not in 'train' "
                    "(no method can learn a class it never sees)")


def test_empty_split_and_missing_test_split(tmp_path):
    index = make_csv_index(tmp_path / "data", {"train": (1,) * 6, "val": (1,) * 6, "test": (1,) * 6})
    lines = index.read_text().splitlines()
    index.write_text("\n".join([lines[0], *(row for row in lines[1:] if ",val," not in row)]) + "\n")
    line = _one_line_error(_prepare(tmp_path, csv=index), tmp_path)
    assert line.endswith("split 'val' is empty (every dataset needs train, val and a test split)")
    folder = make_image_folder(tmp_path / "images", {"train": 1, "val": 1})
    assert _one_line_error(_prepare(tmp_path, dir=folder), tmp_path).endswith(
        "no test split (name one `test` or `test_<name>`)")
    (folder / "test" / "cat").mkdir(parents=True)
    assert _one_line_error(_prepare(tmp_path, dir=folder), tmp_path) == \
        f"error: {folder / 'test' / 'cat'}: class folder has no images " \
        f"(.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)"


def test_images_of_several_sizes_need_a_resize(tmp_path, image_folder):
    line = _one_line_error(_prepare(tmp_path, dir=image_folder), tmp_path)
    assert "with prepare.folder.transforms none every image must have one size (use resize or imagenet" in line


def test_group_column_reads_as_the_attribute(tmp_path):
    index = make_csv_index(tmp_path / "data")
    index.write_text(index.read_text().replace(",spurious,", ",group,", 1))
    data = read_csv_index(index)
    assert data.attribute_column == "group" and group_names(data)[0] == "bird, group=grass"
    index.write_text(index.read_text().replace("id,", "spurious,", 1))
    with pytest.raises(UserError, match="both a 'spurious' and a 'group' column"):
        read_csv_index(index)


def test_prepared_attributes_are_json(tmp_path, csv_index):
    result = _prepare(tmp_path, csv=csv_index)
    assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "prepared.h5", "r") as f:
        assert json.loads(f.attrs["test_splits"]) == ["test"]
        assert f.attrs["views"] == PLAIN.to_json() and DatasetViews.from_json(f.attrs["views"]) == PLAIN
        assert (f.attrs["average"], f.attrs["metrics"]) == ("accuracy", "groups")
        assert f.attrs["exif_orientation"] == "ignore"  # the param's default, as torchvision reads images


# ---------------------------------------------------------------------------------------------
# Both layouts through the whole pipeline, every registered method


@pytest.mark.slow
def test_own_image_folder_runs_the_methods_and_reports_classes(tmp_path, image_folder):
    """An ImageFolder tree: 3 classes, JPEG and PNG, greyscale, nested folders, sizes varying (resized to
    32 x 32), two test splits, no spurious attribute: the report is per class and says so. The methods that
    read the images (FEW_METHODS; every method runs end to end on biased MNIST in tests/test_pipeline_e2e.py
    and every registered piece in tests/test_method_contract.py), their stages in this process (CI time)."""
    project = InProcessRun(tmp_path / "project", {**copy.deepcopy(SMALL_RUN), "methods": FEW_METHODS, "dataset": "folder",
                                                  "prepare": {"folder": {"dir": str(image_folder), "transforms": "resize",
                                                                         "image_size": 32}}})
    assert project.stages == stages_of(FEW_METHODS, ALL_STAGES)
    evaluation = evaluation_of(project, FEW_MODELS)
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())
    for model in FEW_MODELS:
        assert list(headline[model]) == ["test", "test_shifted"]
        test = evaluation[model]["test_shifted"]
        assert set(test["classes"]) == set(FOLDER_CLASSES) == set(test["groups"])
        assert headline[model]["test_shifted"] == {"average": test["accuracy"],
                                                   "worst_class": test["worst_class_accuracy"]}
    assert NO_GROUPS_NOTE in (project.path / "metrics/comparison.md").read_text()


@pytest.mark.slow
def test_own_csv_index_runs_with_its_groups(tmp_path, csv_index):
    """A CSV index with extra columns and a spurious attribute: 3 classes x 2 attributes = 6 groups,
    28 x 28 PNGs (some greyscale) stored as pixels, group metrics reported (the methods that read the
    images, in this process)."""
    project = InProcessRun(tmp_path / "project", {**copy.deepcopy(SMALL_RUN), "methods": FEW_METHODS, "dataset": "folder",
                                                  "prepare": {"folder": {"csv": str(csv_index), "transforms": "none"}}})
    with h5py.File(project.path / "data/prepared.h5", "r") as f:
        assert f["train/images"].shape[1:] == (28, 28, 3)  # pixels, as biased MNIST
    evaluation = evaluation_of(project, FEW_MODELS)
    headline = json.loads((project.path / "metrics/evaluate.json").read_text())
    for model in FEW_MODELS:
        test = evaluation[model]["test"]
        assert len(test["groups"]) == 6 and "dog, spurious=sand" in test["groups"]
        assert headline[model]["test"]["worst_group"] == min(test["groups"].values())


def _folder_error(options: dict) -> str:
    from masktune.datasets.folder import read_folder_dataset

    with pytest.raises(UserError) as error:
        read_folder_dataset({"dir": None, "csv": None, "allow_overlap": False, **options})
    return str(error.value)


def test_links_are_followed_only_within_their_class_folder_and_once(tmp_path):
    """Issue 27's probe: `train/a/loop -> ..` listed class b's images under a (1640 images, rc 0)."""
    folder = make_image_folder(tmp_path / "images", {"train": 4, "val": 1, "test": 1})  # the 4th in cat/more/
    inside = folder / "train" / "cat" / "alias"
    inside.symlink_to(folder / "train" / "cat" / "more")  # the class's own nested folder, a second time
    message = _folder_error({"dir": folder})
    assert message.endswith("reached a second time through a link: its images would be listed twice (or without "
                            "end); remove the link")
    inside.unlink()
    loop = folder / "train" / "cat" / "loop"
    loop.symlink_to("..")
    message = _folder_error({"dir": folder})
    assert message.startswith(f"{loop}: a link to {(folder / 'train').resolve()}, the split folder, another class's")
    loop.unlink()
    (folder / "train" / "cat" / "foxes").symlink_to(folder / "train" / "fox")
    assert "another class's folder" in _folder_error({"dir": folder})
    (folder / "train" / "cat" / "foxes").unlink()
    (folder / "train" / "cat" / "more").rename(tmp_path / "elsewhere")  # a folder outside the dataset
    (folder / "train" / "cat" / "inner").mkdir()
    (folder / "train" / "cat" / "inner" / "up").symlink_to(tmp_path / "elsewhere")
    from masktune.datasets.folder import read_folder_dataset

    paths = read_folder_dataset({"dir": folder, "csv": None, "allow_overlap": False}).paths["train"]
    assert "train/cat/inner/up/cat_003.png" in paths and len(paths) == 12  # followed as torchvision does


def test_one_class_in_train_hidden_class_folders_and_equal_integer_labels_are_named(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", {"train": 1, "val": 1, "test": 1}, classes=("a", "b"))
    (folder / "train" / "b").rename(folder / "train" / "...")
    message = _folder_error({"dir": folder})
    assert message == f"{folder}: 'train' has 1 class ('a'): a classifier needs at least 2"
    assert f"{folder / 'train'}: skipped hidden folder(s) ..." in capsys.readouterr().out
    index = make_csv_index(tmp_path / "csv")
    index.write_text(index.read_text().replace(",bird,", ",01,").replace(",cat,", ",1,").replace(",dog,", ",2,"))
    assert _folder_error({"csv": index}) == f"{index}: labels '01' and '1' are the same integer; write each class one way"


def test_repeated_files_mislabelled_overlapping_or_duplicated_are_named(tmp_path, capsys):
    from masktune.datasets.folder import read_folder_dataset

    index = make_csv_index(tmp_path / "csv")
    header, *rows = index.read_text().splitlines()
    train = [row for row in rows if ",train," in row]
    test = [row for row in rows if ",test," in row]
    leaked = test[0].replace(",test,", ",train,")  # a test image also in train
    index.write_text("\n".join([header, *rows, leaked]) + "\n")
    message = _folder_error({"csv": index})
    assert message.startswith(f"{index}: files listed in two splits: 1 in test and train (e.g. ") and message.endswith(
        "remove them from one split, or set prepare.folder.allow_overlap: true")
    read_folder_dataset({"dir": None, "csv": index, "allow_overlap": True})
    assert "files listed in two splits (allowed by prepare.folder.allow_overlap): 1 in test and train" in \
        capsys.readouterr().out
    index.write_text("\n".join([header, *rows, train[0]]) + "\n")  # a duplicate row
    read_folder_dataset({"dir": None, "csv": index, "allow_overlap": False})
    assert "1 file(s) listed more than once within a split, each copy counted" in capsys.readouterr().out
    path, label = train[0].split(",")[1], train[0].split(",")[2]
    relabelled = train[0].replace(f",{label},", ",cat," if label != "cat" else ",dog,")
    index.write_text("\n".join([header, *rows, relabelled]) + "\n")
    message = _folder_error({"csv": index})
    assert message.startswith(f"{index}: {(index.parent / path).resolve()} is listed as class ")


# ---------------------------------------------------------------------------------------------
# The probe of the folder dataset: a limit that kept one class, duplicate CSV columns, look-alike labels,
# a val split missing a class, 12-bit data in 16-bit PNGs, decompression bombs, notes printed twice


def _config(**options) -> PrepareConfig:
    """A prepare config of the folder dataset: the committed params with `options` over them."""
    values = {**committed_params()["prepare"]["folder"], **{k: (str(v) if hasattr(v, "parent") else v)
                                                            for k, v in options.items()}}
    return PrepareConfig(dataset="folder", options=MappingProxyType(values), download=False, download_dir=None)


def _prepare_in_process(config: PrepareConfig) -> tuple[dict, dict]:
    """What `stages.prepare` does with one config: the file attributes, then the splits."""
    from masktune.datasets.folder import SPEC

    return SPEC.file_attributes(config), SPEC.prepare(config)


def test_limit_takes_each_splits_images_in_turns_from_every_class(tmp_path):
    """Issue probe: `limit: 10` on a 3-class ImageFolder (listed class by class) trained on one class while val
    and test had three, rc 0. The images are taken in turns from each class, in each class's own order, and
    kept in the split's order; a limit below a split's number of classes is refused."""
    from masktune.datasets.folder import read_folder_dataset

    folder = make_image_folder(tmp_path / "images", {"train": 5, "val": 2, "test": 2})
    full = read_image_folder(folder)
    data = read_folder_dataset({"dir": folder, "csv": None, "limit": 10})
    train = data.paths["train"]
    assert [data.labels["train"].count(c) for c in FOLDER_CLASSES] == [4, 3, 3]  # 10 = 3 turns of 3, then cat
    assert train == [p for p in full.paths["train"] if p in train]  # the split's order
    for c, n in zip(FOLDER_CLASSES, (4, 3, 3)):  # each class's first images
        assert [p for p in train if f"/{c}/" in p] == [p for p in full.paths["train"] if f"/{c}/" in p][:n]
    assert data.paths["val"] == full.paths["val"]  # 6 images, within the limit
    _, splits = _prepare_in_process(_config(dir=folder, transforms="resize", image_size=32, limit=10))
    assert np.bincount(splits["train"].labels).tolist() == [4, 3, 3]
    index = make_csv_index(tmp_path / "csv")  # rows shuffled: attributes follow their rows
    limited = read_csv_index(index, limit=7)
    full = read_csv_index(index)
    rows = dict(zip(full.paths["train"], full.attributes["train"]))
    assert [limited.labels["train"].count(c) for c in CSV_CLASSES] == [3, 2, 2]
    assert limited.attributes["train"] == [rows[p] for p in limited.paths["train"]]
    assert _folder_error({"dir": folder, "limit": 2}) == (
        "params.yaml: prepare.folder.limit is 2, fewer than the 3 classes of split 'train': every class needs an "
        "image; set it to at least 3 (or null: every image)")


def test_csv_column_read_twice_is_refused(tmp_path):
    """Issue probe: a CSV with two `label` columns silently used the last one."""
    index = make_csv_index(tmp_path / "data")
    header, *rows = index.read_text().splitlines()
    assert header == "id,path,label,split,spurious,notes"
    index.write_text("\n".join(["id,path,label,split,spurious,label", *rows]) + "\n")
    assert _folder_error({"csv": index}) == (
        f"{index}: column 'label' appears twice in the header (columns 3 and 6): keep one, or rename the other")
    index.write_text("\n".join(["id,path,label,split,spurious,spurious", *rows]) + "\n")
    assert "column 'spurious' appears twice in the header (columns 5 and 6)" in _folder_error({"csv": index})
    index.write_text("\n".join(["notes,path,label,split,spurious,notes", *rows]) + "\n")
    assert read_csv_index(index).class_names() == CSV_CLASSES  # a column not read may repeat


def test_labels_are_one_class_whatever_their_unicode_form_and_control_characters_are_refused(tmp_path):
    """Issue probe: 'café' spelled composed (NFC) and decomposed (NFD, as macOS writes folder names) made two
    classes; a NUL in a label made another. Names are read in NFC; a control character is refused, naming
    the line (CSV) or the split folder (ImageFolder); attribute values alike."""
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    index = make_csv_index(tmp_path / "data")
    header, *rows = index.read_text().splitlines()
    index.write_text("\n".join([header, *(r.replace(",cat,", f",{nfc if ',train,' in r else nfd},") for r in rows)])
                     + "\n")
    data = read_csv_index(index)
    assert data.class_names() == ("bird", nfc, "dog") and set(data.labels["val"]) == {"bird", nfc, "dog"}
    with_nul = [header, *rows]
    with_nul[4] = with_nul[4].replace(",sand,", ",sand\x00,").replace(",grass,", ",grass\x00,")
    index.write_text("\n".join(with_nul) + "\n")
    assert _folder_error({"csv": index}).startswith(f"{index}: line 5: spurious ")
    assert _folder_error({"csv": index}).endswith("holds a control character, '\\x00' (U+0000): remove it from the name")
    with_nul[4] = rows[3].replace(",bird,", ",bird\x00,").replace(",cat,", ",cat\x00,").replace(",dog,", ",dog\x00,")
    index.write_text("\n".join(with_nul) + "\n")
    assert _folder_error({"csv": index}).startswith(f"{index}: line 5: label ")
    folder = make_image_folder(tmp_path / "images", {"train": 1}, classes=(nfc, "dog"))
    make_image_folder(folder, {"val": 1, "test": 1}, classes=(nfd, "dog"))
    data = read_image_folder(folder)
    assert data.class_names() == (nfc, "dog") and data.labels["test"] == [nfc, "dog"]
    assert data.paths["test"][0].startswith(f"test/{nfd}/")  # the file as it is named
    (folder / "test" / "dog").rename(folder / "test" / "do\tg")
    assert _folder_error({"dir": folder}) == (f"{folder / 'test'}: class folder 'do\\tg' holds a control character, "
                                              "'\\t' (U+0009): remove it from the name")


def test_every_class_of_train_must_be_in_val_a_test_split_may_lack_one(tmp_path):
    """Issue probe: a val split missing a class passed `prepare`, and DFR failed late. Refused by `prepare`
    in one line; a test split missing a class is accepted, saying nothing."""
    index = make_csv_index(tmp_path / "data")
    header, *rows = index.read_text().splitlines()
    index.write_text("\n".join([header, *(r for r in rows if not (",val," in r and ",dog," in r))]) + "\n")
    line = _one_line_error(_prepare(tmp_path, csv=index), tmp_path)
    assert line == (f"error: {index}: split 'val' has no image of class 'dog' (1 of 3 classes of 'train' missing): "
                    "model selection and DFR's last layer need every class in val; add some of its images")
    index.write_text("\n".join([header, *(r for r in rows if not (",test," in r and ",dog," in r))]) + "\n")
    assert read_csv_index(index).class_names() == CSV_CLASSES


@pytest.mark.parametrize("normalisation", ["none", "imagenet"])
def test_twelve_bit_data_in_sixteen_bit_pngs_is_said_once_per_split(tmp_path, capsys, normalisation):
    """Issue probe: 16-bit PNGs holding 12-bit values (at most 4095) were scaled by 255 / 65535 to 16 grey
    levels without a word. The scale stays the format's (masktune.data.prepared.to_rgb says why), and one
    line per split says how many images use at most 12 bits: pixels decoded by `prepare` (normalisation
    none) and files kept as they are (imagenet) alike."""
    index = make_csv_index(tmp_path / "data")
    data = read_csv_index(index)
    twelve = np.rint(np.linspace(0, 4095, 28 * 28)).astype(np.uint16).reshape(28, 28)  # as a 12-bit sensor gives
    full = twelve.astype(np.uint32) * 16  # the same data on the 16-bit range
    for k, path in enumerate(data.paths["train"][:3]):  # two 12-bit, one full-range
        Image.fromarray((twelve if k < 2 else full).astype(np.uint16)).save(index.parent / path)
        assert Image.open(index.parent / path).mode == "I;16"
    Image.fromarray(full.astype(np.uint16)).save(index.parent / data.paths["val"][0])
    config = _config(csv=index, normalisation=normalisation)
    _, splits = _prepare_in_process(config)
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "12 bits" in line] == [(
        f"{index}: 2 of the 3 16-bit greyscale images of 'train' use at most 12 bits (largest value 4095 of 65535); "
        "kept at the 16-bit scale, x 255 / 65535, they span at most 17 of the 256 grey levels: to use them all, "
        "rescale the files to the 16-bit range (e.g. x 16)")]
    if normalisation == "none":
        pixels = splits["train"].images
        assert np.array_equal(pixels[0][..., 0], np.rint(twelve * (255 / 65535))) and pixels[0].max() == 16
        assert pixels[2].max() == 255


def test_an_image_too_large_to_decode_is_refused_from_its_header(tmp_path, monkeypatch):
    """Issue probe: a 140 KB PNG decoded to 1.5 GB, Pillow's own guard (89 M pixels) letting it through.
    Over 8192 x 8192 pixels an image is refused in one line naming it and its size, before any decoding
    (a 9000 x 8000 PNG of 9 KB here), in both storage paths; a lowered limit refuses a small image."""
    from masktune.data import prepared

    index = make_csv_index(tmp_path / "data")
    huge = index.parent / read_csv_index(index).paths["val"][1]
    save_huge_png(huge, 9000, 8000)
    expected = (f"error: {huge}: image is 9000 x 8000 pixels (width x height: 72,000,000): more than the 67,108,864 "
                "pixels (8192 x 8192) an image may have to be decoded (masktune.data.prepared.MAX_IMAGE_PIXELS); "
                "downscale it, or cut it into tiles")
    assert _one_line_error(_prepare(tmp_path, csv=index), tmp_path) == expected
    Image.new("L", (40, 40), 7).save(huge)
    monkeypatch.setattr(prepared, "MAX_IMAGE_PIXELS", 1000)
    for options in ({}, {"transforms": "resize", "normalisation": "imagenet"}):
        with pytest.raises(UserError, match=re.escape(f"{huge}: image is 40 x 40 pixels (width x height: 1,600)")):
            _prepare_in_process(_config(csv=index, **options))


def test_folder_notes_are_printed_once_per_prepare_run(tmp_path):
    """Issue probe: `prepare` read the folder twice (file attributes, then splits), and each read printed
    its notes: a skipped hidden folder was said twice."""
    folder = make_image_folder(tmp_path / "images", {"train": 2, "val": 1, "test": 1})
    (folder / "train" / ".thumbnails").mkdir()
    result = _prepare(tmp_path, dir=folder, transforms="resize", image_size=32)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("skipped hidden folder(s) .thumbnails") == 1
