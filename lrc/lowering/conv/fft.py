"""Causal FFT convolution along time, forward and backward.

y_t = sum_{l < Lk} K_l w_{t-l} (or w_{t+l} when reversed), computed by FFTs of size
NF >= T + Lk - 1, so the circular convolution never wraps around. Tensors are "time-last
canonical": one axis per graph dim (size 1 where absent), then time; kernel and input broadcast
by name, and the axes where the kernel varies are its channels.

Real input and real kernel (every S4/S4D/H3/Hyena kernel once the readout's Re is folded in)
take the fast path: rows of w are paired into one complex signal u0 + i u1 (the kernel being
real keeps the two convolutions apart in the real and imaginary parts), so one complex FFT
serves two rows and no transform needs the clone PyTorch's real inverse makes. Kernels come
zero-padded to the transform size with the inverse's 1/NF folded in (`padded`, or generated so),
and their spectrum is kept as a half (rfft) that the product kernel mirrors. The work is split
in two autograd functions, `Spectrum` (pack + FFT of the input, launched before the kernel is
generated so the GPU has work while the host evaluates parameter expressions) and `Apply`
(product with the kernel's spectrum, inverse FFT, unpack). Anything complex goes through
torch.fft with torch's autograd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...layout import broadcast_shape, expanded, permuted, reshaped
from . import kernels as ck


def fft_size(m: int) -> int:
    """The smallest 2^a 3^b 5^c >= m (sizes cuFFT does fast)."""
    best = 1 << max(0, (m - 1).bit_length())
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            n = p35
            while n < m:
                n *= 2
            best = min(best, n)
            p35 *= 5
        p3 *= 3
    return best


class Spectrum(torch.autograd.Function):
    """(P, C, T) real -> FFT of the row-paired, zero-padded input, (ceil(P/2), C, NF)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, nf: int, reverse: bool):
        ctx.shape, ctx.dtype, ctx.reverse = tuple(w.shape), w.dtype, reverse
        return torch.fft.fft(ck.pack(w, nf, reverse))

    @staticmethod
    def backward(ctx, gz: torch.Tensor):
        # Z = F z, so dz = F^H dZ: the unnormalized inverse
        P, _, T = ctx.shape
        gw = ck.unpack(torch.fft.ifft(gz.contiguous(), norm="forward"), P, T, ctx.reverse)
        return gw.to(ctx.dtype), None, None


class Apply(torch.autograd.Function):
    """A paired spectrum and real kernel rows (C, NF), zero-padded and divided by NF already
    (`padded`) -> the convolution (P, C, T). The kernel's spectrum is kept as its half (rfft):
    the product kernel reads the other half as conjugates, so the full spectrum is never
    written."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, kp: torch.Tensor, P: int, T: int, reverse: bool):
        kh = torch.fft.rfft(kp.float())
        y = ck.unpack(torch.fft.ifft(ck.spectral_product(z, kh), norm="forward"), P, T, reverse)
        ctx.save_for_backward(z, kh)
        ctx.meta = (P, T, reverse, kp.dtype)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        z, kh = ctx.saved_tensors
        P, T, reverse, kdtype = ctx.meta
        nf = z.shape[-1]
        dz = torch.fft.fft(ck.pack(gy.float(), nf, reverse))
        g = ck.spectral_backward(dz, z, kh)  # dz <- dz conj(K): the input spectrum's gradient
        gk = torch.fft.ifft(g, norm="forward").real  # K = F kp: d kp = Re(F^H g)
        return dz, gk.to(kdtype), None, None, None


def padded(k: torch.Tensor, nf: int) -> torch.Tensor:
    """A kernel (..., lk) as `Pending.finish_padded` takes it: zeros to nf taps, divided by
    nf (the inverse transform's normalization, carried by the kernel)."""
    return torch.nn.functional.pad(k / nf, (0, nf - k.shape[-1]))


@dataclass
class Pending:
    """A convolution whose input transform is under way; `finish` applies the kernel."""

    out_shape: tuple[int, ...]
    T: int
    lk: int
    reverse: bool
    paired: bool
    spectrum: torch.Tensor
    perm: tuple[int, ...] = ()
    rows: tuple[int, ...] = ()
    chans: tuple[int, ...] = ()

    @property
    def nf(self) -> int:
        """The transform size: a padded kernel has this many taps."""
        return self.spectrum.shape[-1]

    def finish(self, k: torch.Tensor) -> torch.Tensor:
        """The convolution with kernel k (time-last canonical, length self.lk)."""
        return self.finish_padded(padded(k, self.nf))

    def finish_padded(self, kp: torch.Tensor) -> torch.Tensor:
        """The same with the kernel as `padded` gives it (generated that way: conv_gen.vander
        writes the padding and folds the 1 / nf into its scale)."""
        if self.paired:
            return self._finish_paired(kp)
        y = torch.fft.ifft(self.spectrum * torch.fft.fft(kp), norm="forward")[..., :self.T]
        return y.flip(-1) if self.reverse else y

    def _finish_paired(self, kp: torch.Tensor) -> torch.Tensor:
        nd, nf = len(self.out_shape), self.nf
        kk = permuted(expanded(kp, (*self.out_shape, nf)), (*self.perm, nd))
        sel = kk[(0,) * len(self.rows)] if self.rows else kk
        k2 = reshaped(sel, (math.prod(sel.shape[:-1]), nf))
        P = math.prod(self.rows)
        y = Apply.apply(self.spectrum, k2, P, self.T, self.reverse)
        y = reshaped(y, (*self.rows, *self.chans, self.T))
        inverse = [0] * nd
        for i, p in enumerate(self.perm):
            inverse[p] = i
        return permuted(y, (*inverse, nd))


def start(w: torch.Tensor, kshape: tuple[int, ...], lk: int, real_kernel: bool,
          reverse: bool) -> Pending:
    """Begin the convolution of w (time-last canonical) with a kernel of leading shape
    `kshape` and length lk: the input's spectrum is computed now."""
    T = w.shape[-1]
    lead = broadcast_shape(w.shape[:-1], kshape)
    nf = fft_size(T + lk - 1)
    if w.is_complex() or not real_kernel:
        x = w.flip(-1) if reverse else w
        return Pending(lead, T, lk, reverse, False, torch.fft.fft(x, n=nf))
    chan = [i for i, n in enumerate(kshape) if n > 1]
    rows = [i for i in range(len(lead)) if i not in chan]
    perm = tuple(rows + chan)
    x = permuted(expanded(w, (*lead, T)), (*perm, len(lead)))
    rshape = tuple(lead[i] for i in rows)
    cshape = tuple(lead[i] for i in chan)
    x = reshaped(x, (math.prod(rshape), math.prod(cshape), T))
    spec = Spectrum.apply(x, nf, reverse)
    return Pending(lead, T, lk, reverse, True, spec, perm, rshape, cshape)
