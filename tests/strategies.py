"""Hypothesis strategies: random linear specs, with random inputs and an independent oracle.

`random_specs()` draws a `RandomSpec`: a small random program written out as the Python source
of a real step function (traced by `lrc.recurrence`), with everything needed to run it:

    from hypothesis import given, settings
    from tests.strategies import random_specs

    @settings(max_examples=30, deadline=None)
    @given(random_specs())
    def test_my_pass_preserves_the_reference(rs):
        spec, make_inputs = rs                    # a RandomSpec unpacks like this
        inp = make_inputs(T=9, seed=1)            # an `Inputs`: args + initial states, float64
        want = call_graph(spec.graph, *inp.args, initial_state=inp.state)
        got = call_graph(my_pass(spec.graph), *inp.args, initial_state=inp.state)

The programs. Dims: batch `b` (the first dim of the first Seq, and in every state, so cu_seqlens
applies), channels `d` and `n`, and their rename partners `e` and `m`. Inputs: 1-3 real Seqs and
0-2 real Params over random dims in random layouts (time anywhere), plus the Params an update
asks for. Gates: random compositions of the functions a step may use, kept bounded. One or two
states, real or complex, each updated affinely: diagonal decay, mixing by
`(M * h.rename(n="m")).sum("m")`, a shift register (zero fill, a gate, or a sum of the state),
`where` on a gate between decays, no decay, or unchanged; the second state may read the first
(old or new). Outputs: any functions of old and new states and gates (tanh, products, where on
the state, reductions, .real/.imag/abs). States sit anywhere among the arguments.

The oracle, `RandomSpec.expected(inputs)`, runs the same program on plain torch tensors in a
Python loop (each value held over all dims in one fixed axis order) and shares no code with lrc.
Print a RandomSpec to see its source; errors in a generated step point at its lines. Values
avoid exact zeros where a kink would make gradients ill-defined: index positions are offset by
0.5 and complex states always take a complex input.
"""
from __future__ import annotations

import itertools
import linecache
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as nnf
from hypothesis import strategies as st

import lrc

FULL = ("b", "d", "n", "e", "m")      # the oracle's axis order (after time)
PARTNER = {"d": "e", "n": "m"}        # rename targets: e has d's size, m has n's
THRESHOLD = 0.1234                    # where's threshold: exact cancellations land on 0, not here
_counter = itertools.count()


@dataclass(frozen=True)
class Arg:
    """A step argument: role 'Seq' | 'Param' | 'State', layout (time included for a Seq), and
    how make_inputs draws it: 'normal', 'mix' (a contraction) or 'cdecay' (|z| < 1)."""

    name: str
    role: str
    layout: tuple[str, ...]
    complex: bool = False
    kind: str = "normal"

    def annotation(self) -> str:
        return f'{self.role}("{" ".join(self.layout)}"' + (", complex=True)" if self.complex
                                                           else ")")


@dataclass(frozen=True)
class Stmt:
    """One line of the step, `name = op(*args)`; `attr` holds the op's constants."""

    name: str
    op: str
    args: tuple[str, ...]
    attr: tuple[tuple[str, Any], ...] = ()


