"""Element offsets past 2^31 in the scan and decode-step kernels: an index times a stride,
both int32, wraps (Mamba-1 in `b d t` at d = 5120, T = 524288: u's last channels start at
2,683,830,272; its checkpoints at b = 8, T = 65536: 2,683,699,200). The launcher sets the
constexpr I64 when some tensor reaches that far (the tile's index vectors then multiply in
int64); chunk and segment indices always do.

Under the interpreter the tensors are tiny but strided far apart (tests/far.py: views into
address space reserved without memory), so an int32 product would read or write the wrong
element; each test compares with the float64 reference. The `gpu` test runs Mamba-1 at the
real size.
"""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc.kernels import abi
from lrc.lowering.scan import autograd as scan_autograd
from lrc.lowering.scan.configs import ScanConfig
from lrc.zoo import ZOO
from tests.conftest import rel_err
from tests.far import WRAP, far_allocations, far_copy

FWD, GRAD, BF16 = 1e-4, 1e-3, 1e-2
# Mamba-1 at b=1 d=3 n=3: index 2 of a dim strided 2^30 apart sits at 2^31
SIZES = dict(b=1, d=3, n=3)
# the forward with n unrolled (`forward_n`, `backward_n`): whole, and as a tl.range loop
UNROLLED = {"scan": None, "unrolled": ScanConfig(4, 4, 4, 2, unroll=True),
            "unrolled loop": ScanConfig(4, 4, 4, 2, unroll=True, loop=1)}


@pytest.fixture(autouse=True)
def no_replays(monkeypatch):
    """Far buffers are not contiguous, which a recorded replay assumes of the buffers it
    makes again: nothing is recorded here."""
    monkeypatch.setattr(scan_autograd, "keep_replay", lambda *a, **k: None)


@pytest.fixture
def consts(monkeypatch):
    """The constexprs of every scan launch, in order."""
    seen = []
    fire = scan_autograd.Launch.fire

    def spy(self, params, c, grid):
        seen.append(dict(c))
        return fire(self, params, c, grid)

    monkeypatch.setattr(scan_autograd.Launch, "fire", spy)
    return seen


def layers():
    spec = ZOO["mamba1"].spec
    return (lrc.compile(spec, backend="triton", lowering="scan"),
            lrc.compile(spec, backend="reference"))


def check(ours: dict, state=None, far_grads: bool = True, t: int = 5) -> None:
    """Mamba-1 on `ours` (float32 leaves, some of them far views) against the float64
    reference on the same values: output, final state, and the gradient of every input and
    of the initial state, the output's and final state's cotangents far views too (the
    backward reads them at far offsets) when `far_grads`."""
    kern, ref = layers()
    theirs = {k: v.detach().double().clone().requires_grad_(True) for k, v in ours.items()}
    s2 = None if state is None else state.detach().double().clone().requires_grad_(True)
    y, h = kern(**ours, initial_state=state, return_final_state=True)
    y2, h2 = ref(**theirs, initial_state=s2, return_final_state=True)
    assert rel_err(y, y2) <= FWD, f"output: {rel_err(y, y2):.2e}"
    assert rel_err(h, h2) <= FWD, f"final state: {rel_err(h, h2):.2e}"
    gy, gh = torch.randn_like(y2), torch.randn_like(h2)
    gy1, gh1 = gy.float(), gh.float()
    if far_grads:  # channels (dim 1 of y: b d t; of h: b d n) 2^30 apart
        gy1, gh1 = far_copy(gy1, 1), far_copy(gh1, 1)
    leaves = list(ours.values()) + ([state] if state is not None else [])
    leaves2 = list(theirs.values()) + ([s2] if s2 is not None else [])
    g1 = torch.autograd.grad((y, h), leaves, (gy1, gh1))
    g2 = torch.autograd.grad((y2, h2), leaves2, (gy, gh))
    for name, a, e in zip(list(ours) + ["initial_state"], g1, g2, strict=True):
        assert rel_err(a, e) <= GRAD, f"grad of {name}: {rel_err(a, e):.2e}"


