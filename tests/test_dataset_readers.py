"""Readers of the real Waterbirds, CelebA and IN-9L formats, on tiny fixtures in those formats."""
from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masktune.data.samples import ImageRecords
from masktune.datasets import celeba, in9l, waterbirds
from masktune.datasets.celeba import read_celeba
from masktune.datasets.in9l import read_in9l
from masktune.datasets.readers import check_images, image_size, load_rgb
from masktune.datasets.waterbirds import read_waterbirds
from masktune.errors import UserError
from tests.fixtures_datasets import (
    CELEBA_COUNTS,
    WATERBIRDS_COUNTS,
    make_celeba,
    make_in9l,
    make_waterbirds,
    save_huge_png,
    save_jpeg,
)


def raises(message: str):
    """pytest.raises(UserError) whose one-line message contains `message` literally."""
    return pytest.raises(UserError, match=re.escape(message))


def group_counts(records: ImageRecords) -> tuple[int, ...]:
    return tuple(int(n) for n in np.bincount(records.groups, minlength=4))


def edit_csv(path: Path, edit) -> None:
    """Rewrite a CSV file through `edit(rows)` (rows[0] is the header)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    edit(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def set_cell(path: Path, line: int, column: str, value: str) -> None:
    def edit(rows):
        rows[line - 1][rows[0].index(column)] = value
    edit_csv(path, edit)


# ---------------------------------------------------------------------------------------------
# Waterbirds


@pytest.fixture(scope="module")
def waterbirds_root(tmp_path_factory) -> Path:
    return make_waterbirds(tmp_path_factory.mktemp("waterbirds"))


def test_waterbirds_fixture_reads_back_as_constructed(waterbirds_root):
    splits = read_waterbirds(waterbirds_root)
    assert list(splits) == ["train", "val", "test"]
    for split, records in splits.items():
        assert len(records) == sum(WATERBIRDS_COUNTS[split])
        assert group_counts(records) == WATERBIRDS_COUNTS[split]
        assert records.root == waterbirds_root
        assert all(records.path(i).is_file() for i in range(len(records)))
        assert records.labels.dtype == np.int64 and records.attributes.dtype == np.int64
    # rows keep the metadata file's order; source_index is the data row
    with open(waterbirds_root / "metadata.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = splits["train"]
    assert [rows[i]["img_filename"] for i in train.source_index] == list(train.paths)
    assert [int(rows[i]["place"]) for i in train.source_index] == train.attributes.tolist()
    assert np.all(np.diff(train.source_index) > 0)
    assert sum(len(r) for r in splits.values()) == len(rows) == 32
    assert (waterbirds.NUM_CLASSES, len(waterbirds.GROUP_NAMES)) == (2, 4)


def test_waterbirds_group_is_2_place_plus_y_on_hand_made_rows(tmp_path):
    # (y, place) of four hand-written rows, in a shuffled order, all in the test split
    rows = [(1, 1), (0, 0), (0, 1), (1, 0), (0, 0), (1, 0)]
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for i, (y, place) in enumerate(rows, start=1):
        save_jpeg(tmp_path / f"birds/{i}.jpg", np.full((8, 8, 3), 100, np.uint8))
        lines.append(f"{i},birds/{i}.jpg,{y},2,{place},/x/{i}.jpg")
    lines += ["7,birds/1.jpg,0,0,0,/x/7.jpg", "8,birds/1.jpg,0,1,0,/x/8.jpg"]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    test = read_waterbirds(tmp_path)["test"]
    assert test.groups.tolist() == [3, 0, 2, 1, 0, 1]
    assert test.labels.tolist() == [y for y, _ in rows]
    assert test.attributes.tolist() == [place for _, place in rows]
    names = [waterbirds.GROUP_NAMES[g] for g in test.groups]
    assert names == ["waterbird_water", "landbird_land", "landbird_water", "waterbird_land",
                     "landbird_land", "waterbird_land"]
    assert waterbirds.GROUP_NAMES == {0: "landbird_land", 1: "waterbird_land", 2: "landbird_water",
                                      3: "waterbird_water"}
    # target Place (ClusterFix's second task): the background is the label, the bird the attribute
    place = read_waterbirds(tmp_path, target="Place")["test"]
    assert place.labels.tolist() == [p for _, p in rows] and place.attributes.tolist() == [y for y, _ in rows]
    assert [waterbirds.PLACE_GROUP_NAMES[g] for g in place.groups] == [
        "water_waterbird", "land_landbird", "water_landbird", "land_waterbird", "land_landbird", "land_waterbird"]


def test_waterbirds_errors_name_the_file_line_and_column(tmp_path):
    root = make_waterbirds(tmp_path / "wb")
    metadata = root / "metadata.csv"
    backup = metadata.read_bytes()

    def restore():
        metadata.write_bytes(backup)

    with raises(f"{tmp_path / 'nowhere'}: Waterbirds folder not found"):
        read_waterbirds(tmp_path / "nowhere")
    metadata.unlink()
    with raises(f"{metadata}: Waterbirds metadata file not found"):
        read_waterbirds(root)
    restore()
    edit_csv(metadata, lambda rows: [row.__delitem__(4) for row in rows])
    with raises(f"{metadata}: missing column 'place' (found: img_id, img_filename, y, split, place_filename)"):
        read_waterbirds(root)
    for line, column, value, message in [
        (3, "split", "3", "line 3: column 'split' must be 0, 1 or 2 (train/val/test), got '3'"),
        (5, "split", "x", "line 5: column 'split' must be 0, 1 or 2 (train/val/test), got 'x'"),
        (4, "y", "2", "line 4: column 'y' must be 0 or 1 (landbird/waterbird), got '2'"),
        (6, "y", "-1", "line 6: column 'y' must be 0 or 1 (landbird/waterbird), got '-1'"),
        (2, "place", "water", "line 2: column 'place' must be 0 or 1 (land/water), got 'water'"),
    ]:
        restore()
        set_cell(metadata, line, column, value)
        with raises(f"{metadata}: {message}"):
            read_waterbirds(root)
    restore()
    edit_csv(metadata, lambda rows: [row.__setitem__(3, "0") for row in rows[1:] if row[3] == "1"])
    with raises(f"{metadata}: no rows with split 1 (val)"):
        read_waterbirds(root)
    metadata.write_bytes(b"img_id,img_filename,y,split,place\n1,\xff\xfe.jpg,0,0,0\n")
    with raises(f"{metadata}: not a readable CSV file ("):
        read_waterbirds(root)
    restore()
    missing = read_waterbirds(root)["val"].path(1)
    missing.unlink()
    with raises(f"{missing}: image listed in {metadata} (line "):
        read_waterbirds(root)
    with raises("(1 of 32 listed images are missing)"):
        read_waterbirds(root)


# ---------------------------------------------------------------------------------------------
# CelebA


@pytest.fixture(scope="module")
def celeba_roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("celeba")
    return {
        "csv": make_celeba(base / "csv", formats=("csv",)),
        "txt": make_celeba(base / "txt", formats=("txt",)),
        "both": make_celeba(base / "both", formats=("csv", "txt")),
        "nested": make_celeba(base / "nested", formats=("csv",), nested=True),
    }


def test_celeba_fixture_reads_back_as_constructed(celeba_roots):
    root = celeba_roots["csv"]
    splits = read_celeba(root)
    assert list(splits) == ["train", "val", "test"]
    first_ids = []
    for split, records in splits.items():
        assert len(records) == sum(CELEBA_COUNTS[split])
        assert group_counts(records) == CELEBA_COUNTS[split]
        assert all(records.path(i).is_file() for i in range(len(records)))
        assert all(p.startswith("img_align_celeba/") and p.count("/") == 1 for p in records.paths)
        first_ids.append(records.paths[0].rsplit("/", 1)[1])
    # ids run through train, val, test as in the real partition file
    assert first_ids == ["000001.jpg", "000013.jpg", "000019.jpg"]
    assert splits["val"].source_index.tolist() == list(range(12, 18))
    assert celeba.GROUP_NAMES == {0: "not_blond_female", 1: "blond_female", 2: "not_blond_male",
                                  3: "blond_male"}
    assert celeba.group_names() == celeba.GROUP_NAMES


def test_celeba_csv_txt_and_both_give_identical_records(celeba_roots):
    reference = read_celeba(celeba_roots["csv"])
    for variant in ("txt", "both"):
        other = read_celeba(celeba_roots[variant])
        for split in reference:
            a, b = reference[split], other[split]
            assert a.paths == b.paths and len(a) > 0
            for name in ("labels", "attributes", "source_index"):
                assert np.array_equal(getattr(a, name), getattr(b, name))
            assert b == ImageRecords(celeba_roots[variant], a.paths, a.labels, a.attributes, a.source_index)


def test_celeba_nested_and_flat_image_folders(celeba_roots):
    flat, nested = read_celeba(celeba_roots["csv"]), read_celeba(celeba_roots["nested"])
    for split in flat:
        assert all(p.startswith("img_align_celeba/img_align_celeba/") for p in nested[split].paths)
        assert [p.replace("img_align_celeba/", "", 1) for p in nested[split].paths] == list(flat[split].paths)
        assert np.array_equal(nested[split].groups, flat[split].groups)
        assert all(nested[split].path(i).is_file() for i in range(len(nested[split])))


def test_celeba_target_and_spurious_are_arguments(celeba_roots):
    default = read_celeba(celeba_roots["txt"])
    swapped = read_celeba(celeba_roots["txt"], target="Male", spurious="Blond_Hair")
    for split in default:
        assert np.array_equal(swapped[split].labels, default[split].attributes)
        assert np.array_equal(swapped[split].attributes, default[split].labels)
    other = read_celeba(celeba_roots["csv"], target="Eyeglasses", spurious="Young")
    assert sum(len(r) for r in other.values()) == 24
    assert celeba.group_names("Eyeglasses", "Young")[2] == "not_eyeglasses_young"
    with raises("the target and the spurious attribute must differ"):
        read_celeba(celeba_roots["csv"], target="Male", spurious="Male")


def test_celeba_errors_name_the_file_line_and_column(tmp_path):
    root = make_celeba(tmp_path / "c", formats=("csv",))
    attrs, partition = root / "list_attr_celeba.csv", root / "list_eval_partition.csv"
    originals = {path: path.read_bytes() for path in (attrs, partition)}

    def restore():
        for path, data in originals.items():
            path.write_bytes(data)

    with raises(f"{attrs}: unknown attribute 'Blonde_Hair' (did you mean Blond_Hair"):
        read_celeba(root, target="Blonde_Hair")
    with raises(f"{attrs}: unknown attribute 'Mael' (did you mean Male"):
        read_celeba(root, spurious="Mael")
    set_cell(attrs, 3, "Male", "0")
    with raises(f"{attrs}: line 3: column 'Male' must be -1 or 1, got '0'"):
        read_celeba(root)
    restore()
    set_cell(attrs, 7, "Blond_Hair", "yes")
    with raises(f"{attrs}: line 7: column 'Blond_Hair' must be -1 or 1, got 'yes'"):
        read_celeba(root)
    restore()
    set_cell(attrs, 5, "Smiling", "0")  # an attribute not used is not checked
    assert len(read_celeba(root)["train"]) == 12
    restore()
    edit_csv(attrs, lambda rows: rows[4].pop())
    with raises(f"{attrs}: line 5: 40 fields, expected 41 (the image and 40 attributes)"):
        read_celeba(root)
    restore()
    edit_csv(attrs, lambda rows: rows[0].__setitem__(0, "image"))
    with raises(f"{attrs}: missing column 'image_id' as the first column (found: image, 5_o_Clock_Shadow"):
        read_celeba(root)
    restore()
    set_cell(partition, 4, "partition", "3")
    with raises(f"{partition}: line 4: column 'partition' must be 0, 1 or 2 (train/val/test), got '3'"):
        read_celeba(root)
    restore()
    edit_csv(partition, lambda rows: rows[0].__setitem__(1, "split"))
    with raises(f"{partition}: missing column 'partition' (found: image_id, split)"):
        read_celeba(root)
    restore()
    edit_csv(partition, lambda rows: rows.pop(6))
    with raises(f"{partition}: no partition for image '000006.jpg' (listed in list_attr_celeba.csv line 7)"):
        read_celeba(root)
    restore()
    edit_csv(partition, lambda rows: [row.__setitem__(1, "0") for row in rows[1:] if row[1] == "2"])
    with raises(f"{partition}: no image of the attribute file has partition 2 (test)"):
        read_celeba(root)
    restore()
    (root / "img_align_celeba" / "000009.jpg").unlink()
    with raises(f"{root / 'img_align_celeba' / '000009.jpg'}: image listed in {attrs} (line 10) not found"):
        read_celeba(root)
    shutil.rmtree(root / "img_align_celeba")
    with raises(f"{root / 'img_align_celeba'}: CelebA image folder not found"):
        read_celeba(root)
    partition.unlink()
    with raises(f"{partition}: CelebA file not found (nor list_eval_partition.txt)"):
        read_celeba(root)


def test_celeba_txt_errors(tmp_path):
    root = make_celeba(tmp_path / "c", formats=("txt",))
    attrs = root / "list_attr_celeba.txt"
    lines = attrs.read_text().splitlines()
    attrs.write_text("\n".join(lines[:-2]) + "\n")
    with raises(f"{attrs}: line 1 says 24 images, the file lists 22 (truncated?)"):
        read_celeba(root)
    changed = lines[3].split()
    changed[celeba.ATTRIBUTE_NAMES.index("Male") + 1] = "2"
    attrs.write_text("\n".join([*lines[:3], " ".join(changed), *lines[4:]]) + "\n")
    with raises(f"{attrs}: line 4: column 'Male' must be -1 or 1, got '2'"):
        read_celeba(root)
    attrs.write_text("\n".join(lines[1:]) + "\n")
    with raises(f"{attrs}: expected the image count on line 1 and the attribute names on line 2"):
        read_celeba(root)
    attrs.write_text("\n".join(lines) + "\n")
    (root / "list_attr_celeba.csv").write_bytes(b"image_id,Male\n\xff\xfe\x00\x81,1\n")  # the CSV wins
    with raises(f"{root / 'list_attr_celeba.csv'}: not a readable text table ("):
        read_celeba(root)
    (root / "list_attr_celeba.csv").unlink()
    partition = root / "list_eval_partition.txt"
    partition.write_text(partition.read_text().replace("000002.jpg 0", "000002.jpg 0 extra"))
    with raises(f"{partition}: line 2: 3 fields, expected 2"):
        read_celeba(root)


# ---------------------------------------------------------------------------------------------
# IN-9L


@pytest.fixture(scope="module")
def in9l_roots(tmp_path_factory) -> tuple[Path, Path]:
    return make_in9l(tmp_path_factory.mktemp("in9"))


def test_in9l_classes_from_folder_names_and_every_variant(in9l_roots):
    train_root, challenge_root = in9l_roots
    splits = read_in9l(train_root, challenge_root)
    assert list(splits) == ["train", "val", *in9l.TEST_SPLITS]
    assert in9l.TEST_SPLITS == ("test_original", "test_mixed_same", "test_mixed_rand", "test_mixed_next",
                                "test_only_fg", "test_no_fg", "test_only_bg_b", "test_only_bg_t")
    assert in9l.CLASS_NAMES == ("dog", "bird", "wheeled vehicle", "reptile", "carnivore", "insect",
                                "musical instrument", "primate", "fish")
    assert in9l.NUM_CLASSES == 9 and in9l.GROUP_NAMES[2] == "wheeled vehicle"
    per_class = {"train": 3, "val": 1} | {split: 1 for split in in9l.TEST_SPLITS}
    for split, records in splits.items():
        assert len(records) == 9 * per_class[split]
        assert records.labels.tolist() == np.repeat(np.arange(9), per_class[split]).tolist()
        assert [p.split("/")[0] for p in records.paths] == [in9l.CLASS_FOLDERS[y] for y in records.labels]
        assert not records.attributes.any()
        assert np.array_equal(records.groups, records.labels)
        assert all(records.path(i).is_file() for i in range(len(records)))
    assert splits["train"].root == train_root / "train" and splits["val"].root == train_root / "val"
    assert splits["test_mixed_rand"].root == challenge_root / "mixed_rand" / "val"
    assert splits["train"].paths[:3] == ("00_dog/n02084071_1000.JPEG", "00_dog/n02084071_1007.JPEG",
                                         "00_dog/n02084071_1014.JPEG")
    some = read_in9l(train_root, challenge_root, variants=("mixed_same", "original"))
    assert list(some) == ["train", "val", "test_mixed_same", "test_original"]
    assert some["test_original"] == splits["test_original"]


def test_in9l_official_layout_and_ignored_entries(tmp_path):
    train_root, challenge_root = make_in9l(tmp_path, train_per_class=1, variants=("original",))
    shutil.move(challenge_root, train_root / "test")  # official: dataset_dir/{train,val,test/<variant>/val}
    (train_root / "train" / "README.txt").write_text("x")
    (train_root / "train" / "misc").mkdir()
    (train_root / "train" / "00_dog" / "notes.txt").write_text("x")
    (train_root / "train" / "00_dog" / ".DS_Store").write_text("x")
    splits = read_in9l(train_root, train_root / "test", variants=("original",))
    assert len(splits["train"]) == 9 and len(splits["test_original"]) == 9


def test_in9l_errors_name_the_folder(tmp_path):
    train_root, challenge_root = make_in9l(tmp_path, train_per_class=1)
    shutil.rmtree(challenge_root / "mixed_same" / "val" / "03_reptile")
    with raises(f"{challenge_root / 'mixed_same' / 'val'}: missing class folder '03_reptile' (found: 00_dog, "):
        read_in9l(train_root, challenge_root)
    shutil.rmtree(challenge_root / "mixed_same")
    with raises(f"{challenge_root / 'mixed_same'}: Backgrounds Challenge variant folder not found (found: fg_mask, "):
        read_in9l(train_root, challenge_root)
    with raises("IN-9: unknown test variant 'mixed' (known: original, mixed_same"):
        read_in9l(train_root, challenge_root, variants=("mixed",))
    for image in (train_root / "val" / "05_insect").iterdir():
        image.unlink()
    with raises(f"{train_root / 'val' / '05_insect'}: class folder has no images"):
        read_in9l(train_root, challenge_root, variants=())
    (train_root / "train" / "09_tree").mkdir()
    with raises(f"{train_root / 'train'}: unexpected class folder '09_tree'"):
        read_in9l(train_root, challenge_root, variants=())
    with raises(f"{tmp_path / 'none'}: IN-9L training folder not found"):
        read_in9l(tmp_path / "none", challenge_root)


# ---------------------------------------------------------------------------------------------
# Images and records


def test_check_images_reports_truncated_and_missing_files(waterbirds_root, tmp_path):
    root = tmp_path / "wb"
    shutil.copytree(waterbirds_root, root)
    test = read_waterbirds(root)["test"]
    assert check_images(test) == 10
    truncated = test.path(3)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with raises(f"{truncated}: cannot read image (corrupted or truncated? image file is truncated"):
        check_images(test)
    with raises(f"{truncated}: cannot read image"):
        load_rgb(truncated)
    truncated.write_bytes(b"not an image at all")
    with raises(f"{truncated}: cannot read image"):
        check_images(test)
    truncated.unlink()
    with raises(f"{truncated}: image not found"):
        check_images(test)


def test_load_rgb_converts_every_mode(tmp_path):
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.new("CMYK", (5, 3), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("P", (3, 2), 0).save(tmp_path / "palette.png")
    out = load_rgb(tmp_path / "grey.png")
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    assert np.array_equal(load_rgb(tmp_path / "rgba.png"), np.broadcast_to([10, 20, 30], (4, 6, 3)))
    cmyk = load_rgb(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (3, 5, 3) and cmyk.min() >= 250  # CMYK 0,0,0,0 is white
    assert load_rgb(tmp_path / "palette.png").shape == (2, 3, 3)
    with raises(f"{tmp_path / 'nope.jpg'}: image not found"):
        load_rgb(tmp_path / "nope.jpg")


def test_image_records_groups_subset_and_checks(tmp_path):
    records = ImageRecords(tmp_path, ["a.jpg", "b.jpg", "c.jpg"], [0, 1, 1], [1, 0, 1])
    assert records.groups.tolist() == [2, 1, 3] and len(records) == 3
    assert records.source_index.tolist() == [0, 1, 2] and records.paths == ("a.jpg", "b.jpg", "c.jpg")
    part = records.subset([2, 0])
    assert part.paths == ("c.jpg", "a.jpg") and part.labels.tolist() == [1, 0]
    assert part.source_index.tolist() == [2, 0] and part.path(0) == tmp_path / "c.jpg"
    assert records == ImageRecords(tmp_path, ("a.jpg", "b.jpg", "c.jpg"), [0, 1, 1], [1, 0, 1])
    assert records != part
    with pytest.raises(ValueError):
        records.labels[0] = 5  # read-only
    with pytest.raises(ValueError, match="labels has 2 entries for 3 paths"):
        ImageRecords(tmp_path, ["a", "b", "c"], [0, 1], [0, 0, 0])


def test_fixtures_are_deterministic(tmp_path):
    first, second = make_waterbirds(tmp_path / "a"), make_waterbirds(tmp_path / "b")
    assert (first / "metadata.csv").read_bytes() == (second / "metadata.csv").read_bytes()
    records = read_waterbirds(first)["train"]
    assert records.path(0).read_bytes() == (second / records.paths[0]).read_bytes()
    grey = [p for p in records.paths if Image.open(first / p).mode == "L"]
    assert grey and load_rgb(first / grey[0]).shape[2] == 3


def test_sixteen_bit_grey_keeps_its_grey_levels_when_read_and_when_decoded_from_the_prepared_file(tmp_path):
    """A 16-bit ramp (every value 0..65535 once) within one 8-bit level of value x 255 / 65535, both where
    `prepare` reads pixels (`load_rgb`) and where training decodes stored file bytes (`EncodedImages`);
    Pillow's own convert("RGB") makes it 99.6% white."""
    from masktune.data.prepared import EncodedImages, write_prepared

    ramp = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    exact = np.repeat((ramp * (255 / 65535))[..., None], 3, axis=2)
    read = load_rgb(tmp_path / "ramp.png")
    assert np.abs(read - exact).max() <= 1.0 and len(np.unique(read)) == 256
    records = ImageRecords(tmp_path, ("ramp.png",), np.array([0]), np.array([0]))
    write_prepared(tmp_path / "p.h5", {"train": records}, {"dataset": "folder"})
    decoded = np.asarray(EncodedImages(tmp_path / "p.h5", "train")[0])
    assert np.array_equal(decoded, read)
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "wide.tif")  # 32-bit integer: no range to scale from
    with raises(f"{tmp_path / 'wide.tif'}: 32-bit integer pixels (mode 'I')"):
        load_rgb(tmp_path / "wide.tif")


