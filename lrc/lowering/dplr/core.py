"""The chunked delta rule as a differentiable PyTorch function over kernel-layout tensors.

`delta_chunked(q, k, u, beta, g, h0, bt)`: q, k (B, T, H, K), u (B, T, H, V), beta and g
(B, T, H), h0 (B, H, K, V) or None; T a multiple of `bt`, g the per-step log decay (None: no
decay; the kernels take it summed within each chunk). Returns o (B, T, H, V) and the final
state (B, H, K, V), both float32, as kernels.py defines them; the backward kernel gives every
input's gradient.
"""
from __future__ import annotations

import torch

from ...kernels.launch import Launcher
from ...layout import next_pow2
from .kernels import SOURCE

LAUNCH = Launcher(SOURCE)


def _prec(x: torch.Tensor) -> str:
    return "ieee" if x.dtype == torch.float32 else "tf32"


def blocks(K: int, V: int, bv: int | None = None) -> tuple[int, int]:
    """(BK, BV): the whole key dim in one block, value blocks of at most 64 (both >= 16,
    the least tl.dot takes)."""
    BK = max(16, next_pow2(K))
    BV = bv or max(16, min(64, next_pow2(V)))
    return BK, BV


class _DeltaChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, u, beta, g, h0, bt, bv):
        B, T, H, K = k.shape
        G = None if g is None else g.reshape(B, T // bt, bt, H).cumsum(2).reshape(B, T, H)
        V = u.shape[-1]
        NT = T // bt
        BK, BV = blocks(K, V, bv)
        NV = -(-V // BV)
        dev = k.device
        o = torch.empty(B, T, H, V, dtype=torch.float32, device=dev)
        hT = torch.empty(B, H, K, V, dtype=torch.float32, device=dev)
        need = ctx.needs_input_grad
        store = any(need)
        hs = torch.empty(B, H, max(NT, 1), K, V, dtype=torch.float32, device=dev) \
            if store else hT
        has_decay = G is not None
        gp = G if has_decay else beta
        h0p = h0 if h0 is not None else hT
        LAUNCH("dplr_forward", (NV, B * H), dev,
               [k, q, u, beta, gp, h0p, o, hT, hs, NT, H, K, V],
               BT=bt, BK=BK, BV=BV, HAS_DECAY=has_decay, HAS_H0=h0 is not None,
               STORE_HS=store, PREC=_prec(k))
        ctx.save_for_backward(q, k, u, beta, G, hs)
        ctx.meta = (bt, BK, BV, NV, has_decay, h0 is not None)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, u, beta, G, hs = ctx.saved_tensors
        bt, BK, BV, NV, has_decay, has_h0 = ctx.meta
        B, T, H, K = k.shape
        V = u.shape[-1]
        NT = T // bt
        dev = k.device
        f32 = dict(dtype=torch.float32, device=dev)
        dq = torch.empty(NV, B, T, H, K, **f32)
        dk = torch.empty(NV, B, T, H, K, **f32)
        du = torch.empty(B, T, H, V, **f32)
        db = torch.empty(NV, B, T, H, **f32)
        dg = torch.empty(NV, B, T, H, **f32)
        dh0 = torch.empty(B, H, K, V, **f32)
        do = do.contiguous().float() if do is not None else torch.zeros(B, T, H, V, **f32)
        has_dht = dhT is not None
        dhTp = dhT.contiguous().float() if has_dht else dh0
        LAUNCH("dplr_backward", (NV, B * H), dev,
               [k, q, u, beta, G if has_decay else beta, hs, do, dhTp, dq, dk, du, db, dg,
                dh0, NT, B, H, K, V],
               BT=bt, BK=BK, BV=BV, HAS_DECAY=has_decay, HAS_DHT=has_dht, PREC=_prec(k))
        return (dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), du.to(u.dtype),
                db.sum(0).to(beta.dtype), dg.sum(0) if has_decay else None,
                dh0 if has_h0 else None, None, None)


def delta_chunked(q, k, u, beta, g, h0, bt: int, bv: int | None = None):
    """o and the final state of the chunked delta rule (see the module docstring)."""
    c = lambda x: None if x is None else x.contiguous()
    return _DeltaChunked.apply(c(q), c(k), c(u), c(beta).float(), None if g is None else
                               c(g).float(), None if h0 is None else c(h0).float(), bt, bv)
