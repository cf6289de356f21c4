"""How each dataset's images are viewed: the masking, evaluation and training transforms.

MaskTune computes the saliency of each training image on the *masking view* (the official
`transform_data_to_mask`), thresholds it into a mask of that view's size, and fine-tunes on the raw
images with the masked pixels set to 0, through the *train* transform. The official code
(`apply_mask_and_save_individual_image_in_png`) stretches the view mask over the whole raw image with
`cv2.resize(..., INTER_NEAREST)`, which misaligns it whenever the masking view crops (Waterbirds:
resize to 256 then centre-crop 224, a shift of up to 16/256 = 6% of the image; CelebA: centre-crop
178x178 out of 178x218, a 1.22x vertical stretch). Here a geometric view is a tuple of ops, the single
source of truth for both the torchvision transform and the raw -> view coordinate map, and
`mask_to_raw` maps a view mask back through the exact geometry (`alignment="crop"`, the default) or
stretches it as the official code does (`alignment="stretch"`).

Coordinates are continuous with pixel *edges* at integers: raw pixel (y, x) covers [y, y + 1) x
[x, x + 1) and its centre is (y + 0.5, x + 0.5). PIL's resize (torchvision's PIL path) samples output
pixel centre v + 0.5 at input (v + 0.5) * in / out, so a resize is the linear map v = u * out / in, and
a crop at `top` is v = u - top: every view here is v = u * scale + offset per axis.

The random train transform is named (`TrainTransform`: a key of `TRAIN_TRANSFORMS` and its options), not
a function, so that a dataset's views are data: `prepare` writes them into the prepared file as JSON
(`DatasetViews.to_json`) and every later stage reads them there (`masktune.data.prepared.open_prepared`),
importing no dataset module (editing one dataset's module reruns no other dataset's later stages).

torchvision is imported lazily, inside the functions that build transforms: the geometry, `affine` and
`mask_to_raw` need only numpy, so stages that never build a transform do not pay its import.
"""
from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

Size = int | tuple[int, int]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AlexNet-style PCA lighting of ImageNet's RGB (official src/methods/in9l_train.py, IMAGENET_PCA).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)

ALIGNMENTS = ("crop", "stretch")  # how a view mask is put on the raw image (`mask_to_raw`)

def _normalise_size(size, name: str) -> Size:
    if isinstance(size, (list, tuple)):
        if len(size) == 1:
            size = int(size[0])
        elif len(size) == 2:
            size = (int(size[0]), int(size[1]))
        else:
            raise ValueError(f"{name} size must be an int or (height, width), got {size!r}")
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = int(size)
    else:
        raise TypeError(f"{name} size must be an int or (height, width), got {size!r}")
    if min(size if isinstance(size, tuple) else (size,)) <= 0:
        raise ValueError(f"{name} size must be positive, got {size!r}")
    return size


