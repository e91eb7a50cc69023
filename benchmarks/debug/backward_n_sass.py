"""Compile the generated Mamba-1 backward_n (bench.py's spec, bf16, 64 channels, T = 512, n = 16)
for sm_90 on the development machine (Triton's own compiler, no GPU): registers, spills, and the
SASS ops of each loop (a backward branch's span; the inner one is the loop over n).

    python benchmarks/debug/backward_n_sass.py 128,2,1,1,128,1   # TC,BLOCK,warps,stages,cap,loop

The register cap is not applied here (aot.compile_launch builds as the JIT would without it)."""
import collections
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", ".."), os.path.join(HERE, "..")]
import torch  # noqa: E402
import triton  # noqa: E402

import lrc  # noqa: E402
from lrc.kernels import aot  # noqa: E402
from lrc.lowering.scan.configs import ScanConfig  # noqa: E402
from lrc.lowering.scan import launch as scan_runtime  # noqa: E402
from tests.codegen.test_scan_unrolled import gated_inputs, gated_s6  # noqa: E402

TOOL = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def loops(sass: str) -> list[tuple[int, collections.Counter]]:
    """(instructions, op counts) of each loop: from a backward branch's target to it."""
    ins = [(int(m.group(1), 16), m.group(2)) for m in
           re.finditer(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", sass)]
    out = []
    for a, text in ins:
        m = re.search(r"BRA.*?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < a:
            body = [t for b, t in ins if int(m.group(1), 16) <= b <= a]
            ops = collections.Counter()
            for t in body:
                op = re.sub(r"^@!?U?P\w+\s+", "", t).split()[0]
                ops[".".join(op.split(".")[:2]) if op.startswith(("MUFU", "SHFL")) else
                    op.split(".")[0]] += 1
            out.append((len(body), ops))
    return out


def main():
    cubins = []
    usage = aot._usage
    aot._usage = lambda cubin: (cubins.append(cubin), usage(cubin))[1]
    kern = lrc.compile(gated_s6, backend="triton")
    args = {k: (v.to(torch.bfloat16) if v.dim() == 3 else v.float()).requires_grad_(True)
            for k, v in gated_inputs(1, 64, 512, 16).items()}
    for spec in sys.argv[1:] or ["128,2,1,1,128,1"]:
        tc, block, warps, stages, cap, loop = (int(x) for x in spec.split(","))
        scan_runtime.CONFIG = ScanConfig(tc, block, warps, stages, unroll=True,
                                         maxnreg=cap or None, loop=loop)
        with aot.recording(as_gpu=132, compile=True) as launches:
            kern(**args).float().sum().backward()
        for i, r in enumerate(launches):
            if not r.name.endswith("backward_n"):
                continue
            with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
                fh.write(cubins[i - len(launches)])
                fh.flush()
                sass = subprocess.run([TOOL, "-sass", fh.name], capture_output=True,
                                      text=True).stdout
            print(r.name, spec, "registers", r.compiled.regs, "spills", r.compiled.spills)
            for n, ops in loops(sass):
                print(f"  loop of {n} instructions:", dict(ops.most_common(12)))


if __name__ == "__main__":
    main()
