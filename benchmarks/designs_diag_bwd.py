"""Hand-written Triton designs of the elementwise scan's forward and backward, time contiguous
(b d t, B8 D2048 T4096, bf16 in and out, fp32 state), timed against each other and against
accelerated-scan on the GPU, to choose what the code generator emits for the backward.

    python benchmarks/designs_diag_bwd.py [--only RE] [--budget S]  # $OUT/designs_diag_bwd.json
    TRITON_INTERPRET=1 python benchmarks/designs_diag_bwd.py --small   # CPU: every design checked

accelerated-scan's rows need `accelerated_scan` importable (the .whl of PEERS.md), else are
skipped. About 1 minute on the H200, compiles included; --budget caps it.

h_t = a_t h_{t-1} + x_t, y_t = h_t; backward: lam_t = dy_t + a_{t+1} lam_{t+1}, dx_t = lam_t,
da_t = lam_t h_{t-1}. Every kernel works on [TC, BD] tiles (time x rows, a row = one (b, d)),
or with row=1 on one row as a 1-D [TC] block (as accelerated-scan does); chunks of TC steps in
order (forward) or reversed (backward), carried across by a sum at the chunk's edge (pc=1: the
chunk's own scan total joined to the carry, as accelerated-scan does).

F_peer  accelerated-scan's forward (one program per row, BLOCK along time)
F1      forward with a fp32 checkpoint of h at every chunk start (as lrc's generated forward)
F0_lrc  lrc's generated forward (the layer, inputs not requiring grad)
B_peer  accelerated-scan's backward: reads a (shifted +1), y (shifted -1), dy
B0      the generated backward: checkpoint, forward recomputed, h_{t-1} by tl.gather, the
        adjoint mu_t = a_t (mu_{t+1} + dy_t) scanned and lam_t = dy_t + mu_{t+1} by tl.gather
B0_lrc  lrc's generated backward itself (autograd.grad with retain_graph on one forward)
B1      lam scanned directly from a_{t+1} loaded shifted; h_{t-1} still recomputed + gather
B2      no gather: lam as B1; h_{t-1} scanned from (a_{t-1}, x_{t-1}) loaded shifted, identity
        at the chunk's first step, applied to the checkpoint
B3      one scan, as the peer: lam as B1, h_{t-1} read from the saved output y shifted by -1
B4      B3 without the shifted load of a: lam scanned as a triple (a_t, prod, sum) whose
        combine takes the later segment's first decay, so a is read once, aligned
B5      the generated backward's shape: mu scanned from a_t, lam by tl.gather (as B0), h_{t-1}
        from the saved y (as B3)

Each row is checked against a float64 loop in PyTorch (relative L2 error per output).
Bytes per row: forward 3 arrays (x, a, y) + checkpoints; backward what the design moves:
B0-B2 x, a, dy, dx, da + checkpoints, B3 and B_peer a, y, dy, dx, da (2 bytes per element).
"""
import argparse
import json
import os
import re
import sys
import time
import traceback

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

try:
    from accelerated_scan import scalar as peer
except ImportError:
    peer = None


# ---- the kernels: rows of T contiguous steps (R = B * D rows), checkpoints (n_chunks, R)

@triton.jit
def _comb(a1, b1, a2, b2):
    """h -> a h + b: the first element then the second."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _index(R, TC: tl.constexpr, BD: tl.constexpr, ROW: tl.constexpr):
    """(time offsets in a chunk, rows, row mask) of this program: a [TC, BD] tile or one row."""
    pid = tl.program_id(0)
    if ROW:
        o_t = tl.arange(0, TC)
        o_r = pid + tl.arange(0, 1)
    else:
        o_t = tl.arange(0, TC)[:, None]
        o_r = (pid * BD + tl.arange(0, BD))[None, :]
    return o_t, o_r, o_r < R


@triton.jit
def _join(A, V, h, o_t, LAST: tl.constexpr, PC: tl.constexpr):
    """The chunk's values A h + V from the carry h, and the carry out (the value at LAST)."""
    out = A * h + V
    if PC:  # the chunk's total, independent of h, joined to h
        h = tl.sum(tl.where(o_t == LAST, V, 0.0), 0, keep_dims=True) + \
            tl.sum(tl.where(o_t == LAST, A, 0.0), 0, keep_dims=True) * h
    else:
        h = tl.sum(tl.where(o_t == LAST, out, 0.0), 0, keep_dims=True)
    return out, h


