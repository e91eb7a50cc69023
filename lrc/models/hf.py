"""Hugging Face transformers integration: `LrcConfig`, `LrcForCausalLM` and `LrcCache`, so an
lrc `LM` saves and loads with `save_pretrained` / `AutoModelForCausalLM.from_pretrained`
(safetensors), takes labels and gradient checkpointing as HF causal models do, and decodes
with HF `generate`. Importing this module registers model_type "lrc" with `AutoConfig` and
`AutoModelForCausalLM`; it needs the `hf` extra (`pip install lrc[hf]`).

Decoding: the first forward with `use_cache=True` is the prefill (the training kernels fill
every layer's cache, `LM.forward(..., cache=)`); each later forward steps the blocks one
token at a time. A recurrent state cannot be rolled back, so the model is stateful to HF:
no assisted generation, and no left padding (a pad token would enter the state).
"""
from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any

import torch

try:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        GenerationMixin,
        PretrainedConfig,
        PreTrainedModel,
    )
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from transformers.utils import logging
except ImportError as e:   # keep lrc importable without the extra
    raise ImportError("lrc.models.hf needs Hugging Face transformers: pip install 'lrc[hf]' "
                      f"(importing it failed: {e})") from e

from ..nn.common import Cache
from .lm import LM, LMConfig

logger = logging.get_logger(__name__)

# the attributes lrc's blocks set on parameters for lrc.nn.param_groups
_HINTS = ("_no_weight_decay", "_optim")

# LMConfig.tie_embeddings is PretrainedConfig's tie_word_embeddings; every other field keeps
# its name
_RENAMED = {"tie_embeddings": "tie_word_embeddings"}


class LrcConfig(PretrainedConfig):
    """An `LMConfig` as a Hugging Face config (model_type "lrc"); see LMConfig for the fields.
    hidden_size, num_attention_heads and max_position_embeddings read d_model, num_heads and
    max_seqlen."""

    model_type = "lrc"
    attribute_map = {"hidden_size": "d_model", "num_attention_heads": "num_heads",
                     "max_position_embeddings": "max_seqlen"}

    def __init__(self, vocab_size: int = LMConfig.vocab_size, d_model: int = LMConfig.d_model,
                 pattern: str = LMConfig.pattern,
                 d_intermediate: int | None = LMConfig.d_intermediate,
                 num_heads: int = LMConfig.num_heads, max_seqlen: int = LMConfig.max_seqlen,
                 norm_eps: float = LMConfig.norm_eps, backend: str = LMConfig.backend,
                 block_args: dict[str, dict[str, Any]] | None = None,
                 tie_word_embeddings: bool = LMConfig.tie_embeddings, **kwargs: Any):
        self.vocab_size, self.d_model, self.pattern = vocab_size, d_model, pattern
        self.d_intermediate, self.num_heads, self.max_seqlen = d_intermediate, num_heads, max_seqlen
        self.norm_eps, self.backend = norm_eps, backend
        self.block_args = copy.deepcopy(block_args or {})
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @classmethod
    def from_lm_config(cls, config: LMConfig, **kwargs: Any) -> LrcConfig:
        """The LrcConfig of an LMConfig; kwargs: further PretrainedConfig settings."""
        values = {_RENAMED.get(f.name, f.name): copy.deepcopy(getattr(config, f.name))
                  for f in fields(LMConfig)}
        return cls(**values, **kwargs)

    def to_lm_config(self) -> LMConfig:
        """The LMConfig this config holds."""
        return LMConfig(**{f.name: copy.deepcopy(getattr(self, _RENAMED.get(f.name, f.name)))
                           for f in fields(LMConfig)})


class LrcCache:
    """Every layer's decode cache (lrc `Cache`s, from `LM.allocate_inference_cache`) and the
    number of tokens they hold; HF `generate` passes it between steps as past_key_values.

    Build one with `LrcCache.allocate(model, batch_size)`, or let a forward with
    use_cache=True make it. Updates are in place, as the blocks' caches are."""

    def __init__(self, layers: list[Cache], max_seqlen: int | None = None):
        self.layers = layers
        self.max_seqlen = max_seqlen      # attention's cache length; None: no attention layer
        self.seen = 0

    @classmethod
    def allocate(cls, model: LM | LrcForCausalLM, batch_size: int,
                 device: Any = None, dtype: torch.dtype | None = None) -> LrcCache:
        """An empty cache for batch_size sequences of `model` (an LM or an LrcForCausalLM)."""
        lm = model.model if isinstance(model, LrcForCausalLM) else model
        device = device if device is not None else lm.embedding.weight.device
        attention = "A" in lm.config.pattern
        return cls(lm.allocate_inference_cache(batch_size, dtype=dtype, device=device),
                   lm.config.max_seqlen if attention else None)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens the cache holds (the same in every layer)."""
        return self.seen

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Row i becomes row beam_idx[i] (beam search keeps its best beams); in place."""
        for cache in self.layers:
            for v in cache.tensors().values():
                v.copy_(v.index_select(0, beam_idx.to(v.device)))

    def __repr__(self) -> str:
        return f"LrcCache(seen={self.seen}, layers={len(self.layers)})"


