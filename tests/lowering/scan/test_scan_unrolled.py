"""The forward with a whole state dim unrolled (Mamba-1's n: tiling.unrolled, `forward_n`)
against the float64 reference: outputs, final state, initial state, reverse, the chunks'
carries; with gradients too, through the checkpoints it saves for the usual backward. Which
specs get it, and when the no-gradient forward may run it."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

import lrc
from lrc import Param, Seq, State
from lrc.errors import Unsupported
from lrc.kernels import aot
from lrc.kernels import tune as policy
from lrc.lowering.scan import configs as scan_tune
from lrc.lowering.scan import launch as scan_runtime
from lrc.lowering.scan import replay as scan_replay
from lrc.lowering.scan import tune as scan_tune_policy
from lrc.lowering.scan.configs import UNROLLED, ScanConfig, candidates_unrolled
from lrc.lowering.scan.unrolled import _old_through_decay
from lrc.zoo import ZOO
from tests.conftest import rel_err
from tests.lowering.scan import test_scan
from tests.lowering.scan.test_scan import check


@lrc.recurrence
def gated_s6(u: Seq("b d t"), delta: Seq("b d t"), A: Param("d n"), B: Seq("b n t"),
             C: Seq("b n t"), D: Param("d"), z: Seq("b d t"), delta_bias: Param("d"),
             h: State("b d n")):
    """mamba_ssm's selective_scan_fn with z and delta_bias (benchmarks/bench.py's spec)."""
    dt = lrc.softplus(delta + delta_bias)
    h = lrc.exp(dt * A) * h + dt * B * u
    return ((C * h).sum("n") + D * u) * lrc.silu(z), h


def gated_inputs(b, d, t, n, dtype=torch.float64, device="cpu"):
    r = lambda *s, std=1.0: (std * torch.randn(*s, dtype=torch.float64, device=device)).to(dtype)
    return dict(u=r(b, d, t), delta=r(b, d, t, std=0.5), A=-torch.rand(d, n, dtype=dtype,
                device=device) - 0.5, B=r(b, n, t), C=r(b, n, t), D=r(d), z=r(b, d, t),
                delta_bias=r(d))


@pytest.fixture
def launched(monkeypatch):
    """The kernels each call launched (Launch.which), in order."""
    seen = []
    call = scan_runtime.Launch.__call__

    def spy(self, **consts):
        seen.append(self.which)
        return call(self, **consts)

    monkeypatch.setattr(scan_runtime.Launch, "__call__", spy)
    return seen


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("tc, block, loop", [(8, 2, 0), (64, 4, 0), (8, 4, 1), (64, 2, 3)])
@pytest.mark.parametrize("usual", [False, True])
def test_mamba1_unrolled_forward(knobs, reverse, tc, block, loop, usual, monkeypatch, launched):
    """Forward, final state and every gradient (backward_n, or with `usual` the usual
    backward, reading the unrolled forward's checkpoints), 5 channels in blocks of 2 or 4 (a
    masked tail), 37 steps in chunks of 8 (carries between chunks) or one chunk; n = 3 (an
    unrolled loop of 4, one masked), or a `tl.range` loop over n unrolled once or 3 times (4
    indices: a remainder)."""
    knobs(scan_config=ScanConfig(tc, block, 4, 2, unroll=True,
                                                           loop=loop))
    if usual:  # a program without backward_n (check compiles through test_scan.layers)
        from tests.lowering.scan import test_scan
        kern, ref = test_scan.layers("mamba1")
        monkeypatch.delitem(kern.program.sources, "backward_n")
        monkeypatch.setattr(test_scan, "layers", lambda name: (kern, ref))
    check("mamba1", b=2, t=37, reverse=reverse, d=5, n=3)
    assert launched == ["forward_n", "backward" if usual else "backward_n"]


def test_gated_s6_unrolled_without_gradients(knobs, monkeypatch, launched):
    """bench.py's selective scan (z gate, delta_bias): the no-gradient forward, with an
    initial and a final state, against the reference."""
    knobs(scan_config=ScanConfig(16, 2, 4, 2, unroll=True))
    kern = lrc.compile(gated_s6, backend="triton")
    ref = lrc.compile(gated_s6, backend="reference")
    args = gated_inputs(2, 7, 45, 5)
    h0 = torch.randn(2, 7, 5, dtype=torch.float64)
    y, h = kern(**{k: v.float() for k, v in args.items()}, initial_state=h0.float(),
                return_final_state=True)
    y2, h2 = ref(**args, initial_state=h0, return_final_state=True)
    assert rel_err(y, y2) <= 1e-4 and rel_err(h, h2) <= 1e-4
    assert launched == ["forward_n"]


def test_which_specs_unroll():
    """Mamba-1's forward gets the unrolled kernel; an elementwise state (no whole dim), a
    state returned along n, and an output whose terms along n read a sum over n do not."""
    assert "forward_n" in lrc.compile(gated_s6, backend="triton").program.sources

    @lrc.recurrence
    def along_n(x: Seq("b d t"), a: Param("d n"), h: State("b d n")):
        h = a * h + x
        return h, h

    @lrc.recurrence
    def normalized(x: Seq("b d t"), B: Seq("b n t"), a: Param("d n"), h: State("b d n")):
        h = a * h + B * x
        return (h * (h * B).sum("n")).sum("n"), h

    @lrc.recurrence
    def elementwise(x: Seq("b d t"), a: Seq("b d t"), h: State("b d")):
        h = a * h + x
        return h, h

    for spec in (along_n, elementwise):
        prog = lrc.compile(spec, backend="triton").program
        assert prog.mode == "scan" and "forward_n" not in prog.sources, spec.name
    prog = lrc.compile(normalized, backend="triton").program
    assert "forward_n" not in prog.sources


def test_which_launches_may_unroll():
    """The tuner's candidates: the no-gradient forward tries forward_n's configs before the
    usual ones; with a backward_n, the forward that saves checkpoints tries forward_n only,
    at backward_n's chunk lengths, and its backward tries backward_n's configs at the
    forward's chunk with one usual config last; packed sequences never unroll; a program
    without backward_n trains with the usual kernels."""
    prog = lrc.compile(gated_s6, backend="triton").program
    args = gated_inputs(2, 7, 45, 5, torch.float32)
    names = [n.name for n in prog.kernel.inputs() if n.role.name in ("SEQ", "PARAM")]
    ins = [args[n] for n in names]
    info = dict(sizes=dict(b=2, d=7, n=5), T=45, inputs=names, reverse=False, varlen=None)
    cands = lambda tc=None, **kw: scan_tune_policy._candidates(prog, dict(info, **kw), ins, tc)
    infer = cands(infer=True)
    assert infer[:len(UNROLLED)] == candidates_unrolled()
    assert not any(c.unroll for c in infer[len(UNROLLED):])
    train = cands(infer=False)
    assert train and all(c.unroll for c in train)
    assert {c.tc for c in train} == {r[0] for r in scan_tune.UNROLLED_TRAINING}
    assert all(scan_tune.BACKWARD_TC % c.tc == 0 for c in train)
    for tc in {c.tc for c in train}:  # backward_n's chunk, a multiple of the forward's
        back = cands(tc, infer=False)
        assert [c.unroll for c in back] == [True] * len(scan_tune.UNROLLED_BACKWARD) + [False]
        assert {c.tc for c in back if c.unroll} == {scan_tune.BACKWARD_TC}
    # a right-to-left scan's backward reads the forward's own chunks
    assert {c.tc for c in cands(infer=False, reverse=True)} == {scan_tune.BACKWARD_TC}
    assert {c.tc for c in cands(32, infer=False, reverse=True)} == {32}
    for kw in (dict(infer=True), dict(infer=False)):
        assert not any(c.unroll for c in cands(varlen=(None, 45, 2), **kw))
    del prog.sources["backward_n"]
    assert not any(c.unroll for c in cands(infer=False) + cands(128, infer=False))


def test_unrolled_forward_compiles_for_the_h200(knobs, monkeypatch):
    """Every unrolled candidate, bf16, at the Mamba-1 reference's channel and state sizes
    (1 x 64 channels, n = 16), built for sm_90 (uncapped): it compiles, fits, and spills at
    most 8 bytes a thread."""
    monkeypatch.setattr(policy, "_CACHE", {})
    kern = lrc.compile(gated_s6, backend="triton")
    args = {k: v.to(torch.bfloat16) if v.dim() == 3 else v.float()
            for k, v in gated_inputs(1, 64, 512, 16).items()}
    regs = {}
    for cfg in candidates_unrolled():
        knobs(scan_config=replace(cfg, maxnreg=None))
        with aot.recording(as_gpu=132, compile=True) as launches:
            kern(**args)
        (r,) = launches
        assert r.name.endswith("forward_n") and r.compiled.ok and r.compiled.fits, r
        # one config (TC 128, BLOCK 16, 8 warps, loop 1) spills 8 bytes a thread since the
        # generated temporaries are named per module (sympy orders operands by name, and
        # ptxas allocates differently); whether that costs time is the GPU benchmark's to say
        assert 0 < r.compiled.regs <= 255 and r.compiled.spills <= 8, (cfg, r.compiled)
        regs[cfg.tc, cfg.block, cfg.loop] = r.compiled.regs
    # the loop over n keeps fewer values live than n unrolled whole
    assert all(regs[tc, block, 1] < regs[tc, block, 0] for tc, block, loop in regs if loop)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_unrolled_candidates(knobs, dtype, tol, monkeypatch, launched):
    """Each unrolled candidate at real sizes (T = 4099, n = 16), no gradients."""
    ref = lrc.compile(gated_s6, backend="reference")
    kern = lrc.compile(gated_s6, backend="triton")
    args = gated_inputs(2, 96, 4099, 16, device="cuda")
    want = ref(**args)
    ours = {k: v.to(dtype) if v.dim() == 3 else v.float() for k, v in args.items()}
    for cfg in candidates_unrolled():
        knobs(scan_config=cfg)
        got = kern(**ours)
        assert rel_err(got, want) <= tol, (cfg, rel_err(got, want))
    assert set(launched) == {"forward_n"}


@pytest.mark.gpu
def test_gpu_unrolled_tuned(knobs, monkeypatch):
    """The tuner's choice for a no-gradient forward at real sizes, bf16."""
    knobs(tune=True)
    ref = lrc.compile(gated_s6, backend="reference")
    kern = lrc.compile(gated_s6, backend="triton")
    args = gated_inputs(2, 256, 4097, 16, device="cuda")
    with torch.no_grad():
        got = kern(**{k: v.to(torch.bfloat16) if v.dim() == 3 else v.float()
                      for k, v in args.items()})
    assert rel_err(got, ref(**args)) <= 1e-2


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("tc, block, loop", [(8, 2, 0), (64, 4, 0), (8, 4, 1), (64, 2, 3)])
def test_gated_s6_unrolled_backward(knobs, reverse, tc, block, loop, monkeypatch, launched):
    """backward_n for bench.py's selective scan (z gate, delta_bias): every gradient, the
    initial state's included, against the reference; 7 channels in blocks of 2 or 4, 45 steps
    in chunks of 8 or one chunk, n = 5 (a masked tail of the unrolled loop)."""
    knobs(scan_config=ScanConfig(tc, block, 4, 2, unroll=True,
                                                           loop=loop))
    _check_gated(gated_inputs(2, 7, 45, 5), reverse, torch.float32, 1e-4, 1e-3)
    assert launched == ["forward_n", "backward_n"]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("tc, block, loop", [(8, 2, 0), (16, 4, 2)])
