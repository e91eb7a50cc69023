"""Meta tensors (FSDP's meta initialization): a forward on meta inputs gives correctly shaped
meta outputs, and gradients come back with their inputs' shapes (it used to fail with 'Cannot
copy out of meta tensor')."""
from __future__ import annotations

import torch

import lrc
from lrc.nn import Recurrence
from lrc.zoo import ZOO


def test_module_to_meta_forward_and_backward():
    cpu = Recurrence.from_zoo("lru")
    meta = Recurrence.from_zoo("lru").to("meta")
    x = torch.randn(2, 6, 5)
    want_y, want_h = cpu(x, return_final_state=True)
    xm = torch.empty(2, 6, 5, device="meta", requires_grad=True)
    y, h = meta(xm, return_final_state=True)
    assert y.is_meta and h.is_meta
    assert (y.shape, y.dtype, h.shape, h.dtype) == (want_y.shape, want_y.dtype, want_h.shape,
                                                    want_h.dtype)
    (y.sum() + h.real.sum()).backward()
    assert xm.grad.is_meta and xm.grad.shape == xm.shape
    for name in meta.param_names:
        p = getattr(meta, name)
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == p.dtype


def test_meta_grouped_dims_and_step():
    """Grouped axes (mamba2's '(g r)') are split from the other arguments' sizes, and step
    gives per-token shapes."""
    entry = ZOO["mamba2"]
    layer = lrc.compile(entry.spec)
    args = entry.example(b=2, t=5, dtype=torch.float32)
    y, h = layer(**args, return_final_state=True)
    meta = {k: v.to("meta") for k, v in args.items()}
    ym, hm = layer(**meta, return_final_state=True)
    assert ym.is_meta and ym.shape == y.shape and hm.shape == h.shape and hm.dtype == h.dtype
    g = entry.spec.graph
    tokens = {k: (v[:, 0] if g.annotation(k).role.value == "Seq" else v)
              for k, v in meta.items()}
    out, new = layer.step(**tokens, state=hm)
    assert out.is_meta and out.shape == y[:, 0].shape and new.shape == h.shape