@triton.jit
def _prev(v, o_t, edge):
    """v one step earlier (tl.gather), `edge` at the chunk's first step."""
    i = tl.broadcast_to(tl.maximum(o_t - 1, 0), v.shape)
    return tl.where(o_t == 0, edge, tl.gather(v, i, 0))


@triton.jit
def _next(v, o_t, edge, TC: tl.constexpr):
    """v one step later (tl.gather), `edge` at the chunk's last step."""
    i = tl.broadcast_to(tl.minimum(o_t + 1, TC - 1), v.shape)
    return tl.where(o_t == TC - 1, edge, tl.gather(v, i, 0))


@triton.jit
def _store_grads(dx_ptr, da_ptr, at, m, lam, hp):
    """dx = lam, da = lam h_{t-1}, in bf16."""
    tl.store(dx_ptr + at, lam.to(tl.bfloat16), mask=m)
    tl.store(da_ptr + at, (lam * hp).to(tl.bfloat16), mask=m)


@triton.jit
def _saved_loads(y_ptr, a_ptr, dy_ptr, at, t, m):
    """h_{t-1} from the saved y one step earlier, a_t, dy_t (float32)."""
    hp = tl.load(y_ptr + at - 1, mask=m & (t > 0), other=0.0).to(tl.float32)
    a = tl.load(a_ptr + at, mask=m, other=1.0).to(tl.float32)
    dy = tl.load(dy_ptr + at, mask=m, other=0.0).to(tl.float32)
    return hp, a, dy


@triton.jit
def f1_kernel(x_ptr, a_ptr, y_ptr, chk_ptr, R, T, TC: tl.constexpr, BD: tl.constexpr,
              ROW: tl.constexpr, PC: tl.constexpr, ST: tl.constexpr):
    o_t, o_r, m_r = _index(R, TC, BD, ROW)
    base = o_r.to(tl.int64) * T
    h = tl.zeros(o_r.shape, tl.float32)
    for c in tl.range(0, tl.cdiv(T, TC), num_stages=ST):
        tl.store(chk_ptr + c * R + o_r, h, mask=m_r)
        t = c * TC + o_t
        m = m_r & (t < T)
        x = tl.load(x_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + base + t, mask=m, other=1.0).to(tl.float32)
        A, V = tl.associative_scan((a, x), 0, _comb)
        y, h = _join(A, V, h, o_t, TC - 1, PC)
        tl.store(y_ptr + base + t, y.to(tl.bfloat16), mask=m)