def test_gated_s6_unrolled_backward_even(knobs, reverse, tc, block, loop, monkeypatch):
    """The same with nothing to mask (EVEN: 8 channels in whole blocks, 48 steps in whole
    chunks, n = 4 a power of two), the path the reference shape takes: no masks on the sums
    over channels and steps, the reversed adjoint's offset unmasked."""
    knobs(scan_config=ScanConfig(tc, block, 4, 2, unroll=True,
                                                           loop=loop))
    evens = []
    arguments = scan_runtime.Launch.arguments
    monkeypatch.setattr(scan_runtime.Launch, "arguments", lambda self, consts: (
        lambda out: (evens.append(out[1].get("EVEN")), out)[1])(arguments(self, consts)))
    _check_gated(gated_inputs(2, 8, 48, 4), reverse, torch.float32, 1e-4, 1e-3)
    assert evens == [True, True]


def _check_gated(args, reverse, dtype, tol, gtol):
    kern = lrc.compile(gated_s6, backend="triton")
    ref = lrc.compile(gated_s6, backend="reference")
    b, d, n = args["u"].shape[0], args["u"].shape[1], args["A"].shape[1]
    h0 = torch.randn(b, d, n, dtype=torch.float64, device=args["u"].device)
    ours = {k: (v.to(dtype) if v.dim() == 3 else v.float()).requires_grad_(True)
            for k, v in args.items()}
    theirs = {k: v.clone().requires_grad_(True) for k, v in args.items()}
    h_ours, h_ref = h0.float().requires_grad_(True), h0.clone().requires_grad_(True)
    y, h = kern(**ours, initial_state=h_ours, return_final_state=True, reverse=reverse)
    y2, h2 = ref(**theirs, initial_state=h_ref, return_final_state=True, reverse=reverse)
    assert rel_err(y, y2) <= tol and rel_err(h, h2) <= tol
    gy, gh = torch.randn_like(y2), torch.randn_like(h2)
    g1 = torch.autograd.grad((y.double() * gy).sum() + (h.double() * gh).sum(),
                             list(ours.values()) + [h_ours])
    g2 = torch.autograd.grad((y2 * gy).sum() + (h2 * gh).sum(), list(theirs.values()) + [h_ref])
    for name, a, e in zip(list(ours) + ["initial_state"], g1, g2):
        assert torch.isfinite(a).all() and rel_err(a, e) <= gtol, (name, rel_err(a, e))


