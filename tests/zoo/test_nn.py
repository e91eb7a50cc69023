"""lrc.nn: the generic Recurrence module and the Griffin and Vim blocks."""
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

import lrc
from lrc.ir.dims import Role
from lrc.nn import BiMamba, CausalConv1d, GriffinRecurrentBlock, Recurrence
from lrc.zoo import ZOO
from tests.conftest import rel_err
from tests.zoo import test_mamba1, test_rglru
from tests.zoo.helpers import as_tuple


def split(entry, args):
    """(Seq inputs, Params) of an example, by name."""
    g = entry.spec.graph
    seqs = {k: v for k, v in args.items() if g.annotation(k).role is Role.SEQ}
    return seqs, {k: v for k, v in args.items() if k not in seqs}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_recurrence_module_matches_compiled_layer(name):
    entry = ZOO[name]
    args = entry.example(t=15)
    seqs, params = split(entry, args)
    mod = Recurrence(entry.spec, backend="reference", **params)
    assert [n for n, _ in mod.named_parameters()] == list(params)
    s0 = entry.initial_state()
    got = mod(**seqs, initial_state=s0, return_final_state=True)
    ref = lrc.compile(entry.spec, backend="reference")
    want = ref(**args, initial_state=s0, return_final_state=True)
    got, want = as_tuple(got[0]) + as_tuple(got[1]), as_tuple(want[0]) + as_tuple(want[1])
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) == 0
    # positional Seq inputs, in the spec's order
    positional = as_tuple(mod(*seqs.values()))[0]
    assert rel_err(positional, as_tuple(ref(**args))[0]) == 0


def test_recurrence_module_trains():
    mod = Recurrence.from_zoo("lru", backend="reference", dtype=torch.float64, d=3, n=5)
    u = torch.randn(2, 21, 3, dtype=torch.float64)
    opt = torch.optim.Adam(mod.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in mod.named_parameters()}
    loss = mod(u).square().mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in mod.parameters())
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in mod.named_parameters())
    assert mod.B.is_complex() and isinstance(mod.B, torch.nn.Parameter)


def test_recurrence_module_step_and_reverse():
    mod = Recurrence.from_zoo("rglru", backend="reference", dtype=torch.float64, d=5)
    x, r, i = (torch.randn(2, 9, 5, dtype=torch.float64) for _ in range(3))
    y = mod(x, r, i)
    state = None
    for t in range(9):
        y_t, state = mod.step(x[:, t], r[:, t], i[:, t], state=state)
        assert rel_err(y_t, y[:, t]) <= 1e-12
    y_rev = mod(x, r, i, reverse=True)
    assert rel_err(y_rev, mod(x.flip(1), r.flip(1), i.flip(1)).flip(1)) <= 1e-12


def test_recurrence_module_errors():
    entry = ZOO["retnet"]
    with pytest.raises(TypeError, match="missing"):
        Recurrence(entry.spec)
    with pytest.raises(TypeError, match="unknown"):
        Recurrence(entry.spec, **entry.init_params(), beta=torch.ones(3))
    mod = Recurrence(entry.spec, **entry.init_params())
    seqs, _ = split(entry, entry.example())
    with pytest.raises(TypeError, match="lives in the module"):
        mod(**seqs, gamma=torch.ones(3))
    with pytest.raises(KeyError, match="no zoo system"):
        Recurrence.from_zoo("transformer")


def test_causal_conv():
    conv = CausalConv1d(3, width=4).double()
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    y = conv(x)
    x2 = x.clone()
    x2[:, 7] += 1
    y2 = conv(x2)
    assert torch.equal(y[:, :7], y2[:, :7]) and not torch.equal(y[:, 7], y2[:, 7])
    assert torch.allclose(conv(x, reverse=True), conv(x.flip(1)).flip(1))


def test_griffin_block_against_loop():
    blk = GriffinRecurrentBlock(6, d_rnn=5, backend="reference").double()
    x = torch.randn(2, 13, 6, dtype=torch.float64)
    u = blk.conv(blk.in_proj(x))
    (h,), _ = test_rglru.loop({"x": u, "gate_r": blk.gate_r(u), "gate_i": blk.gate_i(u),
                               "Lambda": blk.rglru.Lambda}, None)
    want = blk.out_proj(h * F.gelu(blk.gate_proj(x), approximate="tanh"))
    assert rel_err(blk(x), want) <= 1e-10


def test_bimamba_against_flipped_loops():
    vm = BiMamba(4, d_state=3, backend="reference").double()
    x = torch.randn(2, 11, 4, dtype=torch.float64)
    xi, z = vm.in_proj(x).chunk(2, -1)
    ys = []
    for branch, flip in ((vm.fwd, False), (vm.bwd, True)):
        xs = xi.flip(1) if flip else xi
        u = F.silu(branch.conv(xs))                                  # causal on the flipped
        dt, B, C = branch.x_proj(u).split([branch.dt_rank, 3, 3], -1)
        args = {"u": u.transpose(1, 2), "dt": branch.dt_proj(dt).transpose(1, 2),
                "B": B.transpose(1, 2), "C": C.transpose(1, 2)}
        args.update({k: getattr(branch.scan, k) for k in ("A_log", "D", "dt_bias")})
        (y,), _ = test_mamba1.loop(args, None)
        y = y.transpose(1, 2)
        ys.append(y.flip(1) if flip else y)
    want = vm.out_proj((ys[0] + ys[1]) * F.silu(z))
    got = vm(x)
    assert rel_err(got, want) <= 1e-10
    # bidirectional: the first output depends on the last input
    x2 = x.clone()
    x2[:, -1] += 1
    assert not torch.allclose(vm(x2)[:, 0], got[:, 0])
