"""lrc.nn.HyenaOperator vs the order-2 Hyena operator written in float64 with its implicit
filter computed in the test and the long convolution as a direct sum; gradients; decode (the
zoo's spec is a finite shift-register state); packed sequences; the filter's init."""
import math

import pytest
import torch

from lrc.nn import param_groups
from lrc.nn.hyena import HyenaOperator
from tests.conftest import rel_err
from tests.nn.helpers import (
    check_packed,
    check_state_indices,
    check_step_after_prefill,
    conv_loop,
    linear,
    params64,
)

D_MODEL, ORDER = 5, 6


def implicit_filter(p: dict, L: int) -> torch.Tensor:
    """Hyena's filter (d, L) from float64 parameters: MLP with sin(freq x) activations over
    the positional features z, times the window exp(-|delta| t)."""
    f = "filter_fn."
    h = p[f + "pos_emb.z"][0, :L]
    freq = p[f + "implicit_filter.1.freq"]                  # one Sin shared by every layer
    for i in (0, 2, 4):
        h = torch.sin(freq * linear(h, p, f"{f}implicit_filter.{i}"))
    h = linear(h, p, f + "implicit_filter.6")
    window = torch.exp(-p[f + "pos_emb.t"][0, :L] * p[f + "modulation.deltas"][0].abs())
    return (h * window).T


def hyena_loop(block: HyenaOperator, u: torch.Tensor, p: dict | None = None) -> torch.Tensor:
    """safari's HyenaOperator (order 2) in float64: in_proj, the short causal conv, z = x1 v,
    y_t = x0_t (sum_{j < l_max} h_j z_{t-j} + bias z_t), out_proj. u (b, t, d_model)."""
    p = params64(block) if p is None else p
    x = conv_loop(linear(u.double(), p, "in_proj"), p["short_filter.weight"],
                  p["short_filter.bias"])
    x0, x1, v = x.split(block.d_model, -1)
    z = x1 * v
    h = implicit_filter(p, block.l_max)
    ys = [x0[:, t] * (sum(h[:, j] * z[:, t - j] for j in range(min(t + 1, h.shape[1])))
                      + p["filter_fn.bias"] * z[:, t]) for t in range(u.shape[1])]
    return linear(torch.stack(ys, 1), p, "out_proj")


def make(l_max: int = 8, **kw) -> HyenaOperator:
    return HyenaOperator(D_MODEL, l_max=l_max, filter_order=ORDER, **kw)


@pytest.mark.parametrize("l_max", [8, 16])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_direct_convolution(l_max, dtype, tol):
    """A filter shorter and longer than the sequence."""
    block = make(l_max)
    for m in (block.in_proj, block.short_filter, block.out_proj):
        m.to(dtype)     # the implicit filter stays float32
    u = torch.randn(2, 13, D_MODEL).to(dtype)
    got = block(u)
    assert got.dtype == dtype
    assert rel_err(got, hyena_loop(block, u)) <= tol


def test_gradients_match_direct_convolution():
    block = make()
    u = torch.randn(2, 11, D_MODEL, requires_grad=True)
    y = block(u)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    p = {k: v.requires_grad_() for k, v in params64(block).items()}
    u64 = u.detach().double().requires_grad_()
    (hyena_loop(block, u64, p) * g.double()).sum().backward()
    assert rel_err(u.grad, u64.grad) <= 1e-3
    for name, param in block.named_parameters():
        assert rel_err(param.grad, p[name].grad) <= 1e-3, name


def test_step_after_prefill():
    # decode past the filter's l_max taps, and from a prefill shorter than the short conv
    check_step_after_prefill(make(), torch.randn(2, 13, D_MODEL), prefix=5, tol=1e-5)
    check_step_after_prefill(make(), torch.randn(1, 6, D_MODEL), prefix=1, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [4, 1, 10], D_MODEL, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(2, 5, D_MODEL), pool=4, tol=1e-6)


def test_filter_init_and_optimizer_hints():
    block = make(l_max=101, emb_dim=5)
    f = block.filter_fn
    t = f.pos_emb.t[0, :, 0]
    assert torch.allclose(t, torch.linspace(0, 1, 101))
    # [t, Re exp(-i f w), Im exp(-i f w)] with bands f = (1e-4, 1) and w = 2 pi l / L
    z = f.pos_emb.z[0]
    w = 2 * math.pi * torch.arange(101) / 101
    assert torch.allclose(z[:, 2], torch.cos(w), atol=1e-6)
    assert torch.allclose(z[:, 4], -torch.sin(w), atol=1e-6)
    assert torch.allclose(z[:, 1], torch.cos(1e-4 * w), atol=1e-6)
    # the fastest channel's window falls to the 1e-2 target at 30% of the length
    window = torch.exp(-t[:, None] * f.modulation.deltas[0].abs())          # (L, d)
    assert abs(window[30, -1].item() - 1e-2) < 1e-5 and (window[:, 0] > 1e-2).all()
    groups = param_groups(block, weight_decay=0.1, decay_vectors=True)
    no_decay = [g["params"] for g in groups if g["weight_decay"] == 0 and "lr" not in g]
    assert no_decay == [[f.bias]]          # the skip term, a D
    mlp = {id(p) for p in f.implicit_filter.parameters()}
    assert {id(p) for g in groups if g.get("lr") == 1e-3 for p in g["params"]} == mlp
    assert [g["params"] for g in groups if g.get("lr") == 1e-5] == [[f.pos_emb.z]]
    assert {k for k, _ in block.named_buffers()} == {"filter_fn.pos_emb.t",
                                                     "filter_fn.modulation.deltas"}


def test_emb_dim_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        make(emb_dim=4)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_forward_step_packed(dtype, tol):
    # the default device makes the helpers' and the loop's own tensors CUDA tensors too
    with torch.device("cuda"), torch.no_grad():
        block = HyenaOperator(64, l_max=512, backend="triton")
        for m in (block.in_proj, block.short_filter, block.out_proj):
            m.to(dtype)
        x = torch.randn(2, 300, 64).to(dtype)
        assert rel_err(block(x), hyena_loop(block, x)) <= tol
        step_tol = 1e-4 if dtype == torch.float32 else 3e-2
        check_step_after_prefill(block, x[:, :40], prefix=33, tol=step_tol)
        check_packed(block, [17, 64, 5], 64, dtype, tol=step_tol)
        check_state_indices(block, x[:, :20], pool=5, tol=step_tol)
