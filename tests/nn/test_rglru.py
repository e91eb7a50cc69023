"""lrc.nn.GriffinRecurrentBlock (Hawk) vs a token-by-token PyTorch block; decode cache."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import GriffinRecurrentBlock, param_groups
from tests.conftest import rel_err
from tests.nn.helpers import (
    check_packed,
    check_state_indices,
    check_step_after_prefill,
    conv_loop,
    linear,
    params64,
)

D_MODEL = 5


def griffin_loop(m: GriffinRecurrentBlock, x: torch.Tensor) -> torch.Tensor:
    """Griffin's recurrent block as a plain loop over time, in float64 (c = 8)."""
    p = params64(m)
    x = x.double()
    gate = F.gelu(linear(x, p, "gate_proj"), approximate="tanh")
    u = conv_loop(linear(x, p, "in_proj"), p["conv.conv.weight"], p["conv.conv.bias"])
    r, i = torch.sigmoid(linear(u, p, "gate_r")), torch.sigmoid(linear(u, p, "gate_i"))
    a = torch.sigmoid(p["rglru.Lambda"])
    h = x.new_zeros(x.shape[0], m.d_rnn)
    hs = []
    for t in range(x.shape[1]):
        at = a ** (8 * r[:, t])
        h = at * h + torch.sqrt(1 - at ** 2) * (i[:, t] * u[:, t])
        hs.append(h)
    return linear(torch.stack(hs, 1) * gate, p, "out_proj")


def make() -> GriffinRecurrentBlock:
    return GriffinRecurrentBlock(D_MODEL, d_rnn=4, conv_width=3, backend="reference")


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_loop(dtype, tol):
    block = make().to(dtype)
    x = torch.randn(2, 10, D_MODEL).to(dtype)
    assert rel_err(block(x), griffin_loop(block, x)) <= tol


def test_step_after_prefill():
    check_step_after_prefill(make(), torch.randn(2, 8, D_MODEL), prefix=2, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [5, 2, 3], D_MODEL, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(2, 4, D_MODEL), pool=6, tol=1e-6)


def test_lambda_is_not_decayed():
    block = make()
    groups = param_groups(block, decay_vectors=True)
    no_decay = [p for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    assert len(no_decay) == 1 and no_decay[0] is block.rglru.Lambda
