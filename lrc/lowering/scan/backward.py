"""The scan's backward kernel: the adjoint recurrence run in reverse time over the
forward's checkpoints, with the input gradients accumulated per program.
"""
from __future__ import annotations

import networkx as nx

from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input, Map
from ...kernels.abi import Signature
from ...kernels.writer import Writer, ident
from ...passes.analysis import time_varying
from .blocks import Block
from .body import ChunkBody, direction, kernel_text, prologue, state_offset, state_ptrs
from .emit import Tiling, Val, Values, guard, index_terms, mask_of, wide
from .forward import (
    _decay_init,
    _decay_step,
    _join_before,
    _summary_ptrs,
    _summary_store,
    atomic_over,
    emit_varlen,
    independent,
    owned,
    partial_axes,
    partial_index,
    store_line,
)


def saved_states(k: Graph, backward) -> dict[str, str]:
    """{forward state: the output that is its new value} (y = h', as an elementwise linear
    RNN returns its state), when every state the backward reads is one: the backward then
    reads each state before a step from the saved output one step earlier, instead of
    recomputing the forward scan and shifting it (accelerated-scan's backward; faster for
    the elementwise scan, which then does less work per step). Else {}."""
    found = {}
    for s, new in k.states:
        for o in k.outputs:
            node = k[o]
            if (isinstance(node, Map) and node.args == (new,) and node.expr.is_Symbol
                    and set(node.dims) == set(k[s].dims)):
                found[s] = o
                break
    need = [s for s, _ in backward.forward_states]
    return {s: found[s] for s in need} if all(s in found for s in need) else {}


def _saved_old(w: Writer, t: Tiling, k: Graph, s: str, o: str, carry: str) -> str:
    """Emit state `s` before each step from output `o` (= s') one step earlier (`ts`), the
    chunk's checkpoint `carry` at its first step and where that step lies past the end."""
    var, ptr = f"{ident(s)}_old_f", f"{ident(o)}_sv"
    off = " + ".join([f"ts64 * {ptr}_st"] + index_terms(t, k[o].dims, ptr, False))
    mask = " & ".join(["m_t", "(o_t != FIRST_f)", "(ts >= 0)", "(ts < T)"] +
                      [f"m_{d}" for d in k[o].dims if d in t.tile])
    w(f"{var} = tl.where({mask}, tl.load({ptr}_ptr + {off}, mask={mask}, other=0.0)"
      f".to(tl.float32), {carry})", f"{s} before each step: the saved {o} one step earlier")
    return var


def backward_inputs(sig: Signature, k: Graph, bg: Graph, backward) -> None:
    """A backward kernel's first parameters: the forward's inputs, the outputs' cotangents,
    the states' checkpoints."""
    for n in k.inputs():
        if n.role in (Role.SEQ, Role.PARAM):
            sig.ptr(f"in:{n.name}", ident(n.name))
            sig.strides(f"in:{n.name}", ident(n.name), (["#t"] if n.role is Role.SEQ else [])
                        + list(n.dims))
    for _o, cot in backward.cotangents:
        sig.ptr(f"in:{cot}", ident(cot))
        sig.strides(f"in:{cot}", ident(cot), ["#t"] + list(bg[cot].dims))
    for s in k.state_names:
        state_ptrs(sig, k, s, "chk", "chk", True)


