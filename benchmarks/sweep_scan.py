"""Sweep the scan kernels' launch configs on the GPU (chunk, block, warps, stages), forward and
forward+backward, to choose lrc/codegen/scan_tune.py's candidate sets.

    python benchmarks/sweep_scan.py [case ...]   # prints a table, writes $OUT/sweep_scan.json

Cases: diag (b t d, channels contiguous), diag_bdt (time contiguous), mamba1 (the zoo spec,
b d t with state n = 16); B8 T4096 D2048 bf16. Each case also times the defaults and the tuner.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import triton

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import lrc  # noqa: E402
from lrc.lowering.scan.configs import ScanConfig  # noqa: E402
from lrc.lowering.scan import launch as sr  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

from bench import diag, diag_bdt  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
GRIDS = {
    "diag": [(64, 32, 2, 3), (32, 32, 1, 3), (64, 16, 1, 3), (32, 64, 2, 3), (128, 16, 4, 3),
             (64, 64, 4, 3), (128, 32, 4, 3), (64, 32, 2, 1), (16, 128, 4, 3), (32, 128, 4, 3),
             (256, 8, 2, 3), (64, 16, 2, 3)],
    "diag_bdt": [(1024, 2, 4, 2), (2048, 1, 4, 2), (512, 4, 4, 2), (256, 8, 4, 2),
                 (1024, 1, 4, 2), (1024, 2, 8, 2), (512, 2, 4, 3), (256, 4, 2, 2),
                 (2048, 2, 8, 2), (4096, 1, 8, 1), (128, 16, 4, 3), (64, 32, 2, 3)],
    "mamba1": [(64, 4, 4, 2), (128, 2, 4, 2), (32, 8, 2, 2), (256, 1, 4, 2), (16, 16, 4, 2),
               (32, 4, 2, 3), (64, 2, 2, 3), (16, 8, 1, 3)],
}


def case(name):
    B, T, D = 8, 4096, 2048
    if name == "mamba1":
        m1 = ZOO["mamba1"]
        return lrc.compile(m1.spec, backend="triton"), m1.example(
            b=B, t=T, d=D, n=16, dtype=torch.bfloat16, device="cuda")
    x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
    a = torch.sigmoid(torch.randn(B, T, D, device="cuda") + 2).to(torch.bfloat16)
    if name == "diag_bdt":
        return lrc.compile(diag_bdt, backend="triton"), dict(
            x=x.transpose(1, 2).contiguous(), a=a.transpose(1, 2).contiguous())
    return lrc.compile(diag, backend="triton"), dict(x=x, a=a)


def timings(layer, args, bwd=True):
    fwd = triton.testing.do_bench(lambda: layer(**args), warmup=10, rep=40, return_mode="median")
    if not bwd:
        return fwd, None
    leaves = [v.requires_grad_(True) for v in args.values() if v.dtype.is_floating_point]

    def fb():
        for v in leaves:
            v.grad = None
        y = layer(**args)
        y.backward(torch.ones_like(y))
    fwdbwd = triton.testing.do_bench(fb, warmup=5, rep=20, return_mode="median")
    for v in leaves:
        v.requires_grad_(False)
    return fwd, fwdbwd


if __name__ == "__main__":
    rows = []
    for name in sys.argv[1:] or list(GRIDS):
        layer, args = case(name)
        settings = [("default", None, False)] + [
            (str(c), ScanConfig(*c), False) for c in GRIDS[name]]
        for label, cfg, tune in settings:
            sr.CONFIG, sr.TUNE = cfg, tune
            try:
                f, fb = timings(layer, args)
            except Exception as e:  # noqa: BLE001
                print(f"{name} {label}: {type(e).__name__} {str(e)[:200]}", flush=True)
                continue
            rows.append(dict(case=name, config=label, fwd_us=f * 1e3, fwdbwd_us=fb * 1e3))
            print(f"{name:9s} {label:22s} fwd {f * 1e3:8.1f} us  fwd+bwd {fb * 1e3:9.1f} us",
                  flush=True)
        sr.CONFIG, sr.TUNE = None, True
        with open(os.path.join(OUT, "sweep_scan.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
