"""`LM`: a decoder-only language model from a layer pattern of lrc blocks and attention.

Each layer is pre-norm residual: x += mixer(rmsnorm(x)); x += mlp(rmsnorm(x)) (a gated MLP,
mamba_ssm's GatedMLP; none with d_intermediate=0). Embeddings, a final RMSNorm and a head tied
to the embeddings. Pattern letters:

    M Mamba   2 Mamba-2   G GatedLinearAttention   H Griffin/Hawk recurrent block
    S S4D     4 S4        R MultiScaleRetention    W RWKV-6 time mixing
    L LRU     3 H3        Y Hyena (order 2)        A attention (SDPA, rotary, KV cache)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..nn import (
    H3,
    LRU,
    S4,
    S4D,
    GatedLinearAttention,
    GriffinRecurrentBlock,
    HyenaOperator,
    Mamba,
    Mamba2,
    MultiScaleRetention,
    RMSNorm,
    RWKV6TimeMix,
)
from ..nn.common import Cache
from .attention import Attention


@dataclass
class LMConfig:
    """A model's shape. block_args: per pattern letter, keyword arguments for that block
    (e.g. {"2": {"headdim": 16, "d_state": 32}}); backend: lrc's backend for every block."""

    vocab_size: int = 256
    d_model: int = 64
    pattern: str = "MMAM"
    d_intermediate: int | None = None      # None: 4 d_model rounded up to 8; 0: no MLP
    num_heads: int = 4                     # attention heads (and GLA's default)
    max_seqlen: int = 2048                 # attention's KV cache length
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    backend: str = "auto"
    block_args: dict[str, dict[str, Any]] = field(default_factory=dict)


def make_mixer(letter: str, config: LMConfig, layer_idx: int) -> nn.Module:
    """The token mixer a pattern letter names."""
    d, be = config.d_model, config.backend
    kw = dict(config.block_args.get(letter, {}))
    if letter == "M":
        return Mamba(d, layer_idx=layer_idx, backend=be, **kw)
    if letter == "2":
        kw.setdefault("headdim", min(64, 2 * d))
        kw.setdefault("d_state", 64)
        return Mamba2(d, layer_idx=layer_idx, backend=be, **kw)
    if letter == "G":
        kw.setdefault("num_heads", config.num_heads)
        return GatedLinearAttention(hidden_size=d, layer_idx=layer_idx, backend=be, **kw)
    if letter == "H":
        return GriffinRecurrentBlock(d, backend=be, **kw)
    if letter == "S":
        return S4D(d, backend=be, **kw)
    if letter == "4":
        return S4(d, backend=be, **kw)
    if letter == "R":
        kw.setdefault("num_heads", config.num_heads)
        return MultiScaleRetention(hidden_size=d, layer_idx=layer_idx, backend=be, **kw)
    if letter == "W":
        kw.setdefault("head_size", min(64, d))
        return RWKV6TimeMix(d, layer_id=layer_idx, n_layer=len(config.pattern), backend=be,
                            **kw)
    if letter == "L":
        return LRU(kw.pop("d_hidden", d), d, backend=be, **kw)
    if letter == "3":
        return H3(d, layer_idx=layer_idx, backend=be, **kw)
    if letter == "Y":
        return HyenaOperator(d, kw.pop("l_max", config.max_seqlen), backend=be, **kw)
    if letter == "A":
        kw.setdefault("num_heads", config.num_heads)
        kw.setdefault("max_seqlen", config.max_seqlen)
        return Attention(d, **kw)
    raise ValueError(f"LM: unknown layer {letter!r} in pattern {config.pattern!r}; letters: "
                     "M Mamba, 2 Mamba-2, G GLA, H Hawk, S S4D, 4 S4, R RetNet, W RWKV-6, "
                     "L LRU, 3 H3, Y Hyena, A attention")


class GatedMLP(nn.Module):
    """fc2(silu(gate) * y), (y, gate) = fc1(x): mamba_ssm's GatedMLP."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.fc1(x).chunk(2, -1)
        return self.fc2(y * F.silu(gate))


class Block(nn.Module):
    """One pre-norm residual layer: a token mixer, then an optional gated MLP."""

    def __init__(self, mixer: nn.Module, d_model: int, d_intermediate: int, eps: float):
        super().__init__()
        self.norm = RMSNorm(d_model, eps)
        self.mixer = mixer
        if d_intermediate:
            self.norm2 = RMSNorm(d_model, eps)
            self.mlp = GatedMLP(d_model, d_intermediate)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm2(x)) if hasattr(self, "mlp") else x

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        return self._mlp(x + self.mixer(self.norm(x), cu_seqlens=cu_seqlens, cache=cache))

    def step(self, x: torch.Tensor, cache: Cache,
             state_indices: torch.Tensor | None = None) -> torch.Tensor:
        return self._mlp(x + self.mixer.step(self.norm(x), cache, state_indices))


class LM(nn.Module):
    """A language model: `forward(input_ids, cu_seqlens=None, cache=None)` gives logits;
    `step(ids, cache)` one token; `generate(...)` prefills with the training kernels and
    decodes with `step` (see lrc.models.generate)."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        if not config.pattern:
            raise ValueError("LM: the pattern names no layer")
        d = config.d_model
        hidden = config.d_intermediate
        if hidden is None:
            hidden = -(-4 * d // 8) * 8
        self.embedding = nn.Embedding(config.vocab_size, d)
        self.layers = nn.ModuleList(
            Block(make_mixer(c, config, i), d, hidden, config.norm_eps)
            for i, c in enumerate(config.pattern))
        self.norm_f = RMSNorm(d, config.norm_eps)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embedding.weight
        # mamba_ssm's init (nn.Embedding's N(0, 1), tied to the head, starts the loss near 20)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self._graphs: dict = {}

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: list[Cache] | None = None) -> torch.Tensor:
        """(b, t) token ids -> (b, t, vocab) logits. cache (from allocate_inference_cache):
        filled for decoding. cu_seqlens: packed sequences (b = 1)."""
        x = self.embedding(input_ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cu_seqlens=cu_seqlens, cache=None if cache is None else cache[i])
        return self.lm_head(self.norm_f(x))

    def step(self, input_ids: torch.Tensor, cache: list[Cache],
             state_indices: torch.Tensor | None = None) -> torch.Tensor:
        """(b,) token ids -> (b, vocab) logits of the next token; the cache advances in place."""
        x = self.embedding(input_ids)
        for layer, c in zip(self.layers, cache, strict=True):
            x = layer.step(x, c, state_indices)
        return self.lm_head(self.norm_f(x))

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> list[Cache]:
        """One cache per layer (attention's holds max_seqlen positions)."""
        return [layer.mixer.allocate_inference_cache(batch_size, max_seqlen, dtype=dtype,
                                                     device=device)
                for layer in self.layers]

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 0.0, cuda_graph: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """(b, t) prompt -> (b, t + max_new_tokens). temperature=0 (or top_k=1): greedy.
        cuda_graph=True on CUDA: the decode step is captured once per batch size."""
        from .generate import generate

        return generate(self, input_ids, max_new_tokens, temperature, top_k, top_p,
                        cuda_graph, generator)
