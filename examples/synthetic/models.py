"""The models the synthetic tasks train: small `lrc.models.LM`s that differ only in their token
mixer, and the user-written one, the README's Mamba-1 step inside a small block.

    mamba  lrc.nn.Mamba                  selective SSM (S6)
    s4d    lrc.nn.S4D                    time-invariant diagonal SSM (LTI; a long convolution)
    gla    lrc.nn.GatedLinearAttention   data-dependent gated linear attention
    hawk   lrc.nn.GriffinRecurrentBlock  RG-LRU, a gated diagonal linear RNN
    user   SelectiveBlock below          the README's quick-start spec, compiled by lrc
"""
from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

import lrc
from lrc import Param, Seq, State, exp, softplus
from lrc.models import LM, LMConfig
from lrc.nn import CausalConv1d
from lrc.nn.common import no_weight_decay


@lrc.recurrence
def mamba1(u: Seq("b t d"), dt: Seq("b t d"), B: Seq("b t n"), C: Seq("b t n"),
           A: Param("d n"), D: Param("d"), dt_bias: Param("d"), h: State("b d n")):
    """The README's quick-start spec, as a user writes it: one token of Mamba-1's S6."""
    delta = softplus(dt + dt_bias)
    h = exp(delta * A) * h + delta * B * u        # must be affine in h
    return (C * h).sum("n") + D * u, h            # (outputs, new states)


class SelectiveBlock(nn.Module):
    """A user's block around the README spec: in/out projections, a short causal convolution,
    input-dependent dt, B and C, and a silu output gate. A = -exp(A_log) keeps every decay in
    (0, 1) while A_log trains freely; the spec takes A as any tensor, so autograd reaches A_log."""

    def __init__(self, d_model: int, d_state: int = 16, expand: int = 2, d_conv: int = 4):
        super().__init__()
        d = expand * d_model
        self.d_state = d_state
        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        self.conv = CausalConv1d(d, d_conv)
        self.x_proj = nn.Linear(d, d + 2 * d_state, bias=False)
        self.out_proj = nn.Linear(d, d_model, bias=False)
        # S4D-Real decays A = -(1..n) and step sizes between 1e-3 and 1e-1, as Mamba starts
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1.0)).repeat(d, 1))
        self.D = nn.Parameter(torch.ones(d))
        lo, hi = torch.log(torch.tensor([1e-3, 1e-1])).tolist()
        dt = torch.exp(torch.empty(d).uniform_(lo, hi))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))   # softplus^-1(dt)
        no_weight_decay(self.A_log, self.D, self.dt_bias)
        self.scan = lrc.compile(mamba1)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: object = None) -> torch.Tensor:
        """(b, t, d_model) -> (b, t, d_model); LM's mixer interface (no packing, no cache)."""
        if cu_seqlens is not None or cache is not None:
            raise NotImplementedError("SelectiveBlock: no packed sequences or decode cache")
        u, z = self.in_proj(x).chunk(2, -1)
        u = F.silu(self.conv(u))
        dt, B, C = self.x_proj(u).split([u.shape[-1], self.d_state, self.d_state], -1)
        y = self.scan(u, dt, B, C, -torch.exp(self.A_log), self.D, self.dt_bias)
        return self.out_proj(y * F.silu(z))


LETTERS = {"mamba": "M", "s4d": "S", "gla": "G", "hawk": "H"}
MODELS = (*LETTERS, "user")


def build_model(name: str, vocab_size: int, d_model: int, n_layers: int) -> LM:
    """An LM of n_layers pre-norm blocks (mixer, then a gated MLP) with the named mixer."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    letter = LETTERS.get(name, "G")
    model = LM(LMConfig(vocab_size=vocab_size, d_model=d_model, pattern=letter * n_layers))
    if name == "user":   # LM's layers, each mixer swapped for the user's block
        for layer in model.layers:
            layer.mixer = SelectiveBlock(d_model)
    return model
