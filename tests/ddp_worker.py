"""A training run for tests/test_distributed.py: `train_epoch` on the first N real MNIST training
digits, run as one process (`python tests/ddp_worker.py ...`) or as torchrun workers (the same command
under `python -m torch.distributed.run --nproc-per-node 2`). Rank 0 writes each epoch's loss and
accuracy and the final parameters to OUT (.npz).

    python tests/ddp_worker.py MNIST_DIR OUT --model linear|small_cnn --rows 577 --batch-size 64 --epochs 3
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masktune.data.samples import SampleSet
from masktune.data.splits import PixelSplit
from masktune.datasets.mnist_idx import load_mnist_split
from masktune.distributed import current_world, init_workers
from masktune.models import build_model
from masktune.seeding import seed_everything
from masktune.train.loop import make_optimizer, train_epoch


def network(name: str) -> nn.Module:
    """`linear`: no BatchNorm, so data parallelism must reproduce one process to rounding;
    `small_cnn`: the biased-MNIST network, with BatchNorm."""
    if name == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 10))
    return build_model("small_cnn", 10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mnist_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="linear", choices=("linear", "small_cnn"))
    parser.add_argument("--rows", type=int, default=577)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    device = torch.device("cpu")
    world = init_workers(device)
    generator = seed_everything(0)
    images, labels = load_mnist_split(args.mnist_dir, "train")
    images = np.repeat(images[:args.rows, :, :, None], 3, axis=3)
    labels = labels[:args.rows].astype(np.int64)
    split = PixelSplit.from_samples(SampleSet(images, labels, np.zeros_like(labels), np.arange(args.rows), 10))
    model = network(args.model)
    optimizer = make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=1e-4)
    losses, accuracies = [], []
    for epoch in range(args.epochs):
        stats = train_epoch(model, optimizer, split, args.batch_size, generator, device, desc=f"epoch {epoch}")
        losses.append(stats["loss"])
        accuracies.append(stats["accuracy"])
    if current_world().is_main:
        parameters = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
        np.savez(args.out, loss=np.array(losses), accuracy=np.array(accuracies), parameters=parameters,
                 world_size=world.size)


if __name__ == "__main__":
    main()
