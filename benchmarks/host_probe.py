"""Host time per call of tiny lrc calls on the GPU machine: what the cost model's host terms
(`lrc/passes/lowering.py`, `Device`) are calibrated to.

    python benchmarks/host_probe.py        # writes $OUT/host_probe.json

Each row: the best of 3 runs of 100 back-to-back calls (B1-2, T16-32), wall-clock per call
with one synchronize at the end; at these sizes the kernels take a few us, so this is host
time. `host_ops` is the cost model's count of the Params' terms (`lowering.host_ops`).
"""
import sys, json, os, torch
sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import lrc, bench
from lrc.zoo import ZOO

wall = lambda fn, n=100: bench.host_wall(fn, n)  # noqa: E731
res = {}
layer = lrc.compile(bench.diag, backend="triton")
x = torch.randn(1, 16, 32, device="cuda", requires_grad=True)
a = torch.rand(1, 16, 32, device="cuda")
gy = torch.ones(1, 16, 32, device="cuda")
def fb():
    x.grad = None
    layer(x=x, a=a).backward(gy)
res["diag scan fwd"] = wall(lambda: layer(x=x, a=a))
res["diag scan fwd+bwd"] = wall(fb)
xd = x.detach()
res["diag scan fwd, nothing requires grad"] = wall(lambda: layer(x=xd, a=a))
y = torch.randn(1, 16, 32, device="cuda")
res["torch mul"] = wall(lambda: y * 2)
import triton, triton.language as tl


@triton.jit
def _copy(src, dst, n, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst + o, tl.load(src + o, mask=o < n), mask=o < n)


z = torch.empty_like(y)
res["triton launch (a copy kernel, 4 args)"] = wall(lambda: _copy[(1,)](y, z, y.numel(), BLOCK=512))
for name in ("s4d_zoh", "h3", "lru"):
    e = ZOO[name]
    args = e.example(b=2, t=32, dtype=torch.float32, device="cuda")
    for low in ("conv", "scan"):
        try:
            L = lrc.compile(e.spec, backend="triton", lowering=low)
            res[f"{name} {low} fwd"] = wall(lambda: L(**args), 50)
        except Exception as ex:
            res[f"{name} {low} fwd"] = repr(ex)[:100]
    from lrc.passes.lowering import host_ops
    res[f"{name} host_ops"] = host_ops(L.plan.graph)
    print(res, flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "host_probe.json"), "w"), indent=1)