@dataclass(frozen=True)
class Resize:
    """torchvision `Resize(size)`, bilinear with antialias (PIL path).

    An int resizes the short side to `size` and the long side to `int(size * long / short)` (aspect
    kept, truncated), a (height, width) tuple stretches to exactly that size
    (torchvision.transforms.functional._compute_resized_output_size, max_size=None).
    """

    size: Size

    def __post_init__(self):
        object.__setattr__(self, "size", _normalise_size(self.size, "Resize"))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if isinstance(self.size, tuple):
            return self.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.size, int(self.size * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def affine(self, height: int, width: int) -> tuple[float, float, float, float]:
        out_h, out_w = self.output_size(height, width)
        return out_h / height, 0.0, out_w / width, 0.0

    def torchvision(self):
        from torchvision import transforms

        return transforms.Resize(self.size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True)


@dataclass(frozen=True)
class CenterCrop:
    """torchvision `CenterCrop(size)`: an int is a square crop.

    Along each axis (torchvision.transforms.functional.center_crop): when the crop is larger than the
    image, the image is zero-padded by (crop - size) // 2 before (and the rest after), and the crop then
    starts at 0; otherwise the crop starts at `int(round((size - crop) / 2.0))` (Python's round: halves
    go to the even integer).
    """

    size: Size

    def __post_init__(self):
        object.__setattr__(self, "size", _normalise_size(self.size, "CenterCrop"))

    def _crop_hw(self) -> tuple[int, int]:
        return self.size if isinstance(self.size, tuple) else (self.size, self.size)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return self._crop_hw()

    @staticmethod
    def _offset(size: int, crop: int) -> float:
        if crop > size:
            return float((crop - size) // 2)  # padding before the image
        return -float(round((size - crop) / 2.0))  # Python's round: halves to even

    def affine(self, height: int, width: int) -> tuple[float, float, float, float]:
        crop_h, crop_w = self._crop_hw()
        return 1.0, self._offset(height, crop_h), 1.0, self._offset(width, crop_w)

    def torchvision(self):
        from torchvision import transforms

        return transforms.CenterCrop(self.size)


@dataclass(frozen=True)
class Geometry:
    """A deterministic geometric view: the ops applied in order to a raw (PIL) image."""

    ops: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        for op in self.ops:
            if not isinstance(op, (Resize, CenterCrop)):
                raise TypeError(f"unsupported geometric op {op!r}")

    def transforms(self) -> list:
        """The torchvision transforms, exactly as the official Compose lists them."""
        return [op.torchvision() for op in self.ops]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the view of a raw image of that size."""
        for op in self.ops:
            height, width = op.output_size(height, width)
        return height, width

    def affine(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(scale_y, offset_y, scale_x, offset_x): raw coordinate u maps to view v = u * scale + offset."""
        scale_y, offset_y, scale_x, offset_x = 1.0, 0.0, 1.0, 0.0
        for op in self.ops:
            sy, oy, sx, ox = op.affine(height, width)
            scale_y, offset_y = scale_y * sy, offset_y * sy + oy
            scale_x, offset_x = scale_x * sx, offset_x * sx + ox
            height, width = op.output_size(height, width)
        return scale_y, offset_y, scale_x, offset_x

    def as_json_value(self) -> list:
        """[[op name, size], ...]: the ops in order, as `DatasetViews.to_json` records them."""
        return [[type(op).__name__, op.size] for op in self.ops]

    @classmethod
    def from_json_value(cls, value) -> Geometry:
        """The geometry `as_json_value` gave; ValueError for an unknown op or a malformed list."""
        if not isinstance(value, list) or not all(isinstance(op, list) and len(op) == 2 for op in value):
            raise ValueError(f"a geometry must be a list of [op, size] pairs, got {value!r}")
        unknown = [name for name, _ in value if name not in GEOMETRIC_OPS]
        if unknown:
            raise ValueError(f"unknown geometric op {unknown[0]!r} (known: {', '.join(GEOMETRIC_OPS)})")
        return cls(tuple(GEOMETRIC_OPS[name](size) for name, size in value))


GEOMETRIC_OPS = {"Resize": Resize, "CenterCrop": CenterCrop}  # the ops a Geometry holds, by name


def _crop_indices(raw: int, view: int, scale: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """View index of each raw pixel centre along one axis, and whether it falls inside the view."""
    v = (np.arange(raw, dtype=np.float64) + 0.5) * scale + offset
    index = np.floor(v).astype(np.int64)
    inside = (index >= 0) & (index < view)
    return np.clip(index, 0, view - 1), inside


def _stretch_indices(raw: int, view: int) -> np.ndarray:
    """cv2.resize INTER_NEAREST's source index: min(floor(dst * (1 / (dst_size / src_size))), src - 1)."""
    inverse_scale = 1.0 / (raw / view)
    return np.minimum(np.floor(np.arange(raw, dtype=np.float64) * inverse_scale).astype(np.int64), view - 1)


def mask_to_raw(
    view_mask: np.ndarray,
    height: int,
    width: int,
    geometry: Geometry | None = None,
    alignment: str = "crop",
) -> np.ndarray:
    """A boolean mask on the view, (..., h, w), mapped back to the raw image: (..., height, width).

    `crop` (ours): each raw pixel centre is mapped through `geometry.affine` and takes the view mask
    value at the view pixel it lands in; raw pixels outside the view (cropped away, never seen by the
    saliency) are False. The mask must have the geometry's output size for that raw size.
    `stretch` (official): the view mask is stretched over the whole raw image, exactly as
    `cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)`; the geometry is ignored.
    Leading axes (a batch of masks of images of the same raw size) are kept.
    """
    mask = np.asarray(view_mask).astype(bool, copy=False)
    if mask.ndim < 2:
        raise ValueError(f"view mask must be at least 2-D, got shape {mask.shape}")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"raw size must be positive, got {height}x{width}")
    view_h, view_w = mask.shape[-2:]
    if alignment == "stretch":
        if (view_h, view_w) == (height, width):
            return mask
        rows, cols = _stretch_indices(height, view_h), _stretch_indices(width, view_w)
        return mask[..., rows[:, None], cols[None, :]]
    if alignment != "crop":
        raise ValueError(f"alignment must be crop or stretch, got {alignment!r}")
    if geometry is None:
        raise ValueError("alignment='crop' needs the geometry of the view")
    expected = geometry.output_size(height, width)
    if (view_h, view_w) != expected:
        raise ValueError(f"view mask is {view_h}x{view_w} but the view of a {height}x{width} image is "
                         f"{expected[0]}x{expected[1]}")
    scale_y, offset_y, scale_x, offset_x = geometry.affine(height, width)
    rows, rows_inside = _crop_indices(height, view_h, scale_y, offset_y)
    cols, cols_inside = _crop_indices(width, view_w, scale_x, offset_x)
    raw = mask[..., rows[:, None], cols[None, :]]
    return raw & (rows_inside[:, None] & cols_inside[None, :])


class Lighting:
    """AlexNet-style PCA lighting noise on a [0, 1] (3, H, W) tensor (official src/methods/in9l_train.py).

    Draws alpha ~ N(0, alphastd) (3 values, torch's global generator, as the official `normal_`) and adds
    rgb = eigvec @ (alpha * eigval) to each channel. alphastd 0 returns the input unchanged.
    """

    def __init__(self, alphastd: float, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC):
        import torch

        self.alphastd = float(alphastd)
        self.eigval = torch.as_tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.as_tensor(eigvec, dtype=torch.float32)

    def __call__(self, img):
        import torch

        if self.alphastd == 0:
            return img
        alpha = torch.empty(3, dtype=img.dtype).normal_(0, self.alphastd)
        eigvec = self.eigvec.to(img.dtype)
        rgb = (eigvec * alpha[None, :] * self.eigval.to(img.dtype)[None, :]).sum(dim=1)
        return img + rgb.to(img.device)[:, None, None]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alphastd={self.alphastd})"


def crop_flip_train(ratio: tuple[float, float], mean=IMAGENET_MEAN, std=IMAGENET_STD, size: int = 224):
    """Official waterbirds_train.py / celebA_train.py transform_train: the two differ only in the crop's
    aspect-ratio range (Waterbirds (3/4, 4/3), CelebA (1, 4/3)). `size` other than 224 and `mean` None
    (no normalisation) are for a folder of the user's images."""
    from torchvision import transforms

    normalise = [] if mean is None else [transforms.Normalize(mean, std)]
    return transforms.Compose([
        transforms.RandomResizedCrop((size, size), scale=(0.7, 1.0), ratio=ratio,
                                     interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        *normalise,
    ])


def flip_affine_train():
    """Official CIFAR-10 and Cats vs Dogs transform_train (aliasgharkhani/Masktune src/methods/cifar10_train.py
    L18-24, catsvsdogs_train.py L19-23): a random horizontal flip, a random rotation of up to 15 degrees and
    shift of up to 10% of each side (nearest, zero fill), ToTensor; no normalisation."""
    from torchvision import transforms

    return transforms.Compose([transforms.RandomHorizontalFlip(),
                               transforms.RandomAffine(degrees=15, translate=(0.1, 0.1)),
                               transforms.ToTensor()])


def pad_crop_train():
    """Official SVHN transform_train (src/methods/svhn_train.py L19-22): a random 32 x 32 crop of the image
    zero-padded by 4 on each side, ToTensor; no flip, no normalisation."""
    from torchvision import transforms

    return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.ToTensor()])


