"""An expression of Params alone as one generated kernel, and its gradients as another.

The convolution lowering reads expressions of Params alone in float64 (log Abar = dt A,
C Bbar, ...; an expression of Params inside a float32 one is computed the same way and rounded
once). Evaluated term by term, each is a PyTorch kernel per operation forward and about twice
that backward: S4D's forward+backward would spend more host time launching them than its
FFTs take on the GPU. `ParamKernel` is one such expression as

- a forward kernel over the broadcast shape of its inputs: each loaded by its strides (a
  broadcast dim has stride 0) in its own dtype, widened to float64, the expression computed
  there and the value stored once (float64 / complex128, or float32 / complex64 rounded
  once);
- a backward kernel: sympy's derivatives of the value's real and imaginary parts (complex
  values split as passes/complex.py does) with respect to each input's parts, contracted with
  the value's gradient, one float64 value per element and input; summed over the dims an
  input is broadcast along by PyTorch afterwards (one `sum` for such an input).

The gradients follow PyTorch's convention for complex tensors (d/d re + i d/d im of a real
loss). Expressions the printer cannot write (atan2, a derivative sympy leaves unevaluated)
raise NotImplementedError at construction; the caller then evaluates op by op (`Tape`).
"""
from __future__ import annotations

import sympy as sp
import torch
from sympy.codegen.cfunctions import expm1

from ...ir.functions import is_complex, phi1
from ...kernels import launch as kernel_launch
from ...kernels.printer import HELPERS, TritonPrinter
from ...layout import broadcast_shape
from ...passes.complex import split

BLOCK = 256
PHI1_SERIES = 1e-3  # |x| below which a real phi1 is its Taylor polynomial (see _stable)


class _Printer(TritonPrinter):
    """float64: exp as exp (no exp2 rewrite, whose log2(e) is a float32 idea), any integer
    power as products."""

    def _print_exp(self, expr) -> str:
        return f"tl.exp({self._print(expr.args[0])})"

    def _print_Pow(self, expr, rational=False) -> str:
        e = expr.exp
        if e.is_Integer and 1 <= abs(int(e)) <= 16:
            b = self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE["Pow"])
            prod = "*".join([b] * abs(int(e)))
            return f"({prod})" if e > 0 else f"(1.0 / ({prod}))"
        return super()._print_Pow(expr, rational)


def _stable(e: sp.Expr) -> sp.Expr:
    """Real phi1(x) as its Taylor polynomial where |x| < 1e-3, else expm1(x) / x: the same
    value, and a derivative sympy can take without phi1's (e^x - phi1(x)) / x, 0/0 at 0."""
    def rewrite(x: sp.Expr) -> sp.Expr:
        small = sp.StrictLessThan(sp.Abs(x), PHI1_SERIES)
        series = 1 + x / 2 + x**2 / 6 + x**3 / 24 + x**4 / 120
        safe = x + sp.Piecewise((1, small), (0, True))
        return sp.Piecewise((series, small), (expm1(x) / safe, True))
    return e.replace(lambda x: isinstance(x, phi1), lambda x: rewrite(x.args[0]))