# op -> (the line the step shows, the oracle's torch implementation; None: see RandomSpec._eval)
OPS: dict[str, tuple[str, Callable[..., torch.Tensor] | None]] = {
    "tanh": ("lrc.tanh({0})", torch.tanh), "sigmoid": ("lrc.sigmoid({0})", torch.sigmoid),
    "sin": ("lrc.sin({0})", torch.sin), "cos": ("lrc.cos({0})", torch.cos),
    "softplus": ("lrc.softplus({0})", nnf.softplus), "silu": ("lrc.silu({0})", nnf.silu),
    "relu": ("lrc.relu({0})", torch.relu), "logsigmoid": ("lrc.logsigmoid({0})", nnf.logsigmoid),
    "abs": ("abs({0})", torch.abs), "neg": ("-{0}", torch.neg), "exp": ("lrc.exp({0})", torch.exp),
    "expm1": ("lrc.expm1({0})", torch.expm1),
    "log": ("lrc.log(lrc.softplus({0}) + 0.5)", lambda x: torch.log(nnf.softplus(x) + 0.5)),
    "log1p": ("lrc.log1p(lrc.abs({0}))", lambda x: torch.log1p(x.abs())),
    "sqrt": ("lrc.sqrt(abs({0}) + 0.25)", lambda x: torch.sqrt(x.abs() + 0.25)),
    "square": ("{0} ** 2", lambda x: x * x),
    "decay": ("lrc.exp(-lrc.softplus({0}))", lambda x: torch.exp(-nnf.softplus(x))),
    "add": ("{0} + {1}", torch.add), "sub": ("{0} - {1}", torch.sub),
    "mul": ("{0} * {1}", torch.mul),
    "div": ("{0} / (1.5 + lrc.tanh({1}))", lambda a, b: a / (1.5 + torch.tanh(b))),
    "maximum": ("lrc.maximum({0}, {1})", torch.maximum),
    "minimum": ("lrc.minimum({0}, {1})", torch.minimum),
    "where": (f"lrc.where({{0}} > {THRESHOLD}, {{1}}, {{2}})",
              lambda c, a, b: torch.where(c > THRESHOLD, a, b)),
    "real": ("{0}.real", torch.real), "imag": ("{0}.imag", torch.imag),
    "conj": ("{0}.conj()", lambda x: x.conj().resolve_conj()),
    "scale": ("{c!r} * {0}", None), "sum": ("{0}.sum({dims})", None),
    "rename": ('{0}.rename({old}="{new}")', None), "shift": ('lrc.shift({0}, "{dim}")', None),
    "shift_fill": ('{0}.shift("{dim}", fill={1})', None),
    "index": ('lrc.index("{dim}") + 0.5', None),
}
UNARY = ("tanh", "sigmoid", "sin", "cos", "softplus", "silu", "relu", "logsigmoid", "abs", "neg",
         "exp", "expm1", "log", "log1p", "sqrt", "square")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")


def _bound(op: str, bs: list[float]) -> float:
    """A rough bound on |value| from the arguments' bounds (to keep exp and powers tame)."""
    b = bs[0] if bs else 1.0
    if op in ("tanh", "sigmoid", "sin", "cos", "decay"):
        return 1.0
    if len(bs) > 1:
        return bs[0] * bs[1] * 2 if op in ("mul", "div") else bs[0] + bs[1]
    return math.exp(min(b, 30)) if op in ("exp", "expm1") else b * b if op == "square" else b + 1