def test_backward_n_reads_the_state_through_its_decay():
    """backward_n rewrites the forward state before a step as (h' - b) / a where the adjoint
    step reads it times its decay a (no shift of the recomputed states, no division left);
    a spec whose gradient reads h alone gets no backward_n (the usual backward runs). Its
    adjoint scans pairs, no triple."""
    prog = lrc.compile(gated_s6, backend="triton").program
    src = prog.sources["backward_n"]
    assert "SHIFT_" not in src.split("ts = t + 1")[1] and "h_old" not in src
    assert "_scan3" not in src
    # the adjoint: a pair scan over the decay one step before; right to left, over the
    # chunk's steps reversed (its inputs flipped per chunk or per index), its result flipped
    # back; every flip a gather (one shuffle a register), none through tl.flip's butterflies
    assert "delta_nx = tl.load" in src and "v_b0 = tl.gather(v_b0" in src
    assert "tl.flip" not in src
    # the adjoint's carry out of a chunk by a gather at LAST; the forward keeps its masked sum
    assert re.search(r"tl\.gather\(\w+, tl\.zeros\(\[BLOCK_d, 1\], tl\.int32\) \+ LAST_b, 1\)",
                     src)
    assert "tl.sum(tl.where(o_t == LAST_f" in prog.sources["forward_n"]

    @lrc.recurrence
    def plain_decay(x: Seq("b d t"), lam: Seq("b d t"), B: Seq("b n t"), C: Seq("b n t"),
                    h: State("b d n")):  # lam's gradient reads h: sum_n g h
        h = lam * h + B * x
        return (C * h).sum("n"), h

    prog = lrc.compile(plain_decay, backend="triton").program
    assert "forward_n" in prog.sources and "backward_n" not in prog.sources
    with pytest.raises(Unsupported, match="other than through its decay"):
        _old_through_decay(prog.backward.graph, prog.blocks,
                           dict(prog.backward.forward_states))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tol, gtol", [(torch.float32, 1e-4, 1e-3),
                                              (torch.bfloat16, 1e-2, 1e-2)])