class ParamKernel:
    """`expr` (free symbols: node names), or a tuple of expressions computed by the same
    kernels (one launch forward, one backward, their common subexpressions once), over
    inputs whose complexness `cplx` gives, in the order of `names`; rank: the inputs' and the
    outputs' number of axes. Several expressions share one broadcast shape: that of all the
    inputs."""

    def __init__(self, expr, names: tuple[str, ...], cplx: tuple[bool, ...], rank: int):
        self.exprs = tuple(expr) if isinstance(expr, tuple) else (expr,)
        self.expr, self.names, self.cplx, self.rank = expr, names, cplx, rank
        syms = {s.name: s for e in self.exprs for s in e.free_symbols}
        parts: list[tuple[sp.Symbol, ...]] = []
        real, env = {}, {}
        for j, (name, c) in enumerate(zip(names, cplx, strict=True)):
            if c:
                p = (sp.Symbol(f"x{j}r", real=True), sp.Symbol(f"x{j}i", real=True))
                env[syms[name]] = p
            else:
                p = (sp.Symbol(f"x{j}r", real=True),)
                real[syms[name]] = p[0]
            parts.append(p)
        values, self.outs_complex = [], []
        grads = [sp.Integer(0) for p in parts for _ in p]
        for k, e in enumerate(self.exprs):
            re, im = split(e.xreplace(real), env)  # type: ignore[arg-type]
            re, im = _stable(sp.sympify(re)), _stable(sp.sympify(im))
            cx = bool(is_complex(e) or im != 0)
            self.outs_complex.append(cx)
            values.append([re, im] if cx else [re])
            gr, gi = sp.Symbol(f"gr{k}", real=True), sp.Symbol(f"gi{k}", real=True)
            grads = [g + sp.diff(re, v) * gr + (sp.diff(im, v) * gi if cx else 0)
                     for g, v in zip(grads, [v for p in parts for v in p], strict=True)]
        self.out_complex = self.outs_complex[0]
        bad = [g for g in grads if g.has(sp.Derivative, sp.Subs)]
        if bad:
            raise NotImplementedError(f"no derivative rule in {bad[0]}")
        self.source = _source(parts, values, grads, rank, self.outs_complex)
        self.launcher = kernel_launch.Launcher(self.source)

    def __call__(self, xs: list[torch.Tensor], dtype: torch.dtype):
        """The value over the broadcast shape of `xs` (each of rank `rank`), real or complex
        in the precision of `dtype` (float64 or float32); a tuple of them for a tuple of
        expressions."""
        out = _Apply.apply(self, dtype, *xs)
        return out if isinstance(self.expr, tuple) else out[0]

    # ---- launches

    def launch(self, which: str, xs: list[torch.Tensor], extra: list, shape) -> None:
        """`which` ("fwd" / "bwd") over `shape`: the inputs `xs` by their strides, then
        `extra` (the outputs; or the gradients, then the inputs' gradient buffers)."""
        args: list = []
        strides: list[int] = []
        for x, c in zip(xs, self.cplx, strict=True):
            args.append(torch.view_as_real(x) if c else x)
            strides += _strides(x, shape, c)
        M = 1
        for s in shape:
            M *= s
        if which == "bwd":
            n = len(self.exprs)
            for g, c in zip(extra[:n], self.outs_complex, strict=True):
                args.append(torch.view_as_real(g) if c else g)
                strides += _strides(g, shape, c)
            extra = extra[n:]
        args += [torch.view_as_real(b) if b.is_complex() else b for b in extra]
        args += [M, *shape, *strides]
        grid = ((M + BLOCK - 1) // BLOCK,)
        device = xs[0].device if xs else extra[0].device
        consts = {"BLOCK": BLOCK} if device.type != "cuda" else {"BLOCK": BLOCK, "num_warps": 4}
        self.launcher(f"params_{which}", grid, device, args, **consts)


def _strides(x: torch.Tensor, shape, cplx: bool) -> list[int]:
    """`x`'s strides over `shape` in elements of its real view: 0 along a broadcast axis."""
    st = torch.view_as_real(x).stride()[:-1] if cplx else x.stride()
    return [0 if x.shape[a] == 1 else st[a] for a in range(len(shape))]


_STORED = (torch.float32, torch.float64, torch.complex64, torch.complex128)


class _Apply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pk: ParamKernel, dtype: torch.dtype, *xs: torch.Tensor):
        xs = tuple(x.resolve_conj() for x in xs)
        shape = broadcast_shape(*(x.shape for x in xs))
        wide = dtype == torch.float64
        outs = [torch.empty(shape, dtype=((torch.complex128 if wide else torch.complex64)
                                          if cx else dtype), device=xs[0].device)
                for cx in pk.outs_complex]
        if outs[0].numel():
            pk.launch("fwd", list(xs), outs, shape)
        ctx.pk, ctx.shape = pk, shape
        ctx.save_for_backward(*xs)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *gs: torch.Tensor):
        pk, shape = ctx.pk, ctx.shape
        xs = ctx.saved_tensors
        gs = tuple(g.resolve_conj() if g is not None else torch.zeros(
            shape, dtype=torch.complex128 if cx else torch.float64, device=xs[0].device)
            for g, cx in zip(gs, pk.outs_complex, strict=True))
        bufs = []
        for x in xs:  # x's own dtype if float32 / 64 and no sum follows, else float64
            dt = x.dtype if x.shape == shape and x.dtype in _STORED else (
                torch.complex128 if x.is_complex() else torch.float64)
            bufs.append(torch.empty(shape, dtype=dt, device=x.device))
        if gs[0].numel():
            pk.launch("bwd", list(xs), list(gs) + bufs, shape)
        out: list = [None, None]
        for x, b, need in zip(xs, bufs, ctx.needs_input_grad[2:], strict=True):
            if not need:
                out.append(None)
                continue
            axes = [a for a in range(len(shape)) if x.shape[a] == 1 and shape[a] != 1]
            out.append((b.sum(axes, keepdim=True) if axes else b).to(x.dtype))
        return tuple(out)


