"""The Triton kernels of the convolution lowering, and their launchers.

Two families. Kernel generation: `vander_sum` evaluates K_l = Re(sum_n w_n a_n^l) (diagonal
states; also the initial state's term), `vander_dot` the transposed sums sum_l x_l a^l and
sum_l l x_l a^l (their backward, and final states), `cauchy` / `cauchy_backward` the sums
sum_n p_n / (1 - z_k d_n) at the roots of unity z_k (DPLR states, with Woodbury's identity in
PyTorch). FFT convolution: `pack` puts two real rows into one zero-padded complex row (the FFT
of u0 + i u1 gives both spectra at once, and a real kernel keeps them apart), `unpack` takes
them out again, `spectral_product` multiplies by a real kernel's spectrum given by its half
(rfft), `spectral_backward` applies the conjugate kernel in place and sums the kernel's
gradient over the batch. The FFTs themselves are cuFFT's (torch.fft).

Powers a^l are never formed one by one: a program computes a^j for j < BLOCK_L once and a^l0
per block (phases in float64, so l * arg(a) keeps its digits at l ~ 1e4), and the block's
values are products of the two (in `vander_sum`, all blocks' at once as two matrix products).
"""
from __future__ import annotations

import torch
import triton

from ...kernels import launch as kernel_launch
from ...layout import next_pow2

VANDER = '''
@triton.jit
def _power(ar, ai, x):
    # a^x = exp(x ar) (cos + i sin)(x ai): the phase in float64, reduced mod 2 pi there, then
    # float32 (cos and sin of [-pi, pi]; the magnitude's exponent needs no more than float32)
    ph = ai * x
    ph = (ph - 6.283185307179586 * tl.floor(ph * 0.15915494309189535 + 0.5)).to(tl.float32)
    mag = tl.exp((ar * x).to(tl.float32))
    return mag * tl.cos(ph), mag * tl.sin(ph)


@triton.jit
def conv_vander_sum(la_re, la_im, w_re, w_im, out, beta, N, L, W, scale, beta_scale, s_la,
                    s_w, s_o, s_beta, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
                    STEPS: tl.constexpr, HAS_BETA: tl.constexpr):
    # out[r, l] = scale Re(sum_n w[r, n] a[r, n]^l) (+ beta_scale beta[r] at l = 0, HAS_BETA)
    # for l < L and 0 for L <= l < W, over this
    # program's STEPS blocks of BLOCK_L positions l = l0_s + j; la and w complex (parts
    # interleaved: n at 2 n), s_la and s_w their rows' strides. With c[s, n] = w_n a_n^l0_s and
    # e[n, j] = a_n^j the blocks are Re(c @ e): two products on the tensor cores (three TF32
    # passes each: float32's digits), and each power is computed once, in parallel
    r = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK_L)
    s = tl.arange(0, STEPS)
    start = tl.program_id(1) * (STEPS * BLOCK_L)
    pos = start + s[:, None] * BLOCK_L + j[None, :]
    if start >= L:  # the zero padding alone
        tl.store(out + r * s_o + pos, tl.zeros([STEPS, BLOCK_L], tl.float32), mask=pos < W)
    else:
        n = tl.arange(0, BLOCK_N)
        mn = n < N
        ar = tl.load(la_re + r * s_la + 2 * n, mask=mn, other=0.0).to(tl.float64)
        ai = tl.load(la_im + r * s_la + 2 * n, mask=mn, other=0.0).to(tl.float64)
        wr = tl.load(w_re + r * s_w + 2 * n, mask=mn, other=0.0).to(tl.float32) * scale
        wi = tl.load(w_im + r * s_w + 2 * n, mask=mn, other=0.0).to(tl.float32) * scale
        er, ei = _power(ar[:, None], ai[:, None], j.to(tl.float64)[None, :])   # (n, j)
        l0 = (start + s * BLOCK_L).to(tl.float64)
        br, bi = _power(ar[None, :], ai[None, :], l0[:, None])                   # (s, n)
        cr = wr[None, :] * br - wi[None, :] * bi
        ci = wr[None, :] * bi + wi[None, :] * br
        k = (tl.dot(cr, er, input_precision="tf32x3")
             - tl.dot(ci, ei, input_precision="tf32x3"))
        k = tl.where(pos < L, k, 0.0)
        if HAS_BETA:  # + beta_scale beta[r] at l = 0 (a skip term folded into the kernel)
            b = tl.load(beta + r * s_beta).to(tl.float32) * beta_scale
            k = tl.where(pos == 0, k + b, k)
        tl.store(out + r * s_o + pos, k, mask=pos < W)


@triton.jit
def conv_vander_dot(la_re, la_im, x, s, N, L, R, s_la, s_x,
                    BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, STEPS: tl.constexpr):
    # this program's share of s0[r, n] = sum_l x[r, l] a[r, n]^l and s1 = sum_l l x a^l:
    # s[(0 | 1 | 2 | 3), chunk, r, n] = (Re s0, Im s0, Re s1, Im s1)
    r = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    j = tl.arange(0, BLOCK_L)
    mn = n < N
    ar = tl.load(la_re + r * s_la + 2 * n, mask=mn, other=0.0).to(tl.float64)
    ai = tl.load(la_im + r * s_la + 2 * n, mask=mn, other=0.0).to(tl.float64)
    er, ei = _power(ar[None, :], ai[None, :], j.to(tl.float64)[:, None])
    a0r = tl.zeros([BLOCK_N], dtype=tl.float32)
    a0i = tl.zeros([BLOCK_N], dtype=tl.float32)
    a1r = tl.zeros([BLOCK_N], dtype=tl.float32)
    a1i = tl.zeros([BLOCK_N], dtype=tl.float32)
    start = c * (STEPS * BLOCK_L)
    for step in range(STEPS):
        l0 = start + step * BLOCK_L
        xl = tl.load(x + r * s_x + l0 + j, mask=(l0 + j) < L, other=0.0).to(tl.float32)
        jx = j.to(tl.float32) * xl
        # this block's sums relative to l0, then rotated by a^l0
        i0r = tl.sum(er * xl[:, None], axis=0)
        i0i = tl.sum(ei * xl[:, None], axis=0)
        i1r = tl.sum(er * jx[:, None], axis=0) + l0.to(tl.float32) * i0r
        i1i = tl.sum(ei * jx[:, None], axis=0) + l0.to(tl.float32) * i0i
        br, bi = _power(ar, ai, l0.to(tl.float64))
        a0r += br * i0r - bi * i0i
        a0i += br * i0i + bi * i0r
        a1r += br * i1r - bi * i1i
        a1i += br * i1i + bi * i1r
    part = (c * R + r) * N + n
    plane = tl.num_programs(1).to(tl.int64) * R * N
    tl.store(s + part, a0r, mask=mn)
    tl.store(s + plane + part, a0i, mask=mn)
    tl.store(s + 2 * plane + part, a1r, mask=mn)
    tl.store(s + 3 * plane + part, a1i, mask=mn)
'''

