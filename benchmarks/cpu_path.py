"""The CPU path against plain PyTorch loops of the same step: forward + backward, CPU tensors.

    PYTHONPATH=. python benchmarks/cpu_path.py [--reps 7]

Rows: a DeltaNet-style matrix state (T=64) and Mamba-1's gated selective SSM (T=512). Each
is timed as lrc.compile(spec) (backend='auto': the torch lowering on the CPU) and as a plain
PyTorch loop over time; runs alternate, and the median is reported.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)

import lrc
from lrc import Seq, State
from lrc.zoo import ZOO


@lrc.recurrence
def deltanet(q: Seq("b t h k"), k: Seq("b t h k"), v: Seq("b t h v"), beta: Seq("b t h"),
             S: State("b h k v")):
    """The delta rule: S' = S - beta k (k^T S) + beta k v^T, y = q^T S'."""
    S = S - beta * k * (k * S).sum("k") + beta * k * v
    return (q * S).sum("k"), S


def deltanet_loop(q, k, v, beta):
    """The same step as a plain PyTorch loop."""
    b, t, h, dk = k.shape
    S = q.new_zeros(b, h, dk, v.shape[-1])
    ys = []
    for i in range(t):
        ki, bi = k[:, i], beta[:, i, :, None, None]
        kS = torch.einsum("bhk,bhkv->bhv", ki, S)
        S = S - bi * ki[..., None] * kS[:, :, None] + bi * ki[..., None] * v[:, i, :, None]
        ys.append(torch.einsum("bhk,bhkv->bhv", q[:, i], S))
    return torch.stack(ys, 1)


def mamba1_loop(u, dt, B, C, A_log, D, dt_bias):
    """Mamba-1's step (lrc.zoo.mamba1, layout b d t) as a plain PyTorch loop."""
    delta = F.softplus(dt + dt_bias[:, None])                     # (b d t)
    A = -torch.exp(A_log)                                         # (d n)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[-1]):
        d_i = delta[:, :, i, None]
        h = torch.exp(d_i * A) * h + d_i * B[:, None, :, i] * u[:, :, i, None]
        ys.append((h * C[:, None, :, i]).sum(-1) + D * u[:, :, i])
    return torch.stack(ys, -1)


def _grad(args):
    return {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in args.items()}


def time_fwd_bwd(fn, args, reps):
    """Median seconds of fn(**args).square().sum().backward() (after one warm-up)."""
    out = []
    for i in range(reps + 1):
        a = _grad(args)
        start = time.perf_counter()
        fn(**a).square().sum().backward()
        if i:
            out.append(time.perf_counter() - start)
    return statistics.median(out)


def rows():
    """(name, lrc layer, plain loop, inputs)."""
    torch.manual_seed(0)
    b, t, h, dk, dv = 2, 64, 4, 16, 16
    k = F.normalize(torch.randn(b, t, h, dk), dim=-1)
    dn = {"q": torch.randn(b, t, h, dk), "k": k, "v": torch.randn(b, t, h, dv),
          "beta": torch.rand(b, t, h)}
    yield "deltanet T=64 (b2 h4 k16 v16)", lrc.compile(deltanet), deltanet_loop, dn
    m = ZOO["mamba1"].example(b=2, t=512, d=64, n=16, dtype=torch.float32)
    yield "mamba1 T=512 (b2 d64 n16)", lrc.compile(ZOO["mamba1"].spec), mamba1_loop, m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7)
    reps = p.parse_args().reps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, layer, loop, args in rows():
        with torch.no_grad():
            ref = loop(**args)
            err = ((layer(**args) - ref).norm() / ref.norm()).item()
        lrc_s, loop_s = [], []
        for _ in range(3):  # alternate: the machine's load hits both alike
            lrc_s.append(time_fwd_bwd(layer, args, reps))
            loop_s.append(time_fwd_bwd(loop, args, reps))
        a, b = min(lrc_s), min(loop_s)
        print(f"{name}: lrc {a * 1e3:.1f} ms, plain loop {b * 1e3:.1f} ms, "
              f"ratio {a / b:.2f}; relative error {err:.1e}")


if __name__ == "__main__":
    main()
