"""SVHN (cropped digits) read from its MATLAB files, `train_32x32.mat` and `test_32x32.mat`.

The official code takes SVHN from torchvision (aliasgharkhani/Masktune src/datasets/svhn.py L11-16,
src/methods/svhn_train.py L26-29 and L55-56: `split='train'` and `split='test'`, never `extra`), which reads
these files with `scipy.io.loadmat`: `X`, uint8 (32, 32, 3, N) (height, width, channel, image), and `y`,
(N, 1), the digit with 10 standing for 0 (torchvision maps 10 to 0, `np.place(labels, labels == 10, 0)`;
the official code then saves each image as `images/<split>/<label>/<id>.png`, svhn.py L27-32).
- splits: `train` and `val` from the 73,257 training digits by the official 20% draw with seed 50
  (masktune/datasets/official_val.py), `test` the 26,032 test digits, all in file order;
- pixels as they are, ToTensor only, no normalisation (svhn_train.py L17-18 transform_test, L23-25
  transform_data_to_mask); train view: RandomCrop(32, padding=4), ToTensor (L19-22);
- no spurious attribute: the groups are the classes (`groups_known` False); `source_index` is the digit's
  index in its file (the official `{id}.png`).
The official copies (`download: true`) are the two files torchvision downloads, with their md5s.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from masktune.config.fields import FilePath, Int, Number
from masktune.data.samples import SampleSet
from masktune.data.views import DatasetViews, Geometry, TrainTransform
from masktune.datasets.cifar10 import splits_from_options
from masktune.datasets.download import Source
from masktune.datasets.spec import DatasetSpec, PrepareConfig, dataset_folder
from masktune.errors import UserError

PARAM = "prepare.svhn.dir"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
CLASS_NAMES = tuple(str(digit) for digit in range(10))
DESCRIPTION = "SVHN's cropped digits (train_32x32.mat and test_32x32.mat)"

# torchvision.datasets.SVHN.split_list: url, filename and md5 of each split.
SOURCES = (
    Source(url="http://ufldl.stanford.edu/housenumbers/train_32x32.mat", filename=FILES["train"], param=PARAM,
           description=DESCRIPTION, md5="e26dedcc434d2e4c54c9b2d4a06d8373"),
    Source(url="http://ufldl.stanford.edu/housenumbers/test_32x32.mat", filename=FILES["test"], param=PARAM,
           description=DESCRIPTION, md5="eb5a983be6a315427106f1b164d9cef3"),
)


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 32, 32, 3) and digits int64 (N,) (10 read as 0) of one SVHN file."""
    import scipy.io  # a dependency of scikit-learn; loaded only to prepare SVHN

    if not path.is_file():
        raise UserError(f"{path}: SVHN file not found; set {PARAM} to the folder holding "
                        f"{' and '.join(FILES.values())}, or download: true")
    try:
        content = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as error:  # MATLAB v7.3 (HDF5) files
        raise UserError(f"{path}: a MATLAB v7.3 file ({error}); SVHN's are v5: check {PARAM}") from None
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, EOFError, KeyError, IndexError,
            MemoryError) as error:
        reason = str(error).strip().splitlines()[0][:100] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a MATLAB .mat file ({reason}); check {PARAM}") from None
    for key in ("X", "y"):
        if key not in content:
            raise UserError(f"{path}: no variable '{key}' in this .mat file: not SVHN; check {PARAM}")
    images, digits = np.asarray(content["X"]), np.asarray(content["y"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise UserError(f"{path}: 'X' must be uint8 of shape (32, 32, 3, N), got {images.dtype} {images.shape}; "
                        f"check {PARAM}")
    digits = digits.astype(np.int64).reshape(-1)
    if len(digits) != images.shape[3]:
        raise UserError(f"{path}: {images.shape[3]} images but {len(digits)} labels in 'y'; check {PARAM}")
    if len(digits) and (digits.min() < 1 or digits.max() > 10):
        raise UserError(f"{path}: labels 'y' outside 1..10 ({digits.min()}..{digits.max()}): not SVHN; "
                        f"check {PARAM}")
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), np.where(digits == 10, 0, digits)


def read_svhn(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, digits), "test": ...} from `root`."""
    return {split: read_mat(Path(root) / name) for split, name in FILES.items()}


def _prepare(config: PrepareConfig) -> dict[str, SampleSet]:
    return splits_from_options(read_svhn(dataset_folder(config, SOURCES, tuple(FILES.values()))), config)


# Official src/methods/svhn_train.py L17-25: ToTensor only to evaluate and to mask, a padded random crop to train.
VIEWS = DatasetViews(masking=Geometry(), evaluation=Geometry(), train=TrainTransform("pad_crop"))

PARAMS = {"dir": FilePath(nullable=True), "val_fraction": Number(0.0, 1.0, exclusive_minimum=True),  # prepare.svhn.*
          "val_seed": Int(0, 2**32 - 1), "train_limit": Int(2, nullable=True), "test_limit": Int(1, nullable=True)}

SPEC = DatasetSpec(params=PARAMS, name="svhn", num_classes=10, group_names=lambda options: dict(enumerate(CLASS_NAMES)),
                   test_splits=("test",), prepare=_prepare, views=VIEWS, sources=SOURCES, class_names=CLASS_NAMES,
                   groups_known=False)
