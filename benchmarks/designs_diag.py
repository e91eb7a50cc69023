"""Hand-written kernel designs for the elementwise scan h = a h + x (b t d, bf16, B8 T4096
D2048), timed against each other on the GPU, to choose what the code generator emits.

    python benchmarks/designs_diag.py      # from the repo root; writes $OUT/designs_diag.json

seq: one thread per channel, TC steps unrolled per chunk with all loads first (dbl: the next
chunk's loads issued before this chunk's arithmetic); tile: a [TC, BD] tile per chunk and
tl.associative_scan over time, the chunk loop pipelined over ST stages.
"""
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from lrc.kernels import module as modules

HEAD = "import triton\nimport triton.language as tl\n\n"


def seq_src(TC, double):
    """One thread per channel (BD per program), TC steps unrolled per chunk: all loads first."""
    L = ["@triton.jit",
         "def k(x_ptr, a_ptr, y_ptr, T, D, s_b, s_t, BD: tl.constexpr):",
         "    pid = tl.program_id(0)",
         "    nb = tl.cdiv(D, BD)",
         "    b = (pid // nb).to(tl.int64)",
         "    o = (pid % nb) * BD + tl.arange(0, BD)",
         "    m = o < D",
         "    base = b * s_b + o",
         "    h = tl.zeros([BD], tl.float32)",
         f"    nc = tl.cdiv(T, {TC})"]
    def loads(ind, pre, c):
        for i in range(TC):
            L.append(f"{ind}{pre}x{i} = tl.load(x_ptr + base + ({c} * {TC} + {i}) * s_t, mask=m & ({c} * {TC} + {i} < T), other=0.0)")
            L.append(f"{ind}{pre}a{i} = tl.load(a_ptr + base + ({c} * {TC} + {i}) * s_t, mask=m & ({c} * {TC} + {i} < T), other=1.0)")
    if double:
        loads("    ", "n", "0")
    L.append("    for c in range(0, nc):")
    ind = "        "
    if double:
        for i in range(TC):
            L.append(f"{ind}x{i} = nx{i}")
            L.append(f"{ind}a{i} = na{i}")
        loads(ind, "n", "(c + 1)")
    else:
        loads(ind, "", "c")
    for i in range(TC):
        L.append(f"{ind}h = a{i}.to(tl.float32) * h + x{i}.to(tl.float32)")
        L.append(f"{ind}tl.store(y_ptr + base + (c * {TC} + {i}) * s_t, h.to(tl.bfloat16), mask=m & (c * {TC} + {i} < T))")
    return HEAD + "\n".join(L) + "\n"


def tile_src():
    """Tile [TC, BD] loads + associative scan over time, with tl.range stages."""
    return HEAD + '''
@triton.jit
def _c(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2

@triton.jit
def k(x_ptr, a_ptr, y_ptr, T, D, s_b, s_t, BD: tl.constexpr, TC: tl.constexpr, ST: tl.constexpr):
    pid = tl.program_id(0)
    nb = tl.cdiv(D, BD)
    b = (pid // nb).to(tl.int64)
    o = ((pid % nb) * BD + tl.arange(0, BD))[None, :]
    m = o < D
    ot = tl.arange(0, TC)[:, None]
    base = b * s_b + o
    h = tl.zeros([1, BD], tl.float32)
    for c in tl.range(0, tl.cdiv(T, TC), num_stages=ST):
        t = c * TC + ot
        mt = m & (t < T)
        x = tl.load(x_ptr + base + t * s_t, mask=mt, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + base + t * s_t, mask=mt, other=1.0).to(tl.float32)
        A, B = tl.associative_scan((a, x), 0, _c)
        y = A * h + B
        tl.store(y_ptr + base + t * s_t, y.to(tl.bfloat16), mask=mt)
        h = tl.sum(tl.where(ot == TC - 1, y, 0.0), axis=0, keep_dims=True)
'''


def main():
    B, T, D = 8, 4096, 2048
    x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
    a = torch.sigmoid(torch.randn(B, T, D, device="cuda") + 2).to(torch.bfloat16)
    ref = torch.empty(B, 512, D, device="cuda")
    h = torch.zeros(B, D, device="cuda")
    for t in range(512):
        h = a[:, t].float() * h + x[:, t].float()
        ref[:, t] = h
    rows = []
    def run(name, fn, y):
        try:
            fn()
            torch.cuda.synchronize()
            err = ((y[:, :512].float() - ref).norm() / ref.norm()).item()
            ms = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
            rows.append(dict(name=name, us=ms * 1e3, err=err))
            print(f"{name:50s} {ms*1e3:8.1f} us  err {err:.1e}", flush=True)
        except Exception as e:
            print(name, "FAILED", repr(e)[:300], flush=True)
    y = torch.empty_like(x)
    for TC in (8, 16, 32, 64):
        for double in (False, True):
            if double and TC > 32:
                continue
            mod = modules.load(seq_src(TC, double), False)
            for BD, w in ((32, 1), (64, 2), (128, 4), (64, 1), (128, 2), (256, 4)):
                g = (B * triton.cdiv(D, BD),)
                run(f"seq TC{TC} dbl{int(double)} BD{BD} w{w}",
                    lambda mod=mod, BD=BD, w=w, g=g: mod.k[g](x, a, y, T, D, x.stride(0), x.stride(1), BD=BD, num_warps=w), y)
    mod = modules.load(tile_src(), False)
    for TC, BD, w, st in ((64, 16, 4, 1), (64, 16, 1, 1), (64, 16, 1, 3), (32, 32, 1, 3), (16, 64, 1, 3),
                          (32, 64, 2, 3), (64, 32, 2, 3), (16, 128, 4, 3), (8, 256, 4, 3), (128, 16, 4, 3)):
        g = (B * triton.cdiv(D, BD),)
        run(f"tile TC{TC} BD{BD} w{w} st{st}",
            lambda TC=TC, BD=BD, w=w, st=st, g=g: mod.k[g](x, a, y, T, D, x.stride(0), x.stride(1), BD=BD, TC=TC, ST=st, num_warps=w), y)
    z = torch.empty_like(x)
    rows.append(dict(name="copy x->z", us=triton.testing.do_bench(lambda: z.copy_(x), return_mode="median") * 1e3))
    print(rows[-1])
    json.dump(rows, open(os.path.join(os.environ.get("OUT", "/tmp"), "designs_diag.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