CAUCHY = '''
@triton.jit
def _cauchy_tile(d_re, d_im, r, n, mn, k, L, s_d):
    # 1 / (1 - z_k d_n) over a [BLOCK_N, BLOCK_K] tile, and z_k = exp(-2 pi i k / L)
    dr = tl.load(d_re + r * s_d + n, mask=mn, other=0.0).to(tl.float64)
    di = tl.load(d_im + r * s_d + n, mask=mn, other=0.0).to(tl.float64)
    ang = -6.283185307179586 * k.to(tl.float64) / L
    zr = tl.cos(ang)
    zi = tl.sin(ang)
    den_r = 1.0 - (zr[None, :] * dr[:, None] - zi[None, :] * di[:, None])
    den_i = -(zr[None, :] * di[:, None] + zi[None, :] * dr[:, None])
    inv = 1.0 / (den_r * den_r + den_i * den_i)
    return den_r * inv, -den_i * inv, zr, zi


@triton.jit
def conv_cauchy(d_re, d_im, p_re, p_im, o_re, o_im, N, J, L, s_d, s_p, s_pj, s_o, s_oj,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # o[r, j, k] = sum_n p[r, j, n] / (1 - z_k d[r, n])
    r = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    n = tl.arange(0, BLOCK_N)
    mn = n < N
    rr, ri, zr, zi = _cauchy_tile(d_re, d_im, r, n, mn, k, L, s_d)
    for jj in range(0, J):
        j = tl.cast(jj, tl.int64)  # j * s_oj reaches (J - 1) L: int64, as r * s_o
        pr = tl.load(p_re + r * s_p + j * s_pj + n, mask=mn, other=0.0).to(tl.float64)
        pi = tl.load(p_im + r * s_p + j * s_pj + n, mask=mn, other=0.0).to(tl.float64)
        sr = tl.sum(pr[:, None] * rr - pi[:, None] * ri, axis=0)
        si = tl.sum(pr[:, None] * ri + pi[:, None] * rr, axis=0)
        tl.store(o_re + r * s_o + j * s_oj + k, sr, mask=k < L)
        tl.store(o_im + r * s_o + j * s_oj + k, si, mask=k < L)


@triton.jit
def conv_cauchy_backward(d_re, d_im, p_re, p_im, g_re, g_im, gp_re, gp_im, gd_re, gd_im,
                         N, J, L, s_d, s_p, s_pj, s_o, s_oj,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # gp[r, j, n] = sum_k conj(1 / (1 - z_k d_n)) g[r, j, k]
    # gd[r, n] = sum_j conj(p[r, j, n]) sum_k conj(z_k / (1 - z_k d_n)^2) g[r, j, k]
    r = tl.program_id(0).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    mn = n < N
    gdr = tl.zeros([BLOCK_N], dtype=tl.float64)
    gdi = tl.zeros([BLOCK_N], dtype=tl.float64)
    for jj in range(0, J):
        j = tl.cast(jj, tl.int64)  # j * s_oj reaches (J - 1) L: int64, as r * s_o
        apr = tl.zeros([BLOCK_N], dtype=tl.float64)
        api = tl.zeros([BLOCK_N], dtype=tl.float64)
        adr = tl.zeros([BLOCK_N], dtype=tl.float64)
        adi = tl.zeros([BLOCK_N], dtype=tl.float64)
        for k0 in range(0, L, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            rr, ri, zr, zi = _cauchy_tile(d_re, d_im, r, n, mn, k, L, s_d)
            gr = tl.load(g_re + r * s_o + j * s_oj + k, mask=k < L, other=0.0)[None, :]
            gi = tl.load(g_im + r * s_o + j * s_oj + k, mask=k < L, other=0.0)[None, :]
            apr += tl.sum(rr * gr + ri * gi, axis=1)
            api += tl.sum(rr * gi - ri * gr, axis=1)
            qr0 = rr * rr - ri * ri
            qi0 = 2.0 * rr * ri
            qr = zr[None, :] * qr0 - zi[None, :] * qi0
            qi = zr[None, :] * qi0 + zi[None, :] * qr0
            adr += tl.sum(qr * gr + qi * gi, axis=1)
            adi += tl.sum(qr * gi - qi * gr, axis=1)
        tl.store(gp_re + r * s_p + j * s_pj + n, apr, mask=mn)
        tl.store(gp_im + r * s_p + j * s_pj + n, api, mask=mn)
        pr = tl.load(p_re + r * s_p + j * s_pj + n, mask=mn, other=0.0).to(tl.float64)
        pi = tl.load(p_im + r * s_p + j * s_pj + n, mask=mn, other=0.0).to(tl.float64)
        gdr += pr * adr + pi * adi
        gdi += pr * adi - pi * adr
    tl.store(gd_re + r * s_d + n, gdr, mask=mn)
    tl.store(gd_im + r * s_d + n, gdi, mask=mn)
'''

