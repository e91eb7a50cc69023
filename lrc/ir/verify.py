"""The IR checker: run after tracing and after every pass; tests feed it broken graphs too."""
from __future__ import annotations

import sympy as sp

from ..errors import IRError
from .dims import Role
from .functions import is_complex, supported
from .graph import Graph
from .nodes import Input, Map, Rename, Shift, Sum


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise IRError(msg)


def verify(g: Graph) -> Graph:
    """Check every invariant of `g`; return it unchanged or raise IRError naming the node."""
    seen: dict[str, object] = {}
    pos = {d: i for i, d in enumerate(g.dims)}
    _check(len(set(g.dims)) == len(g.dims), f"duplicate dims in {g.dims}")
    _check(g.time not in pos, f"time dim {g.time!r} listed among dims")
    aliases = dict(g.aliases)
    for node in g.nodes:
        where = f"node {node.name!r}"
        _check(node.name not in seen, f"{where}: defined twice")
        for a in node.args:
            _check(a in seen, f"{where}: uses {a!r} before it is defined (or it does not exist)")
        _check(all(d in pos for d in node.dims), f"{where}: dims {node.dims} not all in {g.dims}")
        _check(list(node.dims) == sorted(node.dims, key=lambda d: pos[d])
               and len(set(node.dims)) == len(node.dims),
               f"{where}: dims {node.dims} not in canonical order {g.dims}")
        if isinstance(node, Input):
            _check(isinstance(node.role, Role), f"{where}: bad role {node.role!r}")
            _check(node.part in ("", "re", "im"), f"{where}: bad part {node.part!r}")
            _check(not (node.part and node.complex), f"{where}: a part must be real")
            _check(bool(node.part) or node.complex == node.annotation.complex,
                   f"{where}: complex flag disagrees with {node.annotation!r}")
            if node.role is not Role.INDEX:
                want = tuple(sorted((d for d in node.annotation.dims if d != g.time),
                                    key=lambda d: pos[d]))
                _check(node.dims == want, f"{where}: dims {node.dims} disagree with "
                                          f"{node.annotation!r}")
        elif isinstance(node, Map):
            _verify_map(node, seen, where)
        else:
            arg = seen[node.arg]
            _check(node.complex == arg.complex, f"{where}: complex flag differs from its argument")
            if isinstance(node, (Sum, Shift)):
                _check(node.dim in arg.dims, f"{where}: dim {node.dim!r} not in {arg.dims}")
            if isinstance(node, Sum):
                _check(node.dims == tuple(d for d in arg.dims if d != node.dim),
                       f"{where}: dims {node.dims} are not {arg.dims} without {node.dim!r}")
            elif isinstance(node, Shift):
                _check(node.dims == arg.dims, f"{where}: dims {node.dims} != {arg.dims}")
            elif isinstance(node, Rename):
                mp = dict(node.mapping)
                _check(all(a in arg.dims for a in mp), f"{where}: renames dims not in {arg.dims}")
                renamed = [mp.get(d, d) for d in arg.dims]
                _check(sorted(renamed) == sorted(node.dims) and len(set(renamed)) == len(renamed),
                       f"{where}: dims {node.dims} are not {arg.dims} renamed by {mp}")
                for old, new in mp.items():
                    _check(new == old or aliases.get(new) is not None or
                           any(new in i.dims for i in g.inputs()),
                           f"{where}: renamed dim {new!r} has no size source")
        seen[node.name] = node
    names = set(seen)
    params = tuple(dict.fromkeys(n.arg for n in g.inputs() if n.role in (Role.SEQ, Role.PARAM)))
    _check(params == g.params, f"params {g.params} are not the Seq/Param inputs {params}")
    for s, new in g.states:
        _check(s in names and seen[s].role is Role.STATE, f"state {s!r} is not a State input")
        _check(new in names and isinstance(seen[new], Map), f"new state {new!r} is not a Map")
        _check(seen[new].dims == seen[s].dims,
               f"new state {new!r} dims {seen[new].dims} != state dims {seen[s].dims}")
        _check(seen[new].complex == seen[s].complex, f"new state {new!r}: complex flag differs")
    _check(len(g.states) == len(g.inputs(Role.STATE)), "every State input needs a new state")
    _check(set(g.state_names) == {n.name for n in g.inputs(Role.STATE)},
           "g.states must list every State input once")
    _check(len(g.outputs) == len(g.out_axes), "outputs and out_axes disagree")
    for o, axes in zip(g.outputs, g.out_axes):
        _check(o in names, f"output {o!r} does not exist")
        _check(not seen[o].complex, f"output {o!r} is complex")
        flat = [d for a in axes for d in a]
        _check(sorted(flat) == sorted(set(seen[o].dims) | {g.time}),
               f"output {o!r}: layout {axes} does not hold dims {seen[o].dims} + time")
    return g


def _verify_map(node: Map, seen: dict, where: str) -> None:
    bad = supported(node.expr)
    _check(not bad, f"{where}: no rule for {bad[:1]}")
    arg_dims: set[str] = set()
    for sym in node.expr.free_symbols:
        arg = seen[sym.name]
        arg_dims |= set(arg.dims)
        _check(sym == sp.Symbol(sym.name, real=True) if not arg.complex
               else sym == sp.Symbol(sym.name),
               f"{where}: symbol {sym} has assumptions other than lrc's for {arg.name!r}")
    _check(arg_dims <= set(node.dims),
           f"{where}: dims {node.dims} miss {arg_dims - set(node.dims)}")
    _check(node.complex or not is_complex(node.expr), f"{where}: real node with complex value")
