"""Pieces of the chunked kernels: signature, program indices, loads, the per-step quantities,
cumulative log-decays and the intra-chunk matrix; and the forward kernel.

One program owns one index of every grid dim (batch, heads) and one block of BV values, holds
the (key x BV) state tile in registers, and walks its sequence in chunks of BT steps. Within a
chunk, with Lam the inclusive cumulative log-decay (log2 units: exp2 with log2(e) folded in),

    A_ij = sum_k q_ik k_jk 2^(Lq_ik - Lam_jk)   for j <= i (j < i when the output reads the old
                                               state), 0 above: the causal mask
    u    = A v + (q * 2^Lq) S_0 + (sum_k ek) ev         (tl.dot on tensor cores)
    S_BT = 2^Lam_last S_0 + (k * 2^(Lam_last - Lam))^T v

A scalar decay builds 2^(Lq_i - Lam_j) as a BT x BT matrix with the mask applied to the
exponent (-inf above the diagonal, so exp2 gives exact zeros and never overflows: the Mamba-2
NaN; this also keeps decays above 1 exact, which clamping the difference at 0 would not). A
per-key decay factors it through a per-key reference R, q * 2^(Lq - R) and k * 2^(R - Lam): one
product when every exponent stays within +-SPAN/2 (exact, no overflow). A chunk whose decays
span more is cut into four blocks: each block against itself factored at its own reference,
and each block's rows against the earlier blocks' columns referenced at the step before the
block, where both exponents are <= 0. Only blocks too steep even for that (decays below
2^(-SPAN / (BT/4)) per step) take an exact loop over columns. Log-decays are floored at
LOG_FLOOR, below which exp underflows in float32 anyway, so cumulative sums stay finite.
"""
from __future__ import annotations

import sympy as sp

from ...ir.dims import Role
from ...ir.nodes import node_symbol
from ...kernels import abi
from ...kernels.abi import Signature
from ...kernels.printer import triton_expr
from ...kernels.writer import Writer, ident
from .form import KEY, VALUE, ChunkForm

LOG_FLOOR = -200.0      # nats per step; e^-200 is below float32's smallest subnormal
SPAN = 120.0            # log2 units: the widest per-key decay range the factored form takes
LOG2E = 1.4426950408889634

DOT = '''
@triton.jit
def _cast(x, DT: tl.constexpr, EMU: tl.constexpr):
    # x.to(DT). The interpreter's float32 -> bfloat16 conversion truncates: under it (EMU)
    # round to nearest even by hand first, as the GPU does
    if EMU:
        if DT == tl.bfloat16 and x.dtype == tl.float32:
            b = x.to(tl.uint32, bitcast=True)
            x = ((b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
    return x.to(DT)


@triton.jit
def _dot(a, b, DT: tl.constexpr, IEEE: tl.constexpr, EMU: tl.constexpr):
    # tensor-core product: operands rounded to DT, accumulated in float32. IEEE: exact fp32
    # products of the rounded operands, how the interpreter (whose 16-bit tl.dot is wrong)
    # emulates a 16-bit product. float32 on the GPU: three tf32 products (hi*hi + hi*lo +
    # lo*hi, ~1e-6 relative; one tf32 product would cost ~3e-4), on the tensor cores; an
    # "ieee" product there is unrolled into FMAs (minutes of compile at 128 x 128)
    if IEEE:
        a32 = _cast(a, DT, EMU).to(tl.float32)
        return tl.dot(a32, _cast(b, DT, EMU).to(tl.float32), input_precision="ieee")
    elif DT == tl.float32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="tf32x3")
    else:
        return tl.dot(a.to(DT), b.to(DT))


@triton.jit
def _segsum(a, fa, b, fb):
    # the combine of a segmented sum (tl.associative_scan): fb marks where b's segment starts
    # in the scan's order, so the sum restarts there
    return tl.where(fb != 0, b, a + b), fa | fb
'''

CONSTS = ["BT", "BK", "BV", "DT", "IEEE", "EMU", "REVERSE", "VARLEN", "EVEN"]


