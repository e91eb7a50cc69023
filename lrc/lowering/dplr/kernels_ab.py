'''The chunked kernels for two distinct vectors (RWKV-7's form), one program per (value block,
batch x head); kernels.py has the delta rule's own (one vector) and its notation.

Per (batch, head), with q, k, x, y over the key dim K, u over the value dim V and a per-key
log decay g (a_t = exp(g_t)),

    S_t = diag(a_t) S_{t-1} + x_t n_t^T + k_t u_t^T,   n_t = S_{t-1}^T y_t,   o_t = S_t^T q_t

(RWKV-7: x = -sigmoid(a) kk, y = kk). Within a chunk, with G_t the sum of g over the chunk's
steps up to t, Gx_t = G_{t-1} (the state y reads is the one before the step), R_t the sum
after t, and S0 the entering state,

    Byx[t, j] = sum_c y_t x_j exp(g over (j, t))    Byk likewise with k_j      (t > j)
    Qx[t, j]  = sum_c q_t x_j exp(g over (j, t])    Qk likewise with k_j       (t >= j)
    N  = (I - Byx)^-1 ((y exp(Gx)) S0 + Byk U)       (the n_t, all at once)
    O  = (q exp(G)) S0 + Qx N + Qk U
    S1 = exp(G_last) S0 + (x exp(R))^T N + (k exp(R))^T U

The pairs are formed a column (a step j) at a time, each exponent a running sum of g (for
(j, t): of g a step earlier), never a difference of chunk-long sums. The backward gives g's
gradient from the pairs over (j, t], that of g a step earlier (row t holds g_{t-1}'s) from
those over (j, t), and G's, Gx's and R's, which the caller sums into g's: every term a genuine
dependency, nothing cancels. Key-side gradients are partial sums per value block. The caller
pads T to a multiple of BT with zeros.
'''

from .kernels import PROGRAM

