"""lrc.nn.S4D vs the S4 repository's S4D computed as an FFT convolution in PyTorch; decode
cache; packed sequences; the S4 optimizer hints."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import S4D, param_groups
from tests.conftest import rel_err
from tests.nn.helpers import check_packed, check_state_indices, check_step_after_prefill

H, N = 4, 6


def s4d_fft(m: S4D, u: torch.Tensor) -> torch.Tensor:
    """The S4 repository's S4D forward: the ZOH kernel materialized, an FFT convolution, in
    float64. u (b, t, h)."""
    k = m.kernel
    dt = torch.exp(k.log_dt.double())
    C = torch.view_as_complex(k.C.double())
    A = -torch.exp(k.log_A_real.double()) + 1j * k.A_imag.double()
    dtA = A * dt[:, None]
    L = u.shape[1]
    K = dtA[..., None] * torch.arange(L, dtype=torch.float64)
    K = 2 * torch.einsum("hn,hnl->hl", C * (torch.exp(dtA) - 1) / A, torch.exp(K)).real
    x = u.double().mT
    y = torch.fft.irfft(torch.fft.rfft(x, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L]
    y = F.gelu(y + x * m.D.double()[:, None])
    conv = m.output_linear[0]
    y = F.glu(F.conv1d(y, conv.weight.double(), conv.bias.double()), dim=-2)
    return y.mT


def make(**kw) -> S4D:
    return S4D(H, d_state=N, backend="reference", **kw)


def test_forward_matches_fft_convolution():
    block = make()
    u = torch.randn(2, 12, H)
    assert rel_err(block(u), s4d_fft(block, u)) <= 1e-4
    # transposed=True takes and gives (b, h, t)
    block.transposed = True
    assert rel_err(block(u.mT).mT, s4d_fft(block, u)) <= 1e-4


def test_bf16_input():
    block = make()
    block.output_linear.to(torch.bfloat16)
    u = torch.randn(2, 12, H).to(torch.bfloat16)
    got = block(u)
    assert got.dtype == torch.bfloat16
    assert rel_err(got, s4d_fft(block, u)) <= 1e-2


def test_step_after_prefill():
    check_step_after_prefill(make(), torch.randn(2, 7, H), prefix=3, tol=1e-5)


def test_packed_sequences():
    check_packed(make(), [3, 4], H, torch.float32, tol=1e-5)


def test_state_indices_pool():
    check_state_indices(make(), torch.randn(2, 4, H), pool=3, tol=1e-6)


def test_parameter_names_and_s4_hints():
    block = make(lr=1e-3)
    shapes = {k: tuple(v.shape) for k, v in block.named_parameters()}
    assert shapes == {"D": (H,), "kernel.C": (H, N // 2, 2), "kernel.log_dt": (H,),
                      "kernel.log_A_real": (H, N // 2), "kernel.A_imag": (H, N // 2),
                      "output_linear.0.weight": (2 * H, H, 1), "output_linear.0.bias": (2 * H,)}
    groups = param_groups(block, weight_decay=0.1)
    special = [g for g in groups if g.get("lr") == 1e-3]
    assert len(special) == 1 and special[0]["weight_decay"] == 0
    assert {id(p) for p in special[0]["params"]} == {
        id(block.kernel.log_dt), id(block.kernel.log_A_real), id(block.kernel.A_imag)}
    decayed = [g for g in groups if g["weight_decay"] == 0.1][0]["params"]
    assert {id(p) for p in decayed} == {id(block.kernel.C), id(block.output_linear[0].weight)}


def test_odd_state_size_raises():
    with pytest.raises(ValueError, match="even"):
        S4D(H, d_state=5, backend="reference")
