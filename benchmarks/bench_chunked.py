"""Time lrc's chunked tensor-core kernels against the peers on the reference shapes (GPU).

    PYTHONPATH=/tmp/site python benchmarks/bench_chunked.py [case ...]   # mamba2 gla retnet rwkv6

Writes $OUT/lrc_chunked.json and prints a table. Peers (fla-core's chunk_simple_gla, chunk_gla,
chunk_retention, chunk_rwkv6; mamba_ssm's mamba_chunk_scan_combined) are timed in the same
process when importable. Each case first checks correctness in the same run: lrc against the
float64 reference (forward and every gradient) on a short slice, and against the peer's output
at full size. Times are medians of triton.testing.do_bench; the first call (which compiles and
tunes) is reported separately.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import types

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import lrc  # noqa: E402
from lrc import Param, Seq, State, exp  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
ROWS: list[dict] = []
DEV = "cuda"


@lrc.recurrence
def ssd(x: Seq("b t (g r) p"), dt: Seq("b t (g r)"), A: Param("(g r)"), B: Seq("b t g n"),
        C: Seq("b t g n"), D: Param("(g r)"), h: State("b (g r) p n")):
    """Mamba-2's SSD exactly as mamba_chunk_scan_combined takes it (dt already positive)."""
    h = exp(dt * A) * h + dt * B * x
    return (C * h).sum("n") + D * x, h


def _mamba_ssm_without_init() -> None:
    """Import mamba_ssm's submodules without its package __init__ (it needs the CUDA build)."""
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is not None and "mamba_ssm" not in sys.modules:
        pkg = types.ModuleType("mamba_ssm")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["mamba_ssm"] = pkg


def bench(fn, warmup=10, rep=50):
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def record(case, impl, mode, ms=None, note="", **extra):
    ROWS.append(dict(case=case, impl=impl, mode=mode, ms=ms, note=note, **extra))
    t = f"{ms * 1e3:10.1f} us" if ms is not None else " " * 13
    print(f"{case:34s} {impl:32s} {mode:8s} {t} {note}", flush=True)


