"""lrc.nn.Mamba vs a token-by-token PyTorch Mamba block; decode cache; packed sequences."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import Mamba, param_groups
from tests.conftest import rel_err
from tests.nn.helpers import (
    check_packed,
    check_state_indices,
    check_step_after_prefill,
    conv_loop,
    linear,
    params64,
    silu,
)

D_MODEL = 6


def mamba_loop(block: Mamba, u: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's Mamba written as a plain loop over time, in float64."""
    p = params64(block)
    u = u.double()
    x, z = linear(u, p, "in_proj").chunk(2, -1)
    x = silu(conv_loop(x, p["conv1d.weight"], p.get("conv1d.bias")))
    dt, B, C = linear(x, p, "x_proj").split([block.dt_rank, block.d_state, block.d_state], -1)
    dt = F.softplus(linear(dt, p, "dt_proj"))
    A = -torch.exp(p["A_log"])
    h = u.new_zeros(u.shape[0], block.d_inner, block.d_state)
    ys = []
    for t in range(u.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t, :, None] * B[:, t, None, :]
                                                    * x[:, t, :, None])
        ys.append((h * C[:, t, None, :]).sum(-1) + p["D"] * x[:, t])
    y = torch.stack(ys, 1) * silu(z)
    return linear(y, p, "out_proj")


def make(dtype=torch.float32, **kw) -> Mamba:
    return Mamba(D_MODEL, d_state=3, d_conv=3, expand=2, backend="reference",
                 **kw).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_loop(dtype, tol):
    block = make(dtype)
    u = torch.randn(2, 11, D_MODEL).to(dtype)
    got = block(u)
    assert got.dtype == dtype
    assert rel_err(got, mamba_loop(block, u)) <= tol


def test_gradients_reach_every_parameter():
    block = make()
    block(torch.randn(2, 7, D_MODEL)).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name


def test_step_after_prefill():
    check_step_after_prefill(make(), torch.randn(2, 9, D_MODEL), prefix=5, tol=1e-5)
    # a prefill shorter than the conv window
    check_step_after_prefill(make(), torch.randn(1, 6, D_MODEL), prefix=1, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [4, 1, 7], D_MODEL, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(2, 6, D_MODEL), pool=5, tol=1e-6)


def test_parameter_names_and_optimizer_hints():
    block = make(conv_bias=True, bias=False)
    names = {k for k, _ in block.named_parameters()}
    assert names == {"in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
                     "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"}
    assert block.A_log.shape == (12, 3) and block.D.shape == (12,)
    groups = param_groups(block, weight_decay=0.1, decay_vectors=True)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert no_decay == {id(block.A_log), id(block.D), id(block.dt_proj.bias)}


def test_prefill_rejects_wrong_cache():
    block = make()
    cache = block.allocate_inference_cache(3)
    with pytest.raises(ValueError, match="holds 3 sequences"):
        block(torch.randn(2, 4, D_MODEL), cache=cache)
