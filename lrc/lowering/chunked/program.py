"""The chunked tensor-core lowering: a Program of generated forward and backward kernels.

`Program(compiled)` reads the spec's chunked form (`chunked_form.extract`: raises Unsupported
when it does not fit, and the scan runs instead), generates one module holding a forward and a
backward kernel (`emit.py`, `backward.py`: what each computes is documented there), and
`run(call)` launches them as a differentiable PyTorch function in the user's layouts
(`launch.py`): every stride is passed per named dim, so nothing is copied (Mamba-2's
grouped B and C are read in place by every head of their group).

What is materialized: the output, the final state, and, when a gradient will be asked for, the
state entering every chunk (in the dot dtype); the backward reads those and writes the input
gradients. Chunk and block sizes come from a small config set timed once per shape on the GPU
(`chunked_tune`); under Triton's interpreter one small config runs.

Three shapes of each kernel, chosen per config (`Config.split`): one program per (grid
index, value block) walking its chunks with the state in registers (PHASE 0); or split over
chunks, PASS: the same walk computing only the state (or its gradient) and storing it per
chunk (PHASE 3), then every chunk's outputs (or gradients) in parallel (PHASE 2); or LOCAL:
every chunk's own part of the state (or of its gradient) and its decay in parallel (PHASE 1),
the module's states kernel passing it from chunk to chunk (front to back; back to front for
the gradient), then PHASE 2. LOCAL materializes each chunk's part and decay too.
"""
from __future__ import annotations

from types import ModuleType

import torch

from ...errors import Unsupported
from ...ir.dims import Role
from ...kernels import module as modules
from ...kernels.writer import ident
from .backward import backward_source, looped_dim
from .emit import forward_source, module_source
from .form import ChunkForm, extract
from .states import states_source
from .tune import Config


class Program:
    """The chunked kernels of one compiled spec (see the module docstring).

    form      the chunked form the kernels compute
    sources   'forward', 'backward': each kernel's own source; `source` the whole module
    override  a (forward, backward) pair of Configs to run instead of the tuned ones (tests pin
              small chunks with it)
    """

    def __init__(self, compiled):
        self.form: ChunkForm = extract(compiled)
        g = self.form.g
        for n in g.inputs(Role.SEQ) + g.inputs(Role.PARAM):
            if n.part or n.complex:
                raise Unsupported(f"input {n.arg} is complex")
        base = ident(g.name)
        self.names = {"forward": f"{base}_chunked_forward",
                      "backward": f"{base}_chunked_backward",
                      "states": f"{base}_chunked_states"}
        fwd, self.fparams = forward_source(self.form, self.names["forward"])
        bwd, self.bparams, self.graded, self.key_partial = backward_source(
            self.form, self.names["backward"])
        self.looped = looped_dim(self.form, self.graded)  # (dim, the inputs it shares)
        sts, self.sparams = states_source(self.form, self.names["states"])
        self.sources = {"forward": fwd, "backward": bwd, "states": sts}
        self.source = module_source([fwd, bwd, sts], f"Chunked kernels for {g.name}.")
        self.override: tuple[Config, Config] | None = None
        self.fixed_source: str | None = None  # the fixed-order backward's module (`fixed`)

    def module(self, interpret: bool) -> ModuleType:
        return modules.load(self.source, interpret)

    def kernel(self, which: str, interpret: bool):
        if which == "backward_det":
            return getattr(modules.load(self.fixed(), interpret), self.names[which])
        return getattr(self.module(interpret), self.names[which])

    def fixed(self) -> str:
        """The module of the backward's fixed-order variant (backward_source's `det`: no
        atomic add), generated on first use; its parameters in `dparams`."""
        if self.fixed_source is None:
            name = self.names["backward_det"] = f"{self.names['backward']}_det"
            src, self.dparams, _, _ = backward_source(self.form, name, det=True)
            self.fixed_source = module_source(
                [src], f"Chunked backward for {self.form.g.name}, sums in a fixed order.")
        return self.fixed_source

    def unfixable(self) -> list[str]:
        """The graded Seq inputs whose gradient several programs would add to even in the
        fixed-order variant: inputs lacking a grid dim other than the looped one (whose
        heads store into slabs); empty for every zoo spec."""
        f, hd = self.form, self.looped[0]
        return [n for n in self.graded if f.seq(n) and any(
            d not in f.input(n).dims and d != hd for d in f.grid)]

    def run(self, call) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Outputs and final states of a whole-sequence call (differentiable)."""
        from .launch import run

        return run(self, call)


__all__ = ["Program", "Config"]
