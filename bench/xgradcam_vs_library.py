"""Benchmark 2: our XGradCAM against the `grad-cam` library's (1.3.7, what the official code ran).

Same model, same inputs, same device. The library runs as the official `mask_data` calls it:
`XGradCAM(model, [target_layer])(images)` on the model as trained (NCHW, BatchNorm), which includes
its per-image normalisation and OpenCV resize and returns host arrays; ours is
`masktune.saliency.xgradcam` on the model as `compute_saliency` prepares it (channels-last,
BatchNorm folded), maps copied to the host as well. Prints images/s of both, the speed-up, the
largest absolute difference of the maps and the fraction of mask pixels (mean + 2 std rule) that
differ, for float32 (the default: must equal the library to 1e-5) and bfloat16.

    python bench/xgradcam_vs_library.py [--device cuda] [--seconds 3]
    python bench/xgradcam_vs_library.py --quick    # small batches, ResNet-50 at 64 x 64, one step per figure (tests)
"""
from __future__ import annotations

import argparse

import numpy as np
import pytorch_grad_cam
import torch
from common import add_quick_flag, emit_json, machine, print_table, rate, saliency_bench

from masktune.masking.rules import saliency_masks
from masktune.saliency.xgradcam import xgradcam

MODELS = (("small_cnn", 28, 256), ("resnet50", 224, 16))
QUICK_MODELS = (("small_cnn", 28, 32), ("resnet50", 64, 2))


def measure(arch: str, size: int, batch: int, device: torch.device, seconds: float) -> list[dict]:
    bench = saliency_bench(arch, size, batch, device)
    trained, prepared, images, images_cl, sync = (bench.trained, bench.prepared, bench.images,
                                                  bench.images_cl, bench.sync)

    library = pytorch_grad_cam.XGradCAM(model=trained, target_layers=[trained.grad_cam_target_layer()],
                                        use_cuda=device.type == "cuda")
    try:
        theirs = library(images)
        library_rate = rate(lambda: library(images), batch, seconds, sync=sync)
    finally:
        library.activations_and_grads.release()

    rows = []
    layer = prepared.grad_cam_target_layer()
    for precision in ("float32", "bfloat16"):
        def ours_step(precision=precision):
            return xgradcam(prepared, layer, images_cl, precision)[0].cpu().numpy()

        ours = ours_step()
        ours_rate = rate(ours_step, batch, seconds, sync=sync)
        rows.append({"model": arch, "input": f"{size}x{size}", "batch": batch, "precision": precision,
                     "library": library_rate, "ours": ours_rate, "speedup": ours_rate / library_rate,
                     "max_abs_diff": float(np.abs(ours - theirs).max()),
                     "mask_pixels_differing": float((saliency_masks(ours) != saliency_masks(theirs)).mean())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per figure")
    add_quick_flag(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    models, seconds = (QUICK_MODELS, 0.0) if args.quick else (MODELS, args.seconds)
    rows = [row for arch, size, batch in models for row in measure(arch, size, batch, device, seconds)]
    print_table(rows, f"images/s on {device.type} ({machine()})")
    emit_json({"benchmark": "xgradcam_vs_library", "device": device.type, "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
