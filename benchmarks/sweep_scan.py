"""Sweep the scan kernels' launch settings (chunk length, register budget, warps, stages) on
the GPU, to choose the defaults in lrc/runtime/scan_runtime.py.

    python benchmarks/sweep_scan.py            # prints a table, writes $OUT/sweep_scan.json
"""
from __future__ import annotations

import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import lrc  # noqa: E402
from lrc.runtime import scan_runtime as sr  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

from bench_scan import diag  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")


def cases():
    from lrc.codegen import tiling

    tiling.TIME_LAST = bool(int(os.environ.get("TIME_LAST", "0")))
    B, T, D = 8, 4096, 2048
    x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
    a = torch.sigmoid(torch.randn(B, T, D, device="cuda")).to(torch.bfloat16)
    yield "diag", lrc.compile(diag, backend="triton"), dict(x=x, a=a)
    m1 = ZOO["mamba1"]
    yield "mamba1", lrc.compile(m1.spec, backend="triton"), m1.example(
        b=8, t=4096, d=2048, n=16, dtype=torch.bfloat16, device="cuda")


def timings(layer, args):
    fwd = triton.testing.do_bench(lambda: layer(**args), warmup=10, rep=40, return_mode="median")
    leaves = [v.requires_grad_(True) for v in args.values()]

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
    grid = [(64, 4096, 4, 2), (256, 4096, 4, 2), (256, 8192, 8, 2), (512, 8192, 8, 2),
            (512, 16384, 8, 2), (1024, 16384, 8, 2), (1024, 16384, 16, 2),
            (256, 16384, 16, 2)]
    if os.environ.get("SWEEP"):  # "tc,budget,warps,stages;..."
        grid = [tuple(int(v) for v in c.split(",")) for c in os.environ["SWEEP"].split(";")]
    for name, layer, args in cases():
        for tc, budget, warps, stages in grid:
            sr.CHUNK, sr.BUDGET, sr.NUM_WARPS, sr.NUM_STAGES = tc, budget, warps, stages
            try:
                f, fb = timings(layer, args)
            except Exception as e:
                print(f"{name} TC{tc} B{budget} W{warps}: {type(e).__name__} {str(e)[:120]}")
                continue
            rows.append(dict(case=name, TC=tc, budget=budget, warps=warps, stages=stages,
                             fwd_us=f * 1e3, fwdbwd_us=fb * 1e3))
            print(f"{name:8s} TL{os.environ.get('TIME_LAST', '0')} TC{tc:3d} budget{budget:5d} "
                  f"warps{warps} stages{stages}: "
                  f"fwd {f * 1e3:8.1f} us  fwd+bwd {fb * 1e3:9.1f} us", flush=True)
    tag = os.environ.get("TIME_LAST", "0")
    with open(os.path.join(OUT, f"sweep_scan_tl{tag}.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