def test_exif_orientation_is_ignored_by_default_and_applied_on_request(tmp_path):
    """A photo stored sideways with EXIF Orientation 6 (the viewer turns it 90 degrees clockwise): by
    default its pixels are read in stored order, as torchvision's ImageFolder reads them; with
    `exif_orientation: apply` upright, the same pixels turned, both where `prepare` reads pixels and
    where training decodes stored file bytes; `image_sizes` follow the orientation."""
    from masktune.data.prepared import EncodedImages, write_prepared

    stored = np.random.default_rng(0).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)  # 16 rows, 24 columns
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "photo.jpg", quality=100, exif=exif)
    as_stored = load_rgb(tmp_path / "photo.jpg")
    upright = load_rgb(tmp_path / "photo.jpg", "apply")
    assert as_stored.shape == (16, 24, 3) and upright.shape == (24, 16, 3)
    assert np.array_equal(upright, np.rot90(as_stored, k=-1))  # clockwise
    assert (image_size(tmp_path / "photo.jpg"), image_size(tmp_path / "photo.jpg", "apply")) == ((16, 24), (24, 16))
    records = ImageRecords(tmp_path, ("photo.jpg",), np.array([0]), np.array([0]))
    for orientation, expected in (("ignore", as_stored), ("apply", upright)):
        path = tmp_path / f"{orientation}.h5"
        write_prepared(path, {"train": records}, {"dataset": "folder", "exif_orientation": orientation})
        images = EncodedImages(path, "train")
        assert np.array_equal(np.asarray(images[0]), expected)
        assert tuple(images.sizes[0]) == expected.shape[:2]
    write_prepared(tmp_path / "older.h5", {"train": records}, {"dataset": "folder"})  # no attribute: ignore
    assert np.array_equal(np.asarray(EncodedImages(tmp_path / "older.h5", "train")[0]), as_stored)


