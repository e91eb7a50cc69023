"""The scan lowering's forward kernel (backward.py the backward, loop.py the step).

The forward kernel walks time in chunks of TC steps. Per chunk it loads every input for the
chunk at once, computes the gates, and runs each state block as `tl.associative_scan` over the
chunk (element (a, b), combine (a1, b1).(a2, b2) = (a1 a2, a2 b1 + b2)), starting from the
carried state; the outputs of all TC steps are then computed and stored together. It saves the
state entering each chunk, so the backward kernel can recompute a chunk's states from there:
it walks the chunks in the opposite order, recomputes the forward states, and scans the adjoint
recurrence (the derived backward graph) in reverse.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import sympy as sp

from ...errors import Unsupported
from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input, Sum
from ...kernels.abi import Signature
from ...kernels.writer import Writer, fresh, ident
from ...passes.analysis import time_varying
from .blocks import Block
from .body import ChunkBody, direction, kernel_text, prologue, state_offset, state_ptrs
from .emit import Tiling, Val, Values, guard, index_terms, mask_of


def independent(g: Graph, blocks: tuple[Block, ...]) -> bool:
    """Whether no block's update reads another block's states: then a stretch of time can be
    scanned from a zero state and the stretches joined afterwards (the two-level scan)."""
    dependent = set(g.state_dependent) | set(g.state_names)
    for b in blocks:
        mine = set(b.states) | set(b.news)
        for e in [c for row in b.coef for c in row] + list(b.inp):
            if any(x.name in dependent and x.name not in mine for x in e.free_symbols):
                return False
    return True


def forward_source(g: Graph, blocks: tuple[Block, ...], tiling: Tiling,
                   name: str, batch: str | None = None) -> tuple[str, Signature]:
    """The forward kernel of kernel graph `g` (see `partition.kernel_graph`).

    Time is cut into N_SEG segments of SEG_LEN steps (a multiple of TC), one program per
    segment and block of channels. With one segment this is the plain chunked scan. With
    several (the two-level scan, when batch x channels alone would leave the GPU idle) it runs
    twice: SUMMARY scans each segment from a zero state and stores, per state, the state it
    ends in (E) and the segment's decay (M, the product of its steps' transitions); then each
    program joins the summaries of the segments before its own, h <- M h + E from the initial
    state, and scans its segment from there, storing outputs and checkpoints.

    Long on purpose: one kernel's text in order (see backward.backward_source)."""
    sig, w, t = Signature(), Writer(), tiling
    vals = Values(g, t, w)
    inputs = [n for n in g.inputs() if n.role in (Role.SEQ, Role.PARAM)]
    for n in inputs:
        sig.ptr(f"in:{n.name}", ident(n.name))
        sig.strides(f"in:{n.name}", ident(n.name), (["#t"] if n.role is Role.SEQ else [])
                    + [d for d in n.dims])
    for o, _axes in zip(g.outputs, g.out_axes):
        sig.ptr(f"out:{o}", ident(o))
        sig.strides(f"out:{o}", ident(o), ["#t"] + list(g[o].dims))
    for s in g.state_names:
        state_ptrs(sig, g, s, "h0", "h0", False)
        state_ptrs(sig, g, s, "hT", "hT", False)
        state_ptrs(sig, g, s, "chk", "chk", True)
        _summary_ptrs(sig, g, s)
    for d in t.space:
        sig.params.append(("size", d, f"size_{d}"))
    sig.params.append(("size", "T", "T"))
    sig.params.append(("size", "N_SEG", "N_SEG"))
    sig.params.append(("size", "SEG_LEN", "SEG_LEN"))
    consts = ["HAS_H0", "SAVE", "REVERSE", "SUMMARY", "TC", "STAGES", "VARLEN"] + [
        f"BLOCK_{d}" for d in t.tile]
    if t.unroll:  # EVEN: whole chunks, no index past the unrolled dim's size (Launch.even)
        consts += [f"BLOCK_{t.unroll}", "EVEN", "LOOP_BY"]
    prologue(w, t)
    at = len(w.lines)
    w("seg = pid  # the segment of time this program scans")
    direction(w, "REVERSE", "f")
    varying = time_varying(g)
    along = along_unrolled(g, t)
    for n in g.inputs():
        if n.role is Role.PARAM and t.unroll not in n.dims:
            vals.load(n, False)
        elif n.role is Role.INDEX:
            vals.index(n)
    body = ChunkBody(g, blocks, vals, w, "REVERSE", "f")
    core = [n.name for n in g.nodes if not isinstance(n, Input)]
    news = set(g.new_state_names)  # a new state is scanned per chunk, even a constant one
    hoisted = [n for n in core if n not in varying and n not in news and n not in along]
    body.run(hoisted)
    for s in g.state_names:
        w(f"{body.state_var(s)} = tl.zeros({t.carried_shape(g[s].dims)}, tl.float32)")
    segmented = independent(g, blocks) and t.unroll is None
    w("if not SUMMARY:")
    w.indent()
    for s in g.state_names:
        sv, dims = body.state_var(s), g[s].dims
        w("if HAS_H0:")
        w(f"    {sv} += tl.load({ident(s)}_h0_ptr + {state_offset(t, g, s, 'h0', None)}"
          f"{guard(mask_of(t, dims, False, carried=True))}).to(tl.float32)", f"initial {s}")
    if segmented:
        _join_before(w, g, blocks, t, body.state_var, backward=False)
    w.dedent()
    if segmented:
        w("if SUMMARY:")
        w.indent()
        _decay_init(w, g, blocks, t)
        w.dedent()
    w("n_chunks = tl.cdiv(T, TC)")
    w("seg_ch = SEG_LEN // TC")
    w("c0 = seg * seg_ch")
    w("c1 = tl.minimum(c0 + seg_ch, n_chunks)")
    w("for ci in tl.range(0, c1 - c0, num_stages=STAGES):  # loads of later chunks in flight")
    w.indent()
    w("c = c0 + ci")
    w("if REVERSE:")
    w("    c = c1 - 1 - ci")
    w("t = c * TC + o_t")
    w("m_t = t < T")
    w("t64 = t.to(tl.int64)")
    w("if SAVE:")
    w.indent()
    w("if not SUMMARY:")
    w.indent()
    for s in g.state_names:
        w(f"tl.store({ident(s)}_chk_ptr + ONE + {state_offset(t, g, s, 'chk', 'c')}, "
          f"{body.state_var(s)}, mask={mask_of(t, g[s].dims, False, carried=True)})",
          f"checkpoint of {s}")
    w.dedent()
    w.dedent()
    for n in g.inputs(Role.SEQ):
        if t.unroll not in n.dims:
            vals.load(n, True)
    chunk = [n for n in core if n in varying or n in news or n in along]
    if t.unroll is None:
        body.run(chunk)
    else:
        _unrolled(w, g, body, chunk, along)
    if segmented:
        w("if SUMMARY:")
        w.indent()
        _decay_step(w, blocks, body, t)
        w.dedent()
    w("if not SUMMARY:")
    w.indent()
    for o in g.outputs:
        v = vals[o]
        dims = g[o].dims
        off = " + ".join(index_terms(t, dims, ident(o), True))
        w(f"tl.store({ident(o)}_ptr + ONE + {off}, {vals.full(v, dims, True)}"
          f".to({ident(o)}_ptr.dtype.element_ty), mask={mask_of(t, dims, True)})", o)
    w.dedent()
    w.dedent()
    if segmented:
        w("if SUMMARY:")
        w.indent()
        _summary_store(w, g, blocks, t, body.state_var)
        w.dedent()
    w("last = seg == N_SEG - 1  # the segment the scan ends in")
    w("if REVERSE:")
    w("    last = seg == 0")
    w("if not SUMMARY:")
    w.indent()
    for s in g.state_names:
        m = mask_of(t, g[s].dims, False, carried=True)
        m = "last" if m == "None" else f"{m} & last"
        w(f"tl.store({ident(s)}_hT_ptr + ONE + {state_offset(t, g, s, 'hT', None)}, "
          f"{body.state_var(s)}, mask={m})", f"final {s}")
    w.dedent()
    emit_varlen(w, at, sig, t, batch)
    src = kernel_text(name, sig, consts, w)
    return src, sig