class LrcForCausalLM(PreTrainedModel, GenerationMixin):
    """An lrc `LM` (the attribute `model`) as a Hugging Face causal language model."""

    config_class = LrcConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _tied_weights_keys = ["model.lm_head.weight"]
    _is_stateful = True        # a recurrent state has no rollback, and HF makes no cache for us

    def __init__(self, config: LrcConfig, lm: LM | None = None):
        super().__init__(config)
        self.model = lm if lm is not None else LM(config.to_lm_config())
        self.gradient_checkpointing = False
        # loading replaces every parameter object, and with it lrc's optimizer hints
        self._param_hints = {name: {k: getattr(p, k) for k in _HINTS if hasattr(p, k)}
                             for name, p in self.named_parameters()
                             if any(hasattr(p, k) for k in _HINTS)}
        self.post_init()

    @classmethod
    def from_lm(cls, lm: LM, **config_kwargs: Any) -> LrcForCausalLM:
        """An LrcForCausalLM around an existing LM (sharing its parameters)."""
        return cls(LrcConfig.from_lm_config(lm.config, **config_kwargs), lm=lm)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """PreTrainedModel.from_pretrained, with lrc's optimizer hints (`_no_weight_decay`,
        `_optim`, read by lrc.nn.param_groups) put back on the loaded parameters."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded   # output_loading_info
        params = dict(model.named_parameters())
        for name, hints in model._param_hints.items():
            for k, v in hints.items():
                setattr(params[name], k, v)
        return loaded

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: lrc's blocks initialise their parameters when built (A_log, the Δ bias and
        the like as their reference implementations do); HF's generic init would overwrite
        them."""

    def get_input_embeddings(self) -> torch.nn.Embedding:
        """The token embedding."""
        return self.model.embedding

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        """Replace the token embedding."""
        self.model.embedding = value

    def get_output_embeddings(self) -> torch.nn.Linear:
        """The head (tied to the embedding with tie_word_embeddings)."""
        return self.model.lm_head

    def set_output_embeddings(self, value: torch.nn.Linear) -> None:
        """Replace the head."""
        self.model.lm_head = value

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                past_key_values: LrcCache | None = None,
                inputs_embeds: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                cu_seqlens: torch.Tensor | None = None, logits_to_keep: int = 0,
                **kwargs: Any) -> CausalLMOutputWithPast | tuple:
        """(b, t) ids (or (b, t, d) inputs_embeds) -> logits (b, t, vocab) and, with labels,
        HF's shifted cross-entropy (-100 ignored). use_cache=True: a prefill fills a new
        LrcCache (or an empty one given as past_key_values); with a non-empty one the blocks
        step through the t tokens. Default use_cache=False: attention's cache holds
        max_seqlen positions, too much to build for every training or scoring forward.
        attention_mask may only pad on the right, and only without a cache. cu_seqlens:
        packed sequences (b = 1). logits_to_keep > 0: logits of the last that many tokens."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("LrcForCausalLM: pass exactly one of input_ids and inputs_embeds")
        if kwargs.get("output_attentions"):
            raise ValueError("LrcForCausalLM: no attention weights to output (SDPA and "
                             "recurrent layers)")
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        if use_cache and checkpointing:
            logger.warning_once("LrcForCausalLM: use_cache=True is incompatible with gradient "
                                "checkpointing; setting use_cache=False")
            use_cache = False
        x = inputs_embeds if inputs_embeds is not None else self.model.embedding(input_ids)
        cache = past_key_values
        if cache is None and use_cache:
            cache = LrcCache.allocate(self, x.shape[0], device=x.device)
        checkpointing = checkpointing and cache is None
        _check_inputs(attention_mask, cache, cu_seqlens, x.shape[1])
        hidden: list[torch.Tensor] | None = [] if output_hidden_states else None
        if cache is not None and cache.seen:
            x = self._steps(x, cache, hidden)
        else:
            x = self._layers(x, cu_seqlens, cache, checkpointing, hidden)
        if cache is not None:
            cache.seen += x.shape[1]
        x = self.model.norm_f(x)
        if hidden is not None:
            hidden.append(x)
        logits = self.model.lm_head(x[:, -logits_to_keep:] if logits_to_keep > 0 else x)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, self.config.vocab_size,
                                      num_items_in_batch=kwargs.get("num_items_in_batch"))
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache,
                                     hidden_states=None if hidden is None else tuple(hidden))
        return out if return_dict else out.to_tuple()

    def _layers(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None, cache: LrcCache | None,
                checkpointing: bool, hidden: list[torch.Tensor] | None) -> torch.Tensor:
        """LM.forward's layer loop (a prefill with a cache), each layer checkpointed when
        gradient checkpointing is on; hidden collects every layer's input."""
        caches = [None] * len(self.model.layers) if cache is None else cache.layers
        for layer, c in zip(self.model.layers, caches, strict=True):
            if hidden is not None:
                hidden.append(x)
            if checkpointing:
                x = self._gradient_checkpointing_func(layer.__call__, x, cu_seqlens, None)
            else:
                x = layer(x, cu_seqlens=cu_seqlens, cache=c)
        return x

    def _steps(self, x: torch.Tensor, cache: LrcCache,
               hidden: list[torch.Tensor] | None) -> torch.Tensor:
        """LM.step for each of the t tokens of x (b, t, d), in order; the cache advances."""
        outs, inputs = [], []
        for s in range(x.shape[1]):
            h = x[:, s]
            layer_inputs = []
            for layer, c in zip(self.model.layers, cache.layers, strict=True):
                layer_inputs.append(h)
                h = layer.step(h, c)
            outs.append(h)
            inputs.append(layer_inputs)
        if hidden is not None:
            hidden.extend(torch.stack(per_layer, 1) for per_layer in zip(*inputs, strict=True))
        return torch.stack(outs, 1)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor,
                                      past_key_values: LrcCache | None = None,
                                      attention_mask: torch.Tensor | None = None,
                                      inputs_embeds: torch.Tensor | None = None,
                                      cache_position: torch.Tensor | None = None,
                                      use_cache: bool | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        """generate's inputs for the next forward: the whole prompt first (a prefill), then
        only the tokens the cache has not seen."""
        inputs: dict[str, Any] = {"past_key_values": past_key_values, "use_cache": use_cache,
                                  "attention_mask": attention_mask}
        if past_key_values is not None and past_key_values.seen:
            new = (cache_position.shape[0] if cache_position is not None
                   else input_ids.shape[1] - past_key_values.seen)
            inputs["input_ids"] = input_ids[:, -new:]
        elif inputs_embeds is not None:
            inputs["inputs_embeds"] = inputs_embeds
        else:
            inputs["input_ids"] = input_ids
        for key in ("logits_to_keep", "output_hidden_states", "return_dict"):
            if key in kwargs:
                inputs[key] = kwargs[key]
        return inputs


