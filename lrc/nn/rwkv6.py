"""RWKV-6's time mixing (Peng et al. 2024, "Eagle and Finch") over the zoo's `rwkv6` spec,
with the official RWKV-LM `RWKV_Tmix_x060` parameter names (time_maa_x/w/k/v/r/g,
time_maa_w1/w2, time_decay, time_decay_w1/w2, time_faaaa, receptance, key, value, gate,
output, ln_x), so an RWKV-6 checkpoint's `blocks.N.att.*` tensors load unchanged.

    xx = shift(x) - x;  m_{w,k,v,r,g} = tanh((x + xx time_maa_x) W1) W2   (the mixing LoRA)
    x_c = x + xx (time_maa_c + m_c);  r, k, v = receptance(x_r), key(x_k), value(x_v)
    w = time_decay + tanh(x_w time_decay_w1) time_decay_w2;  g = silu(gate(x_g))
    o = WKV6(r, k, v, w; u = time_faaaa);  out = output(GroupNorm_heads(o) * g)

shift(x) is the previous token of the same sequence (zeros at a sequence's start); the decode
cache keeps each sequence's last token next to its state.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from torch import nn

from ..runtime import compile as lrc_compile
from ..zoo import rwkv6 as zoo_rwkv6
from .common import Cache, DecodeBlock, conv_window, no_weight_decay, seq_positions

MIXES = ("w", "k", "v", "r", "g")   # the order of the mixing LoRA's five outputs


def token_shift(x: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """Each token's previous token in its own sequence, zeros at a sequence's start: x (b, t, c)
    shifted by one along time (with cu_seqlens, b = 1, also zeros at every boundary)."""
    prev = F.pad(x, (0, 0, 1, -1))
    if cu_seqlens is None:
        return prev
    first = seq_positions(cu_seqlens, x.shape[1]) == 0
    return prev.masked_fill(first[None, :, None], 0)


class RWKV6TimeMix(DecodeBlock):
    """RWKV-LM's `RWKV_Tmix_x060`: (b, t, n_embd) -> (b, t, n_embd), with a decode cache.

    The official constructor takes an `args` namespace; here its fields are keywords
    (dim_att defaults to n_embd, head_size is args.head_size_a). d_mix_lora and d_decay_lora
    default to the official 32 and 64 (64 and 128 from n_embd 4096). The initialization is
    the official one for layer `layer_id` of `n_layer`."""

    def __init__(self, n_embd: int, dim_att: int | None = None, head_size: int = 64,
                 layer_id: int = 0, n_layer: int = 2, head_size_divisor: int = 8,
                 d_mix_lora: int | None = None, d_decay_lora: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        dim_att = dim_att or n_embd
        if dim_att % head_size:
            raise ValueError(f"RWKV6TimeMix: head_size {head_size} does not divide dim_att "
                             f"{dim_att}")
        if n_layer < 2:
            raise ValueError("RWKV6TimeMix: the official init needs n_layer >= 2")
        self.n_embd, self.dim_att, self.head_size = n_embd, dim_att, head_size
        self.n_head, self.layer_id = dim_att // head_size, layer_id
        d_mix_lora = d_mix_lora or (64 if n_embd >= 4096 else 32)
        d_decay_lora = d_decay_lora or (128 if n_embd >= 4096 else 64)
        ratio_0_to_1 = layer_id / (n_layer - 1)
        ratio_1_to_almost0 = 1.0 - layer_id / n_layer
        ddd = (torch.arange(n_embd, dtype=torch.float64) / n_embd).reshape(1, 1, n_embd)
        maa = {c: 1.0 - ddd ** ratio_1_to_almost0 for c in ("x", "w", "k")}
        maa["v"] = 1.0 - (ddd ** ratio_1_to_almost0 + 0.3 * ratio_0_to_1)
        maa["r"] = maa["g"] = 1.0 - ddd ** (0.5 * ratio_1_to_almost0)
        for c in ("x", *MIXES):
            setattr(self, f"time_maa_{c}", nn.Parameter(maa[c].float()))
        self.time_maa_w1 = nn.Parameter(torch.zeros(n_embd, 5 * d_mix_lora))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, d_mix_lora, n_embd).uniform_(-0.01, 0.01))
        init = zoo_rwkv6.init_params({"h": self.n_head, "k": head_size}, layer_id, n_layer)
        self.time_decay = nn.Parameter(init["time_decay"].reshape(1, 1, dim_att).float())
        self.time_decay_w1 = nn.Parameter(torch.zeros(n_embd, d_decay_lora))
        self.time_decay_w2 = nn.Parameter(torch.empty(d_decay_lora, dim_att).uniform_(-0.01,
                                                                                     0.01))
        self.time_faaaa = nn.Parameter(init["u"].float())
        # RWKV-LM decays only the `.weight` matrices: every time_* parameter is left out
        no_weight_decay(*(p for name, p in self.named_parameters() if name.startswith("time_")))
        self.receptance = nn.Linear(n_embd, dim_att, bias=False)
        self.key = nn.Linear(n_embd, dim_att, bias=False)
        self.value = nn.Linear(n_embd, dim_att, bias=False)
        self.output = nn.Linear(dim_att, n_embd, bias=False)
        self.gate = nn.Linear(n_embd, dim_att, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, dim_att, eps=1e-5 * head_size_divisor ** 2)
        self.wkv = lrc_compile(zoo_rwkv6.rwkv6, backend=backend)

    def _inputs(self, x: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """r, k, v, the data-dependent decay w (by head) and the gate g from the tokens x and
        their previous tokens prev (..., n_embd)."""
        # x + (prev - x) mu as one lerp: one rounding in bf16 instead of three
        lora = torch.tanh(torch.lerp(x, prev, self.time_maa_x.flatten()) @ self.time_maa_w1)
        lora = lora.unflatten(-1, (5, -1))                               # (..., 5, d_mix_lora)
        m = torch.einsum("...fl,flc->f...c", lora, self.time_maa_w2)     # (5, ..., n_embd)
        xw, xk, xv, xr, xg = (torch.lerp(x, prev, getattr(self, f"time_maa_{c}").flatten() + m[i])
                              for i, c in enumerate(MIXES))
        w = torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        heads = (self.n_head, self.head_size)
        r, k, v = (t.unflatten(-1, heads) for t in (self.receptance(xr), self.key(xk),
                                                     self.value(xv)))
        return r, k, v, w.unflatten(-1, heads), F.silu(self.gate(xg))

    def _params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The spec's Params: the static decay (h, k) and the bonus u (h, k)."""
        return self.time_decay.view(self.n_head, self.head_size), self.time_faaaa

    def _output(self, o: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """GroupNorm over each head (in float32), times the gate, through `output`."""
        o = o.flatten(-2)
        ln = self.ln_x
        y = F.group_norm(o.reshape(-1, self.dim_att).float(), ln.num_groups, ln.weight.float(),
                         ln.bias.float(), ln.eps)
        return self.output((y.view(o.shape) * g.float()).to(g.dtype))

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                cache: Cache | None = None) -> torch.Tensor:
        """(b, t, n_embd) -> (b, t, n_embd). cu_seqlens: packed sequences (b = 1). cache:
        filled with each sequence's last token and final state."""
        self._check_prefill(x, cu_seqlens, cache)
        r, k, v, w, g = self._inputs(x, token_shift(x, cu_seqlens))
        o = self.wkv(r, k, v, w, *self._params(), cu_seqlens=cu_seqlens,
                     return_final_state=cache is not None)
        if cache is not None:
            o, final = o
            cache.state.copy_(final.detach())
            cache.shift.copy_(conv_window(x.detach(), 1, cu_seqlens)[..., 0])
        return self._output(o, g)

    def _step(self, x: torch.Tensor, cache: Cache) -> torch.Tensor:
        # a copy: the shift is overwritten below, and autograd may hold the previous token
        r, k, v, w, g = self._inputs(x, cache.shift.to(x.dtype, copy=True))
        cache.shift.copy_(x.detach())
        o, _ = self.wkv.step(r, k, v, w, *self._params(), state=cache.state, inplace=True)
        return self._output(o, g)

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int | None = None,
                                 dtype: torch.dtype | None = None,
                                 device: Any = None) -> Cache:
        """Zeros: shift (b, n_embd) in the weights' dtype (the previous token, RWKV's
        att_x_prev), state (b, n_head, head_size, head_size) float32."""
        w = self.receptance.weight
        device = device if device is not None else w.device
        return Cache(shift=torch.zeros(batch_size, self.n_embd, device=device,
                                       dtype=dtype or w.dtype),
                     state=torch.zeros(batch_size, self.n_head, self.head_size, self.head_size,
                                       device=device, dtype=torch.float32))
