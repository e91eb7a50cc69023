"""The torch lowering: the compiled graph evaluated with vectorized torch ops (the CPU's fast
path). Diagonal states are solved for all time steps at once by a two-level scan; other states
by a loop over time with batched ops; torch autograd gives the backward."""
from .program import Program

__all__ = ["Program"]
