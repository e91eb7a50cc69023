"""lrc's convolution lowering against the eager PyTorch S4D peer, and the conv/scan crossover.

    python benchmarks/bench_conv.py [stage ...]     # stages: peer, sweep (default: both)

peer   S4D B8 D2048 L4096 N32 fp32, kernel generation + FFT convolution, forward and
       forward+backward: lrc (`lowering="conv"`) against PEERS.md's eager Vandermonde + FFT path
       (peers_gpu.py's `fftconv`, the same parametrization), in one process. lrc's output and
       every gradient are checked in the same run against the peer's math in float64.
sweep  over T and three shapes: lrc's conv and scan lowerings measured, next to the cost
       model's prediction for each, and the crossover T each one gives.

Medians of triton.testing.do_bench. Prints a table; writes $OUT/bench_conv.json.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback

import torch
import triton

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import lrc  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
DEV = "cuda"
ROWS: list[dict] = []


def bench(fn, warmup=25, rep=100) -> float:
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def record(case, impl, mode, ms, **extra):
    ROWS.append(dict(case=case, impl=impl, mode=mode, ms=ms, **extra))
    more = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"{case:32s} {impl:30s} {mode:7s} {ms * 1e3:10.1f} us  {more}", flush=True)


def guarded(fn):
    def run(*a, **k):
        try:
            return fn(*a, **k)
        except Exception as e:  # one failing stage must not hide the others
            print(f"!! {fn.__name__}: {type(e).__name__}: {str(e)[:400]}", flush=True)
            traceback.print_exc(limit=4)
    run.__name__ = fn.__name__
    return run


def fwdbwd(fn, leaves):
    def run():
        for t in leaves:
            t.grad = None
        fn().backward(torch.ones(SHAPE, device=DEV))
    return run


def peer_inputs(B, D, L, N, dtype=torch.float32):
    """peers_gpu.py's fftconv inputs (its draw), as leaves."""
    g = torch.Generator(device=DEV).manual_seed(0)
    u = torch.randn(B, D, L, device=DEV, generator=g, dtype=dtype)
    logdt = torch.rand(D, device=DEV, generator=g, dtype=dtype) * 4 - 7
    Are = -0.5 * torch.ones(D, N, device=DEV, dtype=dtype)
    Aim = (math.pi * torch.arange(N, device=DEV, dtype=dtype).expand(D, N)).contiguous()
    Cre = torch.randn(D, N, device=DEV, generator=g, dtype=dtype)
    Cim = torch.randn(D, N, device=DEV, generator=g, dtype=dtype)
    return [x.requires_grad_(True) for x in (u, logdt, Are, Aim, Cre, Cim)]


def peer_fn(u, logdt, Are, Aim, Cre, Cim):
    """The peer: the S4 repository's eager fallback (Vandermonde materialized, then FFT)."""
    L = u.shape[-1]
    A = torch.complex(Are, Aim)
    dtA = A * logdt.exp()[:, None]
    C = torch.complex(Cre, Cim) * (dtA.exp() - 1) / A
    ar = torch.arange(L, device=u.device, dtype=Are.dtype)
    K = 2 * torch.einsum("dn,dnl->dl", C, torch.exp(dtA[..., None] * ar)).real
    kf = torch.fft.rfft(K, n=2 * L)
    uf = torch.fft.rfft(u, n=2 * L)
    return torch.fft.irfft(uf * kf, n=2 * L)[..., :L]


def lrc_args(peer):
    """The same math as s4d_zoh's arguments: -exp(log_A_real) = Are, B = 1, D = 0."""
    u, logdt, Are, Aim, Cre, Cim = (x.detach() for x in peer)
    args = {"u": u, "log_dt": logdt, "log_A_real": torch.log(-Are), "A_imag": Aim,
            "B": torch.ones_like(torch.complex(Cre, Cim)), "C": torch.complex(Cre, Cim),
            "D": torch.zeros_like(logdt)}
    return {k: v.clone().requires_grad_(True) for k, v in args.items()}


def rel(a, b) -> float:
    wide = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
    a, b = a.detach().to(wide), b.detach().to(wide)
    return ((a - b).norm() / b.norm()).item()


SHAPE: tuple = ()


