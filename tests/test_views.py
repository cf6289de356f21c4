"""The views: sizes and coordinate maps against torchvision itself, mask mapping, train transforms."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from masktune.data.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PLAIN,
    CenterCrop,
    DatasetViews,
    Geometry,
    Lighting,
    Resize,
    TrainTransform,
    mask_to_raw,
)
from masktune.datasets import DATASETS
from masktune.datasets.folder import view_preset

VIEWS = {name: spec.views for name, spec in DATASETS.items() if not spec.views.is_plain}
# Every view a prepared file can record: each registered dataset's, and the folder presets'.
ALL_VIEWS = {**{name: spec.views for name, spec in DATASETS.items()},
             **{f"folder_{t}_{size}_{norm}": view_preset(t, size, norm)
                for t, size, norm in [("none", 224, "imagenet"), ("resize", 32, "none"), ("imagenet", 64, "imagenet"),
                                      ("imagenet", 224, "none")]}}

cv2 = pytest.importorskip("cv2")
transforms = pytest.importorskip("torchvision.transforms")

# (height, width) raw sizes: Waterbirds-like landscape and portrait, CelebA, IN-9L-like, odd sizes.
RAW_SIZES = [(375, 500), (500, 333), (218, 178), (300, 400), (401, 300), (257, 259), (100, 150)]
GEOMETRIES = [(name, kind) for name in VIEWS for kind in ("masking", "evaluation")]


def _geometry(name: str, kind: str) -> Geometry:
    return getattr(VIEWS[name], kind)


def _apply(geometry: Geometry, image: Image.Image) -> np.ndarray:
    out = image
    for t in geometry.transforms():
        out = t(out)
    return np.asarray(out)


@pytest.mark.parametrize("name,kind", GEOMETRIES)
def test_output_size_matches_torchvision(name, kind):
    geometry = _geometry(name, kind)
    for height, width in RAW_SIZES:
        image = Image.new("L", (width, height))
        assert _apply(geometry, image).shape == geometry.output_size(height, width), (height, width)


def test_output_size_arithmetic():
    # Resize(int): short side to 256, long side int(256 * long / short) (truncated, not rounded).
    assert Resize(256).output_size(375, 500) == (256, 341)  # 341.33
    assert Resize(256).output_size(401, 300) == (342, 256)  # 342.18
    assert Resize((256, 256)).output_size(375, 500) == (256, 256)
    assert CenterCrop(178).output_size(218, 178) == (178, 178)
    # Crop offsets: int(round((size - crop) / 2.0)), halves to even; padding when the crop is larger.
    assert CenterCrop(224).affine(256, 256) == (1.0, -16.0, 1.0, -16.0)
    assert CenterCrop(2).affine(5, 7) == (1.0, -2.0, 1.0, -2.0)  # round(1.5) = 2, round(2.5) = 2
    assert CenterCrop((10, 4)).affine(7, 9) == (1.0, 1.0, 1.0, -2.0)  # pad (10-7)//2 = 1 rows before
    assert VIEWS["waterbirds"].masking.affine(375, 500) == (256 / 375, -16.0, 256 / 500, -16.0)
    assert VIEWS["celeba"].masking.affine(218, 178) == pytest.approx((224 / 178, -20 * 224 / 178, 224 / 178, 0.0))


def test_padding_crop_matches_torchvision():
    geometry = Geometry((CenterCrop((10, 4)),))
    image = Image.fromarray(np.arange(1, 64, dtype=np.uint8).reshape(7, 9))
    out = _apply(geometry, image)
    sy, oy, sx, ox = geometry.affine(7, 9)
    view = np.zeros((10, 4), dtype=np.uint8)
    for i in range(10):
        for j in range(4):
            u, w = int((i - oy) / sy), int((j - ox) / sx)
            if 0 <= u < 7 and 0 <= w < 9:
                view[i, j] = np.asarray(image)[u, w]
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize("name,kind", GEOMETRIES)
def test_affine_matches_torchvision_pixels(name, kind):
    """Images whose values are their own raw coordinates: the view decodes to the inverse affine."""
    geometry = _geometry(name, kind)
    for height, width in [(375, 500), (500, 333), (218, 178), (401, 300)]:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5  # raw pixel centres
        view_y = _apply(geometry, Image.fromarray(ys, mode="F"))
        view_x = _apply(geometry, Image.fromarray(xs, mode="F"))
        sy, oy, sx, ox = geometry.affine(height, width)
        h, w = view_y.shape
        expect_y = ((np.arange(h) + 0.5 - oy) / sy)[:, None]
        expect_x = ((np.arange(w) + 0.5 - ox) / sx)[None, :]
        err_y, err_x = np.abs(view_y - expect_y), np.abs(view_x - expect_x)
        assert err_y.max() < 1.0 and err_x.max() < 1.0, (height, width)
        # Away from the border the antialiased bilinear filter of a linear ramp is near exact (its discrete
        # weights' centroid is off by < 0.1 px); a crop off by one view pixel would be >= 1 raw px off.
        assert err_y[4:-4, 4:-4].max() < 0.15 and err_x[4:-4, 4:-4].max() < 0.15, (height, width)


def test_mask_to_raw_crop_waterbirds_hand_computed():
    geometry = VIEWS["waterbirds"].masking
    # 512x512 raw: Resize((256, 256)) halves, CenterCrop(224) drops 16 view pixels = 32 raw pixels.
    full = mask_to_raw(np.ones((224, 224), bool), 512, 512, geometry)
    expected = np.zeros((512, 512), bool)
    expected[32:480, 32:480] = True
    np.testing.assert_array_equal(full, expected)
    view = np.zeros((224, 224), bool)
    view[100:120, 50:60] = True  # raw rows [(100+16)*2, (120+16)*2), cols [(50+16)*2, (60+16)*2)
    expected = np.zeros((512, 512), bool)
    expected[232:272, 132:152] = True
    np.testing.assert_array_equal(mask_to_raw(view, 512, 512, geometry), expected)

    # 375x500 raw: the view block rows [a, b) covers raw centres in [(a+16)*375/256, (b+16)*375/256).
    raw = mask_to_raw(view, 375, 500, geometry)
    rows, cols = np.nonzero(raw.any(axis=1))[0], np.nonzero(raw.any(axis=0))[0]
    # Rows: y + 0.5 in [116*375/256, 136*375/256) = [169.9, 199.2); cols: [128.9, 148.4) (500/256 per px).
    assert (rows.min(), rows.max()) == (170, 198)
    assert (cols.min(), cols.max()) == (129, 147)
    assert raw.sum() == 29 * 19
    full = mask_to_raw(np.ones((224, 224), bool), 375, 500, geometry)
    rows, cols = np.nonzero(full.any(axis=1))[0], np.nonzero(full.any(axis=0))[0]
    # Inside: raw centres y + 0.5 in [16*375/256, 240*375/256) = [23.4, 351.6), x + 0.5 in [31.25, 468.75).
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (23, 351, 31, 468)
    assert full.sum() == (351 - 23 + 1) * (468 - 31 + 1)
    # The official stretch puts the same block elsewhere: shifted by ~16/256 of the image.
    stretched = mask_to_raw(view, 375, 500, geometry, alignment="stretch")
    assert np.nonzero(stretched.any(axis=1))[0].min() == 168  # ceil(100 * 375/224) = 168 vs 169 above
    assert np.nonzero(stretched.any(axis=0))[0].min() == 112  # ceil(50 * 500/224) = 112 vs 129 above


def test_mask_to_raw_crop_celeba_borders_never_masked():
    geometry = VIEWS["celeba"].masking
    full = mask_to_raw(np.ones((224, 224), bool), 218, 178, geometry)
    assert not full[:20].any() and not full[-20:].any()
    assert full[20:198].all()
    rng = np.random.default_rng(0)
    masks = rng.random((5, 224, 224)) < 0.5
    raw = mask_to_raw(masks, 218, 178, geometry)  # a batch keeps its leading axis
    assert raw.shape == (5, 218, 178)
    assert not raw[:, :20].any() and not raw[:, -20:].any()
    for k in range(5):
        np.testing.assert_array_equal(raw[k], mask_to_raw(masks[k], 218, 178, geometry))


def test_mask_to_raw_in9l_stretch_view():
    geometry = VIEWS["in9l"].masking
    rng = np.random.default_rng(1)
    mask = rng.random((224, 224)) < 0.3
    # Integer upsampling: pixel-centre mapping and cv2's INTER_NEAREST pick the same view pixel.
    for height, width in [(448, 672), (224, 224), (896, 448)]:
        np.testing.assert_array_equal(mask_to_raw(mask, height, width, geometry),
                                      mask_to_raw(mask, height, width, geometry, alignment="stretch"))
    # Otherwise cv2's INTER_NEAREST (floor(dst * src / dst_size)) samples half a raw pixel earlier than
    # the pixel centre: the two agree up to one view pixel per axis, and nothing is cropped away.
    height, width = 400, 300
    crop = mask_to_raw(np.zeros((224, 224), bool), height, width, geometry)
    assert not crop.any()
    sy, oy, _, _ = geometry.affine(height, width)
    rows = np.floor((np.arange(height) + 0.5) * sy + oy).astype(int)
    assert rows.min() == 0 and rows.max() == 223
    stretch_rows = np.floor(np.arange(height) * (224 / height)).astype(int)
    assert np.abs(rows - stretch_rows).max() == 1
    assert mask_to_raw(np.ones((224, 224), bool), height, width, geometry).all()


@pytest.mark.parametrize("src", [(224, 224), (7, 13), (256, 100)])
def test_stretch_equals_cv2_nearest(src):
    rng = np.random.default_rng(sum(src))
    mask = rng.random(src) < 0.4
    for height, width in [(500, 375), (333, 500), (218, 178), (224, 224), (5, 9), (1000, 31), (448, 448)]:
        expected = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        got = mask_to_raw(mask, height, width, alignment="stretch")
        assert got.dtype == bool and got.shape == (height, width)
        np.testing.assert_array_equal(got, expected.astype(bool), err_msg=str((src, height, width)))


def test_mask_to_raw_rejects_bad_input():
    geometry = VIEWS["waterbirds"].masking
    with pytest.raises(ValueError, match="view mask is"):
        mask_to_raw(np.ones((200, 200), bool), 375, 500, geometry)
    with pytest.raises(ValueError, match="alignment"):
        mask_to_raw(np.ones((224, 224), bool), 375, 500, geometry, alignment="nearest")
    with pytest.raises(ValueError, match="geometry"):
        mask_to_raw(np.ones((224, 224), bool), 375, 500)


def test_geometry_ops_validate():
    assert Resize([256]) == Resize(256) and CenterCrop([224, 224]).size == (224, 224)
    with pytest.raises(ValueError):
        Resize(0)
    with pytest.raises(ValueError):
        CenterCrop((1, 2, 3))
    with pytest.raises(TypeError):
        Geometry(("resize",))
    assert hash(VIEWS["waterbirds"].masking) == hash(Geometry((Resize((256, 256)), CenterCrop((224, 224)))))


def _photo(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("name,official", [
    ("waterbirds", lambda: [transforms.Resize((256, 256)), transforms.CenterCrop((224, 224))]),
    ("celeba", lambda: [transforms.CenterCrop(178), transforms.Resize((224, 224))]),
    ("in9l", lambda: [transforms.Resize((224, 224))]),
])
def test_masking_transform_equals_official_compose(name, official):
    views = VIEWS[name]
    compose = transforms.Compose([*official(), transforms.ToTensor(), transforms.Normalize(views.mean, views.std)])
    image = _photo(218, 178) if name == "celeba" else _photo(375, 500)
    assert torch.equal(VIEWS[name].transform("masking")(image), compose(image))


def test_eval_transform_equals_official_in9l():
    compose = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                  transforms.Normalize([0.4717, 0.4499, 0.3837], [0.2600, 0.2516, 0.2575])])
    image = _photo(300, 401)
    out = VIEWS["in9l"].transform("eval")(image)
    assert out.shape == (3, 224, 224) and torch.equal(out, compose(image))


@pytest.mark.parametrize("name,size", [("waterbirds", (375, 500)), ("celeba", (218, 178)), ("in9l", (300, 401))])
def test_train_transform_seeded(name, size):
    image = _photo(*size, seed=3)
    t = VIEWS[name].transform("train")
    torch.manual_seed(7)
    a = t(image)
    torch.manual_seed(7)
    b = t(image)
    torch.manual_seed(8)
    c = t(image)
    assert a.shape == (3, 224, 224) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert -2.8 < a.min().item() and a.max().item() < 2.9  # (0 - 0.485)/0.229 = -2.12; (1 - 0.406)/0.225 = 2.64
    assert a.std().item() > 0.5  # uniform noise in [0, 1] over std ~0.23 is spread


def test_lighting():
    img = torch.rand(3, 8, 8)
    assert Lighting(0.0)(img) is img
    torch.manual_seed(0)
    out = Lighting(0.05)(img)
    torch.manual_seed(0)
    alpha = torch.empty(3).normal_(0, 0.05)
    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    rgb = eigvec @ (alpha * eigval)
    delta = out - img
    assert torch.allclose(delta, rgb[:, None, None].expand_as(img), atol=1e-6)
    assert delta[0].std() < 1e-6  # one constant per channel


def test_views_import_without_torchvision():
    code = ("import sys, numpy as np; from masktune.data.views import mask_to_raw; "
            "from masktune.datasets import DATASETS; "
            "m = mask_to_raw(np.ones((224, 224), bool), 218, 178, DATASETS['celeba'].views.masking); "
            "assert m[20:198].all() and not m[:20].any(); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Views as data: the JSON `prepare` records in the prepared file, read back by every later stage


def _outputs(views: DatasetViews, kind: str, image: Image.Image, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return views.transform(kind)(image)


@pytest.mark.parametrize("name", ALL_VIEWS)
def test_views_round_trip_through_json_to_the_same_transforms(name):
    views = ALL_VIEWS[name]
    back = DatasetViews.from_json(views.to_json())
    assert back == views and hash(back) == hash(views) and back.to_json() == views.to_json()
    image = _photo(70, 90, seed=5)
    for kind in ("train", "eval", "masking"):
        assert repr(back.transform(kind)) == repr(views.transform(kind))
        for seed in (0, 1):  # the random train transforms draw the same numbers from the same seed
            assert torch.equal(_outputs(back, kind, image, seed), _outputs(views, kind, image, seed)), (kind, seed)
    if views.train is not None:  # so the comparison above is of random outputs, not of constants
        assert not torch.equal(_outputs(back, "train", image, 0), _outputs(back, "train", image, 1))


def test_waterbirds_views_are_recorded_as_this_json():
    geometry = [["Resize", [256, 256]], ["CenterCrop", [224, 224]]]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    assert json.loads(VIEWS["waterbirds"].to_json()) == {
        "masking": geometry, "evaluation": geometry, "mean": mean, "std": std,
        "train": {"name": "crop_flip", "options": {"ratio": [0.75, 4 / 3], "mean": mean, "std": std, "size": 224}}}
    assert PLAIN.to_json() == '{"evaluation": [], "masking": [], "mean": null, "std": null, "train": null}'
    assert DatasetViews.from_json(PLAIN.to_json()) == PLAIN and DatasetViews.from_json(PLAIN.to_json()).is_plain


@pytest.mark.parametrize("name,size", [("waterbirds", (375, 500)), ("celeba", (218, 178)), ("in9l", (300, 401))])
def test_train_transform_is_the_official_compose(name, size):
    """The named train transforms against the official transform_train, written out here (Waterbirds,
    CelebA: src/methods/<dataset>_train.py; IN-9L: src/methods/in9l_train.py, with its PCA lighting)."""
    ratio = {"waterbirds": (3 / 4, 4 / 3), "celeba": (1.0, 4 / 3)}.get(name)
    if name == "in9l":
        official = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                    transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1), transforms.ToTensor(),
                    Lighting(0.05), transforms.Normalize([0.4717, 0.4499, 0.3837], [0.2600, 0.2516, 0.2575])]
    else:
        official = [transforms.RandomResizedCrop((224, 224), scale=(0.7, 1.0), ratio=ratio),
                    transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                    transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    image, compose = _photo(*size, seed=4), transforms.Compose(official)
    for seed in (0, 3):
        torch.manual_seed(seed)
        expected = compose(image)
        assert torch.equal(_outputs(VIEWS[name], "train", image, seed), expected), seed


def test_train_transforms_are_named_and_checked_where_written():
    spec = TrainTransform("crop_flip", [("size", 64), ("ratio", [1, 2])])
    assert spec == TrainTransform("crop_flip", {"ratio": (1, 2), "size": 64})  # pairs or mapping, sorted, frozen
    assert spec.options == (("ratio", (1, 2)), ("size", 64))
    with pytest.raises(ValueError, match="train transform must be one of crop_flip, flip_affine, pad_crop, in9l"):
        TrainTransform("random_erase")
    with pytest.raises(ValueError, match="train transform 'crop_flip': got an unexpected keyword argument 'scale'"):
        TrainTransform("crop_flip", {"ratio": (1, 2), "scale": (0.5, 1)})
    with pytest.raises(ValueError, match="train transform 'in9l': missing a required argument: 'std'"):
        TrainTransform("in9l", {"mean": (0.5, 0.5, 0.5)})
    with pytest.raises(TypeError, match="options must be JSON numbers"):
        TrainTransform("pad_crop", {"x": {"a": 1}})
    with pytest.raises(TypeError, match="train must be a TrainTransform"):
        DatasetViews(Geometry(), Geometry(), train=transforms.ToTensor)


@pytest.mark.parametrize("text,message", [
    ('{"transforms": "none", "image_size": 224, "normalisation": "none"}',  # a folder's, before views were JSON
     "views must be an object with keys masking, evaluation, mean, std, train, got"),
    ("Resize(256)", "views are not JSON"),
    (PLAIN.to_json().replace('"masking": []', '"masking": [["Pad", 4]]'), "unknown geometric op 'Pad'"),
    (PLAIN.to_json().replace('"masking": []', '"masking": [["Resize", "x"]]'), "Resize size must be an int"),
    (PLAIN.to_json().replace('"train": null', '"train": {"name": "pad_crop"}'), "views.train must be an object"),
])
def test_views_from_other_text_is_a_value_error(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DatasetViews.from_json(text)
