"""The generated scan kernels against the float64 reference: forward, every gradient, final and
initial state, reverse, cu_seqlens, decode after prefill, bf16 inputs.

Under Triton's interpreter at small odd sizes here; the `gpu` tests repeat them compiled for the
GPU at real sizes (run on the GPU machine).
"""
from __future__ import annotations

import math

import pytest
import torch

import lrc
from lrc import Seq, State
from lrc.kernels import launch as kernel_launch
from lrc.kernels import tune as policy
from lrc.lowering.scan import autograd as scan_autograd
from lrc.lowering.scan import replay as scan_replay
from lrc.lowering.scan import tune as scan_tune_policy
from lrc.zoo import ZOO
from tests.conftest import rel_err

# the zoo systems whose transitions are diagonal: the scan kernels run them all
SCAN_ZOO = ["mamba1", "mamba2", "s4d_zoh", "s4d_bilinear", "lru", "rglru", "rwkv6", "gla",
            "retnet"]
FWD, GRAD, BF16 = 1e-4, 1e-3, 1e-2


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def layers(name: str):
    spec = ZOO[name].spec
    return (lrc.compile(spec, backend="triton", lowering="scan"),
            lrc.compile(spec, backend="reference"))


def loss_of(outs, finals, gys, ghs):
    total = sum((o.float() * g).sum() for o, g in zip(outs, gys))
    for f, g in zip(finals, ghs):
        total = total + ((f * g).real.sum() if f.is_complex() else (f * g).sum())
    return total


def check(name: str, b: int, t: int, device: str = "cpu", dtype=torch.float32, tol=FWD,
          gtol=GRAD, reverse: bool = False, with_state: bool = True, **dims):
    """Forward, final state and every gradient (inputs and initial state) vs the reference."""
    entry = ZOO[name]
    kern, ref = layers(name)
    args = entry.example(b=b, t=t, dtype=torch.float64, device=device, **dims)
    state = entry.initial_state(b=b, dtype=torch.float64, device=device, **dims) \
        if with_state else None
    ours = {k: v.to(dtype if not v.is_complex() else torch.complex64).requires_grad_(True)
            for k, v in args.items()}
    # the reference gets the very values ours got (rounded to `dtype`), widened: the error
    # measured is the kernels', not bf16's rounding of the inputs (which alone moved
    # Mamba-1's final state by 1.01e-2 at T = 4097 for one seed)
    theirs = {k: v.detach().to(a.dtype).clone().requires_grad_(True)
              for (k, v), a in zip(ours.items(), args.values(), strict=True)}
    s_ours = s_ref = None
    if state is not None:
        st = as_tuple(state)
        s_ours = tuple(x.to(torch.float32 if not x.is_complex() else torch.complex64)
                       .requires_grad_(True) for x in st)
        s_ref = tuple(x.detach().clone().requires_grad_(True) for x in st)
    y, h = kern(**ours, initial_state=s_ours, return_final_state=True, reverse=reverse)
    y2, h2 = ref(**theirs, initial_state=s_ref, return_final_state=True, reverse=reverse)
    outs, outs2, fins, fins2 = as_tuple(y), as_tuple(y2), as_tuple(h), as_tuple(h2)
    for a, e in zip(outs + fins, outs2 + fins2):
        assert torch.isfinite(torch.view_as_real(a) if a.is_complex() else a.float()).all()
        assert rel_err(a, e) <= tol, f"{name}: forward {rel_err(a, e):.2e}"
    gys = [torch.randn_like(o, dtype=torch.float64) for o in outs2]
    ghs = [torch.randn_like(f) for f in fins2]
    leaves = list(ours.values()) + list(s_ours or ())
    leaves2 = list(theirs.values()) + list(s_ref or ())
    g1 = torch.autograd.grad(loss_of(outs, fins, [g.to(o.dtype) for g, o in zip(gys, outs)],
                                     [g.to(f.dtype) for g, f in zip(ghs, fins)]), leaves)
    g2 = torch.autograd.grad(loss_of(outs2, fins2, gys, ghs), leaves2)
    names = list(ours) + [f"initial_state[{i}]" for i in range(len(s_ours or ()))]
    for nm, a, e in zip(names, g1, g2):
        assert rel_err(a, e) <= gtol, f"{name}: grad of {nm} {rel_err(a, e):.2e}"


@pytest.mark.parametrize("name", SCAN_ZOO)
def test_forward_and_gradients(name):
    check(name, b=2, t=37)


@pytest.mark.parametrize("name", ["mamba1", "lru", "gla"])
def test_reverse(name):
    check(name, b=1, t=21, reverse=True)


@pytest.mark.parametrize("name", ["rglru", "s4d_zoh"])
def test_without_initial_state(name):
    check(name, b=2, t=19, with_state=False)


@pytest.mark.parametrize("name", ["mamba1", "rglru"])
def test_bf16_inputs(name):
    check(name, b=2, t=33, dtype=torch.bfloat16, tol=BF16, gtol=BF16 * 3)


@pytest.mark.parametrize("name", ["mamba1", "lru", "rwkv6"])
def test_step_after_prefill(name):
    """Prefill T tokens with the forward kernel, then decode k with the step kernel: the same
    outputs as the forward over T + k."""
    entry = ZOO[name]
    kern, _ = layers(name)
    args = entry.example(b=2, t=23, dtype=torch.float32)
    spec = entry.spec
    time = spec.graph.time
    seq = {n.arg: [a for a in n.annotation.axes].index((time,)) for n in
           spec.graph.inputs(lrc.ir.Role.SEQ)}
    y_all = as_tuple(kern(**args))
    pre = {k: (v.narrow(seq[k], 0, 20) if k in seq else v) for k, v in args.items()}
    _, state = kern(**pre, return_final_state=True)
    for i in range(20, 23):
        tok = {k: (v.select(seq[k], i) if k in seq else v) for k, v in args.items()}
        y_i, state = kern.step(**tok, state=state)
        for a, full in zip(as_tuple(y_i), y_all):
            oax = [a_ for a_ in spec.graph.out_axes[0]].index((time,))
            assert rel_err(a, full.select(oax, i)) <= FWD


