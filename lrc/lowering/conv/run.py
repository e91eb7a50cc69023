"""One call of the convolution lowering: the sequence nodes over all time steps at once,
each convolution node by FFT, and the final states computed only when read (see
program.py for the math)."""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import sympy as sp
import torch

from ...ir import interpret
from ...ir.dims import Role
from ...ir.nodes import Input, Map
from ...layout import (
    broadcast_shape,
    expanded,
    from_canonical,
    permuted,
    reshaped,
    to_canonical,
)
from ...passes.analysis import expr_dims
from . import fft as conv_fft
from . import gen as conv_gen
from .plan import ConvNode, StateForm

_C64 = {True: torch.complex128, False: torch.complex64}


@functools.lru_cache(maxsize=4096)
def param_names(e: sp.Basic) -> tuple[str, ...]:
    """The names `e` reads, sorted (cached: sympy walks the tree for free_symbols)."""
    return tuple(sorted(s.name for s in e.free_symbols))


class _Finals(Sequence):
    """Final states, computed on first access (a forward that does not return them skips it)."""

    def __init__(self, run: Run):
        self._run, self._values = run, None

    def __len__(self) -> int:
        return len(self._run.g.state_args)

    def __getitem__(self, i):
        if self._values is None:
            self._values = self._run.finals()
        return self._values[i]


