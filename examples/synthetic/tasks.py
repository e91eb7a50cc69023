"""The papers' synthetic tasks as batch generators, and accuracy on the answer positions.

- Multi-query associative recall (MQAR; Arora et al. 2023, Zoology): key-value pairs, then the
  keys queried again in a random order at random places among filler tokens; at each queried
  key the model must output the value that was paired with it.
- Selective copying (Gu & Dao 2023, Mamba, Table 1): a few data tokens scattered at random
  places among noise tokens, then one marker per data token; at the markers the model must
  output the data tokens in their order.

Each generator returns (inputs, targets), both (batch, seq_len) int64; a target is IGNORE
(-100, cross_entropy's ignore_index) everywhere but at the answer positions, where it is the
token the model must predict at that position (next-token prediction, as an LM is trained).
"""
from __future__ import annotations

import torch

IGNORE = -100


def _distinct(batch: int, n: int, k: int, gen: torch.Generator | None) -> torch.Tensor:
    """(batch, k) distinct integers from range(n) per row, in random order."""
    return torch.rand(batch, n, generator=gen).argsort(-1)[:, :k]


def mqar(batch: int, seq_len: int = 64, vocab_size: int = 64, num_kv_pairs: int = 8,
         power_a: float = 0.01,
         gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MQAR batches as in Zoology: keys from 1..vocab/2-1, values from vocab/2..vocab-1.

    Positions 0..2K-1 hold the K pairs `k_1 v_1 ... k_K v_K` (distinct keys, distinct values).
    The rest is filler (token 0) with K query slots of two tokens each: the j-th slot from the
    end of the context, chosen with Zoology's power law p(j) ~ j^(power_a - 1) (queries close
    to the context are likelier), holds a key followed by its value. The target at a queried
    key is its value; every other target is IGNORE.
    """
    half = vocab_size // 2
    context = 2 * num_kv_pairs
    space = (seq_len - context) // 2
    if half - 1 < num_kv_pairs or space < num_kv_pairs:
        raise ValueError(f"mqar: {num_kv_pairs} pairs need vocab_size >= {2 * num_kv_pairs + 2}"
                         f" and seq_len >= {4 * num_kv_pairs}; got {vocab_size}, {seq_len}")
    keys = _distinct(batch, half - 1, num_kv_pairs, gen) + 1
    values = _distinct(batch, vocab_size - half, num_kv_pairs, gen) + half
    inputs = torch.zeros(batch, seq_len, dtype=torch.long)
    targets = torch.full((batch, seq_len), IGNORE, dtype=torch.long)
    inputs[:, 0:context:2], inputs[:, 1:context:2] = keys, values
    weights = power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (power_a - 1)
    slots = torch.multinomial(weights.expand(batch, space), num_kv_pairs, replacement=False,
                              generator=gen)                     # (batch, K): slot of pair i
    pos = context + 2 * slots                                    # where key i is queried
    inputs.scatter_(1, pos, keys)
    inputs.scatter_(1, pos + 1, values)
    targets.scatter_(1, pos, values)
    return inputs, targets


NOISE, MARKER = 0, 1   # selective copying's special tokens; data tokens are 2..vocab_size-1


def selective_copying(batch: int, seq_len: int = 64, vocab_size: int = 16,
                      num_tokens: int = 8,
                      gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective copying batches: seq_len - num_tokens positions of noise (NOISE) holding
    num_tokens data tokens (uniform from 2..vocab_size-1) at random distinct positions, then
    num_tokens MARKER tokens; the target at the j-th marker is the j-th data token."""
    region = seq_len - num_tokens
    if region < num_tokens or vocab_size < 3:
        raise ValueError(f"selective_copying: seq_len {seq_len} must be at least twice "
                         f"num_tokens {num_tokens}, and vocab_size {vocab_size} at least 3")
    data = torch.randint(2, vocab_size, (batch, num_tokens), generator=gen)
    pos = _distinct(batch, region, num_tokens, gen).sort(-1).values
    inputs = torch.full((batch, seq_len), NOISE, dtype=torch.long)
    inputs.scatter_(1, pos, data)
    inputs[:, region:] = MARKER
    targets = torch.full((batch, seq_len), IGNORE, dtype=torch.long)
    targets[:, region:] = data
    return inputs, targets


TASKS = {"mqar": mqar, "copying": selective_copying}


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(token accuracy, sequence accuracy) over the answer positions only: the fraction of
    answers whose argmax is right, and of sequences with every answer right."""
    mask = targets != IGNORE
    right = (logits.argmax(-1) == targets) & mask
    token = right.sum().item() / max(mask.sum().item(), 1)
    sequence = (right == mask).all(-1).float().mean().item()
    return token, sequence
