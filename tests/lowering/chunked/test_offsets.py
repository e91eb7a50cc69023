"""Element offsets past 2^31 in the chunked kernels: the key and value index vectors times
their strides (o_k * q_s_k, o_kr * h0_s_k, o_v * v_s_v) are int32 products unless the launch
sets I64 (some tensor reaching 2^31 elements); time and chunk offsets are int64 always
(t64, (c0 + c) * chk_sc).

Under the interpreter with tiny tensors strided far apart (tests/far.py), against the float64
reference: outputs, final state and every gradient, in the one-launch kernels and split over
chunks (LOCAL: the states kernel; PASS).
"""
from __future__ import annotations

import pytest
import torch

import lrc
from lrc.kernels import aot
from lrc.lowering.chunked.tune import LOCAL, PASS, Config
from lrc.zoo import ZOO
from tests.conftest import rel_err
from tests.far import far_allocations, far_copy

FWD, GRAD = 1e-4, 1e-3
SIZES = dict(b=1, h=1, k=3, v=3)  # index 2 of a dim strided 2^30 apart sits at 2^31
SPLITS = {"one launch": None, "local": Config(16, 16, 1, 1, split=LOCAL),
          "pass": Config(16, 16, 1, 1, split=PASS)}


def check(ours: dict, state: torch.Tensor, override, far_grads: bool) -> list:
    """GLA chunked on `ours` (float32 leaves) against the float64 reference; returns the
    launches (kernels.aot.recording)."""
    spec = ZOO["gla"].spec
    kern = lrc.compile(spec, backend="triton", lowering="chunked")
    kern._lowering("chunked").override = None if override is None else (override, override)
    ref = lrc.compile(spec, backend="reference")
    theirs = {k: v.detach().double().clone().requires_grad_(True) for k, v in ours.items()}
    s2 = state.detach().double().clone().requires_grad_(True)
    with aot.recording() as launches:
        y, h = kern(**ours, initial_state=state, return_final_state=True)
        y2, h2 = ref(**theirs, initial_state=s2, return_final_state=True)
        assert rel_err(y, y2) <= FWD, f"output: {rel_err(y, y2):.2e}"
        assert rel_err(h, h2) <= FWD, f"final state: {rel_err(h, h2):.2e}"
        gy, gh = torch.randn_like(y2), torch.randn_like(h2)
        gy1, gh1 = gy.float(), gh.float()
        if far_grads:  # y: b t h v, values 2^30 apart; h: b h k v, keys
            gy1, gh1 = far_copy(gy1, 3), far_copy(gh1, 2)
        g1 = torch.autograd.grad((y, h), list(ours.values()) + [state], (gy1, gh1))
    g2 = torch.autograd.grad((y2, h2), list(theirs.values()) + [s2], (gy, gh))
    for name, a, e in zip(list(ours) + ["initial_state"], g1, g2, strict=True):
        assert rel_err(a, e) <= GRAD, f"grad of {name}: {rel_err(a, e):.2e}"
    return launches


def inputs(t: int, far: bool) -> tuple[dict, torch.Tensor]:
    """GLA's q, k, gk with keys (b t h k), v with values, and the initial state with keys
    (b h k v) 2^30 elements apart when `far`; float32 leaves."""
    e = ZOO["gla"]
    args = {k: v.float() for k, v in e.example(t=t, dtype=torch.float64, **SIZES).items()}
    state = e.initial_state(dtype=torch.float32, **SIZES)
    if far:
        args = {k: far_copy(v, 3) for k, v in args.items()}
        state = far_copy(state, 2)
    return {k: v.requires_grad_(True) for k, v in args.items()}, state.requires_grad_(True)


@pytest.mark.parametrize("split", list(SPLITS))
def test_keys_and_values_past_int32(split):
    """Every key/value offset of the forward, the backward and the states kernel past 2^31
    (37 steps: three 16-step chunks, the last short)."""
    launches = check(*inputs(37, far=True), SPLITS[split], far_grads=True)
    assert launches and all(r.consts["I64"] for r in launches)


def test_normal_sizes_take_int32_kernels():
    """Ordinary tensors: every chunked launch with I64 off."""
    launches = check(*inputs(37, far=False), None, far_grads=False)
    assert launches and not any(r.consts["I64"] for r in launches)


@pytest.mark.parametrize("split", ["one launch", "local"])
def test_checkpoints_past_int32(split):
    """Five 16-step chunks whose saved states (and, split, each chunk's own part and decay)
    lie 2^30 elements apart: chunk 4 at 2^32, where an int32 product would land on chunk 0.
    (c0 + c) is int64 from the prologue, so this holds without I64 for the inputs."""
    ours, state = inputs(80, far=False)
    with far_allocations(5) as made:
        check(ours, state, SPLITS[split], far_grads=False)
    assert made and all(s[0] == 5 for s in made)
