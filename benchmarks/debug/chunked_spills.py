"""Registers and spills of the chunked kernels at the reference shapes, compiled for sm_90 on
a machine without a GPU (lrc/codegen/aot.py: Triton's compiler and ptxas, the launches a GPU
run would make). A spilling kernel keeps part of its tiles in local memory, which costs it
loads and stores in its hot path: the first thing to look at when a kernel is slow.

    python benchmarks/debug/chunked_spills.py mamba2 gla    # one line per launch
"""
from __future__ import annotations

import sys

import torch

import lrc
from lrc.kernels import aot
from lrc.lowering.chunked.tune import PASS, Config
from lrc.zoo import ZOO

SIZES = {"mamba2": dict(g=1, r=32, p=64, n=128), "gla": dict(h=16, k=128, v=128)}
# (forward, backward) configs: what the tuner chose on the H200 in the ninth session, for
# training, and the other split of the forward
CONFIGS = {
    "mamba2": [(Config(64, 64, 4, 2), Config(64, 64, 4, 1, split=PASS, spread=True, wk=64)),
               (Config(64, 64, 4, 2, split=PASS), Config(64, 64, 4, 1, split=PASS))],
    "gla": [(Config(64, 128, 8, 2), Config(64, 128, 4, 1, split=PASS, bk=64, wk=64)),
            (Config(64, 128, 4, 2, split=PASS, wk=64), Config(64, 128, 8, 1))],
}


def report(name: str) -> None:
    e = ZOO[name]
    for fwd, bwd in CONFIGS[name]:
        kern = lrc.compile(e.spec, backend="triton", lowering="chunked")
        kern._lowering("chunked").override = (fwd, bwd)
        args = e.example(b=8, t=4096, dtype=torch.float32, **SIZES[name])
        ins = {k: v.to(torch.bfloat16).requires_grad_(True) for k, v in args.items()}
        with aot.recording(as_gpu=132) as launches:
            kern(**ins).float().sum().backward()
        for r in launches:
            c = aot.compile_launch(r)
            print(f"{name} {r.name.rsplit('_', 1)[-1]:8s} PHASE {r.consts.get('PHASE')} "
                  f"BK {r.consts.get('BK')} x{r.consts.get('NKB')} warps {r.warps}: "
                  f"registers {c.regs}, spilled {c.spills} B a thread, shared {c.shared} B",
                  flush=True)


if __name__ == "__main__":
    for n in sys.argv[1:] or ["mamba2", "gla"]:
        report(n)