def inputs(t: int = 5, far: bool = True) -> tuple[dict, torch.Tensor]:
    """Mamba-1's arguments and initial state, float32 leaves: with `far`, u and dt with
    channels (b d t), B and C with state indices (b n t) 2^30 elements apart, and the
    initial state's channels."""
    e = ZOO["mamba1"]
    args = {k: v.float() for k, v in e.example(t=t, dtype=torch.float64, **SIZES).items()}
    state = e.initial_state(dtype=torch.float32, **SIZES)
    if far:
        for k in ("u", "dt", "B", "C"):
            args[k] = far_copy(args[k], 1)
        state = far_copy(state, 1)
    return ({k: v.requires_grad_(True) for k, v in args.items()},
            state.requires_grad_(True))


def test_far_views_reach_past_int32():
    """The views put index 2 of their far dim at element 2^31: an int32 product would wrap,
    and the launcher's check sees it."""
    args, state = inputs()
    u = args["u"]
    assert 2 * u.stride(1) == WRAP and u.storage_offset() == WRAP
    assert abi.needs_int64([u]) and abi.needs_int64([state])
    assert not abi.needs_int64([torch.zeros(3, 5), u.detach().contiguous()])
    assert torch.equal(u[0, 2], u.detach().contiguous()[0, 2])