def _png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (bit depth 16, colour type 2), written by hand: Pillow cannot save one."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_keeps_its_levels_when_read_and_when_decoded_from_the_prepared_file(tmp_path):
    """A 16-bit RGB ramp (every value 0..65535 once per channel, channels shuffled apart) within one 8-bit
    level of value x 255 / 65535, read for pixels and decoded from the prepared file's bytes alike."""
    from masktune.data.prepared import EncodedImages, write_prepared

    rng = np.random.default_rng(0)
    ramp = np.stack([rng.permutation(256 * 256) for _ in range(3)], axis=-1).reshape(256, 256, 3).astype(np.uint16)
    _png_rgb16(tmp_path / "rgb16.png", ramp)
    exact = ramp * (255 / 65535)
    read = load_rgb(tmp_path / "rgb16.png")
    assert np.abs(read - exact).max() <= 1.0 and all(len(np.unique(read[..., c])) == 256 for c in range(3))
    records = ImageRecords(tmp_path, ("rgb16.png",), np.array([0]), np.array([0]))
    write_prepared(tmp_path / "p.h5", {"train": records}, {"dataset": "folder"})
    assert np.array_equal(np.asarray(EncodedImages(tmp_path / "p.h5", "train")[0]), read)


# ---------------------------------------------------------------------------------------------
# The probe of the folder dataset, where the image datasets share the code: the limit, duplicate CSV
# columns, decompression bombs, 16-bit images holding 12-bit data


