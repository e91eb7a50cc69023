'''The chunked delta-rule kernels (Triton source), one program per (value block, batch x head).

The kernels compute, per (batch, head), with k, q over the key dim K and u over the value dim V,

    S_t = a_t S_{t-1} + k_t n_t^T,   n_t = u_t - beta_t a_t S_{t-1}^T k_t,   o_t = S_t^T q_t

(a_t = exp(g_t)), which is S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + k_t u_t^T. Within a
chunk of BT steps, with G the cumulative log decay from the chunk's start, E[t, j] =
exp(G_t - G_j) for j <= t (0 above the diagonal), and S0 the state entering the chunk
(Yang et al. 2024, the UT / compact WY form):

    A  = strict_lower(beta K K^T * E)            Ti = (I + A)^-1   (forward substitution)
    W  = Ti (beta exp(G) K)      U = Ti U_in     N = U - W S0        (the n_t, all at once)
    O  = exp(G) Q S0 + lower(Q K^T * E) N
    S1 = exp(G_last) S0 + (exp(G_last - G) K)^T N

The value columns of S are independent, so a program owns BV of them; the backward's key-side
gradients are partial sums per value block (summed by the caller). The caller pads T to a
multiple of BT with zeros (k = u = beta = 0 and g = 0 leave the state unchanged) and passes G
already summed within each chunk. Dots accumulate in float32; PREC is "ieee" for float32 calls
(exact products) and "tf32" for 16-bit ones.

The backward returns the gradient of the per-step log decays g, not of G: g_r's gradient is
gathered from the terms that depend on it (a factor exp(G_t) with t >= r, a factor
exp(G_last - G_s) with s < r, an E[i, j] with j < r <= i), never as a reverse cumulative sum
of G's gradient. That sum would add and then cancel terms that do not depend on g_r at all,
E's diagonal and the last step's exp(G_last - G_last) among them; those are O(1) while g_r's
own terms carry its decay, so under steep decays the cancellation left only a few digits.
'''

