"""CIFAR-10 read from its Python release, `cifar-10-batches-py` (the paper's selective-classification set).

The official code takes CIFAR-10 from torchvision (aliasgharkhani/Masktune src/datasets/cifar10.py L11-16,
src/methods/cifar10_train.py L27-40), which reads the same files: `data_batch_1` ... `data_batch_5` (train,
in that order) and `test_batch`, each a pickle of a dict with `data`, uint8 (10000, 3072) (1024 red, then
1024 green, then 1024 blue values of a 32 x 32 image, rows top to bottom), and `labels`, 10,000 ints in
0..9; `batches.meta` holds `label_names`. The pickles were written by Python 2: read with
`encoding="latin1"`, as torchvision does (its keys may come back as bytes from other writers: both read).
- splits: `train` and `val` from the 50,000 training images by the official 20% draw with seed 50
  (masktune/datasets/official_val.py), `test` the 10,000 test images, all in file order;
- pixels as they are, ToTensor only, no normalisation (cifar10_train.py L17 transform_test, L25-26
  transform_data_to_mask); train view: RandomHorizontalFlip, RandomAffine(15, translate (0.1, 0.1)),
  ToTensor (L18-24);
- no spurious attribute: the groups are the classes (`groups_known` False); `source_index` is the image's
  index in the concatenated batches (torchvision's, the official `{id}.png` name, L30-32).
The official copy (`download: true`) is the tarball torchvision downloads, with its md5.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from masktune.config.fields import FilePath, Int, Number
from masktune.data.samples import SampleSet
from masktune.data.views import DatasetViews, Geometry, TrainTransform
from masktune.datasets.download import Source
from masktune.datasets.official_val import official_validation
from masktune.datasets.spec import DatasetSpec, PrepareConfig, dataset_folder
from masktune.errors import UserError

PARAM = "prepare.cifar10.dir"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# torchvision.datasets.CIFAR10: url, filename and tgz_md5.
SOURCES = (
    Source(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", filename="cifar-10-python.tar.gz",
           param=PARAM, description="CIFAR-10 (python version)", md5="c58f30108f718f92721af3b95e74349a"),
)


def _load_pickle(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: CIFAR-10 file not found; set {PARAM} to the folder holding {FOLDER}/ "
                        f"(the unpacked cifar-10-python.tar.gz), or download: true")
    try:
        with open(path, "rb") as handle:
            content = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            MemoryError) as error:
        raise UserError(f"{path}: not a CIFAR-10 pickle ({type(error).__name__}: {str(error)[:100]}); "
                        f"check {PARAM}") from None
    if not isinstance(content, dict):
        raise UserError(f"{path}: not a CIFAR-10 pickle (holds a {type(content).__name__}, not a dict); check {PARAM}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _missing_key(path: Path, key: str, content: dict) -> UserError:
    return UserError(f"{path}: no '{key}' in this pickle (has: {', '.join(map(str, content)) or 'nothing'}): "
                     f"not a CIFAR-10 batch; check {PARAM}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 32, 32, 3) and labels int64 (N,) of one batch file."""
    content = _load_pickle(path)
    for key in ("data", "labels"):
        if key not in content:
            raise _missing_key(path, key, content)
    data = np.asarray(content["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}; "
                        f"check {PARAM}")
    labels = np.asarray(content["labels"], dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(data)} images but {len(labels)} labels; check {PARAM}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{path}: labels outside 0..9 ({labels.min()}..{labels.max()}): not CIFAR-10; "
                        f"check {PARAM}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_class_names(path: Path) -> tuple[str, ...]:
    content = _load_pickle(path)
    if "label_names" not in content:
        raise _missing_key(path, "label_names", content)
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in content["label_names"])
    if len(names) != 10:
        raise UserError(f"{path}: {len(names)} label_names, CIFAR-10 has 10; check {PARAM}")
    return names