def rel(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def fwdbwd(fn, leaves):
    def run():
        for t in leaves:
            t.grad = None
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        out.backward(torch.ones_like(out))
    return run


def time_both(case, impl, fn, leaves):
    """Forward without autograd, then forward + backward; first calls timed apart."""
    t0 = time.time()
    with torch.no_grad():
        fn()
    torch.cuda.synchronize()
    first = time.time() - t0
    with torch.no_grad():
        record(case, impl, "fwd", bench(fn), f"first call {first:.1f}s")
    run = fwdbwd(fn, leaves)
    try:
        t0 = time.time()
        run()
        torch.cuda.synchronize()
        record(case, impl, "fwdbwd", bench(run), f"first call {time.time() - t0:.1f}s")
    except Exception as e:  # a peer may refuse its backward (fla on Hopper, old Triton)
        record(case, impl, "fwdbwd", None, f"failed: {type(e).__name__}: {str(e)[:120]}")


def check_reference(case, spec, args, state):
    """Chunked kernels vs the float64 reference on a slice: output, final state, gradients."""
    kern = lrc.compile(spec, backend="triton", lowering="chunked")
    ref = lrc.compile(spec, backend="reference")
    ours = {k: v.detach().clone().requires_grad_(True) for k, v in args.items()}
    theirs = {k: v.detach().double().requires_grad_(True) for k, v in args.items()}
    s1 = state.detach().float().requires_grad_(True)
    s2 = state.detach().double().requires_grad_(True)
    y, h = kern(**ours, initial_state=s1, return_final_state=True)
    y2, h2 = ref(**theirs, initial_state=s2, return_final_state=True)
    gy = torch.randn_like(y2)
    g1 = torch.autograd.grad((y.double() * gy).sum() + h.double().sum(), [*ours.values(), s1])
    g2 = torch.autograd.grad((y2 * gy).sum() + h2.sum(), [*theirs.values(), s2])
    errs = {"y": rel(y, y2), "h_T": rel(h, h2)}
    errs.update({f"d{k}": rel(a, b) for k, a, b in zip([*ours, "h0"], g1, g2, strict=False)})
    worst = max(errs.values())
    finite = all(torch.isfinite(x.float()).all().item() for x in (y, h, *g1))
    record(case, "lrc chunked", "check", None, f"vs float64 reference: worst rel err "
           f"{worst:.2e} ({max(errs, key=errs.get)}), finite={finite}", errs=errs)
    prog = kern._lowering("chunked")
    return kern, prog


def case_mamba2():
    Bs, Ls, Hs, Ps, Ns = 8, 4096, 32, 64, 128
    case = f"mamba2 B{Bs} L{Ls} H{Hs} P{Ps} N{Ns} bf16"
    bf = torch.bfloat16
    x = torch.randn(Bs, Ls, Hs, Ps, device=DEV, dtype=bf)
    dt = torch.nn.functional.softplus(torch.randn(Bs, Ls, Hs, device=DEV) - 2).to(bf)
    A = -torch.rand(Hs, device=DEV) - 0.5
    Bt = torch.randn(Bs, Ls, 1, Ns, device=DEV, dtype=bf)
    Ct = torch.randn(Bs, Ls, 1, Ns, device=DEV, dtype=bf)
    Dv = torch.randn(Hs, device=DEV)
    small = dict(x=x[:1, :600], dt=dt[:1, :600], A=A, B=Bt[:1, :600], C=Ct[:1, :600], D=Dv)
    kern, _ = check_reference(case, ssd, small, 0.5 * torch.randn(1, Hs, Ps, Ns, device=DEV))
    args = dict(x=x, dt=dt, A=A, B=Bt, C=Ct, D=Dv)
    leaves = [v.requires_grad_(True) for v in args.values()]
    time_both(case, "lrc chunked (peer's spec)", lambda: kern(**args), leaves)
    zoo = lrc.compile(ZOO["mamba2"].spec, backend="triton", lowering="chunked")
    zargs = ZOO["mamba2"].example(b=Bs, t=Ls, dtype=bf, device=DEV, g=1, r=Hs, p=Ps, n=Ns)
    time_both(case, "lrc chunked (zoo: softplus inside)", lambda: zoo(**zargs),
              [v.requires_grad_(True) for v in zargs.values()])
    with torch.no_grad():
        y = kern(**args)
    try:
        _mamba_ssm_without_init()
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        f = lambda: mamba_chunk_scan_combined(x, dt, A, Bt, Ct, chunk_size=256, D=Dv)  # noqa
        with torch.no_grad():
            record(case, "mamba_ssm chunk_scan_combined", "agree", None,
                   f"lrc vs peer output rel err {rel(y, f()):.2e}")
        time_both(case, "mamba_ssm chunk_scan_combined", f, leaves)
    except ImportError as e:
        record(case, "mamba_ssm chunk_scan_combined", "skip", None, str(e)[:100])
    try:
        from fla.ops.simple_gla import chunk_simple_gla
        q = Ct.detach().expand(Bs, Ls, Hs, Ns).contiguous().requires_grad_(True)
        k = Bt.detach().expand(Bs, Ls, Hs, Ns).contiguous().requires_grad_(True)
        v = (x.detach() * dt.detach()[..., None]).requires_grad_(True)
        gg = (dt.detach().float() * A.detach()).requires_grad_(True)
        f2 = lambda: chunk_simple_gla(q, k, v, g=gg, scale=1.0)  # noqa: E731
        time_both(case, "fla chunk_simple_gla", f2, [q, k, v, gg])
    except ImportError as e:
        record(case, "fla chunk_simple_gla", "skip", None, str(e)[:100])


def qkv_case(name, peer):
    Bg, Tg, Hg, Kg, Vg = 8, 4096, 16, 128, 128
    case = f"{name} B{Bg} T{Tg} H{Hg} K{Kg} V{Vg} bf16"
    entry = ZOO[name]
    small = entry.example(b=1, t=600, dtype=torch.float32, device=DEV, h=4, k=Kg, v=Vg)
    state = entry.initial_state(b=1, dtype=torch.float32, device=DEV, h=4, k=Kg, v=Vg)
    kern, _ = check_reference(case, entry.spec, small, state)
    args = entry.example(b=Bg, t=Tg, dtype=torch.bfloat16, device=DEV, h=Hg, k=Kg, v=Vg)
    for k in ("gk", "w"):  # the peers take log-decays in float32
        if k in args:
            args[k] = args[k].float()
    time_both(case, "lrc chunked", lambda: kern(**args),
              [v.requires_grad_(True) for v in args.values()])
    if peer is not None:
        try:
            impl, f, agree = peer(args)
            if agree is not None:
                with torch.no_grad():
                    record(case, impl, "agree", None,
                           f"lrc vs peer output rel err {rel(kern(**args), agree()):.2e}")
            time_both(case, impl, f, [v for v in args.values()])
        except ImportError as e:
            record(case, "peer", "skip", None, str(e)[:100])


def gla_peer(a):
    from fla.ops.gla import chunk_gla

    f = lambda: chunk_gla(a["q"], a["k"], a["v"], a["gk"], scale=1.0)  # noqa: E731
    return "fla chunk_gla", f, lambda: f()[0]


def retnet_peer(a):
    from fla.ops.simple_gla import chunk_simple_gla

    g_gamma = torch.log(a["gamma"].detach().float())
    f = lambda: chunk_simple_gla(a["q"], a["k"], a["v"], g_gamma=g_gamma, scale=1.0)  # noqa
    return "fla chunk_simple_gla (g_gamma)", f, lambda: f()[0]


def rwkv6_peer(a):
    from fla.ops.rwkv6 import chunk_rwkv6

    def f():  # fla takes the log-decay; lrc evaluates it from time_decay and w in-kernel
        w = -torch.exp(a["time_decay"].float() + a["w"].float())
        return chunk_rwkv6(a["r"], a["k"], a["v"], w, a["u"], scale=1.0)
    return "fla chunk_rwkv6 (+ decay in torch)", f, lambda: f()[0]


CASES = {
    "mamba2": case_mamba2,
    "gla": lambda: qkv_case("gla", gla_peer),
    "retnet": lambda: qkv_case("retnet", retnet_peer),
    "rwkv6": lambda: qkv_case("rwkv6", rwkv6_peer),
}


if __name__ == "__main__":
    print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
    for name in sys.argv[1:] or list(CASES):
        try:
            CASES[name]()
        except Exception as e:  # keep going: one failing case must not hide the others
            import traceback

            print(f"!! {name}: {type(e).__name__}: {str(e)[:500]}", flush=True)
            traceback.print_exc(limit=6)
    from lrc.kernels.tune import _CACHE

    for key, cfg in _CACHE.items():
        print(f"tuned {key[-2]} T={key[2]} {dict(key[1])}: {cfg}")
    with open(os.path.join(OUT, "lrc_chunked.json"), "w") as fh:
        json.dump(ROWS, fh, indent=1)
