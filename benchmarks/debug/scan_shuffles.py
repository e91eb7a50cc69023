"""SASS shuffle counts of tiny scan / flip kernels built for sm_90 on the development machine
(one warp, [R, T] float32): a scan left to right, right to left, `tl.flip`, a flip then a scan.
Triton reverses a scan by flipping its inputs and output across lanes (twelfth session).

    python benchmarks/debug/scan_shuffles.py
"""
import os
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TOOL = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
MODES = ["left to right", "right to left", "flip", "flip then scan"]


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def probe(x_ptr, y_ptr, R: tl.constexpr, T: tl.constexpr, MODE: tl.constexpr):
    o = tl.arange(0, R)[:, None] * T + tl.arange(0, T)[None, :]
    a = tl.load(x_ptr + o)
    b = tl.load(x_ptr + o + R * T)
    if MODE == 0:
        _, y = tl.associative_scan((a, b), 1, _combine)
    elif MODE == 1:
        _, y = tl.associative_scan((a, b), 1, _combine, reverse=True)
    elif MODE == 2:
        y = tl.flip(b, 1)
    else:
        _, y = tl.associative_scan((tl.flip(a, 1), tl.flip(b, 1)), 1, _combine)
    tl.store(y_ptr + o, y)


def count(R: int, T: int, mode: int) -> dict[str, int]:
    sig = {"x_ptr": "*fp32", "y_ptr": "*fp32", "R": "constexpr", "T": "constexpr",
           "MODE": "constexpr"}
    src = ASTSource(probe, sig, constexprs={(2,): R, (3,): T, (4,): mode},
                    attrs={(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=1))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(k.asm["cubin"])
        fh.flush()
        sass = subprocess.run([TOOL, "-sass", fh.name], capture_output=True, text=True).stdout
    return {op: len(re.findall(op, sass)) for op in ("SHFL.UP", "SHFL.BFLY", "STS", "BAR")}


if __name__ == "__main__":
    for R, T in [(2, 128), (4, 64), (8, 32), (16, 16)]:
        for mode, what in enumerate(MODES):
            print(f"[{R}, {T}] {what}: {count(R, T, mode)}", flush=True)
