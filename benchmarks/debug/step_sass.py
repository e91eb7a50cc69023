"""SASS of Mamba-1's decode step (B64 D4096 N16; ours at several register budgets, the launch
sized for 132 SMs) and of mamba_ssm's selective_state_update kernel at its tile (32 x 16, 4
warps), compiled for sm_90 on the development machine: instructions, registers, memory ops
and barriers. Needs selective_state_update.py and softplus.py from the mamba_ssm wheel
(PEERS.md) unpacked under /tmp/mw, with a stub einops there.

    python benchmarks/debug/step_sass.py
"""

import os, re, subprocess, sys, tempfile, collections

sys.path[:0] = ["/tmp/mw", os.getcwd()]
import torch, triton
import lrc
from lrc.kernels import aot
from lrc.lowering.scan import launch as scan_runtime
from lrc.zoo import ZOO
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

TOOL = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def compile_rec(fn, params, consts, warps):
    while not isinstance(fn, JITFunction):
        fn = fn.fn
    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kw = dict(consts, num_warps=warps, num_stages=2)
    bound, spec, options = binder(*params, **kw)
    options, signature, constexprs, attrs = fn._pack_args(backend, kw, bound, spec, options)
    return triton.compile(
        ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__
    )


def sass(k):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(k.asm["cubin"])
        fh.flush()
        out = subprocess.run([TOOL, "-sass", fh.name], capture_output=True, text=True).stdout
        res = subprocess.run(
            [TOOL, "--dump-resource-usage", fh.name], capture_output=True, text=True
        ).stdout
    ops = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", out)
    c = collections.Counter(o.split(".")[0] for o in ops)
    mem = collections.Counter(o for o in ops if o.startswith(("LDG", "STG", "LDS", "STS", "BAR")))
    return len(ops), re.search(r"REG:(\d+)", res).group(1), dict(mem), c.most_common(12)


e = ZOO["mamba1"]
m1 = lrc.compile(e.spec, backend="triton")
args = e.example(b=64, t=1, d=4096, n=16, dtype=torch.bfloat16, device="cpu")
tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
st = torch.randn(64, 4096, 16)
for budget, warps in ((4096, 4), (2048, 4), (512, 4)):
    scan_runtime.BUDGET, scan_runtime.NUM_WARPS = budget, warps
    scan_runtime._CONFIGURED.clear()
    m1._fast_steps.clear()
    with aot.recording(as_gpu=132) as launches:
        m1.step(**tok, state=st, inplace=True)
    r = launches[-1]
    k = compile_rec(r.fn, r.params, r.consts, r.warps)
    print(
        "lrc", budget, warps, {c: v for c, v in r.consts.items() if c.startswith("BLOCK")}, sass(k)
    )
from mamba_ssm.ops.triton.selective_state_update import _selective_scan_update_kernel as K

A1 = -torch.exp(tok["A_log"].float())
D1 = tok["D"].float()
db1 = tok["dt_bias"].float()
x, dt, B, C = tok["u"], tok["dt"], tok["B"], tok["C"]
out = torch.empty_like(x)
params = [
    st,
    x,
    dt,
    db1,
    A1,
    B,
    C,
    D1,
    None,
    out,
    None,
    64,
    1,
    4096,
    16,
    1,
    st.stride(0),
    0,
    st.stride(1),
    st.stride(2),
    x.stride(0),
    0,
    x.stride(1),
    dt.stride(0),
    0,
    dt.stride(1),
    0,
    db1.stride(0),
    0,
    A1.stride(0),
    A1.stride(1),
    B.stride(0),
    0,
    B.stride(1),
    C.stride(0),
    0,
    C.stride(1),
    0,
    D1.stride(0),
    0,
    0,
    0,
    out.stride(0),
    0,
    out.stride(1),
]
consts = dict(
    DT_SOFTPLUS=True,
    TIE_HDIM=False,
    BLOCK_SIZE_M=32,
    HAS_DT_BIAS=True,
    HAS_D=True,
    HAS_Z=False,
    HAS_STATE_BATCH_INDICES=False,
    BLOCK_SIZE_DSTATE=16,
)
k = compile_rec(K, params, consts, 4)
print("peer 32x16 4w", sass(k))
