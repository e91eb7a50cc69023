"""Time lrc's generated scan kernels on the reference shapes of DESIGN.md section 7 (GPU).

    python benchmarks/bench_scan.py [case ...]      # writes $OUT/lrc_scan.json, prints a table

Each case checks the kernel against an fp32 PyTorch evaluation of the same spec first (the
reference backend in float64 where it is fast enough), then times forward and forward+backward
with triton.testing.do_bench (median), compile time excluded and reported separately.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import lrc  # noqa: E402
from lrc import Seq, State  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
ROWS: list[dict] = []


@lrc.recurrence
def diag(x: Seq("b t d"), a: Seq("b t d"), h: State("b d")):
    """h_t = a_t h_{t-1} + x_t, the peers' elementwise scan."""
    h = a * h + x
    return h, h


def bench(fn, warmup=25, rep=100):
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def record(case, mode, ms, floor_bytes=None, note=""):
    bw = floor_bytes / (ms * 1e-3) / 1e12 if floor_bytes else None
    ROWS.append(dict(case=case, impl="lrc", mode=mode, ms=ms, TBps=bw, note=note))
    eff = f"{bw:5.2f} TB/s" if bw else ""
    print(f"{case:34s} {mode:8s} {ms * 1e3:10.1f} us {eff} {note}", flush=True)


def fwdbwd(layer, args, leaves):
    def run():
        for t in leaves:
            t.grad = None
        y = layer(**args)
        y = y[0] if isinstance(y, tuple) else y
        y.backward(torch.ones_like(y))
    return run


def time_layer(case, layer, args, floor_f=None, floor_fb=None):
    t0 = time.time()
    layer(**args)
    torch.cuda.synchronize()
    compile_s = time.time() - t0
    record(case, "fwd", bench(lambda: layer(**args)), floor_f, f"first call {compile_s:.1f}s")
    leaves = [v for v in args.values() if v.is_floating_point()]
    for v in leaves:
        v.requires_grad_(True)
    run = fwdbwd(layer, args, leaves)
    t0 = time.time()
    run()
    torch.cuda.synchronize()
    record(case, "fwdbwd", bench(run), floor_fb, f"first call {time.time() - t0:.1f}s")
    for v in leaves:
        v.requires_grad_(False)


def check(case, layer, args, T_check=None):
    """Kernel vs the float64 reference on a prefix of the sequence (fast enough there)."""
    ref = lrc.compile(layer.spec, backend="reference")
    y = layer(**args)
    y2 = ref(**args)
    y, y2 = (y[0], y2[0]) if isinstance(y, tuple) else (y, y2)
    err = ((y.double() - y2.double()).norm() / y2.double().norm()).item()
    print(f"{case:34s} check    rel err vs float64 reference {err:.2e}", flush=True)
    ROWS.append(dict(case=case, impl="lrc", mode="check", err=err))


def case_diag():
    B, T, D = 8, 4096, 2048
    x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
    a = torch.sigmoid(torch.randn(B, T, D, device="cuda")).to(torch.bfloat16)
    layer = lrc.compile(diag, backend="triton")
    el = B * T * D
    check("diag small", layer, dict(x=x[:1, :512, :256], a=a[:1, :512, :256]))
    time_layer(f"diag B{B} T{T} D{D} bf16", layer, dict(x=x, a=a), 3 * el * 2, 8 * el * 2)


def zoo_case(name, sizes, b, t, dtype=torch.bfloat16, floor=None):
    entry = ZOO[name]
    layer = lrc.compile(entry.spec, backend="triton")
    small = entry.example(b=1, t=300, dtype=torch.float32, device="cuda",
                          **{k: min(v, 64) for k, v in sizes.items()})
    check(f"{name} small", layer, small)
    args = entry.example(b=b, t=t, dtype=dtype, device="cuda", **sizes)
    shape = " ".join(f"{k}{v}" for k, v in sizes.items())
    time_layer(f"{name} B{b} T{t} {shape}", layer, args, floor)


CASES = {
    "diag": case_diag,
    "mamba1": lambda: zoo_case("mamba1", dict(d=2048, n=16), 8, 4096),
    "rglru": lambda: zoo_case("rglru", dict(d=2048), 8, 4096),
    "gla": lambda: zoo_case("gla", dict(h=16, k=128, v=128), 8, 4096),
    "mamba2": lambda: zoo_case("mamba2", dict(g=1, r=32, p=64, n=128), 8, 4096),
}


if __name__ == "__main__":
    print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
    for name in sys.argv[1:] or list(CASES):
        try:
            CASES[name]()
        except Exception as e:  # keep going: one failing case must not hide the others
            import traceback

            print(f"!! {name}: {type(e).__name__}: {str(e)[:500]}", flush=True)
            traceback.print_exc(limit=4)
    with open(os.path.join(OUT, "lrc_scan.json"), "w") as fh:
        json.dump(ROWS, fh, indent=1)
