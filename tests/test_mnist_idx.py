"""Reading the IDX files: the real ones parse, broken ones give one clear message naming the file."""
from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_datasets import make_mnist, write_idx

from masktune.datasets import mnist_idx
from masktune.errors import UserError


def test_real_mnist_matches_its_readme(mnist, mnist_dir):
    images, digits = mnist["train"]
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(digits).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert digits[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist["test"][1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert round(images.mean() / 255, 4) == 0.1307
    raw = gzip.decompress((mnist_dir / "train-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"


@pytest.fixture
def tiny_mnist(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("test", 10)):
        images, labels = mnist_idx.FILES[split]
        write_idx(tmp_path / images, rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / labels, np.arange(n) % 10)
    return tmp_path


def test_raw_and_torchvision_layouts_are_read(tiny_mnist, tmp_path):
    data = mnist_idx.load_mnist(tiny_mnist)
    assert data["train"][0].shape == (20, 28, 28) and data["test"][1].tolist() == list(range(10))
    nested = tmp_path / "tv"
    (nested / "MNIST" / "raw").mkdir(parents=True)
    for f in tiny_mnist.glob("*ubyte"):
        shutil.copy(f, nested / "MNIST" / "raw" / f.name)
    np.testing.assert_array_equal(mnist_idx.load_mnist(nested)["train"][0], data["train"][0])


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "missing MNIST file train-images-idx3-ubyte"),
    (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated or corrupt"),
    (lambda p: p.write_bytes(b"\x00\x00\x08\x01" + p.read_bytes()[4:]), "bad magic number"),
])
def test_damaged_files_name_the_file(tiny_mnist, damage, message):
    damage(tiny_mnist / "train-images-idx3-ubyte")
    with pytest.raises(UserError, match=message) as info:
        mnist_idx.load_mnist(tiny_mnist)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_corrupt_gzip_and_count_mismatch(tiny_mnist):
    (tiny_mnist / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    (tiny_mnist / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match=r"t10k-labels-idx1-ubyte.gz: cannot be read as gzip"):
        mnist_idx.load_mnist(tiny_mnist)
    write_idx(tiny_mnist / "t10k-labels-idx1-ubyte", np.arange(7))
    (tiny_mnist / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="has 10 images but t10k-labels-idx1-ubyte has 7 labels"):
        mnist_idx.load_mnist(tiny_mnist)


def test_not_a_folder_says_which_param_to_set(tmp_path):
    with pytest.raises(UserError, match="set prepare.biased_mnist.mnist_dir"):
        mnist_idx.load_mnist(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"^prepare.cmnist.mnist_dir: .* set prepare.cmnist.mnist_dir in params"):
        mnist_idx.load_mnist(tmp_path / "nowhere", "prepare.cmnist.mnist_dir")  # C-MNIST names its own key


def test_offline_download_says_which_param_to_set(monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirrors")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UserError) as info:
        mnist_idx.load_mnist(None)
    assert "could not download MNIST" in str(info.value) and "prepare.biased_mnist.mnist_dir" in str(info.value)
    assert "\n" not in str(info.value)


def test_synthetic_twin_is_read_like_the_real_files(tmp_path):
    mnist = mnist_idx.load_mnist(make_mnist(tmp_path, n_train=50, n_test=20))
    images, digits = mnist["train"]
    assert images.shape == (50, 28, 28) and images.dtype == np.uint8 and np.bincount(digits).tolist() == [5] * 10
    assert (images[digits == 3][:, 6:22, 10:12] == 255).all()  # digit 3: the stroke at column 4 + 2 * 3
    assert mnist["test"][0].shape == (20, 28, 28)


def _torchvision_mnist(monkeypatch, calls: list) -> None:
    """torchvision's MNIST, offline: writes the synthetic files where it would write the real ones
    (`root/MNIST/raw`), and records each call."""
    import torchvision.datasets

    def fake(root, train, download):
        calls.append((root, train))
        make_mnist(Path(root) / "MNIST" / "raw", n_train=30, n_test=10)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake)


def test_no_folder_downloads_once_into_the_download_location(tmp_path, monkeypatch):
    calls = []
    _torchvision_mnist(monkeypatch, calls)
    cache = tmp_path / "downloads" / "mnist"
    first = mnist_idx.load_mnist(None, cache=cache)
    assert len(calls) == 2 and first["train"][0].shape == (30, 28, 28)
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["mnist"]  # no temporary folder left
    second = mnist_idx.load_mnist(None, cache=cache)  # read from the location, no second download
    assert len(calls) == 2 and np.array_equal(first["test"][0], second["test"][0])


def test_a_failed_download_leaves_no_download_location(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(UserError, match="could not download MNIST"):
        mnist_idx.load_mnist(None, "prepare.cmnist.mnist_dir", cache=tmp_path / "mnist")
    assert list(tmp_path.iterdir()) == []  # the next run tries again


def test_an_incomplete_download_location_is_named(tmp_path):
    cache = make_mnist(tmp_path / "mnist", n_train=10, n_test=10)
    (cache / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"mnist: an incomplete MNIST download location; delete it"):
        mnist_idx.load_mnist(None, cache=cache)


def test_prepare_reads_mnist_from_download_dir_when_mnist_dir_is_null(tmp_path, monkeypatch):
    from masktune.datasets import DATASETS
    from masktune.datasets.spec import PrepareConfig

    calls = []
    _torchvision_mnist(monkeypatch, calls)
    make_mnist(tmp_path / "downloads" / "mnist", n_train=40, n_test=20)  # already downloaded there
    options = {"mnist_dir": None, "val_size": 10, "seed": 0, "train_limit": None, "test_limit": None}
    config = PrepareConfig(dataset="mnist", options=options, download=False, download_dir=tmp_path / "downloads")
    splits = DATASETS["mnist"].prepare(config)
    assert calls == [] and (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (30, 10, 20)