def batches_folder(root: Path) -> Path:
    """`root/cifar-10-batches-py`, or `root` itself when it holds the batch files."""
    return root / FOLDER if (root / FOLDER).is_dir() else root


def read_cifar10(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "test": ...}: the five training batches concatenated in order, the test
    batch; `batches.meta` must name CIFAR-10's classes in their order."""
    folder = batches_folder(Path(root))
    names = read_class_names(folder / META_FILE)
    if names != CLASS_NAMES:
        raise UserError(f"{folder / META_FILE}: label_names {', '.join(names)} are not CIFAR-10's "
                        f"({', '.join(CLASS_NAMES)}); check {PARAM}")
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    return {"train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
            "test": read_batch(folder / TEST_FILE)}


def pixel_split(images: np.ndarray, labels: np.ndarray, rows: np.ndarray | None = None) -> SampleSet:
    """A split of 10-class images without attribute (group = class); `source_index` the row in the file."""
    rows = np.arange(len(labels), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)[rows]
    return SampleSet(images[rows], labels, np.zeros_like(labels), rows, num_classes=10)


def build_splits(data: dict[str, tuple[np.ndarray, np.ndarray]], *, val_fraction: float, val_seed: int,
                 param: str, train_limit: int | None = None, test_limit: int | None = None) -> dict[str, SampleSet]:
    """train / val (the official draw) / test, from the first `train_limit` / `test_limit` images of each file."""
    train_images, train_labels = (a[:train_limit] for a in data["train"])
    test_images, test_labels = (a[:test_limit] for a in data["test"])
    train_rows, val_rows = official_validation(train_labels, val_fraction, val_seed, param)
    return {"train": pixel_split(train_images, train_labels, train_rows),
            "val": pixel_split(train_images, train_labels, val_rows),
            "test": pixel_split(test_images, test_labels)}


def splits_from_options(data: dict[str, tuple[np.ndarray, np.ndarray]], config: PrepareConfig) -> dict[str, SampleSet]:
    """`build_splits` with the `prepare.<dataset>` options CIFAR-10 and SVHN share."""
    options = config.options
    return build_splits(data, val_fraction=options["val_fraction"], val_seed=options["val_seed"],
                        param=f"prepare.{config.dataset}", train_limit=options["train_limit"],
                        test_limit=options["test_limit"])


def _folder(config: PrepareConfig) -> Path:
    """`prepare.cifar10.dir` may hold `cifar-10-batches-py/` or be that folder itself (`batches_folder`), so
    a local copy is checked here rather than by a marker; the download finds the unpacked folder."""
    local = config.options["dir"]
    if local is not None:
        if not Path(local).is_dir():
            raise UserError(f"{PARAM}: {local} is not a folder: set it to the folder holding {FOLDER}/, "
                            f"or to null with download: true")
        return Path(local)
    return dataset_folder(config, SOURCES, FOLDER)


def _prepare(config: PrepareConfig) -> dict[str, SampleSet]:
    return splits_from_options(read_cifar10(_folder(config)), config)


# Official src/methods/cifar10_train.py L17-26: ToTensor only to evaluate and to mask, flips + affine to train.
VIEWS = DatasetViews(masking=Geometry(), evaluation=Geometry(), train=TrainTransform("flip_affine"))

# The paper's selective-classification sets: official 20% validation draw (val_fraction, val_seed).
PARAMS = {"dir": FilePath(nullable=True), "val_fraction": Number(0.0, 1.0, exclusive_minimum=True),  # prepare.cifar10.*
          "val_seed": Int(0, 2**32 - 1), "train_limit": Int(2, nullable=True), "test_limit": Int(1, nullable=True)}

SPEC = DatasetSpec(params=PARAMS, name="cifar10", num_classes=10, group_names=lambda options: dict(enumerate(CLASS_NAMES)),
                   test_splits=("test",), prepare=_prepare, views=VIEWS, sources=SOURCES, class_names=CLASS_NAMES,
                   groups_known=False)
