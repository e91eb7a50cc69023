"""torch.nn modules over lrc specs: `Recurrence` for any spec, the seed families' blocks with
decode caches (`allocate_inference_cache`, `forward(x, cu_seqlens=, cache=)`, `step`), and
`param_groups` for the optimizer hints."""
from .blocks import BiMamba
from .common import Cache, CausalConv1d, GatedRMSNorm, RMSNorm, param_groups
from .gla import GatedLinearAttention
from .h3 import H3
from .hyena import HyenaOperator
from .lru import LRU, LRUBlock
from .mamba import Mamba
from .mamba2 import Mamba2
from .recurrence import Recurrence
from .retnet import MultiScaleRetention
from .rglru import GriffinRecurrentBlock
from .rwkv6 import RWKV6TimeMix
from .s4 import S4
from .s4d import S4D
from .vim import VimMamba

__all__ = ["H3", "LRU", "S4", "S4D", "BiMamba", "Cache", "CausalConv1d", "GatedLinearAttention",
           "GatedRMSNorm", "GriffinRecurrentBlock", "HyenaOperator", "LRUBlock", "Mamba",
           "Mamba2", "MultiScaleRetention", "RMSNorm", "RWKV6TimeMix", "Recurrence", "VimMamba",
           "param_groups"]