@dataclass
class _Builder:
    """Writes a program line by line, tracking each value's dims, complexity and bound."""

    draw: Callable[[st.SearchStrategy], Any]
    time: str
    args: list[Arg] = field(default_factory=list)
    stmts: list[Stmt] = field(default_factory=list)
    info: dict[str, tuple[frozenset, bool, float]] = field(default_factory=dict)
    stateful: set[str] = field(default_factory=set)      # values that depend on a state

    def add_arg(self, arg: Arg, bound: float = 3.0) -> str:
        self.args.append(arg)
        self.info[arg.name] = (frozenset(arg.layout) - {self.time}, arg.complex, bound)
        if arg.role == "State":
            self.stateful.add(arg.name)
        return arg.name

    def emit(self, op: str, *args: str, **attr: Any) -> str:
        dims = frozenset().union(*(self.info[a][0] for a in args))
        cplx = any(self.info[a][1] for a in args) and op not in ("real", "imag", "abs")
        bound = _bound(op, [self.info[a][2] for a in args])
        if op == "sum":
            dims, bound = dims - set(attr["dims"]), bound * 4
        elif op == "rename":
            dims = dims - {attr["old"]} | {attr["new"]}
        elif op == "index":
            dims, bound = frozenset({attr["dim"]}), 4.0
        elif op == "scale":
            cplx, bound = cplx or isinstance(attr["c"], complex), bound * abs(attr["c"])
        name = f"v{len(self.stmts)}"
        self.stmts.append(Stmt(name, op, args, tuple(sorted(attr.items()))))
        self.info[name] = (dims, cplx, bound)
        if any(a in self.stateful for a in args):
            self.stateful.add(name)          # never squashed: that would make it nonlinear
        elif bound > 30 and not cplx:
            return self.emit("tanh", name)
        return name

    def dims(self, v: str) -> frozenset:
        return self.info[v][0]

    def cplx(self, v: str) -> bool:
        return self.info[v][1]

    def pick(self, options):
        return self.draw(st.sampled_from(sorted(options)))

    def subset(self, options) -> frozenset:
        return frozenset(d for d in sorted(options) if self.draw(st.booleans()))

    def param(self, kind: str, dims: frozenset, complex_: bool = False) -> str:
        prefix = {"mix": "M", "cdecay": "lam"}.get(kind, "c" if complex_ else "p")
        layout = tuple(self.draw(st.permutations(sorted(dims))))
        return self.add_arg(Arg(f"{prefix}{len(self.args)}", "Param", layout, complex_, kind),
                            bound=3.0 if kind == "normal" else 1.0)

    def reduce(self, v: str, allowed: frozenset) -> str:
        """v summed over its dims outside `allowed`."""
        extra = self.dims(v) - allowed
        return self.emit("sum", v, dims=tuple(sorted(extra))) if extra else v

    # -- gates: real, bounded functions of the inputs (never of a state)

    def leaf(self, allowed: frozenset) -> str:
        real = [a.name for a in self.args if a.role != "State" and not a.complex
                and a.kind == "normal"]
        known = {d for a in self.args for d in a.layout} & allowed & {"d", "n"}
        if known and self.draw(st.integers(0, 7)) == 0:
            return self.emit("index", dim=self.pick(known))
        v = self.pick(real)
        return v if self.dims(v) <= allowed else self.emit("tanh", self.reduce(v, allowed))

    def gate(self, allowed: frozenset, depth: int = 2) -> str:
        kind = self.draw(st.integers(0, 9)) if depth > 0 else 0
        if kind <= 2:
            return self.leaf(allowed)
        sub = lambda: self.gate(allowed, depth - 1)  # noqa: E731
        if kind <= 5:
            op, a = self.pick(UNARY), sub()
            if op in ("exp", "expm1", "square") and self.info[a][2] > 3:
                a = self.emit("tanh", a)
            return self.emit(op, a)
        if kind == 6:
            return self.emit("scale", sub(), c=self.pick([-1.5, 0.5, 2.0, 3.0]))
        if kind == 7:
            return self.emit(self.pick(BINARY), sub(), sub())
        if kind == 8:
            return self.emit("where", sub(), sub(), sub())
        # an input mixed along d or n through a rename: sum_m w[.., m] x[.., m]
        k = self.pick({"d", "n"} & allowed or {"n"})
        x = self.gate(allowed | {k}, depth - 1)
        if k not in self.dims(x):
            return x
        w = self.param("normal", frozenset({PARTNER[k]}) | self.subset(allowed - {"b"}))
        moved = self.emit("rename", x, old=k, new=PARTNER[k])
        mixed = self.emit("sum", self.emit("mul", w, moved), dims=(PARTNER[k],))
        return self.emit("tanh", self.reduce(mixed, allowed))

    def decay(self, allowed: frozenset) -> str:
        return self.emit(self.pick(["sigmoid", "decay"]), self.gate(allowed, 1))

    # -- state updates, affine in the states

    def update(self, h: str, earlier: list[str]) -> str:
        dims, cplx = self.dims(h), self.cplx(h)
        chans = dims & {"d", "n"}
        form = self.pick(["diag", "diag", "where", "none", "keep"]
                         + (["mix", "shift"] * 2 if chans else []))
        if form == "keep":
            return h
        terms = []
        if form == "diag":
            t = self.emit("mul", self.decay(dims), h)
            if cplx and self.draw(st.booleans()):
                lam = self.param("cdecay", self.subset(chans), True)
                lam = self.emit("conj", lam) if self.draw(st.booleans()) else lam
                t = self.emit("mul", lam, t)
            terms.append(t)
        elif form == "where":
            a1 = self.emit("mul", self.decay(dims), h)
            terms.append(self.emit("where", self.gate(dims, 1), a1, self.emit("scale", h, c=0.5)))
        elif form == "mix":
            k = self.pick(chans)
            M = self.param("mix", frozenset({k, PARTNER[k]}) | self.subset(chans - {k}))
            moved = self.emit("rename", h, old=k, new=PARTNER[k])
            t = self.emit("sum", self.emit("mul", M, moved), dims=(PARTNER[k],))
            terms.append(self.emit("mul", self.decay(dims), t) if self.draw(st.booleans()) else t)
        elif form == "shift":
            k, fill = self.pick(chans), self.draw(st.integers(0, 2))
            if fill == 0:
                t = self.emit("shift", h, dim=k)
            else:
                f = (self.gate(dims - {k}, 1) if fill == 1 else
                     self.emit("scale", self.emit("sum", h, dims=(k,)), c=0.2))
                t = self.emit("shift_fill", h, f, dim=k)
            terms.append(self.emit("mul", self.decay(dims), t))
        inp = self.gate(dims)
        if cplx:    # a complex input: no part of the state sits exactly at 0, abs's kink
            inp = (self.emit("mul", self.param("normal", self.subset(chans), True), inp)
                   if self.draw(st.booleans()) else self.emit("scale", inp, c=0.6 + 0.3j))
        terms.append(inp)
        if earlier and self.draw(st.booleans()):   # the first state, old or new, feeds this one
            v = self.reduce(self.emit("mul", self.gate(dims, 1), self.pick(earlier)), dims)
            terms.append(self.emit("real", v) if self.cplx(v) and not cplx else v)
        out = terms[0]
        for t in terms[1:]:
            out = self.emit("add", out, t)
        return out

    def output(self, values: list[str]) -> str:
        v, anywhere = self.pick(values), frozenset(FULL[:3])
        if self.cplx(v):
            part = self.pick(["real", "imag", "abs", "creal"])
            if part == "creal":
                c = self.param("normal", self.subset(self.dims(v) - {"b"}), True)
                v = self.emit("real", self.emit("mul", c, v))
            else:
                v = self.emit(part, v)
        view = self.pick(["id", "tanh", "square", "reduce", "where", "max", "prod"])
        if view in ("tanh", "square"):
            v = self.emit(view, v)
        elif view == "reduce" and self.dims(v) - {"b"}:
            g = self.gate(self.dims(v), 1)
            v = self.emit("sum", self.emit("mul", g, v), dims=(self.pick(self.dims(v) - {"b"}),))
        elif view == "where":
            v = self.emit("where", v, v, self.emit("scale", v, c=0.5))
        elif view == "max":
            v = self.emit(self.pick(["maximum", "minimum"]), v, self.gate(anywhere, 1))
        elif view == "prod":
            w = self.pick(values)
            v = self.emit("mul", v, self.emit("abs", w) if self.cplx(w) else w)
        combine = self.draw(st.integers(0, 2))
        return self.emit(("add", "mul")[combine - 1], v, self.gate(anywhere, 1)) if combine else v


