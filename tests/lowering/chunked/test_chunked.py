"""The generated chunked kernels against the float64 reference: forward, final state and every
gradient (Seqs, Params, initial state), reverse, cu_seqlens, split value blocks, bf16, steep and
extreme decays, random scalar and per-key decay specs.

Under Triton's interpreter at small odd sizes with 16-step chunks (so T=37 crosses chunk
boundaries); the `gpu` tests repeat them compiled at real sizes. 16-bit inputs are compared
with the reference run on the same rounded inputs, so the error measured is the kernels'.
"""
from __future__ import annotations

import linecache
import math
import random

import pytest
import torch

import lrc
from lrc.errors import Unsupported
from lrc.kernels import aot
from lrc.kernels import tune as policy
from lrc.lowering.chunked.tune import Config, pow2
from lrc.zoo import ZOO
from tests.conftest import rel_err

CHUNKED_ZOO = ["mamba2", "retnet", "gla", "rwkv6"]
FWD, GRAD, LOW = 1e-4, 1e-3, 1e-2


def as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def layers(spec, override=None):
    """The chunked layer (its Program pinned to `override` configs if given) and the
    reference."""
    kern = lrc.compile(spec, backend="triton", lowering="chunked")
    prog = kern._lowering("chunked")
    assert prog is not None, kern.plan.note
    prog.override = override
    return kern, lrc.compile(spec, backend="reference"), prog


def check(spec, args, state=None, dtype=torch.float32, tol=FWD, gtol=GRAD, override=None,
          device="cpu", **call):
    """Forward, final state and the gradient of every input and of the initial state."""
    kern, ref, _ = layers(spec, override)
    ours = {k: v.to(device=device, dtype=dtype if v.dtype.is_floating_point else v.dtype)
            .requires_grad_(v.dtype.is_floating_point) for k, v in args.items()}
    theirs = {k: v.detach().double().clone().requires_grad_(v.dtype.is_floating_point)
              for k, v in ours.items()}
    s1 = s2 = None
    if state is not None:
        s1 = state.to(device=device, dtype=torch.float32).requires_grad_(True)
        s2 = s1.detach().double().clone().requires_grad_(True)
    y, h = kern(**ours, initial_state=s1, return_final_state=True, **call)
    y2, h2 = ref(**theirs, initial_state=s2, return_final_state=True, **call)
    for what, a, e in (("output", y, y2), ("final state", h, h2)):
        assert torch.isfinite(a.float()).all(), f"{what}: not finite"
        assert rel_err(a, e) <= tol, f"{what}: {rel_err(a, e):.2e}"
    # cotangents as the kernel gets them (a bf16 output takes a bf16 gradient)
    gy, gh = (torch.randn_like(e).to(a.dtype).double() for a, e in ((y, y2), (h, h2)))
    leaves = list(ours.values()) + ([s1] if s1 is not None else [])
    leaves2 = list(theirs.values()) + ([s2] if s2 is not None else [])
    g1 = torch.autograd.grad((y.double() * gy).sum() + (h.double() * gh).sum(), leaves)
    g2 = torch.autograd.grad((y2 * gy).sum() + (h2 * gh).sum(), leaves2)
    for name, a, e in zip(list(ours) + ["initial_state"], g1, g2, strict=False):
        assert torch.isfinite(a.float()).all(), f"grad of {name}: not finite"
        assert rel_err(a, e) <= gtol, f"grad of {name}: {rel_err(a, e):.2e}"


def zoo(name, b=2, t=37, state=True, **dims):
    e = ZOO[name]
    args = e.example(b=b, t=t, dtype=torch.float64, **dims)
    return e.spec, args, (e.initial_state(b=b, dtype=torch.float64, **dims) if state else None)


@pytest.mark.parametrize("name", CHUNKED_ZOO)
def test_zoo_forward_and_gradients(name):
    check(*zoo(name))