@triton.jit
def b0_kernel(x_ptr, a_ptr, dy_ptr, chk_ptr, dx_ptr, da_ptr, R, T, TC: tl.constexpr,
              BD: tl.constexpr, ROW: tl.constexpr, PC: tl.constexpr, ST: tl.constexpr):
    o_t, o_r, m_r = _index(R, TC, BD, ROW)
    base = o_r.to(tl.int64) * T
    nc = tl.cdiv(T, TC)
    g = tl.zeros(o_r.shape, tl.float32)  # mu at the next chunk's first step
    for ci in tl.range(0, nc, num_stages=ST):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_r & (t < T)
        h0 = tl.load(chk_ptr + c * R + o_r, mask=m_r, other=0.0)
        x = tl.load(x_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + base + t, mask=m, other=1.0).to(tl.float32)
        dy = tl.load(dy_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        A, V = tl.associative_scan((a, x), 0, _comb)
        h = A * h0 + V
        hp = _prev(h, o_t, h0)
        M, W = tl.associative_scan((a, a * dy), 0, _comb, reverse=True)
        g_in = g
        mu, g = _join(M, W, g, o_t, 0, PC)
        lam = _next(mu, o_t, g_in, TC) + dy
        _store_grads(dx_ptr, da_ptr, base + t, m, lam, hp)


@triton.jit
def b1_kernel(x_ptr, a_ptr, dy_ptr, chk_ptr, dx_ptr, da_ptr, R, T, TC: tl.constexpr,
              BD: tl.constexpr, ROW: tl.constexpr, PC: tl.constexpr, ST: tl.constexpr):
    o_t, o_r, m_r = _index(R, TC, BD, ROW)
    base = o_r.to(tl.int64) * T
    nc = tl.cdiv(T, TC)
    g = tl.zeros(o_r.shape, tl.float32)  # lam at the next chunk's first step
    for ci in tl.range(0, nc, num_stages=ST):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_r & (t < T)
        h0 = tl.load(chk_ptr + c * R + o_r, mask=m_r, other=0.0)
        x = tl.load(x_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + base + t, mask=m, other=1.0).to(tl.float32)
        a1 = tl.load(a_ptr + base + t + 1, mask=m & (t + 1 < T), other=1.0).to(tl.float32)
        dy = tl.load(dy_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        A, V = tl.associative_scan((a, x), 0, _comb)
        hp = _prev(A * h0 + V, o_t, h0)
        F, W = tl.associative_scan((a1, dy), 0, _comb, reverse=True)
        lam, g = _join(F, W, g, o_t, 0, PC)
        _store_grads(dx_ptr, da_ptr, base + t, m, lam, hp)


@triton.jit
def b2_kernel(x_ptr, a_ptr, dy_ptr, chk_ptr, dx_ptr, da_ptr, R, T, TC: tl.constexpr,
              BD: tl.constexpr, ROW: tl.constexpr, PC: tl.constexpr, ST: tl.constexpr):
    o_t, o_r, m_r = _index(R, TC, BD, ROW)
    base = o_r.to(tl.int64) * T
    nc = tl.cdiv(T, TC)
    g = tl.zeros(o_r.shape, tl.float32)
    for ci in tl.range(0, nc, num_stages=ST):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_r & (t < T)
        mp = m & (o_t > 0)  # (a_{t-1}, x_{t-1}) inside the chunk, identity at its first step
        h0 = tl.load(chk_ptr + c * R + o_r, mask=m_r, other=0.0)
        xp = tl.load(x_ptr + base + t - 1, mask=mp, other=0.0).to(tl.float32)
        ap = tl.load(a_ptr + base + t - 1, mask=mp, other=1.0).to(tl.float32)
        a1 = tl.load(a_ptr + base + t + 1, mask=m & (t + 1 < T), other=1.0).to(tl.float32)
        dy = tl.load(dy_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        A, V = tl.associative_scan((ap, xp), 0, _comb)
        hp = A * h0 + V
        F, W = tl.associative_scan((a1, dy), 0, _comb, reverse=True)
        lam, g = _join(F, W, g, o_t, 0, PC)
        _store_grads(dx_ptr, da_ptr, base + t, m, lam, hp)


@triton.jit
def b3_kernel(y_ptr, a_ptr, dy_ptr, dx_ptr, da_ptr, R, T, TC: tl.constexpr,
              BD: tl.constexpr, ROW: tl.constexpr, PC: tl.constexpr, ST: tl.constexpr):
    o_t, o_r, m_r = _index(R, TC, BD, ROW)
    base = o_r.to(tl.int64) * T
    nc = tl.cdiv(T, TC)
    g = tl.zeros(o_r.shape, tl.float32)
    for ci in tl.range(0, nc, num_stages=ST):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_r & (t < T)
        hp = tl.load(y_ptr + base + t - 1, mask=m & (t > 0), other=0.0).to(tl.float32)
        a1 = tl.load(a_ptr + base + t + 1, mask=m & (t + 1 < T), other=1.0).to(tl.float32)
        dy = tl.load(dy_ptr + base + t, mask=m, other=0.0).to(tl.float32)
        F, W = tl.associative_scan((a1, dy), 0, _comb, reverse=True)
        lam, g = _join(F, W, g, o_t, 0, PC)
        _store_grads(dx_ptr, da_ptr, base + t, m, lam, hp)


@triton.jit
def _comb3(f1, p1, q1, f2, p2, q2):
    """lam_t = q + p * a_{e+1} * lam_{e+1} over a segment [t, e], f = a_t its first decay:
    (1) the later segment, (2) the one before it (a reverse scan's order)."""
    return f2, p2 * f1 * p1, q2 + p2 * f1 * q1


@triton.jit
def b4_kernel(y_ptr, a_ptr, dy_ptr, dx_ptr, da_ptr, R, T, TC: tl.constexpr,
              BD: tl.constexpr, ROW: tl.constexpr, PC: tl.constexpr, ST: tl.constexpr):
    o_t, o_r, m_r = _index(R, TC, BD, ROW)
    base = o_r.to(tl.int64) * T
    nc = tl.cdiv(T, TC)
    g = tl.zeros(o_r.shape, tl.float32)  # a_{t+1} lam_{t+1} at the next chunk's first step
    for ci in tl.range(0, nc, num_stages=ST):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_r & (t < T)
        hp, a, dy = _saved_loads(y_ptr, a_ptr, dy_ptr, base + t, t, m)
        _, P, Q = tl.associative_scan((a, tl.full(a.shape, 1.0, tl.float32), dy), 0, _comb3,
                                      reverse=True)
        lam = Q + P * g
        g = tl.sum(tl.where(o_t == 0, a * lam, 0.0), 0, keep_dims=True)
        _store_grads(dx_ptr, da_ptr, base + t, m, lam, hp)


@triton.jit
def b5_kernel(y_ptr, a_ptr, dy_ptr, dx_ptr, da_ptr, R, T, TC: tl.constexpr,
              BD: tl.constexpr, ROW: tl.constexpr, PC: tl.constexpr, ST: tl.constexpr):
    o_t, o_r, m_r = _index(R, TC, BD, ROW)
    base = o_r.to(tl.int64) * T
    nc = tl.cdiv(T, TC)
    g = tl.zeros(o_r.shape, tl.float32)  # mu at the next chunk's first step
    for ci in tl.range(0, nc, num_stages=ST):
        c = nc - 1 - ci
        t = c * TC + o_t
        m = m_r & (t < T)
        hp, a, dy = _saved_loads(y_ptr, a_ptr, dy_ptr, base + t, t, m)
        M, W = tl.associative_scan((a, a * dy), 0, _comb, reverse=True)
        g_in = g
        mu, g = _join(M, W, g, o_t, 0, PC)
        lam = _next(mu, o_t, g_in, TC) + dy
        _store_grads(dx_ptr, da_ptr, base + t, m, lam, hp)


BWD = {"B0": b0_kernel, "B1": b1_kernel, "B2": b2_kernel, "B3": b3_kernel, "B4": b4_kernel,
       "B5": b5_kernel}


# ---- configs: tile (TC, BD, warps, stages, pc); row=1 (TC, 1, warps, stages, pc)

FWD_TILE = [(512, 4, 4, 2, 0), (512, 2, 2, 3, 0), (1024, 2, 4, 2, 0), (1024, 4, 8, 2, 0),
            (2048, 1, 4, 2, 0), (2048, 2, 8, 2, 0), (4096, 1, 8, 1, 0), (1024, 2, 4, 2, 1)]
FWD_ROW = [(2048, 1, 4, 1, 0), (2048, 1, 4, 2, 0), (1024, 1, 4, 3, 0), (2048, 1, 8, 2, 0),
           (4096, 1, 8, 1, 0), (2048, 1, 4, 1, 1)]
BWD_TILE = [(1024, 2, 4, 2, 0), (512, 4, 4, 2, 0), (2048, 1, 4, 2, 0), (2048, 2, 8, 2, 0),
            (1024, 1, 4, 3, 0)]
BWD_ROW = [(2048, 1, 4, 1, 0), (2048, 1, 4, 2, 0), (2048, 1, 8, 2, 0), (1024, 1, 4, 2, 0),
           (1024, 1, 2, 3, 0), (4096, 1, 8, 1, 0)]
BWD_PC = {"B2": [(0, (1024, 2, 4, 2, 1))],  # (row, config): the peer's carry, two designs
          "B3": [(0, (1024, 2, 4, 2, 1)), (1, (2048, 1, 4, 1, 1))]}
PEER = [(2048, 4), (1024, 4), (2048, 8)]  # (BLOCK, warps)
# ScanConfig(tc, block, warps, stages): the generated kernels are one row of time per
# program since this session (block unused); these are scan_tune.ROW's candidates
LRC = [(1024, None, 4, 3), (2048, None, 4, 1), (2048, None, 4, 2), (1024, None, 2, 3),
       (512, None, 4, 2)]

# --small: the shape B2 D3 T77, chunks shorter than T and one longer (TC 128 > T)
SMALL_TILE = [(16, 2, 4, 1, 0), (32, 4, 4, 2, 1), (128, 1, 4, 1, 0)]
SMALL_ROW = [(16, 1, 4, 1, 0), (32, 1, 4, 2, 1), (128, 1, 4, 1, 1)]
SMALL_LRC = [(16, 2, 4, 2), (32, 1, 4, 2)]


# ---- the reference

def reference(x, a, dy):
    """float64 loops over time: y, dx, da (shapes (B, D, T))."""
    xs, as_, dys = (v.double().permute(2, 0, 1).contiguous() for v in (x, a, dy))
    T = xs.shape[0]
    y = torch.empty_like(xs)
    h = torch.zeros_like(xs[0])
    for t in range(T):
        h = as_[t] * h + xs[t]
        y[t] = h
    dx, da = torch.empty_like(xs), torch.empty_like(xs)
    g = torch.zeros_like(h)  # a_{t+1} lam_{t+1}
    for t in reversed(range(T)):
        lam = dys[t] + g
        dx[t] = lam
        da[t] = lam * y[t - 1] if t else 0.0
        g = as_[t] * lam
    return tuple(v.permute(1, 2, 0) for v in (y, dx, da))


def rel(out, ref):
    """Relative L2 error (absolute where the reference is all zeros)."""
    n = ref.norm().item()
    return (out.double() - ref).norm().item() / (n if n > 0 else 1.0)


def checkpoints(ref_y, TC):
    """h before each chunk (n_chunks, B, D) in fp32, from the reference."""
    B, D, T = ref_y.shape
    nc = triton.cdiv(T, TC)
    chk = torch.zeros(nc, B, D, device=ref_y.device, dtype=torch.float32)
    if nc > 1:
        chk[1:] = ref_y[..., TC - 1::TC][..., :nc - 1].permute(2, 0, 1).float()
    return chk


# ---- the runs

def label(TC, BD, w, st, pc, row):
    return f"TC{TC} {'row' if row else f'BD{BD}'} w{w} st{st}" + (" pc" if pc else "")


class Bench:
    def __init__(self, small, budget, only):
        self.small, self.budget, self.only = small, budget, only
        self.timed = not small and torch.cuda.is_available()
        self.t0 = time.time()
        self.rows, self.failed = [], []

    def run(self, design, config, fn, outs, nbytes, fresh=()):
        """Run fn once, check outs() [(name, tensor, reference, tolerance)], time it on the GPU.
        `fresh`: output buffers, filled with NaN first (shared by the designs)."""
        name = f"{design} {config}"
        if self.only and not re.search(self.only, name):
            return
        if time.time() - self.t0 > self.budget:
            print(f"{name:44s} skipped (budget of {self.budget} s spent)", flush=True)
            return
        row = dict(design=design, config=config, bytes=nbytes)
        try:
            for v in fresh:
                v.fill_(float("nan"))
            t = time.time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            row["first_s"] = round(time.time() - t, 2)
            for out, val, ref, tol in outs():
                row[f"err_{out}"] = rel(val, ref)
                if not row[f"err_{out}"] <= tol:
                    self.failed.append(f"{name}: {out} rel err {row[f'err_{out}']:.1e} > {tol}")
            if self.timed:
                ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                row.update(us=ms * 1e3, TBps=nbytes / (ms * 1e-3) / 1e12)
        except Exception as e:  # one failing design must not hide the others
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            self.failed.append(f"{name}: {row['error']}")
            traceback.print_exc(limit=2)
        self.rows.append(row)
        errs = " ".join(f"{k[4:]} {v:.1e}" for k, v in row.items() if k.startswith("err_"))
        tm = f"{row['us']:8.1f} us {row['TBps']:5.2f} TB/s" if "us" in row else ""
        print(f"{name:44s} {tm:25s} err {errs} {row.get('error', '')}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--small", action="store_true", help="B2 D3 T77, check only (CPU: interpreter)")
    p.add_argument("--only", default="", help="regex on 'design config': run only those rows")
    p.add_argument("--budget", type=float, default=170.0, help="seconds; later rows are skipped")
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    B, D, T = (2, 3, 77) if args.small else (8, 2048, 4096)
    R, N = B * D, B * D * T
    torch.manual_seed(0)
    x = torch.randn(B, D, T, device=dev).to(torch.bfloat16)
    a = torch.sigmoid(torch.randn(B, D, T, device=dev) + 2).to(torch.bfloat16)
    dy = torch.randn(B, D, T, device=dev).to(torch.bfloat16)
    ref_y, ref_dx, ref_da = reference(x, a, dy)
    y_saved = ref_y.to(torch.bfloat16).contiguous()  # the forward's output, as B3 reads it
    run = Bench(args.small, args.budget, args.only)
    bf, f32 = 1e-2, 1e-4
    y, dx, da = (torch.empty_like(x) for _ in range(3))
    bwd_checks = lambda: [("dx", dx, ref_dx, bf), ("da", da, ref_da, bf)]  # noqa: E731
    tile = SMALL_TILE if args.small else BWD_TILE
    row_cfgs = SMALL_ROW if args.small else BWD_ROW
    print(f"B{B} D{D} T{T} bf16 on {dev}; peer {'found' if peer else 'missing (skipped)'}")

    # -- accelerated-scan: it scans in its inputs' dtype (bf16 on the GPU, so looser checks);
    # the interpreter's bf16 arithmetic is wrong, so on the CPU it gets fp32 copies
    if peer is not None:
        cast = (lambda v: v.float()) if os.environ.get("TRITON_INTERPRET") == "1" else (lambda v: v)
        ap, xp, yp, dyp = (cast(v) for v in (a, x, y_saved, dy))
        py, pdx, pda = (torch.empty_like(xp) for _ in range(3))
        for BLOCK, w in ((2048, 4),) if args.small else PEER:
            cfg = f"BLOCK{BLOCK} w{w}"
            run.run("F_peer", cfg, lambda BLOCK=BLOCK, w=w: peer.forward_scan[(B, D)](
                ap, xp, py, T, BLOCK=BLOCK, num_warps=w, enable_fp_fusion=False),
                lambda: [("y", py, ref_y, 5e-2)], 3 * N * 2, (py,))
            run.run("B_peer", cfg, lambda BLOCK=BLOCK, w=w: peer.backward_scan[(B, D)](
                ap, yp, dyp, pdx, pda, T, BLOCK=BLOCK, num_warps=w, enable_fp_fusion=False),
                lambda: [("dx", pdx, ref_dx, 5e-2), ("da", pda, ref_da, 5e-2)], 5 * N * 2,
                (pdx, pda))

    # -- the backward designs
    chks = {}
    for design in ("B3", "B4", "B5", "B2", "B1", "B0"):
        k = BWD[design]
        cfgs = [(0, c) for c in tile] + [(1, c) for c in row_cfgs]
        for row, (TC, BD, w, st, pc) in cfgs + ([] if args.small else BWD_PC.get(design, [])):
            if TC not in chks:
                chks[TC] = checkpoints(ref_y, TC)
            chk = chks[TC]
            grid = (R if row else triton.cdiv(R, BD),)
            kw = dict(TC=TC, BD=BD, ROW=row, PC=pc, ST=st, num_warps=w)
            if design in ("B3", "B4", "B5"):
                ins, nbytes = (y_saved, a, dy), 5 * N * 2
            else:
                ins, nbytes = (x, a, dy, chk), 5 * N * 2 + chk.numel() * 4
            fn = lambda k=k, g=grid, kw=kw, ins=ins: k[g](*ins, dx, da, R, T, **kw)  # noqa: E731
            run.run(design, label(TC, BD, w, st, pc, row), fn, bwd_checks, nbytes, (dx, da))

    # -- lrc's generated kernels (B0 and its forward), configs pinned
    lrc_layer(run, x, a, dy, ref_y, ref_dx, ref_da, SMALL_LRC if args.small else LRC, N)

    # -- the forward designs
    cfgs = [(0, c) for c in (SMALL_TILE if args.small else FWD_TILE)] + \
        [(1, c) for c in (SMALL_ROW if args.small else FWD_ROW)]
    for row, (TC, BD, w, st, pc) in cfgs:
        chk = torch.empty(triton.cdiv(T, TC), B, D, device=dev)
        grid = (R if row else triton.cdiv(R, BD),)
        kw = dict(TC=TC, BD=BD, ROW=row, PC=pc, ST=st, num_warps=w)
        run.run("F1", label(TC, BD, w, st, pc, row),
                lambda g=grid, kw=kw, chk=chk: f1_kernel[g](x, a, y, chk, R, T, **kw),
                lambda chk=chk, TC=TC: [("y", y, ref_y, bf),
                                        ("chk", chk, checkpoints(ref_y, TC), f32)],
                3 * N * 2 + chk.numel() * 4, (y, chk))

    path = os.path.join(os.environ.get("OUT", "/tmp"), "designs_diag_bwd.json")
    with open(path, "w") as fh:
        json.dump(dict(shape=dict(B=B, D=D, T=T), device=torch.cuda.get_device_name() if
                       dev == "cuda" else "cpu", rows=run.rows), fh, indent=1)
    print(f"{len(run.rows)} rows -> {path}; {time.time() - run.t0:.0f} s")
    for f in run.failed:
        print("FAILED", f)
    return 1 if run.failed else 0


def lrc_layer(run, x, a, dy, ref_y, ref_dx, ref_da, configs, N):
    """B0_lrc: lrc's backward alone (autograd.grad on one forward, retain_graph); F0_lrc: its
    forward on inputs not requiring grad; each with ScanConfig pinned."""
    try:
        import lrc
        from lrc.lowering.scan.configs import ScanConfig
        from lrc.lowering.scan import launch as sr
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from bench import diag_bdt
        layer = lrc.compile(diag_bdt, backend="triton")
    except Exception as e:  # noqa: BLE001
        print(f"lrc: {type(e).__name__}: {str(e)[:300]} (B0_lrc skipped)")
        return
    for tc, block, w, st in configs:
        sr.CONFIG = ScanConfig(tc, block, w, st)
        try:
            lrc_config(run, layer, f"TC{tc} BD{block} w{w} st{st}", x, a, dy, ref_y, ref_dx,
                       ref_da, N)
        except Exception as e:  # noqa: BLE001
            print(f"lrc TC{tc} BD{block}: {type(e).__name__}: {str(e)[:300]}")
        finally:
            sr.CONFIG = None


def lrc_config(run, layer, cfg, x, a, dy, ref_y, ref_dx, ref_da, N):
    out = {}

    def first(y):
        return y[0] if isinstance(y, tuple) else y

    def fwd():
        out["y"] = first(layer(x=x, a=a))
    run.run("F0_lrc", cfg, fwd, lambda: [("y", out["y"], ref_y, 1e-2)], 3 * N * 2)
    xg, ag = x.detach().requires_grad_(True), a.detach().requires_grad_(True)
    yg = first(layer(x=xg, a=ag))

    def bwd():
        out["dx"], out["da"] = torch.autograd.grad(yg, (xg, ag), dy, retain_graph=True)
    run.run("B0_lrc", cfg, bwd, lambda: [("dx", out["dx"], ref_dx, 1e-2),
                                         ("da", out["da"], ref_da, 1e-2)], 5 * N * 2)
    if run.timed and run.rows and run.rows[-1]["design"] == "B0_lrc":  # the kernel alone
        from bench import kernel_us  # (autograd.grad's wall time may be the host's)
        run.rows[-1]["kernels"] = kernel_us(bwd)
        print(f"{'':44s} kernels {run.rows[-1]['kernels']}", flush=True)

if __name__ == "__main__":
    sys.exit(main())