def test_gpu_backward_n_candidates(knobs, dtype, tol, gtol, monkeypatch, launched):
    """Each backward_n candidate at real sizes (T = 4099, n = 16, 96 channels), forward and
    every gradient against the float64 reference."""
    args = gated_inputs(2, 96, 4099, 16, device="cuda")
    for row in scan_tune.UNROLLED_BACKWARD:
        cfg = ScanConfig(128, *row[:3], unroll=True, maxnreg=row[3], loop=row[4])
        knobs(scan_config=cfg)
        _check_gated(args, False, dtype, tol, gtol)
    assert set(launched) == {"forward_n", "backward_n"}


@pytest.mark.gpu
def test_gpu_training_tuned(knobs, monkeypatch, launched):
    """The tuner's choices for a forward that saves checkpoints and its backward at real
    sizes, bf16: forward_n at backward_n's chunk, then backward_n (or the fallback)."""
    knobs(tune=True)
    _check_gated(gated_inputs(2, 256, 4097, 16, device="cuda"), False, torch.bfloat16, 1e-2,
                 1e-2)
    assert launched[0] == "forward_n"


@pytest.mark.parametrize("k", [2, 4])
def test_backward_n_reads_every_kth_checkpoint(k, monkeypatch):
    """backward_n at k times the forward's chunk (the forward saves a checkpoint every 8
    steps, the backward starts a chunk every 8k): every gradient against the reference, 45
    steps (a short last chunk)."""
    fwd = ScanConfig(8, 2, 4, 2, unroll=True, loop=1)
    monkeypatch.setattr(scan_tune_policy, "config_for", lambda prog, which, info, ins, launch,
                        tc=None: fwd if tc is None else replace(fwd, tc=k * tc))
    seen = []
    fire = scan_runtime.Launch.fire
    monkeypatch.setattr(scan_runtime.Launch, "fire", lambda self, *a: (
        seen.append((self.which, self.tc)), fire(self, *a))[1])
    _check_gated(gated_inputs(2, 7, 45, 5), False, torch.float32, 1e-4, 1e-3)
    assert seen == [("forward_n", 8), ("backward_n", 8 * k)]


