"""lrc.nn.S4 vs the S4 block written as a token-by-token loop with the bilinear DPLR matrices
materialized, in float64; gradients; decode cache; packed sequences; optimizer hints."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import param_groups
from lrc.nn.s4 import S4
from tests.conftest import rel_err
from tests.nn.helpers import (
    check_packed,
    check_state_indices,
    check_step_after_prefill,
    linear,
    params64,
)

H, N = 5, 7


def s4_loop(block: S4, u: torch.Tensor, p: dict | None = None) -> torch.Tensor:
    """S4Block in float64: per channel Abar = (I - dt/2 A)^-1 (I + dt/2 A), Bbar = (I - dt/2
    A)^-1 dt B with A = diag(Lambda) - P P^* as a dense matrix, then a loop over time, GELU and
    the GLU output linear. u (b, t, h); p: float64 parameters by name (default the block's)."""
    p = params64(block) if p is None else p
    dt = torch.exp(p["kernel.log_dt"]).to(torch.complex128)[:, None, None]        # (h, 1, 1)
    Lam = torch.complex(-torch.exp(p["kernel.log_A_real"]), p["kernel.A_imag"])
    P, B, C = (torch.view_as_complex(p[f"kernel.{k}"]) for k in ("P", "B", "C"))
    A = torch.diag(Lam) - torch.outer(P, P.conj())
    eye = torch.eye(A.shape[0], dtype=torch.complex128)
    left = eye - dt / 2 * A
    Abar = torch.linalg.solve(left, eye + dt / 2 * A)                              # (h, n, n)
    Bbar = torch.linalg.solve(left, (dt[..., 0] * B)[..., None])[..., 0]           # (h, n)
    u = u.double()
    x = torch.zeros(u.shape[0], u.shape[2], A.shape[0], dtype=torch.complex128)
    ys = []
    for t in range(u.shape[1]):
        x = torch.einsum("hij,bhj->bhi", Abar, x) + Bbar * u[:, t, :, None]
        ys.append((C * x).sum(-1).real + p["D"] * u[:, t])
    y = F.gelu(torch.stack(ys, 1))
    return F.glu(linear(y, p, "output_linear.0"), dim=-1)


def make(**kw) -> S4:
    return S4(H, d_state=N, **kw)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_loop(dtype, tol):
    block = make()
    block.output_linear.to(dtype)     # the SSM parameters stay float32, as in the S4 repository
    u = torch.randn(2, 13, H).to(dtype)
    got = block(u)
    assert got.dtype == dtype
    assert rel_err(got, s4_loop(block, u)) <= tol


def test_transposed_layout():
    block = make(transposed=True)
    u = torch.randn(2, 9, H)
    assert rel_err(block(u.mT).mT, s4_loop(block, u)) <= 1e-4


def test_gradients_match_loop():
    block = make()
    u = torch.randn(2, 11, H, requires_grad=True)
    y = block(u)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    p = {k: v.requires_grad_() for k, v in params64(block).items()}
    u64 = u.detach().double().requires_grad_()
    (s4_loop(block, u64, p) * g.double()).sum().backward()
    assert rel_err(u.grad, u64.grad) <= 1e-3
    for name, param in block.named_parameters():
        assert rel_err(param.grad, p[name].grad) <= 1e-3, name


def test_step_after_prefill():
    check_step_after_prefill(make(), torch.randn(2, 8, H), prefix=5, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [3, 1, 6], H, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(2, 5, H), pool=4, tol=1e-6)


def test_parameter_names_and_s4_hints():
    block = make(lr=1e-3)
    shapes = {k: tuple(v.shape) for k, v in block.named_parameters()}
    assert shapes == {"D": (H,), "kernel.log_dt": (H,), "kernel.log_A_real": (N,),
                      "kernel.A_imag": (N,), "kernel.P": (N, 2), "kernel.B": (H, N, 2),
                      "kernel.C": (H, N, 2), "output_linear.0.weight": (2 * H, H),
                      "output_linear.0.bias": (2 * H,)}
    k = block.kernel
    # HiPPO-LegS in NPLR form: Re(Lambda) = -1/2
    assert torch.allclose(k.log_A_real, torch.full((N,), 0.5).log())
    groups = param_groups(block, weight_decay=0.1)
    special = [g for g in groups if g.get("lr") == 1e-3]
    assert len(special) == 1 and special[0]["weight_decay"] == 0
    assert {id(p) for p in special[0]["params"]} == {
        id(k.log_dt), id(k.log_A_real), id(k.A_imag), id(k.P), id(k.B)}
    decayed = [g for g in groups if g["weight_decay"] == 0.1][0]["params"]
    assert {id(p) for p in decayed} == {id(k.C), id(block.output_linear[0].weight)}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_forward_step_packed(dtype, tol):
    # the default device makes the helpers' and the loop's own tensors CUDA tensors too
    with torch.device("cuda"), torch.no_grad():
        block = S4(64, d_state=32, backend="triton")
        block.output_linear.to(dtype)
        x = torch.randn(2, 300, 64).to(dtype)
        assert rel_err(block(x), s4_loop(block, x)) <= tol
        step_tol = 1e-4 if dtype == torch.float32 else 3e-2
        check_step_after_prefill(block, x[:, :40], prefix=33, tol=step_tol)
        check_packed(block, [17, 64, 5], 64, dtype, tol=step_tol)
        check_state_indices(block, x[:, :20], pool=5, tol=step_tol)
