"""The chunked DPLR lowering under Triton's interpreter against the zoo's float64 loops.

Outputs, final states and every gradient (inputs, Params, initial state), T spanning several
chunks, reverse, packed sequences, bf16, and hypothesis draws with beta near 0 and 1 and steep
decays. The loops are the zoo tests' own (tests/zoo), not the reference interpreter.
"""
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import lrc
from lrc.zoo import deltanet, gated_deltanet, kda, rwkv7
from tests.conftest import rel_err
from tests.zoo.test_deltanet import loop as delta_loop
from tests.zoo.test_gated_deltanet import loop as gated_loop
from tests.zoo.test_kda import loop as kda_loop
from tests.zoo.test_rwkv7 import loop as rwkv7_loop

CASES = {"deltanet": (deltanet.ENTRY, delta_loop), "gated_deltanet": (gated_deltanet.ENTRY,
                                                                      gated_loop),
         "kda": (kda.ENTRY, kda_loop)}


def wide(a):
    return {k: v.detach().double() for k, v in a.items()}


def check(entry, loop, args, s0=None, tol=1e-4, gtol=1e-3, **kw):
    """Forward, final state and every gradient of the dplr lowering against `loop`."""
    layer = lrc.compile(entry.spec, lowering="dplr")
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    s = None if s0 is None else s0.clone().requires_grad_()
    y, fin = layer(**leaves, initial_state=s, return_final_state=True, **kw)
    assert layer.plan.chosen and set(layer.plan.chosen.values()) == {"dplr"}
    w64 = {k: v.clone().requires_grad_() for k, v in wide(args).items()}
    s64 = None if s0 is None else s0.double().clone().requires_grad_()
    (yw,), (fw,) = loop(w64, None if s64 is None else (s64,))
    assert rel_err(y, yw) <= tol and rel_err(fin, fw) <= tol, (rel_err(y, yw), rel_err(fin, fw))
    gy, gf = torch.randn(yw.shape, dtype=torch.float64), torch.randn(fw.shape,
                                                                      dtype=torch.float64)
    xs = list(leaves.values()) + ([s] if s is not None else [])
    xs64 = list(w64.values()) + ([s64] if s64 is not None else [])
    got = torch.autograd.grad((y.double() * gy).sum() + (fin.double() * gf).sum(), xs)
    want = torch.autograd.grad((yw * gy).sum() + (fw * gf).sum(), xs64)
    names = list(leaves) + (["initial_state"] if s is not None else [])
    errs = {n: rel_err(a, b) for n, a, b in zip(names, got, want, strict=True)}
    assert max(errs.values()) <= gtol, errs
    return errs


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("t", [37, 16])
def test_matches_loop(name, t):
    entry, loop = CASES[name]
    args = {k: v.float() for k, v in entry.example(t=t).items()}
    check(entry, loop, args, entry.initial_state().float())


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_state_other_sizes(name):
    entry, loop = CASES[name]
    args = {k: v.float() for k, v in entry.example(b=1, t=20, h=2, k=17, v=3).items()}
    check(entry, loop, args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reverse(name):
    entry, loop = CASES[name]
    args = {k: v.float() for k, v in entry.example(t=21).items()}
    s0 = entry.initial_state().float()

    def flipped(a, state):
        (y,), (f,) = loop({k: (v.flip(1) if v.dim() >= 3 else v) for k, v in a.items()}, state)
        return (y.flip(1),), (f,)

    check(entry, flipped, args, s0, reverse=True)


def test_packed_sequences():
    entry, loop = CASES["gated_deltanet"]
    layer = lrc.compile(entry.spec, lowering="dplr")
    args = {k: v.float() for k, v in entry.example(b=1, t=29).items()}
    y = layer(**args, cu_seqlens=torch.tensor([0, 11, 29]))
    parts = []
    for lo, hi in ((0, 11), (11, 29)):
        a = {k: (v[:, lo:hi] if v.dim() >= 3 else v) for k, v in wide(args).items()}
        parts.append(loop(a, None)[0][0])
    assert rel_err(y, torch.cat(parts, 1)) <= 1e-4


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16(name):
    entry, loop = CASES[name]
    args = entry.example(t=40, dtype=torch.bfloat16)
    layer = lrc.compile(entry.spec, lowering="dplr")
    y, fin = layer(**args, return_final_state=True)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    (yw,), (fw,) = loop(wide(args), None)
    assert rel_err(y, yw) <= 1e-2 and rel_err(fin, fw) <= 1e-2


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(beta=st.sampled_from([-6.0, -3.0, 0.0, 3.0, 6.0]), steep=st.sampled_from([0.0, 2.0,
                                                                                     6.0]),
       seed=st.integers(0, 2 ** 31 - 1))
@example(beta=6.0, steep=6.0, seed=976).via("the draw that found the decay gradients' loss")
@example(beta=-6.0, steep=6.0, seed=3).via("a second steep draw")
def test_beta_extremes_and_steep_decays(beta, steep, seed):
    """b pushed towards sigmoid 0 or 1 (beta within 3e-3 of them) and dt_bias raised so that
    decays are steep (A up to 16: per-step decays down to exp(-96)): float32 outputs and every
    gradient stay accurate. The decays' gradients (a, A_log, dt_bias) lost digits to 1.7e-3
    while the kernel's backward summed the cumulative decay's gradient in reverse (see
    kernels.py). (Further out, b's own gradient, sigmoid' = y (1 - y) in float32
    terms, loses digits near 1e-3 from b = 8 on, in the PyTorch terms, not the kernels.)"""
    torch.manual_seed(seed)
    entry, loop = CASES["gated_deltanet"]
    args = {k: v.float() for k, v in entry.example(t=35).items()}
    args["b"] = args["b"] + beta
    args["dt_bias"] = args["dt_bias"] + steep
    check(entry, loop, args, entry.initial_state().float(), tol=1e-4, gtol=1e-3)


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(steep=st.sampled_from([0.0, 3.0, 6.0]), spread=st.sampled_from([0.0, 4.0]),
       seed=st.integers(0, 2 ** 31 - 1))
@example(steep=6.0, spread=4.0, seed=0).via("steep and near-one channels side by side")
def test_kda_steep_and_mixed_decays(steep, spread, seed):
    """KDA with dt_bias raised (per-key decays down to exp(-96) a step) and, with `spread`,
    some key channels steep while others stay near 1 (f shifted per channel): the per-key
    kernels' outputs and every gradient against the float64 loop."""
    torch.manual_seed(seed)
    entry, loop = CASES["kda"]
    args = {k: v.float() for k, v in entry.example(t=21).items()}
    args["dt_bias"] = args["dt_bias"] + steep
    shift = torch.linspace(-spread, spread, args["f"].shape[-1])
    args["f"] = args["f"] + shift
    check(entry, loop, args, entry.initial_state().float(), tol=1e-4, gtol=1e-3)


@lrc.recurrence
def two_vectors(q: lrc.Seq("b t h k"), k: lrc.Seq("b t h k"), v: lrc.Seq("b t h v"),
                a: lrc.Seq("b t h k"), c: lrc.Seq("b t h k"), w: lrc.Seq("b t h k"),
                S: lrc.State("b h k v")):
    """diag(exp(-exp(w))) S - a (c^T S) + k v^T: a per-key decay, two distinct vectors."""
    S = lrc.exp(-lrc.exp(w)) * S - a * (c * S).sum("k") + k * v
    return (q * S).sum("k"), S


@lrc.recurrence
def two_vectors_no_decay(q: lrc.Seq("b t h k"), k: lrc.Seq("b t h k"),
                         v: lrc.Seq("b t h v"), a: lrc.Seq("b t h k"),
                         c: lrc.Seq("b t h k"), S: lrc.State("b h k v")):
    """S - a (c^T S) + k v^T."""
    S = S - a * (c * S).sum("k") + k * v
    return (q * S).sum("k"), S


def two_loop(a, state):
    """The float64 loop of `two_vectors` (no `w`: `two_vectors_no_decay`)."""
    B, T, H, K = a["k"].shape
    w = torch.exp(-torch.exp(a["w"])) if "w" in a else torch.ones(B, T, H, K,
                                                                  dtype=torch.float64)
    S = torch.zeros(B, H, K, a["v"].shape[-1], dtype=torch.float64) if state is None \
        else state[0]
    ys = []
    for t in range(T):
        cs = torch.einsum("bhkv,bhk->bhv", S, a["c"][:, t])
        S = (w[:, t, :, :, None] * S - a["a"][:, t, :, :, None] * cs[:, :, None, :]
             + a["k"][:, t, :, :, None] * a["v"][:, t, :, None, :])
        ys.append(torch.einsum("bhkv,bhk->bhv", S, a["q"][:, t]))
    return (torch.stack(ys, 1),), (S,)


def two_args(t: int, steep: float, spread: float) -> dict:
    """Inputs of `two_vectors` (b 2, h 2, k 5, v 3): a and c small enough that the
    transitions stay contractive; w raised by `steep` and spread over the key channels."""
    b, h, k, v = 2, 2, 5, 3
    r = lambda *s, std=1.0: torch.randn(*s) * std
    return {"q": r(b, t, h, k), "k": r(b, t, h, k, std=k ** -0.5), "v": r(b, t, h, v),
            "a": r(b, t, h, k, std=0.3), "c": r(b, t, h, k, std=0.3),
            "w": r(b, t, h, k, std=0.5) + steep + torch.linspace(-spread, spread, k)}


def test_rwkv7_two_vectors():
    """RWKV-7 (a per-key decay, the state read by kk before the step, written along
    kk * sigmoid(a)) takes the two-vector kernels: outputs, final state, every gradient."""
    entry = rwkv7.ENTRY
    assert lrc.compile(entry.spec).compiled.planned.meta("lowering").why_not("dplr") == ""
    args = {k: v.float() for k, v in entry.example(t=21).items()}
    check(entry, rwkv7_loop, args, entry.initial_state().float())


def test_rwkv7_reverse_and_bf16():
    entry = rwkv7.ENTRY
    args = {k: v.float() for k, v in entry.example(b=1, t=19).items()}

    def flipped(a, state):
        (y,), (f,) = rwkv7_loop({k: x.flip(1) for k, x in a.items()}, state)
        return (y.flip(1),), (f,)

    check(entry, flipped, args, reverse=True)
    layer = lrc.compile(entry.spec, lowering="dplr")
    half = {k: v.to(torch.bfloat16) for k, v in args.items()}
    y, fin = layer(**half, return_final_state=True)
    (yw,), (fw,) = rwkv7_loop(wide(half), None)
    assert y.dtype == torch.bfloat16 and rel_err(y, yw) <= 1e-2 and rel_err(fin, fw) <= 1e-2


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(steep=st.sampled_from([-2.0, 1.0, 2.5]), spread=st.sampled_from([0.0, 2.0]),
       seed=st.integers(0, 2 ** 31 - 1))
@example(steep=2.5, spread=2.0, seed=0).via("steep and near-one channels side by side")
def test_two_vectors_steep_and_mixed_decays(steep, spread, seed):
    """A per-key decay exp(-exp(w)) down to about exp(-90) a step beside channels near 1,
    with two distinct vectors: every exponent a running sum, so float32 holds."""
    torch.manual_seed(seed)
    check(SimpleNamespace(spec=two_vectors), two_loop, two_args(20, steep, spread),
          torch.randn(2, 2, 5, 3))


def test_two_vectors_without_decay():
    """S - a (c^T S) + k v^T (no decay: g = 0 in the kernels), from a zero state."""
    torch.manual_seed(1)
    args = {k: v for k, v in two_args(18, 0.0, 0.0).items() if k != "w"}
    check(SimpleNamespace(spec=two_vectors_no_decay), two_loop, args)


def test_cost_model_prices_chunks_and_takes_them_only_when_forced():
    """dplr is eligible and estimated cheaper than the loop when long, but the automatic
    choice keeps the scan until dplr's kernels are measured on a GPU (passes.lowering
    AUTOMATIC); forced, it runs."""
    layer = lrc.compile(gated_deltanet.ENTRY.spec)
    lw = layer.compiled.planned.meta("lowering")
    assert "dplr" in lw.eligible
    g = layer.compiled.planned
    sizes = {"b": 8, "h": 16, "k": 128, "v": 128}
    chosen, costs = lw.choose(g, sizes, 4096, 2)
    assert costs["dplr"].seconds < costs["scan"].seconds and chosen == "scan"
    assert lw.choose(g, {"b": 1, "h": 2, "k": 16, "v": 16}, 8, 2)[0] == "scan"
    forced = lrc.compile(gated_deltanet.ENTRY.spec, lowering="dplr")
    assert forced.compiled.planned.meta("lowering").choose(g, sizes, 4096, 2)[0] == "dplr"


GPU_CASES = {**CASES, "rwkv7": (rwkv7.ENTRY, rwkv7_loop)}


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(GPU_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_reference_shape(name, dtype):
    """B2 T4096 H4 K128 V128 on the GPU against the float64 loop (on the GPU too)."""
    entry, loop = GPU_CASES[name]
    args = {k: v.to(device="cuda", dtype=dtype)
            for k, v in entry.example(b=2, t=4096, h=4, k=128, v=128).items()}
    layer = lrc.compile(entry.spec, lowering="dplr")
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    y, fin = layer(**leaves, return_final_state=True)
    assert torch.isfinite(y.float()).all()
    w64 = {k: v.detach().double().requires_grad_() for k, v in args.items()}
    (yw,), (fw,) = loop(w64, None)
    tol = 1e-4 if dtype == torch.float32 else 1e-2
    assert rel_err(y, yw) <= tol and rel_err(fin, fw) <= tol
    gy = torch.randn(yw.shape, dtype=torch.float64, device="cuda")
    got = torch.autograd.grad((y.double() * gy).sum(), list(leaves.values()))
    want = torch.autograd.grad((yw * gy).sum(), list(w64.values()))
    gtol = 1e-3 if dtype == torch.float32 else 1e-2
    for n, a, b in zip(leaves, got, want, strict=True):
        assert rel_err(a, b) <= gtol, n