def backward_source(k: Graph, kb: tuple[Block, ...], bg: Graph, bb: tuple[Block, ...],
                    backward, tiling: Tiling, name: str, batch: str | None = None,
                    saved: dict[str, str] | None = None) -> tuple[str, Signature, dict]:
    """The backward kernel: per chunk, in the opposite order to the forward, recompute the
    forward states from the chunk's checkpoint, then run the adjoint step `bg` as a reverse scan.
    With `saved` (see saved_states) the forward states are read from the saved outputs instead
    of recomputed.

    Time is cut into segments as in `forward_source`: with several, a SUMMARY pass scans the
    adjoint of each segment from zero and stores its end value and decay, and the second pass
    joins the segments processed before its own (those later in time, for a forward scan) from
    the final state's gradient. Param gradients get one slot per segment (summed by the host).

    Returns the source, the signature and, per gradient output, the dims summed only over one
    program's share (the host adds those partial sums up).

    Long on purpose: it writes one kernel top to bottom, and each stage reads the writers,
    values and signature the others fill; split, each part would take most of them."""
    sig, t = Signature(), tiling
    pre, loop, post = Writer(), Writer(depth=2), Writer()
    vals = Values(bg, t, loop)
    fstates = dict(backward.forward_states)
    segmented = independent(bg, bb)
    backward_inputs(sig, k, bg, backward)
    saved = saved or {}
    for o in saved.values():
        sig.ptr(f"saved:{o}", f"{ident(o)}_sv")
        sig.strides(f"saved:{o}", f"{ident(o)}_sv", ["#t"] + list(k[o].dims))
    for s, adj in backward.adjoints:
        state_ptrs(sig, bg, adj, "dhT", "dhT", False)
        state_ptrs(sig, k, s, "dh0", "dh0", False)
        _summary_ptrs(sig, bg, adj)
    prologue(pre, t)
    at = len(pre.lines)
    pre("seg = pid  # the segment of time this program scans")
    direction(pre, "REVERSE", "f")
    direction(pre, "BACK", "b")
    # time-invariant work, shared by the recompute and the adjoint step
    pvals = Values(bg, t, pre)
    for n in bg.inputs():
        if n.role is Role.PARAM:
            pvals.load(n, False)
    for n in k.inputs(Role.INDEX) + bg.inputs(Role.INDEX):  # the recompute may need one too
        if n.name not in pvals:
            pvals.index(n)
    varying = time_varying(bg)
    hoisted = [n.name for n in bg.nodes if not isinstance(n, Input) and n.name not in varying
               and n.name not in bg.state_dependent]
    ChunkBody(bg, (), pvals, pre, "REVERSE", "f").run(hoisted)
    vals.vals.update(pvals.vals)
    body_f = ChunkBody(k, kb, vals, loop, "REVERSE", "f")
    body_b = ChunkBody(bg, bb, vals, loop, "BACK", "b", allow_partial=True)
    for s, adj in backward.adjoints:
        pre(f"{body_b.state_var(adj)} = tl.zeros({t.shape(k[s].dims, False)}, tl.float32)")
    pre("if not SUMMARY:")
    pre.indent()
    for s, adj in backward.adjoints:
        pre("if HAS_DHT:")
        pre(f"    {body_b.state_var(adj)} += tl.load({ident(adj)}_dhT_ptr + "
            f"{state_offset(t, bg, adj, 'dhT', None)}"
            f"{guard(mask_of(t, k[s].dims, False, carried=True))})"
            ".to(tl.float32)", f"gradient of the final {s}")
    if segmented:
        _join_before(pre, bg, bb, t, body_b.state_var, backward=True)
    pre.dedent()
    if segmented:
        pre("if SUMMARY:")
        pre.indent()
        _decay_init(pre, bg, bb, t)
        pre.dedent()
    head = Writer()
    head("n_chunks = tl.cdiv(T, TC)")
    head("seg_ch = SEG_LEN // TC")
    head("c0 = seg * seg_ch")
    head("c1 = tl.minimum(c0 + seg_ch, n_chunks)")
    head("for ci in tl.range(0, c1 - c0, num_stages=STAGES):")
    head.indent()
    head("c = c1 - 1 - ci")
    head("if REVERSE:")
    head("    c = c0 + ci")
    head("t = c * TC + o_t")
    head("m_t = t < T")
    head("t64 = t.to(tl.int64)")
    for s in k.state_names:
        sv = body_f.state_var(s)
        loop(f"{sv} = tl.load({ident(s)}_chk_ptr + {state_offset(t, k, s, 'chk', 'c')}"
             f"{guard(mask_of(t, k[s].dims, False, carried=True))})", f"checkpoint of {s}")
    for n in bg.inputs(Role.SEQ):
        if n.name not in fstates.values():
            vals.load(n, True)
    if saved:  # the states before each step, from the saved outputs
        loop("ts = t - 1  # the step before, in the scan's direction")
        loop("if REVERSE:")
        loop("    ts = t + 1")
        loop("ts64 = ts.to(tl.int64)")
        for s, o in saved.items():
            var = _saved_old(loop, t, k, s, o, body_f.state_var(s))
            vals.set(s, Val(var, frozenset(k[s].dims), True))
    else:
        need = set()
        for n in k.new_state_names:
            need |= {a for a in nx.ancestors(k.nx, n) if not isinstance(k[a], Input)} | {n}
        body_f.run([n.name for n in k.nodes if n.name in need])
        for s, new in k.states:
            if s in {f for f, _ in backward.forward_states}:
                body_f.old(s, new)
    body_b.run([n.name for n in bg.nodes if not isinstance(n, Input)])
    if segmented:
        loop("if SUMMARY:")
        loop.indent()
        _decay_step(loop, bb, body_b, t)
        loop.dedent()
    loop("if not SUMMARY:")
    loop.indent()
    partials: dict[str, list[str]] = {}
    accs = []
    for (x, out) in backward.seq_grads + backward.param_grads:
        v = vals[out]
        parts = partial_axes(v, t)
        atomic = atomic_over(v.partial, t)
        partials[out] = (parts, atomic)
        key, var = f"grad:{x}", f"{ident(out)}_g"
        sig.ptr(key, var)
        timed = k[x].role is Role.SEQ
        sig.strides(key, var, ([] if timed else ["#c"]) + [f"#p_{d}" for d in parts]
                    + (["#t"] if timed else []) + list(k[x].dims))
        terms = ([] if timed else [f"{wide('seg')} * {var}_sc"])
        terms += [f"{partial_index(d, t)} * {var}_s__p_{d}" for d in parts]
        terms += index_terms(t, k[x].dims, var, timed)
        off = " + ".join(terms) or "0"
        dims = k[x].dims
        if timed:
            loop(store_line(var, off, vals.full(v, dims, True),
                        owned(mask_of(t, dims, True), dims, v.partial, t), atomic), out)
        else:
            acc = f"{var}_acc"
            pre(f"{acc} = tl.zeros({t.shape(dims, False)}, tl.float32)")
            loop(f"{acc} += tl.sum(tl.where(m_t, {vals.full(v, dims, True)}, 0.0), "
                 f"axis={t.taxis}, "
                 "keep_dims=True)", out)
            accs.append((acc, var, off, dims, atomic,
                         owned(mask_of(t, dims, False), dims, v.partial, t)))
    loop.dedent()
    if segmented:
        post("if SUMMARY:")
        post.indent()
        _summary_store(post, bg, bb, t, body_b.state_var)
        post.dedent()
    post("last = seg == 0  # the segment the adjoint scan ends in")
    post("if REVERSE:")
    post("    last = seg == N_SEG - 1")
    post("if not SUMMARY:")
    post.indent()
    for acc, var, off, _dims, atomic, mask in accs:
        post(store_line(var, off, acc, mask, atomic))
    for s, adj in backward.adjoints:
        m = mask_of(t, k[s].dims, False, carried=True)
        m = "last" if m == "None" else f"{m} & last"
        post(f"tl.store({ident(s)}_dh0_ptr + ONE + {state_offset(t, k, s, 'dh0', None)}, "
             f"{body_b.state_var(adj)}, mask={m})", f"gradient of the initial {s}")
    post.dedent()
    for d in t.space:
        sig.params.append(("size", d, f"size_{d}"))
    sig.params.append(("size", "T", "T"))
    sig.params.append(("size", "N_SEG", "N_SEG"))
    sig.params.append(("size", "SEG_LEN", "SEG_LEN"))
    emit_varlen(pre, at, sig, t, batch)
    body = Writer(lines=pre.lines + head.lines + loop.lines + post.lines)
    consts = ["HAS_DHT", "REVERSE", "BACK", "SUMMARY", "TC", "STAGES", "VARLEN"] + [
        f"BLOCK_{d}" for d in t.tile]
    src = kernel_text(name, sig, consts, body)
    return src, sig, partials
