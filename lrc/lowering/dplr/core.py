"""The chunked delta rule as a differentiable PyTorch function over kernel-layout tensors.

`delta_chunked(q, k, u, beta, g, h0, bt)`: q, k (B, T, H, K), u (B, T, H, V), beta (B, T, H),
g (B, T, H) or, a decay per key, (B, T, H, K), h0 (B, H, K, V) or None; T a multiple of `bt`,
g the per-step log decay (None: no decay; the kernels take it summed within each chunk).
Returns o (B, T, H, V) and the final state (B, H, K, V), both float32, as kernels.py defines
them; the backward kernel gives every input's gradient.
"""
from __future__ import annotations

import torch

from ...kernels.launch import Launcher
from ...layout import next_pow2
from .kernels import SOURCE
from .kernels_ab import SOURCE as SOURCE_AB

LAUNCH = Launcher(SOURCE)
LAUNCH_AB = Launcher(SOURCE_AB)


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


def _within(g: torch.Tensor, bt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per chunk of `bt` steps, G_t = sum of g over the chunk's steps up to t and R_t = sum
    over the steps after t (each summed over its own steps, not as a difference)."""
    B, T, H, K = g.shape
    x = g.reshape(B, T // bt, bt, H, K)
    after = x.flip(2).cumsum(2).flip(2)
    R = torch.cat([after[:, :, 1:], torch.zeros_like(after[:, :, :1])], 2)
    return x.cumsum(2).reshape(g.shape), R.reshape(g.shape)


class _DeltaChunkedPerKey(torch.autograd.Function):
    """The per-key-decay kernels (`_pk`): g (B, T, H, K)."""

    @staticmethod
    def forward(ctx, q, k, u, beta, g, h0, bt, bv):
        B, T, H, K = k.shape
        V = u.shape[-1]
        NT = T // bt
        BK, BV = blocks(K, V, bv)
        NV = -(-V // BV)
        dev = k.device
        G, R = _within(g, bt)
        o = torch.empty(B, T, H, V, dtype=torch.float32, device=dev)
        hT = torch.empty(B, H, K, V, dtype=torch.float32, device=dev)
        store = any(ctx.needs_input_grad)
        hs = torch.empty(B, H, max(NT, 1), K, V, dtype=torch.float32, device=dev) \
            if store else hT
        h0p = h0 if h0 is not None else hT
        LAUNCH("dplr_forward_pk", (NV, B * H), dev,
               [k, q, u, beta, g, G, R, h0p, o, hT, hs, NT, H, K, V],
               BT=bt, BK=BK, BV=BV, HAS_H0=h0 is not None, STORE_HS=store, PREC=_prec(k))
        ctx.save_for_backward(q, k, u, beta, g, G, R, hs)
        ctx.meta = (bt, BK, BV, NV, h0 is not None)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, u, beta, g, G, R, hs = ctx.saved_tensors
        bt, BK, BV, NV, has_h0 = ctx.meta
        B, T, H, K = k.shape
        V = u.shape[-1]
        NT = T // bt
        f32 = dict(dtype=torch.float32, device=k.device)
        dq, dk, dg, dG, dR = (torch.empty(NV, B, T, H, K, **f32) for _ in range(5))
        du = torch.empty(B, T, H, V, **f32)
        db = torch.empty(NV, B, T, H, **f32)
        dh0 = torch.empty(B, H, K, V, **f32)
        do = do.contiguous().float() if do is not None else torch.zeros(B, T, H, V, **f32)
        has_dht = dhT is not None
        dhTp = dhT.contiguous().float() if has_dht else dh0
        LAUNCH("dplr_backward_pk", (NV, B * H), k.device,
               [k, q, u, beta, g, G, R, hs, do, dhTp, dq, dk, du, db, dg, dG, dR, dh0, NT, B,
                H, K, V],
               BT=bt, BK=BK, BV=BV, HAS_DHT=has_dht, PREC=_prec(k))
        # G_t holds g_s for s <= t, R_t for s > t
        dG = dG.sum(0).reshape(B, NT, bt, H, K)
        dR = dR.sum(0).reshape(B, NT, bt, H, K)
        dg = dg.sum(0) + (dG.flip(2).cumsum(2).flip(2) + torch.cat(
            [torch.zeros_like(dR[:, :, :1]), dR.cumsum(2)[:, :, :-1]], 2)).reshape(B, T, H, K)
        return (dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), du.to(u.dtype),
                db.sum(0).to(beta.dtype), dg, dh0 if has_h0 else None, None, None)


def _chunks(x: torch.Tensor, bt: int) -> torch.Tensor:
    B, T = x.shape[:2]
    return x.reshape(B, T // bt, bt, *x.shape[2:])


class _TwoVectorsChunked(torch.autograd.Function):
    """The `_ab` kernels (kernels_ab.py): q, k, x, y, g (B, T, H, K), u (B, T, H, V)."""

    @staticmethod
    def forward(ctx, q, k, x, y, u, g, h0, bt, bv):
        B, T, H, K = k.shape
        V = u.shape[-1]
        NT = T // bt
        BK, BV = blocks(K, V, bv)
        NV = -(-V // BV)
        dev = k.device
        G, R = _within(g, bt)
        Gc = _chunks(G, bt)
        Gx = torch.cat([torch.zeros_like(Gc[:, :, :1]), Gc[:, :, :-1]], 2).reshape(G.shape)
        o = torch.empty(B, T, H, V, dtype=torch.float32, device=dev)
        hT = torch.empty(B, H, K, V, dtype=torch.float32, device=dev)
        store = any(ctx.needs_input_grad)
        hs = torch.empty(B, H, max(NT, 1), K, V, dtype=torch.float32, device=dev) \
            if store else hT
        h0p = h0 if h0 is not None else hT
        LAUNCH_AB("dplr_forward_ab", (NV, B * H), dev,
                  [k, q, x, y, u, g, G, Gx, R, h0p, o, hT, hs, NT, H, K, V],
                  BT=bt, BK=BK, BV=BV, HAS_H0=h0 is not None, STORE_HS=store, PREC=_prec(k))
        ctx.save_for_backward(q, k, x, y, u, g, G, Gx, R, hs)
        ctx.meta = (bt, BK, BV, NV, h0 is not None)
        return o, hT

    @staticmethod
    def backward(ctx, do, dhT):
        q, k, x, y, u, g, G, Gx, R, hs = ctx.saved_tensors
        bt, BK, BV, NV, has_h0 = ctx.meta
        B, T, H, K = k.shape
        V = u.shape[-1]
        NT = T // bt
        f32 = dict(dtype=torch.float32, device=k.device)
        dq, dk, dx, dy, dg, dgp, dG, dGx, dR = (torch.empty(NV, B, T, H, K, **f32)
                                                 for _ in range(9))
        du = torch.empty(B, T, H, V, **f32)
        dh0 = torch.empty(B, H, K, V, **f32)
        do = do.contiguous().float() if do is not None else torch.zeros(B, T, H, V, **f32)
        has_dht = dhT is not None
        dhTp = dhT.contiguous().float() if has_dht else dh0
        LAUNCH_AB("dplr_backward_ab", (NV, B * H), k.device,
                  [k, q, x, y, u, g, G, Gx, R, hs, do, dhTp, dq, dk, dx, dy, du, dg, dgp, dG,
                   dGx, dR, dh0, NT, B, H, K, V],
                  BT=bt, BK=BK, BV=BV, HAS_DHT=has_dht, PREC=_prec(k))
        # row t of dgp is g_{t-1}'s; G_t holds g_s for s <= t, Gx_t for s < t, R_t for s > t
        dgp, dG, dGx, dR = (_chunks(z.sum(0), bt) for z in (dgp, dG, dGx, dR))
        zero = torch.zeros_like(dG[:, :, :1])
        after = dG.flip(2).cumsum(2).flip(2)
        later = torch.cat([dGx.flip(2).cumsum(2).flip(2)[:, :, 1:], zero], 2)
        before = torch.cat([zero, dR.cumsum(2)[:, :, :-1]], 2)
        shifted = torch.cat([dgp[:, :, 1:], zero], 2)
        dg = dg.sum(0) + (after + later + before + shifted).reshape(B, T, H, K)
        return (dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dx.sum(0).to(x.dtype),
                dy.sum(0).to(y.dtype), du.to(u.dtype), dg, dh0 if has_h0 else None, None, None)


def two_vectors_chunked(q, k, x, y, u, g, h0, bt: int, bv: int | None = None):
    """o and the final state of S_t = diag(exp(g_t)) S_{t-1} + x_t (y_t^T S_{t-1}) + k_t u_t^T,
    o_t = S_t^T q_t, in chunks (kernels_ab.py); g (B, T, H, K) per key (0: no decay)."""
    c = lambda z: None if z is None else z.contiguous()
    return _TwoVectorsChunked.apply(c(q), c(k), c(x), c(y), c(u), c(g).float(),
                                    None if h0 is None else c(h0).float(), bt, bv)


def delta_chunked(q, k, u, beta, g, h0, bt: int, bv: int | None = None):
    """o and the final state of the chunked delta rule (see the module docstring); g with a
    key dim (B, T, H, K) takes the per-key kernels."""
    c = lambda x: None if x is None else x.contiguous()
    if g is not None and g.dim() == 4:
        return _DeltaChunkedPerKey.apply(c(q), c(k), c(u), c(beta).float(), c(g).float(),
                                         None if h0 is None else c(h0).float(), bt, bv)
    return _DeltaChunked.apply(c(q), c(k), c(u), c(beta).float(), None if g is None else
                               c(g).float(), None if h0 is None else c(h0).float(), bt, bv)
