"""Hand-written designs of Mamba-1's selective scan (B8 D2048 L4096 N16, bf16, time contiguous),
timed on the GPU to choose what the code generator emits for a diagonal state with a whole
dim (n) that no input's time axis carries.

    python benchmarks/designs_mamba1.py [--small]   # repo root; writes $OUT/designs_mamba1.json
    python benchmarks/designs_mamba1.py --lrc       # lrc's generated forward_n against the design

The design (mamba_ssm's CUDA kernel's, in Triton): one program per batch and block of BD
channels walks the time chunks of TC steps; in a chunk it loads u, delta, z as [BD, TC] tiles
(time contiguous) and loops over the state's n unrolled, each n a [BD, TC] tile of decays
and inputs scanned over time (`tl.associative_scan`), its output term added into y. The state
carried between chunks is a [BD, N] tile; n's column is read and replaced with a masked sum.
The backward recomputes each chunk's states from a checkpoint (h at the chunk's start, saved
by the forward), scans the adjoint backwards (the next step's decay from delta loaded one
step later), and adds dB, dC over its channels, then atomically over programs.

Every row is checked against a float64 loop over time on the same inputs.
"""
import ast
import json
import os
import sys

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _comb(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))


@triton.jit
def _rows(bias_ptr, D_ptr, T, DS, N: tl.constexpr, BD: tl.constexpr, TC: tl.constexpr):
    """This program's batch and BD channels ([BD, 1] offsets, mask), a chunk's steps and the
    state's indices ([1, TC], [1, N]), the (b, d) rows' offsets in u, delta, z, y ([BD, 1]),
    and the channels' delta_bias and D."""
    pid = tl.program_id(0)
    nd = tl.cdiv(DS, BD)
    i_b = (pid // nd).to(tl.int64)
    o_d = (pid % nd) * BD + tl.arange(0, BD)[:, None]
    m_d = o_d < DS
    bias = tl.load(bias_ptr + o_d, mask=m_d, other=0.0)
    Dp = tl.load(D_ptr + o_d, mask=m_d, other=0.0)
    return (i_b, o_d, m_d, tl.arange(0, TC)[None, :], tl.arange(0, N)[None, :],
            (i_b * DS + o_d) * T, bias, Dp)


@triton.jit
def _chunk_grads(du_ptr, ddl_ptr, dz_ptr, at, m, acc_du, acc_dt, dl, do, ypre, z, sz, dy, u,
                 dD, dbias):
    """A backward chunk's end: du, ddelta, dz stored at offsets `at`; D's and delta_bias's
    gradients summed over its steps."""
    ddl = acc_dt * tl.sigmoid(dl)
    tl.store(du_ptr + at, acc_du.to(du_ptr.dtype.element_ty), mask=m)
    tl.store(ddl_ptr + at, ddl.to(ddl_ptr.dtype.element_ty), mask=m)
    dz = do * ypre * sz * (1.0 + z * (1.0 - sz))
    tl.store(dz_ptr + at, dz.to(dz_ptr.dtype.element_ty), mask=m)
    dD += tl.sum(tl.where(m, dy * u, 0.0), axis=1, keep_dims=True)
    dbias += tl.sum(tl.where(m, ddl, 0.0), axis=1, keep_dims=True)
    return dD, dbias


@triton.jit
def _column_terms(n, g, hh, b, A_n, B_n, u, dt, du, dy, m, o_n, acc_dt, acc_du, dA):
    """State column n's terms of the gradients, from its adjoint g, states hh and inputs b:
    added into delta's and u's, into A's column n; B's and C's summed over the channels."""
    hp = hh - b  # a_t h_{t-1}
    acc_dt += g * (A_n * (1.0 / 1.4426950408889634) * hp + B_n * u)
    acc_du += g * dt * B_n
    dA_n = tl.sum(g * dt * hp, axis=1, keep_dims=True)
    dA = tl.where(o_n == n, dA + dA_n, dA)
    dB_n = tl.sum(tl.where(m, g * du, 0.0), axis=0)
    dC_n = tl.sum(tl.where(m, dy * hh, 0.0), axis=0)
    return acc_dt, acc_du, dA, dB_n, dC_n


@triton.jit
def m1_fwd(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, chk_ptr,
           T, DS, N: tl.constexpr, BD: tl.constexpr, TC: tl.constexpr, FOLD: tl.constexpr,
           SAVE: tl.constexpr, STAGES: tl.constexpr):
    i_b, o_d, m_d, o_t, o_n, row, bias, Dp = _rows(bias_ptr, D_ptr, T, DS, N, BD, TC)
    h = tl.zeros([BD, N], tl.float32)
    nc = tl.cdiv(T, TC)
    for c in tl.range(0, nc, num_stages=STAGES):
        t = c * TC + o_t
        m = m_d & (t < T)
        if SAVE:
            tl.store(chk_ptr + ((i_b * nc + c) * DS + o_d) * N + o_n, h, mask=m_d)
        u = tl.load(u_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        dt = _softplus(dl + bias)
        du = dt * u
        acc = Dp * u
        for n in tl.static_range(N):
            A_n = tl.load(A_ptr + o_d * N + n, mask=m_d, other=0.0)  # A * log2(e)
            B_n = tl.load(B_ptr + (i_b * N + n) * T + t, mask=t < T, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + (i_b * N + n) * T + t, mask=t < T, other=0.0).to(tl.float32)
            a = tl.exp2(dt * A_n)
            b = du * B_n
            h_n = tl.sum(tl.where(o_n == n, h, 0.0), axis=1, keep_dims=True)
            if FOLD:
                b = b + tl.where(o_t == 0, a * h_n, 0.0)
                _, hh = tl.associative_scan((a, b), 1, _comb)
            else:
                sa, sb = tl.associative_scan((a, b), 1, _comb)
                hh = sa * h_n + sb
            acc += C_n * hh
            last = tl.sum(tl.where(o_t == TC - 1, hh, 0.0), axis=1, keep_dims=True)
            h = tl.where(o_n == n, last, h)
        y = acc * z * tl.sigmoid(z)
        tl.store(y_ptr + row + t, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def m1_bwd(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, chk_ptr,
           du_ptr, ddl_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
           T, DS, N: tl.constexpr, BD: tl.constexpr, TC: tl.constexpr, ATOMIC: tl.constexpr,
           STAGES: tl.constexpr):
    i_b, o_d, m_d, o_t, o_n, row, bias, Dp = _rows(bias_ptr, D_ptr, T, DS, N, BD, TC)
    gc = tl.zeros([BD, N], tl.float32)  # the state's adjoint at the next chunk's first step
    dA = tl.zeros([BD, N], tl.float32)
    dD = tl.zeros([BD, 1], tl.float32)
    dbias = tl.zeros([BD, 1], tl.float32)
    nc = tl.cdiv(T, TC)
    for ci in tl.range(0, nc, num_stages=STAGES):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_d & (t < T)
        mn = m_d & (t + 1 < T)
        u = tl.load(u_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + row + t, mask=m, other=0.0).to(tl.float32) + bias
        dln = tl.load(dl_ptr + row + t + 1, mask=mn, other=0.0).to(tl.float32) + bias
        z = tl.load(z_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        do = tl.load(dout_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        dt = _softplus(dl)
        dtn = _softplus(dln)
        du = dt * u
        sz = tl.sigmoid(z)
        dy = do * z * sz
        ypre = Dp * u
        acc_du = Dp * dy
        acc_dt = tl.zeros([BD, TC], tl.float32)
        for n in tl.static_range(N):
            A_n = tl.load(A_ptr + o_d * N + n, mask=m_d, other=0.0)  # A * log2(e)
            B_n = tl.load(B_ptr + (i_b * N + n) * T + t, mask=t < T, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + (i_b * N + n) * T + t, mask=t < T, other=0.0).to(tl.float32)
            a = tl.exp2(dt * A_n)
            b = du * B_n
            h0 = tl.load(chk_ptr + ((i_b * nc + c) * DS + o_d) * N + n, mask=m_d, other=0.0)
            b1 = b + tl.where(o_t == 0, a * h0, 0.0)
            _, hh = tl.associative_scan((a, b1), 1, _comb)
            ypre += C_n * hh
            an = tl.where(mn, tl.exp2(dtn * A_n), 0.0)
            g_n = tl.sum(tl.where(o_n == n, gc, 0.0), axis=1, keep_dims=True)
            x = C_n * dy + tl.where(o_t == TC - 1, an * g_n, 0.0)
            _, g = tl.associative_scan((an, x), 1, _comb, reverse=True)
            first = tl.sum(tl.where(o_t == 0, g, 0.0), axis=1, keep_dims=True)
            gc = tl.where(o_n == n, first, gc)
            acc_dt, acc_du, dA, dB_n, dC_n = _column_terms(n, g, hh, b, A_n, B_n, u, dt, du, dy, m,
                                                           o_n, acc_dt, acc_du, dA)
            tt = c * TC + tl.arange(0, TC)
            if ATOMIC:
                tl.atomic_add(dB_ptr + (i_b * N + n) * T + tt, dB_n, mask=tt < T, sem="relaxed")
                tl.atomic_add(dC_ptr + (i_b * N + n) * T + tt, dC_n, mask=tt < T, sem="relaxed")
            else:  # timing only: one program's partial sums stored, not added
                tl.store(dB_ptr + (i_b * N + n) * T + tt, dB_n, mask=tt < T)
                tl.store(dC_ptr + (i_b * N + n) * T + tt, dC_n, mask=tt < T)
        dD, dbias = _chunk_grads(du_ptr, ddl_ptr, dz_ptr, row + t, m, acc_du, acc_dt, dl, do,
                                 ypre, z, sz, dy, u, dD, dbias)
    tl.atomic_add(dA_ptr + o_d * N + o_n, dA, mask=m_d)
    tl.atomic_add(dD_ptr + o_d, dD, mask=m_d)
    tl.atomic_add(dbias_ptr + o_d, dbias, mask=m_d)


@triton.jit
def _comb3(f1, p1, q1, f2, p2, q2):
    """v = q + (the decay of the step before, in the scan's order) * (v there): a step is
    (a, 1, q); a stretch (its last decay, P, Q), v = Q + P * (the carry into it)."""
    return f2, p2 * f1 * p1, q2 + p2 * f1 * q1


@triton.jit
def _bwd_column(n, gc, dA, ypre, acc_dt, acc_du, dt, du, u, dy, m, m_d, o_d, o_t, o_n, t,
                i_b, chk_ptr, A_ptr, B_ptr, C_ptr, dB_ptr, dC_ptr, c, nc, T, DS,
                N: tl.constexpr, TC: tl.constexpr):
    """State column n of one chunk: its states recomputed from the checkpoint, its adjoint
    scanned as a triple, its terms of every gradient."""
    A_n = tl.load(A_ptr + o_d * N + n, mask=m_d, other=0.0)  # A * log2(e)
    B_n = tl.load(B_ptr + (i_b * N + n) * T + t, mask=t < T, other=0.0).to(tl.float32)
    C_n = tl.load(C_ptr + (i_b * N + n) * T + t, mask=t < T, other=0.0).to(tl.float32)
    a = tl.where(m, tl.exp2(dt * A_n), 1.0)
    b = du * B_n
    h0 = tl.load(chk_ptr + ((i_b * nc + c) * DS + o_d) * N + n, mask=m_d, other=0.0)
    b1 = b + tl.where(o_t == 0, a * h0, 0.0)
    _, hh = tl.associative_scan((a, b1), 1, _comb)
    ypre += C_n * hh
    g_n = tl.sum(tl.where(o_n == n, gc, 0.0), axis=1, keep_dims=True)
    _, P, Q = tl.associative_scan((a, tl.full(a.shape, 1.0, tl.float32), C_n * dy), 1, _comb3,
                                  reverse=True)
    g = Q + P * g_n
    first = tl.sum(tl.where(o_t == 0, a * g, 0.0), axis=1, keep_dims=True)
    gc = tl.where(o_n == n, first, gc)
    acc_dt, acc_du, dA, dB_n, dC_n = _column_terms(n, g, hh, b, A_n, B_n, u, dt, du, dy, m, o_n,
                                                   acc_dt, acc_du, dA)
    tt = c * TC + tl.arange(0, TC)
    tl.atomic_add(dB_ptr + (i_b * N + n) * T + tt, dB_n, mask=tt < T, sem="relaxed")
    tl.atomic_add(dC_ptr + (i_b * N + n) * T + tt, dC_n, mask=tt < T, sem="relaxed")
    return gc, dA, ypre, acc_dt, acc_du


@triton.jit
def m1_bwd2(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, chk_ptr,
            du_ptr, ddl_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
            T, DS, N: tl.constexpr, BD: tl.constexpr, TC: tl.constexpr,
            STAGES: tl.constexpr, U: tl.constexpr = 0):
    """m1_bwd with the adjoint scanned as a triple (_comb3: no decay one step later, so one
    exp2 per element instead of two), meant for 1-2 warps: the reductions over channels (dB,
    dC) and over time (dA) stay inside a warp, no barrier. U: the loop over n unrolled whole
    (0, static_range) or by U (tl.range's loop_unroll_factor: fewer live registers)."""
    i_b, o_d, m_d, o_t, o_n, row, bias, Dp = _rows(bias_ptr, D_ptr, T, DS, N, BD, TC)
    gc = tl.zeros([BD, N], tl.float32)  # a lambda at the next chunk's first step
    dA = tl.zeros([BD, N], tl.float32)
    dD = tl.zeros([BD, 1], tl.float32)
    dbias = tl.zeros([BD, 1], tl.float32)
    nc = tl.cdiv(T, TC)
    for ci in tl.range(0, nc, num_stages=STAGES):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_d & (t < T)
        u = tl.load(u_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        dl = tl.load(dl_ptr + row + t, mask=m, other=0.0).to(tl.float32) + bias
        z = tl.load(z_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        do = tl.load(dout_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        dt = _softplus(dl)
        du = dt * u
        sz = tl.sigmoid(z)
        dy = do * z * sz
        ypre = Dp * u
        acc_du = Dp * dy
        acc_dt = tl.zeros([BD, TC], tl.float32)
        if U == 0:
            for n in tl.static_range(N):
                gc, dA, ypre, acc_dt, acc_du = _bwd_column(
                    n, gc, dA, ypre, acc_dt, acc_du, dt, du, u, dy, m, m_d, o_d, o_t, o_n, t,
                    i_b, chk_ptr, A_ptr, B_ptr, C_ptr, dB_ptr, dC_ptr, c, nc, T, DS, N, TC)
        else:
            for n in tl.range(0, N, num_stages=1, loop_unroll_factor=U):
                gc, dA, ypre, acc_dt, acc_du = _bwd_column(
                    n, gc, dA, ypre, acc_dt, acc_du, dt, du, u, dy, m, m_d, o_d, o_t, o_n, t,
                    i_b, chk_ptr, A_ptr, B_ptr, C_ptr, dB_ptr, dC_ptr, c, nc, T, DS, N, TC)
        dD, dbias = _chunk_grads(du_ptr, ddl_ptr, dz_ptr, row + t, m, acc_du, acc_dt, dl, do,
                                 ypre, z, sz, dy, u, dD, dbias)
    tl.atomic_add(dA_ptr + o_d * N + o_n, dA, mask=m_d)
    tl.atomic_add(dD_ptr + o_d, dD, mask=m_d)
    tl.atomic_add(dbias_ptr + o_d, dbias, mask=m_d)


def forward(args, BD, TC, warps, FOLD=True, SAVE=False, STAGES=2):
    u, dl, A, B, C, D, z, bias = args
    b, ds, T = u.shape
    N = A.shape[1]
    y = torch.empty_like(u)
    nc = triton.cdiv(T, TC)
    chk = torch.empty(b, nc, ds, N, device=u.device) if SAVE else y
    m1_fwd[(b * triton.cdiv(ds, BD),)](u, dl, (A * LOG2E).contiguous(), B, C, D, z, bias, y, chk,
                                       T, ds, N, BD, TC, FOLD, SAVE, STAGES, num_warps=warps)
    return y, chk


def backward(args, dout, chk, BD, TC, warps, ATOMIC=True, STAGES=1, V2=False, U=0, cap=None):
    u, dl, A, B, C, D, z, bias = args
    b, ds, T = u.shape
    N = A.shape[1]
    du, ddl, dz = (torch.empty_like(u) for _ in range(3))
    dA = torch.zeros(ds, N, device=u.device)
    dB = torch.zeros(b, N, T, device=u.device)
    dC = torch.zeros(b, N, T, device=u.device)
    dD = torch.zeros(ds, device=u.device)
    dbias = torch.zeros(ds, device=u.device)
    if V2:
        m1_bwd2[(b * triton.cdiv(ds, BD),)](u, dl, (A * LOG2E).contiguous(), B, C, D, z, bias,
                                            dout, chk, du, ddl, dz, dA, dB, dC, dD, dbias, T,
                                            ds, N, BD, TC, STAGES, U, num_warps=warps,
                                            **({"maxnreg": cap} if cap else {}))
    else:
        m1_bwd[(b * triton.cdiv(ds, BD),)](u, dl, (A * LOG2E).contiguous(), B, C, D, z, bias,
                                           dout, chk, du, ddl, dz, dA, dB, dC, dD, dbias, T, ds,
                                           N, BD, TC, ATOMIC, STAGES, num_warps=warps)
    return du, ddl, dA, dB, dC, dD, dz, dbias


def reference(args):
    """float64 loop over time (mamba_ssm's selective_scan_ref, softplus on, z gate)."""
    u, dl, A, B, C, D, z, bias = (v.double() for v in args)
    dt = torch.nn.functional.softplus(dl + bias[:, None])
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float64, device=u.device)
    ys = []
    for t in range(u.shape[2]):
        h = (torch.exp(dt[:, :, t, None] * A) * h
             + (dt[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t])
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1) + D[:, None] * u
    return y * torch.nn.functional.silu(z)


def inputs(b, ds, T, N, dtype, device):
    g = torch.Generator(device="cpu").manual_seed(1)
    r = lambda *s, std=1.0: (std * torch.randn(*s, generator=g)).to(device)
    return [r(b, ds, T).to(dtype), r(b, ds, T, std=0.5).to(dtype),
            (-torch.rand(ds, N, generator=g) - 0.5).to(device), r(b, N, T).to(dtype),
            r(b, N, T).to(dtype), r(ds), r(b, ds, T).to(dtype), r(ds)]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check(args, BD, TC, warps, v2=False, U=0, **kw):
    """forward and every gradient against float64 autograd through `reference`."""
    leaves = [v.detach().double().requires_grad_(True) for v in args]
    want = reference(leaves)
    dout = torch.randn_like(want)
    wg = torch.autograd.grad(want, leaves, dout)
    y, chk = forward(args, BD, TC, warps, SAVE=True, **kw)
    gs = backward(args, dout.to(args[0].dtype), chk, BD, TC, warps, V2=v2, U=U)
    errs = {"y": rel(y, want)}
    for name, g, w in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), gs, wg):
        errs[name] = rel(g, w)
    return errs


def lrc_rows(args, rows):
    """lrc's generated unrolled forward (no gradients) at each candidate config, and with
    ptxas capped at 128 registers (two 8-warp programs per SM), against the design above."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import lrc
    from lrc.lowering.scan.configs import UNROLLED, ScanConfig
    from lrc.lowering.scan import launch as scan_runtime
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench import selective_scan

    kern = lrc.compile(selective_scan, backend="triton")
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    kw = dict(zip(names, args))
    want, _ = forward(args, 16, 128, 8)
    fire = scan_runtime.Launch.fire
    for cap in (None, 128):
        def capped(self, params, consts, grid, cap=cap):
            fn = self.prog.kernel_fn(self.which, False)
            opts = {} if cap is None else {"maxnreg": cap}
            fn[grid](*params, num_warps=self.warps, num_stages=self.stages, **opts, **consts)
        scan_runtime.Launch.fire = capped
        for row in sorted({r[:4] for r in UNROLLED}) + [(128, 16, 8, 1)]:
            scan_runtime.CONFIG = ScanConfig(*row, unroll=True)
            with torch.no_grad():
                err = rel(kern(**kw), want)
                us = triton.testing.do_bench(lambda: kern(**kw), warmup=10, rep=50,
                                             return_mode="median") * 1e3
            rows.append(dict(kind="lrc forward_n", config=list(row), maxnreg=cap, us=us,
                             diff_vs_design=err))
            print(rows[-1], flush=True)
    scan_runtime.Launch.fire = fire
    scan_runtime.CONFIG = None


# (channels a program, steps a chunk, warps) of --bwd2
# (channels a program, steps a chunk, warps[, n unrolled by (0: whole), register cap]) of
# --bwd2; BWD2_ALL the session-11 first run (n unrolled whole, no cap)
BWD2_ALL = [(4, 64, 1), (2, 128, 1), (8, 32, 1), (8, 64, 2), (4, 128, 2), (16, 32, 2),
            (1, 256, 1), (16, 64, 4), (4, 256, 4)]
BWD2 = [(2, 128, 1, 1, None), (2, 128, 1, 1, 128), (16, 32, 2, 1, None), (16, 32, 2, 1, 128),
        (4, 64, 1, 1, 128), (16, 64, 4, 1, None), (16, 64, 4, 1, 128)]


def main():
    small = "--small" in sys.argv
    dev = "cpu" if small else "cuda"
    if small:
        args = inputs(2, 6, 37, 16, torch.float32, dev)
        for BD, TC, v2, U in ((4, 16, False, 0), (2, 64, False, 0), (4, 16, True, 0),
                              (2, 64, True, 1)):
            errs = check(args, BD, TC, 4, v2, U)
            print(BD, TC, "v2" if v2 else "", U, {k: f"{v:.1e}" for k, v in errs.items()})
        return
    rows = []
    out = os.environ.get("OUT", "/tmp")
    args = inputs(8, 2048, 4096, 16, torch.bfloat16, dev)
    cargs = [v[:1, :64] if v.dim() == 3 and v.shape[1] == 2048 else v for v in args]
    cargs = [v[:1] if v.dim() == 3 else (v[:64] if v.shape[0] == 2048 else v) for v in cargs]
    print("check (B1 D64 L4096):", {k: f"{v:.1e}" for k, v in check(cargs, 4, 256, 4).items()},
          flush=True)
    if "--bwd2" in sys.argv:  # the triple-scan backward at few warps (session 11)
        print("check v2 (B1 D64 L4096):", {k: f"{v:.1e}" for k, v in
                                            check(cargs, 4, 64, 1, True, 1).items()}, flush=True)
        if "--all" in sys.argv:
            BWD2[:] = BWD2_ALL
        if os.environ.get("BWD2"):  # a list of config tuples, e.g. "[(2, 128, 1, 1, 128)]"
            BWD2[:] = ast.literal_eval(os.environ["BWD2"])
        y, chk = forward(args, 4, 256, 4)
        dout = torch.randn_like(y)
        chks = {}
        for BD, TC, w, U, cap in [r + (0, None) if len(r) == 3 else r for r in BWD2]:
            try:
                if (BD, TC, w) not in chks:
                    _, chk = forward(args, BD, TC, w, SAVE=True)
                    f_us = triton.testing.do_bench(
                        lambda: forward(args, BD, TC, w, SAVE=True), warmup=3, rep=10,
                        return_mode="median") * 1e3
                    chks[BD, TC, w] = chk, f_us
                chk, f_us = chks[BD, TC, w]
                us = triton.testing.do_bench(
                    lambda: backward(args, dout, chk, BD, TC, w, V2=True, U=U, cap=cap),
                    warmup=3, rep=10, return_mode="median") * 1e3
            except Exception as e:
                print("bwd2", BD, TC, w, U, cap, "failed:", str(e)[:200], flush=True)
                continue
            rows.append(dict(kind="bwd2", BD=BD, TC=TC, warps=w, unroll=U, maxnreg=cap, us=us,
                             fwd_save_us=f_us))
            print(rows[-1], flush=True)
        json.dump(rows, open(os.path.join(out, "designs_mamba1_bwd2.json"), "w"), indent=1)
        return
    if "--lrc" in sys.argv:
        lrc_rows(args, rows)
        us = triton.testing.do_bench(lambda: forward(args, 16, 128, 8), warmup=10, rep=50,
                                     return_mode="median") * 1e3
        rows.append(dict(kind="fwd", BD=16, TC=128, warps=8, fold=True, stages=2, us=us))
        print(rows[-1], flush=True)
        json.dump(rows, open(os.path.join(out, "designs_mamba1_lrc.json"), "w"), indent=1)
        return
    y, _ = forward(args, 4, 256, 4)
    dout = torch.randn_like(y)
    for BD, TC, w, fold, st in ((1, 1024, 4, True, 2), (1, 2048, 4, True, 2), (2, 512, 4, True, 2),
                                (4, 256, 4, True, 2), (4, 512, 4, True, 2), (8, 256, 8, True, 2),
                                (4, 256, 4, False, 2), (2, 1024, 8, True, 2), (8, 128, 4, True, 2),
                                (4, 256, 4, True, 1), (16, 128, 8, True, 2)):
        try:
            us = triton.testing.do_bench(lambda: forward(args, BD, TC, w, fold, STAGES=st),
                                         warmup=10, rep=50, return_mode="median") * 1e3
        except Exception as e:
            print("fwd", BD, TC, w, fold, st, "failed:", str(e)[:200], flush=True)
            continue
        rows.append(dict(kind="fwd", BD=BD, TC=TC, warps=w, fold=fold, stages=st, us=us))
        print(rows[-1], flush=True)
    for BD, TC, w, atomic in ((4, 256, 4, True), (4, 256, 4, False), (2, 512, 4, True),
                              (8, 128, 4, True), (8, 256, 8, True), (16, 128, 8, True),
                              (1, 1024, 4, True)):
        try:
            _, chk = forward(args, BD, TC, w, SAVE=True)
            us = triton.testing.do_bench(lambda: backward(args, dout, chk, BD, TC, w, atomic),
                                         warmup=5, rep=20, return_mode="median") * 1e3
        except Exception as e:
            print("bwd", BD, TC, w, atomic, "failed:", str(e)[:200], flush=True)
            continue
        rows.append(dict(kind="bwd", BD=BD, TC=TC, warps=w, atomic=atomic, us=us))
        print(rows[-1], flush=True)
    json.dump(rows, open(os.path.join(out, "designs_mamba1.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
