"""Issue 6's crash: the chunked backward with the values split over programs (BV < V).

    python benchmarks/debug/split_values.py FWD_BV BWD_BV [dtype] [T] [warps] [stages]

Runs Mamba-2 (b=2, g=1, r=4, p=64, n=128) forward and backward with those blocks forced,
synchronizes, and prints the relative error of every gradient against BV = V in the same
process (run each variant in its own process: an illegal address ends the CUDA context).
"""
import sys

import torch

import lrc
from lrc.lowering.chunked.tune import Config
from lrc.zoo import ZOO

fbv, bbv = int(sys.argv[1]), int(sys.argv[2])
dtype = getattr(torch, sys.argv[3] if len(sys.argv) > 3 else "bfloat16")
T = int(sys.argv[4]) if len(sys.argv) > 4 else 512
warps = int(sys.argv[5]) if len(sys.argv) > 5 else 4
stages = int(sys.argv[6]) if len(sys.argv) > 6 else 1
e = ZOO["mamba2"]
torch.manual_seed(0)
args = e.example(b=2, t=T, g=1, r=4, p=64, n=128, dtype=torch.float32, device="cuda")


def grads(fwd: Config, bwd: Config):
    kern = lrc.compile(e.spec, backend="triton", lowering="chunked")
    kern._lowering("chunked").override = (fwd, bwd)
    ours = {k: v.to(dtype).requires_grad_(True) for k, v in args.items()}
    y = kern(**ours)
    g = torch.autograd.grad(y.float().square().sum(), list(ours.values()))
    torch.cuda.synchronize()
    return g


ref = grads(Config(64, 64, 4, 2), Config(64, 64, 4, 1))
out = grads(Config(64, fbv, 4, 2), Config(64, bbv, warps, stages))
for name, a, r in zip(args, out, ref):
    print(f"{name:8} rel err vs BV=V {((a.float() - r.float()).norm() / r.float().norm()).item():.2e}")
print("OK", sys.argv[1:])