def arg(name: str) -> str:
    """The kernel variable of input node `name` (prefixed: inputs may be called C or T)."""
    return f"a_{ident(name)}"


class Kernel:
    """Collects one chunked kernel: its parameters (in launch order) and body lines."""

    def __init__(self, form: ChunkForm, name: str):
        self.form, self.name = form, name
        self.sig = Signature()  # the parameters in launch order (kernels.abi)
        self.w = Writer()
        self.g = form.g
        self.key, self.value = form.key, form.value

    # ---- signature

    def tensor(self, key: str, var: str, dims, timed: bool, chunked: bool = False) -> None:
        """A tensor parameter with one stride per named dim ('#t' time, '#c' chunk)."""
        self.sig.ptr(key, var)
        self.sig.strides(key, var, (["#c"] if chunked else []) + (["#t"] if timed else [])
                         + list(dims))

    def state_head(self, *keys: str, key_blocks: bool = False) -> None:
        """The initial and final state, per-chunk state tiles `keys`, the chunk decays
        (`chunk_states`), the packed-sequence tensors and the sizes as parameters; the
        prologue (`key_blocks`: see `prologue`)."""
        sdims = self.g[self.form.state].dims
        self.tensor("h0", "h0", sdims, False)
        self.tensor("hT", "hT", sdims, False)
        self.chunk_states(*keys)
        self.sig.ptr("cu", "cu")
        self.sig.ptr("coff", "coff")
        self.sizes()
        self.prologue(key_blocks=key_blocks)
        self.w("ZERO = tl.zeros([1, 1], tl.int64)  # makes every load a block")

    def chunk_states(self, *keys: str) -> None:
        """Per-chunk state tiles `keys` (the state's dims but the batch) and `dec`, each
        chunk's decay per key (nor the values): what the kernels split over chunks pass."""
        f, sdims = self.form, self.g[self.form.state].dims
        for key in keys:
            self.tensor(key, key, [d for d in sdims if d != f.batch], False, chunked=True)
        self.tensor("dec", "dec", [d for d in sdims if d not in (f.batch, f.value)], False,
                    chunked=True)

    def sizes(self) -> None:
        for d in self.form.grid + (self.key, self.value):
            self.sig.size(d, f"size_{d}")
        self.sig.size("T", "T")

    @property
    def params(self) -> list[tuple]:
        return self.sig.params

    def source(self, consts: list[str]) -> str:
        """The kernel's source: parameters, then the constexprs `consts` and I64 (read by
        the prologue)."""
        return abi.kernel_source(self.name, self.sig, consts + ["I64"], self.w.text())

    # ---- offsets

    def offset(self, var: str, dims, timed: bool, batch: str = "i_bx") -> str:
        """`var_ptr`'s offset for this program's grid indices, the tile's key/value index
        vectors, and the chunk's time steps."""
        terms = ["t64 * " + f"{var}_st"] if timed else []
        for d in dims:
            if d == self.key:
                terms.append(f"o_k * {var}_s_{d}")
            elif d == self.value:
                terms.append(f"o_v * {var}_s_{d}")
            elif d == self.form.batch:
                terms.append(f"{batch} * {var}_s_{d}")
            else:
                terms.append(f"ix_{d} * {var}_s_{d}")
        return " + ".join(terms) or "0"

    def state_offset(self, var: str, chunk: bool = False) -> str:
        """Offset of the (BK x BV) state tile: keys along rows, values along columns."""
        terms = [f"(c0 + c) * {var}_sc"] if chunk else []
        for d in self.g[self.form.state].dims:
            if d == self.key:
                terms.append(f"o_kr * {var}_s_{d}")
            elif d == self.value:
                terms.append(f"o_v * {var}_s_{d}")
            elif d == self.form.batch:
                if not chunk:
                    terms.append(f"i_seq * {var}_s_{d}")
            else:
                terms.append(f"ix_{d} * {var}_s_{d}")
        return " + ".join(terms)

    def mask(self, dims, timed: bool) -> str:
        parts = (["m_t"] if timed else []) + (["m_k"] if self.key in dims else []) + (
            ["m_v"] if self.value in dims else [])
        return " & ".join(parts) or "None"

    # ---- common body pieces

    def prologue(self, looped: str | None = None, key_blocks: bool = False) -> None:
        """Program id -> v-block and grid indices; index vectors and masks; the sequence.
        Grid dim `looped` is cut into blocks of HEADS indices when the constexpr HEADS is
        set: the program's index is its block (i_hb), and it loops over the block.
        `key_blocks`: the keys may be cut into NKB (constexpr) blocks of BK, one a program."""
        w, f = self.w, self.form
        w("pid = tl.program_id(0)")
        w(f"n_vb = tl.cdiv(size_{self.value}, BV)")
        w("i_vb = pid % n_vb")
        w("pid = pid // n_vb")
        kb = ""
        if key_blocks:
            w("i_kb = pid % NKB  # the block of keys (of NKB)")
            w("pid = pid // NKB")
            kb = "i_kb * BK + "
        for d in reversed(f.grid):
            pre = ""
            if d == looped:
                w("if HEADS:  # blocks of HEADS indices, each program looping over its block")
                w(f"    i_hb = (pid % tl.cdiv(size_{d}, HEADS)).to(tl.int64)")
                w(f"    pid = pid // tl.cdiv(size_{d}, HEADS)")
                w("else:")
                pre = "    "
            w(f"{pre}ix_{d} = (pid % size_{d}).to(tl.int64)  # grid dim {d}")
            w(f"{pre}pid = pid // size_{d}")
        w("z64 = tl.program_id(0).to(tl.int64) * 0")
        w("o_c = tl.arange(0, BT)[:, None]  # step within the chunk (rows)")
        w("o_cc = tl.arange(0, BT)[None, :]  # step within the chunk (columns)")
        w(f"o_k = {kb}tl.arange(0, BK)[None, :]  # key dim {self.key}")
        w(f"m_k = o_k < size_{self.key}")
        w(f"o_kr = {kb}tl.arange(0, BK)[:, None]  # key dim as the state tile's rows")
        w(f"m_kr = o_kr < size_{self.key}")
        w(f"o_v = i_vb * BV + tl.arange(0, BV)[None, :]  # value dim {self.value}")
        w(f"m_v = o_v < size_{self.value}")
        w("if I64:  # an offset reaches 2^31 (the launcher's check): index products in int64")
        w("    o_k, o_kr, o_v = o_k.to(tl.int64), o_kr.to(tl.int64), o_v.to(tl.int64)")
        w("if EVEN:  # every tile whole (launcher): masks of constants, which fold away")
        w("    m_k = tl.full([1, BK], 1, tl.int1)")
        w("    m_kr = tl.full([BK, 1], 1, tl.int1)")
        w("    m_v = tl.full([1, BV], 1, tl.int1)")
        w("m_s = m_kr & m_v")
        w("ZK = tl.zeros([BT, BK], tl.float32)")
        w("ZV = tl.zeros([BT, BV], tl.float32)")
        w("Z1 = tl.zeros([BT, 1], tl.float32)")
        b = f.batch
        # a sequence: [bos, bos + n_t) along time; packed sequences (cu_seqlens) each have one
        w("bos = z64")
        w("n_t = z64 + T")
        w(f"i_seq = ix_{b}" if b else "i_seq = z64")
        w("i_bx = i_seq  # the batch row of inputs and outputs")
        w("c0 = i_seq * tl.cdiv(T, BT)  # this sequence's first chunk in the checkpoints")
        if b:
            w("if VARLEN:")
            w("    bos = tl.load(cu_ptr + i_seq).to(tl.int64)")
            w("    n_t = tl.load(cu_ptr + i_seq + 1).to(tl.int64) - bos")
            w("    i_bx = z64  # packed inputs have one batch row")
            w("    c0 = tl.load(coff_ptr + i_seq).to(tl.int64)")
        w("n_c = tl.cdiv(n_t, BT)")

    def rows(self, chunk: str) -> None:
        """The chunk's steps: `tau` within the sequence, `t64` in memory (reversed scans read
        the sequence back to front)."""
        w = self.w
        w(f"c = {chunk}")
        w("tau = c * BT + o_c")
        w("m_t = tau < n_t")
        w("if EVEN:")
        w("    m_t = tl.full([BT, 1], 1, tl.int1)")
        w("t64 = bos + tau")
        w("if REVERSE:")
        w("    t64 = bos + n_t - 1 - tau")

    def bare(self) -> dict[str, str]:
        """Quantity name -> the Seq input it is exactly, over its whole tile (q = C, k = B):
        that input is loaded in the dot dtype, as tl.dot takes it (a no-op for 16-bit inputs),
        rather than as a float32 copy twice the registers; other math reading it converts it
        there. Not q and k under a per-key decay: those are scaled in float32 before the
        product anyway."""
        f, out = self.form, {}
        for q in f.quantities:
            if q.name == "l" or not isinstance(q.expr, sp.Symbol) or (
                    f.per_key and q.side == KEY):
                continue
            for n in f.inputs:
                node = f.input(n)
                if (node.role is Role.SEQ and q.expr == input_symbol(f, n)
                        and f.input_side(n) == q.side):
                    out[q.name] = n
        return out

    def load_inputs(self, role: Role) -> None:
        w = self.w
        bare = set(self.bare().values())
        for name in self.form.inputs:
            node = self.form.input(name)
            if node.role is not role:
                continue
            var, timed = arg(name), role is Role.SEQ
            dims = node.dims
            off = self.offset(var, dims, timed)
            m = self.mask(dims, timed)
            guard = f", mask={m}, other=0.0" if m != "None" else ""
            cast = ".to(DT)" if name in bare else ".to(tl.float32)"
            w(f"{var} = tl.load({var}_ptr + {off} + ZERO{guard}){cast}", name)

    def cse(self, exprs: list[sp.Basic]) -> tuple[list[tuple[sp.Symbol, sp.Basic]], list]:
        names = sp.numbered_symbols("cse", real=True)
        return sp.cse(exprs, symbols=names, order="none")

    def names(self, extra: dict | None = None) -> dict[str, str]:
        bare = set(self.bare().values())
        out = {name: arg(name) + (".to(tl.float32)" if name in bare else "")
               for name in self.form.inputs}
        out.update(extra or {})
        return out

    def emit_cse(self, repl, names: dict[str, str]) -> None:
        for sym, e in repl:
            names[sym.name] = sym.name
            self.w(f"{sym.name} = {triton_expr(e, names)}")

    def quantities(self, exprs: dict[str, sp.Basic], names: dict[str, str]) -> None:
        """q_<name> for every quantity, broadcast to its tile and zero outside the masks."""
        f, w = self.form, self.w
        bare = self.bare()
        for q in f.quantities:
            text = triton_expr(exprs[q.name], names)
            if q.name in bare:  # in its own dtype (loaded zero outside the masks)
                w(f"q_{q.name} = {arg(bare[q.name])}", f"{q.name} = {q.expr}")
                continue
            if q.name == "l":
                shape, m = ("ZK", "m_t & m_k") if f.per_key else ("Z1", "m_t")
                w(f"l_raw = {text} + {shape}", "log-decay")
                w(f"q_l = tl.where({m}, tl.maximum(l_raw, {LOG_FLOOR}), 0.0)")
                w(f"l2 = q_l * {LOG2E}  # log2 units")
                continue
            shape, m = ("ZK", "m_t & m_k") if q.side == KEY else ("ZV", "m_t & m_v")
            w(f"q_{q.name} = tl.where({m}, {text} + {shape}, 0.0)", f"{q.name} = {q.expr}")

    def cumulative(self) -> None:
        """Lam (inclusive), Lq (what the readout sees), Lam_last, and the causal mask."""
        w, f = self.w, self.form
        if f.per_key:
            w("lam = tl.cumsum(l2, 0)  # log2 decay from the chunk start through each step")
        else:  # scanned as a vector: Triton 3.6 cannot lower a scan over a (BT, 1) tile
            w("lam_t = tl.cumsum(tl.sum(l2, 1), 0)  # log2 decay from the chunk start through "
              "each step")
            w("lam = lam_t[:, None]")
        w("lq = lam - l2  # ... through the step before: the output reads the old state"
          if f.old else "lq = lam")
        w("lam_last = tl.sum(l2, 0, keep_dims=True)  # through the whole chunk")
        w("causal = o_cc < o_c" if f.old else "causal = o_cc <= o_c")

    def intra(self) -> None:
        """A (BT x BT): the decayed, masked q k^T of the chunk."""
        w, f = self.w, self.form
        if not f.per_key:
            w("dm = tl.exp2(tl.where(causal, lq - lam_t[None, :], float('-inf')))",
              "decay from step j to step i, exact zeros above the diagonal")
            w("A = _dot(q_q, tl.trans(q_k), DT, IEEE, EMU) * dm")
            return
        w("lo = tl.minimum(tl.min(lam, 0, keep_dims=True), tl.min(lq, 0, keep_dims=True))")
        w("hi = tl.maximum(tl.max(lam, 0, keep_dims=True), tl.max(lq, 0, keep_dims=True))")
        w("ref = (lo + hi) * 0.5  # per-key reference: both factors within 2^(+-span/2)")
        w(f"if tl.max(hi - lo) <= {SPAN}:")
        w.indent()
        w("eqd = tl.exp2(lq - ref)")
        w("ekd = tl.exp2(ref - lam)")
        w("A = tl.where(causal, _dot(q_q * eqd, tl.trans(q_k * ekd), DT, IEEE, EMU), 0.0)")
        w("ek = ekd * tl.exp2(lam_last - ref)  # each step -> chunk end")
        w.dedent()
        w("else:  # steep decays: four blocks of BT/4 steps")
        w.indent()
        self.blocks()
        w(f"if bspan <= {SPAN}:")
        w.indent()
        w("A = tl.where(causal & (blk_c == blk), _dot(q_q * tl.exp2(lq - m_row), "
          "tl.trans(q_k * tl.exp2(m_row - lam)), DT, IEEE, EMU), 0.0)", "within each block")
        w("for I in tl.static_range(1, 4):")
        w.indent()
        self.boundary("I")
        w("A += tl.where(causal & (blk == I) & (blk_c < I), _dot(q_q * e_a, tl.trans(q_k * e_b), "
          "DT, IEEE, EMU), 0.0)", "block I's rows, earlier blocks' columns")
        w.dedent()
        w.dedent()
        w("else:  # too steep even for blocks: one column at a time, exponents masked")
        w.indent()
        w("A = tl.zeros([BT, BT], tl.float32)")
        w("for j in range(0, BT):")
        w.indent()
        self.column("j")
        w("A = tl.where(o_cc == j, tl.sum(q_q * k_j * w_j, 1, keep_dims=True), A)")
        w.dedent()
        w.dedent()
        w("ek = tl.exp2(lam_last - lam)  # each step -> chunk end")
        w.dedent()

    def blocks(self) -> None:
        """The chunk as four blocks: blk (rows) / blk_c (columns), m_row the reference of each
        row's block (its mid-range per key), bspan the widest block range."""
        w = self.w
        w("blk = o_c // (BT // 4)")
        w("blk_c = o_cc // (BT // 4)")
        w("m_row = tl.zeros([BT, BK], tl.float32)")
        w("bspan = tl.max(hi - lo) * 0.0")
        w("for I in tl.static_range(0, 4):")
        w.indent()
        w("lo_i = tl.min(tl.where(blk == I, tl.minimum(lam, lq), float('inf')), 0, "
          "keep_dims=True)")
        w("hi_i = tl.max(tl.where(blk == I, tl.maximum(lam, lq), float('-inf')), 0, "
          "keep_dims=True)")
        w("m_row = tl.where(blk == I, (lo_i + hi_i) * 0.5, m_row)")
        w("bspan = tl.maximum(bspan, tl.max(hi_i - lo_i))")
        w.dedent()

    def boundary(self, i: str) -> None:
        """Factors for block i's rows against all earlier columns, referenced at the step
        before the block: both exponents are <= 0, so nothing overflows however steep."""
        w = self.w
        w(f"r_i = tl.sum(tl.where(o_c == {i} * (BT // 4) - 1, lam, 0.0), 0, keep_dims=True)")
        w(f"e_a = tl.exp2(tl.where(blk == {i}, lq - r_i, float('-inf')))")
        w(f"e_b = tl.exp2(tl.where(blk < {i}, r_i - lam, float('-inf')))")

    def column(self, j: str) -> None:
        """k_j, the decays w_j from step j to every step i (zero where masked)."""
        w = self.w
        w(f"k_j = tl.sum(tl.where(o_c == {j}, q_k, 0.0), 0, keep_dims=True)")
        w(f"lam_j = tl.sum(tl.where(o_c == {j}, lam, 0.0), 0, keep_dims=True)")
        op = "<" if self.form.old else "<="
        w(f"w_j = tl.exp2(tl.where({j} {op} o_c, lq - lam_j, float('-inf')))")

    def readout(self, q: str, s: str) -> str:
        """(q * 2^Lq) s: the chunk's rows reading state `s`. A scalar decay scales the
        product's rows (one float32 multiply of the result, q goes to the tensor cores as
        loaded); a per-key one must scale q's columns first."""
        if self.form.per_key:
            return f"_dot({q} * eq, {s}, DT, IEEE, EMU)"
        return f"_dot({q}, {s}, DT, IEEE, EMU) * eq"

    def passed(self, k: str, v: str) -> str:
        """(k * 2^(Lam_last - Lam))^T v: what the chunk adds to the state it passes on. A
        scalar decay scales v's rows (BT x BV) rather than k's (BT x BK)."""
        if self.form.per_key:
            return f"_dot(tl.trans({k} * ek), {v}, DT, IEEE, EMU)"
        return f"_dot(tl.trans({k}), {v} * ek, DT, IEEE, EMU)"

    def state_exps(self) -> None:
        """Decays of the inter-chunk terms (at most 1 for decays at most 1)."""
        w, f = self.w, self.form
        w("eq = tl.exp2(lq)  # chunk start -> each step (what the readout of S_0 sees)")
        if not f.per_key:
            w("ek = tl.exp2(lam_last - lam)  # each step -> chunk end")
        w("elast = tl.exp2(lam_last)  # the whole chunk")
        w("elast_r = tl.trans(elast)" if f.per_key else "elast_r = elast")


