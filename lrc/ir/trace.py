"""`@lrc.recurrence`: trace a step function into a Graph.

The step runs once on symbolic tensors, recording `TraceOp`s. When it returns, the op tree is
cut into IR nodes at the points that need one (inputs, sums, renames, shifts, the new states,
the outputs, and pointwise work shared by several of those); between cuts, the ops become one
sympy expression per `Map` node.
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sympy as sp

from ..errors import SpecError, Src
from .dims import Annotation, Role
from .graph import Axes, Graph, toposort
from .nodes import Input, Map, Node, Rename, Shift, Sum, symbol
from .tensor import _TRACER, SymTensor, TraceOp, _fmt

_LEAF_KINDS = ("input", "sum", "rename", "shift")


class Tracer:
    """What a trace in progress knows: the dims in canonical order, renames, the inputs."""

    def __init__(self, time: str, annotations: dict[str, Annotation]):
        self.time = time
        order: list[str] = []
        for role in (Role.SEQ, Role.STATE, Role.PARAM):
            for ann in annotations.values():
                if ann.role is role:
                    order += [d for d in ann.dims if d != time and d not in order]
        self.dims = order
        self.aliases: set[tuple[str, str]] = set()   # every (new, old) pair: sizes must agree
        self.index_ops: dict[str, TraceOp] = {}

    def order(self, dims: Iterable[str]) -> tuple[str, ...]:
        pos = {d: i for i, d in enumerate(self.dims)}
        return tuple(sorted(set(dims), key=lambda d: pos[d]))

    def add_alias(self, new: str, old: str) -> None:
        if new not in self.dims:
            self.dims.append(new)
        if new != old:
            self.aliases.add((new, old))

    def index_op(self, dim: str) -> TraceOp:
        if dim not in self.index_ops:
            self.index_ops[dim] = TraceOp("input", (dim,), False, name=f"#{dim}")
        return self.index_ops[dim]


@dataclass(frozen=True)
class Spec:
    """A traced recurrence: the step function and its Graph. Compile it with `lrc.compile`."""

    name: str
    fn: Callable[..., Any]
    graph: Graph

    def __repr__(self) -> str:
        return f"<lrc.Spec {self.name}>"

    def __call__(self, *args, **kwargs):
        raise TypeError(f"a Spec is not callable; use lrc.compile({self.name})(...)")

    def __reduce__(self):
        """Pickled by reference (module and qualified name) where importing finds this very
        spec, else by value (the name and the traced graph; the step function stays behind)."""
        where = importable(self)
        if where is not None:
            return _spec_by_reference, where
        return _spec_by_value, (self.name, self.graph)


def importable(spec: Spec) -> tuple[str, str] | None:
    """(module, qualified name) under which an import finds `spec` itself, else None."""
    import sys

    module, qualname = getattr(spec.fn, "__module__", None), getattr(spec.fn, "__qualname__", "")
    if not module or "<" in qualname or module == "__main__":
        return None
    try:
        return (module, qualname) if _lookup(sys.modules[module], qualname) is spec else None
    except (KeyError, AttributeError):
        return None


def _lookup(obj: Any, qualname: str) -> Any:
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _spec_by_reference(module: str, qualname: str) -> Spec:
    """The spec `module.qualname`, imported (what a Spec pickled by reference loads as)."""
    import importlib

    spec = _lookup(importlib.import_module(module), qualname)
    if not isinstance(spec, Spec):
        raise TypeError(f"{module}.{qualname} is {type(spec).__name__}, not an lrc Spec")
    return spec


def _spec_by_value(name: str, graph: Graph) -> Spec:
    """A spec rebuilt from its traced graph (what a Spec pickled by value loads as)."""

    def step(*args, **kwargs):
        raise TypeError(f"the step function of {name} was not pickled (its graph was)")

    step.__name__ = step.__qualname__ = name
    return Spec(name, step, graph)


def recurrence(fn: Callable[..., Any] | None = None, *, time: str = "t",
               name: str | None = None) -> Any:
    r"""Trace one time step of a linear recurrence into a `Spec` (compile it with `lrc.compile`).

    The decorated function runs once, when decorated, on symbolic tensors; what it computes
    becomes the spec's graph (`spec.graph`). It has this form:

        @lrc.recurrence
        def step(x: Seq("b t d"), ..., p: Param("d"), ..., h: State("b d"), ...):
            ...
            return outputs, new_states

    Where:
        - a ``Seq`` argument is a sequence input at step t: a symbolic tensor over its
          annotated dims without the time dim.
        - a ``Param`` argument is a time-independent input (weights, decay rates).
        - a ``State`` argument is the state before the step, h_{t-1}.
        - ``outputs`` is one symbolic tensor or a tuple of them: real, any function of the
          inputs, Params, old states and new states; `y` or `y0, y1, ...` in the compiled layer.
        - ``new_states`` is one symbolic tensor per State argument (a tuple if several, in
          declaration order), each over at most its State's dims and affine in the old states.

    Inside the step a symbolic tensor is a scalar per index of its dims: + - * / broadcast by
    dim name, `.sum("n")` reduces a non-time dim, `.rename(n="m")` renames one (matrix mixing),
    `.real` / `.imag` split complex values, and `lrc.exp`, `log`, `softplus`, `sigmoid`,
    `silu`, `tanh`, `sqrt`, `abs`, `maximum`, `minimum`, `where`, ... and the discretizations
    `lrc.zoh`, `bilinear`, `euler`, `mamba_mix` build expressions. The non-state arguments, in
    the order written, are the compiled layer's positional arguments; States are passed as
    `initial_state=` / `state=` instead.

    Args:
        fn (Callable): the step. Every argument annotated Seq(...), Param(...) or State(...);
            at least one Seq (it sets the length) and one State; no *args or **kwargs.
        time (str): the name of the time dim in Seq annotations. Default: "t".
        name (str, optional): the spec's name, used by the plan, kernel names and errors.
            Default: fn.__name__.

    Returns:
        Spec: the traced recurrence. Called with keywords only (`@lrc.recurrence(time="l")`),
        a decorator that returns one.

    Raises:
        SpecError: at trace time, naming the argument, term and source line: a missing or
            wrong annotation, a Param or State with the time dim, a new state that is not
            affine in the old states (`tanh(h)`, `h * h`), a new state with a dim its State
            lacks, a complex output or state not declared complex, an unknown dim.

    Shape legend (the example):
        - b: batch;  t: time;  d: channels;  n: state size per channel.

    Example::

        >>> import lrc
        >>> from lrc import Seq, Param, State, exp, softplus
        >>> @lrc.recurrence
        ... def mamba1(u: Seq("b t d"), dt: Seq("b t d"), B: Seq("b t n"), C: Seq("b t n"),
        ...            A: Param("d n"), D: Param("d"), h: State("b d n")):
        ...     delta = softplus(dt)
        ...     h = exp(delta * A) * h + delta * B * u      # affine in h
        ...     return (C * h).sum("n") + D * u, h          # (outputs, new states)
        >>> mamba1
        <lrc.Spec mamba1>
        >>> mamba1.graph.params                               # the layer's arguments, in order
        ('u', 'dt', 'B', 'C', 'A', 'D')
    """
    if fn is None:
        return lambda f: recurrence(f, time=time, name=name)
    return Spec(name or fn.__name__, fn, trace(fn, time=time, name=name or fn.__name__))


def _def_src(fn: Callable[..., Any]) -> Src:
    code = fn.__code__
    try:
        lines, start = inspect.getsourcelines(fn)
        text = next((ln.strip() for ln in lines if ln.strip().startswith("def ")), lines[0].strip())
    except (OSError, TypeError):
        text, start = fn.__name__, code.co_firstlineno
    return Src(code.co_filename, start, text)


def _annotations(fn: Callable[..., Any], time: str) -> dict[str, Annotation]:
    src = _def_src(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception as e:  # an annotation string that does not evaluate
        raise SpecError(f"cannot read the annotations of {fn.__name__}: {e}", src) from e
    out: dict[str, Annotation] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SpecError(f"argument {p.name!r}: *args and **kwargs are not allowed in a step",
                            src)
        ann = hints.get(p.name)
        if not isinstance(ann, Annotation):
            raise SpecError(f"argument {p.name!r} needs an annotation Seq(...), Param(...) or "
                            f"State(...), got {ann!r}", src)
        flat = ann.dims
        if ann.role is Role.SEQ:
            if time not in flat:
                raise SpecError(f"argument {p.name!r}: {ann!r} has no time dim {time!r}", src)
            if (time,) not in ann.axes:
                raise SpecError(f"argument {p.name!r}: the time dim {time!r} cannot be grouped "
                                f"in {ann!r}", src)
        elif time in flat:
            raise SpecError(f"argument {p.name!r}: {ann!r} has the time dim {time!r}; only Seq "
                            f"arguments vary in time", src)
        out[p.name] = ann
    roles = [a.role for a in out.values()]
    if Role.SEQ not in roles:
        raise SpecError("a step needs at least one Seq(...) argument (it sets the length)", src)
    if Role.STATE not in roles:
        raise SpecError("a step needs at least one State(...) argument", src)
    return out


def trace(fn: Callable[..., Any], *, time: str = "t", name: str | None = None) -> Graph:
    """Run `fn` on symbolic tensors and build its Graph; refuse specs not affine in the state."""
    from .linearity import check_linear
    from .verify import verify

    anns = _annotations(fn, time)
    tracer = Tracer(time, anns)
    ops = {a: TraceOp("input", tracer.order(d for d in ann.dims if d != time), ann.complex,
                      name=a) for a, ann in anns.items()}
    token = _TRACER.set(tracer)
    try:
        params = inspect.signature(fn).parameters
        kwonly = {a for a, p in params.items() if p.kind is p.KEYWORD_ONLY}
        ret = fn(*(SymTensor(ops[a]) for a in anns if a not in kwonly),
                 **{a: SymTensor(ops[a]) for a in kwonly})
        outs, news = _unpack(ret, anns, fn)
        g = build_graph(name or fn.__name__, tracer, anns, ops, outs, news)
    finally:
        _TRACER.reset(token)
    g = check_linear(g)
    verify(g)
    return g


def _unpack(ret: Any, anns: dict[str, Annotation], fn) -> tuple[list[TraceOp], list[TraceOp]]:
    src = _def_src(fn)
    states = [a for a, ann in anns.items() if ann.role is Role.STATE]
    if not (isinstance(ret, tuple) and len(ret) == 2):
        raise SpecError("the step must return (outputs, new_states), e.g. `return y, h`", src)
    outs, news = (list(x) if isinstance(x, (tuple, list)) else [x] for x in ret)
    if len(news) != len(states):
        raise SpecError(f"the step returned {len(news)} new states for {len(states)} State "
                        f"arguments ({', '.join(states)})", src)
    if not outs:
        raise SpecError("the step returned no outputs", src)
    out_ops = []
    for i, o in enumerate(outs):
        if not isinstance(o, SymTensor):
            raise SpecError(f"output {i} is {type(o).__name__}, not a symbolic tensor", src)
        if o.op.boolean:
            raise SpecError(f"output {i} is a comparison; use lrc.where", o.op.src or src)
        if o.op.complex:
            raise SpecError(f"output {i} is complex: outputs are real; take .real "
                            "(or 2 * (...).real for a conjugate pair)", o.op.src or src)
        out_ops.append(o.op)
    new_ops = []
    for s, v in zip(states, news):
        ann = anns[s]
        if isinstance(v, SymTensor):
            op = v.op
        elif isinstance(v, (int, float, complex)):
            from .tensor import lift
            op = lift(v, src)
        else:
            raise SpecError(f"new state {s!r} is {type(v).__name__}, not a symbolic tensor", src)
        extra = [d for d in op.dims if d not in ann.dims]
        if extra:
            raise SpecError(f"new state {s!r} has dim {extra[0]!r} but {ann!r} has dims "
                            f"{_fmt(ann.dims)}: reduce it with .sum({extra[0]!r})", op.src or src)
        if op.complex and not ann.complex:
            raise SpecError(f"new state {s!r} is complex but {ann!r} is real: declare "
                            f"State(..., complex=True) or take .real", op.src or src)
        if op.boolean:
            raise SpecError(f"new state {s!r} is a comparison; use lrc.where", op.src or src)
        if ann.complex and not op.complex:
            # a real value for a complex state: nodes reading the new state read it as complex
            op = TraceOp("fn", op.dims, True, (op,), fn=lambda a: a, src=op.src)
        new_ops.append(op)
    return out_ops, new_ops


def _walk(root: TraceOp, stop: set[TraceOp]) -> Iterable[TraceOp]:
    """Ops reachable from root's arguments without passing through `stop`."""
    seen: set[int] = set()
    todo = list(root.args)
    while todo:
        op = todo.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        yield op
        if op not in stop:
            todo.extend(op.args)