SOURCE = r'''"""Chunked kernels for two distinct vectors (lrc.lowering.dplr)."""
import triton
import triton.language as tl
''' + PROGRAM + r'''

@triton.jit
def _load_ab(k_ptr, q_ptr, x_ptr, y_ptr, u_ptr, g_ptr, G_ptr, Gx_ptr, R_ptr, base_k, base_v,
             offs_t, offs_k, offs_v, H, K, V):
    """One chunk of the `_ab` kernels' inputs (float32); gp is g a step earlier (0 first)."""
    mk = offs_k[None, :] < K
    rows_k = (base_k + offs_t[:, None] * H * K + offs_k[None, :])
    rows_v = (base_v + offs_t[:, None] * H * V + offs_v[None, :])
    kc = tl.load(k_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    qc = tl.load(q_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    xc = tl.load(x_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    yc = tl.load(y_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    uc = tl.load(u_ptr + rows_v, mask=offs_v[None, :] < V, other=0.0).to(tl.float32)
    gc = tl.load(g_ptr + rows_k, mask=mk, other=0.0)
    gp = tl.load(g_ptr + rows_k - H * K, mask=mk & (offs_t[:, None] > 0), other=0.0)
    eG = tl.exp(tl.load(G_ptr + rows_k, mask=mk, other=0.0))
    eGx = tl.exp(tl.load(Gx_ptr + rows_k, mask=mk, other=0.0))
    eR = tl.exp(tl.load(R_ptr + rows_k, mask=mk, other=0.0))
    return kc, qc, xc, yc, uc, gc, gp, eG, eGx, eR


@triton.jit
def _pairs_ab(qc, kc, xc, yc, gc, gp, offs_t, BT: tl.constexpr):
    """Qx, Qk (exponents over (j, t], t >= j) and Byx, Byk (over (j, t), t > j)."""
    Qx = tl.zeros([BT, BT], tl.float32)
    Qk = tl.zeros([BT, BT], tl.float32)
    Byx = tl.zeros([BT, BT], tl.float32)
    Byk = tl.zeros([BT, BT], tl.float32)
    for j in range(BT):
        xj = tl.sum(tl.where(offs_t[:, None] == j, xc, 0.0), 0)
        kj = tl.sum(tl.where(offs_t[:, None] == j, kc, 0.0), 0)
        ei = tl.exp(tl.cumsum(tl.where(offs_t[:, None] > j, gc, 0.0), 0))
        ex = tl.exp(tl.cumsum(tl.where(offs_t[:, None] > j + 1, gp, 0.0), 0))
        col = offs_t[None, :] == j
        Qx = tl.where(col, tl.sum(qc * ei * xj[None, :], 1)[:, None], Qx)
        Qk = tl.where(col, tl.sum(qc * ei * kj[None, :], 1)[:, None], Qk)
        Byx = tl.where(col, tl.sum(yc * ex * xj[None, :], 1)[:, None], Byx)
        Byk = tl.where(col, tl.sum(yc * ex * kj[None, :], 1)[:, None], Byk)
    le = offs_t[:, None] >= offs_t[None, :]
    lo = offs_t[:, None] > offs_t[None, :]
    return (tl.where(le, Qx, 0.0), tl.where(le, Qk, 0.0), tl.where(lo, Byx, 0.0),
            tl.where(lo, Byk, 0.0))


@triton.jit
def _solve_ab(Byx, offs_t, BT: tl.constexpr):
    """(I - Byx)^-1 by forward substitution (Byx strictly lower)."""
    Ti = tl.where(offs_t[:, None] == offs_t[None, :], 1.0, 0.0)
    for i in range(1, BT):
        a_row = tl.sum(tl.where(offs_t[:, None] == i, Byx, 0.0), 0)
        new = tl.where(offs_t == i, 1.0, 0.0) + tl.sum(a_row[:, None] * Ti, 0)
        Ti = tl.where(offs_t[:, None] == i, new[None, :], Ti)
    return Ti


@triton.jit
def dplr_forward_ab(k_ptr, q_ptr, x_ptr, y_ptr, u_ptr, g_ptr, G_ptr, Gx_ptr, R_ptr, h0_ptr,
                    o_ptr, hT_ptr, hs_ptr, NT, H, K, V, BT: tl.constexpr, BK: tl.constexpr,
                    BV: tl.constexpr, HAS_H0: tl.constexpr, STORE_HS: tl.constexpr,
                    PREC: tl.constexpr):
    i_v, i_bh, b, h, offs_t, offs_k, offs_v, m_kv, state = _program(H, K, V, BT, BK, BV)
    S = _state_in(h0_ptr, state, m_kv, HAS_H0, BK, BV)
    for c in range(NT):
        base_k, base_v, _ = _bases(b, h, c, NT, H, K, V, BT)
        if STORE_HS:
            tl.store(hs_ptr + (i_bh * NT + c) * K * V + offs_k[:, None] * V + offs_v[None, :],
                     S, mask=m_kv)
        kc, qc, xc, yc, uc, gc, gp, eG, eGx, eR = _load_ab(
            k_ptr, q_ptr, x_ptr, y_ptr, u_ptr, g_ptr, G_ptr, Gx_ptr, R_ptr, base_k, base_v,
            offs_t, offs_k, offs_v, H, K, V)
        gl = tl.sum(tl.where(offs_t[:, None] == BT - 1, eG, 0.0), 0)
        Qx, Qk, Byx, Byk = _pairs_ab(qc, kc, xc, yc, gc, gp, offs_t, BT)
        Ti = _solve_ab(Byx, offs_t, BT)
        Y = tl.dot(yc * eGx, S, input_precision=PREC) + tl.dot(Byk, uc, input_precision=PREC)
        N = tl.dot(Ti, Y, input_precision=PREC)
        O = (tl.dot(qc * eG, S, input_precision=PREC) + tl.dot(Qx, N, input_precision=PREC)
             + tl.dot(Qk, uc, input_precision=PREC))
        S = (gl[:, None] * S + tl.dot(tl.trans(xc * eR), N, input_precision=PREC)
             + tl.dot(tl.trans(kc * eR), uc, input_precision=PREC))
        tl.store(o_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :],
                 O.to(o_ptr.dtype.element_ty), mask=offs_v[None, :] < V)
    tl.store(hT_ptr + state, S, mask=m_kv)


@triton.jit
def dplr_backward_ab(k_ptr, q_ptr, x_ptr, y_ptr, u_ptr, g_ptr, G_ptr, Gx_ptr, R_ptr, hs_ptr,
                     do_ptr, dhT_ptr, dq_ptr, dk_ptr, dx_ptr, dy_ptr, du_ptr, dg_ptr, dgp_ptr,
                     dG_ptr, dGx_ptr, dR_ptr, dh0_ptr, NT, B, H, K, V, BT: tl.constexpr,
                     BK: tl.constexpr, BV: tl.constexpr, HAS_DHT: tl.constexpr,
                     PREC: tl.constexpr):
    i_v, i_bh, b, h, offs_t, offs_k, offs_v, m_kv, state = _program(H, K, V, BT, BK, BV)
    mk = offs_k[None, :] < K
    mv = offs_v[None, :] < V
    dS = _state_in(dhT_ptr, state, m_kv, HAS_DHT, BK, BV)
    T = NT * BT
    part = i_v * B * T * H            # this value block's slice of the partial gradients
    for cc in range(NT):
        c = NT - 1 - cc
        base_k, base_v, _ = _bases(b, h, c, NT, H, K, V, BT)
        S0 = tl.load(hs_ptr + (i_bh * NT + c) * K * V + offs_k[:, None] * V + offs_v[None, :],
                     mask=m_kv, other=0.0)
        kc, qc, xc, yc, uc, gc, gp, eG, eGx, eR = _load_ab(
            k_ptr, q_ptr, x_ptr, y_ptr, u_ptr, g_ptr, G_ptr, Gx_ptr, R_ptr, base_k, base_v,
            offs_t, offs_k, offs_v, H, K, V)
        gl = tl.sum(tl.where(offs_t[:, None] == BT - 1, eG, 0.0), 0)
        Qx, Qk, Byx, Byk = _pairs_ab(qc, kc, xc, yc, gc, gp, offs_t, BT)
        Ti = _solve_ab(Byx, offs_t, BT)
        YG = yc * eGx
        QG = qc * eG
        XR = xc * eR
        KR = kc * eR
        Y = tl.dot(YG, S0, input_precision=PREC) + tl.dot(Byk, uc, input_precision=PREC)
        N = tl.dot(Ti, Y, input_precision=PREC)
        dO = tl.load(do_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :], mask=mv,
                     other=0.0).to(tl.float32)
        # O = QG S0 + Qx N + Qk U;  S1 = exp(G_last) S0 + XR^T N + KR^T U
        dN = tl.dot(tl.trans(Qx), dO, input_precision=PREC) + tl.dot(XR, dS,
                                                                     input_precision=PREC)
        le = offs_t[:, None] >= offs_t[None, :]
        lo = offs_t[:, None] > offs_t[None, :]
        dQx = tl.where(le, tl.dot(dO, tl.trans(N), input_precision=PREC), 0.0)
        dQk = tl.where(le, tl.dot(dO, tl.trans(uc), input_precision=PREC), 0.0)
        du = (tl.dot(tl.trans(Qk), dO, input_precision=PREC)
              + tl.dot(KR, dS, input_precision=PREC))
        dQG = tl.dot(dO, tl.trans(S0), input_precision=PREC)
        dq = dQG * eG
        dGc = dQG * QG                                   # through exp(G_t)
        dXR = tl.dot(N, tl.trans(dS), input_precision=PREC)
        dKR = tl.dot(uc, tl.trans(dS), input_precision=PREC)
        dx = dXR * eR
        dk = dKR * eR
        dRc = dXR * XR + dKR * KR                        # through exp(R_t)
        dGc += tl.where(offs_t[:, None] == BT - 1, (gl * tl.sum(dS * S0, 1))[None, :], 0.0)
        # N = Ti Y, Ti = (I - Byx)^-1:  dY = Ti^T dN, dByx = dY N^T
        dY = tl.dot(tl.trans(Ti), dN, input_precision=PREC)
        dByx = tl.where(lo, tl.dot(dY, tl.trans(N), input_precision=PREC), 0.0)
        # Y = YG S0 + Byk U
        dYG = tl.dot(dY, tl.trans(S0), input_precision=PREC)
        dy = dYG * eGx
        dGxc = dYG * YG                                  # through exp(Gx_t)
        dByk = tl.where(lo, tl.dot(dY, tl.trans(uc), input_precision=PREC), 0.0)
        du += tl.dot(tl.trans(Byk), dY, input_precision=PREC)
        dS0 = (gl[:, None] * dS + tl.dot(tl.trans(QG), dO, input_precision=PREC)
               + tl.dot(tl.trans(YG), dY, input_precision=PREC))
        # the pairs, a column j at a time
        dg = tl.zeros([BT, BK], tl.float32)
        dgp = tl.zeros([BT, BK], tl.float32)
        for j in range(BT):
            xj = tl.sum(tl.where(offs_t[:, None] == j, xc, 0.0), 0)
            kj = tl.sum(tl.where(offs_t[:, None] == j, kc, 0.0), 0)
            ei = tl.exp(tl.cumsum(tl.where(offs_t[:, None] > j, gc, 0.0), 0))
            ex = tl.exp(tl.cumsum(tl.where(offs_t[:, None] > j + 1, gp, 0.0), 0))
            col = offs_t[None, :] == j
            wqx = tl.sum(tl.where(col, dQx, 0.0), 1)[:, None] * ei
            wqk = tl.sum(tl.where(col, dQk, 0.0), 1)[:, None] * ei
            wyx = tl.sum(tl.where(col, dByx, 0.0), 1)[:, None] * ex
            wyk = tl.sum(tl.where(col, dByk, 0.0), 1)[:, None] * ex
            rq = wqx * xj[None, :] + wqk * kj[None, :]
            ry = wyx * xj[None, :] + wyk * kj[None, :]
            dq += rq
            dy += ry
            row = offs_t[:, None] == j
            dx += tl.where(row, tl.sum(wqx * qc + wyx * yc, 0)[None, :], 0.0)
            dk += tl.where(row, tl.sum(wqk * qc + wyk * yc, 0)[None, :], 0.0)
            di = tl.where(offs_t[:, None] > j, rq * qc, 0.0)
            dg += tl.where(offs_t[:, None] > j, tl.cumsum(di, 0, reverse=True), 0.0)
            dxp = tl.where(offs_t[:, None] > j + 1, ry * yc, 0.0)
            dgp += tl.where(offs_t[:, None] > j + 1, tl.cumsum(dxp, 0, reverse=True), 0.0)
        rows_k = (part * K + base_k + offs_t[:, None] * H * K + offs_k[None, :])
        tl.store(dq_ptr + rows_k, dq, mask=mk)
        tl.store(dk_ptr + rows_k, dk, mask=mk)
        tl.store(dx_ptr + rows_k, dx, mask=mk)
        tl.store(dy_ptr + rows_k, dy, mask=mk)
        tl.store(dg_ptr + rows_k, dg, mask=mk)
        tl.store(dgp_ptr + rows_k, dgp, mask=mk)
        tl.store(dG_ptr + rows_k, dGc, mask=mk)
        tl.store(dGx_ptr + rows_k, dGxc, mask=mk)
        tl.store(dR_ptr + rows_k, dRc, mask=mk)
        tl.store(du_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :], du, mask=mv)
        dS = dS0
    tl.store(dh0_ptr + state, dS, mask=m_kv)

'''