def test_the_check_at_real_sizes():
    """The launcher's check on Mamba-1's tensors at the sizes of the report (meta tensors:
    shapes and strides only): u in b d t at d = 4096, T = 524288 ends at 2^31 - 1 (int32
    still holds every offset); one channel more, or d = 5120 (u's last channel at
    5119 * 524288 = 2,683,830,272), or the checkpoints at b = 8, T = 65536 in 16-step
    chunks (chunk 4095 at 4095 * 8 * 5120 * 16 = 2,683,699,200) need int64."""
    meta = lambda *s: torch.empty(*s, device="meta")
    assert not abi.needs_int64([meta(1, 4096, 524288), meta(1, 16, 524288)])
    assert abi.needs_int64([meta(1, 4097, 524288)])
    u = meta(1, 5120, 524288)
    assert 5119 * u.stride(1) == 2_683_830_272 and abi.needs_int64([u])
    chk = meta(65536 // 16, 8, 5120, 16)
    assert 4095 * chk.stride(0) == 2_683_699_200 and abi.needs_int64([chk])
    assert not abi.needs_int64([meta(0, 2 ** 40), 3, None])


@pytest.mark.parametrize("kind", list(UNROLLED))
def test_inputs_and_states_past_int32(knobs, kind, consts):
    """Seq inputs, the initial state, and the output's and final state's cotangents with
    channels (or state indices) 2^30 apart: every tile-dim offset of the forward and the
    backward past 2^31 (o_d * u_s_d, o_n * B_s_n, and the unrolled dim's scalar o_n)."""
    if UNROLLED[kind] is not None:
        knobs(scan_config=UNROLLED[kind])
    check(*inputs())
    assert consts and all(c["I64"] for c in consts)


def test_normal_sizes_take_int32_kernels(consts):
    """The same call on ordinary tensors: every launch with I64 off (the kernels as they
    were, no 64-bit index vector)."""
    args, state = inputs(far=False)
    check(args, state, far_grads=False)
    assert consts and not any(c["I64"] for c in consts)


@pytest.mark.parametrize("kind", list(UNROLLED))
def test_checkpoints_past_int32(knobs, kind):
    """Five 4-step chunks whose checkpoints lie 2^30 elements apart: chunk 2 at 2^31, and
    chunk 4 at 2^32, which int32 wraps onto chunk 0 (so the backward would read chunk 4's
    state for chunk 0). The inputs are ordinary: only the scalar c * h_chk_sc is far."""
    knobs(scan_chunk=4, **({"scan_config": UNROLLED[kind]} if UNROLLED[kind] else {}))
    args, state = inputs(t=20, far=False)
    with far_allocations(5) as made:
        check(args, state, far_grads=False)
    assert made and all(shape[0] == 5 for shape in made)


def test_segments_past_int32(knobs):
    """The two-level scan with five segments of one 4-step chunk each, forward and backward:
    segment summaries (h at each segment's end, its decay) and per-segment partial sums of
    the Params' gradients 2^30 elements apart, so segment 4 (and summary j = 4) sits at
    2^32: seg * h_sum_sc, j * h_dec_sc, seg * d_D_g_sc."""
    knobs(scan_chunk=4, scan_segments=5)
    args, state = inputs(t=20, far=False)
    with far_allocations(5) as made:
        check(args, state, far_grads=False)
    shapes = {len(s) for s in made}
    assert len(made) >= 4 and 5 in shapes  # checkpoints and summaries (b d n), decays


def test_decode_step_past_int32(consts):
    """layer.step with the state's channels and the token's inputs 2^30 apart (the step
    kernel's o_d * h_s_d), against the reference's step."""
    kern, ref = layers()
    args, state = inputs(t=1)
    tok = {k: (v.detach()[..., 0] if k in ("u", "dt", "B", "C") else v.detach())
           for k, v in args.items()}
    y, h = kern.step(**tok, state=state.detach())
    y2, h2 = ref.step(**{k: v.double() for k, v in tok.items()},
                      state=state.detach().double())
    assert rel_err(y, y2) <= FWD and rel_err(h, h2) <= FWD, (rel_err(y, y2), rel_err(h, h2))
    assert consts and all(c["I64"] for c in consts)


@pytest.mark.gpu
def test_mamba1_long_context_gpu(consts):
    """Mamba-1 in `b d t` at b=1, d=5120, n=16, T=524288, bf16 (u, dt, y: 2.7e9 elements,
    5.4 GB each; the checkpoints 2.7e9 float32): channels from 4096 on start past 2^31, and
    so do the checkpoints of the later chunks. Forward and backward on the GPU; channels
    on both sides of 2^31 (and the last) compared with (a) the same layer re-run on just
    those channels, contiguous (small offsets, I64 off), and (b) the float64 reference on
    the first 1024 steps of them."""
    dev = "cuda"
    b, d, n, T = 1, 5120, 16, 524288
    e = ZOO["mamba1"]
    kern = lrc.compile(e.spec, backend="triton", lowering="scan")
    ref = lrc.compile(e.spec, backend="reference")
    params = e.init_params(dtype=torch.float32, device=dev, d=d, n=n)
    gen = torch.Generator(device=dev).manual_seed(0)
    r = lambda *s, std=1.0: (std * torch.randn(*s, generator=gen, device=dev,
                                               dtype=torch.bfloat16))
    seqs = {"u": r(b, d, T), "dt": r(b, d, T, std=0.25), "B": r(b, n, T), "C": r(b, n, T)}
    assert seqs["u"][0, 4096:].storage_offset() == 4096 * T >= WRAP
    leaves = {k: v.requires_grad_(True) for k, v in {**seqs, **params}.items()}
    y = kern(**leaves)
    gy = r(b, d, T)
    grads = torch.autograd.grad(y, [leaves["u"], leaves["dt"], leaves["D"]], gy)
    assert consts and all(c["I64"] for c in consts)  # every launch (tuning runs too)
    del consts[:]
    chans = torch.tensor([0, 1, 4095, 4096, 4097, 5118, 5119], device=dev)
    # (a) the same channels alone: a small, contiguous problem
    sub = {k: (v.detach().index_select(1, chans).contiguous() if k in ("u", "dt") else
               v.detach().index_select(0, chans).contiguous() if k in ("A_log", "D", "dt_bias")
               else v.detach()).requires_grad_(True) for k, v in leaves.items()}
    y_s = kern(**sub)
    g_s = torch.autograd.grad(y_s, [sub["u"], sub["dt"], sub["D"]],
                              gy.index_select(1, chans).contiguous())
    assert rel_err(y.index_select(1, chans), y_s) <= BF16, rel_err(y.index_select(1, chans), y_s)
    for name, a, s in zip(("u", "dt"), grads[:2], g_s[:2], strict=True):
        a = a.index_select(1, chans)
        assert rel_err(a, s) <= BF16, f"grad of {name}: {rel_err(a, s):.2e}"
    assert rel_err(grads[2].index_select(0, chans), g_s[2]) <= BF16
    assert consts and not any(c["I64"] for c in consts)  # the small re-run: int32 kernels
    # (b) the first 1024 steps of those channels against the float64 reference
    L = 1024
    short = {k: (v[..., :L] if k in seqs else v).double() for k, v in sub.items()}
    y_ref = ref(**{k: v.detach() for k, v in short.items()})
    got = y.index_select(1, chans)[..., :L]
    assert rel_err(got, y_ref) <= BF16, rel_err(got, y_ref)
