"""The chunked backward's log-decay gradient for chunks with steep decays: every term formed
from a relative decay (an exponent <= 0) and summed over the pairs it belongs to, so nothing
cancels.

Within a chunk the output reads q_i and k_j through P_ij = dA_ij q_i k_j 2^(Lq_i - Lam_j) (per
key; a scalar decay has one exponent per pair), and Lq_i - Lam_j is the sum of the log-decays
l_s over j < s <= i (j < s < i when the output reads the old state). So

    d l_t = sum_{pairs (i, j) crossing t} P_ij            (intra: j < t <= i, or j < t < i)
          + sum_{i >= t} q_i dqs_i   (i > t when old)      (the readout of the entering state)
          + sum_{j < t}  k_j dkt_j                         (the state passed on)
          + (S_0 . dS) 2^Lam_last                          (the entering state, the whole chunk)

The fast form (backward.py) gets the first three as reverse cumulative sums of q*dq - k*dk
over the chunk, which adds every pair at its readout step and subtracts it again at its key
step: exact in exact arithmetic, but the pairs that do not cross t (chiefly i = j, decay 1)
cancel there, and a steep decay makes the crossing pairs, the true value, smaller than their
rounding error by the decay itself (2^20 and more at a log-decay of -20 per step).

The stable form sums the crossing pairs directly. Pairs are grouped by the highest bit in
which i and j differ: at the level of half-size h, i lies in the upper half U of its aligned
block of 2h steps and j in the lower half L. Referenced at b - 1, the step before U,

    R_i = q_i 2^(Lq_i - Lam_{b-1}) sum_{j in L} dA_ij k_j 2^(Lam_{b-1} - Lam_j)   (i in U)
    C_j = k_j 2^(Lam_{b-1} - Lam_j) sum_{i in U} dA_ij q_i 2^(Lq_i - Lam_{b-1})   (j in L)

both exponents are <= 0 (sums of log-decays over a half, formed by segmented scans of l, not
as differences of chunk-long sums), and every pair of (U, L) crosses the steps of U up to
i and those of L after j, so that level adds sum_{i in U, i >= t} R_i to each t of U (i > t
when old) and sum_{j in L, j < t} C_j to each t of L: sums within a half, of terms that all
cross t. log2(BT) levels of two tensor-core products each, plus one product with a 0/1
matrix for the sums within halves; the same products give d_q and d_k. A scalar decay has
the pair matrix itself (dA * A): its crossing sums are one product with a triangular 0/1
matrix. The readout and passed-state sums are products with triangular 0/1 matrices.

A chunk takes this form when some step's log-decay is below -STEEP (log2 units) or, per key,
when its exponents span more than SPAN; others take the fast form, whose rounding is then at
most about BT 2^STEEP float32 epsilons of the largest pair.
"""
from __future__ import annotations

STEEP = 4.0  # log2 units per step: a steeper step sends its chunk to the stable form


def flag(k, per_key: bool, span: float) -> None:
    """`fast`: whether this chunk takes the fast form (every step's decay at least
    2^-STEEP, and per key, exponents within SPAN)."""
    w = k.w
    if per_key:
        w(f"fast = (tl.min(l2) >= {-STEEP}) & (tl.max(hi - lo) <= {span})",
          "no steep step: the fast form's rounding stays small")
    else:
        w(f"fast = tl.min(l2) >= {-STEEP}", "no steep step: the fast form's rounding stays small")


def per_key_pairs(k, old: bool) -> None:
    """Steep per-key chunk: d_q, d_k and the crossing sums (in dlq; dlam zero) level by level."""
    w = k.w
    w("dgd = tl.sum(tl.where(o_cc == o_c, dA, 0.0), 1, keep_dims=True)",
      "pairs (i, i), decay 1")
    w("d_q = dgd * q_k")
    w("d_k = dgd * q_q")
    w("dlq = ZK  # the crossing sums")
    w("dlam = ZK")
    w("ZI = tl.zeros([BT, BK], tl.int32)")
    w("for LV in tl.static_range(1, 10):  # the level of half-size BT >> LV")
    w.indent()
    w("if (BT >> LV) > 0:")
    w.indent()
    w("hs = BT >> LV")
    w("up = (o_c // hs) % 2 == 1  # rows in the upper half of their block")
    w("upc = (o_cc // hs) % 2 == 1")
    w("m_lv = (o_c // (2 * hs) == o_cc // (2 * hs)) & up & (upc == 0)",
      "pairs: row in the upper half, column in the lower")
    w("f_in = tl.associative_scan((l2, ZI + (o_c % hs == 0).to(tl.int32)), 0, _segsum)[0]",
      "l summed within each half, from its start")
    w("f_rv = tl.associative_scan((l2, ZI + (o_c % hs == hs - 1).to(tl.int32)), 0, _segsum, "
      "reverse=True)[0]", "... to its end")
    xa = "f_in - l2" if old else "f_in"
    w(f"ea = tl.exp2(tl.where(up, {xa}, float('-inf')))", "Lq_i - Lam_(b-1), upper half")
    w("eb = tl.exp2(tl.where(up, float('-inf'), f_rv - l2))", "Lam_(b-1) - Lam_j, lower half")
    w("da = tl.where(m_lv, dA, 0.0)")
    w("pq = _dot(da, q_k * eb, DT, IEEE, EMU) * ea")
    w("pk = _dot(tl.trans(da), q_q * ea, DT, IEEE, EMU) * eb")
    w("d_q += pq")
    w("d_k += pk")
    ge = ">" if old else ">="
    w(f"wl = (o_c // hs == o_cc // hs) & tl.where(up, o_cc {ge} o_c, o_cc < o_c)",
      "sums within a half: later rows (upper), earlier rows (lower)")
    w("dlq += _dot(wl.to(tl.float32), q_q * pq + q_k * pk, tl.float32, IEEE, EMU)")
    w.dedent()
    w.dedent()


def scalar_pairs(k, old: bool) -> None:
    """Steep scalar chunk: the crossing sums of the pair matrix pa (in dlq; dlam zero)."""
    w = k.w
    ge = ">" if old else ">="
    w("if not fast:")
    w.indent()
    w("cx = _dot(pa, (o_c < o_cc).to(tl.float32), tl.float32, IEEE, EMU)",
      "cx_it: row i's pairs with columns before t")
    w(f"dlq = tl.sum(tl.where(o_c {ge} o_cc, cx, 0.0), 0)[:, None]",
      "sum over rows i >= t: the pairs crossing t")
    w("dlam = Z1")
    w.dedent()


def readout(k, per_key: bool, old: bool) -> None:
    """Steep: the readout's log-decay terms (gq per key, gqs summed over the keys for a
    scalar decay) -> their sums over the steps at or after each t (after: old)."""
    w = k.w
    ge = ">" if old else ">="
    w("if not fast:")
    if per_key:
        w(f"    gq = _dot((o_cc {ge} o_c).to(tl.float32), gq, tl.float32, IEEE, EMU)")
    else:
        w(f"    gqs = tl.sum(tl.where(o_cc {ge} o_c, tl.trans(gqs), 0.0), 1, keep_dims=True)")


def passed(k, per_key: bool) -> None:
    """Steep: the passed state's log-decay terms (gk, or gks summed over the keys) -> minus
    their sums over the steps before each t (what dlam takes)."""
    w = k.w
    w("if not fast:")
    if per_key:
        w("    gk = -_dot((o_cc < o_c).to(tl.float32), gk, tl.float32, IEEE, EMU)")
    else:
        w("    gks = -tl.sum(tl.where(o_cc < o_c, tl.trans(gks), 0.0), 1, keep_dims=True)")