SOURCE = r'''"""Chunked delta-rule kernels (lrc.lowering.dplr)."""
import triton
import triton.language as tl


@triton.jit
def _chunk(k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, base_k, base_v, base_s, offs_t, offs_k,
           offs_v, H, K, V, BT: tl.constexpr, HAS_DECAY: tl.constexpr, PREC: tl.constexpr):
    """Load one chunk and compute what forward and backward share."""
    mk = offs_k[None, :] < K
    mv = offs_v[None, :] < V
    rows_k = (base_k + offs_t[:, None] * H * K + offs_k[None, :])
    rows_v = (base_v + offs_t[:, None] * H * V + offs_v[None, :])
    kc = tl.load(k_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    qc = tl.load(q_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    uc = tl.load(u_ptr + rows_v, mask=mv, other=0.0).to(tl.float32)
    bt = tl.load(b_ptr + base_s + offs_t * H).to(tl.float32)
    le = offs_t[:, None] >= offs_t[None, :]
    lo = offs_t[:, None] > offs_t[None, :]
    if HAS_DECAY:
        G = tl.load(g_ptr + base_s + offs_t * H).to(tl.float32)
        E = tl.where(le, tl.exp(tl.where(le, G[:, None] - G[None, :], 0.0)), 0.0)
        Gl = tl.sum(tl.where(offs_t == BT - 1, G, 0.0), 0)
        eG = tl.exp(G)
        eL = tl.exp(Gl - G)
        gl = tl.exp(Gl)
    else:
        E = tl.where(le, 1.0, 0.0)
        eG = tl.full([BT], 1.0, tl.float32)
        eL = eG
        gl = 1.0
    KK = tl.dot(kc, tl.trans(kc), input_precision=PREC)
    A = tl.where(lo, bt[:, None] * KK * E, 0.0)
    # Ti = (I + A)^-1 row by row: row i = e_i - sum_{j < i} A[i, j] Ti[j, :]
    Ti = tl.where(offs_t[:, None] == offs_t[None, :], 1.0, 0.0)
    for i in range(1, BT):
        a_row = tl.sum(tl.where(offs_t[:, None] == i, A, 0.0), 0)
        new = tl.where(offs_t == i, 1.0, 0.0) - tl.sum(a_row[:, None] * Ti, 0)
        Ti = tl.where(offs_t[:, None] == i, new[None, :], Ti)
    return kc, qc, uc, bt, E, eG, eL, gl, KK, Ti, le, lo


@triton.jit
def dplr_forward(k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, h0_ptr, o_ptr, hT_ptr, hs_ptr, NT, H, K, V,
                 BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_DECAY: tl.constexpr,
                 HAS_H0: tl.constexpr, STORE_HS: tl.constexpr, PREC: tl.constexpr):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    m_kv = (offs_k[:, None] < K) & (offs_v[None, :] < V)
    state = i_bh * K * V + offs_k[:, None] * V + offs_v[None, :]
    if HAS_H0:
        S = tl.load(h0_ptr + state, mask=m_kv, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BK, BV], tl.float32)
    T = NT * BT
    for c in range(NT):
        t0 = c * BT
        base_k = ((b * T + t0) * H + h) * K
        base_v = ((b * T + t0) * H + h) * V
        base_s = (b * T + t0) * H + h
        if STORE_HS:
            tl.store(hs_ptr + (i_bh * NT + c) * K * V + offs_k[:, None] * V + offs_v[None, :],
                     S, mask=m_kv)
        kc, qc, uc, bt, E, eG, eL, gl, KK, Ti, le, lo = _chunk(
            k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, base_k, base_v, base_s, offs_t, offs_k,
            offs_v, H, K, V, BT, HAS_DECAY, PREC)
        W = tl.dot(Ti, (bt * eG)[:, None] * kc, input_precision=PREC)
        U = tl.dot(Ti, uc, input_precision=PREC)
        N = U - tl.dot(W, S, input_precision=PREC)
        P = tl.where(le, tl.dot(qc, tl.trans(kc), input_precision=PREC) * E, 0.0)
        O = eG[:, None] * tl.dot(qc, S, input_precision=PREC) + tl.dot(P, N,
                                                                        input_precision=PREC)
        S = gl * S + tl.dot(tl.trans(eL[:, None] * kc), N, input_precision=PREC)
        tl.store(o_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :],
                 O.to(o_ptr.dtype.element_ty), mask=offs_v[None, :] < V)
    tl.store(hT_ptr + state, S, mask=m_kv)


@triton.jit
def dplr_backward(k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, hs_ptr, do_ptr, dhT_ptr, dq_ptr, dk_ptr,
                  du_ptr, db_ptr, dg_ptr, dh0_ptr, NT, B, H, K, V, BT: tl.constexpr,
                  BK: tl.constexpr, BV: tl.constexpr, HAS_DECAY: tl.constexpr,
                  HAS_DHT: tl.constexpr, PREC: tl.constexpr):
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    b = i_bh // H
    h = i_bh % H
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    mk = offs_k[None, :] < K
    mv = offs_v[None, :] < V
    m_kv = (offs_k[:, None] < K) & (offs_v[None, :] < V)
    state = i_bh * K * V + offs_k[:, None] * V + offs_v[None, :]
    if HAS_DHT:
        dS = tl.load(dhT_ptr + state, mask=m_kv, other=0.0).to(tl.float32)
    else:
        dS = tl.zeros([BK, BV], tl.float32)
    T = NT * BT
    part = i_v * B * T * H            # this value block's slice of the partial gradients
    for cc in range(NT):
        c = NT - 1 - cc
        t0 = c * BT
        base_k = ((b * T + t0) * H + h) * K
        base_v = ((b * T + t0) * H + h) * V
        base_s = (b * T + t0) * H + h
        S0 = tl.load(hs_ptr + (i_bh * NT + c) * K * V + offs_k[:, None] * V + offs_v[None, :],
                     mask=m_kv, other=0.0)
        kc, qc, uc, bt, E, eG, eL, gl, KK, Ti, le, lo = _chunk(
            k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, base_k, base_v, base_s, offs_t, offs_k,
            offs_v, H, K, V, BT, HAS_DECAY, PREC)
        beG = bt * eG
        X = beG[:, None] * kc
        W = tl.dot(Ti, X, input_precision=PREC)
        U = tl.dot(Ti, uc, input_precision=PREC)
        N = U - tl.dot(W, S0, input_precision=PREC)
        QK = tl.dot(qc, tl.trans(kc), input_precision=PREC)
        P = tl.where(le, QK * E, 0.0)
        dO = tl.load(do_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :], mask=mv,
                     other=0.0).to(tl.float32)
        Kd = eL[:, None] * kc
        # O = exp(G) Q S0 + P N;  S1 = gl S0 + Kd^T N
        dN = tl.dot(tl.trans(P), dO, input_precision=PREC) + tl.dot(Kd, dS,
                                                                    input_precision=PREC)
        dP = tl.where(le, tl.dot(dO, tl.trans(N), input_precision=PREC), 0.0)
        dQK = dP * E
        dE = dP * QK
        QS = tl.dot(qc, S0, input_precision=PREC)
        dq = (tl.dot(dQK, kc, input_precision=PREC)
              + eG[:, None] * tl.dot(dO, tl.trans(S0), input_precision=PREC))
        dk = tl.dot(tl.trans(dQK), qc, input_precision=PREC)
        dKd = tl.dot(N, tl.trans(dS), input_precision=PREC)
        dk += eL[:, None] * dKd
        kd_dot = tl.sum(dKd * Kd, 1)
        dG = eG * tl.sum(dO * QS, 1)     # through exp(G_t): reaches g_r for r <= t
        # N = U - W S0
        dW = -tl.dot(dN, tl.trans(S0), input_precision=PREC)
        dS0 = (gl * dS + tl.dot(tl.trans(eG[:, None] * qc), dO, input_precision=PREC)
               - tl.dot(tl.trans(W), dN, input_precision=PREC))
        # U = Ti u;  W = Ti X,  X = beta exp(G) k
        dTi = (tl.dot(dN, tl.trans(uc), input_precision=PREC)
               + tl.dot(dW, tl.trans(X), input_precision=PREC))
        du = tl.dot(tl.trans(Ti), dN, input_precision=PREC)
        dX = tl.dot(tl.trans(Ti), dW, input_precision=PREC)
        dk += beG[:, None] * dX
        dbeG = tl.sum(dX * kc, 1)
        db = dbeG * eG
        dG += dbeG * beG
        dS_S0 = tl.sum(tl.sum(dS * S0, 1), 0)
        # Ti = (I + A)^-1:  dA = -Ti^T dTi Ti^T, on A's strictly lower support
        dA = -tl.dot(tl.trans(Ti), tl.dot(dTi, tl.trans(Ti), input_precision=PREC),
                     input_precision=PREC)
        dA = tl.where(lo, dA, 0.0)
        # A = beta K K^T * E
        dKK = dA * bt[:, None] * E
        db += tl.sum(dA * KK * E, 1)
        dE += dA * bt[:, None] * KK
        dk += tl.dot(dKK + tl.trans(dKK), kc, input_precision=PREC)
        if HAS_DECAY:
            r_col = offs_t[:, None]
            t_row = offs_t[None, :]
            dg = tl.sum(tl.where(t_row >= r_col, dG[None, :], 0.0), 1)
            # Kd_s = exp(G_last - G_s) k_s holds g_r for s < r; exp(G_last) holds every g_r
            dg += tl.sum(tl.where(t_row < r_col, kd_dot[None, :], 0.0), 1) + gl * dS_S0
            # E[i, j] = exp(G_i - G_j) holds g_r for j < r <= i (the diagonal holds none)
            dEE = tl.where(lo, dE * E, 0.0)
            below = tl.dot(tl.where(t_row >= r_col, 1.0, 0.0), dEE, input_precision=PREC)
            dg += tl.sum(tl.where(t_row < r_col, below, 0.0), 1)
        else:
            dg = dG
        rows_k = (base_k + offs_t[:, None] * H * K + offs_k[None, :])
        tl.store(dq_ptr + part * K + rows_k, dq, mask=mk)
        tl.store(dk_ptr + part * K + rows_k, dk, mask=mk)
        tl.store(du_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :], du, mask=mv)
        tl.store(db_ptr + part + base_s + offs_t * H, db)
        tl.store(dg_ptr + part + base_s + offs_t * H, dg)
        dS = dS0
    tl.store(dh0_ptr + state, dS, mask=m_kv)
'''