@st.composite
def random_specs(draw, max_states: int = 2, complex_states: bool = True) -> RandomSpec:
    """A random linear spec (see the module docstring): at most `max_states` states, complex
    ones only if `complex_states`."""
    time = draw(st.sampled_from(["t", "t", "l"]))
    sizes = {"d": draw(st.integers(1, 3)), "n": draw(st.integers(1, 4))}
    sizes.update(e=sizes["d"], m=sizes["n"])
    bld = _Builder(draw, time)
    for i in range(draw(st.integers(1, 3))):
        dims = sorted(bld.subset({"d", "n"})) + ([] if i == 0 else ["b"])
        rest = draw(st.permutations(dims))
        at = draw(st.integers(0, len(rest)))
        layout = (["b"] if i == 0 else []) + list(rest[:at]) + [time] + list(rest[at:])
        bld.add_arg(Arg(f"x{i}", "Seq", tuple(layout)))
    for _ in range(draw(st.integers(0, 2))):
        bld.param("normal", bld.subset({"d", "n"}))
    states = []
    for i in range(draw(st.integers(1, max_states))):
        layout = tuple(draw(st.permutations(["b"] + sorted(bld.subset({"d", "n"})))))
        cplx = complex_states and draw(st.integers(0, 3)) == 0
        states.append(bld.add_arg(Arg(f"h{i}", "State", layout, cplx), bound=10.0))
    news: list[str] = []
    for h in states:
        news.append(bld.update(h, states[:len(news)] + news))
    outs = [bld.output(states + news) for _ in range(draw(st.integers(1, 2)))]
    # every dim of a state must get its size from an argument (for calls with state=None)
    missing = ({d for h in states for d in bld.dims(h)}
               - {d for a in bld.args if a.role != "State" for d in a.layout})
    if missing:
        bld.param("normal", frozenset(missing))
    order = [a for a in bld.args if a.role != "State"]
    for a in [a for a in bld.args if a.role == "State"]:
        order.insert(draw(st.integers(0, len(order))), a)
    new_of = dict(zip(states, news, strict=True))
    news = [new_of[a.name] for a in order if a.role == "State"]     # declaration order
    return RandomSpec.build(tuple(order), tuple(bld.stmts), tuple(outs), tuple(news), sizes,
                            time, {v: i[0] for v, i in bld.info.items()})


