"""lrc.nn.VimMamba vs Vim's bimamba v2 mixer written in float64 as Vim computes it: the
backward branch on the flipped sequence, each scan a token-by-token loop; gradients; packed
sequences; Vim's parameter names; no decode."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from lrc.nn import param_groups
from lrc.nn.vim import VimMamba
from tests.conftest import rel_err
from tests.nn.helpers import conv_loop, linear, params64, silu

D_MODEL, D_STATE = 5, 3


def branch_loop(block: VimMamba, p: dict, x: torch.Tensor, b: str) -> torch.Tensor:
    """mamba_inner_fn_no_out_proj's y before the gate: silu(conv) -> x_proj -> a selective
    scan loop; b = "" (forward) or "_b" (backward parameters). x (b, t, d_inner)."""
    n = block.d_state
    x = silu(conv_loop(x, p[f"conv1d{b}.weight"], p.get(f"conv1d{b}.bias")))
    dt, B, C = linear(x, p, f"x_proj{b}").split([block.dt_rank, n, n], -1)
    dt = F.softplus(linear(dt, p, f"dt_proj{b}"))
    A = -torch.exp(p["A_b_log" if b else "A_log"])
    h = x.new_zeros(x.shape[0], x.shape[2], n)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * B[:, t, None] * x[:, t,
                                                                                        :, None]
        ys.append((h * C[:, t, None]).sum(-1) + p[f"D{b}"] * x[:, t])
    return torch.stack(ys, 1)


def vim_loop(block: VimMamba, u: torch.Tensor, p: dict | None = None) -> torch.Tensor:
    """Vim's v2 forward in float64: out = out_proj(y_f silu(z) + flip(y_b(flip x) silu(flip z)))
    (halved with if_devide_out, times gamma with a layer scale). u (b, t, d_model)."""
    p = params64(block) if p is None else p
    x, z = linear(u.double(), p, "in_proj").chunk(2, -1)
    y = branch_loop(block, p, x, "") * silu(z)
    y = y + (branch_loop(block, p, x.flip(1), "_b") * silu(z.flip(1))).flip(1)
    if block.if_devide_out:
        y = y / 2
    out = linear(y, p, "out_proj")
    return out * p["gamma"] if "gamma" in p else out


def make(**kw) -> VimMamba:
    return VimMamba(D_MODEL, d_state=D_STATE, d_conv=3, **kw)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_forward_matches_flipped_loops(dtype, tol):
    block = make().to(dtype)
    u = torch.randn(2, 11, D_MODEL).to(dtype)
    got = block(u)
    assert got.dtype == dtype
    assert rel_err(got, vim_loop(block, u)) <= tol


def test_divided_output_and_layer_scale():
    block = make(if_devide_out=True, init_layer_scale=0.5, bias=True)
    u = torch.randn(1, 7, D_MODEL)
    assert rel_err(block(u), vim_loop(block, u)) <= 1e-4


def test_gradients_match_flipped_loops():
    block = make()
    u = torch.randn(2, 9, D_MODEL, requires_grad=True)
    y = block(u)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    p = {k: v.requires_grad_() for k, v in params64(block).items()}
    u64 = u.detach().double().requires_grad_()
    (vim_loop(block, u64, p) * g.double()).sum().backward()
    assert rel_err(u.grad, u64.grad) <= 1e-3
    for name, param in block.named_parameters():
        assert rel_err(param.grad, p[name].grad) <= 1e-3, name


def test_packed_sequences_scan_each_both_ways():
    block = make()
    lengths = [4, 1, 6]
    xs = [torch.randn(1, n, D_MODEL) for n in lengths]
    cu = torch.tensor([0, 4, 5, 11], dtype=torch.int32)
    packed = block(torch.cat(xs, 1), cu_seqlens=cu)
    for i, x in enumerate(xs):
        assert rel_err(packed[:, cu[i]:cu[i + 1]], vim_loop(block, x)) <= 1e-4, i
    with pytest.raises(ValueError, match="batch size 1"):
        block(torch.randn(2, 11, D_MODEL), cu_seqlens=cu)


def test_vim_parameter_names_and_optimizer_hints():
    block = make()
    shapes = {k: tuple(v.shape) for k, v in block.named_parameters()}
    d_in, r = 2 * D_MODEL, block.dt_rank
    assert shapes == {
        "in_proj.weight": (2 * d_in, D_MODEL), "out_proj.weight": (D_MODEL, d_in),
        "conv1d.weight": (d_in, 1, 3), "conv1d.bias": (d_in,),
        "conv1d_b.weight": (d_in, 1, 3), "conv1d_b.bias": (d_in,),
        "x_proj.weight": (r + 2 * D_STATE, d_in), "x_proj_b.weight": (r + 2 * D_STATE, d_in),
        "dt_proj.weight": (d_in, r), "dt_proj.bias": (d_in,),
        "dt_proj_b.weight": (d_in, r), "dt_proj_b.bias": (d_in,),
        "A_log": (d_in, D_STATE), "A_b_log": (d_in, D_STATE), "D": (d_in,), "D_b": (d_in,)}
    groups = param_groups(block, weight_decay=0.1, decay_vectors=True)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert no_decay == {id(block.A_log), id(block.A_b_log), id(block.D), id(block.D_b),
                        id(block.dt_proj.bias), id(block.dt_proj_b.bias)}
    # both branches start at mamba_ssm's init: A = -(1..n), softplus(dt bias) in [1e-3, 0.1]
    for A_log, dt_bias in ((block.A_log, block.dt_proj.bias),
                           (block.A_b_log, block.dt_proj_b.bias)):
        assert torch.allclose(A_log.exp(), torch.arange(1.0, D_STATE + 1).expand(d_in, -1))
        dt = F.softplus(dt_bias)
        assert (dt > 1e-3 - 1e-6).all() and (dt < 0.1 + 1e-6).all()


def test_no_decode():
    block = make()
    with pytest.raises(NotImplementedError, match="bidirectional"):
        block.step(torch.randn(2, D_MODEL), None)
    with pytest.raises(NotImplementedError, match="bidirectional"):
        block.allocate_inference_cache(2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
def test_gpu_forward_and_packed(dtype, tol):
    # the default device makes the loop's own tensors CUDA tensors too
    with torch.device("cuda"), torch.no_grad():
        block = VimMamba(64, d_state=16, backend="triton").to(dtype)
        x = torch.randn(2, 300, 64).to(dtype)
        assert rel_err(block(x), vim_loop(block, x)) <= tol
        cu = torch.tensor([0, 17, 81, 86], dtype=torch.int32)
        packed = block(x[:1, :86], cu_seqlens=cu)
        for i in range(3):
            one = block(x[:1, cu[i]:cu[i + 1]])
            assert rel_err(packed[:, cu[i]:cu[i + 1]], one) <= (1e-4 if dtype == torch.float32
                                                                else 3e-2)
