"""Graph -> Graph passes, each a pure function in its own file, run in PIPELINE order."""
from .linearity import check_linear

PIPELINE = (check_linear,)

__all__ = ["PIPELINE", "check_linear"]
