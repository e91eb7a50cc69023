"""Checks every decode block passes: step after prefill vs forward, packed vs separate runs,
a pool of states addressed by state_indices, and plain-PyTorch helpers for the loops."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

from tests.conftest import rel_err


def params64(block: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The block's parameters and buffers in float64 (complex128), detached, by name."""
    out = {}
    for k, v in list(block.named_parameters()) + list(block.named_buffers()):
        out[k] = v.detach().to(torch.complex128 if v.is_complex() else torch.float64)
    return out


def linear(x: torch.Tensor, p: dict, name: str) -> torch.Tensor:
    """x W^T + b from the float64 parameters `name.weight` and `name.bias` (if any)."""
    y = x @ p[f"{name}.weight"].T
    return y + p[f"{name}.bias"] if f"{name}.bias" in p else y


def conv_loop(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise causal conv, token by token: y_t = sum_j w[:, j] x_{t-w+1+j} + bias."""
    b, t, c = x.shape
    w = weight.shape[-1]
    xp = torch.cat([x.new_zeros(b, w - 1, c), x], 1)
    ys = [sum(weight[:, 0, j] * xp[:, s + j] for j in range(w)) for s in range(t)]
    y = torch.stack(ys, 1)
    return y if bias is None else y + bias


def rms(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMS norm over the last dim."""
    y = x / torch.sqrt(x.square().mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def check_step_after_prefill(block, x: torch.Tensor, prefix: int, tol: float) -> None:
    """forward(x[:, :prefix], cache=) then one step per remaining token equals forward(x)."""
    full = block(x)
    cache = block.allocate_inference_cache(x.shape[0], dtype=x.dtype, device=x.device)
    first = block(x[:, :prefix], cache=cache)
    outs = [first]
    for s in range(prefix, x.shape[1]):
        outs.append(block.step(x[:, s:s + 1], cache))
    got = torch.cat(outs, 1)
    assert got.shape == full.shape
    err = rel_err(got, full)
    assert err <= tol, f"step after prefill vs forward: {err}"
    # the (b, d) form gives the same as (b, 1, d)
    c2 = block.allocate_inference_cache(x.shape[0], dtype=x.dtype, device=x.device)
    block(x[:, :prefix], cache=c2)
    y2 = block.step(x[:, prefix], c2)
    assert rel_err(y2, outs[1][:, 0]) <= tol


def check_packed(block, lengths: list[int], d: int, dtype: torch.dtype, tol: float) -> None:
    """cu_seqlens over packed sequences equals separate runs, outputs and filled caches."""
    dev = next(block.parameters()).device
    xs = [torch.randn(1, n, d, dtype=dtype, device=dev) for n in lengths]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                      device=dev)
    cache = block.allocate_inference_cache(len(lengths), dtype=dtype, device=dev)
    packed = block(torch.cat(xs, 1), cu_seqlens=cu, cache=cache)
    for i, x in enumerate(xs):
        one = block.allocate_inference_cache(1, dtype=dtype, device=dev)
        want = block(x, cache=one)
        got = packed[:, cu[i]:cu[i + 1]]
        assert rel_err(got, want) <= tol, f"sequence {i}: {rel_err(got, want)}"
        for name, t in one.tensors().items():
            err = rel_err(getattr(cache, name)[i:i + 1], t)
            assert err <= tol, f"sequence {i}, cache {name}: {err}"


def check_state_indices(block, x: torch.Tensor, pool: int, tol: float) -> None:
    """step with state_indices into a pool cache equals step on a cache of just those rows."""
    b = x.shape[0]
    idx = torch.randperm(pool)[:b].to(x.device)
    big = block.allocate_inference_cache(pool, dtype=x.dtype, device=x.device)
    for t in big.tensors().values():   # rows of other requests: nonzero, must stay untouched
        if t.is_floating_point() or t.is_complex():
            t.copy_(torch.randn_like(t) * 0.1)
        else:
            t.copy_(torch.randint_like(t, 3))
    small = block.allocate_inference_cache(b, dtype=x.dtype, device=x.device)
    block(x[:, :-1], cache=small)
    big.scatter_(idx, small)
    before = copy.deepcopy(big.tensors())
    want = block.step(x[:, -1:], small)
    got = block.step(x[:, -1:], big, state_indices=idx)
    assert rel_err(got, want) <= tol
    for name, t in big.tensors().items():
        assert rel_err(t[idx], getattr(small, name)) <= tol, name
        rest = torch.ones(pool, dtype=torch.bool, device=x.device)
        rest[idx] = False
        assert torch.equal(t[rest], before[name][rest]), f"{name}: other rows changed"