@dataclass(frozen=True, eq=False)
class Inputs:
    """Random inputs for a RandomSpec, in the user's layouts.

    args       the Seq/Param tensors in calling order: `layer(*inp.args)`, or `inp.kwargs`
    state      the initial states in declaration order: `initial_state=inp.state`
    time_axes  each arg's time axis (None for a Param); batch_axes: each state's `b` axis
    """

    args: tuple[torch.Tensor, ...]
    names: tuple[str, ...]
    time_axes: tuple[int | None, ...]
    state: tuple[torch.Tensor, ...]
    batch_axes: tuple[int, ...]

    @property
    def kwargs(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.args, strict=True))

    @property
    def T(self) -> int:  # noqa: N802 (the length)
        return next(x.shape[a] for x, a in zip(self.args, self.time_axes, strict=True)
                    if a is not None)

    def _map_seqs(self, f: Callable[[torch.Tensor, int], torch.Tensor]) -> Inputs:
        args = tuple(x if a is None else f(x, a)
                     for x, a in zip(self.args, self.time_axes, strict=True))
        return Inputs(args, self.names, self.time_axes, self.state, self.batch_axes)

    def slice_time(self, start: int, end: int) -> Inputs:
        """The same inputs over time steps [start, end)."""
        return self._map_seqs(lambda x, a: x.narrow(a, start, end - start))

    def flip_time(self) -> Inputs:
        """The inputs with time reversed."""
        return self._map_seqs(lambda x, a: x.flip(a))

    def token(self, i: int) -> tuple[torch.Tensor, ...]:
        """The per-token slices at time i (time dim dropped), for `layer.step`."""
        return self._map_seqs(lambda x, a: x.select(a, i)).args

    def state_of(self, k: int) -> tuple[torch.Tensor, ...]:
        """The initial states of batch entry k (kept as a batch of one)."""
        return tuple(s.narrow(a, k, 1) for s, a in zip(self.state, self.batch_axes, strict=True))

    def to(self, dtype: torch.dtype) -> Inputs:
        """Real tensors cast to `dtype`, complex ones to its complex counterpart."""
        cd = torch.complex128 if dtype == torch.float64 else torch.complex64
        cast = lambda x: x.to(cd if x.is_complex() else dtype)  # noqa: E731
        return Inputs(tuple(map(cast, self.args)), self.names, self.time_axes,
                      tuple(map(cast, self.state)), self.batch_axes)


