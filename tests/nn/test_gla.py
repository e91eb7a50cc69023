"""lrc.nn.GatedLinearAttention vs a token-by-token PyTorch GLA layer (fla's semantics);
decode cache; packed sequences; MQA heads; the unfused norm and gate."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import GatedLinearAttention
from tests.conftest import rel_err
from tests.nn.helpers import (
    check_packed,
    check_state_indices,
    check_step_after_prefill,
    conv_loop,
    linear,
    params64,
    rms,
    silu,
)

D_MODEL = 8


def gla_loop(m: GatedLinearAttention, x: torch.Tensor) -> torch.Tensor:
    """fla's GatedLinearAttention as a plain loop over time, in float64."""
    p = params64(m)
    x = x.double()
    q, k, v = (linear(x, p, n) for n in ("q_proj", "k_proj", "v_proj"))
    if m.use_short_conv:
        q, k, v = (silu(conv_loop(t, p[f"{n}.weight"], p.get(f"{n}.bias")))
                   for t, n in zip((q, k, v), ("q_conv1d", "k_conv1d", "v_conv1d"), strict=True))
    gk = linear(linear(x, p, "gk_proj.0"), p, "gk_proj.1")
    H, dk, dv, g = m.num_heads, m.head_k_dim, m.head_v_dim, m.num_kv_groups
    q = q.unflatten(-1, (H, dk))
    kv_head = torch.arange(H) // g                     # head -> the kv head it shares
    k, gk = k.unflatten(-1, (-1, dk))[:, :, kv_head], gk.unflatten(-1, (-1, dk))[:, :, kv_head]
    v = v.unflatten(-1, (-1, dv))[:, :, kv_head]
    gk = F.logsigmoid(gk) / m.gate_logit_normalizer
    S = x.new_zeros(x.shape[0], H, dk, dv)
    os = []
    for t in range(x.shape[1]):
        S = torch.exp(gk[:, t, :, :, None]) * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        os.append(((q[:, t] * dk ** -0.5)[..., None] * S).sum(-2))
    o = torch.stack(os, 1)
    gate = linear(x, p, "g_proj")
    if m.fuse_norm_and_gate:
        o = rms(o, p["g_norm_swish_gate.weight"], 1e-5).flatten(-2) * silu(gate)
    else:
        o = rms(o, p["g_norm.weight"], 1e-5).flatten(-2) * torch.sigmoid(gate)
    return linear(o, p, "o_proj")


def make(**kw) -> GatedLinearAttention:
    kw = {"hidden_size": D_MODEL, "expand_k": 1.0, "expand_v": 1.0, "num_heads": 2,
          "gate_low_rank_dim": 3, **kw}
    return GatedLinearAttention(backend="reference", **kw)


CASES = [{}, {"use_short_conv": True, "conv_size": 3, "conv_bias": True},
         {"num_kv_heads": 1}, {"gate_fn": "sigmoid"}]


@pytest.mark.parametrize("kw", CASES)
def test_forward_matches_loop(kw):
    block = make(**kw)
    x = torch.randn(2, 9, D_MODEL)
    assert rel_err(block(x), gla_loop(block, x)) <= 1e-4


def test_bf16():
    # GatedRMSNorm normalizes each head's output by its own size: where a head's output nearly
    # cancels, bf16 rounding of the projections (0.3%) becomes a large relative error there.
    # Over random draws the error against float64 is about 0.5%, but about 2 draws in 100
    # pass 1e-2; one fixed draw keeps this test deterministic.
    torch.manual_seed(0)
    block = make(use_short_conv=True).to(torch.bfloat16)
    x = torch.randn(2, 9, D_MODEL).to(torch.bfloat16)
    got = block(x)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, gla_loop(block, x)) <= 1e-2


def test_gradients_reach_every_parameter():
    block = make(use_short_conv=True, conv_bias=True)
    block(torch.randn(2, 7, D_MODEL)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


@pytest.mark.parametrize("kw", CASES[:3])
def test_step_after_prefill(kw):
    check_step_after_prefill(make(**kw), torch.randn(2, 8, D_MODEL), prefix=3, tol=1e-5)


def test_packed_sequences():
    check_packed(make(use_short_conv=True), [2, 5, 4], D_MODEL, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(use_short_conv=True), torch.randn(2, 5, D_MODEL), pool=3, tol=1e-6)


def test_parameter_names():
    names = {k for k, _ in make(use_short_conv=True).named_parameters()}
    assert names == {"q_proj.weight", "k_proj.weight", "v_proj.weight", "g_proj.weight",
                     "q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight",
                     "gk_proj.0.weight", "gk_proj.1.weight", "gk_proj.1.bias", "o_proj.weight",
                     "g_norm_swish_gate.weight"}
    assert "g_norm.weight" in dict(make(fuse_norm=False).named_parameters())