def forward_source(form: ChunkForm, name: str) -> tuple[str, list[tuple]]:
    """The forward kernel and its parameters."""
    k = Kernel(form, name)
    g, w, f = k.g, k.w, form
    for n in f.inputs:
        node = g[n]
        k.tensor(f"in:{n}", arg(n), node.dims, f.seq(n))
    k.tensor("out", "y", g[f.output].dims, True)
    k.state_head("chk", "loc", key_blocks=True)
    k.load_inputs(Role.PARAM)
    # PHASE 0: one program walks all its chunks, the state carried in registers. Split over
    # chunks (one program per chunk, the pid left after the grid dims): PHASE 1 stores each
    # chunk's own contribution to the state (from zero) and its decay, `states_source`'s
    # kernel passes the state from chunk to chunk, PHASE 2 reads the state entering its
    # chunk and writes the outputs. PHASE 3 is PHASE 0 without the outputs: the state pass
    # alone, storing every chunk's entering state for a PHASE 2 launch after it.
    w("WALK: tl.constexpr = PHASE == 0 or PHASE == 3  # one program walks every chunk")
    w("S = tl.zeros([BK, BV], tl.float32)")

    def chunk() -> None:  # one chunk's steps (k.rows placed them)
        w("if SAVE or PHASE == 3:")
        w(f"    tl.store(chk_ptr + {k.state_offset('chk', chunk=True)}, "
          "_cast(S, chk_ptr.dtype.element_ty, EMU), mask=m_s)", "state entering the chunk")
        w("if PHASE == 2:")
        w(f"    S = tl.load(chk_ptr + {k.state_offset('chk', chunk=True)}, mask=m_s, other=0.0)"
          ".to(tl.float32)", "state entering the chunk")
        k.load_inputs(Role.SEQ)
        exprs = [q.expr for q in f.quantities]
        repl, red = k.cse(exprs)
        names = k.names()
        k.emit_cse(repl, names)
        k.quantities({q.name: e for q, e in zip(f.quantities, red, strict=False)}, names)
        k.cumulative()
        k.intra()
        k.state_exps()
        w("if PHASE == 0 or PHASE == 2:")
        w.indent()
        w(f"u = _dot(A, q_v, DT, IEEE, EMU) + {k.readout('q_q', 'S')}", "sum_k q * S")
        if f.q("ek"):
            w("u += tl.sum(q_ek, 1, keep_dims=True) * q_ev", "the readout's state-free term")
        y = "u"
        if f.q("gate"):
            y = "q_gate * u"
        if f.q("skip"):
            y += " + q_skip"
        w(f"y = {y}", f.output)
        w(f"tl.store(y_ptr + {k.offset('y', g[f.output].dims, True)}, "
          "_cast(y, y_ptr.dtype.element_ty, EMU), mask=m_t & m_v)")
        w.dedent()
        w("if PHASE != 2:")
        w(f"    S = S * elast_r + {k.passed('q_k', 'q_v')}", f"{f.state} after the chunk")
        w("if PHASE == 1:")
        w(f"    tl.store(loc_ptr + {k.state_offset('loc', chunk=True)}, "
          "_cast(S, loc_ptr.dtype.element_ty, EMU), mask=m_s)", "the chunk's own contribution")
        w(f"    tl.store(dec_ptr + {dec_offset(k)} + ZERO, elast_r + tl.zeros([BK, 1], "
          "tl.float32), mask=m_kr & (i_vb == 0))", "the chunk's decay")

    w("if WALK:")
    w.indent()
    w("if HAS_H0:")
    w(f"    S += tl.load(h0_ptr + {k.state_offset('h0')}, mask=m_s, other=0.0)"
      ".to(tl.float32)", "initial state")
    w("for ci in range(z64, n_c):")
    w.indent()
    k.rows("ci")
    chunk()
    w.dedent()
    w.dedent()
    # the same steps again, not in a loop: values the compiler hoists out of a loop (even one
    # of one trip) stay in registers throughout it
    w("elif pid < n_c:  # this program's chunk: the steps above, without their loop "
      "(what a loop hoists stays in registers across it)")
    w.indent()
    k.rows("pid")
    chunk()
    w.dedent()
    w("if WALK:")
    w(f"    tl.store(hT_ptr + {k.state_offset('hT')}, S, mask=m_s)", "final state")
    return k.source(["HAS_H0", "SAVE", "PHASE", "NKB"] + CONSTS), k.params


def dec_offset(k: Kernel) -> str:
    """Offset of a chunk's decay (one per key; its state dims without batch and values)."""
    f, terms = k.form, ["(c0 + c) * dec_sc"]
    for d in k.g[f.state].dims:
        if d == f.key:
            terms.append(f"o_kr * dec_s_{d}")
        elif d not in (f.batch, f.value):
            terms.append(f"ix_{d} * dec_s_{d}")
    return " + ".join(terms)


def module_source(kernels: list[str], title: str) -> str:
    """The generated module (kernels.abi.module_source) with this lowering's helpers."""
    return abi.module_source(kernels, title, DOT)


def input_symbol(form: ChunkForm, name: str) -> sp.Symbol:
    return node_symbol(form.g[name])


__all__ = ["KEY", "VALUE", "Kernel", "forward_source", "module_source", "arg", "LOG_FLOOR",
           "dec_offset"]
