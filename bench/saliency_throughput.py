"""Benchmark 1: XGradCAM throughput divided by plain inference throughput, same model, batch, device.

For SmallCNN at 28 x 28 and ResNet-50 at 224 x 224 (random weights, random images: speed does not
depend on them) it times
- inference: `torch.inference_mode()` forward only, of the model as `compute_saliency` prepares it
  (eval, channels-last, BatchNorm folded) and, for reference, of the model as trained (NCHW, BatchNorm);
- saliency: `masktune.saliency.xgradcam`, every step to the input-resolution maps, on the device;
in float32 and in bfloat16 (autocast, for both inference and saliency). The ratio the issue targets
(>= 0.7) is saliency / inference of the prepared model, same precision.

    python bench/saliency_throughput.py [--device cuda] [--seconds 3]
    python bench/saliency_throughput.py --quick    # small batches, ResNet-50 at 64 x 64, one step per figure (tests)
"""
from __future__ import annotations

import argparse

import torch
from common import add_quick_flag, emit_json, machine, print_table, rate, saliency_bench

from masktune.precision import PRECISIONS, precision_autocast
from masktune.saliency.xgradcam import xgradcam

MODELS = (("small_cnn", 28, 256), ("resnet50", 224, 16))
QUICK_MODELS = (("small_cnn", 28, 32), ("resnet50", 64, 2))


def measure(arch: str, size: int, batch: int, precision: str, device: torch.device, seconds: float) -> dict:
    bench = saliency_bench(arch, size, batch, device)
    trained, prepared, images, images_cl, sync = (bench.trained, bench.prepared, bench.images,
                                                  bench.images_cl, bench.sync)

    def infer(model, inputs):
        with torch.inference_mode(), precision_autocast(device, precision):
            return model(inputs)

    layer = prepared.grad_cam_target_layer()
    as_trained = rate(lambda: infer(trained, images), batch, seconds, sync=sync)
    inference = rate(lambda: infer(prepared, images_cl), batch, seconds, sync=sync)
    saliency = rate(lambda: xgradcam(prepared, layer, images_cl, precision), batch, seconds, sync=sync)
    return {"model": arch, "input": f"{size}x{size}", "batch": batch, "precision": precision,
            "inference_as_trained": as_trained, "inference": inference, "saliency": saliency,
            "ratio": saliency / inference, "ratio_vs_as_trained": saliency / as_trained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per figure")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"], choices=list(PRECISIONS))
    add_quick_flag(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    models, seconds = (QUICK_MODELS, 0.0) if args.quick else (MODELS, args.seconds)
    rows = [measure(arch, size, batch, precision, device, seconds)
            for arch, size, batch in models for precision in args.precisions]
    print_table(rows, f"images/s on {device.type} ({machine()})")
    emit_json({"benchmark": "saliency_throughput", "device": device.type, "machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
