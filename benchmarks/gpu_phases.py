"""Where a GPU test's time goes: first call (Triton compile, tuning), warm calls, the backward,
and the float64 reference, for one zoo spec at the GPU tests' size.

    python benchmarks/gpu_phases.py mamba1 mamba2@cpu ...   # one line per phase; @cpu: the
                                                            # reference on the CPU
"""
from __future__ import annotations

import sys
import time

import torch

import lrc
from lrc.zoo import ZOO

SIZES = {"mamba2": dict(g=2, r=4, p=64, n=128), "retnet": dict(h=4, k=128, v=128),
         "gla": dict(h=4, k=128, v=128), "rwkv6": dict(h=4, k=64, v=64)}


def timed(label: str, fn):
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    print(f"  {label:<28} {time.perf_counter() - t:8.2f} s", flush=True)
    return out


def first(x):
    return x[0] if isinstance(x, tuple) else x


def phases(name: str, b: int = 2, t: int = 2049, ref_device: str = "cuda"):
    e = ZOO[name]
    sizes = SIZES.get(name, {})
    print(name, flush=True)
    kern = timed("lrc.compile", lambda: lrc.compile(e.spec, backend="triton"))
    ref = lrc.compile(e.spec, backend="reference")
    args = e.example(b=b, t=t, dtype=torch.float64, device="cuda", **sizes)
    ours = {k: (v.float() if not v.is_complex() else v.to(torch.complex64)).requires_grad_(True)
            for k, v in args.items()}
    y = timed("forward, first call", lambda: first(kern(**ours)))
    timed("forward, second call", lambda: first(kern(**ours)))
    timed("backward, first call", lambda: first(kern(**ours)).real.sum().backward())
    timed("backward, second call", lambda: first(kern(**ours)).real.sum().backward())
    theirs = {k: v.detach().to(ref_device).requires_grad_(True) for k, v in args.items()}
    y2 = timed(f"reference forward ({ref_device})", lambda: first(ref(**theirs)))
    timed(f"reference backward ({ref_device})", lambda: y2.real.sum().backward())
    err = (y.detach().double().cpu() - y2.detach().cpu()).norm() / y2.detach().cpu().norm()
    print(f"  forward rel err {err.item():.2e}", flush=True)


if __name__ == "__main__":
    torch.manual_seed(0)
    for arg in sys.argv[1:]:  # name, or name@cpu for the reference on the CPU
        name, _, where = arg.partition("@")
        phases(name, ref_device=where or "cuda")