@guarded
def peer():
    global SHAPE
    B, D, L, N = 8, 2048, 4096, 32
    SHAPE = (B, D, L)
    case = f"s4d-conv B{B} D{D} L{L} N{N} fp32"
    leaves = peer_inputs(B, D, L, N)
    layer = lrc.compile(ZOO["s4d_zoh"].spec, backend="triton", lowering="conv")
    args = lrc_args(leaves)
    # correctness in the same run: lrc vs the peer's math in float64, output and gradients
    wide = [x.detach().double().requires_grad_(True) for x in leaves]
    y64 = peer_fn(*wide)
    gy = torch.randn_like(y64)
    g64 = torch.autograd.grad((y64 * gy).sum(), wide)
    torch.cuda.synchronize()
    t0 = time.time()
    y = layer(**args)
    torch.cuda.synchronize()
    first = time.time() - t0
    gl = torch.autograd.grad((y * gy.float()).sum(), [args["u"], args["log_dt"],
                                                      args["log_A_real"], args["A_imag"],
                                                      args["C"]])
    # log_A_real = log(-Are): dL/dAre = dL/dlog_A_real / Are; A_imag = Aim; C = Cre + i Cim
    errs = {"y": rel(y, y64), "du": rel(gl[0], g64[0]), "dlogdt": rel(gl[1], g64[1]),
            "dAre": rel(gl[2] / leaves[2].detach(), g64[2]), "dAim": rel(gl[3], g64[3]),
            "dC": rel(gl[4], torch.complex(g64[4], g64[5]))}
    err = max(errs.values())
    print("   check vs float64:", " ".join(f"{k} {v:.1e}" for k, v in errs.items()), flush=True)
    del y64, g64, wide
    ok = "ok" if err <= 1e-3 else "FAIL"
    t_pf = bench(lambda: peer_fn(*leaves))
    t_lf = bench(lambda: layer(**args))
    record(case, "torch eager Vandermonde+FFT", "fwd", t_pf)
    record(case, "lrc conv", "fwd", t_lf, speedup=round(t_pf / t_lf, 2), max_rel_err=f"{err:.1e}",
           check=ok, first_call_s=round(first, 2))
    t_pb = bench(fwdbwd(lambda: peer_fn(*leaves), leaves))
    lleaves = list(args.values())
    run = fwdbwd(lambda: layer(**args), lleaves)
    run()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    t_lb = bench(run)
    record(case, "torch eager Vandermonde+FFT", "fwdbwd", t_pb)
    record(case, "lrc conv", "fwdbwd", t_lb, speedup=round(t_pb / t_lb, 2), peak_MiB=round(peak))
    # where the time goes: the pieces of lrc's forward, each timed alone
    from lrc.lowering.conv import fft as conv_fft
    from lrc.lowering.conv import kernels as ck
    u = args["u"].detach()
    nf = conv_fft.fft_size(2 * L - 1)
    z = ck.pack(u, nf, False)
    zf = torch.fft.fft(z)
    kp = torch.randn(D, nf, device=DEV, dtype=torch.float32)
    kh = torch.fft.rfft(kp)
    la = torch.randn(D, N, device=DEV, dtype=torch.complex128) * 0.01 - 0.01
    w = torch.randn(D, N, device=DEV, dtype=torch.complex64)
    for name, fn in [("pack", lambda: ck.pack(u, nf, False)), ("fft", lambda: torch.fft.fft(z)),
                     ("kernel rfft", lambda: torch.fft.rfft(kp)),
                     ("x kernel spectrum", lambda: ck.spectral_product(zf, kh)),
                     ("ifft", lambda: torch.fft.ifft(zf, norm="forward")),
                     ("unpack", lambda: ck.unpack(zf, B, L, False)),
                     ("vandermonde, padded", lambda: ck.vander_sum(la, w, L, 1 / nf, nf))]:
        record(case, f"  lrc piece: {name}", "fwd", bench(fn))


SWEEP_SHAPES = [(8, 2048, 32), (2, 256, 64)]
SWEEP_T = [64, 256, 1024, 4096, 16384]


@guarded
def sweep():
    """Measured conv and scan times against the cost model, over T."""
    global SHAPE
    e = ZOO["s4d_zoh"]
    conv = lrc.compile(e.spec, backend="triton", lowering="conv")
    scan = lrc.compile(e.spec, backend="triton", lowering="scan")
    g = conv.plan.graph
    lw = g.meta("lowering")
    for B, H, N in SWEEP_SHAPES:
        case = f"s4d sweep B{B} H{H} N{N} fp32"
        measured, predicted = {}, {}
        for T in SWEEP_T:
            SHAPE = (B, H, T)
            args = e.init_params(dtype=torch.float32, device=DEV, h=H, n=N)
            args["u"] = torch.randn(B, H, T, device=DEV)
            costs = lw.choose(g, {"b": B, "h": H, "n": N}, T, 4)[1]
            y_c, y_s = conv(**args), scan(**args)
            err = rel(y_c, y_s)
            for name, layer in (("conv", conv), ("scan", scan)):
                call = lambda layer=layer, args=args: layer(**args)  # noqa: E731
                ms = bench(call)
                extra = {}
                if name == "conv" or T <= 256:  # the scan's backward takes seconds beyond
                    leaves = [v.requires_grad_(True) for v in args.values()]
                    extra["fwdbwd_us"] = round(bench(fwdbwd(call, leaves)) * 1e3, 1)
                    for v in leaves:
                        v.requires_grad_(False)
                        v.grad = None
                pred = costs[name].seconds * 1e3
                measured[(T, name)], predicted[(T, name)] = ms, pred
                record(case, f"lrc {name} T={T}", "fwd", ms, predicted_us=round(pred * 1e3, 1),
                       conv_vs_scan_rel_err=f"{err:.1e}", **extra)
        for what, table in (("measured", measured), ("predicted", predicted)):
            winners = {T: min(("conv", "scan"), key=lambda n: table[(T, n)]) for T in SWEEP_T}
            first_conv = next((T for T in SWEEP_T if winners[T] == "conv"), None)
            ROWS.append(dict(case=case, impl="crossover", mode=what, winners=winners,
                             conv_from_T=first_conv))
            print(f"   {case}: {what} winners {winners}; conv from T={first_conv}", flush=True)


STAGES = {"peer": peer, "sweep": sweep}

if __name__ == "__main__":
    print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
    stages = sys.argv[1:] or list(STAGES)
    for st in stages:
        STAGES[st]()
    with open(os.path.join(OUT, "bench_conv.json"), "w") as fh:
        json.dump(ROWS, fh, indent=1, default=str)
