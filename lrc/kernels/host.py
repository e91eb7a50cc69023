"""Pre and post work in PyTorch: the graph's nodes that run outside the kernels (Param
expressions, per-step gates a kernel does not fuse), over all time steps at once.
"""
from __future__ import annotations

import torch

from ..ir import interpret
from ..ir.dims import Role
from ..ir.graph import Graph
from ..ir.nodes import Input
from ..layout import part_view, to_canonical
from ..passes.analysis import params_tape, time_varying


def evaluate(g: Graph, names, env: dict[str, torch.Tensor], sizes: dict[str, int],
             like: torch.Tensor) -> None:
    """Compute nodes `names` of `g` into `env`, over all time steps at once (PyTorch).

    A node of Params alone is computed in float64 (complex128) and rounded once: it is tiny,
    and its gradient then keeps its digits where a float32 one cancels (tanh's 1 - y^2 where
    tanh saturates)."""
    varying = time_varying(g)
    wide = lambda x: x.to(torch.complex128 if x.is_complex() else torch.float64)
    fixed = params_tape(g, frozenset(names))
    if fixed is not None and not any(n in env for n in fixed[0]):
        out, tape = fixed
        vals = tape.many({a: wide(env[a]) for a in tape.names})
        rank = 1 + len(g.dims)
        for name, v in zip(out, vals):
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v, device=like.device,
                                    dtype=torch.complex128 if isinstance(v, complex) else
                                    torch.float64)
            v = v.reshape((1,) * (rank - v.dim()) + tuple(v.shape))
            env[name] = v.to(torch.complex64 if v.is_complex() else torch.float32)
    for n in g.nodes:
        index = isinstance(n, Input) and n.role is Role.INDEX
        if (n.name in names or index) and n.name not in env:
            if isinstance(n, Input) or n.name in varying:
                env[n.name] = interpret.eval_node(g, n, env, sizes, like)
                continue
            args = {a: wide(env[a]) for a in n.args}
            v = interpret.eval_node(g, n, {**env, **args}, sizes, like.double())
            env[n.name] = v.to(torch.complex64 if v.is_complex() else torch.float32)


def canonical_inputs(g: Graph, call, dtype: torch.dtype, with_time: bool = True,
                     readers=None) -> dict[str, torch.Tensor]:
    """The graph's Seq/Param inputs as canonical tensors (for pre/post work in PyTorch); with
    `readers` (node names) only those inputs the nodes read: the others go to the kernels
    as given, and a float32 copy of each (Mamba-1's u, delta and z when only exp(A_log) is
    pre work) would be ~1 GB of traffic a call at the reference shape."""
    read = None if readers is None else {a for n in readers for a in g[n].args}
    out = {}
    for node in g.inputs():
        if node.role in (Role.SEQ, Role.PARAM) and (read is None or node.name in read):
            x = part_view(call.tensors[node.arg], node.part)
            ann = node.annotation
            out[node.name] = to_canonical(g, x.to(dtype), ann, call.sizes, with_time)
    return out