def along_unrolled(g: Graph, t: Tiling, outputs_along: bool = False) -> dict[str, str]:
    """Where each node is computed with an unrolled dim u: in the loop over u ("in": a value
    along u; "sum": a sum over u, added up there) or after it ("after": reading such a sum);
    nodes not named come before the loop; {} without an unrolled dim. Refused (Unsupported)
    where the loop cannot run once per chunk: a value along u reading a sum over u, an output
    along u, a state not along u."""
    u = t.unroll
    if u is None:
        return {}
    out: dict[str, str] = {}
    for n in g.nodes:
        if isinstance(n, Input):
            if n.role is Role.INDEX and u in n.dims:
                raise Unsupported(f"index input {n.name} along the unrolled dim {u!r}")
            continue
        before = {out[a] for a in n.args if a in out}
        if u in n.dims or (isinstance(n, Sum) and n.dim == u and u in g[n.arg].dims):
            if before - {"in"}:
                raise Unsupported(f"{n.name}: a value along {u!r} reads a sum over {u!r}")
            out[n.name] = "sum" if isinstance(n, Sum) and n.dim == u else "in"
        elif "in" in before:
            raise Unsupported(f"{n.name}: leaves the unrolled dim {u!r} but by a sum")
        elif before:
            out[n.name] = "after"
    for o in g.outputs if not outputs_along else ():
        if u in g[o].dims:
            raise Unsupported(f"output {o} is along the unrolled dim {u!r}")
    for s in g.state_names:
        if u not in g[s].dims:
            raise Unsupported(f"state {s} is not along the unrolled dim {u!r}")
    return out


