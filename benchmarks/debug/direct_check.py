"""Mamba-2's chunked kernels launched straight through their compiled launchers (module.launch)
after the first call with a signature: the outputs and gradients of a later call equal the
first call's bit for bit, and the wall time of forward and forward+backward next to the
kernels' (bench.py's time_lrc, lrc only: no peers).

    PYTHONPATH=$PWD python benchmarks/debug/direct_check.py
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

import lrc  # noqa: E402
from bench import time_lrc  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402


def main():
    e = ZOO["mamba2"]
    args = e.example(b=8, t=4096, g=1, r=32, p=64, n=128, dtype=torch.bfloat16, device="cuda")
    layer = lrc.compile(e.spec, backend="triton")
    leaves = {k: v.requires_grad_(True) for k, v in args.items() if v.is_floating_point()}

    def once():
        y = layer(**args)
        gy = torch.ones_like(y)
        grads = torch.autograd.grad(y, list(leaves.values()), gy)
        return [y.detach().clone()] + [g.clone() for g in grads]

    first, later = once(), once()
    assert all(torch.equal(a, b) for a, b in zip(first, later, strict=True))
    print("direct launches: the same outputs and gradients as the first call", flush=True)
    el = 8 * 4096 * 32 * 64
    ff = 2 * el * 2 + 2 * 8 * 4096 * 128 * 2 + 8 * 4096 * 32 * 2
    time_lrc("mamba2 B8 L4096 H32 P64 N128 bf16", "lrc (auto lowering)", layer, args, ff, 2 * ff)


if __name__ == "__main__":
    main()
