"""Programs for ncu (benchmarks/debug/ncu_run.sh): `m2` runs Mamba-2's chunked forward at a
pinned config (default 64,64,4,1: BT,BV,warps,stages; B8 L4096 H32 P64 N128 bf16, no grad),
`m1` Mamba-1's forward+backward (bench.py's spec, B8 D2048 L4096 N16 bf16) with forward_n and
backward_n pinned to their session-12 tuned configs."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", ".."), os.path.join(HERE, "..")]
import torch  # noqa: E402

import lrc  # noqa: E402
from lrc.lowering.chunked.tune import Config  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402


def mamba2(cfg: str) -> None:
    e = ZOO["mamba2"]
    layer = lrc.compile(e.spec, backend="triton", lowering="chunked")
    c = Config(*(int(x) for x in cfg.split(",")))
    layer._lowering("chunked").override = (c, c)
    args = e.example(b=8, t=4096, g=1, r=32, p=64, n=128, dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        for _ in range(3):
            layer(**args)


def mamba1() -> None:
    from bench import mamba1_inputs, selective_scan
    from lrc.lowering.scan import configs as scan_tune
    from lrc.lowering.scan.configs import ScanConfig
    scan_tune.candidates_unrolled_backward = lambda tc, reverse=False: [
        ScanConfig(128, 2, 1, 1, unroll=True, maxnreg=128, loop=2)]
    scan_tune.candidates_unrolled_training = lambda reverse=False: [
        ScanConfig(32, 64, 8, 2, unroll=True, maxnreg=128)]
    args = mamba1_inputs()
    for v in args.values():
        v.requires_grad_(True)
    layer = lrc.compile(selective_scan)
    for _ in range(3):
        y = layer(**args)
        y.backward(torch.ones_like(y))


if __name__ == "__main__":
    mamba2(sys.argv[2] if len(sys.argv) > 2 else "64,64,4,1") if sys.argv[1] == "m2" else mamba1()
    torch.cuda.synchronize()
    print("done", sys.argv[1])
