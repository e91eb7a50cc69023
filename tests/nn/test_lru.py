"""lrc.nn.lru.LRU and LRUBlock vs token-by-token PyTorch loops of the paper's reference code
(complex diagonal recurrence, trained gamma_log); gradients; decode cache; packed sequences;
the GPU kernels at a real size."""
import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import param_groups
from lrc.nn.lru import LRU, LRUBlock
from tests.conftest import rel_err
from tests.nn.helpers import (
    check_packed,
    check_state_indices,
    check_step_after_prefill,
    linear,
    params64,
)
from tests.nn.test_retnet import check_gradients

D_MODEL, D_HIDDEN = 5, 7


def lru_loop(m: LRU, u: torch.Tensor, p: dict | None = None, prefix: str = "") -> torch.Tensor:
    """The reference LRU as a plain loop over time, in float64 (complex128)."""
    p = params64(m) if p is None else p
    u = u.double()
    lam = torch.exp(-torch.exp(p[prefix + "nu_log"]) + 1j * torch.exp(p[prefix + "theta_log"]))
    B = torch.complex(p[prefix + "B_re"], p[prefix + "B_im"])
    B = B * torch.exp(p[prefix + "gamma_log"])[:, None]
    C = torch.complex(p[prefix + "C_re"], p[prefix + "C_im"])
    h = torch.zeros(u.shape[0], lam.shape[0], dtype=torch.complex128, device=u.device)
    ys = []
    for t in range(u.shape[1]):
        h = lam * h + u[:, t].to(B.dtype) @ B.T
        ys.append((h @ C.T).real + p[prefix + "D"] * u[:, t])
    return torch.stack(ys, 1)


def block_loop(m: LRUBlock, u: torch.Tensor, p: dict | None = None) -> torch.Tensor:
    """The paper's residual block (layer norm, LRU, gelu, GLU, skip) in float64."""
    p = params64(m) if p is None else p
    u = u.double()
    x = F.layer_norm(u, (m.d_model,), p["normalization.weight"], p["normalization.bias"], 1e-6)
    y = F.gelu(lru_loop(m.seq, x, p, prefix="seq."), approximate="tanh")
    return u + linear(y, p, "out1") * torch.sigmoid(linear(y, p, "out2"))


def make(**kw) -> LRU:
    return LRU(D_HIDDEN, D_MODEL, **{"r_min": 0.5, "r_max": 0.99, **kw})


def make_block() -> LRUBlock:
    block = LRUBlock(D_MODEL, D_HIDDEN, r_min=0.5, r_max=0.99)
    with torch.no_grad():   # not the identity init, so the norm's parameters matter
        block.normalization.weight.uniform_(0.5, 1.5)
        block.normalization.bias.normal_(0, 0.1)
    return block


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_loop(dtype, tol):
    layer = make().to(dtype)
    u = torch.randn(2, 11, D_MODEL).to(dtype)
    got = layer(u)
    assert got.dtype == dtype
    assert rel_err(got, lru_loop(layer, u)) <= tol


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_block_matches_loop(dtype, tol):
    block = make_block().to(dtype)
    u = torch.randn(2, 11, D_MODEL).to(dtype)
    assert rel_err(block(u), block_loop(block, u)) <= tol


def test_gamma_log_is_trained_not_recomputed():
    layer = make()
    with torch.no_grad():
        layer.gamma_log.add_(torch.randn(D_HIDDEN) * 0.3)
    u = torch.randn(2, 9, D_MODEL)
    assert rel_err(layer(u), lru_loop(layer, u)) <= 1e-4


def test_gradients_match_loop():
    check_gradients(make(), lru_loop, torch.randn(2, 8, D_MODEL), tol=1e-3)
    check_gradients(make_block(), block_loop, torch.randn(2, 6, D_MODEL), tol=1e-3)


def test_step_after_prefill():
    check_step_after_prefill(make(), torch.randn(2, 8, D_MODEL), prefix=3, tol=1e-5)
    check_step_after_prefill(make_block(), torch.randn(1, 6, D_MODEL), prefix=1, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [3, 6, 1], D_MODEL, torch.float32, tol=1e-5)
    check_packed(make_block(), [4, 2], D_MODEL, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(2, 5, D_MODEL), pool=4, tol=1e-6)
    check_state_indices(make_block(), torch.randn(3, 4, D_MODEL), pool=5, tol=1e-6)


def test_init_and_parameter_names():
    layer = LRU(64, 32, r_min=0.4, r_max=0.9, max_phase=math.pi)
    shapes = {k: tuple(v.shape) for k, v in layer.named_parameters()}
    assert shapes == {"nu_log": (64,), "theta_log": (64,), "gamma_log": (64,),
                      "B_re": (64, 32), "B_im": (64, 32), "C_re": (32, 64), "C_im": (32, 64),
                      "D": (32,)}
    radius = torch.exp(-torch.exp(layer.nu_log.double()))
    assert radius.min() >= 0.4 - 1e-6 and radius.max() <= 0.9 + 1e-6
    phase = torch.exp(layer.theta_log.double())
    assert phase.min() >= 0 and phase.max() <= math.pi + 1e-6
    want = torch.log(torch.sqrt(1 - radius ** 2))   # the reference's gamma_log init
    assert rel_err(layer.gamma_log, want) <= 1e-5
    groups = param_groups(layer, decay_vectors=True)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert no_decay == {id(layer.nu_log), id(layer.theta_log), id(layer.gamma_log)}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_triton_matches_loop(dtype, tol):
    block = LRUBlock(128, 256, r_min=0.9, r_max=0.999, backend="triton").cuda()
    block.normalization.to(dtype)
    block.out1.to(dtype)
    block.out2.to(dtype)   # the LRU's parameters stay float32, as the reference trains them
    u = torch.randn(2, 300, 128, device="cuda").to(dtype)
    with torch.no_grad(), torch.device("cuda"):   # the helpers' inputs on the GPU too
        assert rel_err(block(u), block_loop(block, u)) <= tol
        assert rel_err(block.seq(u), lru_loop(block.seq, u)) <= tol
        step_tol = 1e-4 if dtype == torch.float32 else 3e-2
        check_step_after_prefill(block, u[:, :40], prefix=33, tol=step_tol)
        check_packed(block, [17, 64, 5], 128, dtype, tol=step_tol)
        check_state_indices(block, u[:, :20], pool=5, tol=step_tol)
    if dtype == torch.float32:
        check_gradients(block, block_loop, u[:, :100], tol=1e-3)
