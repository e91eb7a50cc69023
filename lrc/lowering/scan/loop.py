"""Kernel emitters for transitions taken one token at a time: the decode step (any linear
transition, evaluated directly) and the one-token loop over time that trains specs whose
transition a scan cannot take (DPLR, dense mixing, shift registers, a running max)."""
from __future__ import annotations

from ...ir.dims import Role
from ...ir.graph import Graph
from ...ir.nodes import Input
from ...kernels.abi import Signature
from ...kernels.writer import Writer, ident
from ...passes.analysis import time_varying
from .body import ChunkBody, kernel_text, prologue, state_offset, state_ptrs
from .emit import Tiling, Val, Values, guard, index_terms, mask_of
from .forward import atomic_over, owned, partial_axes, partial_index, store_line


def step_source(k: Graph, tiling: Tiling, name: str) -> tuple[str, Signature]:
    """The decode kernel: one token; every node evaluated directly, any linear transition."""
    sig, w, t = Signature(), Writer(), tiling
    vals = Values(k, t, w)
    for n in k.inputs():
        if n.role in (Role.SEQ, Role.PARAM):
            sig.ptr(f"in:{n.name}", ident(n.name))
            sig.strides(f"in:{n.name}", ident(n.name), list(n.dims))
    for o in k.outputs:
        sig.ptr(f"out:{o}", ident(o))
        sig.strides(f"out:{o}", ident(o), list(k[o].dims))
    for s in k.state_names:
        state_ptrs(sig, k, s, "h0", "h0", False)
        state_ptrs(sig, k, s, "hT", "hT", False)
    for d in t.space:
        sig.params.append(("size", d, f"size_{d}"))
    prologue(w, t)
    body = ChunkBody(k, (), vals, w, "False", "s")
    # ORDER (chosen per shape on the GPU, see _after_state): the states' loads first, the
    # inputs held back until they arrive; else the inputs' loads first, nothing held
    w("if ORDER:")
    _load_states(w.indent(), k, t, body, "state")
    w.dedent()
    loaded = []
    for n in k.inputs():
        if n.role in (Role.SEQ, Role.PARAM):
            loaded.append(vals.load(n, False))
        elif n.role is Role.INDEX:
            vals.index(n)
    w("if not ORDER:")
    _load_states(w.indent(), k, t, body, "state")
    w.dedent()
    for s in k.state_names:
        vals.set(s, Val(body.state_var(s), frozenset(k[s].dims), False))
    _after_state(w, k, t, body, loaded)
    body.run([n.name for n in k.nodes if not isinstance(n, Input)])
    for o in k.outputs:
        v, dims = vals[o], k[o].dims
        off = " + ".join(index_terms(t, dims, ident(o), False)) or "0"
        w(f"tl.store({ident(o)}_ptr + ONE + {off}, {vals.full(v, dims, False)}"
          f".to({ident(o)}_ptr.dtype.element_ty), mask={mask_of(t, dims, False)})", o)
    for s, new in k.states:
        w(f"tl.store({ident(s)}_hT_ptr + ONE + {state_offset(t, k, s, 'hT', None)}, "
          f"{vals.full(vals[new], k[s].dims, False)}.to({ident(s)}_hT_ptr.dtype.element_ty), "
          f"mask={mask_of(t, k[s].dims, False)})", f"new {s}")
    consts = ["HAS_H0", "ORDER", "TC"] + [f"BLOCK_{d}" for d in t.tile]
    return kernel_text(name, sig, consts, w), sig


def _load_states(w: Writer, g: Graph, t: Tiling, body: ChunkBody, what: str) -> None:
    """Each state's tile from its h0 pointer (zeros without HAS_H0), in float32."""
    for s in g.state_names:
        sv, dims = body.state_var(s), g[s].dims
        w(f"{sv} = tl.zeros({t.shape(dims, False)}, tl.float32)")
        w("if HAS_H0:")
        w(f"    {sv} += tl.load({ident(s)}_h0_ptr + {state_offset(t, g, s, 'h0', None)}"
          f"{guard(mask_of(t, dims, False))}).to(tl.float32)", f"{what} {s}")


def _after_state(w: Writer, k: Graph, t: Tiling, body: ChunkBody, loaded: list[Val]) -> None:
    """Hold back the first uses of the per-row inputs until the state has arrived (ORDER).

    ptxas starts the work on the inputs that head the longest chain (Mamba-1's softplus of
    dt + dt_bias) as soon as they are loaded and issues the state's loads after it; cold in
    HBM, as between tokens, the step then waits two memory latencies in a row. An input
    missing only the state's innermost tile axis takes a data dependency (`_after`, one
    `prmt` that keeps its bytes) on the state's first value along that axis, which is in
    the same thread, so the step waits one memory latency (Mamba-1's step is a little
    faster). It is a choice, made per shape (tune.step_order): Triton lays out the
    tiles by the order of the loads, and the state's first can cost many more registers and
    barriers, and time (decode_hpn's P64 N128 step). ORDER is off under the interpreter (no
    inline assembly there)."""
    lines = []
    for s in k.state_names:
        dims = set(k[s].dims) & set(t.tile)
        if len(dims) < 2:
            continue
        inner = max(dims, key=t.axis)
        deps = [v for v in loaded if v.dims & set(t.tile) == dims - {inner}]
        if deps:
            dep = f"{body.state_var(s)}_first"
            lines.append(f"{dep} = tl.reduce({body.state_var(s)}, {t.axis(inner)}, _first, "
                         "keep_dims=True)")
            lines += [f"{v.var} = _after({v.var}, {dep})" for v in deps]
            loaded = [v for v in loaded if v not in deps]
    if lines:
        w("if HAS_H0 and ORDER:  # the state's loads before any work on these (_after_state)")
        for line in lines:
            w("    " + line)