def test_limit_takes_images_in_turns_from_every_class(in9l_roots):
    """`prepare.<dataset>.limit` on a split listed class by class (IN-9L, nine classes): the first N images
    were the first class alone; they are taken in turns from each class, in the split's order, and a limit
    below a split's number of classes is refused."""
    from types import MappingProxyType

    from masktune.datasets.spec import PrepareConfig, first_images, per_class_turns

    splits = read_in9l(*in9l_roots)
    limited = first_images(splits, PrepareConfig(dataset="in9l", options=MappingProxyType({"limit": 12}), download=False, download_dir=None))
    train = splits["train"]  # 3 images of each class, class by class
    assert limited["train"].labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8]  # two turns for the first 3
    assert limited["train"] == train.subset([0, 1, 3, 4, 6, 7, 9, 12, 15, 18, 21, 24])
    assert limited["val"] == splits["val"]  # 9 images: within the limit
    with raises("params.yaml: prepare.in9l.limit is 5, fewer than the 9 classes of split 'train': every class "
                "needs an image; set it to at least 9 (or null: every image)"):
        first_images(splits, PrepareConfig(dataset="in9l", options=MappingProxyType({"limit": 5}), download=False, download_dir=None))
    # a class that runs out leaves its turns to the others; each class keeps its own order
    assert per_class_turns([1, 1, 0, 1, 1, 1], 4, "limit", "train").tolist() == [0, 1, 2, 3]
    assert per_class_turns(["b", "a", "b", "a", "a"], 3, "limit", "val").tolist() == [0, 1, 3]


