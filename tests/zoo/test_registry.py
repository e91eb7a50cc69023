"""Every ZOO entry works through the interface other tests rely on."""
import pytest
import torch

import lrc
from lrc.ir.dims import Role
from lrc.zoo import ZOO, ZooEntry
from tests.conftest import rel_err
from tests.zoo.helpers import as_tuple

NAMES = sorted(ZOO)


def time_axis(entry: ZooEntry, arg: str) -> int:
    """The memory axis of a Seq argument that holds the time dim."""
    g = entry.spec.graph
    return g.annotation(arg).axes.index((g.time,))


def out_time_axis(entry: ZooEntry, i: int = 0) -> int:
    """The memory axis of output i that holds the time dim."""
    g = entry.spec.graph
    return g.out_axes[i].index((g.time,))


def is_seq(entry: ZooEntry, arg: str) -> bool:
    return entry.spec.graph.annotation(arg).role is Role.SEQ


def test_registry():
    assert set(NAMES) == {"mamba1", "mamba2", "s4d_zoh", "s4d_bilinear", "s4", "lru", "rglru",
                          "rwkv4", "rwkv6", "gla", "retnet", "h3", "hyena",
                          "deltanet", "gated_deltanet", "kda", "rwkv7"}
    for name, entry in ZOO.items():
        assert entry.name == name and entry.doc
        for dim, n in entry.sizes.items():
            # small and not powers of two, so a layout bug cannot hide behind a square shape
            assert n <= 64 and (n & (n - 1)) != 0, (name, dim, n)
        with pytest.raises(TypeError, match="unknown dim"):
            entry.example(nonexistent=3)


@pytest.mark.parametrize("name", NAMES)
def test_example_is_complete_and_runs(name):
    entry = ZOO[name]
    args = entry.example()
    assert list(args) == list(entry.spec.graph.params)
    for k, v in args.items():
        assert torch.isfinite(v).all() and v.abs().max() > 0, k
        if is_seq(entry, k):
            assert v.shape[time_axis(entry, k)] == 37
        assert v.dtype == (torch.complex128 if v.is_complex() else torch.float64)
    out, fin = lrc.compile(entry.spec, backend="reference")(**args, return_final_state=True)
    for s, s0 in zip(as_tuple(fin), as_tuple(entry.initial_state()), strict=True):
        assert s.shape == s0.shape and s.dtype == s0.dtype


@pytest.mark.parametrize("name", NAMES)
def test_long_sequence_stays_bounded(name):
    entry = ZOO[name]
    out = as_tuple(lrc.compile(entry.spec, backend="reference")(**entry.example(b=1, t=400)))
    for y in out:
        assert torch.isfinite(y).all() and y.abs().max() < 1e3


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_example(name, dtype):
    entry = ZOO[name]
    args = entry.example(t=11, dtype=dtype)
    for v in args.values():
        assert v.dtype in (dtype, torch.complex64)
    for y in as_tuple(lrc.compile(entry.spec, backend="reference")(**args)):
        assert y.dtype == dtype and torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_forward(name):
    """Prefill 8 tokens, then step 5: the same outputs as the forward over 13."""
    entry = ZOO[name]
    layer = lrc.compile(entry.spec, backend="reference")
    args = entry.example(t=13)
    s0 = entry.initial_state()
    full = as_tuple(layer(**args, initial_state=s0))

    def window(lo, hi):
        return {k: (v.narrow(time_axis(entry, k), lo, hi - lo) if is_seq(entry, k) else v)
                for k, v in args.items()}

    _, state = layer(**window(0, 8), initial_state=s0, return_final_state=True)
    for t in range(8, 13):
        tok = {k: (v.select(time_axis(entry, k), t) if is_seq(entry, k) else v)
               for k, v in args.items()}
        y, state = layer.step(**tok, state=state)
        for i, (yi, full_i) in enumerate(zip(as_tuple(y), full, strict=True)):
            assert rel_err(yi, full_i.select(out_time_axis(entry, i), t)) <= 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_argument(name):
    entry = ZOO[name]
    args = {k: v.requires_grad_() for k, v in entry.example(t=9).items()}
    ref = lrc.compile(entry.spec, backend="reference")
    loss = sum(y.square().sum() for y in as_tuple(ref(**args)))
    grads = torch.autograd.grad(loss, list(args.values()))
    for k, g in zip(args, grads, strict=True):
        assert torch.isfinite(g).all() and g.abs().max() > 0, k


@pytest.mark.parametrize("name", NAMES)
def test_packed_sequences(name):
    """cu_seqlens: two packed sequences give what two separate calls give."""
    entry = ZOO[name]
    layer = lrc.compile(entry.spec, backend="reference")
    args = entry.example(b=1, t=17)
    cut = 6

    def part(lo, hi):
        return {k: (v.narrow(time_axis(entry, k), lo, hi - lo) if is_seq(entry, k) else v)
                for k, v in args.items()}

    packed = as_tuple(layer(**args, cu_seqlens=torch.tensor([0, cut, 17])))
    first, second = as_tuple(layer(**part(0, cut))), as_tuple(layer(**part(cut, 17)))
    for i, (p, a, b) in enumerate(zip(packed, first, second, strict=True)):
        assert rel_err(p, torch.cat([a, b], out_time_axis(entry, i))) <= 1e-12
