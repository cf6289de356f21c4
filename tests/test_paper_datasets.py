"""The paper's selective-classification sets (CIFAR-10, SVHN, Cats vs Dogs) read from their distributed formats,
their official validation draw, the official CIFAR ResNet-32, and the multistep learning-rate schedule.

Everything the official code does is recomputed here independently (the draw with numpy's global generator
exactly as src/methods/cifar10_train.py L44-53 runs it, the listing from the labels by plain Python sorting,
the pixels from the raw arrays or Pillow), and compared number for number."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, RecordingLive, committed_params
from fixtures_datasets import CIFAR10_LABEL_NAMES, make_cats_vs_dogs, make_cifar10, make_svhn
from PIL import Image

from masktune.data.prepared import open_prepared
from masktune.data.samples import SampleSet
from masktune.data.splits import AugmentedPixelSplit, PixelSplit, open_split
from masktune.datasets import DATASETS, cats_vs_dogs, cifar10, svhn
from masktune.errors import UserError
from masktune.models import build_model
from masktune.models.checkpoint import load_checkpoint
from masktune.train.fit import Keep, Plan, fit
from masktune.train.loop import make_optimizer, make_scheduler, restore_optimizer

CPU = torch.device("cpu")


def official_draw(labels: list[int], fraction: float = 0.2, seed: int = 50) -> tuple[list[int], list[int]]:
    """(train, val) file rows, sorted: the official code's draw (np.random.seed, shuffle a list, the first
    floor(0.2 N) for validation) over the listing class by class, each class in file order."""
    listing = sorted(range(len(labels)), key=lambda row: (labels[row], row))
    indices = list(range(len(labels)))
    split = int(np.floor(fraction * len(labels)))
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        np.random.shuffle(indices)
    finally:
        np.random.set_state(state)
    return sorted(listing[i] for i in indices[split:]), sorted(listing[i] for i in indices[:split])


def test_randomstate_permutation_is_the_official_shuffle_of_a_list():
    for n in (1, 7, 60, 1000, 40_000):
        indices = list(range(n))
        np.random.seed(50)
        np.random.shuffle(indices)
        assert np.random.RandomState(50).permutation(n).tolist() == indices


# ---------------------------------------------------------------------------------------------
# CIFAR-10


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return make_cifar10(tmp_path_factory.mktemp("cifar10"))


def test_cifar10_pixels_labels_and_names_round_trip(cifar_dir):
    folder = cifar_dir / "cifar-10-batches-py"
    raw = []
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / name, "rb") as handle:
            raw.append(pickle.load(handle, encoding="latin1"))
    data = cifar10.read_cifar10(cifar_dir)
    images, labels = data["train"]
    assert images.shape == (60, 32, 32, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    # image 17 = the 6th of data_batch_2: pixel (y, x, c) is data[c * 1024 + y * 32 + x]
    row = raw[1]["data"][5]
    for y, x, c in ((0, 0, 0), (3, 7, 1), (31, 31, 2), (12, 20, 2)):
        assert images[17, y, x, c] == row[c * 1024 + y * 32 + x]
    assert np.array_equal(images[17], row.reshape(3, 32, 32).transpose(1, 2, 0))
    assert labels.tolist() == [label for batch in raw for label in batch["labels"]]
    assert cifar10.read_class_names(folder / "batches.meta") == tuple(CIFAR10_LABEL_NAMES) == cifar10.CLASS_NAMES
    # the folder itself works as well as its parent
    assert np.array_equal(cifar10.read_cifar10(folder)["test"][0], data["test"][0])


def test_cifar10_bytes_keys_are_read_too(tmp_path):
    as_bytes = cifar10.read_cifar10(make_cifar10(tmp_path / "b", bytes_keys=True))
    as_text = cifar10.read_cifar10(make_cifar10(tmp_path / "t"))
    for split in ("train", "test"):
        assert all(np.array_equal(a, b) for a, b in zip(as_bytes[split], as_text[split]))


def test_cifar10_splits_follow_the_official_draw(cifar_dir):
    data = cifar10.read_cifar10(cifar_dir)
    splits = cifar10.build_splits(data, val_fraction=0.2, val_seed=50, param="prepare.cifar10")
    labels = data["train"][1].tolist()
    train_rows, val_rows = official_draw(labels)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (48, 12, 10)
    assert splits["val"].source_index.tolist() == val_rows
    assert splits["train"].source_index.tolist() == train_rows
    assert splits["test"].source_index.tolist() == list(range(10))
    for split in ("train", "val"):
        rows = splits[split].source_index
        assert np.array_equal(splits[split].images, data["train"][0][rows])
        assert splits[split].labels.tolist() == [labels[r] for r in rows]
        assert np.array_equal(splits[split].groups, splits[split].labels)  # groups = classes
    # another seed draws another validation set; a limit draws over the first images only
    other = cifar10.build_splits(data, val_fraction=0.2, val_seed=51, param="prepare.cifar10")
    assert other["val"].source_index.tolist() != val_rows
    limited = cifar10.build_splits(data, val_fraction=0.2, val_seed=50, param="prepare.cifar10", train_limit=25,
                                   test_limit=4)
    assert limited["val"].source_index.tolist() == official_draw(labels[:25])[1]
    assert (len(limited["train"]), len(limited["val"]), len(limited["test"])) == (20, 5, 4)


def test_cifar10_bad_input_is_one_line_naming_file_and_param(cifar_dir, tmp_path):
    broken = tmp_path / "broken" / "cifar-10-batches-py"
    broken.mkdir(parents=True)
    for f in (cifar_dir / "cifar-10-batches-py").iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"data_batch_3: CIFAR-10 file not found; set prepare.cifar10.dir"):
        cifar10.read_cifar10(broken.parent)
    (broken / "data_batch_3").write_text("not a pickle at all")
    with pytest.raises(UserError, match=r"data_batch_3: not a CIFAR-10 pickle .*check prepare.cifar10.dir"):
        cifar10.read_cifar10(broken.parent)
    with open(broken / "data_batch_3", "wb") as handle:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8)}, handle, protocol=2)
    with pytest.raises(UserError, match=r"data_batch_3: no 'labels' in this pickle \(has: data\)"):
        cifar10.read_cifar10(broken.parent)
    with open(broken / "data_batch_3", "wb") as handle:
        pickle.dump({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}, handle, protocol=2)
    with pytest.raises(UserError, match=r"'data' must be uint8 of shape \(N, 3072\), got uint8 \(2, 1024\)"):
        cifar10.read_cifar10(broken.parent)
    with open(broken / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": ["a"] * 10}, handle, protocol=2)
    with pytest.raises(UserError, match=r"batches.meta: label_names a, a, .* are not CIFAR-10's"):
        cifar10.read_cifar10(broken.parent)
    with pytest.raises(UserError, match=r"val_fraction 0.01 of 60 training images leaves no validation image"):
        cifar10.build_splits(cifar10.read_cifar10(cifar_dir), val_fraction=0.01, val_seed=50,
                             param="prepare.cifar10")


# ---------------------------------------------------------------------------------------------
# SVHN


@pytest.fixture(scope="module")
def svhn_dir(tmp_path_factory):
    return make_svhn(tmp_path_factory.mktemp("svhn"))


def test_svhn_pixels_round_trip_and_10_is_0(svhn_dir):
    import scipy.io

    raw = scipy.io.loadmat(svhn_dir / "train_32x32.mat")
    images, digits = svhn.read_svhn(svhn_dir)["train"]
    assert images.shape == (30, 32, 32, 3) and images.dtype == np.uint8
    for n, y, x, c in ((0, 0, 0, 0), (7, 5, 9, 1), (29, 31, 30, 2)):
        assert images[n, y, x, c] == raw["X"][y, x, c, n]
    y = raw["y"].reshape(-1)
    assert 10 in y and 0 not in y
    assert digits.tolist() == [0 if d == 10 else int(d) for d in y]
    assert sorted(set(digits.tolist())) == list(range(10))
    splits = cifar10.build_splits(svhn.read_svhn(svhn_dir), val_fraction=0.2, val_seed=50, param="prepare.svhn")
    train_rows, val_rows = official_draw(digits.tolist())
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (24, 6, 12)
    assert splits["val"].source_index.tolist() == val_rows and splits["train"].source_index.tolist() == train_rows
    assert svhn.SPEC.class_names == tuple("0123456789") and not svhn.SPEC.groups_known


def test_svhn_bad_input_is_one_line_naming_file_and_param(svhn_dir, tmp_path):
    import scipy.io

    with pytest.raises(UserError, match=r"train_32x32.mat: SVHN file not found; set prepare.svhn.dir"):
        svhn.read_svhn(tmp_path)
    (tmp_path / "train_32x32.mat").write_text("hello, not a MATLAB file" * 10)
    with pytest.raises(UserError, match=r"train_32x32.mat: not a MATLAB .mat file .*check prepare.svhn.dir"):
        svhn.read_mat(tmp_path / "train_32x32.mat")
    (tmp_path / "train_32x32.mat").write_bytes((svhn_dir / "train_32x32.mat").read_bytes()[:300])
    with pytest.raises(UserError, match=r"train_32x32.mat: not a MATLAB .mat file \(could not read bytes\); check prepare.svhn.dir$"):
        svhn.read_mat(tmp_path / "train_32x32.mat")
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                    "y": np.array([[0], [3]], np.uint8)})
    with pytest.raises(UserError, match=r"labels 'y' outside 1..10 \(0..3\): not SVHN"):
        svhn.read_mat(tmp_path / "train_32x32.mat")
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(UserError, match=r"'X' must be uint8 of shape \(32, 32, 3, N\), got uint8 \(28, 28, 3, 2\)"):
        svhn.read_mat(tmp_path / "train_32x32.mat")
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"images": np.zeros(3)})
    with pytest.raises(UserError, match=r"no variable 'X' in this .mat file: not SVHN; check prepare.svhn.dir"):
        svhn.read_mat(tmp_path / "train_32x32.mat")


# ---------------------------------------------------------------------------------------------
# Cats vs Dogs


@pytest.fixture(scope="module")
def kaggle_dir(tmp_path_factory):
    return make_cats_vs_dogs(tmp_path_factory.mktemp("cats_vs_dogs"))


def _build(folder, **overrides) -> dict[str, SampleSet]:
    options = {"test_per_class": 4, "test_seed": 0, "val_fraction": 0.2, "val_seed": 50, **overrides}
    return cats_vs_dogs.build_cats_vs_dogs(folder, **options)


def test_cats_vs_dogs_pixels_are_the_official_64x64_resize(kaggle_dir):
    splits = _build(kaggle_dir)
    names = [f"cat.{i}.jpg" for i in range(20)] + [f"dog.{i}.jpg" for i in range(20)]
    for split in splits.values():
        assert split.images.shape[1:] == (64, 64, 3)
        for k in (0, len(split) - 1):
            row = int(split.source_index[k])
            with Image.open(kaggle_dir / names[row]) as image:
                official = np.asarray(image.convert("RGB").resize(size=(64, 64)))  # Pillow's default: bicubic
            assert np.array_equal(split.images[k], official), names[row]
            assert split.labels[k] == (0 if names[row].startswith("cat") else 1)
    with Image.open(kaggle_dir / "cat.8.jpg") as grey:  # a greyscale JPEG comes out as 3 equal channels
        assert grey.mode == "L"


def test_cats_vs_dogs_test_substitute_and_official_draw(kaggle_dir):
    splits = _build(kaggle_dir)
    labels = [0] * 20 + [1] * 20
    rng = np.random.default_rng(0)
    test = sorted(rng.choice(20, size=4, replace=False).tolist()) + sorted((20 + rng.choice(20, 4, replace=False)).tolist())
    assert splits["test"].source_index.tolist() == test
    rest = [row for row in range(40) if row not in test]
    train, val = official_draw([labels[r] for r in rest])
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (26, 6, 8)
    assert splits["val"].source_index.tolist() == [rest[i] for i in val]
    assert splits["train"].source_index.tolist() == [rest[i] for i in train]
    limited = _build(kaggle_dir, limit=2)
    assert [s.labels.tolist() for s in limited.values()] == [[0, 0, 1, 1]] * 3


def test_cats_vs_dogs_official_test_lists_are_used_when_present(kaggle_dir, tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    for f in kaggle_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "cat_idx.txt").write_text("3.jpg\n11.jpg\n0.jpg\n")
    (folder / "dog_idx.txt").write_text("5.jpg\n19.jpg\n2.jpg\n7.jpg\n")  # zipped: the 4th dog is not used
    splits = _build(folder)
    assert splits["test"].source_index.tolist() == [0, 3, 11, 20 + 2, 20 + 5, 20 + 19]
    assert len(splits["train"]) + len(splits["val"]) == 34 and len(splits["val"]) == 6
    (folder / "dog_idx.txt").write_text("5.jpg\n25.jpg\n")
    with pytest.raises(UserError, match=r"dog_idx.txt: id 25 has no dog.25.\* image"):
        _build(folder)
    (folder / "dog_idx.txt").write_text("5.jpg\nfive\n")
    with pytest.raises(UserError, match=r"dog_idx.txt: line 2: expected <id>.<extension>"):
        _build(folder)


def test_cats_vs_dogs_bad_input_is_one_line_naming_file_and_param(kaggle_dir, tmp_path):
    with pytest.raises(UserError, match=r"no cat.<id>.jpg or dog.<id>.jpg images; set prepare.cats_vs_dogs.dir"):
        _build(tmp_path)
    with pytest.raises(UserError, match=r"^prepare.cats_vs_dogs.dir: .* is not a folder"):
        _build(tmp_path / "nowhere")
    for f in kaggle_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(UserError, match=r"test_per_class must be between 1 and 19 .* got 20"):
        _build(tmp_path, test_per_class=20)
    (tmp_path / "dog.13.jpg").write_bytes((kaggle_dir / "dog.13.jpg").read_bytes()[:200])
    with pytest.raises(UserError, match=r"dog.13.jpg: cannot read image \(corrupted or truncated\?"):
        _build(tmp_path)


# ---------------------------------------------------------------------------------------------
# prepare, as dvc runs it


def _prepare(tmp_path, dataset: str, **options) -> subprocess.CompletedProcess:
    params = committed_params()
    params["dataset"] = dataset
    params["prepare"][dataset].update({key: (str(v) if hasattr(v, "parent") else v) for key, v in options.items()})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    return subprocess.run([sys.executable, "-m", "stages.prepare", "--out", "prepared.h5"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          check=False)


@pytest.mark.parametrize("dataset", ["cifar10", "svhn", "cats_vs_dogs"])
def test_prepare_stage_writes_the_splits(dataset, tmp_path, cifar_dir, svhn_dir, kaggle_dir):
    folder = {"cifar10": cifar_dir, "svhn": svhn_dir, "cats_vs_dogs": kaggle_dir}[dataset]
    extra = {"test_per_class": 4} if dataset == "cats_vs_dogs" else {}
    result = _prepare(tmp_path, dataset, dir=folder, **extra)
    assert result.returncode == 0, result.stderr
    prepared, spec = open_prepared(tmp_path / "prepared.h5")
    assert spec.views == DATASETS[dataset].views and spec.test_splits == ("test",) and not spec.groups_known
    assert prepared.class_names == spec.class_names == DATASETS[dataset].class_names
    sizes = {"cifar10": (48, 12, 10), "svhn": (24, 6, 12), "cats_vs_dogs": (26, 6, 8)}[dataset]
    assert tuple(prepared.length(s) for s in ("train", "val", "test")) == sizes
    assert f"val: {sizes[1]} images" in result.stdout
    # eval and masking read the stored pixels as they are; train through the official random transform
    assert type(open_split(prepared, "val", spec.views, "eval")) is PixelSplit
    assert type(open_split(prepared, "train", spec.views, "masking")) is PixelSplit
    train = open_split(prepared, "train", spec.views, "train", workers=0)
    assert isinstance(train, AugmentedPixelSplit)
    side = 64 if dataset == "cats_vs_dogs" else 32
    torch.manual_seed(0)
    inputs, index = next(train.batches(8, CPU, torch.Generator().manual_seed(0)))
    assert inputs.shape == (8, 3, side, side) and len(set(index.tolist())) == 8
    plain = torch.from_numpy(prepared.pixels("train", np.sort(index))).permute(0, 3, 1, 2).float() / 255
    assert not torch.equal(inputs[np.argsort(index)], plain)  # augmented
    assert float(inputs.min()) >= 0.0 and float(inputs.max()) <= 1.0  # ToTensor only, no normalisation


@pytest.mark.parametrize("dataset, line", [
    ("cifar10", "error: prepare.cifar10.dir: {missing} is not a folder"),
    ("svhn", "error: prepare.svhn.dir: {missing} is not a folder"),
    ("cats_vs_dogs", "error: prepare.cats_vs_dogs.dir: {missing} is not a folder"),
])
def test_prepare_stage_fails_in_one_line(dataset, line, tmp_path):
    missing = tmp_path / "nowhere"
    result = _prepare(tmp_path, dataset, dir=missing)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(line.format(missing=missing))
    assert not (tmp_path / "prepared.h5").exists()
    result = _prepare(tmp_path, dataset)  # dir null, download off
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1
    assert f"prepare.{dataset}.dir" in lines[0]
    if dataset == "cats_vs_dogs":
        assert lines[0].startswith("error: Cats vs Dogs needs a Kaggle login to download")


def test_committed_recipes_are_the_bash_files():
    params = committed_params()
    for dataset, weight_decay in (("cifar10", 0.0001), ("svhn", 0.0005)):
        recipe = params["recipes"][dataset]
        assert recipe["lr"] == 0.1
        assert recipe["train_erm"] | {} == {
            "arch": "resnet32", "pretrained": False, "epochs": 300, "batch_size": 128, "momentum": 0.9,
            "weight_decay": weight_decay, "lr_schedule": "constant", "lr_milestone_every": 25, "lr_gamma": 0.5,
            "optimizer": "sgd"}
        assert params["prepare"][dataset]["val_seed"] == 50 and params["prepare"][dataset]["val_fraction"] == 0.2
    recipe = params["recipes"]["cats_vs_dogs"]
    assert recipe["lr"] == 0.001 and recipe["train_erm"]["epochs"] == 200 and recipe["train_erm"]["arch"] == "resnet32"
    assert recipe["train_erm"]["optimizer"] == "adam" and recipe["train_erm"]["weight_decay"] == 0.0001
    # every other dataset keeps its schedule
    for name in ("biased_mnist", "waterbirds", "celeba", "in9l", "mnist", "folder"):
        assert params["recipes"][name]["train_erm"]["lr_schedule"] == "constant"
    assert params["recipes"]["cmnist"]["train_erm"]["lr_schedule"] == "cosine"
    from masktune.config.params import config_params
    from masktune.robust_train.cluster_reweight import ClusterReweightConfig
    from masktune.train.network import TrainErmConfig

    assert "multistep" in config_params(TrainErmConfig)["train_erm.lr_schedule"].options
    assert "multistep" not in config_params(ClusterReweightConfig)["cluster_reweight.lr_schedule"].options  # no


# ---------------------------------------------------------------------------------------------
# ResNet-32


def test_resnet32_is_the_official_network():
    model = build_model("resnet32", 10)

    def conv(cin, cout):
        return 9 * cin * cout

    bn = 2  # weight and bias per channel
    count = conv(3, 16) + bn * 16 + 64 * 10 + 10
    for cin, cout in ((16, 16), (16, 32), (32, 64)):
        count += conv(cin, cout) + conv(cout, cout) + 2 * bn * cout  # first block (option-A shortcut: 0)
        count += 4 * (2 * conv(cout, cout) + 2 * bn * cout)
    assert count == 464_154
    assert sum(p.numel() for p in model.parameters()) == count  # "ResNet32 | 32 | 0.46M"
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) + 1 == 32  # 31 convolutions + linear
    names = list(model.state_dict())
    assert names[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                         "bn1.num_batches_tracked"]
    assert "layer2.0.conv1.weight" in names and names[-2:] == ["linear.weight", "linear.bias"]
    assert model.grad_cam_target_layer() is model.layer3[4]
    model.eval()
    seen = []
    handle = model.grad_cam_target_layer().register_forward_hook(lambda m, a, out: seen.append(tuple(out.shape)))
    for side in (32, 64):
        assert model(torch.rand(2, 3, side, side)).shape == (2, 10)
    handle.remove()
    assert seen == [(2, 64, 8, 8), (2, 64, 16, 16)]
    # option A: stride-2 subsampling, planes // 4 zero channels on each side
    shortcut = model.layer2[0].shortcut
    x = torch.rand(1, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (1, 32, 4, 4) and torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()


# ---------------------------------------------------------------------------------------------
# The multistep schedule and the finetune after it


def _bare_rates(schedule: str, epochs: int, every: int, gamma: float, lr: float) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer, schedule, epochs, every, gamma)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return rates + [optimizer.param_groups[0]["lr"]]  # and the rate the last checkpoint holds


def test_official_multistep_rates_per_epoch():
    rates = _bare_rates("multistep", 300, 25, 0.5, 0.1)
    assert rates[:-1] == pytest.approx([0.1 * 0.5 ** (epoch // 25) for epoch in range(300)], rel=1e-12)
    assert rates[24] == 0.1 and rates[25] == 0.05 and rates[274] == pytest.approx(0.1 * 0.5 ** 10, rel=1e-12)
    assert rates[-1] == pytest.approx(0.1 * 0.5 ** 11, rel=1e-12)  # 11 milestones: 25, ..., 275; not 300
    assert rates[-1] == pytest.approx(4.8828125e-05, rel=1e-12)
    assert _bare_rates("constant", 5, 25, 0.5, 0.1) == [0.1] * 6


def test_multistep_in_fit_and_the_finetune_continues_at_the_decayed_rate(tmp_path):
    epochs, lr = 7, 0.1
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 32)
    data = PixelSplit.from_samples(SampleSet(rng.integers(0, 255, (32, 16, 16, 3)).astype(np.uint8), labels,
                                             np.zeros(32, dtype=np.int64), np.arange(32)))
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 2)
    optimizer = make_optimizer(model, lr, 0.9, 1e-4)
    log = RecordingLive()
    fit(model, optimizer, data, data, torch.Generator().manual_seed(0), CPU, log,
        Plan(epochs=epochs, batch_size=16, eval_batch_size=64,
             scheduler=make_scheduler(optimizer, "multistep", epochs, 2, 0.5)),
        Keep(info={"arch": "tiny_cnn", "num_classes": 2, "lr_schedule": "multistep"}, best_path=tmp_path / "best.pt",
             last_path=tmp_path / "last.pt"))
    used = [value for _, name, value in log.metrics if name == "train/lr"]
    assert used == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125], rel=1e-12)
    _, state = load_checkpoint(tmp_path / "last.pt", CPU)
    group = state["optimizer"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.0125, rel=1e-12) and group["initial_lr"] == lr
    # the official finetune restores the optimizer's state dict, lr included, and does not step: 0.0125
    continued, _ = load_checkpoint(tmp_path / "last.pt", CPU)
    assert restore_optimizer(continued, state).param_groups[0]["lr"] == pytest.approx(0.0125, rel=1e-12)
    assert restore_optimizer(continued, state, lr=0.02).param_groups[0]["lr"] == 0.02
    # a cosine checkpoint (no lr_schedule key) still continues at its initial rate, as before
    assert restore_optimizer(continued, {**state, "lr_schedule": None}).param_groups[0]["lr"] == lr


def test_adam_as_the_official_cats_vs_dogs_and_the_finetune_continues_it(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 2)
    optimizer = make_optimizer(model, 0.001, 0.9, 1e-4, "adam")
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["betas"], group["eps"]) == (0.001, 1e-4, (0.9, 0.999), 1e-8)
    torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 16, 16)), torch.tensor([0, 1, 1, 0])).backward()
    optimizer.step()
    restored = restore_optimizer(model, {"optimizer": optimizer.state_dict()})
    assert isinstance(restored, torch.optim.Adam) and restored.param_groups[0]["lr"] == 0.001
    for saved, loaded in zip(optimizer.state.values(), restored.state.values()):
        assert torch.equal(saved["exp_avg"], loaded["exp_avg"]) and torch.equal(saved["exp_avg_sq"], loaded["exp_avg_sq"])
    sgd = make_optimizer(model, 0.1, 0.9, 1e-4)
    assert isinstance(restore_optimizer(model, {"optimizer": sgd.state_dict()}), torch.optim.SGD)
