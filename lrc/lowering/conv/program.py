"""The convolution lowering: a time-invariant spec run as FFT convolutions.

`Program(compiled)` reads the planned graph (`plan.analyze`); `run(call)` evaluates the
sequence nodes over all time steps at once with the reference interpreter's rules (float32, torch
autograd), and each convolution node as

    gate * (conv(w, alpha K + beta delta) + alpha * (the initial state's term))

with K generated from the Params in float64 (`gen.py`: Vandermonde, Cauchy + Woodbury, or the
readout factor of a shift register) and the convolution done by FFT (`fft.py`). The input's
FFT is launched before the kernel is generated. Final states come from the same sums: a
transposed Vandermonde product for diagonal states, the state's impulse response for DPLR ones,
the last inputs for shift registers; they are computed only when read.
"""
from __future__ import annotations

from collections.abc import Sequence

import sympy as sp
import torch

from ...ir.functions import Tape, is_complex
from ...passes.analysis import expr_dims
from ..base import per_sequence
from . import kernels as ck
from .params import ParamKernel
from .plan import ConvNode, ConvPlan, StateForm, analyze
from .run import Run, param_names


class Program:
    """The convolution kernels of a pipeline-compiled spec (see the module docstring).

    plan      which nodes are convolutions, and each state's form
    sources   the generated Triton kernels this spec uses, by family; `source` the module
    """

    def __init__(self, compiled):
        self.g = compiled.planned
        self.plan: ConvPlan = analyze(self.g)
        kinds = {s.kind for s in self.plan.states}
        used = ["fft"] + (["vandermonde"] if "diagonal" in kinds else []) + (
            ["cauchy"] if "dplr" in kinds else [])
        self.sources = {k: ck.SOURCES[k] for k in used}
        self.source = ck.source()
        self.convs = {cv.node: cv for cv in self.plan.convs}
        # states formed as whole sequences: their new values and old values by node name
        self.formed = {n: (f, new) for f in self.plan.states if f.spacewise
                       for n, new in ((f.new, True), (f.name, False))}
        # per convolution node: the kernel's dims, and whether kernel and result are real
        self.kdims = {cv.node: self._kernel_dims(cv, self.plan.state(cv.state))
                      for cv in self.plan.convs}
        self.kshape_dims = {cv.node: self.g.order(set(self.kdims[cv.node]) | set(
            expr_dims(self.g, cv.alpha)) | set(expr_dims(self.g, cv.beta)))
            for cv in self.plan.convs}
        self.real = {cv.node: cv.real and not is_complex(cv.alpha) and not is_complex(cv.beta)
                     for cv in self.plan.convs}
        # per convolution node, what `Run.conv` would otherwise ask sympy on every call: the
        # constant factor alpha (None where it is an expression), beta != 0, gate != 1
        self.const_alpha = {cv.node: (None if not cv.alpha.is_Number else float(cv.alpha)
                                      if cv.alpha.is_real else complex(cv.alpha))
                            for cv in self.plan.convs}
        self.has_beta = {cv.node: cv.beta != 0 for cv in self.plan.convs}
        self.has_gate = {cv.node: cv.gate != 1 for cv in self.plan.convs}
        # beta added to the first tap by the Vandermonde kernel itself (no launches of its
        # own): a diagonal state's new value read, a real constant alpha, beta real and
        # varying only along the kernel's dims
        self.beta_in_kernel = {
            cv.node: (self.has_beta[cv.node] and self.real[cv.node] and cv.new
                      and isinstance(self.const_alpha[cv.node], float)
                      and self.plan.state(cv.state).kind == "diagonal"
                      and not is_complex(cv.beta)
                      and set(expr_dims(self.g, cv.beta)) <= set(self.kdims[cv.node]))
            for cv in self.plan.convs}
        self.tapes: dict[sp.Basic, Tape] = {}

    def hoisted(self, e: sp.Basic, params) -> tuple[sp.Basic, list]:
        """`e` with each largest subexpression of Params alone (`params`: node names) replaced
        by a symbol, and those (symbol, subexpression) pairs."""
        key = (e, "hoisted")
        if key not in self.tapes:
            parts: dict[sp.Basic, sp.Symbol] = {}

            def alone(x: sp.Basic) -> bool:
                syms = x.free_symbols
                return (isinstance(x, sp.Expr) and bool(syms) and not x.is_Symbol
                        and all(s.name in params for s in syms))

            def visit(x: sp.Basic) -> sp.Basic:
                if alone(x):
                    return parts.setdefault(x, sp.Symbol(f"_params{len(parts)}"))
                if not isinstance(x, (sp.Add, sp.Mul, sp.Pow, sp.Function)) or not x.args:
                    return x  # conditions and branches stay as they are
                return x.func(*[visit(a) for a in x.args])

            out = visit(e)
            self.tapes[key] = (out, [(sym, sub) for sub, sym in parts.items()])
        return self.tapes[key]

    def param_kernel(self, e, cplx: tuple[bool, ...]) -> ParamKernel | None:
        """`e` (of Params alone, or a tuple of such computed together; inputs in sorted name
        order, complex as `cplx` says) as generated kernels, or None where the printer has no
        rule for a term of it."""
        key = (e, cplx, "kernel")
        if key not in self.tapes:
            names = tuple(sorted(set().union(*(param_names(x) for x in e)))) if isinstance(
                e, tuple) else param_names(e)
            try:
                self.tapes[key] = ParamKernel(e, names, cplx, 1 + len(self.g.dims))
            except NotImplementedError:
                self.tapes[key] = None
        return self.tapes[key]

    def tape(self, e: sp.Basic) -> Tape:
        """The compiled form of an expression the run evaluates (compiled on first use)."""
        if e not in self.tapes:
            self.tapes[e] = Tape(e)
        return self.tapes[e]

    def _kernel_dims(self, cv: ConvNode, form: StateForm) -> tuple[str, ...]:
        """The dims the generated kernel varies along (before alpha and beta)."""
        exprs = [cv.q, form.bbar, form.decay]
        exprs += [e for t in form.lowrank for e in (t.u, t.direct, *(c for _, c in t.via))]
        dims = set().union(*(expr_dims(self.g, e) for e in exprs)) - {cv.contract}
        return self.g.order(dims)

    def run(self, call) -> tuple[list[torch.Tensor], Sequence[torch.Tensor]]:
        """Outputs (user layouts, the call's dtype) and final states (computed when read)."""
        if call.segments is None:
            return Run(self, call, call.tensors, call.states, call.T).results()
        return per_sequence(self.g, call, lambda tensors, states, T: Run(
            self, call, tensors, states, T).results())
