"""Generation: prefill the prompt with the training kernels (filling every layer's cache),
then decode one token at a time with `step`; on CUDA with cuda_graph=True the step is
captured once per (batch size, cache length) and replayed.

A captured step reads the model's parameters and its cache by address: the graph is keyed by
the parameters' storage too, so moving or re-creating them captures a new one.
"""
from __future__ import annotations

from typing import Any

import torch


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """(b, vocab) logits -> (b,) token ids. temperature=0 or top_k=1: argmax; top_k > 0 keeps
    the k likeliest; 0 < top_p < 1 keeps the smallest set of likeliest tokens whose
    probability reaches top_p (nucleus sampling)."""
    if temperature == 0 or top_k == 1:
        return logits.argmax(-1)
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0, got {temperature}")
    logits = logits.float() / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        ordered, order = torch.sort(logits, -1, descending=True)
        probs = torch.softmax(ordered, -1)
        drop = probs.cumsum(-1) - probs >= top_p          # mass before this token suffices
        ordered = ordered.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, ordered)
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _captured(model: Any, batch: int, length: int, device: torch.device):
    """(cache, run) for a CUDA-graph decode step of this batch size, captured on first use."""
    key = (batch, length, device, model.embedding.weight.dtype,
           model.embedding.weight.data_ptr())
    if key not in model._graphs:
        cache = model.allocate_inference_cache(batch, length, device=device)
        ids = torch.zeros(batch, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):   # tune and allocate outside the capture
                model.step(ids, cache)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = model.step(ids, cache)

        def run(tokens: torch.Tensor) -> torch.Tensor:
            ids.copy_(tokens)
            graph.replay()
            return logits

        model._graphs[key] = (cache, run)
    return model._graphs[key]


@torch.no_grad()
def generate(model: Any, input_ids: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 0.0,
             cuda_graph: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """(b, t) prompt -> (b, t + max_new_tokens) ids: prefill, then step per new token."""
    if input_ids.dim() != 2:
        raise ValueError(f"generate: input_ids must be (batch, time), got {tuple(input_ids.shape)}")
    b, t = input_ids.shape
    if max_new_tokens <= 0:
        return input_ids
    length = model.config.max_seqlen
    if t + max_new_tokens > length:
        raise ValueError(f"generate: {t} prompt + {max_new_tokens} new tokens exceed "
                         f"config.max_seqlen={length} (the attention cache's length)")
    if cuda_graph and input_ids.is_cuda:
        cache, run = _captured(model, b, length, input_ids.device)
    else:
        cache = model.allocate_inference_cache(b, length, device=input_ids.device)

        def run(tokens: torch.Tensor) -> torch.Tensor:
            return model.step(tokens, cache)

    logits = model(input_ids, cache=cache)[:, -1]      # every cache tensor overwritten
    out = [input_ids]
    for i in range(max_new_tokens):
        token = sample(logits, temperature, top_k, top_p, generator)
        out.append(token[:, None])
        if i + 1 < max_new_tokens:
            logits = run(token)
    return torch.cat(out, 1)
