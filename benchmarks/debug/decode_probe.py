"""The decode step's launch settings (register budget per value, warps) on both decode shapes
of bench.py (B64 H80 P64 N128 state (h, p, n); B64 D4096 N16, the zoo's Mamba-1), each replayed
in a CUDA graph, next to mamba_ssm's selective_state_update in a graph (when importable).

    PYTHONPATH=/tmp/site:$PWD python benchmarks/debug/decode_probe.py
    PYTHONPATH=/tmp/site:$PWD python benchmarks/debug/decode_probe.py batchloop

batchloop: Mamba-1's generated step (B64 D4096 N16) hand-edited so that a program loops over
BPP batch rows of its channel block (the Params' loads before the loop), unrolled or as a
tl.range with NS stages, at several register budgets and warps; checked against the
unedited kernel before timing (`cpu` as a second argument: the check alone, interpreted).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

import lrc  # noqa: E402
from bench import bench, decode_hpn  # noqa: E402
from lrc.lowering.scan import launch as scan_runtime  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

DEV = "cuda"


def graphed_fn(fn):
    """`fn` captured in a CUDA graph after three eager calls on a side stream."""
    g, s = torch.cuda.CUDAGraph(), torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        fn()
    return g


def graphed(fn):
    return bench(graphed_fn(fn).replay) * 1e3


def mamba1_token(device=DEV):
    """The zoo's Mamba-1 compiled, one bf16 token (B64 D4096 N16; B4 D96 off the GPU) and a
    random float32 state."""
    e = ZOO["mamba1"]
    m1 = lrc.compile(e.spec, backend="triton")
    b, d = (64, 4096) if device == DEV else (4, 96)
    args = e.example(b=b, t=1, d=d, n=16, dtype=torch.bfloat16, device=device)
    tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
    return m1, tok, torch.randn(b, d, 16, device=device)


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
    m1, tok, st1 = mamba1_token()
    yield "D4096 N16", lambda: m1.step(**tok, state=st1, inplace=True)


def main():
    for budget in (4096, 2048, 1024, 512, 256):
        for warps in (4, 8, 2):
            scan_runtime.BUDGET, scan_runtime.NUM_WARPS = budget, warps
            scan_runtime._CONFIGURED.clear()
            row = [f"{name} {graphed(fn):6.1f}" for name, fn in shapes()]
            print(f"budget {budget:5d} warps {warps}:", " | ".join(row), flush=True)


if __name__ == "__main__" and sys.argv[1:2] not in (["batchloop"], ["edits"], ["order"]):
    main()


# (register budget per value, warps) of the hand-edited steps' timings
SETTINGS = [(b, w) for b in (4096, 2048, 1024, 512) for w in (4, 2)]


def settings(what: str, device):
    """After a probe's check: say it passed; on the GPU set and yield each of SETTINGS."""
    print(f"{what}: same output and state as the generated step", flush=True)
    if device != DEV:
        return
    for budget, warps in SETTINGS:
        scan_runtime.BUDGET, scan_runtime.NUM_WARPS = budget, warps
        yield budget, warps


def same_step(layer, tok: dict, st, y0, s0) -> None:
    """`layer`'s step from state `st` (copied) gives output y0 (bf16: 1e-3) and state s0."""
    s1 = st.clone()
    y1, _ = layer.step(**tok, state=s1, inplace=True)
    assert ((s1 - s0).norm() / s0.norm()).item() < 1e-5
    assert ((y1.float() - y0.float()).norm() / y0.float().norm()).item() < 1e-3


def plain_step(base: str) -> str:
    """The module with Mamba-1's step as it was generated before ORDER (session 16): the
    inputs' loads, then the state's, nothing held back; what `batchloop` and `edits` edit."""
    head = base.index("def mamba1_step(")
    end = base.find("\n\n\n", head)
    end = len(base) if end < 0 else end
    out, skip, dedent = [], False, False
    for line in base[head:end].split("\n"):
        if line in ("    if ORDER:", "    if HAS_H0 and ORDER:") or line.startswith(
                "    if HAS_H0 and ORDER:  #"):
            skip, dedent = True, False
            continue
        if line == "    if not ORDER:":
            skip, dedent = False, True
            continue
        if (skip or dedent) and line.startswith("        "):
            if dedent:
                out.append(line[4:])
            continue
        skip = dedent = False
        out.append(line)
    return base[:head] + "\n".join(out) + base[end:]


