"""torch.nn modules over lrc specs: `Recurrence` for any spec, and blocks around zoo systems."""
from .blocks import BiMamba, CausalConv1d, GriffinRecurrentBlock
from .recurrence import Recurrence

__all__ = ["BiMamba", "CausalConv1d", "GriffinRecurrentBlock", "Recurrence"]