class Run:
    """One call: values by node name, canonical (time, *dims) as the reference interpreter
    keeps them; `p64` the Params-only nodes in float64 (kernel generation)."""

    def __init__(self, prog, call, tensors, states, T: int):
        self.prog, self.g, self.plan, self.call, self.T = prog, prog.g, prog.plan, call, T
        self.sizes = call.sizes
        self.tensors, self.states = tensors, states
        self.env: dict[str, torch.Tensor] = {}
        self.p64: dict[str, torch.Tensor] = {}
        self.like = next(iter(tensors.values()))
        self.cache: dict = {}

    # ---- values

    def results(self):
        g = self.g
        outs = []
        for o, axes in zip(g.outputs, g.out_axes, strict=False):
            y = self.value(o) if self.T else torch.zeros(
                interpret.canonical_shape(g, g[o].dims, self.sizes, 0), device=self.like.device)
            y = y.flip(0) if self.call.reverse else y
            y = expanded(y, interpret.canonical_shape(g, g[o].dims, self.sizes, self.T))
            outs.append(from_canonical(g, y, axes, self.sizes, True)
                        .to(self.call.out_dtype).contiguous())
        return outs, _Finals(self)

    def value(self, name: str) -> torch.Tensor:
        """A node's value for the seq evaluation (float32 / complex64)."""
        if name in self.env:
            return self.env[name]
        g, node = self.g, self.g[name]
        if name in self.plan.params:
            x = self.param(name)
            v = x.to(_C64[False] if x.is_complex() else torch.float32)
        elif name in self.prog.formed:
            form, new = self.prog.formed[name]
            v = self.state_seq(form) if new else self.state_prev(form)
        elif name in self.prog.convs:
            v = self.conv(self.prog.convs[name])
        elif isinstance(node, Input) and node.role is Role.STATE:  # an old value read as is
            v = self.state_prev(self.plan.state(name))
        elif isinstance(node, Input):
            x = self.tensors[node.arg]
            x = x.to(_C64[False] if x.is_complex() else torch.float32)
            v = to_canonical(g, x, node.annotation, self.sizes, True)
            v = v.flip(0) if self.call.reverse else v
        elif isinstance(node, Map):  # its terms of Params alone in float64 (see `expr`)
            v = self.expr(node.expr)
        else:
            for a in node.args:
                self.value(a)
            v = interpret.eval_node(g, node, self.env, self.sizes, self.like)
        self.env[name] = v
        return v

    def param(self, name: str) -> torch.Tensor:
        """A Params-only node in float64 / complex128 (canonical, time axis 1)."""
        if name not in self.p64:
            node = self.g[name]
            if isinstance(node, Input) and node.role is Role.PARAM:
                x = self.tensors[node.arg]
                x = x.to(_C64[True] if (x.is_complex() or node.annotation.complex)
                         else torch.float64)
                v = to_canonical(self.g, x, node.annotation, self.sizes, False)
            else:
                for a in node.args:
                    self.param(a)
                v = interpret.eval_node(self.g, node, self.p64, self.sizes, self.like)
            self.p64[name] = v
        return self.p64[name]

    def param_view(self, name: str) -> torch.Tensor:
        """A Params-only node as a generated kernel reads it: a Param in its own dtype
        (canonical, a view where its layout allows), another node in float64."""
        node = self.g[name]
        if not (isinstance(node, Input) and node.role is Role.PARAM):
            return self.param(name)
        key = ("view", name)
        if key not in self.cache:
            x = self.tensors[node.arg]
            if node.annotation.complex and not x.is_complex():
                x = x.to(torch.complex128)
            self.cache[key] = to_canonical(self.g, x, node.annotation, self.sizes, False)
        return self.cache[key]

    def generated(self, e: sp.Basic, wide: bool) -> torch.Tensor | None:
        """`e`, of Params alone, by its generated kernel (float64, or float32 rounded once);
        None where it has none (then `Tape` evaluates it op by op)."""
        key = ("param", e, wide)
        if key not in self.cache:
            xs = [self.param_view(n) for n in param_names(e)]
            pk = self.prog.param_kernel(e, tuple(x.is_complex() for x in xs))
            self.cache[key] = None if pk is None else pk(
                xs, torch.float64 if wide else torch.float32)
        return self.cache[key]

    def prefetch(self, exprs: list[sp.Basic], wide: bool) -> None:
        """Several expressions of Params alone through one pair of generated kernels (one
        launch and one autograd node for all: the convolution's host time), where there are
        two or more and their inputs broadcast to one shape; `generated` then finds them."""
        todo = list(dict.fromkeys(e for e in exprs if not isinstance(e, sp.Symbol)
                                  and param_names(e) and ("param", e, wide) not in self.cache))
        if len(todo) < 2:
            return
        names = sorted(set().union(*(param_names(e) for e in todo)))
        xs = {n: self.param_view(n) for n in names}
        shape = broadcast_shape(*(x.shape for x in xs.values()))
        if any(broadcast_shape(*(xs[n].shape for n in param_names(e))) != shape for e in todo):
            return
        pk = self.prog.param_kernel(tuple(todo), tuple(xs[n].is_complex() for n in names))
        if pk is None:
            return
        outs = pk([xs[n] for n in names], torch.float64 if wide else torch.float32)
        for e, v in zip(todo, outs, strict=True):
            self.cache[("param", e, wide)] = v

    def expr(self, e: sp.Basic, wide: bool = False) -> torch.Tensor:
        """An expression over node symbols, canonical: Params in float64 when `wide` (and then
        it may only read Params), else everything in float32 - but an expression of Params
        alone is still computed in float64 and rounded once (its gradient keeps its digits
        where float32 cancels, as tanh's 1 - y^2 where tanh saturates)."""
        env = {}
        if not wide:  # the parts of Params alone: float64, rounded once
            e, parts = self.prog.hoisted(e, self.plan.params)
            for sym, sub in parts:
                x = self.generated(sub, False)
                if x is None:
                    t = self.prog.tape(sub)
                    x = t({name: self.param(name) for name in t.names})
                env[sym.name] = x.to(_C64[False] if x.is_complex() else torch.float32)
        elif not isinstance(e, sp.Symbol) and param_names(e):
            v = self.generated(e, True)
            if v is not None:
                return v
        tape = self.prog.tape(e)
        get = self.param if wide else self.value
        v = tape({name: env[name] if name in env else get(name) for name in tape.names})
        rank = 1 + len(self.g.dims)
        if not isinstance(v, torch.Tensor):  # a constant: a fill, not a host-to-device copy
            dtype = (_C64[wide] if isinstance(v, complex) else
                     torch.float64 if wide else torch.float32)
            return torch.full((1,) * rank, v, dtype=dtype, device=self.like.device)
        return reshaped(v, (1,) * (rank - v.dim()) + tuple(v.shape))

    def seq_expr(self, e: sp.Basic) -> torch.Tensor:
        """An expression as a sequence: (T, *dims) even where it is constant in time."""
        v = self.expr(e)
        return v if v.shape[0] == self.T else v.expand(self.T, *v.shape[1:])

    def h0(self, form: StateForm) -> torch.Tensor | None:
        """The initial state in float64 (canonical, time axis 1), or None for zeros."""
        if self.states is None:
            return None
        x = self.states[form.arg]
        ann = self.g.annotation(form.arg)
        x = x.to(_C64[True] if x.is_complex() or ann.complex else torch.float64)
        return to_canonical(self.g, x, ann, self.sizes, False)

    # ---- layouts: time-last canonical (*dims, L) <-> flat (groups..., L)

    def flat(self, x: torch.Tensor, *groups) -> torch.Tensor:
        """(*g.dims, L) with size 1 where absent -> (prod group 0, prod group 1, ..., L)."""
        dims = self.g.dims
        used = [d for grp in groups for d in grp]
        x = expanded(x, [self.sizes[d] if d in used else 1 for d in dims] + [x.shape[-1]])
        order = [dims.index(d) for d in used] + [i for i, d in enumerate(dims) if d not in used]
        x = permuted(x, order + [len(dims)])
        return reshaped(x, [math.prod(self.sizes[d] for d in grp) for grp in groups] +
                        [x.shape[-1]])

    def unflat(self, y: torch.Tensor, *groups) -> torch.Tensor:
        """The inverse of `flat` (the groups' dims in any order)."""
        used = [d for grp in groups for d in grp]
        y = reshaped(y, [self.sizes[d] for d in used] + [y.shape[-1]])
        canon = self.g.order(used)
        y = permuted(y, [used.index(d) for d in canon] + [len(used)])
        return reshaped(y, [self.sizes[d] if d in used else 1 for d in self.g.dims] +
                        [y.shape[-1]])

    @staticmethod
    def last(x: torch.Tensor) -> torch.Tensor:
        """Canonical (time, *dims) -> time-last (*dims, time)."""
        return x.movedim(0, -1)

    # ---- convolution nodes

    def conv(self, cv: ConvNode) -> torch.Tensor:
        form = self.plan.state(cv.state)
        T, g = self.T, self.g
        kd, real = self.prog.kdims[cv.node], self.prog.real[cv.node]
        lk = T if form.kind != "shift" else min(T, self.sizes[form.mix] + (0 if cv.new else 1))
        w = self.last(self.seq_expr(form.w))
        kshape = tuple(self.sizes[d] if d in self.prog.kshape_dims[cv.node] else 1
                       for d in g.dims)
        pending = conv_fft.start(w, kshape, lk, real, reverse=False)
        nf = pending.nf
        const = self.prog.const_alpha[cv.node]
        fold = const if isinstance(const, float) else 1.0  # a real constant: in the kernel
        # the kernel zero-padded to nf taps and times fold / nf (conv_fft.padded): generated
        # that way, so it is this call's own tensor and beta can go into it in place
        fused = self.prog.beta_in_kernel[cv.node]
        k = self.unflat(self.kernel(cv, form, kd, lk, fold / nf, nf,
                                    self.beta_rows(cv, kd) if fused else None), kd)
        k = k.to(torch.float32 if not k.is_complex() else _C64[False])
        alpha: torch.Tensor | float | complex = 1.0 if const is None else const
        if const is not None and const != fold:  # a complex constant
            k = k * alpha
        elif const is None:
            alpha = self.last(self.expr(cv.alpha, wide=True)).to(k.dtype if real else
                                                                  _C64[False])
            k = alpha * k
        if self.prog.has_beta[cv.node] and not fused:  # + beta delta: beta / nf at tap 0
            beta = self.last(self.expr(cv.beta, wide=True)).to(k.dtype) / nf
            rows = broadcast_shape(k.shape[:-1], beta.shape[:-1])
            if tuple(rows) != tuple(k.shape[:-1]):
                k = k.expand(*rows, k.shape[-1]).clone()
            k[..., :1] += beta
        y = pending.finish_padded(k)
        y0 = self.initial_term(cv, form, kd)
        if y0 is not None:
            y = y + alpha * y0
        y = y.movedim(-1, 0)
        if self.prog.has_gate[cv.node]:
            y = y * self.expr(cv.gate)
        return y

    def log_decay(self, form: StateForm) -> torch.Tensor:
        """log a as a complex128 canonical tensor (the exponent itself when a = exp(x))."""
        d = form.decay
        x = self.expr(d.args[0] if isinstance(d, sp.exp) else d, wide=True).to(_C64[True])
        return x if isinstance(d, sp.exp) else torch.log(x)

    def beta_rows(self, cv: ConvNode, kd) -> torch.Tensor:
        """beta as the Vandermonde kernel adds it, one value per kernel row (a Param read in
        its own dtype, with no conversion launched; an expression in float64)."""
        name = cv.beta.name if isinstance(cv.beta, sp.Symbol) else None
        node = self.g[name] if name is not None and name in self.g else None
        if isinstance(node, Input) and node.role is Role.PARAM:
            x = self.param_view(name)
        else:
            x = self.expr(cv.beta, wide=True)
        return self.flat(self.last(x), kd)[..., 0]

    def kernel(self, cv: ConvNode, form: StateForm, kd, lk: int, scale: float = 1.0,
               width: int | None = None, beta: torch.Tensor | None = None) -> torch.Tensor:
        """scale K (rows = kernel dims, lk taps, then zeros up to `width` taps when given):
        complex unless the readout is only read as Re; with `beta` (diagonal states, the new
        value read), beta / width added to the first tap."""
        c, T = (cv.contract,), self.T
        if form.kind == "diagonal":
            d = form.decay
            self.prefetch([d.args[0] if isinstance(d, sp.exp) else d, cv.q * form.bbar], True)
            la = self.flat(self.last(self.log_decay(form)), kd, c)[..., 0]
            w = self.flat(self.last(self.expr(cv.q * form.bbar, wide=True)), kd, c)[..., 0]
            shift = 0 if cv.new else 1
            k = conv_gen.vander(la, w, T - shift, real=cv.real, scale=scale,
                                width=None if width is None else width - shift, beta=beta,
                                beta_scale=1.0 / (width or 1))
            return k if cv.new else torch.cat([k.new_zeros(k.shape[0], 1), k], 1)
        if form.kind == "dplr":
            dp = self.dplr(form, kd)
            q = self.flat(self.last(self.expr(cv.q, wide=True)), kd, c)[..., 0]
            bbar = self.flat(self.last(self.expr(form.bbar, wide=True)), kd, c)[..., 0]
            k = dp.kernel(q.to(_C64[True]), bbar.to(_C64[True]))
            k = k if cv.new else conv_gen.shift_right(k)
            k = k.real if cv.real else k
        else:  # shift register
            q = self.flat(self.last(self.expr(cv.q, wide=True)), kd, c)[..., 0]
            q = q if cv.new else torch.cat([q.new_zeros(q.shape[0], 1), q], 1)
            k = q[:, :lk]
        if width is None:
            return k * scale if scale != 1 else k
        return conv_fft.padded(k * (scale * width) if scale * width != 1 else k, width)

    def dplr(self, form: StateForm, kd) -> conv_gen.Dplr:
        """The state's diag(d) + U^T V over rows `kd`, with Abar^T (cached per call)."""
        key = ("dplr", form.name, kd)
        if key not in self.cache:
            c = (form.mix,)
            row = lambda e: self.flat(self.last(self.expr(e, wide=True)), kd, c)[..., 0] \
                .to(_C64[True])  # noqa: E731
            vs: list[torch.Tensor] = []
            for t in form.lowrank:
                v = row(t.direct)
                for i, coef in t.via:
                    v = v + row(coef).sum(-1, keepdim=True) * vs[i]
                vs.append(v)
            U = torch.stack([row(t.u) for t in form.lowrank], 1)
            self.cache[key] = conv_gen.Dplr(row(form.decay), U, torch.stack(vs, 1), self.T)
        return self.cache[key]

    def initial_term(self, cv: ConvNode, form: StateForm, kd) -> torch.Tensor | None:
        """The readout's response to the initial state, time-last canonical, or None."""
        h0 = self.h0(form)
        if h0 is None:
            return None
        c = (cv.contract,)
        bd = self.g.order(set(form.dims) - set(kd) - set(c))
        rows = self.g.order(set(bd) | set(kd))
        q = self.expr(cv.q, wide=True)
        if form.kind == "diagonal":
            la = self.log_decay(form)
            w0 = q * h0 * (torch.exp(la) if cv.new else 1)
            y = conv_gen.vander(self.flat(self.last(la), rows, c)[..., 0],
                                self.flat(self.last(w0), rows, c)[..., 0], self.T, cv.real)
        elif form.kind == "dplr":
            dp = self.dplr(form, kd)
            n_b = math.prod(self.sizes[d] for d in bd)
            h = self.flat(self.last(h0), bd, kd, c)[..., 0]                 # (B, R, N)
            right = (dp.A @ h[..., None])[..., 0] if cv.new else h
            qr = self.flat(self.last(q), kd, c)[..., 0].to(_C64[True])
            qr = qr.expand(n_b, *qr.shape).reshape(-1, qr.shape[-1])
            y = dp.repeat(n_b).kernel(qr, right.reshape(-1, right.shape[-1]))
            y = y.real if cv.real else y
            y = y.reshape(n_b, -1, self.T)
            rows = bd + kd
        else:
            y = self.shift_initial(cv, form, q, h0, bd, kd)
            rows = bd + kd
        y = self.unflat(y, rows) if form.kind != "shift" else y
        return y.to(torch.float32 if not y.is_complex() else _C64[False])

    def shift_initial(self, cv, form, q, h0, bd, kd) -> torch.Tensor:
        """sum_{j >= 0} q[t + 1 + j] h0[j] (new state; q[t + j] for the old) over t < T."""
        M, T, m = self.sizes[form.mix], self.T, (form.mix,)
        qf = self.flat(self.last(q), kd, m)[..., 0]                       # (R, M)
        hf = self.flat(self.last(h0), bd, kd, m)[..., 0]                  # (B, R, M)
        n = conv_fft.fft_size(2 * M)
        corr = torch.fft.ifft(torch.fft.fft(qf, n) * torch.fft.fft(hf.flip(-1), n))
        corr = corr[..., M - 1:2 * M - 1]                                 # corr[s], s < M
        corr = corr[..., (1 if cv.new else 0):]
        corr = corr.real if not (qf.is_complex() or hf.is_complex()) or cv.real else corr
        out = torch.zeros(*corr.shape[:-1], T, dtype=corr.dtype, device=corr.device)
        s = min(T, corr.shape[-1])
        out[..., :s] = corr[..., :s]
        return self.unflat(out.reshape(-1, T), bd + kd)

    def state_seq(self, form: StateForm) -> torch.Tensor:
        """A formed state's whole sequence h'_t (canonical)."""
        key = ("seq", form.name)
        if key not in self.cache:
            g, T, sd = self.g, self.T, form.dims
            full = interpret.canonical_shape(g, sd, self.sizes, T)
            if form.kind == "shift":
                h = self.shift_seq(form)
            elif form.decay == 0:                                   # no memory: h' = b
                h = self.seq_expr(form.bbar * form.w).expand(full)
            else:
                h = self.decay_seq(form)
            if not g[form.name].complex and h.is_complex():
                h = h.real
            elif g[form.name].complex and not h.is_complex():
                # a complex state whose sequence came out real (its input term is real or 0):
                # complex, so that a complex initial state is not cast to its real part
                h = h.to(torch.promote_types(h.dtype, torch.complex64))
            self.cache[key] = h.expand(full)
        return self.cache[key]

    def state_prev(self, form: StateForm) -> torch.Tensor:
        """h_{t-1}: the initial state, then the sequence shifted by one step."""
        h = self.state_seq(form)
        h0 = self.h0(form)
        first = torch.zeros_like(h[:1]) if h0 is None else h0.to(h.dtype).expand_as(h[:1])
        return torch.cat([first, h[:-1]], 0)

    def decay_seq(self, form: StateForm) -> torch.Tensor:
        """h'_t = sum_l a^l b_{t-l} + a^{t+1} h0 per state element, by FFT convolution."""
        T, sd = self.T, form.dims
        b = self.last(self.seq_expr(form.bbar * form.w))
        la = self.log_decay(form)
        da = self.g.order(expr_dims(self.g, form.decay))
        ones = torch.ones(1, dtype=_C64[True], device=la.device)
        k = conv_gen.vander(self.flat(self.last(la), da),
                            ones.expand(math.prod(self.sizes[d] for d in da), 1), T, False)
        k = self.unflat(k, da).to(_C64[False])
        h = conv_fft.start(b, tuple(k.shape[:-1]), T, False, reverse=False).finish(k)
        h0 = self.h0(form)
        if h0 is not None:
            y0 = conv_gen.vander(self.flat(self.last(la), sd),
                                 self.flat(self.last(h0 * torch.exp(la)), sd), T, False)
            h = h + self.unflat(y0, sd).to(_C64[False])
        return h.movedim(-1, 0)

    def shift_seq(self, form: StateForm) -> torch.Tensor:
        """h'_t[m] = fill_{t-m} (m <= t), h0[m - t - 1] before: a gather of the inputs."""
        g, T, M = self.g, self.T, self.sizes[form.mix]
        ax = 1 + g.dims.index(form.mix)
        rest = [d for d in form.dims if d != form.mix]
        fill = self.expr(form.w).expand(interpret.canonical_shape(g, rest, self.sizes, T))
        h0 = self.h0(form)
        h0 = (torch.zeros(interpret.canonical_shape(g, form.dims, self.sizes), device=fill.device)
              if h0 is None else h0)
        ext = torch.cat([h0.to(torch.promote_types(h0.dtype, fill.dtype) if fill.is_complex()
                               else fill.dtype)[0].movedim(ax - 1, 0).flip(0),
                         fill.squeeze(ax)], 0)                    # (M + T, *other dims)
        t = torch.arange(T, device=fill.device)
        idx = M + t[:, None] - torch.arange(M, device=fill.device)[None, :]
        return ext[idx].movedim(1, ax)

    # ---- final states

    def finals(self) -> list[torch.Tensor]:
        g, out = self.g, []
        values = {f.arg: self.final(f) for f in self.plan.states}
        cdtype = _C64[self.call.state_dtype == torch.float64]
        for arg in g.state_args:
            ann = g.annotation(arg)
            x = values[arg]
            x = x.expand(interpret.canonical_shape(g, ann.dims, self.sizes, 1))
            x = from_canonical(g, x, ann.axes, self.sizes, False)
            out.append(x.to(cdtype) if ann.complex else x.real.to(self.call.state_dtype)
                       if x.is_complex() else x.to(self.call.state_dtype))
        return out

    def final(self, form: StateForm) -> torch.Tensor:
        """h_T, canonical (1, *dims)."""
        T, h0 = self.T, self.h0(form)
        if T == 0:
            return h0 if h0 is not None else torch.zeros(
                interpret.canonical_shape(self.g, form.dims, self.sizes), device=self.like.device)
        if form.spacewise:
            return self.state_seq(form)[-1:]
        w = self.last(self.seq_expr(form.w))
        wd = self.g.order(set(expr_dims(self.g, form.w)) & set(form.dims))
        if form.kind == "shift":
            return self.shift_final(form, w, h0)
        if form.kind == "diagonal":
            rest = tuple(d for d in form.dims if d not in wd)
            la = self.log_decay(form)
            s = conv_gen.vander_dot(self.flat(self.last(la), wd, rest)[..., 0],
                                    self.flat(w.flip(-1), wd))
            h = self.unflat(s[..., None], wd, rest).movedim(-1, 0)
            h = h * self.expr(form.bbar, wide=True)
            return h if h0 is None else h + torch.exp(T * la) * h0
        exprs = [form.bbar, form.decay] + [e for t in form.lowrank
                                           for e in (t.u, t.direct, *(c for _, c in t.via))]
        kd = self.g.order(set().union(*(expr_dims(self.g, e) for e in exprs)) - {form.mix})
        dp = self.dplr(form, kd)
        c = (form.mix,)
        bbar = self.flat(self.last(self.expr(form.bbar, wide=True)), kd, c)[..., 0]
        G = dp.state_kernel(bbar.to(_C64[True]))                          # (R, T, N)
        bd = self.g.order(set(form.dims) - set(kd) - set(c))
        x = self.flat(w.flip(-1), bd, kd).to(G.dtype)                       # (B, R, T)
        h = torch.einsum("rln,brl->brn", G, x)
        if h0 is not None:
            hf = self.flat(self.last(h0), bd, kd, c)[..., 0]
            h = h + (dp.AL @ hf[..., None])[..., 0]
        return self.unflat(h[..., None], bd, kd, c).movedim(-1, 0)

    def shift_final(self, form: StateForm, w: torch.Tensor, h0) -> torch.Tensor:
        """h_T[m] = w_{T-1-m} for m < T, else h0[m - T]."""
        M, T, ax = self.sizes[form.mix], self.T, self.g.dims.index(form.mix)
        recent = w.flip(-1)[..., :min(M, T)]                  # (*dims with m of size 1, k)
        recent = recent.squeeze(ax).movedim(-1, ax)
        parts = [recent]
        if M > T:
            older = h0 if h0 is not None else torch.zeros(
                interpret.canonical_shape(self.g, form.dims, self.sizes),
                device=self.like.device)
            parts.append(older[0].narrow(ax, 0, M - T).to(recent.dtype).expand(
                *[recent.shape[i] if i != ax else M - T for i in range(recent.dim())]))
        return torch.cat(parts, ax).unsqueeze(0)