def batchloop_source(base: str) -> str:
    """The step kernel looping over BPP batch rows per program (see the module docstring)."""
    head = base.index("def mamba1_step(")
    src = base[head:]
    old = "    i_b = (pid % size_b).to(tl.int64)\n    pid = pid // size_b\n"
    assert old in src
    src = src.replace(old, "    b0 = pid * BPP\n", 1)
    knobs = "".join(f"    {k}: tl.constexpr,\n" for k in ("BPP", "NS", "UNROLL"))
    src = src.replace("    HAS_H0: tl.constexpr,\n", "    HAS_H0: tl.constexpr,\n" + knobs, 1)
    cut = src.index("\n", src.index("    ONE = tl.zeros")) + 1
    end = src.find("\n\n\n", cut)
    end = len(src) if end < 0 else end
    body = src[cut:end].splitlines()
    hoisted = [x for x in body if x.strip().split(" = ")[0] in ("D", "dt_bias", "h_new_p0")]
    rest = [x for x in body if x not in hoisted]
    loop = ["    if UNROLL:", "        for ib in tl.static_range(BPP):",
            "            i_b = (b0 + ib).to(tl.int64)"]
    loop += ["        " + x for x in rest]
    loop += ["    else:", "        for ib in tl.range(0, BPP, num_stages=NS):",
             "            i_b = (b0 + ib).to(tl.int64)"]
    loop += ["        " + x for x in rest]
    return base[:head] + src[:cut] + "\n".join(hoisted + loop) + src[end:]


