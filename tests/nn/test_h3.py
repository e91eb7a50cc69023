"""lrc.nn.H3 vs the H3 layer written as a token-by-token loop in float64 (the shift SSM as a
sum over the last d_state k's, the diagonal SSM as its recurrence); gradients; decode cache
with both states; packed sequences."""
import pytest
import torch

from lrc.nn import param_groups
from lrc.nn.h3 import H3
from tests.conftest import rel_err
from tests.nn.helpers import (
    check_packed,
    check_state_indices,
    check_step_after_prefill,
    linear,
    params64,
)

D_MODEL, D_STATE = 5, 6


def h3_loop(block: H3, u: torch.Tensor, p: dict | None = None) -> torch.Tensor:
    """safari's H3 in float64, one token at a time. u (b, t, d_model); p: float64 parameters
    by name (default the block's)."""
    p = params64(block) if p is None else p
    u = u.double()
    q, k, v = (linear(u, p, f"{n}_proj") for n in "qkv")
    taps = p["ssm_k_kernel.C"]                                                    # (h, m)
    A = torch.complex(-torch.exp(p["kernel.log_A_real"]), p["kernel.A_imag"])    # (h, n)
    dtA = torch.exp(p["kernel.log_dt"])[:, None] * A
    Abar, Bbar = torch.exp(dtA), (torch.exp(dtA) - 1) / A                         # ZOH, B = 1
    C = torch.view_as_complex(p["kernel.C"])
    x = torch.zeros(u.shape[0], *A.shape, dtype=torch.complex128)
    ys = []
    for t in range(u.shape[1]):
        kc = sum(taps[:, j] * k[:, t - j] for j in range(taps.shape[1]) if t >= j)
        kv = (kc + p["ssm_k_D"] * k[:, t]) * v[:, t]
        x = Abar * x + Bbar * kv[..., None]
        ys.append(q[:, t] * (2 * (C * x).sum(-1).real + p["D"] * kv))
    return linear(torch.stack(ys, 1), p, "output_linear")


def make(**kw) -> H3:
    return H3(D_MODEL, d_state=D_STATE, **kw)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_loop(dtype, tol):
    block = make().to(dtype)
    u = torch.randn(2, 13, D_MODEL).to(dtype)
    got = block(u)
    assert got.dtype == dtype
    assert rel_err(got, h3_loop(block, u)) <= tol


def test_gradients_match_loop():
    block = make()
    u = torch.randn(2, 11, D_MODEL, requires_grad=True)
    y = block(u)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    p = {k: v.requires_grad_() for k, v in params64(block).items()}
    u64 = u.detach().double().requires_grad_()
    (h3_loop(block, u64, p) * g.double()).sum().backward()
    assert rel_err(u.grad, u64.grad) <= 1e-3
    for name, param in block.named_parameters():
        assert rel_err(param.grad, p[name].grad) <= 1e-3, name


def test_step_after_prefill():
    # prefills shorter and longer than the shift SSM's d_state taps
    check_step_after_prefill(make(), torch.randn(2, 12, D_MODEL), prefix=8, tol=1e-5)
    check_step_after_prefill(make(), torch.randn(1, 9, D_MODEL), prefix=2, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [4, 1, 9], D_MODEL, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(2, 5, D_MODEL), pool=4, tol=1e-6)


def test_parameter_names_and_optimizer_hints():
    block = make(lr=1e-3)
    shapes = {k: tuple(v.shape) for k, v in block.named_parameters()}
    h, n = D_MODEL, D_STATE // 2
    assert shapes == {
        "q_proj.weight": (h, h), "q_proj.bias": (h,), "k_proj.weight": (h, h),
        "k_proj.bias": (h,), "v_proj.weight": (h, h), "v_proj.bias": (h,),
        "ssm_k_kernel.C": (h, D_STATE), "ssm_k_D": (h,), "kernel.C": (h, n, 2),
        "kernel.log_dt": (h,), "kernel.log_A_real": (h, n), "kernel.A_imag": (h, n),
        "D": (h,), "output_linear.weight": (h, h), "output_linear.bias": (h,)}
    groups = param_groups(block, weight_decay=0.1, decay_vectors=True)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    k = block.kernel
    assert no_decay == {id(block.D), id(block.ssm_k_D), id(k.log_dt), id(k.log_A_real),
                        id(k.A_imag)}
    cache = block.allocate_inference_cache(3)
    assert cache.shift.shape == (3, h, D_STATE) and cache.ssm.shape == (3, h, n)


def test_odd_state_size_raises():
    with pytest.raises(ValueError, match="even"):
        H3(D_MODEL, d_state=5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_forward_step_packed(dtype, tol):
    # the default device makes the helpers' and the loop's own tensors CUDA tensors too
    with torch.device("cuda"), torch.no_grad():
        block = H3(64, d_state=64, backend="triton").to(dtype)
        x = torch.randn(2, 300, 64).to(dtype)
        assert rel_err(block(x), h3_loop(block, x)) <= tol
        step_tol = 1e-4 if dtype == torch.float32 else 3e-2
        check_step_after_prefill(block, x[:, :90], prefix=70, tol=step_tol)
        check_packed(block, [17, 80, 5], 64, dtype, tol=step_tol)
        check_state_indices(block, x[:, :20], pool=5, tol=step_tol)
