"""Models built from lrc blocks: `LM(LMConfig(...))`, a language model from a layer pattern
with `generate()`; `Attention`, the SDPA layer it mixes in; `sample`. `lrc.models.hf`
(optional, `pip install "lrc[hf]"`, not imported here): `LrcConfig` / `LrcForCausalLM` for
Hugging Face transformers."""
from .attention import Attention
from .generate import generate, sample
from .lm import LM, LMConfig

__all__ = ["LM", "Attention", "LMConfig", "generate", "sample"]