FFT = '''
@triton.jit
def conv_pack(w, z, P, C, T, NF, s_wp, s_wc, s_wt,
              BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, REVERSE: tl.constexpr):
    # z[p, c, t] = w[2p, c, t] + i w[2p+1, c, t] for t < T; zero for T <= t < NF
    p = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    mc = c < C
    m = mc[:, None] & (t < T)[None, :]
    src = (T - 1 - t) if REVERSE else t
    off = c[:, None].to(tl.int64) * s_wc + src[None, :].to(tl.int64) * s_wt
    lo = tl.load(w + 2 * p * s_wp + off, mask=m, other=0.0).to(tl.float32)
    hi = tl.load(w + (2 * p + 1) * s_wp + off, mask=m & (2 * p + 1 < P), other=0.0)
    pair = tl.join(lo, hi.to(tl.float32))
    dst = ((p * C + c[:, None]) * NF + t[None, :]) * 2
    dst = dst[:, :, None] + tl.arange(0, 2)[None, None, :]
    tl.store(z + dst, pair, mask=(mc[:, None] & (t < NF)[None, :])[:, :, None])


@triton.jit
def conv_unpack(z, y, P, C, T, NF, s_yp, s_yc, s_yt,
                BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, REVERSE: tl.constexpr):
    # y[2p, c, t] = Re z[p, c, t], y[2p+1, c, t] = Im z[p, c, t] for t < T
    p = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    mc = c < C
    m = mc[:, None] & (t < T)[None, :]
    src = (T - 1 - t) if REVERSE else t
    off = ((p * C + c[:, None]) * NF + src[None, :]) * 2
    pair = tl.load(z + off[:, :, None] + tl.arange(0, 2)[None, None, :], mask=m[:, :, None])
    lo, hi = tl.split(pair)
    dst = c[:, None].to(tl.int64) * s_yc + t[None, :].to(tl.int64) * s_yt
    tl.store(y + 2 * p * s_yp + dst, lo, mask=m)
    tl.store(y + (2 * p + 1) * s_yp + dst, hi, mask=m & (2 * p + 1 < P))


@triton.jit
def _half_spectrum(kh, c, f, NF, NH):
    # the spectrum of a real row at f from its first NH = NF // 2 + 1 bins: conj(kh[NF - f])
    # past the middle
    two = tl.arange(0, 2)[None, :]
    upper = f > NF // 2
    idx = tl.where(upper, NF - f, f)
    kr, ki = tl.split(tl.load(kh + (c * NH + idx)[:, None] * 2 + two, mask=(f < NF)[:, None],
                              other=0.0))
    return kr, tl.where(upper, -ki, ki)


@triton.jit
def conv_spectral_product(z, kh, out, PP, C, NF, NH, BLOCK_F: tl.constexpr):
    # out[p, c, f] = z[p, c, f] K[c, f], K the spectrum of a real row given by its half kh
    c = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    m = (f < NF)[:, None]
    two = tl.arange(0, 2)[None, :]
    kr, ki = _half_spectrum(kh, c, f, NF, NH)
    for p in range(0, PP):
        off = ((p * C + c) * NF + f)[:, None] * 2 + two
        zr, zi = tl.split(tl.load(z + off, mask=m, other=0.0))
        tl.store(out + off, tl.join(zr * kr - zi * ki, zr * ki + zi * kr), mask=m)


@triton.jit
def conv_spectral_backward(dz, z, kh, g, PP, C, NF, NH, BLOCK_F: tl.constexpr):
    # dz[p, c, f] <- dz[p, c, f] conj(K[c, f]) in place (K given by its half kh, as in
    # conv_spectral_product);  g[c, f] = sum_p conj(z[p, c, f]) dz
    c = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    m = (f < NF)[:, None]
    two = tl.arange(0, 2)[None, :]
    kr, ki = _half_spectrum(kh, c, f, NF, NH)
    ar = tl.zeros([BLOCK_F], dtype=tl.float32)
    ai = tl.zeros([BLOCK_F], dtype=tl.float32)
    for p in range(0, PP):
        off = ((p * C + c) * NF + f)[:, None] * 2 + two
        dr, di = tl.split(tl.load(dz + off, mask=m, other=0.0))
        zr, zi = tl.split(tl.load(z + off, mask=m, other=0.0))
        ar += zr * dr + zi * di
        ai += zr * di - zi * dr
        tl.store(dz + off, tl.join(dr * kr + di * ki, di * kr - dr * ki), mask=m)
    tl.store(g + (c * NF + f)[:, None] * 2 + two, tl.join(ar, ai), mask=m)
'''

