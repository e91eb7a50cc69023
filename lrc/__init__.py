"""lrc: a compiler for linear-recurrence sequence layers.

Write one time step of a state space model or linear RNN; lrc traces it, proves it linear in
the state, and compiles it into a differentiable layer with a one-token decode step.
"""
from . import config
from .errors import CacheWarning, CallError, IRError, LoweringError, SpecError, Unsupported
from .ir.dims import Param, Seq, State
from .ir.structured import bilinear, discretize, dplr, euler, mamba_mix, zoh
from .ir.tensor import (
    abs,
    cos,
    exp,
    expm1,
    index,
    log,
    log1p,
    logsigmoid,
    maximum,
    minimum,
    relu,
    shift,
    sigmoid,
    silu,
    sin,
    softplus,
    sqrt,
    tanh,
    where,
)
from .ir.trace import Spec, recurrence
from .passes.pipeline import explain
from .runtime import Layer, compile

__version__ = "0.1.0"

__all__ = [
    "CacheWarning", "CallError", "IRError", "Layer", "LoweringError", "Unsupported", "config",
    "Param", "Seq", "Spec", "SpecError", "State", "abs", "bilinear", "compile", "cos",
    "discretize", "dplr", "euler", "exp", "explain", "expm1", "index", "log", "log1p",
    "logsigmoid", "mamba_mix", "maximum", "minimum", "recurrence", "relu", "shift", "sigmoid",
    "silu", "sin", "softplus", "sqrt", "tanh", "where", "zoh",
]
