"""Benchmark 4: our `compute_saliency` + `materialize_masked_dataset` against the official approach.

On the full biased MNIST (48,000 training images after the official 12,000-image validation draw),
with a SmallCNN trained for one ERM epoch by our `train_erm` stage:
- the official approach, as `TrainBaseMethod.mask_data` in aliasgharkhani/Masktune
  (src/methods/base_method.py, src/utils/masking.py, src/utils/data_save_load.py) does it: a
  DataLoader reads each training image from its own PNG file (batch 128, the official
  --masking_batch_size; 2 workers), `pytorch_grad_cam.XGradCAM` computes the maps, the mean + 2 std
  rule masks them with NumPy, and a new multiprocessing Pool per batch opens each original PNG,
  resizes the mask with OpenCV and writes the masked image as a new PNG. Timed in-process from the
  first batch to the last file, without Python start-up (the 75 s measured for the official code
  on this machine is its own "Masking Time" print, which counts the same work);
- ours: the two stages as `dvc repro` runs them (`python -m stages...`, start-up included).
The masked images of both are compared pixel by pixel at the end. Writing the input PNGs (the
official data layout) is set-up and not timed.

    python bench/official_masking.py [--mnist-dir ../shared/data/mnist]
    python bench/official_masking.py --quick    # the first 600 digits (tests)
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from itertools import repeat
from pathlib import Path

import cv2
import numpy as np
import pytorch_grad_cam
import torch
import yaml
from common import QUICK_SIZES, ROOT, add_quick_flag, emit_json, machine, print_table
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from masktune.config.files import parse_yaml
from masktune.data.masks import apply_masks, read_masks
from masktune.data.prepared import PreparedFile
from masktune.models.checkpoint import load_checkpoint


class PngImages(Dataset):
    """The official data-to-mask dataset: (image tensor in [0, 1], path, label) per PNG file."""

    def __init__(self, paths: list[str], labels: np.ndarray):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = np.asarray(Image.open(self.paths[i]).convert("RGB"))
        return torch.from_numpy(image).permute(2, 0, 1).float() / 255, self.paths[i], int(self.labels[i])


def official_threshold_masks(maps: np.ndarray) -> np.ndarray:
    """(B, H, W, 1) keep-masks: 0 where a map exceeds the mean + 2 std of its positive values."""
    positive = np.where(maps > 0, maps, np.nan)
    threshold = np.nanmean(positive, axis=(1, 2))[:, None, None] + 2 * np.nanstd(positive, axis=(1, 2))[:, None, None]
    return np.where(maps > threshold, 0, 1)[..., None]


def save_masked_png(keep: np.ndarray, out_dir: str, label: int, path: str) -> None:
    """Open the original image, stretch the mask over it (nearest), write the masked copy as PNG."""
    target = os.path.join(out_dir, str(label))
    os.makedirs(target, exist_ok=True)
    original = Image.open(path).convert("RGB")
    keep = cv2.resize(keep.astype(np.uint8), dsize=original.size, interpolation=cv2.INTER_NEAREST)[..., None]
    Image.fromarray((np.asarray(original) * keep).astype(np.uint8)).save(os.path.join(target, os.path.basename(path)))


def official_masking(model: torch.nn.Module, paths: list[str], labels: np.ndarray, out_dir: Path) -> float:
    loader = DataLoader(PngImages(paths, labels), batch_size=128, shuffle=False, num_workers=2)
    cam = pytorch_grad_cam.XGradCAM(model=model, target_layers=[model.grad_cam_target_layer()], use_cuda=False)
    start = time.perf_counter()
    for images, batch_paths, targets in loader:
        keep = official_threshold_masks(cam(images))
        with multiprocessing.Pool() as pool:  # the official code makes a new Pool for every batch
            pool.starmap(save_masked_png, zip(keep, repeat(str(out_dir)), targets.tolist(), batch_paths))
    seconds = time.perf_counter() - start
    cam.activations_and_grads.release()
    return seconds


def run_stage(folder: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], cwd=folder, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mnist-dir", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    add_quick_flag(parser)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="masktune-official-") as tmp:
        folder = Path(tmp)
        params = parse_yaml((ROOT / "params.yaml").read_text())
        params["prepare"]["biased_mnist"]["mnist_dir"] = str(args.mnist_dir.resolve())
        params["train_erm"]["epochs"] = 1
        if args.quick:
            params["prepare"]["biased_mnist"].update(QUICK_SIZES)
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
        print("set-up: prepare and one ERM epoch ...", flush=True)
        run_stage(folder, "stages.prepare", "--out", "prepared.h5")
        run_stage(folder, "stages.train_erm", "--data", "prepared.h5", "--best", "best.pt", "--last", "last.pt",
                  "--live", "live", "--oracle", "oracle.pt")

        train = PreparedFile(folder / "prepared.h5").samples("train")
        paths = [str(folder / "png" / f"{i:05d}.png") for i in range(len(train))]
        (folder / "png").mkdir()
        for path, image in zip(paths, train.images):
            Image.fromarray(image).save(path)

        saliency = run_stage(folder, "stages.compute_saliency", "--data", "prepared.h5", "--model", "best.pt",
                             "--out", "saliency.h5")
        masking = run_stage(folder, "stages.materialize_masked_dataset", "--method", "masktune", "--data",
                            "prepared.h5", "--saliency", "saliency.h5", "--out", "masks.h5", "--metrics", "mask.json",
                            "--gallery", "gallery")
        ours = saliency + masking

        print("official approach ...", flush=True)
        model, _ = load_checkpoint(folder / "best.pt", torch.device("cpu"))
        official = official_masking(model, paths, train.labels, folder / "masked")

        masked = apply_masks(train.images, read_masks(folder / "masks.h5", len(train), train.images.shape[1:3]))
        theirs = np.stack([np.asarray(Image.open(folder / "masked" / str(label) / os.path.basename(path)))
                           for path, label in zip(paths, train.labels)])
        differing = float((masked != theirs).any(axis=-1).mean())
        png_bytes = sum(p.stat().st_size for p in (folder / "masked").rglob("*.png"))
        our_bytes = (folder / "saliency.h5").stat().st_size + (folder / "masks.h5").stat().st_size

    n = len(paths)
    rows = [{"approach": "official (grad-cam + one PNG per image)", "seconds": official, "images_per_s": n / official,
             "output_bytes_per_image": png_bytes / n},
            {"approach": "ours (compute_saliency + materialize_masked_dataset)", "seconds": ours,
             "images_per_s": n / ours, "output_bytes_per_image": our_bytes / n}]
    print_table(rows, f"{n:,} biased-MNIST training images, CPU ({machine()})")
    print(f"\nspeed-up {official / ours:.1f}x (compute_saliency {saliency:.1f} s + materialize {masking:.1f} s); "
          f"masked pixels differing between the two: {differing:.2e}")
    emit_json({"benchmark": "official_masking", "machine": machine(), "images": n, "official_seconds": official,
               "ours_seconds": ours, "compute_saliency_seconds": saliency, "materialize_seconds": masking,
               "speedup": official / ours, "pixels_differing": differing,
               "official_bytes_per_image": png_bytes / n, "ours_bytes_per_image": our_bytes / n})


if __name__ == "__main__":
    main()
