"""The chunked DPLR lowering: the delta-rule family (DeltaNet, Gated DeltaNet) in chunks.

`Program(compiled)` reads the spec's DPLR form (`form.extract`: raises Unsupported when it does
not fit, and the scan's loop runs instead). `run(call)` computes the form's per-step terms
(q, k, u, beta, the log decay; the L2 norms and gates of the spec) in PyTorch from the
inputs, in float32 and differentiably, lays them out for the kernels (batch, time, heads,
key or value), and runs the chunked kernels (kernels.py, an autograd Function in core.py);
the output's gate and skip are applied after. `reverse` runs the kernels over the flipped
sequence; packed sequences (cu_seqlens) run one at a time (`base.per_sequence`).
"""
from __future__ import annotations

import dataclasses

import torch

from ...ir.functions import tape
from ...kernels import host
from ...layout import from_canonical, to_canonical
from ..base import per_sequence
from .core import delta_chunked, two_vectors_chunked
from .form import DplrForm, extract
from .kernels import SOURCE
from .kernels_ab import SOURCE as SOURCE_AB


class Program:
    """The chunked DPLR kernels of one compiled spec (see the module docstring).

    form    the DPLR form the kernels compute
    chunk   the chunk length (None: 64 on the GPU, 32 with a per-key decay, 16 under the
            interpreter)
    """

    def __init__(self, compiled):
        self.form: DplrForm = extract(compiled)
        self.sources = {"module": SOURCE, "two_vectors": SOURCE_AB}
        self.source = SOURCE_AB if self.form.two_vectors else SOURCE
        self.chunk: int | None = None
        self.block_v: int | None = None

    def module(self, interpret: bool):
        from ...kernels import module as modules

        return modules.load(self.source, interpret)

    def run(self, call, finals: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Outputs and final states of a whole-sequence call (differentiable)."""
        if call.segments is not None:
            g = self.form.g
            return per_sequence(g, call, lambda t, s, n: self._run(dataclasses.replace(
                call, tensors=t, states=s, T=n, segments=None)))
        return self._run(call)

    # ---- one sequence per batch row

    def _run(self, call) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        f, g = self.form, self.form.g
        sizes, T = dict(call.sizes), call.T
        dev = call.device
        interpret = dev.type != "cuda"
        # per-key and two-vector chunks form their pair terms a step at a time: shorter
        # chunks on the GPU
        bt = self.chunk or (16 if interpret else 32 if f.per_key or f.two_vectors else 64)
        env = host.canonical_inputs(g, call, torch.float32)
        dep = g.state_dependent
        names = [n.name for n in g.nodes if n.name not in dep and n.name not in env]
        like = next(iter(env.values()))
        host.evaluate(g, names, env, sizes, like)
        lay = _Layout(f, sizes, T)
        val = lambda e: _value(e, env, like)
        q, k = lay.to_kernel(val(f.exprs["q"]), f.key), lay.to_kernel(val(f.exprs["k"]), f.key)
        u = lay.to_kernel(val(f.exprs["u"]), f.value)
        if f.two_vectors:   # x and y, no beta; g over the key dim (0: no decay)
            terms = [lay.to_kernel(val(f.exprs[n]), f.key) for n in "xy"]
            lg = (torch.zeros_like(q) if f.exprs["g"] is None else
                  lay.to_kernel(val(f.exprs["g"]), f.key if f.per_key else None))
            lg = lg if lg.dim() == 4 else lg[..., None].expand(q.shape)
        else:
            terms = [lay.to_kernel(val(f.exprs["beta"]), None)]
            lg = None if f.exprs["g"] is None else lay.to_kernel(val(f.exprs["g"]),
                                                                  f.key if f.per_key else None)
        if call.reverse:
            q, k, u, lg = (None if x is None else x.flip(1) for x in (q, k, u, lg))
            terms = [x.flip(1) for x in terms]
        pad = -T % bt
        if pad:
            q, k, u, lg = (None if x is None else _pad(x, pad) for x in (q, k, u, lg))
            terms = [_pad(x, pad) for x in terms]
        h0 = None
        if call.states is not None and f.state in g.state_names:
            arg = g[f.state].arg
            x = call.states.get(arg, call.states.get(f.state))
            if x is not None:
                c = to_canonical(g, x.float(), g.annotation(arg), sizes, False)
                h0 = lay.state_to_kernel(c)
        if f.two_vectors:
            o, hT = two_vectors_chunked(q, k, *terms, u, lg, h0, bt, self.block_v)
        else:
            o, hT = delta_chunked(q, k, u, terms[0], lg, h0, bt, self.block_v)
        o = o[:, :T]
        if call.reverse:
            o = o.flip(1)
        y = lay.from_kernel(o, f.value)
        if f.exprs["gate"] is not None:
            y = y * val(f.exprs["gate"])
        if f.exprs["skip"] is not None:
            y = y + val(f.exprs["skip"])
        y = y.expand(lay.canonical_shape(g[f.output].dims, T))
        out = from_canonical(g, y, g.out_axes[0], sizes, True).to(call.out_dtype)
        fin = lay.state_from_kernel(hT)
        arg = g[f.state].arg
        fin = from_canonical(g, fin, g.annotation(arg).axes, sizes, False).to(call.state_dtype)
        return [out], [fin]


def _value(e, env: dict, like: torch.Tensor) -> torch.Tensor:
    """A sympy term over the graph's state-free nodes, evaluated on their canonical values."""
    v = tape(e)({s.name: env[s.name] for s in e.free_symbols})
    if not isinstance(v, torch.Tensor):
        v = torch.as_tensor(float(v), dtype=torch.float32, device=like.device)
    return v


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """x with n zero steps appended along time (axis 1)."""
    shape = list(x.shape)
    shape[1] = n
    return torch.cat([x, x.new_zeros(shape)], 1)


class _Layout:
    """Canonical (time, *g.dims) values <-> the kernels' (batch, time, heads, last) layout."""

    def __init__(self, f: DplrForm, sizes: dict[str, int], T: int):
        self.f, self.g, self.sizes, self.T = f, f.g, sizes, T
        self.heads = [d for d in f.grid if d != f.batch]
        self.B = sizes[f.batch] if f.batch else 1
        self.H = 1
        for d in self.heads:
            self.H *= sizes[d]

    def canonical_shape(self, dims, t: int) -> tuple[int, ...]:
        return (t,) + tuple(self.sizes[d] if d in dims else 1 for d in self.g.dims)

    def _order(self, last):
        want = list(self.f.grid) + ([last] if last else [])
        present = [d for d in self.g.dims if d in want]
        lead = [self.f.batch] if self.f.batch else []
        return present, lead + [None] + self.heads + ([last] if last else [])

    def to_kernel(self, x: torch.Tensor, last: str | None) -> torch.Tensor:
        """A canonical value over time -> (B, T, H[, last]) float32."""
        g = self.g
        x = x.reshape((1,) * (1 + len(g.dims) - x.dim()) + tuple(x.shape)).float()
        present, order = self._order(last)
        x = x.expand(self.canonical_shape(present, self.T))
        x = x.reshape((self.T,) + tuple(self.sizes[d] for d in present))
        perm = [0 if d is None else 1 + present.index(d) for d in order]
        x = x.permute(perm)
        if self.f.batch is None:
            x = x.unsqueeze(0)
        tail = (self.sizes[last],) if last else ()
        return x.reshape((self.B, self.T, self.H) + tail)

    def from_kernel(self, o: torch.Tensor, last: str) -> torch.Tensor:
        """(B, T, H, last) -> canonical (T, *g.dims) with 1 where absent."""
        present, order = self._order(last)
        lead = [] if self.f.batch is None else [self.B]
        x = o.reshape(lead + [self.T] + [self.sizes[d] for d in self.heads]
                      + [self.sizes[last]])
        if self.f.batch is None:
            x = x.squeeze(0)
            order = order[1:]
        x = x.permute([order.index(None)] + [order.index(d) for d in present])
        return x.reshape(self.canonical_shape(present, self.T))

    def state_to_kernel(self, c: torch.Tensor) -> torch.Tensor:
        """A canonical state (1, *g.dims) -> (B, H, K, V)."""
        f = self.f
        x = self.to_kernel_state(c)
        return x.reshape(self.B, self.H, self.sizes[f.key], self.sizes[f.value])

    def to_kernel_state(self, c: torch.Tensor) -> torch.Tensor:
        f, g = self.f, self.g
        present = [d for d in g.dims if d in g[f.state].dims]
        x = c.reshape(tuple(self.sizes[d] for d in present))
        lead = [f.batch] if f.batch else []
        order = lead + self.heads + [f.key, f.value]
        x = x.permute([present.index(d) for d in order])
        return x if f.batch else x.unsqueeze(0)

    def state_from_kernel(self, h: torch.Tensor) -> torch.Tensor:
        """(B, H, K, V) -> a canonical state (1, *g.dims)."""
        f, g = self.f, self.g
        present = [d for d in g.dims if d in g[f.state].dims]
        lead = [f.batch] if f.batch else []
        order = lead + self.heads + [f.key, f.value]
        x = h.reshape([self.sizes[d] for d in order])
        x = x.permute([order.index(d) for d in present])
        return x.reshape(self.canonical_shape(present, 1))