def batchloop(device=DEV):
    m1, tok, st = mamba1_token(device)
    prog = m1.program
    base = plain_step(prog.source)
    edited = batchloop_source(base)
    real = scan_runtime.Launch.arguments
    knob = {}

    def arguments(self, consts):
        params, consts, grid = real(self, consts)
        if self.which == "step" and prog.source is edited:
            consts = dict(consts, **knob)
            grid = (grid[0] // knob["BPP"],)
        return params, consts, grid

    def use(src, **k):
        prog.source = src
        prog.__dict__.pop("_fns", None)
        m1._fast_steps.clear()
        scan_runtime._CONFIGURED.clear()
        knob.clear()
        knob.update(k)

    scan_runtime.Launch.arguments = arguments
    use(base)
    y0, s0 = m1.step(**tok, state=st.clone(), inplace=True)
    for bpp in (1, 2, 4):
        for unroll in (True, False):
            use(edited, BPP=bpp, NS=2, UNROLL=unroll)
            same_step(m1, tok, st, y0, s0)
    for budget, warps in settings("batch loop", device):
        use(base)
        row = [f"base {graphed(lambda: m1.step(**tok, state=st, inplace=True)):5.1f}"]
        for bpp in (2, 4, 8):
            for unroll, ns in ((True, 1), (False, 2), (False, 3)):
                use(edited, BPP=bpp, NS=ns, UNROLL=unroll)
                tag = f"{bpp}{'u' if unroll else f's{ns}'}"
                try:
                    t = graphed(lambda: m1.step(**tok, state=st, inplace=True))
                    row.append(f"{tag} {t:5.1f}")
                except Exception as err:  # noqa: BLE001 (a config that fails to compile)
                    row.append(f"{tag} failed ({type(err).__name__})")
        print(f"budget {budget:5d} warps {warps}: " + " ".join(row), flush=True)
    scan_runtime.Launch.arguments = real


if __name__ == "__main__" and sys.argv[1:2] == ["batchloop"]:
    batchloop("cpu" if sys.argv[2:] == ["cpu"] else DEV)


def edit_source(base: str, first: bool, i32: bool) -> str:
    """Mamba-1's step with the state's load moved first (as selective_state_update orders
    them) and/or the batch index kept in int32 (its offsets then int32 until the pointer)."""
    head = base.index("def mamba1_step(")
    src = base[head:]
    if i32:
        old = "    i_b = (pid % size_b).to(tl.int64)\n"
        assert old in src
        src = src.replace(old, "    i_b = pid % size_b\n", 1)
    if first:
        lines = src.split("\n")
        at = next(i for i, x in enumerate(lines) if x.startswith("    ONE = tl.zeros"))
        h = next(i for i, x in enumerate(lines) if x.startswith("    h_s = tl.zeros"))
        block = lines[h:h + 3]
        assert block[1].startswith("    if HAS_H0:"), block
        lines = lines[:h] + lines[h + 3:]
        lines = lines[:at + 1] + block + lines[at + 1:]
        src = "\n".join(lines)
    return base[:head] + src


def edits(device=DEV):
    m1, tok, st = mamba1_token(device)
    prog = m1.program
    base = plain_step(prog.source)

    def use(src):
        prog.source = src
        prog.__dict__.pop("_fns", None)
        m1._fast_steps.clear()
        scan_runtime._CONFIGURED.clear()

    variants = {(f, i): edit_source(base, f, i) for f in (False, True) for i in (False, True)}
    use(base)
    y0, s0 = m1.step(**tok, state=st.clone(), inplace=True)
    for src in variants.values():
        use(src)
        same_step(m1, tok, st, y0, s0)
    for budget, warps in settings("edits", device):
        row = []
        for (f, i), src in variants.items():
            use(src)
            t = graphed(lambda: m1.step(**tok, state=st, inplace=True))
            row.append(f"{'first' if f else 'as is'}/{'i32' if i else 'i64'} {t:5.1f}")
        print(f"budget {budget:5d} warps {warps}: " + " | ".join(row), flush=True)
    use(base)


if __name__ == "__main__" and sys.argv[1:2] == ["edits"]:
    edits("cpu" if sys.argv[2:] == ["cpu"] else DEV)



def order(device=DEV):
    """The generated step with ORDER on (the state's loads first, per-channel inputs held
    back until it arrives: loop._after_state), off, and as chosen (scan_runtime.step_order),
    at several tiles, each in a CUDA graph, alternating with mamba_ssm's
    selective_state_update in a graph; the decode_hpn shape at the end."""
    m1, tok, st = mamba1_token(device)
    real = scan_runtime.Launch.arguments
    knob = {}

    def arguments(self, consts):
        params, consts, grid = real(self, consts)
        if self.which == "step":
            consts = dict(consts, ORDER=knob.get("order", consts["ORDER"]))
            self.maxnreg = knob.get("maxnreg")
        return params, consts, grid

    scan_runtime.Launch.arguments = arguments

    def use(**k):
        m1._fast_steps.clear()
        scan_runtime._CONFIGURED.clear()
        knob.clear()
        knob.update(k)

    variants = {"order": dict(order=True), "no-order": dict(order=False), "chosen": {}}
    if device != DEV:  # the interpreter runs no inline assembly: ORDER stays off there
        variants = {"no-order": dict(order=False), "chosen": {}}
    use(order=False)
    y0, s0 = m1.step(**tok, state=st.clone(), inplace=True)
    for k in variants.values():
        use(**k)
        same_step(m1, tok, st, y0, s0)
    print("order: same output and state as the step without the hold", flush=True)
    if device != DEV:
        scan_runtime.Launch.arguments = real
        return
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    A1 = -torch.exp(tok["A_log"].float())
    D1, db1 = tok["D"].float(), tok["dt_bias"].float()
    peer = graphed_fn(lambda: selective_state_update(st, tok["u"], tok["dt"], A1, tok["B"],
                                                     tok["C"], D1, None, db1, dt_softplus=True))
    for budget, warps in ((4096, 4), (1024, 4), (512, 4), (4096, 8)):
        scan_runtime.BUDGET, scan_runtime.NUM_WARPS = budget, warps
        graphs = {}
        for name, k in variants.items():
            use(**k)
            graphs[name] = graphed_fn(lambda: m1.step(**tok, state=st, inplace=True))
        for rnd in range(3):
            row = [f"peer {bench(peer.replay) * 1e3:5.2f}"]
            row += [f"{n} {bench(g.replay) * 1e3:5.2f}" for n, g in graphs.items()]
            print(f"budget {budget:5d} warps {warps} round {rnd}: " + " | ".join(row), flush=True)
    scan_runtime.BUDGET, scan_runtime.NUM_WARPS = 4096, 4
    for name, fn in shapes():
        if name.startswith("H80"):
            for k in (dict(order=True), dict(order=False), {}):
                use(**k)
                print(f"{name} {k or 'chosen'}: {graphed(fn):6.2f}", flush=True)
    scan_runtime.Launch.arguments = real


if __name__ == "__main__" and sys.argv[1:2] == ["order"]:
    order("cpu" if sys.argv[2:] == ["cpu"] else DEV)
