"""Host time per call of tiny elementwise-scan calls (B1, 16 x 32; kernels take a few us) with
replayed launches going straight to the compiled kernel's launcher (scan_runtime.Direct)
against Triton's `fn[grid](...)` path (Direct.fits forced False), both layouts; and how many
launches took the direct path.

    PYTHONPATH=$PWD python benchmarks/debug/direct_launch_probe.py   # prints (GPU machine)
"""
import sys, torch
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import lrc, bench
from lrc.lowering.scan import launch as scan_runtime
wall = lambda fn, n=200: bench.host_wall(fn, n)  # noqa: E731
calls = []
fits = scan_runtime.Direct.fits
call = scan_runtime.Direct.__call__
scan_runtime.Direct.__call__ = lambda self, *a: calls.append(1) or call(self, *a)
for spec in (bench.diag, bench.diag_bdt):
    layer = lrc.compile(spec, backend="triton")
    shape = (1, 16, 32) if spec is bench.diag else (1, 32, 16)
    x = torch.randn(*shape, device="cuda", requires_grad=True)
    a = torch.rand(*shape, device="cuda")
    gy = torch.ones(*shape, device="cuda")
    def fb():
        x.grad = None
        layer(x=x, a=a).backward(gy)
    xd = x.detach()
    for mode in ("direct", "triton"):
        if mode == "triton":
            scan_runtime.Direct.fits = lambda self, p: False
        n0 = len(calls)
        r = dict(fwd=wall(lambda: layer(x=x, a=a)), fb=wall(fb),
                 nograd=wall(lambda: layer(x=xd, a=a)))
        print(spec, mode, r, "direct calls", len(calls) - n0, flush=True)
    scan_runtime.Direct.fits = fits
