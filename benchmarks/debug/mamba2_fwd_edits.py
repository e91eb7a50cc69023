"""Mamba-2's chunked forward (zoo spec, B8 L4096 H32 P64 N128 bf16) with hand edits of its
generated source: timed on the GPU against the unedited kernel, or (without `gpu`) compiled
for sm_90 here with registers, spills and shared memory. Session 13 found the mask-free
kernel this way (`even`), before the generator emitted EVEN itself.

    python benchmarks/debug/mamba2_fwd_edits.py gpu 64,64,4,1 64,64,4,2   # BT,BV,warps,stages
    python benchmarks/debug/mamba2_fwd_edits.py 64,64,4,1                 # sm_90, no GPU
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import torch  # noqa: E402
import triton  # noqa: E402

import lrc  # noqa: E402
from lrc.kernels import aot  # noqa: E402
from lrc.lowering.chunked.tune import Config  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

F32 = ".to(tl.float32)"


def x16(s):
    """x kept 16-bit, converted where read; the skip term computed where y is."""
    s = re.sub(r"(a_x = tl\.load\(.*?\))\.to\(tl\.float32\)", r"\1", s)
    s = s.replace("cse0*a_x + ZV", f"cse0*a_x{F32} + ZV")
    s = re.sub(r"\n *q_skip = tl\.where\(m_t & m_v, a_D\*a_x \+ ZV, 0\.0\)  # skip = D\*x",
               "", s)
    return re.sub(r"\n( *)y = u \+ q_skip  # y", rf"\n\1y = u + a_D * a_x{F32}  # y", s)


def v16(s):
    """v rounded to the dot dtype once, read by both products."""
    s = re.sub(r"\n( *)u = _dot\(A, q_v, DT",
               r"\n\1q_v16 = q_v.to(DT)\n\1u = _dot(A, q_v16, DT", s)
    return s.replace("_dot(tl.trans(q_k), q_v * ek, DT",
                     f"_dot(tl.trans(q_k), q_v16{F32} * ek, DT")


def even(s):
    """No masks (T % BT == 0, P % BV == 0, N % BK == 0)."""
    for m in ("m_t & m_v", "m_t", "m_t & m_k"):
        s = s.replace(f", mask={m}, other=0.0)", ")")
    s = s.replace("tl.where(m_t & m_v, cse0*a_x", "(cse0*a_x")
    s = s.replace(" + ZV, 0.0)  # v", " + ZV)  # v")
    s = s.replace("q_skip = tl.where(m_t & m_v, a_D*a_x + ZV, 0.0)", "q_skip = a_D*a_x + ZV")
    s = s.replace("q_l = tl.where(m_t, tl.maximum(l_raw, -200.0), 0.0)",
                  "q_l = tl.maximum(l_raw, -200.0)")
    return s.replace("_cast(y, y_ptr.dtype.element_ty, EMU), mask=m_t & m_v)",
                     "_cast(y, y_ptr.dtype.element_ty, EMU))")


VARIANTS = {"base": [], "x16": [x16], "v16": [v16], "x16v16": [x16, v16], "even": [even],
            "even_x16": [even, x16], "even_x16v16": [even, x16, v16]}


def main():
    gpu = sys.argv[1:2] == ["gpu"]
    specs = sys.argv[2:] if gpu else sys.argv[1:]
    cfgs = [Config(*(int(x) for x in c.split(","))) for c in specs or ["64,64,4,1"]]
    e = ZOO["mamba2"]
    layer = lrc.compile(e.spec, backend="triton", lowering="chunked")
    prog = layer._lowering("chunked")
    base = prog.source
    args = e.example(b=8, t=4096 if gpu else 256, g=1, r=32, p=64, n=128,
                     dtype=torch.bfloat16, device="cuda" if gpu else "cpu")
    ref = None
    for cfg in cfgs:
        tag = f"{cfg.BT},{cfg.BV},{cfg.num_warps},{cfg.num_stages}"
        for name, edits in VARIANTS.items():
            s = base
            for edit in edits:
                s = edit(s)
            prog.source, prog.override = s, (cfg, cfg)
            with torch.no_grad():
                if not gpu:
                    with aot.recording(as_gpu=132, compile=True) as launches:
                        layer(**args)
                    for r in launches:
                        c = r.compiled
                        print(f"{tag} {name:12s} regs {c.regs} spills {c.spills} "
                              f"shared {c.shared}", flush=True)
                    continue
                y = layer(**args).float()
                ref = y if ref is None else ref
                err = ((y - ref).norm() / ref.norm()).item()
                us = triton.testing.do_bench(lambda: layer(**args), warmup=25, rep=200,
                                             return_mode="median") * 1e3
            print(f"{tag} {name:12s} {us:8.1f} us  rel err vs base {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
