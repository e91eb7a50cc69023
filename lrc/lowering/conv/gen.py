"""Convolution kernels K_l = q^T Abar^l Bbar of time-invariant states, without forming powers.

Diagonal Abar = diag(a): K_l = sum_n q_n Bbar_n a_n^l, a Vandermonde product (`vander`).
Diagonal plus low rank, Abar = diag(d) + U^T V (h' = d h + sum_r U_r (V_r . h); S4's bilinear
DPLR step is one): the generating function at the L-th roots of unity z_k,

    sum_{l<L} K_l z^l = q~^T (I - z Abar)^-1 Bbar,   q~ = (I - Abar^L)^T q   (z^L = 1),

is, with M = diag(1 - z d), k(x, y) = sum_n x_n y_n / (1 - z d_n) (a Cauchy kernel) and
Woodbury's identity,

    k(q~, Bbar) + z k(q~, U) (I_r - z k(V, U))^-1 k(V, Bbar),

and K is its inverse FFT (`Dplr.kernel`). The Cauchy sums run in a generated kernel in float64
(near-resonant 1 / (1 - z d) loses digits in float32); Abar^L is a dense matrix power (log L
products of N x N matrices per channel). Every function here is differentiable: the kernels'
backward passes are generated kernels too (`vander_dot`, `cauchy_backward`), and torch's
autograd carries gradients from q, Bbar, a, d, U, V back to the Params.

Tensors are flat: rows (channels, and the batch where an initial state enters) by the
contracted state dim n.
"""
from __future__ import annotations

import math

import torch

from . import kernels as ck


class VanderSum(torch.autograd.Function):
    """(la, w) (R, N) complex -> K (R, width) float32, K_l = scale Re(sum_n w_n exp(l la_n))
    for l < L, zero after (a convolution's zero padding, written by the same kernel), plus
    beta_scale beta at l = 0 where beta (R,) is given (a skip term folded into the kernel)."""

    @staticmethod
    def forward(ctx, la: torch.Tensor, w: torch.Tensor, L: int, scale: float = 1.0,
                width: int | None = None, beta: torch.Tensor | None = None,
                beta_scale: float = 1.0):
        ctx.save_for_backward(la, w)
        ctx.L, ctx.scale, ctx.beta_scale = L, scale, beta_scale
        ctx.beta = None if beta is None else (beta.shape, beta.dtype)
        return ck.vander_sum(la, w, L, scale, width, beta, beta_scale)

    @staticmethod
    def backward(ctx, gk: torch.Tensor):
        la, w = ctx.saved_tensors
        gbeta = None
        if ctx.beta is not None and ctx.needs_input_grad[5]:
            shape, dtype = ctx.beta
            gbeta = (gk[:, 0] * ctx.beta_scale).to(dtype).reshape(shape)
        gk = gk[:, :ctx.L] if gk.shape[-1] != ctx.L else gk
        s0, s1 = ck.vander_dot(la, gk)
        if ctx.scale != 1:
            s0, s1 = s0 * ctx.scale, s1 * ctx.scale
        # K is real: a complex argument's gradient is the conjugated sum (PyTorch's convention),
        # a real one's (a real log-decay or weight) is that sum's real part
        gw = _as_grad(s0.conj(), w)
        gla = _as_grad((w * s1).conj(), la)
        return gla, gw, None, None, None, gbeta, None