@pytest.mark.parametrize("name", ["mamba2", "rwkv6"])
def test_reverse(name):
    check(*zoo(name, b=1, t=35), reverse=True)


def test_without_initial_state():
    spec, args, _ = zoo("gla", t=33)
    check(spec, args)


def test_chunked_equals_scan():
    spec, args, state = zoo("mamba2", t=29)
    kern, _, _ = layers(spec)
    scan = lrc.compile(spec, backend="triton", lowering="scan")
    a = {k: v.float() for k, v in args.items()}
    y, h = kern(**a, initial_state=state.float(), return_final_state=True)
    y2, h2 = scan(**a, initial_state=state.float(), return_final_state=True)
    assert rel_err(y, y2) <= FWD and rel_err(h, h2) <= FWD


@pytest.mark.parametrize("name", ["mamba2", "gla"])
def test_cu_seqlens(name):
    """Packed sequences, each from its own initial state (lengths cross chunk boundaries)."""
    e = ZOO[name]
    args = e.example(b=1, t=41, dtype=torch.float64)
    state = e.initial_state(b=3, dtype=torch.float64)
    check(e.spec, args, state, cu_seqlens=torch.tensor([0, 17, 18, 41]), reverse=name == "gla")


def test_split_value_blocks():
    """Values over several programs: gradients of inputs lacking the value dim are summed
    atomically across them (and across heads sharing Mamba-2's grouped B and C)."""
    spec, args, state = zoo("mamba2", b=1, t=21, p=37)
    check(spec, args, state, override=(Config(16, 16), Config(16, 16)))


@pytest.mark.parametrize("name", ["mamba2", "gla"])
def test_bf16(name):
    check(*zoo(name, t=45), dtype=torch.bfloat16, tol=LOW, gtol=LOW)


# sizes with no partial tile: T a whole number of 16-step chunks, keys and values powers of two
WHOLE = {"mamba2": dict(g=2, r=3, p=16, n=32), "gla": dict(h=3, k=32, v=16),
         "rwkv6": dict(h=3, k=16, v=32), "retnet": dict(h=3, k=16, v=16)}


@pytest.mark.parametrize("name", CHUNKED_ZOO)
def test_whole_tiles_run_without_masks(name):
    """Whole tiles only: the forward and the backward launch with EVEN (masks that fold
    away) and still match the reference; a ragged T launches without it."""
    spec, args, state = zoo(name, b=2, t=48, **WHOLE[name])
    with aot.recording() as launches:
        check(spec, args, state)
    even = {r.name.rsplit(".", 1)[-1] for r in launches if r.consts.get("EVEN")}
    assert {"chunked_forward", "chunked_backward"} <= even, even
    spec, args, state = zoo(name, b=1, t=47, **WHOLE[name])
    with aot.recording() as launches:
        check(spec, args, state)
    assert launches and not any(r.consts.get("EVEN") for r in launches)


@pytest.mark.parametrize("mode", [1, 2])
def test_whole_tiles_split_over_chunks(mode):
    """EVEN in the split kernels too (chunked_tune.LOCAL, PASS: the states kernel, the state
    pass, the chunks in parallel)."""
    spec, args, state = zoo("mamba2", b=2, t=48, **WHOLE["mamba2"])
    split = Config(16, 16, 1, 1, split=mode)
    with aot.recording() as launches:
        check(spec, args, state, override=(split, split))
    assert all(r.consts.get("EVEN") for r in launches), [r.name for r in launches]
    assert {"chunked_forward", "chunked_backward"} <= {r.name.rsplit(".", 1)[-1]
                                                       for r in launches}


def test_extreme_dt_bf16_is_finite():
    """dt far out in softplus (decays of exp(-1e3) and of 1): bf16 stays finite and right."""
    spec, args, state = zoo("mamba2", b=1, t=70)
    args["dt"] = torch.where(torch.rand_like(args["dt"]) < 0.3, 1e3, -30.0) + args["dt"]
    check(spec, args, state, dtype=torch.bfloat16, tol=LOW, gtol=LOW)