def _check_inputs(attention_mask: torch.Tensor | None, cache: LrcCache | None,
                  cu_seqlens: torch.Tensor | None, t: int) -> None:
    """Clear errors for what the recurrent layers cannot do: left padding (or any padding
    with a cache), a packed prefill into a cache, more tokens than attention's cache holds."""
    if cache is not None:
        if cu_seqlens is not None:
            raise ValueError("LrcForCausalLM: use_cache with cu_seqlens is not supported; "
                             "prefill packed sequences with LM.forward(..., cache=)")
        if cache.max_seqlen is not None and cache.seen + t > cache.max_seqlen:
            raise ValueError(f"LrcForCausalLM: {cache.seen} cached + {t} new tokens exceed "
                             f"config.max_seqlen={cache.max_seqlen} (the attention cache's "
                             "length)")
    if attention_mask is None:
        return
    mask = attention_mask.bool()
    if cache is not None:
        if not bool(mask.all()):
            raise ValueError("LrcForCausalLM: padding (zeros in attention_mask) with a cache is "
                             "not supported: a recurrent state would take in the pad tokens; "
                             "generate prompts of one length, or one at a time")
    elif not bool((mask[:, 1:] <= mask[:, :-1]).all()):
        raise ValueError("LrcForCausalLM: attention_mask pads on the left (or has holes); "
                         "recurrent layers take every token into their state, so only right "
                         "padding (ones, then zeros) is supported")


def register() -> None:
    """Register model_type "lrc" with AutoConfig and AutoModelForCausalLM (done on import;
    calling it again is harmless)."""
    AutoConfig.register("lrc", LrcConfig, exist_ok=True)
    AutoModelForCausalLM.register(LrcConfig, LrcForCausalLM, exist_ok=True)


register()