@dataclass(frozen=True, eq=False)
class RandomSpec:
    """A generated spec: `spec` (traced), its `source`, `make_inputs`, and the oracle `expected`.

    Iterating gives `(spec, make_inputs)`. `sizes` fixes d and n (and their partners e and m);
    the batch size and the length are chosen per call of make_inputs."""

    spec: lrc.Spec
    source: str
    args: tuple[Arg, ...]
    stmts: tuple[Stmt, ...]
    outputs: tuple[str, ...]
    news: tuple[str, ...]
    sizes: dict[str, int]
    time: str
    dims: dict[str, frozenset]

    @staticmethod
    def build(args, stmts, outputs, news, sizes, time, dims) -> RandomSpec:
        """Write the step's source, define it as a real function and trace it."""
        def tup(names):
            return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"

        lines = [f"def step({', '.join(f'{a.name}: {a.annotation()}' for a in args)}):"]
        for s in stmts:
            attr = dict(s.attr)
            if s.op == "sum":
                attr["dims"] = ", ".join(f'"{d}"' for d in attr["dims"])
            lines.append(f"    {s.name} = " + OPS[s.op][0].format(*s.args, **attr))
        source = "\n".join(lines + [f"    return {tup(outputs)}, {tup(news)}", ""])
        filename = f"<lrc-random-spec-{next(_counter)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        ns: dict[str, Any] = {"lrc": lrc, "Seq": lrc.Seq, "Param": lrc.Param,
                              "State": lrc.State}
        exec(compile(source, filename, "exec"), ns)
        try:
            spec = lrc.recurrence(ns["step"], time=time, name="random_spec")
        except Exception as e:  # a generated spec must trace: show it
            e.add_note(f"while tracing the generated spec:\n{source}")
            raise
        return RandomSpec(spec, source, args, stmts, outputs, news, sizes, time, dims)

    def __repr__(self) -> str:
        return f"RandomSpec(sizes={self.sizes}):\n{self.source}"

    def _repr_pretty_(self, p, cycle) -> None:  # how hypothesis prints a falsifying example
        p.text(repr(self))

    def __iter__(self):
        return iter((self.spec, self.make_inputs))

    @property
    def params(self) -> tuple[Arg, ...]:  # the Seq/Param arguments, in calling order
        return tuple(a for a in self.args if a.role != "State")

    @property
    def states(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.role == "State")

    def make_inputs(self, T: int = 13, batch: int = 2, seed: int = 0,
                    dtype: torch.dtype = torch.float64, state_batch: int | None = None) -> Inputs:
        """Random inputs (never zeros): T steps, `batch` sequences, `state_batch` initial states
        (default `batch`; the number of sequences when packing with cu_seqlens)."""
        gen = torch.Generator().manual_seed(seed)
        rand = lambda shape: torch.rand(shape, generator=gen, dtype=torch.float64)  # noqa: E731

        def draw(arg: Arg, b: int) -> torch.Tensor:
            shape = tuple(T if d == self.time else b if d == "b" else self.sizes[d]
                          for d in arg.layout)
            if arg.kind == "mix":      # |row sums| < 0.9: a contraction
                k = next(d for d in arg.layout if d in ("m", "e"))
                return (rand(shape) * 2 - 1) * 0.9 / self.sizes[k]
            if arg.kind == "cdecay":
                return torch.polar(rand(shape) * 0.45 + 0.5, rand(shape) * 6 - 3)
            x = torch.randn(shape, generator=gen, dtype=torch.float64)
            return torch.complex(x, torch.randn_like(x)) if arg.complex else x

        inp = Inputs(tuple(draw(a, batch) for a in self.params),
                     tuple(a.name for a in self.params),
                     tuple(a.layout.index(self.time) if a.role == "Seq" else None
                           for a in self.params),
                     tuple(draw(a, state_batch or batch) for a in self.states),
                     tuple(a.layout.index("b") for a in self.states))
        return inp if dtype == torch.float64 else inp.to(dtype)

    # ---- the oracle: the same program on plain tensors, one axis per dim in FULL order

    def _size(self, d: str, batch: int) -> int:
        return batch if d == "b" else self.sizes[d]

    def _full(self, x: torch.Tensor, layout: tuple[str, ...]) -> torch.Tensor:
        """A user-layout tensor -> (time,) + one axis per FULL dim (size 1 where absent)."""
        lead = [layout.index(self.time)] if self.time in layout else []
        present = [d for d in FULL if d in layout]
        x = x.permute(lead + [layout.index(d) for d in present])
        sizes = dict(zip(present, x.shape[len(lead):], strict=True))
        return x.reshape(tuple(x.shape[:len(lead)]) + tuple(sizes.get(d, 1) for d in FULL))

    def _user(self, x: torch.Tensor, dims: frozenset, layout: tuple[str, ...], batch: int):
        """A FULL-order value over `dims` (time first if in layout) -> `layout`."""
        lead = 1 if self.time in layout else 0
        x = x.expand(tuple(x.shape[:lead]) + tuple(self._size(d, batch) if d in dims else 1
                                                    for d in FULL))
        names = [self.time] * lead + list(FULL)
        x = x.reshape([n for n, d in zip(x.shape, names, strict=True) if d in layout])
        kept = [d for d in names if d in layout]
        return x.permute([kept.index(d) for d in layout])

    def _eval(self, s: Stmt, env: dict, batch: int) -> torch.Tensor:
        attr, xs = dict(s.attr), [env[a] for a in s.args]
        if OPS[s.op][1] is not None:
            return OPS[s.op][1](*xs)
        if s.op == "scale":
            return attr["c"] * xs[0]
        if s.op == "index":
            n = self._size(attr["dim"], batch)
            return torch.arange(n, dtype=torch.float64).add(0.5).reshape(
                [n if d == attr["dim"] else 1 for d in FULL])
        x = xs[0].expand([self._size(d, batch) if d in self.dims[s.args[0]] else 1
                          for d in FULL])
        if s.op == "sum":
            return x.sum([FULL.index(d) for d in attr["dims"]], keepdim=True)
        if s.op == "rename":
            return x.transpose(FULL.index(attr["old"]), FULL.index(attr["new"]))
        k = FULL.index(attr["dim"])
        moved = torch.cat([torch.zeros_like(x.narrow(k, 0, 1)), x.narrow(k, 0, x.shape[k] - 1)],
                          k)
        if s.op == "shift":
            return moved
        first = torch.arange(x.shape[k]).reshape([-1 if i == k else 1 for i in range(5)]) == 0
        return torch.where(first, xs[1], moved)

    def expected(self, inputs: Inputs, reverse: bool = False):
        """(outputs, final states) by a plain loop, float64: outputs in the layouts lrc chose
        (`spec.graph.out_axes`, checked to hold the right dims), states in their annotations'."""
        wide = inputs.to(torch.float64)
        batch = wide.state[0].shape[wide.batch_axes[0]]
        vals = {a.name: self._full(x, a.layout)
                for a, x in zip(self.params, wide.args, strict=True)}
        cur = {a.name: self._full(x, a.layout)
               for a, x in zip(self.states, wide.state, strict=True)}
        outs: list[list] = [[None] * wide.T for _ in self.outputs]
        for t in (reversed(range(wide.T)) if reverse else range(wide.T)):
            env = {a.name: vals[a.name][t] if a.role == "Seq" else vals[a.name]
                   for a in self.params}
            env.update(cur)
            for s in self.stmts:
                env[s.name] = self._eval(s, env, batch)
            for i, o in enumerate(self.outputs):
                outs[i][t] = env[o]
            for a, new in zip(self.states, self.news, strict=True):
                shape = [self._size(d, batch) if d in a.layout else 1 for d in FULL]
                cur[a.name] = env[new].to(torch.complex128 if a.complex else torch.float64
                                          ).expand(shape)
        results = []
        for o, axes, per_t in zip(self.outputs, self.spec.graph.out_axes, outs, strict=True):
            layout = tuple(d for axis in axes for d in axis)
            assert set(layout) == self.dims[o] | {self.time}, (layout, self.dims[o])
            shape = torch.broadcast_shapes(*(y.shape for y in per_t))
            x = self._user(torch.stack([y.expand(shape) for y in per_t]), self.dims[o], layout,
                           batch)
            results.append(x.reshape([math.prod(x.shape[layout.index(d)] for d in axis)
                                      for axis in axes]))
        finals = [self._user(cur[a.name], frozenset(a.layout), a.layout, batch)
                  for a in self.states]
        return tuple(results), tuple(finals)