def test_training_forward_tunes_and_records_apart():
    """A forward with gradients after one without, same shapes: for a program with
    forward_n their configs differ (a training forward saves for backward_n), so neither
    the tuner's key nor the replay key is shared; for one without, both are."""
    args = gated_inputs(2, 7, 45, 5, torch.float32)
    for spec, apart in ((gated_s6, True), (test_scan._gated, False)):
        prog = lrc.compile(spec, backend="triton").program
        names = [n.name for n in prog.kernel.inputs() if n.role.name in ("SEQ", "PARAM")]
        ins = [args[n] if n in args else torch.randn(2, 45, 7) for n in names]
        info = dict(sizes=dict(b=2, d=7, n=5), T=45, inputs=names, reverse=False, varlen=None,
                    device=torch.device("cpu"), out_dtypes=[torch.float32])
        keys = [(scan_tune_policy._tune_key(prog, "forward", dict(info, infer=i), ins, None),
                 scan_replay.replay_key(prog, dict(info, infer=i), ins, []))
                for i in (True, False)]
        assert (keys[0][0] != keys[1][0]) == apart and (keys[0][1] != keys[1][1]) == apart


@pytest.mark.parametrize("name", ["gated_s6", "mamba1"])
def test_backward_n_rewrites_preserve_the_adjoint_step(name):
    """backward_n's rewrites of the adjoint step (h read through its decay as h' - b, factors
    that do not vary along n taken out of sums over n, duplicates merged) change no value: the
    rewritten step and the derived one, run by the float64 interpreter over 7 steps on random
    inputs and a random initial adjoint, give the same outputs and final state."""
    from lrc.ir import interpret
    from lrc.lowering.scan.unrolled import _pull_factors

    spec = gated_s6 if name == "gated_s6" else ZOO["mamba1"].spec
    prog = lrc.compile(spec, backend="triton").program
    bg = prog.backward.graph
    new = _pull_factors(_old_through_decay(bg, prog.blocks, dict(prog.backward.forward_states)),
                        "n")
    assert [n.name for n in new.nodes if n.name not in bg] and new.outputs == bg.outputs
    sizes, T = dict(b=2, d=3, n=4), 7
    g = torch.Generator().manual_seed(7)
    values = {}
    for n in bg.inputs():
        if n.role.name in ("SEQ", "PARAM"):
            shape = interpret.canonical_shape(bg, n.dims, sizes, T if n.role.name == "SEQ" else 1)
            x = torch.randn(shape, generator=g, dtype=torch.float64)
            values[n.name] = -x.abs() - 0.5 if n.name in ("A", "h'.p0") else x
    states = {s: torch.randn(interpret.canonical_shape(bg, bg[s].dims, sizes), generator=g,
                             dtype=torch.float64) for s in bg.state_names}
    outs, finals = interpret.run(bg, values, states, sizes, T)
    outs2, finals2 = interpret.run(new, values, states, sizes, T)
    for name_, a, b in zip(list(bg.outputs) + list(bg.state_names), outs + finals,
                           outs2 + finals2, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), name_


def test_backward_n_compiles_for_the_h200(knobs, monkeypatch):
    """backward_n at the tuner's first config and a one-channel one, bf16, at the Mamba-1
    reference's channel and state sizes, built for sm_90 with Triton's compiler: it compiles
    and fits (uncapped here; the tuned config caps it at 128 registers, spilling by design)."""
    monkeypatch.setattr(policy, "_CACHE", {})
    kern = lrc.compile(gated_s6, backend="triton")
    args = {k: (v.to(torch.bfloat16) if v.dim() == 3 else v.float()).requires_grad_(True)
            for k, v in gated_inputs(1, 64, 512, 16).items()}
    for row in (scan_tune.UNROLLED_BACKWARD[0], (1, 1, 1, None, 1)):
        block, warps, stages, _, loop = row
        knobs(scan_config=ScanConfig(
            scan_tune.BACKWARD_TC, block, warps, stages, unroll=True, loop=loop))
        with aot.recording(as_gpu=132, compile=True) as launches:
            kern(**args).float().sum().backward()
        (r,) = [r for r in launches if r.name.endswith("backward_n")]
        assert r.compiled.ok and r.compiled.fits, r
        assert 0 < r.compiled.regs <= 255, (row, r.compiled)
