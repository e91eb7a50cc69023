"""lrc against the peers of PEERS.md, in one process on one GPU (run by benchmarks/run_gpu.sh).

    python benchmarks/bench.py [stage ...]     # stages: see STAGES; default: all but mamba1

Every time is the median of triton.testing.do_bench (warm-up excluded); compile time (the first
call) is reported separately. Each lrc row is checked in the same run against a float64 or
float32 PyTorch evaluation of the same math. Results: $OUT/bench_<stage>.json; plots are made
from the JSON by benchmarks/plot.py.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F
import triton

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import lrc  # noqa: E402
from lrc import Param, Seq, State, exp, silu, softplus  # noqa: E402
from lrc.lowering.scan import tiling  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
DEV = "cuda"
ROWS: list[dict] = []
HBM = 4.28e12


# ---- the specs timed here (the same math as each peer's call)

@lrc.recurrence
def diag(x: Seq("b t d"), a: Seq("b t d"), h: State("b d")):
    """h_t = a_t h_{t-1} + x_t with the channels contiguous."""
    h = a * h + x
    return h, h


@lrc.recurrence
def diag_bdt(x: Seq("b d t"), a: Seq("b d t"), h: State("b d")):
    """The same with time contiguous (accelerated-scan's layout)."""
    h = a * h + x
    return h, h


@lrc.recurrence
def selective_scan(u: Seq("b d t"), delta: Seq("b d t"), A: Param("d n"), B: Seq("b n t"),
                   C: Seq("b n t"), D: Param("d"), z: Seq("b d t"), delta_bias: Param("d"),
                   h: State("b d n")):
    """mamba_ssm's selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, softplus=True)."""
    dt = softplus(delta + delta_bias)
    h = exp(dt * A) * h + dt * B * u
    return ((C * h).sum("n") + D * u) * silu(z), h


@lrc.recurrence
def decode_hpn(x: Seq("b t h p"), dt: Seq("b t h p"), A: Param("h p n"), B: Seq("b t n"),
               C: Seq("b t n"), D: Param("h p"), dt_bias: Param("h p"), s: State("b h p n")):
    """selective_state_update's recurrence with a per-(h, p, n) A."""
    d = softplus(dt + dt_bias)
    s = exp(d * A) * s + d * B * x
    return (C * s).sum("n") + D * x, s


def bench(fn, warmup=25, rep=100):
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def kernel_us(fn, n=3) -> dict[str, float]:
    """GPU time per call of each kernel `fn` launches (torch.profiler), by kernel name."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    times = {e.key[:60]: getattr(e, "self_device_time_total", 0) for e in prof.key_averages()}
    return {k: round(t / n, 1) for k, t in times.items() if t > 0}


def launches_us(fn) -> list:
    """[kernel name, GPU us] of each launch of one call of `fn`, in launch order (what
    kernel_us sums by name: a PASS split's state pass and chunks apart)."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        ev = [e for e in prof.events() if str(e.device_type).endswith("CUDA")]
        ev.sort(key=lambda e: e.time_range.start)
        return [[e.name[:40], round(e.time_range.elapsed_us(), 1)] for e in ev]
    except Exception as e:  # noqa: BLE001 (a profiler detail must not lose the row)
        return [f"{type(e).__name__}: {e}"[:200]]


def device_us(fn, n=3):
    """GPU time per call (kernels only): with the wall-clock median of `bench`, separates what
    the kernels take from the host's launch overhead."""
    return round(sum(kernel_us(fn, n).values()), 1)


def record(case, impl, mode, ms, floor=None, **extra):
    tbps = floor / (ms * 1e-3) / 1e12 if floor else None
    ROWS.append(dict(case=case, impl=impl, mode=mode, ms=ms, TBps=tbps, **extra))
    eff = f"{tbps:5.2f} TB/s" if tbps else ""
    more = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"{case:30s} {impl:34s} {mode:7s} {ms * 1e3:10.1f} us {eff} {more}", flush=True)


def guarded(fn):
    def run(*a, **k):
        try:
            fn(*a, **k)
        except Exception as e:  # one failing row must not hide the others
            print(f"!! {fn.__name__}: {type(e).__name__}: {str(e)[:400]}", flush=True)
            traceback.print_exc(limit=3)
    run.__name__ = fn.__name__
    return run


def host_wall(fn, n=100):
    """Wall-clock us per call of `fn`, best of 3 runs of n back-to-back calls and one
    synchronize (host time where the kernels are tiny: host_probe.py)."""
    fn()
    fn()
    torch.cuda.synchronize()
    best = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        best.append((time.perf_counter() - t) / n * 1e6)
    return round(min(best), 1)


def fwdbwd(fn, leaves):
    def run():
        for t in leaves:
            t.grad = None
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        out.backward(torch.ones_like(out))
    return run


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def time_lrc(case, name, layer, kwargs, floor_f=None, floor_fb=None, check=None, bwd=True):
    """First call (compile), forward, forward+backward and peak memory of an lrc layer."""
    torch.cuda.synchronize()
    t0 = time.time()
    y = layer(**kwargs)
    torch.cuda.synchronize()
    first = time.time() - t0
    err = check(y) if check else None
    extra = {"first_call_s": round(first, 2)}
    if err is not None:
        extra["rel_err"] = f"{err:.1e}"
    extra["gpu_us"] = device_us(lambda: layer(**kwargs))
    record(case, name, "fwd", bench(lambda: layer(**kwargs)), floor_f, **extra)
    if not bwd:
        return tuned()
    leaves = [v for v in kwargs.values() if v.is_floating_point()]
    for v in leaves:
        v.requires_grad_(True)
    run = fwdbwd(lambda: layer(**kwargs), leaves)
    run()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    record(case, name, "fwdbwd", bench(run), floor_fb, peak_MiB=round(peak),
           gpu_us=device_us(run), kernels=kernel_us(run), launches=launches_us(run))
    for v in leaves:
        v.requires_grad_(False)
        v.grad = None
    tuned()


def tuned():
    """The tuner's timings of each candidate config (chunked and scan kernels), printed once."""
    from lrc.lowering.chunked import tune as chunked_tune

    for key, times in chunked_tune.TIMES.items():
        if key not in _SHOWN:
            _SHOWN.add(key)
            print("   tuned", key[-3:], [(str(c), round(t * 1e3, 1)) for c, t in times])


_SHOWN: set = set()


def time_peer(case, name, fn, leaves, floor_f=None, floor_fb=None, bwd=True):
    record(case, name, "fwd", bench(fn), floor_f, gpu_us=device_us(fn))
    if bwd:
        run = fwdbwd(fn, leaves)
        run()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        record(case, name, "fwdbwd", bench(run), floor_fb, peak_MiB=round(peak),
               gpu_us=device_us(run))


def lrc_variants():
    """The scan kernels in both shapes the code generator can give them (the one-token loop,
    not what lrc runs for these specs, only with BENCH_LOOP=1)."""
    yield "lrc scan (chunked associative)", False
    if os.environ.get("BENCH_LOOP") == "1":
        yield "lrc scan (one-token loop)", True


def compile_variant(spec, loop):
    tiling.PREFER_LOOP = loop
    try:
        return lrc.compile(spec, backend="triton")
    finally:
        tiling.PREFER_LOOP = False


# ---- stages

@guarded
def copy():
    x = torch.randn(2 * 1024**3 // 2, device=DEV, dtype=torch.bfloat16)
    y = torch.empty_like(x)
    record("hbm", "torch copy 4GiB r+w", "copy", bench(lambda: y.copy_(x)), 2 * x.numel() * 2)


def diag_inputs(B, T, D):
    x = torch.randn(B, T, D, device=DEV, dtype=torch.bfloat16)
    a = torch.sigmoid(torch.randn(B, T, D, device=DEV) + 2).to(torch.bfloat16)
    return x, a


def diag_check(x, a):
    """fp32 reference of the first batch row: a plain loop would be slow; use cumprod form."""
    def check(y):
        xs, as_ = x[0, :256].float(), a[0, :256].float()
        h = torch.zeros_like(xs[0])
        ref = []
        for t in range(xs.shape[0]):
            h = as_[t] * h + xs[t]
            ref.append(h)
        return rel(y[0, :256], torch.stack(ref))
    return check


@guarded
def diag_case(B=8, T=4096, D=2048, peers=True):
    x, a = diag_inputs(B, T, D)
    case = f"diag B{B} T{T} D{D} bf16"
    el = B * T * D
    ff, ffb = 3 * el * 2, 8 * el * 2
    for name, loop in lrc_variants():
        layer = compile_variant(diag, loop)
        time_lrc(case, name + " b t d", layer, dict(x=x, a=a), ff, ffb, diag_check(x, a))
    xt, at = x.transpose(1, 2).contiguous(), a.transpose(1, 2).contiguous()
    for name, loop in lrc_variants():
        layer = compile_variant(diag_bdt, loop)
        time_lrc(case, name + " b d t", layer, dict(x=xt, a=at), ff, ffb)
    if not peers:
        return
    from accelerated_scan.scalar import scan
    xt, at = (v.detach().requires_grad_(True) for v in (xt, at))
    time_peer(case, "accelerated-scan triton", lambda: scan(at, xt), [at, xt], ff, ffb)
    from fla.ops.hgrn import chunk_hgrn, fused_recurrent_hgrn
    x = x.detach().requires_grad_(True)
    g = a.float().log().to(torch.bfloat16).requires_grad_(True)
    time_peer(case, "fla chunk_hgrn", lambda: chunk_hgrn(x, g), [x, g], ff, ffb)
    time_peer(case, "fla fused_recurrent_hgrn", lambda: fused_recurrent_hgrn(x, g), [x, g],
              ff, ffb)


@guarded
def sweep_t():
    """Forward and forward+backward over T (512 ... 65536) at B8 D2048, and over B*D at T4096."""
    for T in (512, 2048, 8192, 32768, 65536):
        diag_case(8, T, 2048, peers=False)
        _accel_only(8, T, 2048)
    for B, D in ((1, 256), (1, 2048), (4, 1024), (32, 4096)):
        diag_case(B, 4096, D, peers=False)
        _accel_only(B, 4096, D)


def _accel_only(B, T, D):
    from accelerated_scan.scalar import scan
    x, a = diag_inputs(B, T, D)
    xt, at = (v.transpose(1, 2).contiguous().requires_grad_(True) for v in (x, a))
    el = B * T * D
    time_peer(f"diag B{B} T{T} D{D} bf16", "accelerated-scan triton", lambda: scan(at, xt),
              [at, xt], 3 * el * 2, 8 * el * 2)


def mamba1_inputs(Bm=8, Dm=2048, Lm=4096, Nm=16) -> dict:
    """`selective_scan`'s arguments at the reference shape (bf16 sequences, fp32 params)."""
    dt_ = torch.bfloat16
    return dict(u=torch.randn(Bm, Dm, Lm, device=DEV, dtype=dt_),
                delta=(0.5 * torch.randn(Bm, Dm, Lm, device=DEV)).to(dt_),
                A=-torch.rand(Dm, Nm, device=DEV) - 0.5,
                B=torch.randn(Bm, Nm, Lm, device=DEV, dtype=dt_),
                C=torch.randn(Bm, Nm, Lm, device=DEV, dtype=dt_),
                D=torch.randn(Dm, device=DEV),
                z=torch.randn(Bm, Dm, Lm, device=DEV, dtype=dt_),
                delta_bias=torch.randn(Dm, device=DEV))


@guarded
def mamba1():
    Bm, Dm, Lm, Nm = 8, 2048, 4096, 16
    args = mamba1_inputs(Bm, Dm, Lm, Nm)
    u, delta, A, Bt, Ct, Dv, z, bias = (args[k] for k in ("u", "delta", "A", "B", "C", "D",
                                                          "z", "delta_bias"))
    el = Bm * Dm * Lm
    ff = 4 * el * 2 + 2 * Bm * Nm * Lm * 2
    ffb = ff + (4 * el * 2 + 2 * Bm * Nm * Lm * 2) + 3 * el * 2
    case = f"mamba1 B{Bm} D{Dm} L{Lm} N{Nm} bf16"
    small = dict(u=u[:1, :64, :512], delta=delta[:1, :64, :512], A=A[:64], B=Bt[:1, :, :512],
                 C=Ct[:1, :, :512], D=Dv[:64], z=z[:1, :64, :512], delta_bias=bias[:64])
    ref = lrc.compile(selective_scan, backend="reference")
    want = ref(**{k: v.double() for k, v in small.items()})
    # BENCH_FWD_ONLY=1: forwards only (lrc's Mamba-1 forward+backward, 25 ms, and its tuning
    # take minutes of a GPU session)
    bwd = os.environ.get("BENCH_FWD_ONLY") != "1"
    for name, loop in lrc_variants():
        layer = compile_variant(selective_scan, loop)
        with torch.no_grad():
            err = rel(layer(**small), want)
        time_lrc(case, name, layer, args, ff, ffb, lambda y, e=err: e, bwd=bwd)
    try:
        import selective_scan_cuda  # noqa: F401
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as e:
        print("!! mamba_ssm CUDA selective_scan unavailable:", e)
        return
    fn = lambda: selective_scan_fn(u, delta, A, Bt, Ct, Dv, z, bias, True)
    got = selective_scan_fn(*[small[k] for k in ("u", "delta", "A", "B", "C", "D", "z",
                                                 "delta_bias")], True)
    print(f"   mamba_ssm vs float64 reference: {rel(got, want):.1e}")
    leaves = [v.requires_grad_(bwd) for v in (u, delta, A, Bt, Ct, Dv, z, bias)]
    time_peer(case, "mamba_ssm selective_scan CUDA", fn, leaves, ff, ffb, bwd=bwd)


@guarded
def mamba2():
    e = ZOO["mamba2"]
    Bs, Ls, Hs, Ps, Ns = 8, 4096, 32, 64, 128
    args = e.example(b=Bs, t=Ls, g=1, r=Hs, p=Ps, n=Ns, dtype=torch.bfloat16, device=DEV)
    el = Bs * Ls * Hs * Ps
    ff = 2 * el * 2 + 2 * Bs * Ls * Ns * 2 + Bs * Ls * Hs * 2
    case = f"mamba2 B{Bs} L{Ls} H{Hs} P{Ps} N{Ns} bf16"
    layer = lrc.compile(e.spec, backend="triton")
    time_lrc(case, "lrc (auto lowering)", layer, args, ff, 2 * ff)
    print("   plan:", str(layer.plan).splitlines()[-3:])
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as ex:
        print("!! mamba_ssm triton unavailable:", ex)
        return
    x = args["x"].clone()
    dt = F.softplus(args["dt"].float() + args["dt_bias"]).to(torch.bfloat16)
    A = -torch.exp(args["A_log"].float())
    Bt, Ct = args["B"].clone(), args["C"].clone()
    Dv = args["D"].float()
    fn = lambda: mamba_chunk_scan_combined(x, dt, A, Bt, Ct, chunk_size=256, D=Dv)
    leaves = [v.requires_grad_(True) for v in (x, dt, A, Bt, Ct, Dv)]
    time_peer(case, "mamba_ssm chunk_scan_combined", fn, leaves, ff, 2 * ff)
    from fla.ops.simple_gla import chunk_simple_gla
    q = Ct.detach().expand(Bs, Ls, Hs, Ns).contiguous()
    k = Bt.detach().expand(Bs, Ls, Hs, Ns).contiguous()
    v = (x.detach() * dt.detach()[..., None])
    gg = dt.detach().float() * A.detach()
    # forward only: fla 0.6's backward refuses Triton < 3.7.1 on Hopper ("incorrect results
    # for gated chunk_bwd_dqkwg", fla #640; seen on the H200 with Triton 3.6, session 9)
    time_peer(case, "fla chunk_simple_gla", lambda: chunk_simple_gla(q, k, v, g=gg, scale=1.0),
              [], ff, bwd=False)


@guarded
def gla(peers: bool = True):
    e = ZOO["gla"]
    Bg, Tg, Hg, Kg, Vg = 8, 4096, 16, 128, 128
    args = e.example(b=Bg, t=Tg, h=Hg, k=Kg, v=Vg, dtype=torch.bfloat16, device=DEV)
    case = f"gla B{Bg} T{Tg} H{Hg} K{Kg} V{Vg} bf16"
    floor = (3 * Bg * Tg * Hg * Kg + Bg * Tg * Hg * Vg) * 2
    # the peer first: lrc's first call (compiles, tuning 6 forward and 5 backward configs)
    # takes most of this stage, ~300 s on the H200 host, and a run's time limit cut fla's
    # forward+backward off three times (sessions 8, 9)
    if peers:
        from fla.ops.gla import chunk_gla
        q, k, v, g = (args[n].clone().requires_grad_(True) for n in ("q", "k", "v", "gk"))
        g32 = g.detach().float().requires_grad_(True)
        time_peer(case, "fla chunk_gla", lambda: chunk_gla(q, k, v, g32), [q, k, v, g32],
                  floor, 2 * floor)
    layer = lrc.compile(e.spec, backend="triton")
    time_lrc(case, "lrc (auto lowering)", layer, args, floor, 2 * floor)
    print("   plan:", str(layer.plan).splitlines()[-3:])


@guarded
def decode():
    """One token, state in place, CUDA-graph replay; against mamba_ssm's selective_state_update."""
    for Bd, H, P, N in ((64, 80, 64, 128),):
        layer = lrc.compile(decode_hpn, backend="triton")
        x = torch.randn(Bd, H, P, device=DEV, dtype=torch.bfloat16)
        dt = torch.rand(Bd, H, P, device=DEV, dtype=torch.bfloat16)
        A = -torch.rand(H, P, N, device=DEV)
        Bt = torch.randn(Bd, N, device=DEV, dtype=torch.bfloat16)
        Ct = torch.randn(Bd, N, device=DEV, dtype=torch.bfloat16)
        Dv, db = torch.randn(H, P, device=DEV), torch.randn(H, P, device=DEV)
        state = torch.randn(Bd, H, P, N, device=DEV)
        kw = dict(x=x, dt=dt, A=A, B=Bt, C=Ct, D=Dv, dt_bias=db)
        ref = lrc.compile(decode_hpn, backend="reference")
        s2 = state.clone()
        y, _ = layer.step(**kw, state=s2, inplace=True)
        y2, s3 = ref.step(**{k: v.double() for k, v in kw.items()}, state=state.double())
        print(f"   decode check: y {rel(y, y2):.1e} state {rel(s2, s3):.1e}")
        case = f"decode B{Bd} H{H} P{P} N{N} fp32 state"
        floor = 2 * state.numel() * 4
        record(case, "lrc step (eager)", "step",
               bench(lambda: layer.step(**kw, state=state, inplace=True)), floor)
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                layer.step(**kw, state=state, inplace=True)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            layer.step(**kw, state=state, inplace=True)
        record(case, "lrc step (CUDA graph)", "step", bench(g.replay), floor)
        try:
            from mamba_ssm.ops.triton.selective_state_update import selective_state_update
            record(case, "mamba_ssm selective_state_update", "step",
                   bench(lambda: selective_state_update(state, x, dt, A, Bt[:, None],
                                                        Ct[:, None], Dv, None, db,
                                                        dt_softplus=True)), floor)
        except Exception as e:
            print("!! selective_state_update:", e)
    # Mamba-1 decode: state (B, D, N=16)
    e = ZOO["mamba1"]
    layer = lrc.compile(e.spec, backend="triton")
    Bd, Dd = 64, 4096
    args = e.example(b=Bd, t=1, d=Dd, n=16, dtype=torch.bfloat16, device=DEV)
    tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
    st = torch.randn(Bd, Dd, 16, device=DEV)
    case = f"decode1 B{Bd} D{Dd} N16 fp32 state"
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            layer.step(**tok, state=st, inplace=True)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        layer.step(**tok, state=st, inplace=True)
    record(case, "lrc step (CUDA graph)", "step", bench(g.replay), 2 * st.numel() * 4)
    record(case, "lrc step (eager)", "step",
           bench(lambda: layer.step(**tok, state=st, inplace=True)), 2 * st.numel() * 4)
    try:  # the peer on the same token: A = -exp(A_log), no gate
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update
        A1 = -torch.exp(tok["A_log"].float())
        D1, db1 = tok["D"].float(), tok["dt_bias"].float()

        def peer(state):
            return selective_state_update(state, tok["u"], tok["dt"], A1, tok["B"], tok["C"],
                                          D1, None, db1, dt_softplus=True)
        s1, s2 = st.clone(), st.clone()
        y1, _ = layer.step(**tok, state=s1, inplace=True)
        y2 = peer(s2)
        print(f"   decode1 lrc vs selective_state_update: y {rel(y1, y2):.1e} "
              f"state {rel(s1, s2):.1e}")
        record(case, "mamba_ssm selective_state_update (eager)", "step",
               bench(lambda: peer(st)), 2 * st.numel() * 4)
        gp = torch.cuda.CUDAGraph()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                peer(st)
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(gp):
            peer(st)
        record(case, "mamba_ssm selective_state_update (CUDA graph)", "step",
               bench(gp.replay), 2 * st.numel() * 4)
        # last (a profiler may slow the launches after it): each kernel's own GPU time
        print(f"   decode1 kernel time (torch.profiler): lrc "
              f"{device_us(lambda: layer.step(**tok, state=st, inplace=True))} us, "
              f"selective_state_update {device_us(lambda: peer(st))} us", flush=True)
    except Exception as e:
        print("!! selective_state_update (decode1):", e)


@guarded
def s4d():
    e = ZOO["s4d_zoh"]
    Bc, Dc, Lc, Nc = 8, 2048, 4096, 32
    args = e.example(b=Bc, t=Lc, h=Dc, n=Nc, dtype=torch.float32, device=DEV)
    case = f"s4d B{Bc} D{Dc} L{Lc} N{Nc} fp32"
    layer = lrc.compile(e.spec, backend="triton")
    time_lrc(case, "lrc (auto lowering)", layer, args, 2 * Bc * Dc * Lc * 4, 4 * Bc * Dc * Lc * 4)
    print("   plan:", str(layer.plan).splitlines()[-3:])


@guarded
def two_level():
    """Few programs over batch x channels, long T: the scan with one time segment against the
    two-level scan (segments summarized, joined, rescanned), and accelerated-scan."""
    from lrc.lowering.scan import launch as scan_runtime

    for B, T, D in ((1, 65536, 256), (1, 16384, 1024), (2, 32768, 128)):
        x, a = diag_inputs(B, T, D)
        case = f"diag B{B} T{T} D{D} bf16 (few programs)"
        el = B * T * D
        layer = lrc.compile(diag, backend="triton")
        scan_runtime.SEGMENTS = 1
        whole = layer(x=x, a=a).float()
        scan_runtime.SEGMENTS = None
        print(f"   two-level vs one segment, every step: {rel(layer(x=x, a=a), whole):.1e}")
        for label, segs in (("one segment", 1), ("two-level (auto)", None)):
            scan_runtime.SEGMENTS = segs
            try:
                time_lrc(case, f"lrc scan, {label}", layer, dict(x=x, a=a), 3 * el * 2,
                         8 * el * 2, diag_check(x, a))
            finally:
                scan_runtime.SEGMENTS = None
        _accel_only(B, T, D)


_FIRST_CALL = """
import sys, time, torch
t0 = time.time()
import lrc
from lrc.zoo import ZOO
e = ZOO[sys.argv[1]]
layer = lrc.compile(e.spec, backend="triton")
t1 = time.time()
args = e.example(b=2, t=1000, dtype=torch.float32, device="cuda")
args = {k: v.requires_grad_(v.dtype.is_floating_point or v.is_complex()) for k, v in args.items()}
y = layer(**args)
torch.cuda.synchronize()
t2 = time.time()
y.float().sum().backward()
torch.cuda.synchronize()
print(t1 - t0, t2 - t1, time.time() - t2)
"""


@guarded
def compile_time():
    """Each in a fresh process: lrc.compile, the first forward call and the first backward,
    cold (empty lrc and Triton caches) and warm (a second process with the caches on disk)."""
    import shutil
    import subprocess
    import tempfile

    for name in ("mamba1", "gla", "s4d_zoh"):
        d = tempfile.mkdtemp()
        env = dict(os.environ, LRC_CACHE_DIR=os.path.join(d, "lrc"),
                   TRITON_CACHE_DIR=os.path.join(d, "triton"),
                   PYTHONPATH=os.path.join(HERE, "..") + ":" + os.environ.get("PYTHONPATH", ""))
        times = []
        for _ in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL, name], env=env,
                                 capture_output=True, text=True, timeout=300)
            if out.returncode:
                raise RuntimeError(out.stderr[-800:])
            times.append([float(x) for x in out.stdout.split()[-3:]])
        (c0, c1, c2), (w0, w1, w2) = times
        ROWS.append(dict(case=f"compile {name}", impl="lrc", mode="compile",
                         cold_compile_s=c0, cold_first_forward_s=c1, cold_first_backward_s=c2,
                         warm_compile_s=w0, warm_first_forward_s=w1, warm_first_backward_s=w2))
        print(f"compile {name:10s} cold: compile {c0:5.2f} s, first fwd {c1:5.2f} s, first bwd "
              f"{c2:5.2f} s | warm: {w0:5.2f} / {w1:5.2f} / {w2:5.2f} s", flush=True)
        shutil.rmtree(d, ignore_errors=True)


STAGES = {"copy": copy, "diag": diag_case, "sweep_t": sweep_t, "two_level": two_level,
          "mamba1": mamba1,
          "mamba2": mamba2, "gla": gla, "decode": decode, "s4d": s4d,
          # lrc's GLA rows alone (fla's first call autotunes for minutes; a run's time limit
          # has cut the stage before lrc's forward+backward in sessions 8, 9, 15 and 16)
          "gla_lrc": lambda: gla(peers=False),
          "compile": compile_time}


if __name__ == "__main__":
    print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
    stages = sys.argv[1:] or [s for s in STAGES if s != "mamba1"]
    tag = "_".join(stages) if len(stages) < 4 else "all"
    for st in stages:
        STAGES[st]()
        with open(os.path.join(OUT, f"bench_{tag}.json"), "w") as fh:  # after every stage:
            json.dump(ROWS, fh, indent=1)                               # a time limit keeps some