SOURCES = {"vandermonde": VANDER, "cauchy": CAUCHY, "fft": FFT}


def source() -> str:
    """The whole generated module (every conv kernel)."""
    body = "\n".join(SOURCES.values())
    return ('"""Convolution-lowering kernels (lrc)."""\nimport triton\n'
            'import triton.language as tl\n' + body)


_LAUNCHER: kernel_launch.Launcher | None = None


def _launch(name: str, grid, device: torch.device, *args, **consts) -> None:
    """One launch (a signature seen before goes straight to the compiled kernel's launcher:
    module.Launcher)."""
    global _LAUNCHER
    if _LAUNCHER is None:
        _LAUNCHER = kernel_launch.Launcher(source())
    _LAUNCHER(name, tuple(grid), device, list(args), **consts)


def _pow2(n: int, lo: int = 1) -> int:
    return max(lo, next_pow2(n))


def _vander_blocks(N: int, L: int, rows: int = 1) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_L, STEPS, programs along L) of `conv_vander_dot`: tiles of about 2K
    elements, a^j computed once per program and reused for STEPS blocks, with enough programs
    in all (`rows` of them along the other axis) to fill the GPU."""
    bn = _pow2(N)
    bl = min(_pow2(L, 16), _pow2(max(16, 2048 // bn), 16))
    blocks = triton.cdiv(L, bl)
    chunks = min(blocks, triton.cdiv(2048, max(rows, 1)))
    steps = triton.cdiv(blocks, chunks)
    return bn, bl, steps, triton.cdiv(L, bl * steps)


def _vander_sum_blocks(N: int, L: int, rows: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_L, STEPS) of `conv_vander_sum`: its two products are (STEPS, BLOCK_N) by
    (BLOCK_N, BLOCK_L), each dim at least 16 (tl.dot's smallest), up to 2048 positions a
    program (8 warps: 80 registers), and programs enough to fill the GPU where rows are few."""
    bn = _pow2(N, 16)
    bl = min(64, _pow2(L, 16))
    steps = min(32, _pow2(triton.cdiv(L, bl), 16))
    while steps > 16 and rows * triton.cdiv(L, bl * steps) < 1024:
        steps //= 2
    return bn, bl, steps


