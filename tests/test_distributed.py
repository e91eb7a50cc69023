"""Context parallelism (lrc.distributed) on the CPU: 2-4 gloo processes against one process.

Each case splits one sequence along time over the ranks of a group; every rank checks its
outputs, final states and gradients (Seq slices, initial state, Params) against the slice of a
single-process float64 run on the reference backend over the whole sequence, with the loss of
the split run (sum over ranks of <y_r, w_r> + <h_r, v_r>, h_r the state after slice r) built
in the same graph from prefix (suffix, reversed) runs. The cases of one process count share one
`torch.multiprocessing.spawn`, so the start-up is paid once per count (one test per count).
"""
from __future__ import annotations

import bisect
import datetime
import json
import os
import socket
import traceback
import zlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lrc
from lrc.ir.dims import Role
from tests.conftest import rel_err

F32, BF16 = "float32", "bfloat16"
TOL = {F32: (1e-4, 1e-3), BF16: (1e-2, 1e-2)}  # (outputs and states, gradients)


def case(spec, cuts, *, t=None, lowering=None, backend="auto", dtype=F32, reverse=False,
         cu=None, init=True, sync=True, b=2, mesh=False, **dims):
    """One equality check: `spec` over len(cuts) - 1 ranks, rank r holding [cuts[r], cuts[r+1])."""
    return dict(spec=spec, cuts=list(cuts), t=t or cuts[-1], lowering=lowering, backend=backend,
                dtype=dtype, reverse=reverse, cu=cu, init=init, sync=sync,
                b=1 if cu else b, mesh=mesh, dims=dims)


