"""The chunked backward kernel: the forward's chunk algebra run in reverse, then the chain rule
through the quantities' sympy derivatives, all in one kernel.

One program per (grid index, value block), like the forward; it walks its chunks last to first
carrying dS, the gradient of the state leaving the chunk, in registers, and reloads each chunk's
entering state S_0 from the forward's checkpoints. Per chunk (Lam, Lq, A as in the forward):

    du   = dy * gate,  d_gate = dy * u
    d_v  = A^T du + (k * 2^(Lam_last - Lam)) dS
    dA   = du v^T (masked);  d_q = dA-part + (du S_0^T) * 2^Lq;  d_k = dA-part + (v dS^T) * ...
    dS  <- 2^Lam_last dS + (q * 2^Lq)^T du                              (the state entering)
    d_l  = reverse cumsum of the log-decay cotangents (natural units; exp2 folds log2(e) in);
           a chunk with steep decays sums each term over the pairs it belongs to (steep.py)

then every input's gradient is sum_F dF * dF/dX over the quantities F that read it, reduced over
the tile dims it lacks (`Chain`: each term as soon as its cotangent is final, each gradient
stored as soon as it is complete, so few gradient tiles are alive at once). A Seq gradient
that several programs add to (an input shared across heads, such as Mamba-2's grouped B and
C, or one lacking the value dim when the values are split over programs) is added atomically
into a float32 buffer; Params accumulate over the chunks in registers and are added once per
program. Split over chunks (PASS), the state's gradient is passed alone first (PHASE 3,
optionally one program per block of keys: a state's rows pass independently), then every
chunk's gradients are computed in parallel (PHASE 2), emitted without a loop around them.
There, for an input the heads share, a program may take a block of HEADS heads in turn
(`looped_dim`, summing in registers and adding once per block), or store its head's part in
the head's own slab of a buffer that is summed afterwards (Config.spread: no atomics, the
fastest for Mamba-2); and a program may take one block of the keys (NKB blocks), adding its
part of the gradients that sum over the keys (`key_partial`).
"""
from __future__ import annotations

import sympy as sp

from ...ir.dims import Role
from . import steep
from .emit import CONSTS, KEY, LOG_FLOOR, SPAN, Kernel, arg, dec_offset, input_symbol
from .form import ChunkForm

COTANGENT = {"q": "d_q", "k": "d_k", "v": "d_v", "l": "d_l", "gate": "d_gate", "skip": "d_skip",
             "ek": "d_ek", "ev": "d_ev"}


def atom_flag(name: str) -> str:
    return f"ATOM_{arg(name)}"


def _intra_grads(k: Kernel) -> None:
    """Per-key decays: d_q, d_k from dA (the intra-chunk part), and the log-decay cotangents
    they imply (a scalar decay's are emitted inline in backward_source): factored over the
    chunk (the fast form), or for steep chunks pair by pair (steep.py)."""
    w = k.w
    steep.flag(k, True, SPAN)
    w("if fast:")
    w.indent()
    w("eqd = tl.exp2(lq - ref)  # recomputed: registers are scarcer than exp2 here")
    w("ekd = tl.exp2(ref - lam)")
    w("d_q = _dot(dA, q_k * ekd, DT, IEEE, EMU) * eqd")
    w("d_k = _dot(tl.trans(dA), q_q * eqd, DT, IEEE, EMU) * ekd")
    w("dlq = q_q * d_q  # q_ik k_jk 2^(Lq_ik - Lam_jk): d/dLq_ik = q_ik dq_ik")
    w("dlam = -(q_k * d_k)")
    w.dedent()
    w("else:")
    w.indent()
    steep.per_key_pairs(k, k.form.old)
    w.dedent()


# the quantities' cotangents by the part of the per-chunk gradients that makes them final
# (the parts of q and k come in either order: Chain's `order`)
STAGES = (("v", "skip", "gate", "ev", "ek"), ("q",), ("k",), ("l",))