def _unrolled(w: Writer, g: Graph, body: ChunkBody, chunk: list[str],
              along: dict[str, str]) -> None:
    """One chunk's work with an unrolled dim u (see `unrolled` in tiling.py): what does not
    vary along u first, then a loop over u, one [BLOCK, TC] tile per index (inputs along u
    loaded per index, state columns scanned, sums over u added up), then what reads those
    sums. The loop is unrolled whole at compile time, or with LOOP_BY > 0 (ScanConfig.loop)
    a `tl.range` unrolled that many times: the same steps, fewer registers."""
    u, vals = body.vals.tiling.unroll, body.vals
    news = set(g.new_state_names)
    body.share([n for n in chunk if n not in news], list(body.blocks))
    inputs = {n.name for n in g.inputs() if u in n.dims}
    hoist_factors(body, inputs | set(along) | set(g.state_names) | news)
    body.run([n for n in chunk if n not in along], share=False)
    body.flush()

    def steps() -> None:
        for n in g.inputs():
            if n.role in (Role.SEQ, Role.PARAM) and u in n.dims:
                vals.load(n, n.role is Role.SEQ)
        body.run([n for n in chunk if along.get(n) in ("in", "sum")], share=False)

    index_loop(w, vals, u, steps)
    body.run([n for n in chunk if along.get(n) == "after"], share=False)


def index_loop(w: Writer, vals: Values, u: str, steps) -> None:
    """The loop over the unrolled dim u around `steps()`, which emits one index's work:
    unrolled whole at compile time (LOOP_BY 0: each index a constant) or a `tl.range`
    unrolled LOOP_BY times (the same lines). The sums over u it adds up are zeroed before."""
    mark, first = len(w.lines), len(vals.zeroed)
    w(f"if LOOP_BY == 0:  # {u} unrolled whole: one index at a time, each a constant")
    w(f"    for o_{u} in tl.static_range(BLOCK_{u}):")
    w.indent().indent()
    start = len(w.lines)
    w(f"m_{u} = o_{u} < size_{u}")
    steps()
    w.dedent()
    w.dedent()
    lines = w.lines[start:]
    w("else:  # the same steps in a loop unrolled LOOP_BY times: fewer values live at once")
    w(f"    for o_{u} in tl.range(0, BLOCK_{u}, num_stages=1, loop_unroll_factor=LOOP_BY):")
    w.lines += lines
    w.lines[mark:mark] = ["    " * w.depth + z for z in vals.zeroed[first:]]