def loop_source(g: Graph, tiling: Tiling, name: str, backward=None
                ) -> tuple[str, Signature, dict]:
    """A kernel that steps through time one token at a time, the state in registers: for
    transitions a scan cannot take (dense or low-rank mixing, shift registers).

    Forward (`backward` None): `g` is the kernel graph; the state before every step is saved,
    because its backward reads it. Backward: `g` is the adjoint step (`backward.graph`), run
    from the last step to the first; it reads those saved states as inputs and accumulates
    Param gradients over time."""
    sig, t = Signature(), tiling
    pre, loop, post = Writer(), Writer(depth=2), Writer()
    vals = Values(g, t, loop)
    grads = dict(backward.seq_grads + backward.param_grads) if backward else {}
    for n in g.inputs():
        if n.role in (Role.SEQ, Role.PARAM):
            sig.ptr(f"in:{n.name}", ident(n.name))
            sig.strides(f"in:{n.name}", ident(n.name), (["#t"] if n.role is Role.SEQ else [])
                        + list(n.dims))
    if backward is None:
        for o in g.outputs:
            sig.ptr(f"out:{o}", ident(o))
            sig.strides(f"out:{o}", ident(o), ["#t"] + list(g[o].dims))
    for s in g.state_names:
        state_ptrs(sig, g, s, "h0", "h0", False)
        state_ptrs(sig, g, s, "hT", "hT", False)
        if backward is None:
            var = f"{ident(s)}_all"
            sig.ptr(f"all:{s}", var)
            sig.strides(f"all:{s}", var, ["#t"] + list(g[s].dims))
    prologue(pre, t)
    pre("m_t = ONE == 0")
    body = ChunkBody(g, (), vals, loop, "False", "l", allow_partial=backward is not None)
    pvals = Values(g, t, pre)
    for n in g.inputs():
        if n.role is Role.PARAM:
            pvals.load(n, False)
        elif n.role is Role.INDEX:
            pvals.index(n)
    varying = time_varying(g)
    hoisted = [n.name for n in g.nodes if not isinstance(n, Input) and n.name not in varying]
    ChunkBody(g, (), pvals, pre, "False", "l").run(hoisted)
    vals.vals.update(pvals.vals)
    _load_states(pre, g, t, body, "initial")
    head = Writer()
    head("for ti in range(0, T):")
    head("    tt = ti")
    head("    if REVERSE:")
    head("        tt = T - 1 - ti")
    head("    t64 = (ONE + tt).to(tl.int64)")
    for s in g.state_names:
        vals.set(s, Val(body.state_var(s), frozenset(g[s].dims), False))
        if backward is None:
            off = state_offset(t, g, s, "all", None)
            loop(f"tl.store({ident(s)}_all_ptr + ONE + t64 * {ident(s)}_all_st + {off}, "
                 f"{body.state_var(s)}, mask={mask_of(t, g[s].dims, False)})",
                 f"{s} before this step")
    for n in g.inputs(Role.SEQ):
        vals.load(n, True)
    body.run([n.name for n in g.nodes if not isinstance(n, Input) and n.name in varying])
    partials: dict[str, list[str]] = {}
    outs = [(o, None) for o in g.outputs] if backward is None else [
        (out, x) for x, out in grads.items()]
    for o, x in outs:
        v, dims = vals[o], g[o].dims
        if backward is None:
            off = " + ".join(index_terms(t, dims, ident(o), True))
            loop(f"tl.store({ident(o)}_ptr + ONE + {off}, {vals.full(v, dims, True)}"
                 f".to({ident(o)}_ptr.dtype.element_ty), mask={mask_of(t, dims, True)})", o)
            continue
        parts = partial_axes(v, t)
        atomic = atomic_over(v.partial, t)
        partials[o] = (parts, atomic)
        timed = g[x].role is Role.SEQ
        key, var = f"grad:{x}", f"{ident(o)}_g"
        sig.ptr(key, var)
        sig.strides(key, var, [f"#p_{d}" for d in parts] + (["#t"] if timed else [])
                    + list(dims))
        terms = [f"{partial_index(d, t)} * {var}_s__p_{d}" for d in parts]
        off = " + ".join(terms + index_terms(t, dims, var, timed)) or "0"
        if timed:
            loop(store_line(var, off, vals.full(v, dims, True),
                        owned(mask_of(t, dims, True), dims, v.partial, t), atomic), o)
        else:
            acc = f"{var}_acc"
            pre(f"{acc} = tl.zeros({t.shape(dims, False)}, tl.float32)")
            loop(f"{acc} += {vals.full(v, dims, False)}", o)
            post(store_line(var, off, acc, owned(mask_of(t, dims, False), dims, v.partial, t),
                        atomic))
    for s, new in g.states:
        loop(f"{body.state_var(s)} = {vals.full(vals[new], g[s].dims, False)}", f"{s} <- {new}")
    for s in g.state_names:
        post(f"tl.store({ident(s)}_hT_ptr + ONE + {state_offset(t, g, s, 'hT', None)}, "
             f"{body.state_var(s)}, mask={mask_of(t, g[s].dims, False)})", f"final {s}")
    for d in t.space:
        sig.params.append(("size", d, f"size_{d}"))
    sig.params.append(("size", "T", "T"))
    text = Writer(lines=pre.lines + head.lines + loop.lines + post.lines)
    consts = ["HAS_H0", "REVERSE", "TC"] + [f"BLOCK_{d}" for d in t.tile]
    return kernel_text(name, sig, consts, text), sig, partials