def _as_grad(g: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The complex gradient sum `g` as the gradient of `like`: itself for a complex argument,
    its real part for a real one."""
    return g.to(like.dtype) if like.is_complex() else g.real.to(like.dtype)


class Cauchy(torch.autograd.Function):
    """(d (R, N), p (R, J, N)) complex -> sum_n p / (1 - z_k d_n) at the L-th roots of unity."""

    @staticmethod
    def forward(ctx, d: torch.Tensor, p: torch.Tensor, L: int):
        ctx.save_for_backward(d, p)
        return ck.cauchy(d, p, L)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        d, p = ctx.saved_tensors
        gd, gp = ck.cauchy_backward(d, p, g)
        return _as_grad(gd, d), _as_grad(gp, p), None


def vander(la: torch.Tensor, w: torch.Tensor, L: int, real: bool = True, scale: float = 1.0,
           width: int | None = None, beta: torch.Tensor | None = None,
           beta_scale: float = 1.0) -> torch.Tensor:
    """scale sum_n w_n exp(l la_n) for l < L, (R, N) -> (R, L): its real part when `real`;
    with `width`, zeros after L up to width (a convolution kernel's padding); with `beta`
    (R,) real, beta_scale beta added to the real part at l = 0."""
    if L <= 0:
        return la.new_zeros(la.shape[0], width or 0, dtype=torch.float32)
    re = VanderSum.apply(la, w, L, scale, width, beta, beta_scale)
    if real:
        return re
    return torch.complex(re, VanderSum.apply(la, -1j * w, L, scale, width))


def vander_dot(la: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_l x_l exp(l la_n) (R, N) for x (R, L), real or complex."""
    if x.is_complex():
        return _VanderDot.apply(la, x.real.contiguous()) + 1j * _VanderDot.apply(
            la, x.imag.contiguous())
    return _VanderDot.apply(la, x)


class _VanderDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, la: torch.Tensor, x: torch.Tensor):
        s0, s1 = ck.vander_dot(la, x)
        ctx.save_for_backward(la, s1)
        ctx.L, ctx.xdtype = x.shape[-1], x.dtype
        return s0

    @staticmethod
    def backward(ctx, gs: torch.Tensor):
        # s0 = sum_l x_l a^l: dx_l = Re(sum_n conj(gs_n) a_n^l), dla = gs conj(s1)
        la, s1 = ctx.saved_tensors
        gx = ck.vander_sum(la, gs.conj(), ctx.L).to(ctx.xdtype)
        return _as_grad(gs * s1.conj(), la), gx


def shift_right(k: torch.Tensor, by: int = 1) -> torch.Tensor:
    """K_l -> K_{l - by} along the last axis (zeros in front), same length."""
    if by <= 0:
        return k
    pad = k.new_zeros(*k.shape[:-1], min(by, k.shape[-1]))
    return torch.cat([pad, k[..., :k.shape[-1] - by]], -1)


def roots(L: int, device, dtype=torch.complex128) -> torch.Tensor:
    """z_k = exp(-2 pi i k / L), k < L (the points `Cauchy` evaluates at)."""
    k = torch.arange(L, dtype=torch.float64, device=device)
    return torch.polar(torch.ones_like(k), -2 * math.pi * k / L).to(dtype)


class Dplr:
    """A diagonal-plus-low-rank transition per row: d (R, N), U and V (R, r, N), and its
    power Abar^L for the length L it is used at."""

    def __init__(self, d: torch.Tensor, U: torch.Tensor, V: torch.Tensor, L: int,
                 powers: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.d, self.U, self.V, self.L = d, U, V, L
        if powers is None:
            A = torch.diag_embed(d) + U.transpose(-1, -2) @ V   # A[n, m]: (A h)_n
            powers = A, torch.linalg.matrix_power(A, L)
        self.A, self.AL = powers

    def repeat(self, n: int) -> Dplr:
        """The same transition for n copies of every row (row index b * R + r)."""
        rep = lambda x: x.expand(n, *x.shape).reshape(-1, *x.shape[1:])  # noqa: E731
        return Dplr(rep(self.d), rep(self.U), rep(self.V), self.L, (rep(self.A), rep(self.AL)))

    def _woodbury(self, left: torch.Tensor, right: torch.Tensor):
        """Cauchy sums of every (left, right) pair with the low-rank vectors, and the solve:
        returns (k(left, right), k(left, U) (I - z k(V, U))^-1 k(V, right)) over (R, L)."""
        R, r, N = self.U.shape
        L = self.L
        lefts = torch.cat([left[:, None], self.V], 1)        # (R, r+1, N)
        rights = torch.cat([right[:, None], self.U], 1)
        p = (lefts[:, :, None] * rights[:, None, :]).reshape(R, (r + 1) ** 2, N)
        s = Cauchy.apply(self.d, p, L).reshape(R, r + 1, r + 1, L).permute(0, 3, 1, 2)
        z = roots(L, self.d.device)[None, :, None, None]
        eye = torch.eye(r, dtype=s.dtype, device=s.device)
        sol = torch.linalg.solve(eye - z * s[..., 1:, 1:], s[..., 1:, :1])   # (R, L, r, 1)
        low = z[..., 0] * (s[..., :1, 1:] @ sol)[..., 0]
        return s[..., 0, 0], low[..., 0]

    def kernel(self, q: torch.Tensor, bbar: torch.Tensor) -> torch.Tensor:
        """K_l = q^T Abar^l bbar for l < L (R, L) complex."""
        qt = q - (q[:, None, :] @ self.AL)[:, 0]           # (I - Abar^L)^T q
        k00, low = self._woodbury(qt, bbar)
        return torch.fft.ifft(k00 + low, dim=-1)

    def state_kernel(self, bbar: torch.Tensor) -> torch.Tensor:
        """G_l = Abar^l bbar for l < L, (R, L, N) complex: the state's impulse response (for
        the final state; it holds R L N numbers)."""
        R, r, N = self.U.shape
        z = roots(self.L, self.d.device)
        minv = 1 / (1 - z[None, :, None] * self.d[:, None, :])             # (R, L, N)
        vb = torch.cat([bbar[:, None], self.U], 1)
        lefts = self.V
        p = (lefts[:, :, None] * vb[:, None, :]).reshape(R, r * (r + 1), N)
        s = Cauchy.apply(self.d, p, self.L).reshape(R, r, r + 1, self.L).permute(0, 3, 1, 2)
        eye = torch.eye(r, dtype=s.dtype, device=s.device)
        sol = torch.linalg.solve(eye - z[None, :, None, None] * s[..., 1:], s[..., :1])
        v = minv * (bbar[:, None, :] + z[None, :, None] * (
            sol[..., 0][..., None, :] @ self.U[:, None])[..., 0, :])
        eye_n = torch.eye(N, dtype=v.dtype, device=v.device)
        g = torch.einsum("rlm,rnm->rln", v, eye_n - self.AL)              # (I - A^L) v
        return torch.fft.ifft(g, dim=1)