def hoist_factors(body: ChunkBody, along: set[str]) -> None:
    """The factors of a product in the loop over an unrolled dim that do not vary along it
    (the values named in `along` do), made one value computed before the loop: B * dt * u
    multiplies B by dt * u per index, not by dt and then u."""
    pending = body.vals.pending
    dep = set(along)
    for sym, e in pending.items():  # in creation order: operands first
        if any(x.name in dep for x in e.free_symbols):
            dep.add(sym.name)
    made: dict[sp.Basic, sp.Symbol] = {}

    def split(e: sp.Basic) -> sp.Basic:
        if not e.args:
            return e
        if e.is_Mul:
            free = [a for a in e.args if a.free_symbols and not
                    any(x.name in dep for x in a.free_symbols)]
            if len(free) > 1:
                prod = sp.Mul(*free)
                if prod not in made:
                    made[prod] = sp.Symbol(fresh("f"), real=True)
                    pending[made[prod]] = prod
                rest = [split(a) for a in e.args if a not in free]
                return sp.Mul(made[prod], *rest)
        return e.func(*[split(a) for a in e.args])

    for e, r in list(body.reduced.items()):
        body.reduced[e] = split(r)
    for sym in [x for x in pending if x.name in dep]:
        pending[sym] = split(pending[sym])


def varlen_able(tiling: Tiling, batch: str | None) -> bool:
    """Whether the kernels can run packed sequences (cu_seqlens) in one launch: the batch dim
    indexes programs, one per sequence."""
    return batch is not None and batch in tiling.grid


def emit_varlen(w: Writer, at: int, sig: Signature, t: Tiling, batch: str | None) -> None:
    """Packed sequences (VARLEN, see `varlen_able`): the program's batch index is its sequence,
    which spans [cu[i], cu[i + 1]) of the packed time axis; its length replaces T, and every
    tensor with a time axis is rebased to the sequence's first step (the launcher passes those
    with batch stride 0). States, checkpoints and summaries are per sequence already."""
    sig.ptr("cu", "cu")
    if not varlen_able(t, batch):
        return
    timed = [p[1] for p in sig.params if p[0] == "stride" and p[2] == "#t"]
    ptrs = {p[1]: p[2] for p in sig.params if p[0] == "ptr"}
    strides = {p[1]: p[3] for p in sig.params if p[0] == "stride" and p[2] == "#t"}
    lines = ["if VARLEN:  # packed sequences: this program's sequence is cu[i], cu[i + 1]",
             f"    t_start = tl.load(cu_ptr + i_{batch}).to(tl.int64)",
             f"    T = (tl.load(cu_ptr + i_{batch} + 1) - t_start).to(tl.int32)"]
    lines += [f"    {ptrs[key]} += t_start * {strides[key]}" for key in timed]
    w.lines[at:at] = ["    " + line for line in lines]


# set while the fixed-order variant of a backward is emitted (ScanProgram.fixed_order): every
# dim a gradient is summed over in part gets a buffer axis, none is added with atomics
_FIXED = contextvars.ContextVar("lrc_scan_fixed_order", default=False)


@contextlib.contextmanager
def fixed_order() -> Iterator[None]:
    """Emit kernels whose cross-program sums are buffer slots summed on the host in a fixed
    order (deterministic), never atomic adds."""
    token = _FIXED.set(True)
    try:
        yield
    finally:
        _FIXED.reset(token)


def partial_axes(val: Val, t: Tiling) -> list[str]:
    """Dims summed over one program's share that get a buffer axis (the grid dims); shares of a
    split tile dim are added up in place with atomics instead (`atomic_over`), but in the
    fixed-order variant, where they get an axis of one slot per block."""
    return split_axes(val.partial, t)


def split_axes(partial, t: Tiling) -> list[str]:
    """`partial_axes` for a set of partial dims."""
    return [d for d in t.space if d in partial and (_FIXED.get() or d not in t.split)]


def atomic_over(partial, t: Tiling) -> bool:
    """Whether a gradient summed in part over `partial` is added atomically (shares of a split
    tile dim; never in the fixed-order variant)."""
    return not _FIXED.get() and bool(set(partial) & set(t.split))


def store_line(var: str, off: str, value: str, mask: str, atomic: bool) -> str:
    if atomic:
        return f"tl.atomic_add({var}_ptr + ONE + {off}, {value}, mask={mask}, sem='relaxed')"
    return (f"tl.store({var}_ptr + ONE + {off}, ({value}).to({var}_ptr.dtype.element_ty), "
            f"mask={mask})")


def owned(mask: str, dims, partial, t: Tiling) -> str:
    """`mask`, and only the first program along the kernel's program dims a gradient neither
    has nor sums over: the others hold the same value, which an atomic add would count again."""
    rest = [d for d in t.space if (d not in t.tile or d in t.split) and d != t.unroll]
    first = [f"({'blk_' if d in t.split else 'i_'}{d} == 0)" for d in rest
             if d not in dims and d not in partial]
    if not first:
        return mask
    return " & ".join(([] if mask == "None" else [mask]) + ["(ONE == 0)"] + first)


