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

With a decay per key channel (KDA's), S_t = (I - beta_t k_t k_t^T) diag(a_t) S_{t-1} + ..., the
`_pk` kernels take g (B, T, H, K) per step with, per chunk, G (cumulative, to t) and R (the sum
after t, to the chunk's end) from the caller. The pair terms sum_c x_t[c] k_j[c] exp(G_t[c] -
G_j[c]) of Q K^T * E and K K^T * E no longer factor into one product: they are formed a column
(a step j) at a time, the exponent a running sum of g over (j, t] (never a difference of
chunk-long sums, every exponent <= 0 for decays <= 1), and their backward gives g's gradient
directly; the terms through exp(G) and exp(R) come back as G's and R's gradients, which the
caller sums into g's (each a genuine dependency: nothing cancels).
'''

# this program's tile and offsets, shared with kernels_ab.py
PROGRAM = r'''

@triton.jit
def _program(H, K, V, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """This program's value block, batch x head, batch, head, offsets and state tile."""
    i_v = tl.program_id(0)
    i_bh = tl.program_id(1)
    offs_t = tl.arange(0, BT)
    offs_k = tl.arange(0, BK)
    offs_v = i_v * BV + tl.arange(0, BV)
    m_kv = (offs_k[:, None] < K) & (offs_v[None, :] < V)
    state = i_bh * K * V + offs_k[:, None] * V + offs_v[None, :]
    return i_v, i_bh, i_bh // H, i_bh % H, offs_t, offs_k, offs_v, m_kv, state


@triton.jit
def _state_in(ptr, state, m_kv, HAS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """The state tile at ptr in float32, or zeros."""
    if HAS:
        S = tl.load(ptr + state, mask=m_kv, other=0.0).to(tl.float32)
    else:
        S = tl.zeros([BK, BV], tl.float32)
    return S


@triton.jit
def _bases(b, h, c, NT, H, K, V, BT: tl.constexpr):
    """Where chunk c starts in the key-side, value-side and per-step tensors."""
    row = (b * NT * BT + c * BT) * H + h
    return row * K, row * V, row
'''

SOURCE = r'''"""Chunked delta-rule kernels (lrc.lowering.dplr)."""
import triton
import triton.language as tl
''' + PROGRAM + r'''

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
    i_v, i_bh, b, h, offs_t, offs_k, offs_v, m_kv, state = _program(H, K, V, BT, BK, BV)
    S = _state_in(h0_ptr, state, m_kv, HAS_H0, BK, BV)
    for c in range(NT):
        base_k, base_v, base_s = _bases(b, h, c, NT, H, K, V, BT)
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
    i_v, i_bh, b, h, offs_t, offs_k, offs_v, m_kv, state = _program(H, K, V, BT, BK, BV)
    mk = offs_k[None, :] < K
    mv = offs_v[None, :] < V
    dS = _state_in(dhT_ptr, state, m_kv, HAS_DHT, BK, BV)
    T = NT * BT
    part = i_v * B * T * H            # this value block's slice of the partial gradients
    for cc in range(NT):
        c = NT - 1 - cc
        base_k, base_v, base_s = _bases(b, h, c, NT, H, K, V, BT)
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


@triton.jit
def _pairs_pk(xc, kc, gc, offs_t, BT: tl.constexpr):
    """M[t, j] = sum_c x_t[c] k_j[c] exp(g_{j+1} + ... + g_t)[c] for t >= j (0 above)."""
    M = tl.zeros([BT, BT], tl.float32)
    for j in range(BT):
        kj = tl.sum(tl.where(offs_t[:, None] == j, kc, 0.0), 0)
        e = tl.exp(tl.cumsum(tl.where(offs_t[:, None] > j, gc, 0.0), 0))
        col = tl.sum(xc * e * kj[None, :], 1)
        M = tl.where(offs_t[None, :] == j, col[:, None], M)
    return tl.where(offs_t[:, None] >= offs_t[None, :], M, 0.0)


@triton.jit
def _chunk_pk(k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, G_ptr, R_ptr, base_k, base_v, base_s, offs_t,
              offs_k, offs_v, H, K, V, BT: tl.constexpr, PREC: tl.constexpr):
    """One chunk with per-key decays: what forward and backward share."""
    mk = offs_k[None, :] < K
    mv = offs_v[None, :] < V
    rows_k = (base_k + offs_t[:, None] * H * K + offs_k[None, :])
    rows_v = (base_v + offs_t[:, None] * H * V + offs_v[None, :])
    kc = tl.load(k_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    qc = tl.load(q_ptr + rows_k, mask=mk, other=0.0).to(tl.float32)
    uc = tl.load(u_ptr + rows_v, mask=mv, other=0.0).to(tl.float32)
    gc = tl.load(g_ptr + rows_k, mask=mk, other=0.0)
    eG = tl.exp(tl.load(G_ptr + rows_k, mask=mk, other=0.0))
    eR = tl.exp(tl.load(R_ptr + rows_k, mask=mk, other=0.0))
    gl = tl.sum(tl.where(offs_t[:, None] == BT - 1, eG, 0.0), 0)      # exp(G_last) per key
    bt = tl.load(b_ptr + base_s + offs_t * H).to(tl.float32)
    le = offs_t[:, None] >= offs_t[None, :]
    lo = offs_t[:, None] > offs_t[None, :]
    Mkk = _pairs_pk(kc, kc, gc, offs_t, BT)
    P = _pairs_pk(qc, kc, gc, offs_t, BT)
    A = tl.where(lo, bt[:, None] * Mkk, 0.0)
    Ti = tl.where(offs_t[:, None] == offs_t[None, :], 1.0, 0.0)
    for i in range(1, BT):
        a_row = tl.sum(tl.where(offs_t[:, None] == i, A, 0.0), 0)
        new = tl.where(offs_t == i, 1.0, 0.0) - tl.sum(a_row[:, None] * Ti, 0)
        Ti = tl.where(offs_t[:, None] == i, new[None, :], Ti)
    return kc, qc, uc, gc, eG, eR, gl, bt, Mkk, P, Ti, le, lo


@triton.jit
def dplr_forward_pk(k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, G_ptr, R_ptr, h0_ptr, o_ptr, hT_ptr,
                    hs_ptr, NT, H, K, V, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                    HAS_H0: tl.constexpr, STORE_HS: tl.constexpr, PREC: tl.constexpr):
    i_v, i_bh, b, h, offs_t, offs_k, offs_v, m_kv, state = _program(H, K, V, BT, BK, BV)
    S = _state_in(h0_ptr, state, m_kv, HAS_H0, BK, BV)
    for c in range(NT):
        base_k, base_v, base_s = _bases(b, h, c, NT, H, K, V, BT)
        if STORE_HS:
            tl.store(hs_ptr + (i_bh * NT + c) * K * V + offs_k[:, None] * V + offs_v[None, :],
                     S, mask=m_kv)
        kc, qc, uc, gc, eG, eR, gl, bt, Mkk, P, Ti, le, lo = _chunk_pk(
            k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, G_ptr, R_ptr, base_k, base_v, base_s, offs_t,
            offs_k, offs_v, H, K, V, BT, PREC)
        W = tl.dot(Ti, bt[:, None] * eG * kc, input_precision=PREC)
        U = tl.dot(Ti, uc, input_precision=PREC)
        N = U - tl.dot(W, S, input_precision=PREC)
        O = tl.dot(qc * eG, S, input_precision=PREC) + tl.dot(P, N, input_precision=PREC)
        S = gl[:, None] * S + tl.dot(tl.trans(kc * eR), N, input_precision=PREC)
        tl.store(o_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :],
                 O.to(o_ptr.dtype.element_ty), mask=offs_v[None, :] < V)
    tl.store(hT_ptr + state, S, mask=m_kv)


@triton.jit
def dplr_backward_pk(k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, G_ptr, R_ptr, hs_ptr, do_ptr, dhT_ptr,
                     dq_ptr, dk_ptr, du_ptr, db_ptr, dg_ptr, dG_ptr, dR_ptr, dh0_ptr, NT, B, H,
                     K, V, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                     HAS_DHT: tl.constexpr, PREC: tl.constexpr):
    i_v, i_bh, b, h, offs_t, offs_k, offs_v, m_kv, state = _program(H, K, V, BT, BK, BV)
    mk = offs_k[None, :] < K
    mv = offs_v[None, :] < V
    dS = _state_in(dhT_ptr, state, m_kv, HAS_DHT, BK, BV)
    T = NT * BT
    part = i_v * B * T * H            # this value block's slice of the partial gradients
    for cc in range(NT):
        c = NT - 1 - cc
        base_k, base_v, base_s = _bases(b, h, c, NT, H, K, V, BT)
        S0 = tl.load(hs_ptr + (i_bh * NT + c) * K * V + offs_k[:, None] * V + offs_v[None, :],
                     mask=m_kv, other=0.0)
        kc, qc, uc, gc, eG, eR, gl, bt, Mkk, P, Ti, le, lo = _chunk_pk(
            k_ptr, q_ptr, u_ptr, b_ptr, g_ptr, G_ptr, R_ptr, base_k, base_v, base_s, offs_t,
            offs_k, offs_v, H, K, V, BT, PREC)
        X = bt[:, None] * eG * kc
        W = tl.dot(Ti, X, input_precision=PREC)
        U = tl.dot(Ti, uc, input_precision=PREC)
        N = U - tl.dot(W, S0, input_precision=PREC)
        QG = qc * eG
        KR = kc * eR
        dO = tl.load(do_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :], mask=mv,
                     other=0.0).to(tl.float32)
        # O = QG S0 + P N;  S1 = exp(G_last) S0 + KR^T N
        dN = tl.dot(tl.trans(P), dO, input_precision=PREC) + tl.dot(KR, dS,
                                                                    input_precision=PREC)
        dP = tl.where(le, tl.dot(dO, tl.trans(N), input_precision=PREC), 0.0)
        dQG = tl.dot(dO, tl.trans(S0), input_precision=PREC)
        dq = dQG * eG
        dGc = dQG * QG                                   # through exp(G_t)
        dKR = tl.dot(N, tl.trans(dS), input_precision=PREC)
        dk = dKR * eR
        dRc = dKR * KR                                   # through exp(R_t)
        dgl = gl * tl.sum(dS * S0, 1)
        dGc += tl.where(offs_t[:, None] == BT - 1, dgl[None, :], 0.0)
        # N = U - W S0
        dW = -tl.dot(dN, tl.trans(S0), input_precision=PREC)
        dS0 = (gl[:, None] * dS + tl.dot(tl.trans(QG), dO, input_precision=PREC)
               - tl.dot(tl.trans(W), dN, input_precision=PREC))
        # U = Ti u;  W = Ti X,  X = beta exp(G) k
        dTi = (tl.dot(dN, tl.trans(uc), input_precision=PREC)
               + tl.dot(dW, tl.trans(X), input_precision=PREC))
        du = tl.dot(tl.trans(Ti), dN, input_precision=PREC)
        dX = tl.dot(tl.trans(Ti), dW, input_precision=PREC)
        dk += bt[:, None] * eG * dX
        db = tl.sum(dX * eG * kc, 1)
        dGc += dX * X
        # Ti = (I + A)^-1, A = beta Mkk on the strictly lower triangle
        dA = -tl.dot(tl.trans(Ti), tl.dot(dTi, tl.trans(Ti), input_precision=PREC),
                     input_precision=PREC)
        dA = tl.where(lo, dA, 0.0)
        db += tl.sum(dA * Mkk, 1)
        dMkk = dA * bt[:, None]
        # the pairs, a column j at a time: M[t, j] = sum_c x_t k_j exp(g_(j, t])
        dg = tl.zeros([BT, BK], tl.float32)
        for j in range(BT):
            kj = tl.sum(tl.where(offs_t[:, None] == j, kc, 0.0), 0)
            e = tl.exp(tl.cumsum(tl.where(offs_t[:, None] > j, gc, 0.0), 0))
            Rq = tl.sum(tl.where(offs_t[None, :] == j, dP, 0.0), 1)[:, None] * e
            Rk = tl.sum(tl.where(offs_t[None, :] == j, dMkk, 0.0), 1)[:, None] * e
            dq += Rq * kj[None, :]
            dk += Rk * kj[None, :]
            both = Rq * qc + Rk * kc
            dk += tl.where(offs_t[:, None] == j, tl.sum(both, 0)[None, :], 0.0)
            dex = tl.where(offs_t[:, None] > j, both * kj[None, :], 0.0)
            dg += tl.where(offs_t[:, None] > j, tl.cumsum(dex, 0, reverse=True), 0.0)
        rows_k = (base_k + offs_t[:, None] * H * K + offs_k[None, :])
        tl.store(dq_ptr + part * K + rows_k, dq, mask=mk)
        tl.store(dk_ptr + part * K + rows_k, dk, mask=mk)
        tl.store(dg_ptr + part * K + rows_k, dg, mask=mk)
        tl.store(dG_ptr + part * K + rows_k, dGc, mask=mk)
        tl.store(dR_ptr + part * K + rows_k, dRc, mask=mk)
        tl.store(du_ptr + base_v + offs_t[:, None] * H * V + offs_v[None, :], du, mask=mv)
        tl.store(db_ptr + part + base_s + offs_t * H, db)
        dS = dS0
    tl.store(dh0_ptr + state, dS, mask=m_kv)
'''
