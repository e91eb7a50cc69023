"""The benchmark registry: every reference row of DESIGN.md section 7 x its implementations.

A `Row` is one shape of one recurrence (`sizes`, plus the `tiny` sizes a CPU smoke run uses),
the inputs drawn once for all of its implementations, and the modes it is timed in. An `Impl`
turns those inputs into a `Built`: one callable per mode and the output in the row's canonical
layout, for the cross-check. lrc's implementations use only the public API (`lrc.compile`,
`lrc.zoo`, `layer.step`); the peers are optional imports, and a missing one raises
`Unavailable` with the reason (run.py records it; it never stops the run).

    from registry import ROWS
    row = ROWS["mamba2"]
    inputs = row.inputs(row.sizes, "cuda")
    built = row.impls[0].build(inputs, row.sizes)
    built.calls["fwd"]()
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import lrc
from lrc import Param, Seq, State, exp, silu, softplus
from lrc.zoo import ZOO

Inputs = dict[str, torch.Tensor]
Sizes = dict[str, int]


class Unavailable(Exception):  # noqa: N818 (a reason to skip, not a fault)
    """An implementation that cannot run here (a peer not installed, no CUDA); says why."""


@dataclass
class Built:
    """One implementation, ready to time: a callable per mode, and its output for the checks.

    calls      mode -> a callable of no arguments ('fwd', 'fwdbwd', 'step')
    output     the output (a tensor or a tuple) in the row's canonical layout
    reference  lrc only: the float64 reference backend's output on the same inputs
    extra      what else to record (lrc's first-call seconds)
    """

    label: str
    calls: dict[str, Callable[[], Any]]
    output: Callable[[], Any]
    reference: Callable[[], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Impl:
    """An implementation of a row: lrc or a peer (`cpu`: it runs on CPU tensors too)."""

    name: str
    kind: str  # "lrc" or "peer"
    build: Callable[[Inputs, Sizes], Built]
    cpu: bool = False


@dataclass(frozen=True)
class Row:
    """A reference shape with its implementations; the first peer is the one ratios use."""

    name: str
    title: str
    sizes: Sizes
    tiny: Sizes
    modes: tuple[str, ...]
    inputs: Callable[[Sizes, Any], Inputs]
    impls: tuple[Impl, ...]

    def describe(self, sizes: Sizes) -> str:
        """The title with these sizes substituted (the tiny run's shapes differ)."""
        return self.title.format(**sizes)


# ---- helpers shared by every implementation

def wide(x: torch.Tensor) -> torch.Tensor:
    """x in float64 (complex128 for complex x), for the reference backend and the checks."""
    return x.detach().to(torch.complex128 if x.is_complex() else torch.float64)


def rel_l2(a: Any, b: Any) -> float:
    """Relative L2 error ||a - b|| / ||b|| in float64; the largest over a tuple's entries."""
    if isinstance(a, (tuple, list)):
        return max(rel_l2(x, y) for x, y in zip(a, b, strict=True))
    a, b = wide(a), wide(b).to(a.device)  # on a's device: full-size outputs are large
    if a.shape != b.shape:
        raise ValueError(f"cross-check shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def _grad_copies(args: Inputs) -> Inputs:
    """Detached copies of the arguments; the floating ones (and complex) require grad."""
    return {k: v.detach().clone().requires_grad_(v.is_floating_point() or v.is_complex())
            for k, v in args.items()}


def _fwdbwd(fn: Callable[[], Any], leaves: list[torch.Tensor]) -> Callable[[], None]:
    """One forward and backward of fn (first output, gradient of ones), grads reset first."""
    def run() -> None:
        for t in leaves:
            t.grad = None
        out = fn()
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.backward(torch.ones_like(out))
    return run


def _sync(device: Any) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _built(label: str, call: Callable[..., Any], args: Inputs, modes: tuple[str, ...],
           canon: Callable[[Any], Any] = lambda y: y) -> Built:
    """A Built for `call(**args)`: 'fwd' under no_grad, 'fwdbwd' on grad-requiring copies."""
    calls: dict[str, Callable[[], Any]] = {}
    if "fwd" in modes:
        def fwd() -> Any:
            with torch.no_grad():
                return call(**args)
        calls["fwd"] = fwd
    if "fwdbwd" in modes:
        gargs = _grad_copies(args)
        leaves = [v for v in gargs.values() if v.requires_grad]
        calls["fwdbwd"] = _fwdbwd(lambda: call(**gargs), leaves)

    def output() -> Any:
        with torch.no_grad():
            return canon(call(**args))
    return Built(label, calls, output)


def _lrc_built(spec: lrc.Spec, args: Inputs, modes: tuple[str, ...],
               lowering: str | None = None) -> Built:
    """lrc's layer for `spec` on `args`: compiled, called once (the first call's seconds
    recorded: compile and tuning), with the float64 reference backend beside it."""
    layer = lrc.compile(spec, backend="triton", lowering=lowering)
    device = next(iter(args.values())).device
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        layer(**args)
    _sync(device)
    first = time.perf_counter() - t0
    built = _built(f"lrc ({lowering or 'auto'} lowering)", layer, args, modes)
    ref = lrc.compile(spec, backend="reference")
    built.reference = lambda: ref(**{k: wide(v) for k, v in args.items()})
    built.extra["first_call_s"] = round(first, 2)
    return built


def _graph(fn: Callable[[], Any]) -> Callable[[], Any]:
    """fn captured in a CUDA graph (after three warm-up calls on a side stream): its replay."""
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        fn()
    return g.replay


def _step_built(label: str, step: Callable[[torch.Tensor], Any], state: torch.Tensor) -> Built:
    """A decode step `step(state) -> y` that updates `state` in place: timed as a CUDA-graph
    replay on the GPU (eagerly on the CPU); its output is (y, new state) from a copy."""
    s = state.clone()
    run = (lambda: step(s)) if s.device.type == "cpu" else _graph(lambda: step(s))

    def output() -> Any:
        s2 = state.clone()
        return step(s2), s2
    return Built(label, {"step": run}, output)


# ---- optional peers

def _need_cuda(inputs: Inputs) -> None:
    if next(iter(inputs.values())).device.type != "cuda":
        raise Unavailable("needs CUDA (this run is on the CPU)")


def _peer_module(name: str) -> Any:
    """Import a peer's module, or raise Unavailable with the import error."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 (any import failure: the peer is unavailable)
        raise Unavailable(f"cannot import {name}: {type(e).__name__}: {e}"[:300]) from e


def _mamba_ssm(sub: str) -> Any:
    """A submodule of mamba_ssm without running its package __init__ (which imports the CUDA
    extension and mamba3's extra dependencies: PEERS.md)."""
    if "mamba_ssm" not in sys.modules:
        spec = importlib.util.find_spec("mamba_ssm")
        if spec is None:
            raise Unavailable("mamba_ssm is not installed")
        pkg = types.ModuleType("mamba_ssm")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["mamba_ssm"] = pkg
    return _peer_module(f"mamba_ssm.{sub}")


def _selective_scan_cuda() -> None:
    """Make mamba_ssm's CUDA extension importable: installed, or built from the carried sdist
    by $PEERS_DIR/build_selective_scan.py (default .peers; it reuses or waits for a build
    under way, so gpu.sh starts it in the background)."""
    if importlib.util.find_spec("selective_scan_cuda") is not None:
        return
    script = os.path.join(os.environ.get("PEERS_DIR", ".peers"), "build_selective_scan.py")
    if not os.path.exists(script):
        raise Unavailable(f"selective_scan_cuda is not built and {script} is missing")
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        import build_selective_scan  # builds, or loads torch's extension cache
    except Exception as e:  # noqa: BLE001
        raise Unavailable(f"building selective_scan_cuda failed: {e}"[:300]) from e
    sys.modules["selective_scan_cuda"] = build_selective_scan.m


# ---- elementwise scan: h_t = a_t h_{t-1} + x_t, time contiguous (accelerated-scan's layout)

@lrc.recurrence
def diag_bdt(x: Seq("b d t"), a: Seq("b d t"), h: State("b d")):
    """h_t = a_t h_{t-1} + x_t with time contiguous."""
    h = a * h + x
    return h, h


def elementwise_inputs(s: Sizes, device: Any) -> Inputs:
    """x ~ N(0, 1) and a = sigmoid(N(2, 1)), bf16, laid out (b, d, t)."""
    shape = (s["b"], s["d"], s["t"])
    x = torch.randn(shape, device=device).to(torch.bfloat16)
    a = torch.sigmoid(torch.randn(shape, device=device) + 2).to(torch.bfloat16)
    return {"x": x, "a": a}


def elementwise_lrc(inp: Inputs, s: Sizes) -> Built:
    """lrc's scan of diag_bdt."""
    return _lrc_built(diag_bdt, inp, ("fwd", "fwdbwd"))


def elementwise_accel(inp: Inputs, s: Sizes) -> Built:
    """accelerated_scan.scalar.scan(gates, tokens), layout (B, C, T)."""
    _need_cuda(inp)
    scan = _peer_module("accelerated_scan.scalar").scan
    return _built("accelerated-scan scalar.scan", lambda x, a: scan(a, x), inp,
                  ("fwd", "fwdbwd"))


# ---- Mamba-1: mamba_ssm's selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, True)

@lrc.recurrence
def selective_scan(u: Seq("b d t"), delta: Seq("b d t"), A: Param("d n"), B: Seq("b n t"),
                   C: Seq("b n t"), D: Param("d"), z: Seq("b d t"), delta_bias: Param("d"),
                   h: State("b d n")):
    """The zoo's Mamba-1 in selective_scan_fn's arguments: A given, silu(z) gate."""
    dt = softplus(delta + delta_bias)
    h = exp(dt * A) * h + dt * B * u
    return ((C * h).sum("n") + D * u) * silu(z), h


def mamba1_inputs(s: Sizes, device: Any) -> Inputs:
    """selective_scan_fn's arguments: bf16 sequences, fp32 Params."""
    b, d, t, n = s["b"], s["d"], s["t"], s["n"]
    bf = torch.bfloat16
    return dict(u=torch.randn(b, d, t, device=device).to(bf),
                delta=(0.5 * torch.randn(b, d, t, device=device)).to(bf),
                A=-torch.rand(d, n, device=device) - 0.5,
                B=torch.randn(b, n, t, device=device).to(bf),
                C=torch.randn(b, n, t, device=device).to(bf),
                D=torch.randn(d, device=device),
                z=torch.randn(b, d, t, device=device).to(bf),
                delta_bias=torch.randn(d, device=device))


def mamba1_lrc(inp: Inputs, s: Sizes) -> Built:
    """lrc's scan of selective_scan."""
    return _lrc_built(selective_scan, inp, ("fwd", "fwdbwd"))


def mamba1_peer(inp: Inputs, s: Sizes) -> Built:
    """mamba_ssm's CUDA selective_scan_fn, delta_softplus=True."""
    _need_cuda(inp)
    _selective_scan_cuda()
    fn = _mamba_ssm("ops.selective_scan_interface").selective_scan_fn
    return _built("mamba_ssm selective_scan_fn (CUDA)",
                  lambda u, delta, A, B, C, D, z, delta_bias:
                  fn(u, delta, A, B, C, D, z, delta_bias, True), inp, ("fwd", "fwdbwd"))


# ---- Mamba-2 SSD: the zoo's mamba2 (ngroups 1), chunked

def mamba2_inputs(s: Sizes, device: Any) -> Inputs:
    """The zoo's mamba2 example (standard init), bf16."""
    return ZOO["mamba2"].example(b=s["b"], t=s["t"], g=1, r=s["h"], p=s["p"], n=s["n"],
                                 dtype=torch.bfloat16, device=device)


def mamba2_lrc(inp: Inputs, s: Sizes) -> Built:
    """lrc's chunked lowering of zoo mamba2."""
    return _lrc_built(ZOO["mamba2"].spec, inp, ("fwd", "fwdbwd"), lowering="chunked")


def _ssd_args(inp: Inputs) -> Inputs:
    """The zoo's arguments as the peers take them: dt = softplus(dt + dt_bias), A = -exp(A_log)."""
    dt = torch.nn.functional.softplus(inp["dt"].float() + inp["dt_bias"]).to(torch.bfloat16)
    return dict(x=inp["x"], dt=dt,
                A=-torch.exp(inp["A_log"].float()), B=inp["B"], C=inp["C"], D=inp["D"].float())


def mamba2_peer(inp: Inputs, s: Sizes) -> Built:
    """mamba_ssm's mamba_chunk_scan_combined (Triton), chunk 256."""
    _need_cuda(inp)
    fn = _mamba_ssm("ops.triton.ssd_combined").mamba_chunk_scan_combined
    return _built("mamba_ssm mamba_chunk_scan_combined",
                  lambda x, dt, A, B, C, D: fn(x, dt, A, B, C, chunk_size=256, D=D),
                  _ssd_args(inp), ("fwd", "fwdbwd"))


def mamba2_fla(inp: Inputs, s: Sizes) -> Built:
    """fla's chunk_simple_gla on the same recurrence: q = C, k = B, v = x dt, g = A dt; the
    D x skip term is added outside the timed call, for the cross-check only."""
    _need_cuda(inp)
    fn = _peer_module("fla.ops.simple_gla").chunk_simple_gla
    a = _ssd_args(inp)
    shape = a["x"].shape[:3] + (a["B"].shape[-1],)
    args = dict(q=a["C"].expand(shape).contiguous(), k=a["B"].expand(shape).contiguous(),
                v=a["x"] * a["dt"][..., None], g=a["dt"].float() * a["A"])
    skip = a["D"][:, None] * a["x"].float()
    # fla 0.6 refuses the backward on Hopper with Triton < 3.7.1 (fla #640): that mode then
    # reports the error and the forward still counts
    return _built("fla chunk_simple_gla",
                  lambda q, k, v, g: fn(q, k, v, g=g, scale=1.0)[0], args,
                  ("fwd", "fwdbwd"), canon=lambda o: o.float() + skip)


# ---- GLA: the zoo's gla (per-key decay, matrix state), chunked

def gla_inputs(s: Sizes, device: Any) -> Inputs:
    """The zoo's gla example (q scaled by k^-1/2, gk = logsigmoid / 16), bf16."""
    return ZOO["gla"].example(b=s["b"], t=s["t"], h=s["h"], k=s["k"], v=s["v"],
                              dtype=torch.bfloat16, device=device)


def gla_lrc(inp: Inputs, s: Sizes) -> Built:
    """lrc's chunked lowering of zoo gla."""
    return _lrc_built(ZOO["gla"].spec, inp, ("fwd", "fwdbwd"), lowering="chunked")


def gla_peer(inp: Inputs, s: Sizes) -> Built:
    """fla's chunk_gla, g in fp32, scale 1 (the zoo's q arrives scaled)."""
    _need_cuda(inp)
    fn = _peer_module("fla.ops.gla").chunk_gla
    args = dict(q=inp["q"], k=inp["k"], v=inp["v"], g=inp["gk"].float())
    return _built("fla chunk_gla", lambda q, k, v, g: fn(q, k, v, g, scale=1.0)[0], args,
                  ("fwd", "fwdbwd"))


# ---- the delta-rule family: lrc's dplr chunks against fla's hand-written chunk kernels

def delta_inputs(name: str) -> Callable[[Sizes, Any], Inputs]:
    """The zoo entry's example (standard init), bf16 sequences and fp32 Params."""
    def make(s: Sizes, device: Any) -> Inputs:
        args = ZOO[name].example(b=s["b"], t=s["t"], h=s["h"], k=s["k"], v=s["v"],
                                 device=device)
        return {k: (x.to(torch.bfloat16) if x.dim() >= 3 else x.float())
                for k, x in args.items()}
    return make


def delta_lrc(name: str) -> Callable[[Inputs, Sizes], Built]:
    """lrc's dplr lowering of zoo `name` (forced: dplr is not chosen automatically yet)."""
    return lambda inp, s: _lrc_built(ZOO[name].spec, inp, FB, lowering="dplr")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1).to(x.dtype)


def deltanet_peer(inp: Inputs, s: Sizes) -> Built:
    """fla's chunk_delta_rule: q, k L2-normalized in the kernel, beta = sigmoid(b), scale 1."""
    _need_cuda(inp)
    fn = _peer_module("fla.ops.delta_rule").chunk_delta_rule
    args = {k: inp[k] for k in ("q", "k", "v", "b")}
    return _built("fla chunk_delta_rule", lambda q, k, v, b: fn(
        q, k, v, torch.sigmoid(b.float()).to(v.dtype), scale=1.0,
        use_qk_l2norm_in_kernel=True)[0], args, FB)


def gated_deltanet_peer(inp: Inputs, s: Sizes) -> Built:
    """fla's chunk_gated_delta_rule with g = -exp(A_log) softplus(a + dt_bias) in fp32."""
    _need_cuda(inp)
    fn = _peer_module("fla.ops.gated_delta_rule").chunk_gated_delta_rule
    F = torch.nn.functional

    def call(q, k, v, a, b, A_log, dt_bias):
        g = -torch.exp(A_log) * F.softplus(a.float() + dt_bias)
        return fn(q, k, v, g, torch.sigmoid(b.float()).to(v.dtype), scale=1.0,
                  use_qk_l2norm_in_kernel=True)[0]
    return _built("fla chunk_gated_delta_rule", call, dict(inp), FB)


def kda_peer(inp: Inputs, s: Sizes) -> Built:
    """fla's chunk_kda with the per-key g = -exp(A_log) softplus(f + dt_bias) in fp32."""
    _need_cuda(inp)
    fn = _peer_module("fla.ops.kda").chunk_kda
    F = torch.nn.functional

    def call(q, k, v, f, b, A_log, dt_bias):
        g = -torch.exp(A_log)[:, None] * F.softplus(f.float() + dt_bias)
        return fn(q, k, v, g, torch.sigmoid(b.float()).to(v.dtype), scale=1.0,
                  use_qk_l2norm_in_kernel=True)[0]
    return _built("fla chunk_kda", call, dict(inp), FB)


def rwkv7_peer(inp: Inputs, s: Sizes) -> Built:
    """fla's chunk_rwkv7(r, w, k, v, a, b): w = log decay, a = -kk, b = kk sigmoid(a_raw)."""
    _need_cuda(inp)
    fn = _peer_module("fla.ops.rwkv7").chunk_rwkv7
    F = torch.nn.functional

    def call(r, w, k, v, kk, a):
        logw = -torch.exp(-F.softplus(-w.float()) - 0.5)
        kn = _unit(kk)
        return fn(r, logw, k, v, -kn, kn * torch.sigmoid(a), scale=1.0)[0]
    return _built("fla chunk_rwkv7", call, dict(inp), FB)


# ---- S4D: kernel from a diagonal complex SSM, causal FFT convolution (fp32)

def s4d_inputs(s: Sizes, device: Any) -> Inputs:
    """The eager peer's parametrization (S4D-Lin A, log dt in [-7, -3], C ~ N(0, 1) + i N(0, 1))."""
    d, n = s["d"], s["n"]
    return dict(u=torch.randn(s["b"], d, s["t"], device=device),
                logdt=torch.rand(d, device=device) * 4 - 7,
                Are=-0.5 * torch.ones(d, n, device=device),
                Aim=(math.pi * torch.arange(n, device=device).float().expand(d, n)).contiguous(),
                Cre=torch.randn(d, n, device=device), Cim=torch.randn(d, n, device=device))


def s4d_eager(u, logdt, Are, Aim, Cre, Cim):
    """The peer: the S4 repository's eager path (Vandermonde materialized, then FFT)."""
    L = u.shape[-1]
    A = torch.complex(Are, Aim)
    dtA = A * logdt.exp()[:, None]
    C = torch.complex(Cre, Cim) * (dtA.exp() - 1) / A
    ar = torch.arange(L, device=u.device, dtype=Are.dtype)
    K = 2 * torch.einsum("dn,dnl->dl", C, torch.exp(dtA[..., None] * ar)).real
    kf = torch.fft.rfft(K, n=2 * L)
    uf = torch.fft.rfft(u, n=2 * L)
    return torch.fft.irfft(uf * kf, n=2 * L)[..., :L]


def s4d_lrc(inp: Inputs, s: Sizes) -> Built:
    """lrc's conv lowering of zoo s4d_zoh on the same math: -exp(log_A_real) = Are, B = 1,
    D = 0."""
    C = torch.complex(inp["Cre"], inp["Cim"])
    args = {"u": inp["u"], "log_dt": inp["logdt"], "log_A_real": torch.log(-inp["Are"]),
            "A_imag": inp["Aim"], "B": torch.ones_like(C), "C": C,
            "D": torch.zeros_like(inp["logdt"])}
    return _lrc_built(ZOO["s4d_zoh"].spec, args, ("fwd", "fwdbwd"), lowering="conv")


def s4d_peer(inp: Inputs, s: Sizes) -> Built:
    """PyTorch eager Vandermonde + FFT (runs on the CPU too)."""
    return _built("torch eager Vandermonde + FFT", s4d_eager, inp, ("fwd", "fwdbwd"))


# ---- decode: one token, the state updated in place, CUDA-graph replay

@lrc.recurrence
def decode_hpn(x: Seq("b t h p"), dt: Seq("b t h p"), A: Param("h p n"), B: Seq("b t n"),
               C: Seq("b t n"), D: Param("h p"), dt_bias: Param("h p"), s: State("b h p n")):
    """selective_state_update's recurrence with a per-(h, p, n) A."""
    d = softplus(dt + dt_bias)
    s = exp(d * A) * s + d * B * x
    return (C * s).sum("n") + D * x, s


def decode_inputs(s: Sizes, device: Any) -> Inputs:
    """One token of decode_hpn (bf16) and an fp32 state."""
    b, h, p, n = s["b"], s["h"], s["p"], s["n"]
    bf = torch.bfloat16
    return dict(x=torch.randn(b, h, p, device=device).to(bf),
                dt=torch.rand(b, h, p, device=device).to(bf),
                A=-torch.rand(h, p, n, device=device),
                B=torch.randn(b, n, device=device).to(bf),
                C=torch.randn(b, n, device=device).to(bf),
                D=torch.randn(h, p, device=device), dt_bias=torch.randn(h, p, device=device),
                state=torch.randn(b, h, p, n, device=device))


def _lrc_step(spec: lrc.Spec, inp: Inputs) -> Built:
    """lrc's `layer.step(..., inplace=True)` on the token in `inp` (its 'state' aside)."""
    kw = {k: v for k, v in inp.items() if k != "state"}
    layer = lrc.compile(spec, backend="triton")
    t0 = time.perf_counter()
    built = _step_built("lrc layer.step", lambda st: layer.step(**kw, state=st, inplace=True)[0],
                        inp["state"])
    built.extra["first_call_s"] = round(time.perf_counter() - t0, 2)
    ref = lrc.compile(spec, backend="reference")
    built.reference = lambda: ref.step(**{k: wide(v) for k, v in kw.items()},
                                       state=wide(inp["state"]))
    return built


def decode_lrc(inp: Inputs, s: Sizes) -> Built:
    """lrc's step of decode_hpn."""
    return _lrc_step(decode_hpn, inp)


def decode_peer(inp: Inputs, s: Sizes) -> Built:
    """mamba_ssm's selective_state_update (Triton), dt_softplus, in a CUDA graph."""
    _need_cuda(inp)
    ssu = _mamba_ssm("ops.triton.selective_state_update").selective_state_update
    i = inp
    return _step_built("mamba_ssm selective_state_update",
                       lambda st: ssu(st, i["x"], i["dt"], i["A"], i["B"][:, None],
                                      i["C"][:, None], i["D"], None, i["dt_bias"],
                                      dt_softplus=True), inp["state"])


def decode1_inputs(s: Sizes, device: Any) -> Inputs:
    """One token of the zoo's mamba1 (bf16, standard init) and an fp32 state (B, D, N)."""
    b, d, n = s["b"], s["d"], s["n"]
    args = ZOO["mamba1"].example(b=b, t=1, d=d, n=n, dtype=torch.bfloat16, device=device)
    tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
    return {**tok, "state": torch.randn(b, d, n, device=device)}


def decode1_lrc(inp: Inputs, s: Sizes) -> Built:
    """lrc's step of zoo mamba1."""
    return _lrc_step(ZOO["mamba1"].spec, inp)


def decode1_peer(inp: Inputs, s: Sizes) -> Built:
    """selective_state_update on the same token: A = -exp(A_log), no gate."""
    _need_cuda(inp)
    ssu = _mamba_ssm("ops.triton.selective_state_update").selective_state_update
    i = inp
    A, D, db = -torch.exp(i["A_log"].float()), i["D"].float(), i["dt_bias"].float()
    return _step_built("mamba_ssm selective_state_update",
                       lambda st: ssu(st, i["u"], i["dt"], A, i["B"], i["C"], D, None, db,
                                      dt_softplus=True), inp["state"])


# ---- the registry

FB = ("fwd", "fwdbwd")

ROWS: dict[str, Row] = {r.name: r for r in [
    Row("elementwise", "elementwise scan B{b} T{t} D{d} bf16",
        dict(b=8, t=4096, d=2048), dict(b=1, t=64, d=16), FB, elementwise_inputs,
        (Impl("lrc", "lrc", elementwise_lrc),
         Impl("accelerated-scan", "peer", elementwise_accel))),
    Row("mamba1", "Mamba-1 B{b} D{d} L{t} N{n} bf16",
        dict(b=8, d=2048, t=4096, n=16), dict(b=1, d=16, t=64, n=4), FB, mamba1_inputs,
        (Impl("lrc", "lrc", mamba1_lrc), Impl("mamba_ssm", "peer", mamba1_peer))),
    Row("mamba2", "Mamba-2 B{b} L{t} H{h} P{p} N{n} bf16",
        dict(b=8, t=4096, h=32, p=64, n=128), dict(b=1, t=64, h=2, p=16, n=16), FB,
        mamba2_inputs,
        (Impl("lrc", "lrc", mamba2_lrc), Impl("mamba_ssm", "peer", mamba2_peer),
         Impl("fla", "peer", mamba2_fla))),
    Row("gla", "GLA B{b} T{t} H{h} K{k} V{v} bf16",
        dict(b=8, t=4096, h=16, k=128, v=128), dict(b=1, t=64, h=2, k=16, v=16), FB,
        gla_inputs, (Impl("lrc", "lrc", gla_lrc), Impl("fla", "peer", gla_peer))),
    Row("s4d", "S4D conv B{b} D{d} L{t} N{n} fp32",
        dict(b=8, d=2048, t=4096, n=32), dict(b=1, d=8, t=64, n=4), FB, s4d_inputs,
        (Impl("lrc", "lrc", s4d_lrc), Impl("torch", "peer", s4d_peer, cpu=True))),
    *(Row(name, title + " B{b} T{t} H{h} K{k} V{v} bf16",
          dict(b=8, t=4096, h=16, k=128, v=128), dict(b=1, t=32, h=2, k=16, v=16), FB,
          delta_inputs(name), (Impl("lrc", "lrc", delta_lrc(name)),
                               Impl("fla", "peer", peer)))
      for name, title, peer in (("deltanet", "DeltaNet", deltanet_peer),
                                ("gated_deltanet", "Gated DeltaNet", gated_deltanet_peer),
                                ("kda", "KDA", kda_peer), ("rwkv7", "RWKV-7", rwkv7_peer))),
    Row("decode", "decode step B{b} H{h} P{p} N{n} fp32 state",
        dict(b=64, h=80, p=64, n=128), dict(b=2, h=2, p=8, n=16), ("step",), decode_inputs,
        (Impl("lrc", "lrc", decode_lrc), Impl("mamba_ssm", "peer", decode_peer))),
    Row("decode_mamba1", "decode step B{b} D{d} N{n} fp32 state",
        dict(b=64, d=4096, n=16), dict(b=2, d=16, n=16), ("step",), decode1_inputs,
        (Impl("lrc", "lrc", decode1_lrc), Impl("mamba_ssm", "peer", decode1_peer))),
]}