def _source(parts, values, grads, rank: int, outs_complex: list[bool]) -> str:
    """The module: params_fwd (inputs, one output per expression) and params_bwd (inputs,
    one gradient per output, one gradient buffer per input)."""
    n_in = len(parts)
    sizes = [f"S{a}" for a in range(rank)]
    strides = [f"s{j}_{a}" for j in range(n_in) for a in range(rank)]
    n_out = len(values)
    gstrides = [f"sg{k}_{a}" for k in range(n_out) for a in range(rank)]
    names = {v.name: v.name for p in parts for v in p}
    names.update({f"g{c}{k}": f"g{c}{k}" for k in range(n_out) for c in "ri"})

    def head() -> list[str]:
        lines = ["    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)",
                 "    m = i < M", "    rest = i"]
        for a in reversed(range(rank)):
            lines.append(f"    i{a} = rest % S{a}")
            lines.append(f"    rest = rest // S{a}")
        for j, p in enumerate(parts):
            off = " + ".join(f"i{a} * s{j}_{a}" for a in range(rank)) or "0"
            lines.append(f"    o{j} = {off}")
            lines.append(f"    x{j}r = tl.load(x{j} + o{j}, mask=m, other=1.0).to(tl.float64)")
            if len(p) == 2:
                lines.append(f"    x{j}i = tl.load(x{j} + o{j} + 1, mask=m, other=0.0)"
                             ".to(tl.float64)")
        return lines

    def body(exprs: list[sp.Expr], out: list[str]) -> list[str]:
        subs, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("c"), optimizations=None)
        pr = _Printer({**names, **{s.name: s.name for s, _ in subs}})
        lines = [f"    {s.name} = {pr.doprint(e)}" for s, e in subs]
        lines += [f"    {o} = {pr.doprint(e)} + tl.zeros([BLOCK], tl.float64)"
                  for o, e in zip(out, reduced, strict=True)]
        return lines

    ins = [f"x{j}" for j in range(n_in)]
    tail = ["M", *sizes]
    outs = [f"out{k}" for k in range(n_out)]
    fwd = [f"def params_fwd({', '.join(ins + outs + tail + strides)}, BLOCK: tl.constexpr):"]
    fwd += head()
    fwd += body([v for val in values for v in val],
                [f"v{c}{k}" for k, val in enumerate(values) for c in "ri"[:len(val)]])
    for k, cx in enumerate(outs_complex):
        if cx:
            fwd += [f"    tl.store(out{k} + 2 * i, vr{k}, mask=m)",
                    f"    tl.store(out{k} + 2 * i + 1, vi{k}, mask=m)"]
        else:
            fwd += [f"    tl.store(out{k} + i, vr{k}, mask=m)"]

    douts = [f"d{j}" for j in range(n_in)]
    gins = [f"g{k}" for k in range(n_out)]
    bwd = [f"def params_bwd({', '.join(ins + gins + douts + tail + strides + gstrides)}, "
           "BLOCK: tl.constexpr):"]
    bwd += head()
    for k, cx in enumerate(outs_complex):
        og = " + ".join(f"i{a} * sg{k}_{a}" for a in range(rank)) or "0"
        bwd += [f"    og{k} = {og}",
                f"    gr{k} = tl.load(g{k} + og{k}, mask=m, other=0.0).to(tl.float64)"]
        if cx:
            bwd += [f"    gi{k} = tl.load(g{k} + og{k} + 1, mask=m, other=0.0).to(tl.float64)"]
    gnames = [f"d{j}{'ri'[k]}" for j, p in enumerate(parts) for k in range(len(p))]
    bwd += body(grads, gnames)
    for j, p in enumerate(parts):
        if len(p) == 2:
            bwd += [f"    tl.store(d{j} + 2 * i, d{j}r, mask=m)",
                    f"    tl.store(d{j} + 2 * i + 1, d{j}i, mask=m)"]
        else:
            bwd += [f"    tl.store(d{j} + i, d{j}r, mask=m)"]
    return ('"""Expressions of Params alone, forward and backward '
            '(lrc: lowering/conv/params.py)."""\n'
            "import triton\nimport triton.language as tl\n" + HELPERS + "\n\n@triton.jit\n"
            + "\n".join(fwd) + "\n\n\n@triton.jit\n" + "\n".join(bwd) + "\n")