class Chain:
    """Per input, its gradient tile this chunk (emitted as d_<input>): sum_F dF * dF/dX over
    the quantities F that read it, reduced over the tile dims it lacks. Emitted in STAGES, each
    term as soon as its quantity's cotangent is final, and each input's gradient stored right
    after its last term, so that few gradient tiles are alive at once (the backward's per-chunk
    phase runs out of registers otherwise). `order`: the stages in the order they are emitted
    (a scalar decay's backward emits k's part before q's)."""

    def __init__(self, k: Kernel, derivs: dict, names: dict[str, str], store,
                 order: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        from ...kernels.printer import triton_expr

        f = k.form
        self.k, self.store = k, store
        self.rank = {s: i for i, s in enumerate(order)}  # stage -> when it is emitted
        self.terms: dict[str, list[tuple[int, str]]] = {}  # input -> [(stage, term)]
        for name in f.inputs:
            side = f.input_side(name)
            for q in f.quantities:
                e = derivs.get((q.name, name))
                if e is None:
                    continue
                if q.name == "l":
                    m = "m_t & m_k" if f.per_key else "m_t"
                    wide = f.per_key
                else:
                    m = "m_t & m_k" if q.side == KEY else "m_t & m_v"
                    wide = True
                factor = "" if e == 1 else f" * ({triton_expr(e, names)})"
                c = f"tl.where({m}, {COTANGENT[q.name]}{factor}, 0.0)"
                if side is None and wide:
                    c = f"tl.sum({c}, 1, keep_dims=True)"
                stage = next(i for i, st in enumerate(STAGES) if q.name in st)
                self.terms.setdefault(name, []).append((stage, c))
        # inputs with the same terms share one tile (dt and dt_bias in softplus(dt + dt_bias))
        self.same: dict[str, str] = {}
        first: dict[tuple, str] = {}
        for name, ts in self.terms.items():
            self.same[name] = first.setdefault(tuple(ts), name)

    def stage(self, i: int) -> None:
        """Emit the terms of stage i, and store the gradients that are then complete."""
        w = self.k.w
        for name, ts in self.terms.items():
            if self.same[name] != name:
                continue
            var = f"d_{arg(name)}"
            now = [c for s, c in ts if s == i]
            if now:
                started = any(self.rank[s] < self.rank[i] for s, _ in ts)
                w(f"{var} {'+=' if started else '='} {' + '.join(now)}", f"gradient of {name}")
            if max(self.rank[s] for s, _ in ts) != self.rank[i]:
                continue
            for other, rep in self.same.items():
                if rep == name:
                    if other != name:
                        w(f"d_{arg(other)} = {var}", f"gradient of {other}")
                    self.store(other, f"d_{arg(other)}")


def key_partial(form: ChunkForm, derivs: dict) -> list[str]:
    """The inputs whose gradient a program taking one block of the keys (NKB > 1) computes
    only a part of, the blocks' parts added (atomically): those lacking the key dim (their
    gradient sums over the keys) and those read by a quantity whose cotangent sums over them
    (v, gate, ev; a scalar decay's l; skip, which only the first block adds)."""
    f = form
    summed = {"v", "gate", "ev", "skip"} | (set() if f.per_key else {"l"})
    return [n for n in f.inputs if any(key[1] == n for key in derivs) and (
        f.key not in f.input(n).dims or any(key == (q, n) for q in summed for key in derivs))]


def looped_dim(form: ChunkForm, graded: list[str]) -> tuple[str | None, list[str]]:
    """A grid dim some graded Seq inputs lack and the only one they lack (Mamba-2's heads,
    which share a group's B and C), and those inputs: with HEADS, one program takes HEADS
    indices of that dim in turn and sums those inputs' gradients in registers, adding them
    once (atomically only where other blocks of indices add too), where one program per
    index would add each atomically. (None, []) where there is none."""
    f = form
    for n in graded:
        lack = [d for d in f.grid if d not in f.input(n).dims]
        if f.seq(n) and len(lack) == 1 and lack[0] != f.batch:
            d = lack[0]
            return d, [m for m in graded if f.seq(m) and
                       [e for e in f.grid if e not in f.input(m).dims] == [d]]
    return None, []


def entering(k: Kernel, du: str) -> str:
    """(q * 2^Lq)^T du: the chunk's part of the gradient of the state entering it (a scalar
    decay scales du's rows rather than q's)."""
    if k.form.per_key:
        return f"_dot(tl.trans(q_q * eq), {du}, DT, IEEE, EMU)"
    return f"_dot(tl.trans(q_q), {du} * eq, DT, IEEE, EMU)"


def backward_source(form: ChunkForm, name: str, det: bool = False
                    ) -> tuple[str, list[tuple], list[str], list[str]]:
    """The backward kernel, its parameters, the inputs whose gradient it writes, and those of
    them a block of the keys writes a part of (key_partial).

    `det`: the fixed-order variant, with no atomic add: each program stores its part of a
    Param's gradient in its own slot (a '#p_prog' axis, one slot per program), and every Seq
    gradient is stored (the launcher picks configs where no two programs write one element,
    a shared input's heads into slabs: Launcher.backward); the host sums the slots in order.

    Long on purpose: it writes one kernel top to bottom, and its stages share the kernel's
    parameter list, masks and loaded tiles; split, each part would take a dozen of them."""
    k = Kernel(form, name)
    g, w, f = k.g, k.w, form
    for n in f.inputs:
        node = g[n]
        k.tensor(f"in:{n}", arg(n), node.dims, f.seq(n))
    k.tensor("dy", "dy", g[f.output].dims, True)
    sdims = g[f.state].dims
    k.tensor("chk", "chk", [d for d in sdims if d != f.batch], False, chunked=True)
    k.tensor("dhT", "dhT", sdims, False)
    k.tensor("dh0", "dh0", sdims, False)
    k.chunk_states("dchk", "loc")
    syms = {n: input_symbol(f, n) for n in f.inputs}
    derivs = {}
    for q in f.quantities:
        for n in f.inputs:
            if syms[n] in q.expr.free_symbols:
                derivs[(q.name, n)] = sp.diff(q.expr, syms[n])
    graded = [n for n in f.inputs if any(key[1] == n for key in derivs)]
    hd, shared = looped_dim(f, graded)
    # a gradient of an input the heads share carries the looped dim: its stride is 0 but
    # where each head stores into its own slab (Config.spread)
    gdims = {n: list(g[n].dims) + ([hd] if n in shared else []) for n in graded}
    for n in graded:
        slot = ["#p_prog"] if det and not f.seq(n) else []
        k.tensor(f"grad:{n}", f"g_{arg(n)}", slot + gdims[n], f.seq(n))
    k.sig.ptr("cu", "cu")
    k.sig.ptr("coff", "coff")
    k.sizes()
    k.prologue(hd, key_blocks=True)
    w("ZERO = tl.zeros([1, 1], tl.int64)  # makes every load a block")
    if hd:
        w("if HEADS:  # this program's block of the looped dim, in turn (PHASE 2)")
        w("    h_lo = i_hb * HEADS")
        w(f"    h_hi = tl.minimum(h_lo + HEADS, size_{hd})")
        w("else:")
        w(f"    h_lo = ix_{hd}")
        w(f"    h_hi = ix_{hd} + 1")
        for n in shared:
            side = f.input_side(n)
            shape = "[BT, BK]" if side == KEY else "[BT, BV]" if side else "[BT, 1]"
            w(f"sum_{arg(n)} = tl.zeros({shape}, tl.float32)",
              f"gradient of {n}, summed over {hd}")
        w("for i_h in range(h_lo, h_hi):")
        w.indent()
        w(f"ix_{hd} = i_h")
    k.load_inputs(Role.PARAM)
    params = [n for n in graded if not f.seq(n)]
    for n in params:
        side = f.input_side(n)
        shape = "[1, BK]" if side == KEY else "[1, BV]" if side else "[1, 1]"
        w(f"acc_{arg(n)} = tl.zeros({shape}, tl.float32)")
    # PHASE 0: one program walks its chunks back to front, the state's gradient carried.
    # Split over chunks (the forward's PHASE 1, 2): each chunk's own contribution to that
    # gradient and its decay, the states kernel passing it back to front, then each chunk's
    # gradients from the gradient of the state leaving it. PHASE 3 is PHASE 0 with only the
    # state's gradient: passed back to front and stored per chunk (dchk) for a PHASE 2 launch
    w("WALK: tl.constexpr = PHASE == 0 or PHASE == 3  # one program walks every chunk")
    w("dS = tl.zeros([BK, BV], tl.float32)  # gradient of the state leaving the chunk")

    def chunk() -> None:  # one chunk's steps (k.rows placed them)
        """The per-chunk body of the backward kernel (long for the same reason as its caller: one
        kernel's text in order, its stages sharing tiles and masks)."""
        w("if PHASE == 2:")
        w(f"    dS = tl.load(dchk_ptr + {k.state_offset('dchk', chunk=True)}, mask=m_s, "
          "other=0.0).to(tl.float32)", "gradient of the state leaving the chunk")

        def load_s0() -> None:  # late, where it is first read: its registers are scarce
            w(f"S0 = tl.load(chk_ptr + {k.state_offset('chk', chunk=True)}, mask=m_s, other=0.0)"
              ".to(tl.float32)", "state entering the chunk (checkpoint)")
        k.load_inputs(Role.SEQ)
        w(f"dy = tl.load(dy_ptr + {k.offset('dy', g[f.output].dims, True)}, mask=m_t & m_v, "
          "other=0.0).to(tl.float32)", f"gradient of {f.output}")
        keys = list(derivs)
        repl, red = k.cse([q.expr for q in f.quantities] + [derivs[x] for x in keys])
        names = k.names()
        k.emit_cse(repl, names)
        nq = len(f.quantities)
        k.quantities({q.name: e for q, e in zip(f.quantities, red[:nq], strict=False)}, names)
        reduced = dict(zip(keys, red[nq:], strict=False))
        k.cumulative()
        k.intra()
        k.state_exps()
        du = "dy"
        if f.q("ek"):
            w("esum = tl.sum(q_ek, 1, keep_dims=True)")
        if f.q("gate"):
            load_s0()
            w("u = _dot(A, q_v, DT, IEEE, EMU) + _dot(q_q * eq, S0, DT, IEEE, EMU)"
              + (" + esum * q_ev" if f.q("ek") else ""), "the readout, recomputed")
            w("d_gate = dy * u")
            w("du = dy * q_gate")
            du = "du"
        w("if PHASE == 3:")
        w(f"    tl.store(dchk_ptr + {k.state_offset('dchk', chunk=True)}, "
          "_cast(dS, dchk_ptr.dtype.element_ty, EMU), mask=m_s)", "gradient of the state leaving")
        w(f"    dS = dS * elast_r + {entering(k, du)}", "the state entering")
        w("elif PHASE == 1:")
        w(f"    dS = {entering(k, du)}", "the chunk's own part")
        w(f"    tl.store(loc_ptr + {k.state_offset('loc', chunk=True)}, "
          "_cast(dS, loc_ptr.dtype.element_ty, EMU), mask=m_s)")
        w(f"    tl.store(dec_ptr + {dec_offset(k)} + ZERO, elast_r + tl.zeros([BK, 1], "
          "tl.float32), mask=m_kr & (i_vb == 0))", "the chunk's decay")
        w("else:")
        w.indent()

        def store(n: str, var: str) -> None:
            node, gv = g[n], f"g_{arg(n)}"
            if not f.seq(n):
                w(f"acc_{arg(n)} += tl.sum({var}, 0, keep_dims=True)")
                return
            off, m = k.offset(gv, gdims[n], True), k.mask(node.dims, True)
            pre = ""
            if n in shared:
                w("if HEADS:")
                w(f"    sum_{arg(n)} += {var}")
                w("else:")
                pre = "    "
            if det:
                w(f"{pre}tl.store({gv}_ptr + {off}, _cast({var}, {gv}_ptr.dtype.element_ty, "
                  f"EMU), mask={m})")
                return
            w(f"{pre}if {atom_flag(n)}:")
            w(f"{pre}    tl.atomic_add({gv}_ptr + {off}, {var}, mask={m})")
            w(f"{pre}else:")
            w(f"{pre}    tl.store({gv}_ptr + {off}, _cast({var}, {gv}_ptr.dtype.element_ty, EMU), "
              f"mask={m})")

        chain = Chain(k, reduced, names, store, (0, 1, 2, 3) if f.per_key else (0, 2, 1, 3))
        if f.q("skip"):  # the skip's gradient is dy itself: added by the first key block alone
            w("d_skip = dy")
            w("if NKB > 1:")
            w("    d_skip = tl.where(i_kb == 0, dy, 0.0)")
        w(f"d_v = _dot(tl.trans(A), {du}, DT, IEEE, EMU) + " + (
            "_dot(q_k * ek, dS, DT, IEEE, EMU)" if f.per_key else
            "_dot(q_k, dS, DT, IEEE, EMU) * ek"))
        if f.q("ek"):
            w(f"d_ev = {du} * esum")
            w(f"d_ek = tl.where(m_t & m_k, tl.sum({du} * q_ev, 1, keep_dims=True) + ZK, 0.0)")
        chain.stage(0)
        w(f"dA = tl.where(causal, _dot({du}, tl.trans(q_v), DT, IEEE, EMU), 0.0)")
        if f.per_key:
            _intra_grads(k)
        else:  # d_q's and d_k's intra-chunk parts, each where it is used
            w("pa = dA * A  # dA_ij/dlog-decay: +A_ij for the readout step i, -A_ij for step j")
            w("dlq = tl.sum(pa, 1, keep_dims=True)")
            w("dlam = -tl.sum(pa, 0)[:, None]")
            steep.flag(k, False, SPAN)
            steep.scalar_pairs(k, f.old)
            w("dad = dA * dm")

        def readout_part() -> None:  # d_q: the intra part and the readout of S_0
            if not f.q("gate"):
                load_s0()
            sds = "tl.sum(S0 * dS, 1, keep_dims=True)"
            w(f"sds = tl.trans({sds})" if f.per_key else
              f"sds = tl.sum({sds}, 0, keep_dims=True)", "S_0 . dS: the whole chunk's decay")
            w(f"dqs = _dot({du}, tl.trans(S0), DT, IEEE, EMU) * eq  # the readout of S_0")
            w("d_q += dqs" if f.per_key else "d_q = _dot(dad, q_k, DT, IEEE, EMU) + dqs")
            w("gq = q_q * dqs")
            if not f.per_key:
                w("gqs = tl.sum(gq, 1, keep_dims=True)")
            steep.readout(k, f.per_key, f.old)
            w("dlq += gq" if f.per_key else "dlq += gqs")
            chain.stage(1)

        def passed_part() -> None:  # d_k: the intra part and the state passed on
            w("dkt = _dot(q_v, tl.trans(dS), DT, IEEE, EMU) * ek  # the state passed on")
            w("d_k += dkt" if f.per_key else
              "d_k = _dot(tl.trans(dad), q_q, DT, IEEE, EMU) + dkt")
            w("gk = q_k * dkt")
            if f.per_key:
                w("dlast = tl.sum(gk, 0, keep_dims=True)")
                steep.passed(k, True)
                w("dlam -= gk")
            else:
                w("gks = tl.sum(gk, 1, keep_dims=True)")
                w("dlast = tl.sum(gks, 0, keep_dims=True)")
                steep.passed(k, False)
                w("dlam -= gks")
            chain.stage(2)

        if f.per_key:
            readout_part()
            passed_part()
        else:  # a scalar decay: d_k first, so q_v is dead before S_0 is loaded (registers)
            passed_part()
            readout_part()
        w("dlast += sds * elast")
        w("if PHASE == 0:")
        w(f"    dS = dS * elast_r + {entering(k, du)}", "the state entering")
        rc = ("tl.cumsum(dlam + dlq, 0, reverse=True)" if f.per_key else
              "tl.cumsum(tl.sum(dlam + dlq, 1), 0, reverse=True)[:, None]")
        w("if fast:")
        w(f"    d_l = {rc} - dlq + dlast" if f.old else f"    d_l = {rc} + dlast",
          "log-decay: Lam_i = sum_{j<=i} l_j")
        w("else:  # the sums over crossing pairs, formed directly (steep.py)")
        w("    d_l = dlq + dlam + sds * elast")
        lm = "m_t & m_k" if f.per_key else "m_t"
        w(f"d_l = tl.where({lm} & (l_raw > {LOG_FLOOR}), d_l, 0.0)  # floored decays: no gradient")
        chain.stage(3)
        w.dedent()  # the PHASE 0 / 2 branch

    w("if WALK:")
    w.indent()
    w("if HAS_DHT:")
    w(f"    dS += tl.load(dhT_ptr + {k.state_offset('dhT')}, mask=m_s, other=0.0)"
      ".to(tl.float32)", "gradient of the final state")
    w("for ci in range(z64, n_c):")
    w.indent()
    k.rows("n_c - 1 - ci")
    chunk()
    w.dedent()
    w.dedent()
    # the same steps again, not in a loop: a loop (even of one trip) keeps what the compiler
    # hoists out of it in registers throughout, and this phase would spill many of them
    w("elif pid < n_c:  # this program's chunk: the steps above, without their loop "
      "(what a loop hoists stays in registers across it)")
    w.indent()
    k.rows("pid")
    chunk()
    w.dedent()
    w("if PHASE == 0 or PHASE == 2:")
    w.indent()
    for n in params:
        gv = f"g_{arg(n)}"
        off = k.offset(gv, g[n].dims, False)
        m = k.mask(g[n].dims, False)
        guard = f", mask={m}" if m != "None" else ""
        if det:  # this program's own slot
            w(f"tl.store({gv}_ptr + {off} + tl.program_id(0).to(tl.int64) * {gv}_s__p_prog "
              f"+ ZERO, acc_{arg(n)}{guard})", f"gradient of {n}")
            continue
        w(f"tl.atomic_add({gv}_ptr + {off} + ZERO, acc_{arg(n)}{guard})", f"gradient of {n}")
    w.dedent()
    w("if WALK:")
    w(f"    tl.store(dh0_ptr + {k.state_offset('dh0')}, dS, mask=m_s)",
      "gradient of the initial state")
    consts = ["HAS_DHT", "PHASE", "NKB"] + [
        atom_flag(n) for n in graded if f.seq(n) and not det] + CONSTS
    if hd:
        w.dedent()
        w("if HEADS:  # the sums over the block, added once (this program's chunk)")
        w.indent()
        k.rows("pid")
        for n in shared:
            gv, dims = f"g_{arg(n)}", g[n].dims
            off, m = k.offset(gv, dims, True), k.mask(dims, True)
            if det:  # (HEADS is 0 in the fixed-order variant: Launcher.backward)
                w(f"tl.store({gv}_ptr + {off}, _cast(sum_{arg(n)}, {gv}_ptr.dtype.element_ty, "
                  f"EMU), mask={m})", f"gradient of {n}")
                continue
            w(f"if {atom_flag(n)}:  # other blocks add to the same rows")
            w(f"    tl.atomic_add({gv}_ptr + {off}, sum_{arg(n)}, mask={m})", f"gradient of {n}")
            w("else:")
            w(f"    tl.store({gv}_ptr + {off}, _cast(sum_{arg(n)}, {gv}_ptr.dtype.element_ty, "
              f"EMU), mask={m})", f"gradient of {n}")
        w.dedent()
        consts.insert(2, "HEADS")
    return k.source(consts), k.params, graded, key_partial(f, derivs)
