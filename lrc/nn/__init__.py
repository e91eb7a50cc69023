"""torch.nn modules over lrc specs: `Recurrence` for any spec, the seed families' blocks with
decode caches, and `param_groups` for the optimizer hints."""
from .blocks import BiMamba, CausalConv1d, GriffinRecurrentBlock
from .common import Cache, GatedRMSNorm, RMSNorm, param_groups
from .gla import GatedLinearAttention
from .mamba import Mamba
from .mamba2 import Mamba2
from .recurrence import Recurrence

__all__ = ["BiMamba", "Cache", "CausalConv1d", "GatedRMSNorm", "GriffinRecurrentBlock", "Mamba", "Mamba2", "Mamba2",
           "RMSNorm", "Recurrence", "param_groups"]
