"""`lrc.compile`: a spec becomes a differentiable PyTorch callable with a decode `step`."""
from __future__ import annotations

from typing import Any

import torch

from ..ir.errors import CallError
from ..ir.trace import Spec
from . import reference
from .call import make_call

BACKENDS = ("auto", "reference")


class Layer:
    """A compiled recurrence. Call it on whole sequences; `step` it one token at a time."""

    def __init__(self, spec: Spec, backend: str):
        self.spec = spec
        self.graph = spec.graph
        self.backend = backend

    def __repr__(self) -> str:
        return f"<lrc.Layer {self.spec.name} backend={self.backend!r}>"

    def __call__(self, *args: torch.Tensor, initial_state: Any = None,
                 return_final_state: bool = False, reverse: bool = False,
                 cu_seqlens: torch.Tensor | None = None, **kwargs: torch.Tensor) -> Any:
        """Run over the time dim: the outputs, and with return_final_state the final states."""
        call = make_call(self.graph, args, kwargs, initial_state=initial_state,
                         reverse=reverse, cu_seqlens=cu_seqlens)
        outs, finals = reference.run(call)
        out = outs[0] if len(outs) == 1 else tuple(outs)
        if not return_final_state:
            return out
        return out, (finals[0] if len(finals) == 1 else tuple(finals))

    def step(self, *args: torch.Tensor, state: Any = None, inplace: bool = False,
             **kwargs: torch.Tensor) -> tuple[Any, Any]:
        """One token: args are the per-token slices (time dim dropped); returns (outputs, states).

        With inplace=True the given state tensors are overwritten with the new states and
        returned."""
        call = make_call(self.graph, args, kwargs, initial_state=state, step=True)
        if inplace and state is None:
            raise CallError("layer.step(inplace=True) needs state= tensors to update")
        outs, news = reference.run(call, step=True)
        if inplace:
            olds = tuple(state) if isinstance(state, (tuple, list)) else (state,)
            for old, new in zip(olds, news):
                old.copy_(new)
            news = list(olds)
        out = outs[0] if len(outs) == 1 else tuple(outs)
        return out, (news[0] if len(news) == 1 else tuple(news))


def compile(spec: Spec, *, backend: str = "auto") -> Layer:  # noqa: A001 (lrc.compile)
    """Compile a traced spec into a Layer."""
    if not isinstance(spec, Spec):
        raise TypeError(f"lrc.compile takes a spec made by @lrc.recurrence, got {spec!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return Layer(spec, "reference")
