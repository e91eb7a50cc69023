"""Discretizations and structured state matrices, as helpers a step calls.

For a diagonal A (any tensor) the helpers record whole-formula functions (`zoh_b(dt, A)`, ...)
that the discretization-expansion pass rewrites into stable primitive forms. For a DPLR matrix
`lrc.dplr(Lambda, P, Q)` = diag(Lambda) - P Q^*, the helpers return linear operators whose
`@ h` records ordinary ops (elementwise products and sums over the state dim), Woodbury's
identity included, so the passes see a diagonal-plus-low-rank update.
"""
from __future__ import annotations

from typing import Any

from ..errors import SpecError, user_src
from . import functions as F  # noqa: N812 (F: the function table, as torch's F)
from .tensor import SymTensor, apply


class LinearOperator:
    """A matrix acting on the state dim `dim`: `A @ h` records its matrix-vector product."""

    dim: str

    def __matmul__(self, h: Any) -> SymTensor:
        if not isinstance(h, SymTensor):
            raise SpecError("A @ h: h must be a symbolic tensor", user_src())
        if self.dim not in h.dims:
            raise SpecError(f"A @ h: the matrix acts on dim {self.dim!r}, but h has dims "
                            f"{h.dims}", user_src())
        return self.matvec(h)

    def matvec(self, h: SymTensor) -> SymTensor:
        raise NotImplementedError(type(self).__name__)


class DPLR(LinearOperator):
    """diag(Lambda) - P Q^* along `dim` (S4's normal-plus-low-rank form, rank one)."""

    def __init__(self, Lambda: SymTensor, P: SymTensor, Q: SymTensor, dim: str):
        self.Lambda, self.P, self.Q, self.dim = Lambda, P, Q, dim

    def matvec(self, h: SymTensor) -> SymTensor:
        return self.Lambda * h - self.P * (self.Q.conj() * h).sum(self.dim)


class _Affine(LinearOperator):
    """I + dt * A (Euler's state matrix)."""

    def __init__(self, dt: Any, A: LinearOperator):
        self.dt, self.A, self.dim = dt, A, A.dim

    def matvec(self, h: SymTensor) -> SymTensor:
        return h + self.dt * self.A.matvec(h)


class _Bilinear(LinearOperator):
    """(I - dt/2 A)^-1 (I + dt/2 A) for a DPLR A, the inverse by Woodbury's identity."""

    def __init__(self, dt: Any, A: DPLR):
        self.dt, self.A, self.dim = dt, A, A.dim

    def solve(self, v: SymTensor) -> SymTensor:
        """(I - dt/2 A)^-1 v = (D + c P Q^*)^-1 v with D = 1 - c Lambda, c = dt/2."""
        A, c, n = self.A, self.dt / 2, self.dim
        dinv = 1 / (1 - c * A.Lambda)
        w = dinv * v
        denom = 1 + c * (A.Q.conj() * dinv * A.P).sum(n)
        return w - c * dinv * A.P * (A.Q.conj() * w).sum(n) / denom

    def matvec(self, h: SymTensor) -> SymTensor:
        return self.solve(h + self.dt / 2 * self.A.matvec(h))


def dplr(Lambda: SymTensor, P: SymTensor, Q: SymTensor, dim: str | None = None) -> DPLR:
    """The state matrix diag(Lambda) - P Q^* acting on `dim` (default: Lambda's last dim)."""
    src = user_src()
    for name, x in (("Lambda", Lambda), ("P", P), ("Q", Q)):
        if not isinstance(x, SymTensor):
            raise SpecError(f"dplr: {name} must be a symbolic tensor", src)
    dim = dim or Lambda.dims[-1]
    for name, x in (("Lambda", Lambda), ("P", P), ("Q", Q)):
        if dim not in x.dims:
            raise SpecError(f"dplr: {name} has dims {x.dims}, without the state dim {dim!r}", src)
    return DPLR(Lambda, P, Q, dim)


def _scale(coef: SymTensor, B: Any) -> Any:
    return coef if (isinstance(B, (int, float)) and B == 1) else coef * B


def zoh(dt: Any, A: Any, B: Any = 1) -> tuple[Any, Any]:
    """Zero-order hold: A-bar = exp(dt A), B-bar = (exp(dt A) - 1) / A * B."""
    if isinstance(A, LinearOperator):
        raise SpecError("zoh of a DPLR matrix has no closed form; use lrc.bilinear "
                        "(S4's discretization) for structured matrices", user_src())
    return apply("zoh_a", F.zoh_a, dt, A), _scale(apply("zoh_b", F.zoh_b, dt, A), B)


def bilinear(dt: Any, A: Any, B: Any = 1) -> tuple[Any, Any]:
    """Bilinear (Tustin): A-bar = (1 + dt A/2) / (1 - dt A/2), B-bar = dt / (1 - dt A/2) * B."""
    if isinstance(A, DPLR):
        op = _Bilinear(dt, A)
        if not isinstance(B, SymTensor):
            raise SpecError("bilinear with a DPLR matrix needs B as a symbolic tensor over the "
                            "state dim", user_src())
        return op, op.solve(dt * B)
    if isinstance(A, LinearOperator):
        raise SpecError("bilinear supports diagonal and DPLR matrices", user_src())
    return apply("bilinear_a", F.bilinear_a, dt, A), _scale(apply("bilinear_b", F.bilinear_b,
                                                                   dt, A), B)


def euler(dt: Any, A: Any, B: Any = 1) -> tuple[Any, Any]:
    """Forward Euler: A-bar = 1 + dt A, B-bar = dt B."""
    if isinstance(A, LinearOperator):
        return _Affine(dt, A), dt * B
    return apply("euler_a", F.euler_a, dt, A), _scale(apply("euler_b", F.euler_b, dt, A), B)


def mamba_mix(dt: Any, A: Any, B: Any = 1) -> tuple[Any, Any]:
    """Mamba's mix of the two: A-bar = exp(dt A) (ZOH), B-bar = dt B (Euler)."""
    if isinstance(A, LinearOperator):
        raise SpecError("mamba_mix needs a diagonal A", user_src())
    return apply("mamba_a", F.mamba_a, dt, A), _scale(apply("mamba_b", F.mamba_b, dt, A), B)


DISCRETIZATIONS = {"zoh": zoh, "bilinear": bilinear, "euler": euler, "mamba": mamba_mix}


def discretize(method: str, dt: Any, A: Any, B: Any = 1) -> tuple[Any, Any]:
    """(A-bar, B-bar) by `method`: 'zoh', 'bilinear', 'euler' or 'mamba'."""
    if method not in DISCRETIZATIONS:
        raise SpecError(f"unknown discretization {method!r}; one of {sorted(DISCRETIZATIONS)}",
                        user_src())
    return DISCRETIZATIONS[method](dt, A, B)
