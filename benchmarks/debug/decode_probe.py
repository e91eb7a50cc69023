"""The decode step's launch settings (register budget per value, warps) on both decode shapes
of bench.py (B64 H80 P64 N128 state (h, p, n); B64 D4096 N16, the zoo's Mamba-1), each replayed
in a CUDA graph, next to mamba_ssm's selective_state_update in a graph (when importable).

    PYTHONPATH=/tmp/site:$PWD python benchmarks/debug/decode_probe.py
    PYTHONPATH=$PWD python benchmarks/debug/decode_probe.py grid2d   # Mamba-1's, 1-D vs 2-D grid
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

import lrc  # noqa: E402
from bench import bench, decode_hpn  # noqa: E402
from lrc.runtime import scan_runtime  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

DEV = "cuda"


def graphed(fn):
    g, s = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        fn()
    return bench(g.replay) * 1e3


def shapes():
    layer = lrc.compile(decode_hpn, backend="triton")
    Bd, H, P, N = 64, 80, 64, 128
    kw = dict(x=torch.randn(Bd, H, P, device=DEV, dtype=torch.bfloat16),
              dt=torch.rand(Bd, H, P, device=DEV, dtype=torch.bfloat16),
              A=-torch.rand(H, P, N, device=DEV),
              B=torch.randn(Bd, N, device=DEV, dtype=torch.bfloat16),
              C=torch.randn(Bd, N, device=DEV, dtype=torch.bfloat16),
              D=torch.randn(H, P, device=DEV), dt_bias=torch.randn(H, P, device=DEV))
    st = torch.randn(Bd, H, P, N, device=DEV)
    yield "H80 P64 N128", lambda: layer.step(**kw, state=st, inplace=True)
    e = ZOO["mamba1"]
    m1 = lrc.compile(e.spec, backend="triton")
    args = e.example(b=64, t=1, d=4096, n=16, dtype=torch.bfloat16, device=DEV)
    tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
    st1 = torch.randn(64, 4096, 16, device=DEV)
    yield "D4096 N16", lambda: m1.step(**tok, state=st1, inplace=True)


def main():
    for budget in (4096, 2048, 1024, 512, 256):
        for warps in (4, 8, 2):
            scan_runtime.BUDGET, scan_runtime.NUM_WARPS = budget, warps
            scan_runtime._CONFIGURED.clear()
            row = [f"{name} {graphed(fn):6.1f}" for name, fn in shapes()]
            print(f"budget {budget:5d} warps {warps}:", " | ".join(row), flush=True)


if __name__ == "__main__" and sys.argv[1:] != ["grid2d"]:
    main()


def grid2d():
    """Mamba-1's step with the generated kernel's grid on one axis (blocks and batch taken
    apart by division) and on two (scan_runtime.STEP_GRID2D, the default since the fifteenth
    session), at the settings of main() (argv: `grid2d`)."""
    e = ZOO["mamba1"]
    m1 = lrc.compile(e.spec, backend="triton")
    args = e.example(b=64, t=1, d=4096, n=16, dtype=torch.bfloat16, device=DEV)
    tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
    st = torch.randn(64, 4096, 16, device=DEV)
    for budget in (4096, 2048, 1024, 512):
        for warps in (4, 2):
            row = []
            for two in (False, True):
                scan_runtime.STEP_GRID2D = two
                scan_runtime.BUDGET, scan_runtime.NUM_WARPS = budget, warps
                scan_runtime._CONFIGURED.clear()
                row.append(graphed(lambda: m1.step(**tok, state=st, inplace=True)))
            print(f"budget {budget:5d} warps {warps}: 1-D grid {row[0]:6.1f} | 2-D grid "
                  f"{row[1]:6.1f}", flush=True)
    scan_runtime.STEP_GRID2D = True


if __name__ == "__main__" and sys.argv[1:] == ["grid2d"]:
    grid2d()
