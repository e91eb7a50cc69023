"""`Recurrence`: any spec as a torch.nn.Module whose Params are nn.Parameters."""
from __future__ import annotations

from typing import Any

import torch

from ..ir.dims import Role
from ..ir.trace import Spec
from ..runtime import compile as lrc_compile


class Recurrence(torch.nn.Module):
    """A compiled spec holding its Param tensors as nn.Parameters; forward takes the Seq inputs.

    `Recurrence(spec, **params)` copies each Param tensor into an nn.Parameter of the same name
    (`module.A_log`). `forward(*seqs, initial_state=None, return_final_state=False,
    reverse=False, cu_seqlens=None, **seqs_by_name)` and `step(*tokens, state=None)` follow
    the compiled layer's calling convention with the Params left out.
    """

    def __init__(self, spec: Spec, backend: str = "auto", **params: torch.Tensor):
        super().__init__()
        if not isinstance(spec, Spec):
            raise TypeError(f"Recurrence takes a spec made by @lrc.recurrence, got {spec!r}")
        g = spec.graph
        self.spec = spec
        self.layer = lrc_compile(spec, backend=backend)
        self.param_names = tuple(p for p in g.params if g.annotation(p).role is Role.PARAM)
        self.seq_names = tuple(p for p in g.params if g.annotation(p).role is Role.SEQ)
        missing = [p for p in self.param_names if p not in params]
        unknown = [p for p in params if p not in self.param_names]
        if missing or unknown:
            raise TypeError(f"Recurrence({spec.name}): Params are {list(self.param_names)}; "
                            + (f"missing {missing}" if missing else f"unknown {unknown}"))
        for name in self.param_names:
            if hasattr(type(self), name) or name in self.__dict__:
                raise TypeError(f"Recurrence({spec.name}): Param {name!r} would shadow a "
                                "Module attribute; rename it in the spec")
            self.register_parameter(name, torch.nn.Parameter(params[name].detach().clone()))

    @classmethod
    def from_zoo(cls, name: str, dtype: torch.dtype = torch.float32, device: Any = "cpu",
                 backend: str = "auto", **dim_sizes: int) -> Recurrence:
        """A zoo system with its standard initialization, e.g. Recurrence.from_zoo('lru', d=64)."""
        from ..zoo import ZOO

        if name not in ZOO:
            raise KeyError(f"no zoo system {name!r}; one of {sorted(ZOO)}")
        entry = ZOO[name]
        return cls(entry.spec, backend, **entry.init_params(dtype, device, **dim_sizes))

    def _bind(self, seqs: tuple, kwargs: dict, what: str) -> dict[str, torch.Tensor]:
        if len(seqs) > len(self.seq_names):
            raise TypeError(f"{what} takes {len(self.seq_names)} Seq inputs "
                            f"({', '.join(self.seq_names)}), got {len(seqs)}")
        args = dict(zip(self.seq_names, seqs, strict=False))
        for k, v in kwargs.items():
            if k not in self.seq_names:
                hint = " (a Param: it lives in the module)" if k in self.param_names else ""
                raise TypeError(f"{what} got an unexpected argument {k!r}{hint}")
            if k in args:
                raise TypeError(f"{what} got argument {k!r} twice")
            args[k] = v
        args.update({p: getattr(self, p) for p in self.param_names})
        return args

    def forward(self, *seqs: torch.Tensor, initial_state: Any = None,
                return_final_state: bool = False, reverse: bool = False,
                cu_seqlens: torch.Tensor | None = None, **kwargs: torch.Tensor) -> Any:
        """Run over the sequence: outputs, and with return_final_state the final states."""
        args = self._bind(seqs, kwargs, f"{self.spec.name}.forward")
        return self.layer(initial_state=initial_state, return_final_state=return_final_state,
                          reverse=reverse, cu_seqlens=cu_seqlens, **args)

    def step(self, *tokens: torch.Tensor, state: Any = None, **kwargs: torch.Tensor) -> Any:
        """Decode one token: the per-token Seq slices in, (outputs, new states) out."""
        return self.layer.step(state=state, **self._bind(tokens, kwargs,
                                                         f"{self.spec.name}.step"))

    def extra_repr(self) -> str:
        shapes = ", ".join(f"{p}={tuple(getattr(self, p).shape)}" for p in self.param_names)
        return f"{self.spec.name}: ({', '.join(self.seq_names)}) -> y; {shapes}"