def _all_ops(roots: Iterable[TraceOp]) -> list[TraceOp]:
    seen: dict[int, TraceOp] = {}
    todo = list(roots)
    while todo:
        op = todo.pop()
        if id(op) not in seen:
            seen[id(op)] = op
            todo.extend(op.args)
    return list(seen.values())


# what sympy makes of 0 * inf, inf - inf (nan) and log(0), 1/0 (zoo): no value to compute
_UNDEFINED = (sp.nan, sp.zoo)


def build_graph(name: str, tracer: Tracer, anns: dict[str, Annotation],
                inputs: dict[str, TraceOp], outs: list[TraceOp], news: list[TraceOp]) -> Graph:
    """Cut the traced op tree into IR nodes (see the module docstring)."""
    state_args = [a for a, ann in anns.items() if ann.role is Role.STATE]
    every = _all_ops(outs + news)
    # where the tree is cut, and the name of the node on the far side of each cut
    leaf: dict[TraceOp, str] = {op: op.name for op in every if op.kind == "input"}
    fresh = iter(f"%{i}" for i in range(10**9))
    for op in every:
        if op.kind in ("sum", "rename", "shift"):
            leaf[op] = next(fresh)
            arg = op.args[0]
            if arg.kind in ("fn", "const") and arg not in leaf:
                leaf[arg] = next(fresh)
    new_name = {}  # ops whose users read the new state's node (an unchanged state stays itself)
    for s, op in zip(state_args, news):
        # a value broadcast to the state's dims stays itself for its other users
        if op.kind != "input" and op.dims == tracer.order(anns[s].dims):
            new_name.setdefault(op, f"{s}'")
    # pointwise work reached from several Map nodes becomes a Map node of its own
    while True:
        maps = set(news) | set(outs) | {op for op in leaf if op.kind in ("fn", "const")}
        stop = set(leaf) | set(new_name)
        reach: dict[TraceOp, set[int]] = defaultdict(set)
        for r in maps:
            for op in _walk(r, stop):
                if op.kind == "fn" and op not in stop:
                    reach[op].add(id(r))
        # comparisons stay inline in each user: Map nodes hold numbers, not booleans
        shared = [op for op, rs in reach.items() if len(rs) > 1 and not op.boolean]
        if not shared:
            break
        # cut only the outermost shared ops: the work inside one is shared through it
        inner = {op for s in shared for op in _walk(s, stop)}
        for op in sorted(shared, key=lambda o: every.index(o)):
            if op not in inner:
                leaf[op] = next(fresh)

    sources: dict[sp.Basic, Src] = {}

    def ref(op: TraceOp) -> sp.Symbol:
        nm = new_name.get(op) or leaf[op]
        return symbol(nm, op.complex)

    def expr(op: TraceOp, root: TraceOp, memo: dict[int, sp.Basic]) -> sp.Basic:
        if id(op) in memo:
            return memo[id(op)]
        if op is not root and (op in new_name or op in leaf):
            e = ref(op)
        elif op.kind == "const":
            e = op.value
        elif op.kind == "fn":
            e = op.fn(*(expr(a, root, memo) for a in op.args))
            if e in _UNDEFINED or any(a in _UNDEFINED for a in e.args):
                raise SpecError(f"an undefined value inside a step: this term is {e} (NaN from "
                                "0 * inf or inf - inf, complex infinity from log(0) or 1/0)",
                                op.src)
            if op.src is not None:
                sources.setdefault(e, op.src)
        else:  # the root itself is a leaf op, e.g. a state returned unchanged
            e = symbol(leaf[op], op.complex)
        memo[id(op)] = e
        return e

    nodes: list[Node] = []
    for a, ann in anns.items():
        nodes.append(Input(a, ann.role, inputs[a].dims, ann, ann.complex))
    for dim, op in tracer.index_ops.items():
        nodes.append(Input(op.name, Role.INDEX, (dim,), Annotation(Role.INDEX, ((dim,),)), False))
    for op in every:
        if op not in leaf or op.kind == "input":
            continue
        nm = leaf[op]
        arg = op.args[0] if op.args else None
        if op.kind == "sum":
            nodes.append(Sum(nm, op.dims, _name(arg, leaf, new_name), op.dim, op.complex, op.src))
        elif op.kind == "rename":
            nodes.append(Rename(nm, op.dims, _name(arg, leaf, new_name), op.mapping,
                                op.complex, op.src))
        elif op.kind == "shift":
            nodes.append(Shift(nm, op.dims, _name(arg, leaf, new_name), op.dim, op.complex,
                               op.src))
        elif op not in new_name:
            nodes.append(Map(nm, op.dims, expr(op, op, {}), op.src, op.complex))
    states = []
    for s, op in zip(state_args, news):
        nm = f"{s}'"
        value = expr(op, op, {}) if new_name.get(op, nm) == nm else ref(op)  # else: shared
        nodes.append(Map(nm, tracer.order(anns[s].dims), value, op.src, anns[s].complex))
        states.append((s, nm))
    out_names = _output_names(len(outs), set(anns))
    for nm, op in zip(out_names, outs):
        nodes.append(Map(nm, op.dims, ref(op) if (op in new_name or op in leaf)
                         else expr(op, op, {}), op.src, op.complex))
    params = tuple(a for a, ann in anns.items() if ann.role is not Role.STATE)
    out_axes = tuple(output_axes(anns, tracer.time, op.dims) for op in outs)
    return Graph(name, toposort(tuple(nodes)), params, tuple(states), tuple(out_names), out_axes,
                 tracer.time, tuple(tracer.dims), tuple(sorted(tracer.aliases)),
                 tuple(sources.items()))


def _name(op: TraceOp, leaf: dict[TraceOp, str], new_name: dict[TraceOp, str]) -> str:
    return new_name.get(op) or leaf[op]


def _output_names(n: int, taken: set[str]) -> list[str]:
    base = ["y"] if n == 1 else [f"y{i}" for i in range(n)]
    out = []
    for b in base:
        while b in taken:
            b += "_"
        out.append(b)
    return out


def output_axes(anns: dict[str, Annotation], time: str, dims: tuple[str, ...]) -> Axes:
    """An output's layout: a Seq argument's, if one holds exactly its dims; else merged order."""
    want = set(dims) | {time}
    seqs = [a for a in anns.values() if a.role is Role.SEQ]
    for ann in seqs:
        if set(ann.dims) == want:
            return ann.axes
    for ann in seqs:
        if set(ann.dims) >= want:
            kept = [tuple(d for d in axis if d in want) for axis in ann.axes]
            return tuple(axis for axis in kept if axis)
    order: list[str] = []
    for role in (Role.SEQ, Role.STATE, Role.PARAM):
        for ann in anns.values():
            if ann.role is role:
                order += [d for d in ann.dims if d not in order]
    order += [d for d in dims if d not in order]
    return tuple((d,) for d in order if d in want)