def partial_index(d: str, t: Tiling) -> str:
    return f"blk_{d}.to(tl.int64)" if d in t.split else f"i_{d}"


def _join_before(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling, var,
                 backward: bool) -> None:
    """Join the summaries of the segments scanned before this program's own, in the order they
    were scanned: earlier in time for a forward scan (later when REVERSE), the other way round
    for the adjoint scan of a backward kernel."""
    ahead, behind = ("N_SEG - 1 - seg", "seg") if backward else ("seg", "N_SEG - 1 - seg")
    w(f"n_prev = {ahead}  # the segments scanned before this one, joined: h <- M h + E")
    w("if REVERSE:")
    w(f"    n_prev = {behind}")
    w("for jj in range(0, n_prev):")
    w.indent()
    w(f"j = {'N_SEG - 1 - jj' if backward else 'jj'}")
    w("if REVERSE:")
    w(f"    j = {'jj' if backward else 'N_SEG - 1 - jj'}")
    _join(w, g, blocks, t, var)
    w.dedent()


def _join(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling, var) -> None:
    """h <- M h + E for the summary of segment j (see `forward_source`), every block."""
    for b in blocks:
        svs = [var(s) for s in b.states]
        rows = []
        for s in b.states:
            mask = guard(mask_of(t, g[s].dims, False, carried=True))
            base = state_offset(t, g, s, "dec", "j")
            ms = [f"tl.load({ident(s)}_dec_ptr + {base} + {k} * {ident(s)}_dec_sj{mask})"
                  for k in range(b.size)]
            e = f"tl.load({ident(s)}_sum_ptr + {state_offset(t, g, s, 'sum', 'j')}{mask})"
            rows.append(" + ".join(f"{m} * {v}" for m, v in zip(ms, svs)) + f" + {e}")
        w(f"{', '.join(svs)} = {', '.join(rows)}", f"join a segment into {', '.join(b.states)}")


def _decay_init(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling) -> None:
    for i, b in enumerate(blocks):
        for r in range(b.size):
            for c in range(b.size):
                w(f"M_{i}_{r}{c} = tl.full({t.shape(g[b.states[0]].dims, False)}, "
                  f"{1.0 if r == c else 0.0}, tl.float32)")


def _decay_step(w: Writer, blocks: tuple[Block, ...], body: ChunkBody, t: Tiling) -> None:
    """M <- (this chunk's transition) M, per block, from the scan's cumulative decays."""
    for i, b in enumerate(blocks):
        for k, a in enumerate(body.totals[i]):
            w(f"C_{i}_{k} = tl.sum(tl.where(o_t == LAST_{body.tag}, {a}, 0.0), axis={t.taxis}, "
              "keep_dims=True)")
        n = b.size
        prods = [" + ".join(f"C_{i}_{r * n + k} * M_{i}_{k}{c}" for k in range(n))
                 for r in range(n) for c in range(n)]
        lhs = [f"M_{i}_{r}{c}" for r in range(n) for c in range(n)]
        w(f"{', '.join(lhs)} = {', '.join(prods)}", f"decay of {', '.join(b.states)}")


def _summary_store(w: Writer, g: Graph, blocks: tuple[Block, ...], t: Tiling, var) -> None:
    for i, b in enumerate(blocks):
        for r, s in enumerate(b.states):
            m = mask_of(t, g[s].dims, False, carried=True)
            w(f"tl.store({ident(s)}_sum_ptr + ONE + {state_offset(t, g, s, 'sum', 'seg')}, "
              f"{var(s)}, mask={m})", f"{s} at the segment's end from zero")
            for c in range(b.size):
                w(f"tl.store({ident(s)}_dec_ptr + ONE + {state_offset(t, g, s, 'dec', 'seg')} "
                  f"+ {c} * {ident(s)}_dec_sj, M_{i}_{r}{c}, mask={m})")


def _summary_ptrs(sig: Signature, g: Graph, s: str) -> None:
    state_ptrs(sig, g, s, "sum", "sum", True)
    sig.ptr(f"dec:{s}", f"{ident(s)}_dec")
    sig.strides(f"dec:{s}", f"{ident(s)}_dec", ["#c", "#j"] + list(g[s].dims))