CASES = {  # process count -> name -> case
    2: {
        "mamba1_scan": case("mamba1", (0, 5, 11)),
        "rglru_scan_reverse": case("rglru", (0, 4, 10), reverse=True),
        "lru_scan_complex": case("lru", (0, 6, 10)),
        "mamba2_chunked": case("mamba2", (0, 6, 12), lowering="chunked", g=1, r=2, p=3, n=4),
        "gla_chunked_reverse": case("gla", (0, 5, 10), lowering="chunked", reverse=True),
        "s4d_conv": case("s4d_zoh", (0, 7, 12), lowering="conv"),
        "rglru_cu_spanning": case("rglru", (0, 6, 14), cu=[0, 3, 10, 14]),
        "rwkv4_cu_reverse": case("rwkv4", (0, 5, 12), cu=[0, 2, 9, 12], reverse=True,
                                 backend="reference"),
        "mamba1_bf16": case("mamba1", (0, 4, 9), dtype=BF16),
        "rglru_no_sync_no_init": case("rglru", (0, 3, 9), sync=False, init=False),
    },
    3: {
        "mamba2_chunked_uneven": case("mamba2", (0, 2, 9, 13), lowering="chunked", g=1, r=2,
                                      p=3, n=4),
        "mamba1_cu_over_three": case("mamba1", (0, 2, 7, 12), cu=[0, 1, 11, 12]),
        "lru_reverse_uneven": case("lru", (0, 7, 8, 12), reverse=True, backend="reference"),
        "rwkv6_cu_reverse": case("rwkv6", (0, 4, 5, 11), cu=[0, 4, 6, 11], reverse=True,
                                 backend="reference"),
    },
    4: {
        "mesh_2x2": case("rglru", (0, 5, 11), mesh=True),
        "four_ranks_cu": case("mamba1", (0, 3, 6, 8, 12), cu=[0, 2, 12]),
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _narrow_time(g, name, x, lo, hi):
    ann = g.annotation(name)
    if ann.role is not Role.SEQ:
        return x
    ax = ann.axes.index((g.time,))
    return x.narrow(ax, lo, hi - lo)


def _cast(x, dtype):
    if x.is_complex():
        return x.to(torch.complex64)
    return x.to(dtype)


def _local_finals_ref(ref, g, args, h0, c, lo, hi):
    """The reference states after slice [lo, hi) of the whole sequence (per packed sequence
    overlapping it, with cu_seqlens): from a prefix run (a suffix run for reverse)."""
    T, cu = c["t"], c["cu"]
    if c["reverse"]:
        sl = {k: _narrow_time(g, k, v, lo, T) for k, v in args.items()}
        lcu = None if cu is None else [0] + [x - lo for x in cu if x > lo]
    else:
        sl = {k: _narrow_time(g, k, v, 0, hi) for k, v in args.items()}
        lcu = None if cu is None else [x for x in cu if x < hi] + [hi]
    init = h0
    if cu is not None and h0 is not None:  # the sequences that start inside the run
        first = bisect.bisect_right(cu, lo) - 1 if c["reverse"] else 0
        init = tuple(s.narrow(0, first, len(lcu) - 1) for s in h0)
    _, fin = ref(**sl, initial_state=init, reverse=c["reverse"], return_final_state=True,
                 cu_seqlens=None if lcu is None else torch.tensor(lcu))
    fin = _as_tuple(fin)
    if cu is None:
        return fin
    n = 1 + sum(1 for x in cu if lo < x < hi)
    return tuple(f.narrow(0, 0, n) if c["reverse"] else f.narrow(0, f.shape[0] - n, n)
                 for f in fin)


def run_case(c, rank, P, group, seed, device="cpu", oracle="reference"):
    """Every check of one case on this rank: {name: (relative error, tolerance)}."""
    from lrc.distributed import context_parallel
    from lrc.zoo import ZOO

    e = ZOO[c["spec"]]
    g = e.spec.graph
    dtype = getattr(torch, c["dtype"])
    torch.manual_seed(seed)
    nseq = len(c["cu"]) - 1 if c["cu"] else c["b"]
    made = e.example(b=c["b"], t=c["t"], **c["dims"])
    # the oracle sees exactly the values the split run sees (rounded to its dtype)
    args = {k: (_cast(v, dtype) if g.annotation(k).role is Role.SEQ else _cast(v, torch.float32))
            .to(v.dtype) for k, v in made.items()}
    h0 = _as_tuple(e.initial_state(b=nseq, **c["dims"])) if c["init"] else None
    h0 = None if h0 is None else tuple(_cast(s, torch.float32).to(s.dtype) for s in h0)
    ref = lrc.compile(e.spec, backend="reference")
    if oracle == "layer":  # at real sizes: the single-device layer in float32 on the device
        ref = lrc.compile(e.spec, lowering=c["lowering"])
        args = {k: v.to(device=device, dtype=torch.complex64 if v.is_complex() else torch.float32)
                for k, v in args.items()}
        h0 = None if h0 is None else tuple(
            s.to(device=device, dtype=torch.complex64 if s.is_complex() else torch.float32)
            for s in h0)
    cu = None if c["cu"] is None else torch.tensor(c["cu"])
    ra = {k: v.clone().requires_grad_() for k, v in args.items()}
    rh = None if h0 is None else tuple(s.clone().requires_grad_() for s in h0)
    y, _ = ref(**ra, initial_state=rh, reverse=c["reverse"], return_final_state=True,
               cu_seqlens=cu)
    ys = _as_tuple(y)
    ws = [torch.randn_like(v) for v in ys]
    cuts = c["cuts"]
    loss = sum((v * w).sum() for v, w in zip(ys, ws, strict=True))
    vs_all = []
    for r in range(P):
        fr = _local_finals_ref(ref, g, ra, rh, c, cuts[r], cuts[r + 1])
        vs = [torch.randn_like(f) for f in fr]
        vs_all.append(vs)
        loss = loss + sum((torch.view_as_real(f) * torch.view_as_real(v)).sum()
                          if f.is_complex() else (f * v).sum() for f, v in zip(fr, vs, strict=True))
        if r == rank:
            want_fin = [f.detach() for f in fr]
    loss.backward()

    lo, hi = cuts[rank], cuts[rank + 1]
    layer = lrc.compile(e.spec, backend=c["backend"], lowering=c["lowering"])
    cp = context_parallel(layer, group, sync_params=c["sync"])
    la = {k: _narrow_time(g, k, _cast(v, dtype if g.annotation(k).role is Role.SEQ
                                      else torch.float32), lo, hi)
          .detach().clone().to(device).requires_grad_() for k, v in args.items()}
    lh = None if h0 is None else tuple(_cast(s, torch.float32).to(device).requires_grad_()
                                       for s in h0)
    out, fin = cp(**la, initial_state=lh, reverse=c["reverse"], return_final_state=True,
                  cu_seqlens=cu)
    outs, fins = _as_tuple(out), _as_tuple(fin)
    mine = sum((o.float() * _narrow_time_out(g, i, w, lo, hi).to(o.device, torch.float32)).sum()
               for i, (o, w) in enumerate(zip(outs, ws, strict=True)))
    for f, v in zip(fins, vs_all[rank], strict=True):
        v = v.to(f.device)
        mine = mine + ((torch.view_as_real(f) * torch.view_as_real(v.to(f.dtype))).sum()
                       if f.is_complex() else (f * v.to(f.dtype)).sum())
    mine.backward()

    fwd, bwd = TOL[c["dtype"]]
    checks = {}
    pos = rank if not c["reverse"] else P - 1 - rank
    if c["cu"] is None and pos > 0:  # the incoming state matters: from zero is far off
        with torch.no_grad():
            alone = _as_tuple(layer(**la, reverse=c["reverse"]))[0]
        off = rel_err(alone, _narrow_time_out(g, 0, ys[0], lo, hi))
        checks["incoming state matters"] = (10 * fwd / off, 1.0)
    for i, (o, want) in enumerate(zip(outs, ys, strict=True)):
        checks[f"output {i}"] = (rel_err(o, _narrow_time_out(g, i, want, lo, hi)), fwd)
    for i, (f, want) in enumerate(zip(fins, want_fin, strict=True)):
        checks[f"final state {i}"] = (rel_err(f, want), fwd)
    for k, v in la.items():
        want = ra[k].grad
        grad = v.grad if v.grad is not None else torch.zeros_like(v)
        if g.annotation(k).role is Role.SEQ:
            want = _narrow_time(g, k, want, lo, hi)
        elif not c["sync"]:  # the user's reduction: the sum over the context group
            grad = grad.clone()
            dist.all_reduce(grad, group=group)
        checks[f"grad {k}"] = (rel_err(grad, want), bwd)
    for i, (s, want) in enumerate(zip(lh or (), rh or (), strict=True)):
        grad = s.grad.clone() if s.grad is not None else torch.zeros_like(s)
        dist.all_reduce(grad, group=group)  # each rank's share: the sequences it starts
        checks[f"grad initial_state {i}"] = (rel_err(grad, want.grad), bwd)
    return checks


def _narrow_time_out(g, i, x, lo, hi):
    ax = g.out_axes[i].index((g.time,))
    return x.narrow(ax, lo, hi - lo)


def _worker(rank, P, port, names, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=P,
                            timeout=datetime.timedelta(seconds=120))
    results = {}
    for name in names:
        try:
            results[name] = _one(name, rank, P)
        except Exception:  # noqa: BLE001 (recorded; the test of this case fails with it)
            results[name] = {"error": traceback.format_exc()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


def _one(name, rank, P):
    seed = zlib.crc32(name.encode())
    if name == "backward_order_mismatch":
        return _order_mismatch(rank, P)
    c = CASES[P][name]
    group = None
    if c["mesh"]:  # data x context = 2 x 2: context groups {0, 1} and {2, 3}
        groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        group, seed = groups[rank // 2], seed + rank // 2  # each data replica its own batch
        return run_case(c, rank % 2, 2, group, seed)
    return run_case(c, rank, P, group, seed)


def _order_mismatch(rank, P):
    """Two calls whose backward the ranks run in opposite orders: a clear error, not a mix."""
    from lrc.distributed import context_parallel
    from lrc.zoo import ZOO

    e = ZOO["rglru"]
    torch.manual_seed(0)
    cp = context_parallel(lrc.compile(e.spec, backend="reference"))
    ys = []
    for _ in range(2):
        a = {k: v.float().requires_grad_() for k, v in e.example(b=1, t=3).items()}
        ys.append(cp(**a).sum())
    first = ys[0] if rank == 0 else ys[1]  # the other rank starts with the other call
    try:
        first.backward()
    except RuntimeError as err:  # the check: this error, naming the cause
        raised = "different calls met" in str(err)
    else:
        raised = False
    return {"backward in another order raises": (0.0 if raised else 1.0, 0.5)}


def _spawn(P, names, out):
    mp.spawn(_worker, args=(P, _free_port(), names, str(out)), nprocs=P, join=True)
    per_rank = []
    for r in range(P):
        with open(out / f"rank{r}.json") as f:
            per_rank.append(json.load(f))
    return per_rank


# one test per process count (one spawn each, also under pytest-xdist); a failure lists every
# case, rank and check over its tolerance
@pytest.mark.parametrize("P", sorted(CASES))
def test_split_equals_one_process(P, tmp_path):
    names = list(CASES[P]) + (["backward_order_mismatch"] if P == 2 else [])
    bad = []
    for rank, res in enumerate(_spawn(P, names, tmp_path)):
        for name in names:
            checks = res[name]
            if "error" in checks:
                bad.append(f"{name} rank {rank}:\n{checks['error']}")
                continue
            assert checks, f"{name} rank {rank}: no checks ran"
            bad += [f"{name} rank {rank} {k}: {err:.2e} > {tol:.0e}"
                    for k, (err, tol) in checks.items() if not err <= tol]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("spec", ["s4", "h3", "hyena"])
def test_non_diagonal_states_are_unsupported(spec):
    from lrc.distributed import context_parallel
    from lrc.zoo import ZOO

    with pytest.raises(lrc.Unsupported, match="context_parallel"):
        context_parallel(lrc.compile(ZOO[spec].spec, backend="reference"))


def test_takes_a_layer():
    from lrc.distributed import context_parallel
    from lrc.zoo import ZOO

    with pytest.raises(TypeError, match="lrc.compile"):
        context_parallel(ZOO["rglru"].spec)


def _gpu_worker(rank, P, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=P)
    results = {}
    T = 8192
    for name, c in {
        "mamba2_chunked": case("mamba2", (0, T // 2 + 64, T), lowering="chunked", b=1, g=1,
                               r=8, p=64, n=64),
        "gla_chunked_cu": case("gla", (0, T // 2, T), lowering="chunked",
                               cu=[0, 1000, 6000, T], h=4, k=64, v=64),
        "mamba1_scan_reverse": case("mamba1", (0, T // 3, T), reverse=True, d=256, n=16),
    }.items():
        try:
            results[name] = run_case(c, rank, P, None, zlib.crc32(name.encode()),
                                     device=f"cuda:{rank}", oracle="layer")
        except Exception:  # noqa: BLE001
            results[name] = {"error": traceback.format_exc()}
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_nccl_two_gpus_equal_one_gpu(tmp_path):
    mp.spawn(_gpu_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    bad = []
    for r in range(2):
        with open(tmp_path / f"rank{r}.json") as f:
            for name, checks in json.load(f).items():
                assert "error" not in checks, f"{name} rank {r}:\n{checks['error']}"
                bad += [f"{name} rank {r} {k}: {err:.2e}" for k, (err, tol) in checks.items()
                        if not err <= tol]
    assert not bad, "\n".join(bad)