def in9l_train(mean, std):
    """Official src/methods/in9l_train.py, transform_train (TRAIN_TRANSFORMS_IMAGENET + Normalize): a random
    resized crop, flip, colour jitter and ImageNet PCA lighting, normalised with IN-9's `mean` and `std`."""
    from torchvision import transforms

    return transforms.Compose([
        transforms.RandomResizedCrop(224),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1),
        transforms.ToTensor(),
        Lighting(0.05, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC),
        transforms.Normalize(mean, std),
    ])


# The random train transforms by name: a view records a name and its options, not a function, so that the
# prepared file can hold it (`DatasetViews.to_json`) and later stages need no dataset module to build it.
TRAIN_TRANSFORMS: dict[str, Callable] = {"crop_flip": crop_flip_train, "flip_affine": flip_affine_train,
                                         "pad_crop": pad_crop_train, "in9l": in9l_train}


def _frozen(value, where: str):
    """A JSON value as a hashable one (lists to tuples), so that a view read back equals the one written."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item, where) for item in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: options must be JSON numbers, strings, null or lists of them, got {value!r}")


@dataclass(frozen=True)
class TrainTransform:
    """A random train transform by name (a key of `TRAIN_TRANSFORMS`) and its factory's keyword options,
    given as a mapping or (key, value) pairs and kept as sorted pairs: hashable, comparable, serialisable.
    The options are checked against the factory's signature here, so a wrong one fails where it is
    written, not at the first training epoch."""

    name: str
    options: tuple = ()

    def __post_init__(self):
        if self.name not in TRAIN_TRANSFORMS:
            raise ValueError(f"train transform must be one of {', '.join(TRAIN_TRANSFORMS)}, got {self.name!r}")
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        where = f"train transform {self.name!r}"
        object.__setattr__(self, "options", tuple(sorted((str(k), _frozen(v, where)) for k, v in pairs)))
        try:
            inspect.signature(TRAIN_TRANSFORMS[self.name]).bind(**dict(self.options))
        except TypeError as error:
            raise ValueError(f"{where}: {error}") from None

    def build(self):
        """The torchvision transform (a new one each call: its randomness is torch's global generator)."""
        return TRAIN_TRANSFORMS[self.name](**dict(self.options))

    def as_json_value(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_json_value(cls, value: Mapping) -> TrainTransform:
        _check_keys(value, ("name", "options"), "views.train")
        return cls(value["name"], value["options"])


VIEW_KINDS = ("train", "eval", "masking")
_VIEW_KEYS = ("masking", "evaluation", "mean", "std", "train")


def _check_keys(value, keys: tuple[str, ...], where: str) -> None:
    """A JSON object with exactly `keys`: anything else is a file from another version, not a view."""
    if not isinstance(value, Mapping) or set(value) != set(keys):
        found = sorted(value) if isinstance(value, Mapping) else type(value).__name__
        raise ValueError(f"{where} must be an object with keys {', '.join(keys)}, got {found}")


def _channels(values) -> tuple[float, ...] | None:
    """mean or std as a tuple of floats (None kept), whether given as a tuple or read back as a JSON list."""
    return None if values is None else tuple(float(v) for v in values)


@dataclass(frozen=True)
class DatasetViews:
    """How a dataset's images are seen: the masking and evaluation geometry, the normalisation, and the
    named (random) train transform. `PLAIN` is the view of small pixel datasets (biased MNIST): the
    stored pixels as they are, `ToTensor()` only, as the official MNIST transforms. Written into the
    prepared file as JSON (`to_json`), so later stages read it there and import no dataset module."""

    masking: Geometry
    evaluation: Geometry
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    train: TrainTransform | None = None

    def __post_init__(self):
        object.__setattr__(self, "mean", _channels(self.mean))
        object.__setattr__(self, "std", _channels(self.std))
        if self.train is not None and not isinstance(self.train, TrainTransform):
            raise TypeError(f"train must be a TrainTransform (named, serialisable), got {self.train!r}")

    @property
    def is_plain(self) -> bool:
        """Whether stored pixels are seen as they are (`PLAIN`), but for a random train transform, which a pixel
        split applies image by image (CIFAR-10's flips and shifts, masktune.data.splits.AugmentedPixelSplit)."""
        return self.masking == PLAIN.masking and self.evaluation == PLAIN.evaluation and self.mean is None

    def transform(self, kind: str):
        """The torchvision transform of `kind`: train (random; draws from torch's global generator, so
        it is seeded per DataLoader worker), eval, or masking (the official `transform_data_to_mask`)."""
        from torchvision import transforms

        if kind not in VIEW_KINDS:
            raise ValueError(f"view kind must be one of {VIEW_KINDS}, got {kind!r}")
        if kind == "train" and self.train is not None:
            return self.train.build()
        geometry = self.masking if kind == "masking" else self.evaluation
        normalise = [] if self.mean is None else [transforms.Normalize(self.mean, self.std)]
        return transforms.Compose([*geometry.transforms(), transforms.ToTensor(), *normalise])

    def to_json(self) -> str:
        """The views as one JSON object (keys sorted: the same views give the same text, and file)."""
        return json.dumps({"masking": self.masking.as_json_value(), "evaluation": self.evaluation.as_json_value(),
                           "mean": self.mean, "std": self.std,
                           "train": None if self.train is None else self.train.as_json_value()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetViews:
        """The views `to_json` wrote; ValueError for any other text (e.g. a file of an older version)."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"views are not JSON ({error})") from None
        _check_keys(value, _VIEW_KEYS, "views")
        try:
            train = None if value["train"] is None else TrainTransform.from_json_value(value["train"])
            return cls(Geometry.from_json_value(value["masking"]), Geometry.from_json_value(value["evaluation"]),
                       value["mean"], value["std"], train)
        except TypeError as error:
            raise ValueError(f"views: {error}") from None


PLAIN = DatasetViews(masking=Geometry(), evaluation=Geometry())
