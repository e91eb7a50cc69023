"""lrc.nn.Mamba2 vs a token-by-token PyTorch Mamba-2 block; decode cache; packed sequences."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import Mamba2, param_groups
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

D_MODEL = 6


def mamba2_loop(m: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's Mamba2 (rmsnorm, norm after the gate) as a plain loop, in float64."""
    p = params64(m)
    u = u.double()
    H, P, G, N = m.nheads, m.headdim, m.ngroups, m.d_state
    z, xBC, dt = linear(u, p, "in_proj").split([m.d_inner, m.conv_dim, H], -1)
    xBC = silu(conv_loop(xBC, p["conv1d.weight"], p.get("conv1d.bias")))
    x, B, C = xBC.split([m.d_inner, G * N, G * N], -1)
    x = x.unflatten(-1, (H, P))
    group = torch.arange(H) // (H // G)                 # head -> its group of B and C
    B, C = B.unflatten(-1, (G, N))[:, :, group], C.unflatten(-1, (G, N))[:, :, group]
    dt = F.softplus(dt + p["dt_bias"])
    A = -torch.exp(p["A_log"])
    h = u.new_zeros(u.shape[0], H, P, N)
    ys = []
    for t in range(u.shape[1]):
        d = dt[:, t, :, None, None]
        h = torch.exp(d * A[:, None, None]) * h + d * x[:, t, :, :, None] * B[:, t, :, None, :]
        ys.append((h * C[:, t, :, None, :]).sum(-1) + p["D"][:, None] * x[:, t])
    y = torch.stack(ys, 1).flatten(-2) * silu(z)
    gs = m.d_inner // G
    y = rms(y.unflatten(-1, (G, gs)), None, 1e-5).flatten(-2) * p["norm.weight"]
    return linear(y, p, "out_proj")


def make(**kw) -> Mamba2:
    kw = {"d_state": 3, "d_conv": 3, "expand": 2, "headdim": 2, "ngroups": 2, **kw}
    return Mamba2(D_MODEL, backend="reference", **kw)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_loop(dtype, tol):
    block = make().to(dtype)
    with torch.no_grad():
        block.norm.weight.uniform_(0.5, 1.5)
    u = torch.randn(2, 11, D_MODEL).to(dtype)
    got = block(u)
    assert got.dtype == dtype
    assert rel_err(got, mamba2_loop(block, u)) <= tol


def test_gradients_reach_every_parameter():
    block = make()
    block(torch.randn(2, 7, D_MODEL)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_step_after_prefill():
    check_step_after_prefill(make(), torch.randn(2, 9, D_MODEL), prefix=4, tol=1e-5)
    check_step_after_prefill(make(ngroups=1), torch.randn(1, 5, D_MODEL), prefix=1, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [3, 6, 1], D_MODEL, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(3, 5, D_MODEL), pool=4, tol=1e-6)


def test_parameter_names_and_optimizer_hints():
    block = make()
    shapes = {k: tuple(v.shape) for k, v in block.named_parameters()}
    # mamba_ssm's Mamba2: in_proj = 2 d_inner + 2 ngroups d_state + nheads outputs
    assert shapes == {"in_proj.weight": (12 + 12 + 12 + 6, 6), "conv1d.weight": (24, 1, 3),
                      "conv1d.bias": (24,), "dt_bias": (6,), "A_log": (6,), "D": (6,),
                      "norm.weight": (12,), "out_proj.weight": (6, 12)}
    groups = param_groups(block, decay_vectors=True)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert no_decay == {id(block.A_log), id(block.D), id(block.dt_bias)}


def test_unsupported_options_raise():
    with pytest.raises(NotImplementedError, match="d_ssm"):
        make(d_ssm=4)
    with pytest.raises(NotImplementedError, match="dt_limit"):
        make(dt_limit=(0.0, 0.1))