def wide(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def step_check(name: str, dtype: torch.dtype, device: str, b: int) -> None:
    """Three in-place steps from a random state: outputs and new states against the float64
    reference's steps on the same (rounded) inputs."""
    entry = ZOO[name]
    kern, ref = layers(name)
    t = entry.spec.graph.time
    seq = {n.arg: list(n.annotation.axes).index((t,)) for n in
           entry.spec.graph.inputs(lrc.ir.Role.SEQ)}
    args = {k: v.to(dtype) if v.is_floating_point() else v
            for k, v in entry.example(b=b, t=3, dtype=torch.float32, device=device).items()}
    state = tuple(torch.randn_like(x) for x in
                  as_tuple(entry.initial_state(b=b, dtype=torch.float32, device=device)))
    want = tuple(wide(x) for x in state)
    tol = BF16 if dtype == torch.bfloat16 else FWD
    one = lambda xs: xs if len(xs) > 1 else xs[0]
    for i in range(3):
        tok = {k: (v.select(seq[k], i) if k in seq else v) for k, v in args.items()}
        y, _ = kern.step(**tok, state=one(state), inplace=True)
        y2, want = ref.step(**{k: wide(v) for k, v in tok.items()}, state=one(want))
        want = as_tuple(want)
        for a, e in zip(as_tuple(y), as_tuple(y2), strict=True):
            assert rel_err(a, e) <= tol
    for a, e in zip(state, want, strict=True):
        assert rel_err(a, e) <= tol


@pytest.mark.parametrize("name", ["mamba1", "lru", "gla"])
def test_step_from_random_state(name):
    step_check(name, torch.float32, "cpu", b=3)


def test_step_in_place():
    entry = ZOO["mamba1"]
    kern, ref = layers("mamba1")
    args = entry.example(b=2, t=1, dtype=torch.float32)
    tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
    state = entry.initial_state(b=2, dtype=torch.float32)
    s = state.clone()
    y, new = kern.step(**tok, state=s, inplace=True)
    y2, new2 = ref.step(**tok, state=state)
    assert new is s
    assert rel_err(s, new2) <= FWD and rel_err(y, y2) <= FWD


def test_cu_seqlens():
    """Packed sequences: each runs from its own initial state, like separate calls."""
    entry = ZOO["rglru"]
    kern, ref = layers("rglru")
    args = entry.example(b=1, t=29, dtype=torch.float32)
    cu = torch.tensor([0, 7, 8, 29])
    state = torch.randn(3, entry.sizes["d"])
    y, h = kern(**args, cu_seqlens=cu, initial_state=state, return_final_state=True)
    y2, h2 = ref(**args, cu_seqlens=cu, initial_state=state, return_final_state=True)
    assert rel_err(y, y2) <= FWD and rel_err(h, h2) <= FWD


@pytest.mark.parametrize("name", ["rglru", "mamba1", "lru", "gla"])
@pytest.mark.parametrize("reverse", [False, True])
def test_cu_seqlens_in_one_launch(knobs, name, reverse, monkeypatch):
    """Packed sequences (lengths 7, 1, 21; 4-step chunks) in one launch per direction, each
    program its own sequence: outputs, final states and every gradient (inputs and initial
    states) as the reference computes them sequence by sequence."""
    from lrc.lowering.scan import launch as scan_runtime

    knobs(scan_chunk=4)
    launches = []
    launch = scan_runtime.Launch.__call__

    def spy(self, **consts):
        launches.append((self.which, self.cu is not None, self.sizes[self.prog.batch]))
        return launch(self, **consts)

    monkeypatch.setattr(scan_runtime.Launch, "__call__", spy)
    entry = ZOO[name]
    kern, ref = layers(name)
    assert kern.program.varlen
    cu = torch.tensor([0, 7, 8, 29])
    args = entry.example(b=1, t=29, dtype=torch.float64)
    state = as_tuple(entry.initial_state(b=3, dtype=torch.float64))
    ours = {k: v.float().requires_grad_(True) if not v.is_complex() else
            v.to(torch.complex64).requires_grad_(True) for k, v in args.items()}
    # the reference gets the very values ours got (rounded to `dtype`), widened: the error
    # measured is the kernels', not bf16's rounding of the inputs (which alone moved
    # Mamba-1's final state by 1.01e-2 at T = 4097 for one seed)
    theirs = {k: v.detach().to(a.dtype).clone().requires_grad_(True)
              for (k, v), a in zip(ours.items(), args.values(), strict=True)}
    s_ours = tuple((x.float() if not x.is_complex() else x.to(torch.complex64))
                   .requires_grad_(True) for x in state)
    s_ref = tuple(x.detach().clone().requires_grad_(True) for x in state)
    y, h = kern(**ours, initial_state=s_ours, cu_seqlens=cu, reverse=reverse,
                return_final_state=True)
    y2, h2 = ref(**theirs, initial_state=s_ref, cu_seqlens=cu, reverse=reverse,
                 return_final_state=True)
    outs, outs2, fins, fins2 = as_tuple(y), as_tuple(y2), as_tuple(h), as_tuple(h2)
    for a, e in zip(outs + fins, outs2 + fins2):
        assert rel_err(a, e) <= FWD
    gys = [torch.randn_like(o2.real if o2.is_complex() else o2) for o2 in outs2]
    ghs = [torch.randn_like(f2) for f2 in fins2]
    leaves = list(ours.values()) + list(s_ours)
    leaves2 = list(theirs.values()) + list(s_ref)
    g1 = torch.autograd.grad(loss_of(outs, fins, [g.float() for g in gys],
                                     [g.to(f.dtype) for g, f in zip(ghs, fins)]), leaves,
                             allow_unused=True)
    g2 = torch.autograd.grad(loss_of(outs2, fins2, gys, ghs), leaves2, allow_unused=True)
    for a, e in zip(g1, g2):
        assert (a is None) == (e is None)
        if e is not None:
            assert rel_err(a, e) <= GRAD
    assert launches == [("forward", True, 3), ("backward", True, 3)]


def test_source_is_what_runs():
    kern, _ = layers("mamba1")
    for which in ("forward", "backward", "step"):
        src = kern.source(which)
        assert src in kern.source("module")
        assert "@triton.jit" in src and "tl.associative_scan" in src or which == "step"
    assert "# h'" in kern.source("forward")  # lines name the IR node they implement


# ---- the same on the GPU, at real sizes


@pytest.mark.gpu
@pytest.mark.parametrize("name", SCAN_ZOO)
def test_gpu_forward_and_gradients(name):
    check(name, b=2, t=2049, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba1", "rglru", "gla"])
def test_gpu_long(name):
    check(name, b=1, t=16384, device="cuda", reverse=False)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba1", "rglru", "lru"])
def test_gpu_tuned_configs(knobs, name, monkeypatch):
    """The configs the tuner picks at real sizes (whatever LRC_TUNE says for the rest of the
    GPU tests, which compile faster without it)."""

    knobs(tune=True)
    check(name, b=2, t=4099, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba1", "rglru", "gla"])
def test_gpu_cu_seqlens(name, monkeypatch):
    """Packed sequences in one launch at real lengths (one empty, one of one step)."""
    entry = ZOO[name]
    kern, ref = layers(name)
    cu = torch.tensor([0, 0, 1, 2049, 5000], device="cuda")
    args = entry.example(b=1, t=5000, dtype=torch.float64, device="cuda")
    state = as_tuple(entry.initial_state(b=4, dtype=torch.float64, device="cuda"))
    y, h = kern(**{k: v.float() for k, v in args.items()}, cu_seqlens=cu,
                initial_state=tuple(x.float() for x in state), return_final_state=True)
    y2, h2 = ref(**args, cu_seqlens=cu, initial_state=state, return_final_state=True)
    for a, e in zip(as_tuple(y) + as_tuple(h), as_tuple(y2) + as_tuple(h2)):
        assert rel_err(a, e) <= FWD


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba1", "lru", "rwkv6", "gla", "mamba2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_step(name, dtype):
    """The decode step compiled, its inputs held back until the state arrives (ORDER on,
    which the interpreter never runs)."""
    step_check(name, dtype, "cuda", b=64)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba1", "mamba2"])
def test_gpu_step_order_choice(name, monkeypatch):
    """The first step of a shape compiles both load orders (scan_tune_policy.step_order) on
    scratch outputs: the caller's state still advances once per step, and the choice is
    kept. Mamba-1's step at B64 D4096 N16 takes the states-first order (69 registers
    either way on the H200)."""

    monkeypatch.setattr(policy, "_CACHE", {})
    step_check(name, torch.float32, "cuda", b=64)
    assert [k for k in policy._CACHE if k[1] == "step"]
    if name == "mamba1":
        e = ZOO[name]
        kern = lrc.compile(e.spec, backend="triton")
        args = e.example(b=64, t=1, d=4096, n=16, dtype=torch.bfloat16, device="cuda")
        tok = {k: (v[..., 0] if v.dim() == 3 else v) for k, v in args.items()}
        kern.step(**tok, state=torch.randn(64, 4096, 16, device="cuda"), inplace=True)
        chosen = [v for k, v in policy._CACHE.items()
                  if k[1] == "step" and dict(k[2]).get("d") == 4096]
        assert chosen and chosen[0].order


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba1", "rglru"])
def test_gpu_bf16(name):
    check(name, b=2, t=4097, device="cuda", dtype=torch.bfloat16, tol=BF16, gtol=BF16 * 3)


@pytest.mark.parametrize("name", ["mamba1", "gla"])
def test_split_blocks(knobs, name, monkeypatch):
    """A small register budget splits dims over several programs: partial sums of gradients
    across programs are added with atomics, and loads and stores stay masked right."""

    knobs(scan_budget=64)
    knobs(scan_chunk=4)
    check(name, b=2, t=11)


def test_state_broadcast_along_a_grid_dim():
    """A state without `d` read by an output with `d`: its gradient sums over `d`, so `d` sits
    whole in one program (a split carry would drop the other programs' shares)."""

    @lrc.recurrence
    def spec(x: Seq("b d t"), h1: State("d b n"), h0: State("n b"), u: Seq("n b t"),
             w: Seq("t b")):
        v = 0.5 * h0 + u
        g = 0.7 * h1 + u * w
        return (g, v * x), (g, v)

    torch.manual_seed(3)
    b, d, n, t = 2, 3, 5, 9
    x, u, w = torch.randn(b, d, t), torch.randn(n, b, t), torch.randn(t, b)
    leaves = [a.clone().requires_grad_(True) for a in (x, u, w)]
    y0, y1 = lrc.compile(spec, backend="triton")(*leaves)

    def loop(x, u, w):  # the recurrence written out; outputs laid out (b d t n)
        h1, h0, ys0, ys1 = torch.zeros(d, b, n).double(), torch.zeros(n, b).double(), [], []
        for i in range(t):
            h0 = 0.5 * h0 + u[..., i]
            h1 = 0.7 * h1 + (u[..., i] * w[i]).T[None]
            ys0.append(h1.transpose(0, 1))
            ys1.append(h0.T[:, None, :] * x[..., i, None])
        return torch.stack(ys0, 2), torch.stack(ys1, 2)

    theirs = [a.double().clone().requires_grad_(True) for a in (x, u, w)]
    e0, e1 = loop(*theirs)
    assert rel_err(y0, e0) <= FWD and rel_err(y1, e1) <= FWD
    gy0, gy1 = torch.randn_like(y0), torch.randn_like(y1)
    g1 = torch.autograd.grad((y0 * gy0).sum() + (y1 * gy1).sum(), leaves)
    g2 = torch.autograd.grad((e0 * gy0).sum() + (e1 * gy1).sum(), theirs)
    for a, e in zip(g1, g2):
        assert rel_err(a, e) <= GRAD


@pytest.mark.parametrize("name", ["mamba1", "lru", "rglru", "s4d_zoh", "gla"])
@pytest.mark.parametrize("reverse", [False, True])
def test_two_level_scan(knobs, name, reverse, monkeypatch):
    """Time cut into segments (scanned from zero, summarized, joined, scanned again from the
    joined state): the same outputs, final states and gradients, either direction."""
    from lrc.lowering.scan import launch as scan_runtime

    knobs(scan_chunk=4)
    knobs(scan_segments=3)
    launches = []
    launch = scan_runtime.Launch.__call__

    def spy(self, **consts):
        launches.append((self.which, self.n_seg, consts.get("SUMMARY")))
        return launch(self, **consts)

    monkeypatch.setattr(scan_runtime.Launch, "__call__", spy)
    check(name, b=2, t=29, reverse=reverse)
    for which in ("forward", "backward"):
        assert (which, 3, True) in launches and (which, 3, False) in launches



def _tuner_rows(name):
    from lrc.lowering.scan import configs as scan_tune

    return {"mamba1": scan_tune.WHOLE_DIM + scan_tune.WHOLE_DIM_BACKWARD,
            "rglru": scan_tune.CHANNELS_INNER,
            "lru": scan_tune.TIME_INNER}[name]


@pytest.mark.parametrize("name", ["mamba1", "rglru", "lru"])
def test_every_tuner_candidate(name, monkeypatch):
    """Each launch config the GPU tuner may pick (chunk, block, warps, stages) computes the
    same thing: forced here one by one (each list on one spec; the layout only matters for
    speed), forward and every gradient, chunks longer and shorter than the sequence."""
    from lrc.lowering.scan import launch as scan_runtime
    from lrc.lowering.scan.configs import ScanConfig

    seen = []
    launch = scan_runtime.Launch.__call__

    def spy(self, **consts):
        seen.append((self.which, self.tc, [self.blocks[d] for d in self.prog.tiling.split]))
        return launch(self, **consts)

    monkeypatch.setattr(scan_runtime.Launch, "__call__", spy)
    for row in _tuner_rows(name):
        cfg = ScanConfig(*row)
        cfg = ScanConfig(min(cfg.tc, 64), cfg.block, cfg.warps, cfg.stages)  # interpreter time
        seen.clear()
        with lrc.config.override(scan_config=cfg):
            check(name, b=2, t=37, with_state=False)
        assert {(w, tc) for w, tc, _ in seen} == {("forward", cfg.tc), ("backward", cfg.tc)}
        assert all(b <= cfg.block for _, _, split in seen for b in split)


def test_tuner_candidates_follow_the_layout():
    """Time contiguous gets long chunks, channels contiguous short ones, a whole state dim
    (Mamba's n) its own set; a backward keeps the forward's chunk."""
    from lrc.lowering.scan import configs as scan_tune

    inner = scan_tune.candidates(True, 1)
    outer = scan_tune.candidates(False, 1)
    whole = scan_tune.candidates(True, 16)
    assert max(c.tc for c in inner) > max(c.tc for c in outer)
    assert {c.tc for c in scan_tune.candidates(False, 1, tc=48)} == {48}
    assert whole != inner and all(c.block * 16 * c.tc <= 4096 for c in whole)
    # the backward of a whole-dim state may take wide blocks (fewer atomic dB, dC adds)
    assert max(c.block for c in scan_tune.candidates(True, 16, tc=64)) >= 32


def test_tuned_configs_persist(tmp_path, monkeypatch):
    """A config tuned in one process is found on disk by the next (same key, same device), and
    not for another device or shape."""
    from lrc.lowering.scan import configs as scan_tune

    monkeypatch.setenv("LRC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(policy, "_CACHE", {})
    key = ("kernel source", "forward", (("b", 8), ("d", 2048)), 4096, None, False, ())
    cfg = scan_tune.ScanConfig(32, 32, 1, 3)
    assert scan_tune.remembered(key, "NVIDIA H200") is None
    scan_tune.remember(key, "NVIDIA H200", cfg)
    policy._CACHE.clear()
    assert scan_tune.remembered(key, "NVIDIA H200") == cfg
    assert scan_tune.chosen(key) == cfg
    assert scan_tune.remembered(key, "NVIDIA A100") is None
    assert scan_tune.remembered(key[:3] + (4097,) + key[4:], "NVIDIA H200") is None


def test_params_only_terms_in_float64():
    """log(p + 0.5) at p = 0.5 + 1e-4: a term of Params alone inside the state update is
    computed once in float64 (split out of the kernel's node), not in float32 in the kernel,
    where log near 1 keeps three digits."""

    @lrc.recurrence
    def spec(h: State("b d"), x: Seq("b t d"), p: lrc.Param("d")):
        return h, 0.5 * h + lrc.log(p + 0.5) * (1.0 + 0.0 * x)

    p = torch.full((3,), 0.5) + torch.tensor([1e-4, 2e-4, 3e-4])
    x, h0 = torch.randn(2, 5, 3), torch.zeros(2, 3)
    _, hT = lrc.compile(spec, backend="triton", lowering="scan")(
        x, p, initial_state=h0, return_final_state=True)
    _, want = lrc.compile(spec, backend="reference")(
        x.double(), p.double(), initial_state=h0.double(), return_final_state=True)
    assert rel_err(hT, want) <= 1e-6


def test_params_only_node_constant_along_a_dim():
    """A node of Params alone whose value does not vary along one of its dims (the term with
    that dim cancels: p * 0 + q): computed by PyTorch, it is broadcast to its dims before the
    kernel reads it (it once reached the kernel with one element for two)."""

    @lrc.recurrence
    def spec(h: State("b n d"), x: Seq("b t d"), p: lrc.Param("n"), q: lrc.Param("d")):
        g = lrc.tanh(p * 0.0 + q) * 0.5
        return h.sum("n"), g * h + x

    p, q = torch.randn(2), torch.randn(3)
    x, h0 = torch.randn(2, 5, 3), torch.randn(2, 2, 3)
    y, hT = lrc.compile(spec, backend="triton", lowering="scan")(
        x, p, q, initial_state=h0, return_final_state=True)
    y2, want = lrc.compile(spec, backend="reference")(
        x.double(), p.double(), q.double(), initial_state=h0.double(), return_final_state=True)
    assert rel_err(y, y2) <= FWD and rel_err(hT, want) <= FWD


def _fake_tuner(knobs, monkeypatch, cache_dir) -> list:
    """The tuner's GPU path with the GPU faked: `choose` records each list of candidates it is
    given (returned) and takes the first; tuned configs go to `cache_dir` on disk."""

    monkeypatch.setenv("LRC_CACHE_DIR", str(cache_dir))
    monkeypatch.setattr(policy, "_CACHE", {})
    knobs(tune=True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "fake GPU")
    timed = []

    def choose(key, configs, run):
        timed.append(configs)
        policy._CACHE[key] = configs[0]
        return configs[0]

    monkeypatch.setattr(policy, "choose", choose)
    return timed


def test_tuner_picks_candidates_by_layout(knobs, tmp_path, monkeypatch):
    """What the GPU path of the tuner does, with the GPU faked: the candidate set follows the
    layout of the first Seq input (time contiguous or channels contiguous) and the state's
    whole dims; the backward keeps the forward's chunk (Mamba-1's backward_n a multiple of
    it); a tuned shape is timed once, then found in memory, then on disk by a new
    process."""
    from lrc.lowering.scan import configs as scan_tune

    timed = _fake_tuner(knobs, monkeypatch, tmp_path)

    @lrc.recurrence
    def diag(x: Seq("b t d"), a: Seq("b t d"), h: State("b d")):
        h = a * h + x
        return h, h

    def config(spec, which, args, tc=None):
        prog = lrc.compile(spec, backend="triton").program
        names = [n.name for n in prog.kernel.inputs() if n.role.value in ("Seq", "Param")]
        ins = [args[prog.g[n].arg] if hasattr(prog.g[n], "arg") else torch.ones(1)
               for n in names]  # a pre node's value: only its dtype and strides count here
        from lrc.runtime.call import make_call

        info = dict(sizes=make_call(prog.g, (), args).sizes, T=40, inputs=names,
                    device=torch.device("cuda"), reverse=False)
        return scan_tune_policy.config_for(prog, which, info, ins, None, tc)

    x = torch.randn(2, 40, 3)
    first = config(diag, "forward", dict(x=x, a=x))
    assert timed[-1] == scan_tune.candidates(False, 1) and first == timed[-1][0]
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # the same shape, time contiguous
    config(diag, "forward", dict(x=xt, a=xt))
    assert timed[-1] == scan_tune.candidates(True, 1)
    m1 = ZOO["mamba1"]
    args = m1.example(b=2, t=40, dtype=torch.float32, n=16)
    back = config(m1.spec, "backward", args, tc=16)  # backward_n first, at its own chunk
    assert timed[-1] == (scan_tune.candidates_unrolled_backward(16)
                         + scan_tune.candidates(True, 16, tc=16)[:1])
    assert back.unroll and back.tc == scan_tune.BACKWARD_TC
    n = len(timed)
    assert config(m1.spec, "backward", args, tc=16) == back and len(timed) == n  # memory
    policy._CACHE.clear()
    assert config(m1.spec, "backward", args, tc=16) == back and len(timed) == n  # disk


def test_row_training_forward_leaves_the_backward_its_chunks(knobs, monkeypatch, tmp_path):
    """One row of time per program (time contiguous, an elementwise state): a training
    forward tries only chunks that every backward candidate's chunk is a multiple of (the
    backward reads every k-th checkpoint); a forward without gradients tries them all, and
    tunes apart."""
    from lrc.lowering.scan import configs as scan_tune

    timed = _fake_tuner(knobs, monkeypatch, tmp_path)

    @lrc.recurrence
    def row(x: Seq("b d t"), a: Seq("b d t"), h: State("b d")):
        h = a * h + x
        return h, h

    prog = lrc.compile(row, backend="triton").program
    assert not prog.tiling.tile
    x = torch.randn(2, 3, 40)
    names = [n.name for n in prog.kernel.inputs()]
    for infer in (False, True):
        info = dict(sizes={"b": 2, "d": 3}, T=40, inputs=names, device=torch.device("cuda"),
                    reverse=False, infer=infer)
        cfg = scan_tune_policy.config_for(prog, "forward", info, [x, x], None)
        assert cfg == timed[-1][0]
    training, inference = timed
    assert inference == scan_tune.candidates(True, 1, None, True)
    assert training and set(training) < set(inference)
    for c in training:  # every backward candidate's chunk is a multiple of the forward's
        assert all(r[0] % c.tc == 0 for r in scan_tune.ROW_BACKWARD)
    back = scan_tune.candidates(True, 1, training[0].tc, True)
    assert {b.tc for b in back} >= {r[0] for r in scan_tune.ROW_BACKWARD}


@lrc.recurrence
def _gated(x: Seq("b t d"), a: Seq("b t d"), h: State("b d")):
    h = a * h + x
    return h, h


@pytest.mark.parametrize("segments", [None, 3])
def test_forward_replayed(knobs, segments, monkeypatch):
    """A forward's launches are recorded on the first call of a signature and replayed after:
    each later call gets its own buffers and its own data (the first call's results stay as
    they were), an initial state or the same tensor passed twice is another signature, and
    gradients still flow."""

    knobs(scan_chunk=4)
    knobs(scan_segments=segments)
    replays = []
    replay = scan_replay.Replay.__call__

    def spy(self, *a):
        replays.append(self)
        return replay(self, *a)

    monkeypatch.setattr(scan_replay.Replay, "__call__", spy)
    kern = lrc.compile(_gated, backend="triton", lowering="scan")
    ref = lrc.compile(_gated, backend="reference")

    def both(x, a, h0=None):
        y, h = kern(x=x, a=a, initial_state=h0, return_final_state=True)
        wide = None if h0 is None else h0.double()
        y2, h2 = ref(x=x.double(), a=a.double(), initial_state=wide, return_final_state=True)
        assert rel_err(y, y2) <= FWD and rel_err(h, h2) <= FWD
        return y, y2

    calls = [(torch.randn(2, 29, 5), torch.rand(2, 29, 5)) for _ in range(3)]
    kept = [both(x, a) for x, a in calls]
    assert len(replays) == 2 and replays[0] is replays[1]
    for y, y2 in kept:  # each call's own buffers: none overwritten by a later replay
        assert rel_err(y, y2) <= FWD
    both(*calls[1], torch.randn(2, 5))       # with an initial state: recorded anew
    assert len(replays) == 2
    both(*calls[2], torch.randn(2, 5))
    assert len(replays) == 3
    x = torch.rand(2, 29, 5)
    both(x, x)                               # one tensor as both inputs: its own record
    both(*calls[0])
    assert len(replays) == 4
    x, a = (t.clone().requires_grad_(True) for t in calls[2])
    (gx,) = torch.autograd.grad(kern(x=x, a=a).sum(), x)
    x2, a2 = (t.double().requires_grad_(True) for t in calls[2])
    (gx2,) = torch.autograd.grad(ref(x=x2, a=a2).sum(), x2)
    assert len(replays) == 5 and rel_err(gx, gx2) <= GRAD


@pytest.mark.parametrize("name", ["s4d_zoh", "s4d_bilinear", "lru", "mamba1"])
def test_params_terms_hoisted_once(name):
    """A term of Params alone that several kernel nodes read (a complex spec's real and
    imaginary halves repeat theirs) is one kernel input, computed once before the kernel."""
    from lrc.ir.nodes import Map

    kern = lrc.compile(ZOO[name].spec, backend="triton", lowering="scan")
    g, pre = kern.program.g, kern.program.part.pre
    exprs = [g[n].expr for n in pre if isinstance(g[n], Map)]
    assert len(set(exprs)) == len(exprs)
    if name.startswith("s4d"):  # exp(dt A) and the input's factor: 6 terms, not 12
        assert 0 < len(exprs) <= 6


def test_untimed_choice_skips_configs_that_fail(monkeypatch):
    """LRC_TUNE=0 on the GPU takes the first config that compiles (Triton 3.6 rejects some:
    shared memory over the limit, a failed layout pass), once per key; none compiling is an
    error naming each config's failure."""

    monkeypatch.setattr(policy, "_CACHE", {})
    tried = []

    def run(cfg):
        tried.append(cfg)
        if cfg == "a":
            raise RuntimeError("PassManager::run failed")

    assert policy.first_working(("k",), ["a", "b", "c"], run) == "b"
    assert policy.first_working(("k",), ["a", "b", "c"], run) == "b"
    assert tried == ["a", "b"]
    with pytest.raises(RuntimeError, match="PassManager"):
        policy.first_working(("other",), ["a"], run)


def test_inference_call_skips_autograd(monkeypatch):
    """With nothing to differentiate (no_grad, or no input requiring grad) the forward runs
    without autograd.Function and without assembling unrequested final states; the outputs
    and final states equal those of a differentiable call."""

    kern, _ = layers("rglru")
    args = ZOO["rglru"].example(b=2, t=23, dtype=torch.float32)
    state = ZOO["rglru"].initial_state(b=2, dtype=torch.float32)
    leaves = {k: v.clone().requires_grad_(True) for k, v in args.items()}
    y_ref, h_ref = kern(**leaves, initial_state=state, return_final_state=True)
    assert y_ref.grad_fn is not None
    applied = []
    apply = scan_autograd.ScanFunction.apply
    monkeypatch.setattr(scan_autograd.ScanFunction, "apply",
                        lambda *a: applied.append(1) or apply(*a))
    with torch.no_grad():
        y1 = kern(**leaves, initial_state=state)
    y2, h2 = kern(**args, initial_state=state, return_final_state=True)
    assert not applied and y1.grad_fn is None and y2.grad_fn is None
    assert rel_err(y1, y_ref) == 0 and rel_err(y2, y_ref) == 0 and rel_err(h2, h_ref) == 0


def test_fast_replay_of_a_repeated_signature(monkeypatch):
    """A no-grad call whose signature (shapes, strides, dtypes, positional or by name) was
    seen replays its launches straight from the arguments (triton_call.Fast) and gives what
    the full path gives; anything else takes the full path: an argument needing a gradient,
    an initial or final state, one tensor passed twice, new strides."""
    from lrc.lowering.scan import call as triton_call

    used = []
    fast_call = triton_call.Fast.__call__
    monkeypatch.setattr(triton_call.Fast, "__call__",
                        lambda self, a, k: used.append(1) or fast_call(self, a, k))
    kern, ref = layers("gla")  # no pre or post work: the kernels read the arguments
    e = ZOO["gla"]
    args = e.example(b=2, t=19, dtype=torch.float32)
    names = list(args)
    want = ref(**{k: v.double() for k, v in args.items()})
    with torch.no_grad():
        for _ in range(3):  # by name
            assert rel_err(kern(**args), want) <= FWD
        assert len(used) == 2
        pos = [args[n] for n in names]
        for _ in range(2):  # positional: its own signature
            assert rel_err(kern(*pos), want) <= FWD
        assert len(used) == 3
        state = e.initial_state(b=2, dtype=torch.float32)
        kern(**args, initial_state=state)
        kern(**dict(args, k=args["q"]))  # one tensor twice
        kern(**args, return_final_state=True)
        t = {k: v.transpose(0, 1).contiguous().transpose(0, 1) if v.dim() > 2 else v
             for k, v in args.items()}  # other strides, same values
        assert rel_err(kern(**t), want) <= FWD
        assert len(used) == 3
        fresh = {k: v.clone() for k, v in args.items()}  # new tensors, same signature
        assert rel_err(kern(**fresh), want) <= FWD and len(used) == 4
    grads = {k: v.clone().requires_grad_(True) for k, v in args.items()}
    y = kern(**grads)
    assert y.grad_fn is not None and len(used) == 4


def test_fast_replay_with_gradients(monkeypatch):
    """A call with arguments needing gradients whose signature was seen replays its forward
    launches (triton_call.FastGrad) and, from its second backward with the same cotangents'
    signature, its backward launches; outputs and every gradient match the reference on
    fresh values each time; a cotangent with other strides is its own backward signature."""
    from lrc.lowering.scan import call as triton_call

    monkeypatch.setattr(scan_replay, "REPLAYS", {})
    monkeypatch.setattr(scan_replay, "BACK_REPLAYS", {})
    fast, played = [], []
    apply, play = triton_call.FastGrad.apply, scan_replay.BackReplay.__call__
    monkeypatch.setattr(triton_call.FastGrad, "apply",
                        lambda *a: fast.append(1) or apply(*a))
    monkeypatch.setattr(scan_replay.BackReplay, "__call__",
                        lambda self, *a: played.append(1) or play(self, *a))
    kern, ref = layers("gla")
    e = ZOO["gla"]
    for i in range(4):
        args = e.example(b=2, t=19, dtype=torch.float64)
        ours = {k: v.float().requires_grad_(k != "v") for k, v in args.items()}
        theirs = {k: v.clone().requires_grad_(k != "v") for k, v in args.items()}
        y, y2 = kern(**ours), ref(**theirs)
        assert rel_err(y, y2) <= FWD
        gy = torch.randn(y2.shape, dtype=torch.float64)  # contiguous
        if i == 3:  # a cotangent laid out otherwise: recorded anew, still right
            gy = gy.transpose(0, 1).contiguous().transpose(0, 1)
        leaves = [x for x in ours.values() if x.requires_grad]
        g1 = torch.autograd.grad(y, leaves, gy.float())
        g2 = torch.autograd.grad(y2, [x for x in theirs.values() if x.requires_grad], gy)
        for a, b in zip(g1, g2, strict=True):
            assert rel_err(a, b) <= GRAD
    # call 1: the full path, which records both; 2-4: FastGrad; backward 2 and 3 replay
    # (2 through ScanFunction.backward, which finds call 1's record), 4 records anew
    assert len(fast) == 3 and len(played) == 2


def test_fast_replay_keeps_write_only_buffers(monkeypatch):
    """A Fast replay keeps the buffers the kernels only write (final states, checkpoints
    without gradients) across calls, never an output: outputs of calls kept alive are
    distinct tensors, each right for its own inputs; with gradients the checkpoints are
    made anew (each backward reads its own)."""
    from lrc.lowering.scan import call as triton_call

    made = []
    init = triton_call.Fast.__init__
    monkeypatch.setattr(triton_call.Fast, "__init__",
                        lambda self, *a: made.append(self) or init(self, *a))
    kern, ref = layers("gla")
    e = ZOO["gla"]
    outs, wants = [], []
    with torch.no_grad():
        for _ in range(4):
            args = e.example(b=2, t=19, dtype=torch.float32)
            outs.append(kern(**args))
            wants.append(ref(**{k: v.double() for k, v in args.items()}))
    assert len({y.data_ptr() for y in outs}) == 4
    assert all(rel_err(y, w) <= FWD for y, w in zip(outs, wants))
    fast = made[-1]
    scratch = {i: x for i, x in enumerate(fast.plan[0]) if x is not None}
    assert not fast.grad and scratch  # the final state and the checkpoints
    kept = {i: x.data_ptr() for i, x in scratch.items()}
    assert set(kept).isdisjoint(fast.replay.outs)
    args = {k: v.requires_grad_(True) for k, v in e.example(b=2, t=19, dtype=torch.float32).items()}
    kern(**args)
    kern(**args)
    grad_fast = made[-1]
    grad_kept = {i for i, x in enumerate(grad_fast.plan[0]) if x is not None}
    assert grad_fast.grad and grad_kept and grad_kept.isdisjoint(grad_fast.replay.chks)
    assert {i: x.data_ptr() for i, x in enumerate(fast.plan[0]) if x is not None} == kept


def test_no_fast_replay_is_looked_for_twice(monkeypatch):
    """A signature that cannot replay (pre work: Mamba-1's hoisted Params terms) is noted
    once, not examined again on every call."""
    from lrc.lowering.scan import call as triton_call

    looked = []
    entry = triton_call.fast_entry
    monkeypatch.setattr(triton_call, "fast_entry", lambda *a: looked.append(1) or entry(*a))
    kern, _ = layers("mamba1")
    args = ZOO["mamba1"].example(b=1, t=9, dtype=torch.float32)
    with torch.no_grad():
        ys = [kern(**args) for _ in range(3)]
    assert looked == [1] and all(rel_err(y, ys[0]) == 0 for y in ys)


@pytest.mark.parametrize("name", ["mamba1", "rglru"])
def test_backward_replayed(name, monkeypatch):
    """A backward whose signature was seen replays its launches (scan_replay.BackReplay):
    its buffers made again, zeroed where atomic sums need it (Mamba-1's Param gradients),
    and the gradients still match the reference on fresh inputs; with and without an
    initial state (the same launches), and without a final state's gradient (a zeroed
    cotangent: another signature)."""
    import sys


    made = layers(name)  # one layer for every call (replays are per program)
    monkeypatch.setattr(sys.modules[__name__], "layers", lambda n: made)
    played = []
    call = scan_replay.BackReplay.__call__
    monkeypatch.setattr(scan_replay.BackReplay, "__call__",
                        lambda self, *a: played.append(1) or call(self, *a))
    for _ in range(2):
        check(name, b=2, t=21)
    assert len(played) == 1
    for _ in range(2):
        check(name, b=2, t=21, with_state=False)
    assert len(played) == 3
    kern, ref = made
    for _ in range(2):
        args = ZOO[name].example(b=2, t=21, dtype=torch.float64)
        ours = {k: v.float().requires_grad_(True) for k, v in args.items()}
        theirs = {k: v.clone().requires_grad_(True) for k, v in args.items()}
        g1 = torch.autograd.grad(as_tuple(kern(**ours))[0].sum(), list(ours.values()))
        g2 = torch.autograd.grad(as_tuple(ref(**theirs))[0].sum(), list(theirs.values()))
        for a, e in zip(g1, g2):
            assert rel_err(a, e) <= GRAD
    assert len(played) == 4


@lrc.recurrence
def gated_rows(x: Seq("b d t"), a: Seq("b d t"), w: lrc.Param("d"), h: State("b d")):
    """Time contiguous and an elementwise state: one row of time per program (a 1-D block)."""
    h = lrc.sigmoid(a) * h + w * x
    return h * lrc.silu(x), h


def _rows_check(b: int, t: int, reverse: bool, cu=None, device="cpu", spec=gated_rows,
                dtype=torch.float32, tol=FWD, gtol=GRAD):
    kern = lrc.compile(spec, backend="triton", lowering="scan")
    ref = lrc.compile(spec, backend="reference")
    g = lambda *s: torch.randn(*s, dtype=torch.float64, device=device)  # noqa: E731
    rows = spec.graph.annotation("x").dims[1] == "d"  # b d t
    seq = (lambda: g(b, 5, t)) if rows else (lambda: g(b, t, 5))
    args = {"x": seq(), "a": seq() + 1}
    if spec is gated_rows:
        args["w"] = g(5)
    n = b if cu is None else len(cu) - 1
    state = g(n, 5)
    # the reference gets the values ours got (rounded to `dtype`)
    args = {k: v.to(dtype).double() for k, v in args.items()}
    ours = {k: v.to(dtype).requires_grad_(True) for k, v in args.items()}
    theirs = {k: v.clone().requires_grad_(True) for k, v in args.items()}
    s1, s2 = state.float().requires_grad_(True), state.clone().requires_grad_(True)
    y, h = kern(**ours, initial_state=s1, return_final_state=True, reverse=reverse,
                cu_seqlens=cu)
    y2, h2 = ref(**theirs, initial_state=s2, return_final_state=True, reverse=reverse,
                 cu_seqlens=cu)
    assert rel_err(y, y2) <= tol and rel_err(h, h2) <= tol
    gy, gh = torch.randn_like(y2).to(dtype).double(), torch.randn_like(h2)
    g1 = torch.autograd.grad((y.double() * gy).sum() + (h.double() * gh).sum(),
                             [*ours.values(), s1])
    g2 = torch.autograd.grad((y2 * gy).sum() + (h2 * gh).sum(), [*theirs.values(), s2])
    for nm, p, q in zip([*ours, "h0"], g1, g2, strict=True):
        assert rel_err(p, q) <= gtol, f"grad of {nm}: {rel_err(p, q):.2e}"
    return kern


@pytest.mark.parametrize("reverse", [False, True])
def test_rows_of_time(knobs, reverse, monkeypatch):
    """Time contiguous with nothing whole: a 1-D kernel, one row of time per program; chunks
    shorter than the sequence, two-level segments, packed sequences, and a backward whose
    chunk is twice the forward's (it reads every other checkpoint), all against the
    reference."""
    from lrc.lowering.scan import launch as scan_runtime
    from lrc.lowering.scan.configs import ScanConfig

    kern = _rows_check(2, 37, reverse)
    assert kern.program.tiling.tile == () and "tl.arange(0, TC)[:]" in kern.source("forward")
    knobs(scan_chunk=4)
    _rows_check(2, 37, reverse)
    _rows_check(1, 29, reverse, cu=torch.tensor([0, 7, 8, 29]))
    knobs(scan_segments=3)
    _rows_check(2, 37, reverse)
    knobs(scan_segments=None)
    knobs(scan_chunk=None)
    seen, config = [], scan_tune_policy.config_for

    if reverse:  # a multiple of the forward's chunk is never a reverse scan's candidate
        info = {"sizes": {"b": 2, "d": 5}, "T": 37, "inputs": [], "reverse": True}
        rows = scan_tune_policy._candidates(kern.program, info, [], 512)
        assert rows and {c.tc for c in rows} == {512}
        return

    def doubled(prog, which, info, ins, launch, tc=None):
        if which == "backward":
            return ScanConfig(2 * tc)
        return ScanConfig(8)

    monkeypatch.setattr(scan_tune_policy, "config_for", doubled)
    launch = scan_runtime.Launch.__call__
    monkeypatch.setattr(scan_runtime.Launch, "__call__",
                        lambda self, **k: seen.append((self.which, self.tc)) or launch(self, **k))
    _rows_check(2, 37, reverse)
    assert ("forward", 8) in seen and ("backward", 16) in seen and config is not doubled


@pytest.mark.gpu
@pytest.mark.parametrize("reverse", [False, True])
def test_gpu_rows_of_time(reverse):
    """The 1-D row kernels compiled for the GPU, tuned configs, a long odd sequence."""
    _rows_check(3, 5000, reverse, device="cuda")


def test_tuner_times_the_kernels_alone(monkeypatch):
    """The scan tuner's timing runs fire a config's recorded kernel launches again: the
    launch function (buffers, arguments) runs once per config, the kernels every time."""
    from lrc.lowering.scan import launch as scan_runtime

    kern, _ = layers("rglru")
    made, fired = [], []

    def launch(cfg):
        made.append(cfg)
        run = scan_runtime.Launch(kern.program, "forward", {}, 9, torch.device("cpu"))
        run.fired = [(["p", cfg], {"TC": 4}, (1,))]
        return None, run

    monkeypatch.setattr(scan_runtime.Launch, "configure", lambda self, config: None)
    monkeypatch.setattr(scan_runtime.Launch, "fire", lambda self, *a: fired.append(a))
    run = scan_tune_policy._kernels_only(launch)
    for cfg in ("a", "a", "b", "a"):
        run(cfg)
    assert made == ["a", "b"] and fired == [(["p", "a"], {"TC": 4}, (1,))] * 2


@lrc.recurrence
def state_out_rows(x: Seq("b d t"), a: Seq("b d t"), h: State("b d")):
    """The output is the new state (an elementwise linear RNN), time contiguous."""
    h = lrc.sigmoid(a) * h + x
    return h, h


@lrc.recurrence
def state_out_cols(x: Seq("b t d"), a: Seq("b t d"), h: State("b d")):
    """The same with the channels contiguous (a tiled kernel)."""
    h = lrc.sigmoid(a) * h + x
    return h, h


@pytest.mark.parametrize("spec", [state_out_rows, state_out_cols], ids=["rows", "tiles"])
@pytest.mark.parametrize("reverse", [False, True])
def test_backward_reads_the_saved_state(knobs, spec, reverse, monkeypatch):
    """An output that is the new state (y = h') is saved, and the backward reads the state
    before each step from it one step earlier (no recompute of the forward scan, no
    shift), the chunk's checkpoint at its first step; against the reference: chunks shorter
    than the sequence, segments, packed sequences, bf16 (the state read back rounded)."""

    kern = _rows_check(2, 37, reverse, spec=spec)
    assert kern.program.saved == {"h": "y"}
    bwd = kern.source("backward")
    assert "y_sv_ptr" in bwd and "reverse=REVERSE" not in bwd  # no forward scan in it
    # the adjoint before each step comes aligned out of a triple scan, not shifted
    assert "_scan3, reverse=BACK" in bwd and "tl.gather" not in bwd
    knobs(scan_chunk=4)
    _rows_check(2, 37, reverse, spec=spec)
    _rows_check(1, 29, reverse, spec=spec, cu=torch.tensor([0, 7, 8, 29]))
    _rows_check(2, 37, reverse, spec=spec, dtype=torch.bfloat16, tol=BF16, gtol=BF16)
    knobs(scan_segments=3)
    _rows_check(2, 37, reverse, spec=spec)
    # rglru's output is its state too; mamba1's is not (its backward recomputes)
    assert layers("rglru")[0].program.saved == {"h": "y"}
    assert layers("mamba1")[0].program.saved == {}


@pytest.mark.gpu
@pytest.mark.parametrize("spec", [state_out_rows, state_out_cols], ids=["rows", "tiles"])
def test_gpu_backward_reads_the_saved_state(spec):
    """The saved-state backward compiled for the GPU: tuned configs, a long odd sequence, both
    directions, bf16."""
    for reverse in (False, True):
        _rows_check(3, 5000, reverse, spec=spec, device="cuda")
        _rows_check(3, 5000, reverse, spec=spec, device="cuda", dtype=torch.bfloat16,
                    tol=BF16, gtol=BF16)


@pytest.mark.gpu
def test_gpu_replays_launch_directly(monkeypatch):
    """Replayed launches (forward and backward) go straight to the compiled kernel's launcher
    (kernel_launch.Direct), right on fresh values; an input whose pointer is not 16-byte
    aligned, unlike the recorded one's, takes Triton's path (which specializes anew), also
    right."""
    from lrc.lowering.scan import launch as scan_runtime

    monkeypatch.setattr(scan_replay, "REPLAYS", {})
    monkeypatch.setattr(scan_replay, "BACK_REPLAYS", {})
    direct, slow = [], []
    call, fire = kernel_launch.Direct.__call__, scan_runtime.Launch.fire
    monkeypatch.setattr(kernel_launch.Direct, "__call__",
                        lambda self, *a: direct.append(1) or call(self, *a))
    monkeypatch.setattr(scan_runtime.Launch, "fire",
                        lambda self, *a: slow.append(1) or fire(self, *a))
    kern = lrc.compile(state_out_rows, backend="triton")
    ref = lrc.compile(state_out_rows, backend="reference")
    shape = (2, 5, 301)
    for i in range(4):
        misaligned = i == 3
        x, a = torch.randn(shape, device="cuda"), torch.randn(shape, device="cuda")
        if misaligned:  # a float32 view one element into its storage
            x = torch.empty(math.prod(shape) + 1, device="cuda")[1:].view(shape).copy_(x)
            assert x.data_ptr() % 16 != 0
        x.requires_grad_(True)
        gy = torch.randn(shape, device="cuda")
        before = (len(direct), len(slow))
        y = kern(x=x, a=a)
        (gx,) = torch.autograd.grad(y, [x], gy)
        x2 = x.detach().double().requires_grad_(True)
        y2 = ref(x=x2, a=a.double())
        (gx2,) = torch.autograd.grad(y2, [x2], gy.double())
        assert rel_err(y, y2) <= FWD and rel_err(gx, gx2) <= GRAD
        if i == 2:  # forward and backward replayed, both direct
            assert len(direct) - before[0] == 2 and len(slow) == before[1]
        if misaligned:
            assert len(direct) == before[0] and len(slow) - before[1] == 2