@pytest.mark.parametrize("steep", [7.0, 45.0])
def test_steep_per_key_decays(steep):
    """Log-decays of -7 (-45) per step for every other key in the second chunk: too steep to
    factor over the chunk, so it takes four blocks (columns one at a time), while the other
    keys still carry across blocks; the other chunks factor whole."""
    spec, args, state = zoo("gla", t=50)
    mask = ((torch.arange(50) // 16 == 1)[:, None] & (torch.arange(5) % 2 == 0)).double()
    args["gk"] = args["gk"] - mask[None, :, None, :] * steep * (
        1 + 0.2 * torch.rand_like(args["gk"]))
    check(spec, args, state)
    check(spec, args, state, dtype=torch.bfloat16, tol=LOW, gtol=LOW)


def test_unchunkable_spec_runs_the_scan():
    spec = ZOO["mamba1"].spec
    with pytest.raises(lrc.passes.lowering.LoweringError):
        lrc.compile(spec, backend="triton", lowering="chunked")
    kern = lrc.compile(spec, backend="triton")
    with pytest.raises(Unsupported):
        from lrc.lowering.chunked.program import Program

        Program(kern.compiled)


def test_sources_are_readable():
    _, _, prog = layers(ZOO["mamba2"].spec)
    for which in ("forward", "backward"):
        src = prog.sources[which]
        assert src in prog.source and "@triton.jit" in src and "_dot(" in src
    assert "# v = x*softplus(dt + dt_bias)" in prog.sources["forward"]
    assert "# gradient of dt_bias" in prog.sources["backward"]
    assert "tl.atomic_add" in prog.sources["backward"]  # B and C are shared by a group


def _tied(x: lrc.Seq("b t h n"), v: lrc.Seq("b t h p"), a: lrc.Seq("b t h"),
          S: lrc.State("b h n p")):
    S = lrc.exp(-lrc.softplus(a)) * S + x * v
    return (x * S).sum("n"), S


@pytest.mark.parametrize("split", [None, 2])
def test_an_input_read_as_query_and_key(split):
    """x is both the query and the key: its gradient has a term from each. A scalar decay's
    backward emits the key's part first (fewer registers alive), so the query's part is added
    to it and the gradient stored once, after both. Against the reference, one row a program
    and split over chunks."""
    spec = lrc.recurrence(_tied, name="tied_query_key")
    g = torch.Generator().manual_seed(11)
    args = {"x": torch.randn(2, 37, 3, 19, generator=g, dtype=torch.float64) / 4,
            "v": torch.randn(2, 37, 3, 7, generator=g, dtype=torch.float64),
            "a": torch.randn(2, 37, 3, generator=g, dtype=torch.float64)}
    state = torch.randn(2, 3, 19, 7, generator=g, dtype=torch.float64)
    override = None if split is None else (ONE_ROW, Config(16, 32, 1, 1, split=split))
    check(spec, args, state, override=override)
    src = layers(spec)[2].sources["backward"]
    key, query = src.index("d_k = _dot(tl.trans(dad)"), src.index("d_q = _dot(dad")
    assert key < query  # the key's part first
    first, added = src.index("d_a_x = ", key), src.index("d_a_x += ", query)
    store = src.index("tl.store(g_a_x_ptr", added)
    assert key < first < query < added < store and "tl.store(g_a_x_ptr" not in src[key:added]


# ---- random specs: scalar and per-key decays, gates, skips, bonuses, layouts, groups

DECAYS = {  # name -> (expression, extra inputs (name, role, dims kind, maker)), per key?
    "softplus": ("exp(-softplus(a + a_bias) * exp(a_log))", False),
    "sigmoid": ("sigmoid(a)", False),
    "gamma": ("gamma", False),
    "gk": ("exp(gk)", True),
    "sigmoid_k": ("sigmoid(a)", True),
    "rwkv": ("exp(-exp(w0 + a))", True),
}


def random_spec(seed: int):
    """A random chunkable spec written out as source, and a maker of its inputs."""
    rng = random.Random(seed)
    decay = rng.choice(sorted(DECAYS))
    expr, per_key = DECAYS[decay]
    grouped = rng.random() < 0.5
    hax = "(g r)" if grouped else "h"
    kh = "g" if grouped else hax   # q, k shared by the heads of a group
    time_last = rng.random() < 0.3
    args: dict[str, tuple[str, str]] = {}

    def seq(name, *dims):
        inner = list(dims)
        rng.shuffle(inner)
        axes = ["b"] + inner + ["t"] if time_last else ["b", "t"] + inner
        args[name] = ("Seq", " ".join(axes))

    seq("q", kh, "n")
    seq("k", kh, "n")
    seq("v", hax, "p")
    if decay in ("softplus", "sigmoid"):
        seq("a", hax)
    if decay in ("sigmoid_k", "rwkv"):
        seq("a", hax, "n")
    if decay == "gk":
        seq("gk", hax, "n")
    for p, dims in {"softplus": [("a_bias", hax), ("a_log", hax)], "gamma": [("gamma", hax)],
                    "rwkv": [("w0", f"{hax} n")]}.get(decay, []):
        args[p] = ("Param", dims)
    inp = rng.choice(["k * v", "beta * k * v", "sigmoid(k) * v * 0.5"])
    if "beta" in inp:
        seq("beta", hax)
    old = rng.random() < 0.35
    gate = rng.choice(["", "silu(z)", "sigmoid(zh)"])
    if gate == "silu(z)":
        seq("z", hax, "p")
    if gate == "sigmoid(zh)":
        seq("zh", hax)
    skip = rng.random() < 0.5
    if old:
        args["u"] = ("Param", f"{hax} n")
    if skip:
        args["D"] = ("Param", hax)
    sdims = ["n", "p"] if rng.random() < 0.5 else ["p", "n"]
    sig = ", ".join(f'{n}: {r}("{d}")' for n, (r, d) in args.items())
    lines = [f'def step({sig}, S: State("b {hax} {" ".join(sdims)}")):']
    read = '(q * (S + u * k * v)).sum("n")' if old else '(q * S).sum("n")'
    if old:
        lines.append(f"    y = {read}")
    lines.append(f"    S = {expr} * S + {inp}")
    if not old:
        lines.append(f"    y = {read}")
    out = "y" + (f" * {gate}" if gate else "") + (" + D * v" if skip else "")
    lines += [f"    return {out}, S", ""]
    source = "\n".join(lines)
    filename = f"<lrc-chunked-spec-{seed}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = {"Seq": lrc.Seq, "Param": lrc.Param, "State": lrc.State, "exp": lrc.exp,
          "softplus": lrc.softplus, "sigmoid": lrc.sigmoid, "silu": lrc.silu}
    exec(compile(source, filename, "exec"), ns)
    spec = lrc.recurrence(ns["step"], name=f"chunked_random_{seed}")
    sizes = {"g": 2, "r": 2, "h": 3, "n": rng.choice([5, 16, 19]), "p": rng.choice([7, 16])}

    def make(b: int, t: int) -> tuple[dict, torch.Tensor]:
        out = {}
        for name, (_, dims) in args.items():
            shape = [math.prod(b if d == "b" else t if d == "t" else sizes[d]
                               for d in ax.strip("()").split()) for ax in _axes(dims)]
            x = torch.randn(shape, dtype=torch.float64)
            if name in ("q", "k"):
                x = x / math.sqrt(sizes["n"])
            if name == "gk":
                x = torch.nn.functional.logsigmoid(x) / 4
            if name == "gamma":
                x = 0.8 + 0.19 * torch.rand(shape, dtype=torch.float64)
            if name == "a" and decay == "sigmoid":
                x = x + 3
            if name == "w0":
                x = x - 1
            out[name] = x
        st = [math.prod(b if d == "b" else sizes[d] for d in ax.strip("()").split())
              for ax in _axes(f"b {hax} {' '.join(sdims)}")]
        return out, torch.randn(st, dtype=torch.float64) * 0.5

    return spec, make, source


def _axes(text: str) -> list[str]:
    import re

    return re.findall(r"\([^)]*\)|\S+", text)


# seeds drawing every decay kind, time first and last, old and new readouts, groups, gates
SEEDS = [1, 2, 3, 5, 7, 16, 27, 29]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_specs(seed):
    spec, make, source = random_spec(seed)
    args, state = make(2, 37)
    try:
        check(spec, args, state)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{source}") from None


# ---- the same on the GPU, at real sizes (the lead runs these)

def test_tuned_configs_persist(tmp_path, monkeypatch):
    """A chunked config tuned in one process is read back from disk by the next (same key,
    same kind of GPU), and not for another device or shape."""
    from lrc.lowering.chunked import tune as chunked_tune

    monkeypatch.setenv("LRC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(policy, "_CACHE", {})
    key = ("kernel source", (("b", 8), ("h", 16)), 4096, torch.bfloat16, False, False,
           "backward", True)
    cfg = Config(64, 128, 4, 1, split=2, bk=64, wk=64)
    assert chunked_tune.remembered(key, "NVIDIA H200") is None
    chunked_tune.remember(key, "NVIDIA H200", cfg)
    policy._CACHE.clear()
    assert chunked_tune.remembered(key, "NVIDIA H200") == cfg
    assert policy.chosen(key) == cfg
    assert chunked_tune.remembered(key, "NVIDIA A100") is None
    assert chunked_tune.remembered(key[:2] + (4097,) + key[3:], "NVIDIA H200") is None
    assert (tmp_path / "chunked_tuned.json").exists()
    assert not (tmp_path / "scan_tuned.json").exists()  # the scan's table is its own


GPU_SIZES = {"mamba2": dict(g=2, r=4, p=64, n=128), "retnet": dict(h=4, k=128, v=128),
             "gla": dict(h=4, k=128, v=128), "rwkv6": dict(h=4, k=64, v=64)}


@pytest.mark.gpu
@pytest.mark.parametrize("name", CHUNKED_ZOO)
def test_gpu_forward_and_gradients(name):
    check(*zoo(name, b=2, t=2049, **GPU_SIZES[name]), device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", CHUNKED_ZOO)
def test_gpu_bf16(name):
    check(*zoo(name, b=2, t=4097, **GPU_SIZES[name]), dtype=torch.bfloat16, tol=LOW, gtol=LOW,
          device="cuda")


@pytest.mark.gpu
def test_gpu_tuned_config_read_back(knobs, monkeypatch, tmp_path):
    """With tuning on, the first process times the candidates and writes the choice; a
    process that finds it on disk (here: the in-process choices forgotten) times nothing
    and gives the same results."""
    knobs(tune=True)
    monkeypatch.setenv("LRC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(policy, "_CACHE", {})
    spec, args, _ = zoo("mamba2", b=2, t=1000, **GPU_SIZES["mamba2"])
    layer = lrc.compile(spec, backend="triton", lowering="chunked")
    args = {k: v.float().cuda() for k, v in args.items()}
    y1 = layer(**args)
    assert (tmp_path / "chunked_tuned.json").exists()
    monkeypatch.setattr(policy, "_CACHE", {})

    def no_timing(*a, **k):
        raise AssertionError("timed again")
    monkeypatch.setattr(policy, "choose", no_timing)
    y2 = layer(**args)
    assert torch.equal(y1, y2)


@pytest.mark.gpu
@pytest.mark.parametrize("name", CHUNKED_ZOO)
def test_gpu_whole_tiles(name):
    """The reference shapes' case: T a multiple of every chunk size, so EVEN kernels run."""
    check(*zoo(name, b=2, t=4096, **GPU_SIZES[name]), dtype=torch.bfloat16, tol=LOW,
          gtol=LOW, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba2", "gla"])
def test_gpu_long(name):
    check(*zoo(name, b=1, t=16384, **GPU_SIZES[name]), device="cuda")


@pytest.mark.gpu
def test_gpu_extreme_dt_bf16_long():
    spec, args, state = zoo("mamba2", b=1, t=16384, **GPU_SIZES["mamba2"])
    args["dt"] = torch.where(torch.rand_like(args["dt"]) < 0.3, 1e3, -30.0) + args["dt"]
    check(spec, args, state, dtype=torch.bfloat16, tol=LOW, gtol=LOW, device="cuda")


@pytest.mark.gpu
def test_gpu_steep_per_key_bf16():
    spec, args, state = zoo("gla", b=1, t=4096, **GPU_SIZES["gla"])
    steep = (torch.arange(4096) // 64 % 3 == 1).double()[None, :, None, None]
    args["gk"] = args["gk"] - 40 * steep * torch.rand_like(args["gk"])
    check(spec, args, state, dtype=torch.bfloat16, tol=LOW, gtol=LOW, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba2", "rwkv6"])
def test_gpu_reverse_and_cu_seqlens(name):
    e = ZOO[name]
    sizes = GPU_SIZES[name]
    args = e.example(b=1, t=3000, dtype=torch.float64, **sizes)
    state = e.initial_state(b=3, dtype=torch.float64, **sizes)
    cu = torch.tensor([0, 1000, 1001, 3000], device="cuda")
    check(e.spec, args, state, device="cuda", cu_seqlens=cu, reverse=True)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", SEEDS)
def test_gpu_random_specs(seed):
    spec, make, _ = random_spec(seed)
    args, state = make(2, 1500)
    check(spec, args, state, device="cuda")


def test_tuner_times_the_kernels_alone():
    """The chunked tuner's timing runs fire a config's recorded launches again: `go` (buffers,
    arguments) runs once per config, the kernels every time."""
    from lrc.lowering.chunked.launch import Launcher

    fired, made = [], []

    class Fake:
        def fire(self, *a):
            fired.append(a)

    fake = Fake()

    def go(cfg):
        made.append(cfg)
        fake.fire("forward", (1,), [cfg], {})

    run = Launcher._kernels_only(fake, go)
    for cfg in ("a", "a", "b", "a"):
        run(cfg)
    assert made == ["a", "b"] and fired.count(("forward", (1,), ["a"], {})) == 3
    assert "fire" not in vars(fake)  # the instance's fire is the class's again


ONE_ROW = Config(16, 32, 1, 1)
SPLITS = {"local": ([("forward", 1, None), ("states", None, False), ("forward", 2, None)],
                    [("backward", 1, None), ("states", None, True), ("backward", 2, None)]),
          "pass": ([("forward", 3, None), ("forward", 2, None)],
                   [("backward", 3, None), ("backward", 2, None)])}
SPLITS["heads"] = SPLITS["all heads"] = SPLITS["pass"]
# heads: the PASS backward's chunks looping over blocks of the heads that share B and C
# (Mamba-2's groups; no other chunked zoo spec shares an input across a grid dim): blocks of
# 2 of the 3 heads (the sums added atomically), or all of them in one block (stored)
SPLIT_CASES = [(n, m) for n in CHUNKED_ZOO for m in ("local", "pass")] + [
    ("mamba2", "heads"), ("mamba2", "all heads")]


@pytest.mark.parametrize("name,mode", SPLIT_CASES)
@pytest.mark.parametrize("sides", ["forward", "backward", "both"])
def test_split_over_chunks(name, sides, mode, monkeypatch):
    """The forward and/or the backward split over chunks against the reference: forward,
    final state and every gradient; with an initial state or none, reversed, packed sequences,
    bf16. `local`: each chunk's own part of the state, or of its gradient, in parallel, the
    states kernel passing it from chunk to chunk (front to back, or back to front), then each
    chunk's outputs, or gradients, in parallel. `pass`: one program per row passes the state
    (or its gradient) alone and stores it per chunk, then the chunks in parallel."""
    from lrc.lowering.chunked.launch import Launcher
    from lrc.lowering.chunked.tune import LOCAL, PASS

    heads = {"heads": 2, "all heads": 4}.get(mode, 0)
    by_chunk = Config(16, 32, 1, 1, split=LOCAL if mode == "local" else PASS, heads=heads)
    SPLIT = (by_chunk if sides != "backward" else ONE_ROW,
             by_chunk if sides != "forward" else ONE_ROW)
    fired, looped = [], []
    fire = Launcher.fire

    def spy(self, which, grid, args, consts):
        fired.append((which, consts.get("PHASE"), consts.get("BACK")))
        looped.append(consts.get("HEADS", False))
        return fire(self, which, grid, args, consts)

    monkeypatch.setattr(Launcher, "fire", spy)
    spec, args, state = zoo(name)
    check(spec, args, state, override=SPLIT)
    fwd, bwd = SPLITS[mode]
    assert fired == ((fwd if SPLIT[0].split else [("forward", 0, None)]) +
                     (bwd if SPLIT[1].split else [("backward", 0, None)]))
    assert looped[-1] == (heads if sides != "forward" else 0)  # the backward's chunks
    check(spec, args, override=SPLIT, reverse=True)
    e = ZOO[name]
    packed = e.example(b=1, t=41, dtype=torch.float64)
    check(e.spec, packed, e.initial_state(b=3, dtype=torch.float64), override=SPLIT,
          cu_seqlens=torch.tensor([0, 17, 18, 41]))
    if name == "mamba2":
        check(spec, args, state, dtype=torch.bfloat16, tol=LOW, gtol=LOW, override=SPLIT)


KEY_DIM = {"mamba2": "n", "gla": "k", "retnet": "k", "rwkv6": "k"}


KEYED = {  # mode -> (forward config, backward config, the launches (kernel, PHASE, NKB, BK))
    "chunks": (ONE_ROW, Config(16, 32, 1, 1, split=2, bk=16),
               [("forward", 0, 1, 64), ("backward", 3, 1, 64), ("backward", 2, 3, 16)]),
    "chunks, heads": (ONE_ROW, Config(16, 32, 1, 1, split=2, heads=2, bk=16),
                      [("forward", 0, 1, 64), ("backward", 3, 1, 64), ("backward", 2, 3, 16)]),
    "passes": (Config(16, 32, 1, 1, split=2, wk=16), Config(16, 32, 1, 1, split=2, bk=16, wk=16),
               [("forward", 3, 3, 16), ("forward", 2, 1, 64), ("backward", 3, 3, 16),
                ("backward", 2, 3, 16)]),
    "spread": (ONE_ROW, Config(16, 32, 1, 1, split=2, spread=True, wk=16),
               [("forward", 0, 1, 64), ("backward", 3, 3, 16), ("backward", 2, 1, 64),
                ("sum", None, None, None), ("sum", None, None, None)]),
}


@pytest.mark.parametrize("name,mode", [("mamba2", m) for m in KEYED] + [
    ("gla", "chunks"), ("gla", "passes"), ("rwkv6", "passes")])
def test_key_blocks(name, mode, monkeypatch):
    """PASS with the keys in blocks (37 keys, three blocks of 16, the last short): the
    backward's chunks (Config.bk), each block adding its part of the gradients that sum over
    the keys; the state passes (Config.wk), forward and backward, a state's rows passed
    independently; and (spread) each head's part of the gradients of Mamba-2's shared B and C
    stored in its own slab and the slabs summed. Against the reference, every gradient and
    the initial state's; reversed, packed, bf16. Mamba-2 (scalar decay, skip, heads sharing
    B and C, also looped 2 heads a block), GLA (per-key decay), RWKV-6 (per-key decay and the
    bonus term)."""
    from lrc.lowering.chunked.launch import Launcher

    fwd, bwd, expect = KEYED[mode]
    launches = []
    fire = Launcher.fire

    def spy(self, which, grid, args, consts):
        launches.append((which, consts.get("PHASE"), consts.get("NKB"), consts.get("BK")))
        return fire(self, which, grid, args, consts)

    monkeypatch.setattr(Launcher, "fire", spy)
    dims = {KEY_DIM[name]: 37}
    if name == "mamba2":  # one group of 3 heads (blocks of 2 and 1 where they loop)
        dims.update(g=1, r=3)
    spec, args, state = zoo(name, **dims)
    check(spec, args, state, override=(fwd, bwd))
    assert launches == expect
    check(spec, args, override=(fwd, bwd), reverse=True)
    e = ZOO[name]
    packed = e.example(b=1, t=41, dtype=torch.float64, **dims)
    check(e.spec, packed, e.initial_state(b=3, dtype=torch.float64, **dims),
          override=(fwd, bwd), cu_seqlens=torch.tensor([0, 17, 18, 41]))
    if name == "mamba2":  # bf16 at the default 9 heads: with 3, dt_bias's gradient (3 sums
        # over every step, with cancellation) is 1.3-1.5e-2 off for some seeds, the one-row
        # backward's as much as the key blocks' (LRC_SEED=4042349003)
        spec, args, state = zoo(name, n=37)
        check(spec, args, state, dtype=torch.bfloat16, tol=LOW, gtol=LOW, override=(fwd, bwd))


@pytest.mark.gpu
@pytest.mark.parametrize("name,mode", [("mamba2", 1), ("mamba2", 2), ("mamba2", 3),
                                       ("mamba2", 4), ("mamba2", 5), ("gla", 1), ("gla", 2),
                                       ("gla", 4)])
def test_gpu_split_over_chunks(name, mode):
    """The forward and backward split over chunks (mode: chunked_tune.LOCAL, PASS; 3: PASS
    with the backward's chunks looping over the heads sharing an input; 4: PASS with the
    state passes and the backward's chunks taking the keys in blocks of 64; 5: PASS with
    the heads' parts of the shared inputs' gradients in slabs) compiled for the GPU (the
    tuner may pick them): bf16 at T = 4097 and float32 at T = 2049, every gradient."""
    V = pow2(GPU_SIZES[name].get("p", GPU_SIZES[name].get("v", 32)))
    more = {3: dict(heads=3), 4: dict(bk=64, wk=64), 5: dict(spread=True)}.get(mode, {})
    walk = {"wk": more["wk"]} if "wk" in more else {}  # 3 heads a block: the last short
    mode = min(mode, 2)
    split = (Config(64, V, 4, 2, split=mode, **walk),
             Config(64, V, 4 if more else 8, 1, split=mode, **more))
    check(*zoo(name, b=2, t=4097, **GPU_SIZES[name]), dtype=torch.bfloat16, tol=LOW, gtol=LOW,
          device="cuda", override=split)
    split32 = (Config(32, V, 4, 1, split=mode, **walk),
               Config(32, V, 8, 1, split=mode, **more))
    check(*zoo(name, b=2, t=2049, **GPU_SIZES[name]), device="cuda", override=split32)


def test_looped_heads_only_where_heads_share_an_input():
    """Mamba-2's heads share their group's B and C: its backward's chunks may loop over blocks
    of heads (the tuner tries 64 a block); GLA's inputs are all per head, so its
    candidates have no such blocks."""
    from lrc.lowering.chunked.tune import candidates

    looped = {n: layers(ZOO[n].spec)[2].looped for n in ("mamba2", "gla")}
    assert looped["mamba2"][0] == "r" and set(looped["mamba2"][1]) == {"B", "C"}
    assert looped["gla"] == (None, [])
    heads = {c.heads for c in candidates("backward", 64, False, True, 64, looped=True)}
    assert heads == {0, 64}
    assert {c.heads for c in candidates("backward", 128, True, True, 64)} == {0}
