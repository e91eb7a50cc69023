"""Causal FFT convolution along time, forward and backward.

y_t = sum_{l < Lk} K_l w_{t-l} (or w_{t+l} when reversed), computed by FFTs of size
NF >= T + Lk - 1, so the circular convolution never wraps around. Tensors are "time-last
canonical": one axis per graph dim (size 1 where absent), then time; kernel and input broadcast
by name, and the axes where the kernel varies are its channels.

Real input and real kernel (every S4/S4D/H3/Hyena kernel once the readout's Re is folded in)
take the fast path: rows of w are paired into one complex signal u0 + i u1 (the kernel being
real keeps the two convolutions apart in the real and imaginary parts), so one complex FFT
serves two rows and no transform needs the clone PyTorch's real inverse makes. The 1/NF of the
inverse is folded into the kernel's spectrum. The work is split in two autograd functions,
`Spectrum` (pack + FFT of the input, launched before the kernel is generated so the GPU has
work while the host evaluates parameter expressions) and `Apply` (product with the kernel's
spectrum, inverse FFT, unpack). Anything complex goes through torch.fft with torch's autograd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import conv_kernels as ck


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
    """A paired spectrum and a real kernel (C, Lk) -> the convolution (P, C, T)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, k: torch.Tensor, P: int, T: int, reverse: bool):
        nf = z.shape[-1]
        kf = torch.fft.fft(k.float(), n=nf, norm="forward")  # carries the inverse's 1/NF
        y = ck.unpack(torch.fft.ifft(z * kf, norm="forward"), P, T, reverse)
        ctx.save_for_backward(z, kf)
        ctx.meta = (P, T, reverse, k.shape[-1], k.dtype)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        z, kf = ctx.saved_tensors
        P, T, reverse, lk, kdtype = ctx.meta
        nf = z.shape[-1]
        dz = torch.fft.fft(ck.pack(gy.float(), nf, reverse))
        g = ck.spectral_backward(dz, z, kf)  # dz <- dz conj(kf): the input spectrum's gradient
        gk = torch.fft.ifft(g).real[:, :lk]
        return dz, gk.to(kdtype), None, None, None


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

    def finish(self, k: torch.Tensor) -> torch.Tensor:
        """The convolution with kernel k (time-last canonical, length self.lk)."""
        if self.paired:
            return self._finish_paired(k)
        nf = self.spectrum.shape[-1]
        y = torch.fft.ifft(self.spectrum * torch.fft.fft(k, n=nf), n=nf)[..., :self.T]
        return y.flip(-1) if self.reverse else y

    def _finish_paired(self, k: torch.Tensor) -> torch.Tensor:
        nd = len(self.out_shape)
        kk = k.expand(*self.out_shape, self.lk).permute(*self.perm, nd)
        k2 = kk[(0,) * len(self.rows)].reshape(-1, self.lk)
        P = math.prod(self.rows)
        y = Apply.apply(self.spectrum, k2, P, self.T, self.reverse)
        y = y.reshape(*self.rows, *self.chans, self.T)
        inverse = [0] * nd
        for i, p in enumerate(self.perm):
            inverse[p] = i
        return y.permute(*inverse, nd)


def start(w: torch.Tensor, kshape: tuple[int, ...], lk: int, real_kernel: bool,
          reverse: bool) -> Pending:
    """Begin the convolution of w (time-last canonical) with a kernel of leading shape
    `kshape` and length lk: the input's spectrum is computed now."""
    T = w.shape[-1]
    lead = tuple(torch.broadcast_shapes(w.shape[:-1], kshape))
    nf = fft_size(T + lk - 1)
    if w.is_complex() or not real_kernel:
        x = w.flip(-1) if reverse else w
        return Pending(lead, T, lk, reverse, False, torch.fft.fft(x, n=nf))
    chan = [i for i, n in enumerate(kshape) if n > 1]
    rows = [i for i in range(len(lead)) if i not in chan]
    perm = tuple(rows + chan)
    x = w.expand(*lead, T).permute(*perm, len(lead))
    rshape = tuple(lead[i] for i in rows)
    cshape = tuple(lead[i] for i in chan)
    x = x.reshape(math.prod(rshape), math.prod(cshape), T)
    spec = Spectrum.apply(x, nf, reverse)
    return Pending(lead, T, lk, reverse, True, spec, perm, rshape, cshape)
