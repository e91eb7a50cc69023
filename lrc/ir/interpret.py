"""The float64 reference interpreter: the living definition of what a Graph means.

Values are "canonical" tensors: axis 0 is time (size T, or 1 when constant in time), then one
axis per graph dim in `g.dims` order (size 1 where the value does not vary along that dim), so
broadcasting by name is plain broadcasting. Nodes that do not depend on a state are evaluated
once for all time steps; the rest in a plain loop over time.
"""
from __future__ import annotations

import torch

from .dims import Role
from .functions import tape
from .graph import Graph
from .nodes import Input, Map, Node, Rename, Shift, Sum


def canonical_shape(g: Graph, dims, sizes: dict[str, int], t: int = 1) -> tuple[int, ...]:
    present = set(dims)
    return (t,) + tuple(sizes[d] if d in present else 1 for d in g.dims)


def _axis(g: Graph, dim: str) -> int:
    return 1 + g.dims.index(dim)


def _full(g: Graph, x: torch.Tensor, dim: str, sizes: dict[str, int]) -> torch.Tensor:
    shape = list(x.shape)
    shape[_axis(g, dim)] = sizes[dim]
    return x.expand(shape)


def eval_node(g: Graph, node: Node, env: dict[str, torch.Tensor], sizes: dict[str, int],
              like: torch.Tensor) -> torch.Tensor:
    """The value of one node given its arguments' values in `env`."""
    if isinstance(node, Input):
        if node.role is Role.INDEX:
            n = sizes[node.dims[0]]
            pos = torch.arange(n, dtype=torch.float64, device=like.device)
            return pos.reshape(canonical_shape(g, node.dims, sizes))
        return env[node.name]
    if isinstance(node, Map):
        value = tape(node.expr)({a: env[a] for a in node.args})
        if not isinstance(value, torch.Tensor):
            dtype = torch.complex128 if isinstance(value, complex) else torch.float64
            value = torch.as_tensor(value, dtype=dtype, device=like.device)
        rank = 1 + len(g.dims)
        return value.reshape((1,) * (rank - value.dim()) + tuple(value.shape))
    x = env[node.arg]
    if isinstance(node, Sum):
        ax = _axis(g, node.dim)
        if x.shape[ax] == 1 and sizes[node.dim] != 1:
            return x * sizes[node.dim]
        return x.sum(ax, keepdim=True)
    if isinstance(node, Shift):
        x = _full(g, x, node.dim, sizes)
        ax, k, n = _axis(g, node.dim), node.offset, sizes[node.dim]
        if abs(k) >= n:
            return torch.zeros_like(x)
        pad = torch.zeros_like(x.narrow(ax, 0, abs(k)))
        if k >= 0:
            return torch.cat([pad, x.narrow(ax, 0, n - k)], ax)
        return torch.cat([x.narrow(ax, -k, n + k), pad], ax)
    if isinstance(node, Rename):
        perm = list(range(x.dim()))
        pairs = {_axis(g, new): _axis(g, old) for old, new in node.mapping}
        # axes vacated by a rename (old dims no one renamed to) take the axes of new dims that
        # were not old ones: x has size 1 there, so which goes where does not matter
        vacated = sorted(set(pairs.values()) - set(pairs))
        free = sorted(set(pairs) - set(pairs.values()))
        for j, src in list(pairs.items()) + list(zip(vacated, free, strict=True)):
            perm[j] = src
        return x.permute(perm)
    raise NotImplementedError(type(node).__name__)


def run(g: Graph, values: dict[str, torch.Tensor], states: dict[str, torch.Tensor],
        sizes: dict[str, int], T: int, reverse: bool = False, record: dict | None = None,
        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the recurrence over T steps from `states`.

    `values` maps each Seq/Param input to its canonical tensor (time axis T for Seq, 1 for Param),
    `states` each state to its canonical initial value (time axis 1). Returns the outputs, each
    (T, ...) canonical and expanded along its dims, and the final states. With `record` (a dict)
    it also fills record[state] with the state before each step, (T, ...) canonical.
    """
    like = next(iter(values.values()))
    dep = g.state_dependent
    env: dict[str, torch.Tensor] = dict(values)
    for node in g.nodes:
        if node.name not in dep:
            env[node.name] = eval_node(g, node, env, sizes, like)
    steps = [n for n in g.nodes if n.name in dep and not
             (isinstance(n, Input) and n.role is Role.STATE)]
    current = {s: states[s] for s in g.state_names}
    outs: list[list[torch.Tensor]] = [[None] * T for _ in g.outputs]  # type: ignore[list-item]
    for t in (reversed(range(T)) if reverse else range(T)):
        step = {k: (v[t:t + 1] if v.shape[0] > 1 else v) for k, v in env.items()}
        step.update(current)
        if record is not None:
            for s in g.state_names:
                record.setdefault(s, [None] * T)[t] = current[s]
        for node in steps:
            step[node.name] = eval_node(g, node, step, sizes, like)
        for i, o in enumerate(g.outputs):
            outs[i][t] = step[o]
        current = {s: _expand(step[new], g, g[s], sizes) for s, new in g.states}
    if record is not None and T > 0:
        for s in g.state_names:
            record[s] = torch.cat(record[s], 0)
    if T == 0:
        return ([torch.zeros(canonical_shape(g, g[o].dims, sizes, 0), dtype=torch.float64,
                             device=like.device) for o in g.outputs],
                [current[s] for s in g.state_names])
    results = [_expand(torch.cat(o, 0), g, g[name], sizes, T)
               for o, name in zip(outs, g.outputs)]
    return results, [current[s] for s in g.state_names]


def _expand(x: torch.Tensor, g: Graph, node: Node, sizes: dict[str, int], t: int = 1):
    shape = canonical_shape(g, node.dims, sizes, t)
    if x.is_complex() and not node.complex:
        x = x.real
    elif node.complex and not x.is_complex():
        x = x.to(torch.complex128)
    return x.expand(shape)
