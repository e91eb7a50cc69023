"""h_t = a_t * h_{t-1} + b_t over all time steps in plain torch ops, with its adjoint.

Two levels: the sequence is cut into about sqrt(T) chunks of C steps; a loop over the C
positions runs every chunk at once from a zero state (keeping the running products of a), then
a loop over the chunks carries the state across them, and one broadcast adds each chunk's
incoming state times the running products. About 2 sqrt(T) small loops instead of T, and only
products of decays (an underflow to 0 is the right answer), never a division by one.
"""
from __future__ import annotations

import math

import torch

# below this length a plain loop over time is as fast (fewer, larger ops do not pay off)
_DIRECT = 16


def _scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, reverse: bool) -> torch.Tensor:
    """H with H[t] = a[t] * H[t-1] + b[t], H[-1] = h0 (reverse: H[t] = a[t] * H[t+1] + b[t],
    H[T] = h0); a, b: (T, *S), h0: (*S)."""
    T = b.shape[0]
    if T <= _DIRECT:
        out = torch.empty(b.shape, dtype=b.dtype, device=b.device)
        h = h0
        for t in reversed(range(T)) if reverse else range(T):
            h = torch.addcmul(b[t], a[t], h)
            out[t] = h
        return out
    if reverse:
        return _scan(a.flip(0), b.flip(0), h0, False).flip(0)
    a, b = a.contiguous(), b.contiguous()
    C = math.isqrt(T - 1) + 1
    n = -(-T // C)
    pad = n * C - T
    if pad:  # a = 1, b = 0 past the end: the state carries unchanged
        a = torch.cat([a, a.new_ones((pad,) + a.shape[1:])])
        b = torch.cat([b, b.new_zeros((pad,) + b.shape[1:])])
    a = a.reshape((n, C) + a.shape[1:])
    b = b.reshape((n, C) + b.shape[1:])
    local = torch.empty_like(b)
    prod = torch.empty_like(a)
    h, p = b[:, 0], a[:, 0]
    local[:, 0], prod[:, 0] = h, p
    for j in range(1, C):
        h = torch.addcmul(b[:, j], a[:, j], h)
        p = p * a[:, j]
        local[:, j], prod[:, j] = h, p
    carry = torch.empty((n,) + b.shape[2:], dtype=b.dtype, device=b.device)
    h = h0
    for k in range(n):
        carry[k] = h
        h = torch.addcmul(local[k, -1], prod[k, -1], h)
    out = torch.addcmul(local, prod, carry.unsqueeze(1))
    return out.reshape((n * C,) + out.shape[2:])[:T]


class DiagonalScan(torch.autograd.Function):
    """The scan as one autograd node: its backward is the same scan run right to left."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
                reverse: bool) -> torch.Tensor:
        H = _scan(a, b, h0, reverse)
        ctx.save_for_backward(a, H, h0)
        ctx.reverse = reverse
        return H

    @staticmethod
    def backward(ctx, dH: torch.Tensor):
        a, H, h0 = ctx.saved_tensors
        # g_t = dH_t + conj(a_{t+1}) g_{t+1}: the same scan the other way (conj: complex
        # gradients in torch's convention; a no-op for real ones)
        zero = a.new_zeros((1,) + a.shape[1:])
        h0 = h0.unsqueeze(0)
        if ctx.reverse:
            nxt, prev, first = torch.cat([zero, a[:-1]]), torch.cat([H[1:], h0]), -1
        else:
            nxt, prev, first = torch.cat([a[1:], zero]), torch.cat([h0, H[:-1]]), 0
        g = _scan(nxt.conj(), dH, torch.zeros_like(h0[0]), not ctx.reverse)
        da = g * prev.conj() if ctx.needs_input_grad[0] else None
        dh0 = g[first] * a[first].conj() if ctx.needs_input_grad[2] else None
        return da, g, dh0, None


def diagonal_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor,
                  reverse: bool = False) -> torch.Tensor:
    """Every state of h_t = a_t * h_{t-1} + b_t (right to left when `reverse`), differentiable.

    a, b: (T, *S) or broadcastable to b's shape; h0: broadcastable to (*S). All three are cast
    to their promoted dtype (complex when any is)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), h0.dtype)
    shape = torch.broadcast_shapes(a.shape, b.shape, (1,) + tuple(h0.shape))
    a = a.to(dtype).expand(shape)
    b = b.to(dtype).expand(shape)
    h0 = h0.to(dtype).expand(shape[1:])
    return DiagonalScan.apply(a, b, h0, reverse)