def _parts(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous real and imaginary parts in `dtype` (what the kernels index)."""
    x = x.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
    return x.real.contiguous(), x.imag.contiguous()


def _interleaved(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Complex (R, N) `x` as views of its real and imaginary parts (element stride 2, what
    the Vandermonde kernels index) and its rows' stride in reals: no copies where `x` is
    complex with contiguous rows (a real `x` is made complex first)."""
    if not x.is_complex():
        x = x.to(torch.complex128)
    x = x.resolve_conj()
    if x.stride(-1) != 1:
        x = x.contiguous()
    v = torch.view_as_real(x)
    return v[..., 0], v[..., 1], v.stride(0)


def vander_sum(la: torch.Tensor, w: torch.Tensor, L: int, scale: float = 1.0,
               width: int | None = None, beta: torch.Tensor | None = None,
               beta_scale: float = 1.0) -> torch.Tensor:
    """scale Re(sum_n w[r, n] exp(l la[r, n])) for l < L, then zeros up to `width` (default
    L), plus beta_scale beta[r] at l = 0 where `beta` (R,) real is given: (R, N) complex ->
    (R, width) float32."""
    R, N = la.shape
    W = L if width is None else width
    (lr, li, s_la), (wr, wi, s_w) = _interleaved(la), _interleaved(w)
    out = torch.empty(R, W, device=la.device, dtype=torch.float32)
    if R and W:
        bn, bl, steps = _vander_sum_blocks(N, max(L, 1), R)
        warps = {"num_warps": 8} if la.device.type == "cuda" else {}
        b, s_b = (beta, beta.stride(0)) if beta is not None else (out, 0)
        _launch("conv_vander_sum", (R, triton.cdiv(W, bl * steps)), la.device, lr, li, wr, wi,
                out, b, N, L, W, float(scale), float(beta_scale), s_la, s_w, W, s_b,
                BLOCK_N=bn, BLOCK_L=bl, STEPS=steps, HAS_BETA=beta is not None, **warps)
    return out


def vander_dot(la: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum_l x[r, l] a^l, sum_l l x[r, l] a^l) with a = exp(la): (R, N) complex, (R, L) real
    -> two (R, N) complex64."""
    R, N = la.shape
    L = x.shape[-1]
    lr, li, s_la = _interleaved(la)
    x = x.float()
    if x.stride(-1) != 1:
        x = x.contiguous()
    bn, bl, steps, chunks = _vander_blocks(N, L, R)
    s = torch.zeros(4, chunks, R, N, device=la.device, dtype=torch.float32)
    if R and N and L:
        _launch("conv_vander_dot", (R, chunks), la.device, lr, li, x, s, N, L, R, s_la,
                x.stride(0), BLOCK_N=bn, BLOCK_L=bl, STEPS=steps)
    s = s.sum(1)
    return torch.complex(s[0], s[1]), torch.complex(s[2], s[3])


def _cauchy_blocks(N: int, L: int) -> tuple[int, int]:
    bn = _pow2(N)
    return bn, min(_pow2(L, 16), _pow2(max(16, 2048 // bn), 16))


def cauchy(d: torch.Tensor, p: torch.Tensor, L: int) -> torch.Tensor:
    """sum_n p[r, j, n] / (1 - z_k d[r, n]) at z_k = exp(-2 pi i k / L): d (R, N), p (R, J, N)
    complex -> (R, J, L) complex128 (computed in float64)."""
    R, J, N = p.shape
    (dr, di), (pr, pi) = _parts(d, torch.float64), _parts(p, torch.float64)
    out = torch.empty(2, R, J, L, device=d.device, dtype=torch.float64)
    bn, bk = _cauchy_blocks(N, L)
    if R and J and L:
        _launch("conv_cauchy", (R, triton.cdiv(L, bk)), d.device, dr, di, pr, pi, out[0],
                out[1], N, J, L, N, J * N, N, J * L, L, BLOCK_N=bn, BLOCK_K=bk)
    return torch.complex(out[0], out[1])


def cauchy_backward(d: torch.Tensor, p: torch.Tensor, g: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (PyTorch's convention for complex tensors) of `cauchy` w.r.t. d and p, given
    the output's gradient g (R, J, L)."""
    R, J, N = p.shape
    L = g.shape[-1]
    (dr, di), (pr, pi), (gr, gi) = (_parts(d, torch.float64), _parts(p, torch.float64),
                                    _parts(g, torch.float64))
    gp = torch.empty(2, R, J, N, device=d.device, dtype=torch.float64)
    gd = torch.empty(2, R, N, device=d.device, dtype=torch.float64)
    bn, bk = _cauchy_blocks(N, L)
    if R and J and L:
        _launch("conv_cauchy_backward", (R,), d.device, dr, di, pr, pi, gr, gi, gp[0], gp[1],
                gd[0], gd[1], N, J, L, N, J * N, N, J * L, L, BLOCK_N=bn, BLOCK_K=bk)
    return torch.complex(gd[0], gd[1]), torch.complex(gp[0], gp[1])


def _fft_blocks(C: int, NF: int, s_t: int) -> tuple[int, int]:
    if s_t == 1:  # time contiguous: long rows
        return 1, min(1024, _pow2(NF))
    return min(32, _pow2(C)), min(64, _pow2(NF))


def pack(w: torch.Tensor, NF: int, reverse: bool) -> torch.Tensor:
    """(P, C, T) real -> (ceil(P/2), C, NF) complex64: rows paired as re + i im, zero-padded."""
    P, C, T = w.shape
    PP = (P + 1) // 2
    z = torch.empty(PP, C, NF, 2, device=w.device, dtype=torch.float32)
    bc, bt = _fft_blocks(C, NF, w.stride(2))
    _launch("conv_pack", (PP, triton.cdiv(C, bc), triton.cdiv(NF, bt)), w.device, w, z, P, C,
            T, NF, w.stride(0), w.stride(1), w.stride(2), BLOCK_C=bc, BLOCK_T=bt,
            REVERSE=reverse)
    return torch.view_as_complex(z)


def unpack(z: torch.Tensor, P: int, T: int, reverse: bool,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """The inverse of `pack`, cut to T steps: (ceil(P/2), C, NF) complex64 -> (P, C, T)."""
    PP, C, NF = z.shape
    y = torch.empty(P, C, T, device=z.device, dtype=torch.float32) if out is None else out
    bc, bt = _fft_blocks(C, T, y.stride(2))
    _launch("conv_unpack", (PP, triton.cdiv(C, bc), triton.cdiv(T, bt)), z.device,
            torch.view_as_real(z), y, P, C, T, NF, y.stride(0), y.stride(1), y.stride(2),
            BLOCK_C=bc, BLOCK_T=bt, REVERSE=reverse)
    return y


def spectral_product(z: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """z (PP, C, NF) times the spectrum of real kernel rows given by their halves kh
    (C, NF // 2 + 1): the full product (PP, C, NF) complex64."""
    PP, C, NF = z.shape
    out = torch.empty(PP, C, NF, 2, device=z.device, dtype=torch.float32)
    bf = min(1024, _pow2(NF))
    _launch("conv_spectral_product", (C, triton.cdiv(NF, bf)), z.device, torch.view_as_real(z),
            torch.view_as_real(kh), out, PP, C, NF, kh.shape[-1], BLOCK_F=bf)
    return torch.view_as_complex(out)


def spectral_backward(dz: torch.Tensor, z: torch.Tensor, kh: torch.Tensor) -> torch.Tensor:
    """dz <- dz conj(K) in place, K the full spectrum of the half kh (as `spectral_product`);
    returns sum_p conj(z) dz (before the update), (C, NF)."""
    PP, C, NF = dz.shape
    g = torch.empty(C, NF, 2, device=dz.device, dtype=torch.float32)
    bf = min(1024, _pow2(NF))
    _launch("conv_spectral_backward", (C, triton.cdiv(NF, bf)), dz.device,
            torch.view_as_real(dz), torch.view_as_real(z), torch.view_as_real(kh), g, PP, C,
            NF, kh.shape[-1], BLOCK_F=bf)
    return torch.view_as_complex(g)