def test_a_csv_column_read_twice_is_refused(tmp_path):
    """A second `y` column in Waterbirds' metadata.csv: a row's dict kept the last one without a word."""
    root = make_waterbirds(tmp_path)
    edit_csv(root / "metadata.csv", lambda rows: [row.append(row[2]) for row in rows])
    with raises(f"{root / 'metadata.csv'}: column 'y' appears twice in the header (columns 3 and 7): keep one, "
                "or rename the other"):
        read_waterbirds(root)


def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path, monkeypatch):
    """A 9 KB PNG of 9000 x 8000 pixels (under Pillow's own limit, 89 M pixels) and one of 20000 x 20000
    (over it): refused from the header, nothing decoded, by every reader (`load_rgb`, `image_size`,
    `check_images`, and the prepared file's writer); under a lowered limit, a small image too."""
    from masktune.data import prepared
    from masktune.data.prepared import write_prepared

    large = save_huge_png(tmp_path / "large.png", 9000, 8000)
    message = (f"{large}: image is 9000 x 8000 pixels (width x height: 72,000,000): more than the 67,108,864 "
               "pixels (8192 x 8192) an image may have to be decoded (masktune.data.prepared.MAX_IMAGE_PIXELS); "
               "downscale it, or cut it into tiles")
    records = ImageRecords(tmp_path, ("large.png",), np.array([0]), np.array([0]))
    for read in (load_rgb, image_size, lambda path: check_images(records),
                 lambda path: write_prepared(tmp_path / "p.h5", {"train": records}, {"dataset": "folder"})):
        with raises(message):
            read(large)
    huge = save_huge_png(tmp_path / "huge.png", 20000, 20000)
    with raises(f"{huge}: image is over 178,956,970 pixels: more than the 67,108,864 pixels"):
        load_rgb(huge)
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    monkeypatch.setattr(prepared, "MAX_IMAGE_PIXELS", 1199)
    with raises(f"{tmp_path / 'small.png'}: image is 40 x 30 pixels (width x height: 1,200): more than the 1,199"):
        image_size(tmp_path / "small.png")
    monkeypatch.setattr(prepared, "MAX_IMAGE_PIXELS", 1200)
    assert load_rgb(tmp_path / "small.png").shape == (30, 40, 3)


def test_sixteen_bit_grey_peaks_are_read_where_the_images_are(tmp_path):
    """The largest value of each 16-bit grey image (`to_rgb` scales them all by 255 / 65535), for the folder's
    one line about 12-bit data: from the pixels `load_rgb` decodes, and from `image_size`, which decodes only
    16-bit grey images for it; nothing for 8-bit ones."""
    Image.fromarray(np.array([[0, 4095]], dtype=np.uint16)).save(tmp_path / "twelve.png")
    Image.fromarray(np.array([[7, 200]], dtype=np.uint8)).save(tmp_path / "eight.png")
    peaks: list[int] = []
    assert load_rgb(tmp_path / "twelve.png", peaks=peaks)[0, 1].tolist() == [16, 16, 16]  # 4095 x 255 / 65535
    load_rgb(tmp_path / "eight.png", peaks=peaks)
    assert image_size(tmp_path / "twelve.png", peaks=peaks) == (1, 2)
    image_size(tmp_path / "eight.png", peaks=peaks)
    assert peaks == [4095, 4095]
