"""`Layer.step`: one token through the decode kernel (or the torch lowering on CPU tensors,
the reference backend for float64), in place when asked."""
from __future__ import annotations

from typing import Any

import torch

from .. import config
from ..errors import CallError
from . import ops, reference
from .call import make_call

_WIDE = (torch.float64, torch.complex128)


def _fast_key(args: tuple, kwargs: dict, reverse: bool) -> tuple | None:
    """What a call's Fast replay depends on: each argument's shape, strides, dtype, device and
    whether it needs a gradient (positional or by name), reverse and the launch knobs; None
    when it cannot apply: some argument is not a tensor or is passed twice (the replay fills
    one slot per argument)."""
    grad = torch.is_grad_enabled()
    sig = []
    for x in (*args, *kwargs.values()):
        if not isinstance(x, torch.Tensor) or x.dtype in _WIDE:  # float64: the reference runs
            return None
        sig.append((x.shape, x.stride(), x.dtype, x.device, grad and x.requires_grad))
    if len({id(x) for x in (*args, *kwargs.values())}) != len(sig):
        return None
    return len(args), tuple(kwargs), tuple(sig), reverse, config.snapshot()


def _on_meta(args: tuple, kwargs: dict) -> bool:
    """Whether the call's first tensor is on the meta device (shapes only: the ops' fakes)."""
    first = args[0] if args else next(iter(kwargs.values()), None)
    return isinstance(first, torch.Tensor) and first.is_meta


class StepMixin:
    """The decode half of `Layer` (see its docstring)."""

    def step(self, *args: torch.Tensor, state: Any = None, inplace: bool = False,
             **kwargs: torch.Tensor) -> tuple[Any, Any]:
        """Run one token: decode.

        Prefilling T tokens with `layer(..., return_final_state=True)` and then stepping k
        tokens gives the outputs of the forward over T + k tokens, to float32 rounding.

        Args:
            *args (Tensor): the per-token slices of the step's non-state arguments, in the order
                written (keywords by name work too): a Seq argument without its time dim
                (`x[:, t]` for `Seq("b t d")`), Params as in `__call__`.
            state (Tensor | tuple[Tensor, ...], optional): the state before this token, in its
                `State` layout; a tuple in declaration order when there are several. None:
                zeros.
            inplace (bool): overwrite the given `state` tensors with the new states and return
                them: no copy and no host sync, so a step can be captured in a CUDA graph. Needs
                `state`, float32 (complex64) on every backend (float64 too on the reference
                backend): a float16 or bfloat16 state is refused, not rounded.

        Returns:
            `(outputs, new_states)`, always a pair: the output (a tuple if several) without the
            time dim, in the promoted dtype of the Seq slices; the new state (a tuple if
            several) in its `State` layout, float32 (float64 if any argument is float64).

        Raises:
            CallError: as `__call__`; `inplace=True` without `state`, or with a state of
                another dtype than the above (the message names the state).
        """
        if inplace and state is None:
            raise CallError("layer.step(inplace=True) needs state= tensors to update")
        if inplace:
            self._check_inplace(state)
        if torch.compiler.is_compiling() or _on_meta(args, kwargs):
            # lrc::step_ (mutating the states) or lrc::step, opaque to torch.compile
            outs, news = ops.compiled_step(self, args, kwargs, state, inplace)
            return (outs[0] if len(outs) == 1 else tuple(outs),
                    news[0] if len(news) == 1 else tuple(news))
        torch_prog = self._cpu_lowering(args, kwargs)
        if torch_prog is not None:  # CPU tensors under backend="auto": the torch lowering
            call = make_call(torch_prog.graph, args, kwargs, initial_state=state, step=True)
            outs, news = torch_prog.step(call)
            if inplace:
                olds = tuple(state) if isinstance(state, (tuple, list)) else (state,)
                for old, new in zip(olds, news, strict=True):
                    old.copy_(new)
                news = list(olds)
            out = outs[0] if len(outs) == 1 else tuple(outs)
            return out, (news[0] if len(news) == 1 else tuple(news))
        key = None
        if inplace and self.backend == "triton" and not self.aux:
            olds = tuple(state) if isinstance(state, (tuple, list)) else (state,)
            key = _fast_key(args, kwargs, False)
            if key is not None and all(isinstance(x, torch.Tensor) for x in olds):
                key = (key, tuple((x.shape, x.stride(), x.dtype, x.device) for x in olds))
                fast = self._fast_steps.get(key)
                outs = None
                if fast is not None:  # seen: its one launch fired again
                    outs = fast(args, kwargs, dict(zip(self.lowered.state_args, olds)),
                                olds[0].device)
                if outs is not None:
                    return (outs[0] if len(outs) == 1 else tuple(outs),
                            olds[0] if len(olds) == 1 else olds)
            else:
                key = None
        call = None
        if self.backend == "triton":
            call = make_call(self.lowered, args, kwargs, initial_state=self._in(state),
                             step=True)
            if self._float64(call, state, "state="):
                call = None
        if call is not None:
            from ..layout import part_view

            g = self.lowered
            dst = None
            if inplace and not self.aux:
                dst = {s: part_view(call.states[g[s].arg], g[s].part) for s in g.state_names}
            kept: list = []
            outs, news = self.program.step(call, dst,
                                          kept if key is not None and dst is not None else None)
            if kept:
                self._fast_steps[key] = kept[0]
            if news is not None:
                news = self._out(news)
                if inplace:  # rescaled states cannot be written in place: copy them back
                    olds = tuple(state) if isinstance(state, (tuple, list)) else (state,)
                    for old, new in zip(olds, news):
                        old.copy_(new)
        else:
            call = make_call(self.graph, args, kwargs, initial_state=state, step=True)
            outs, news = reference.run(call, step=True)
            if inplace:
                for old, new in zip(call.states.values(), news):
                    old.copy_(new)
        if inplace:
            news = list(tuple(state) if isinstance(state, (tuple, list)) else (state,))
        out = outs[0] if len(outs) == 1 else tuple(outs)
        return out, (news[0] if len(news) == 1 else tuple(news))

    def _check_inplace(self, state: Any) -> None:
        """States `step(inplace=True)` can write: float32 (complex64) on every backend, and
        float64 (complex128) where float64 calls run on the reference backend, which
        computes in float64 (backend 'reference' or 'auto')."""
        # float64 ones are the float64 check's: the reference backend runs them, or
        # backend='triton' refuses them naming the state
        ok = (torch.float32, torch.complex64, torch.float64, torch.complex128)
        wide = True
        olds = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        for name, x in zip(self.graph.state_args, olds, strict=False):
            if isinstance(x, torch.Tensor) and x.dtype not in ok:
                also = " (or float64)" if wide else ""
                raise CallError(f"layer.step(inplace=True) writes the new state into state "
                                f"{name!r}, which is {x.dtype}: the states are computed in "
                                f"float32, so pass a float32 (complex64){also} tensor to update")
