"""Mamba-1's backward_n at configs outside the tuner's list: the tuner's own kernels-only timings
of each, lrc only (no peer), on the reference shape (B8 D2048 L4096 N16 bf16). The forward is
pinned to forward_n at 32 steps (its tuned choice), the backward's candidates replaced by
ROWS = "chunks" (chunk lengths and blocks), "caps" (register caps and unrolling at 128) or
"loop1" (the loop over n not unrolled: caps, chunks, blocks, warps, stages).

    LRC_CACHE_DIR=/tmp/fresh ROWS=chunks python3 benchmarks/debug/backward_n_configs.py

A fresh LRC_CACHE_DIR: a shape tuned before is taken from the disk, untimed.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402

import lrc  # noqa: E402
from bench import mamba1_inputs, selective_scan  # noqa: E402
from lrc.lowering.chunked import tune as chunked_tune
from lrc.lowering.scan import configs as scan_tune  # noqa: E402
from lrc.lowering.scan.configs import ScanConfig  # noqa: E402

# (TC, BLOCK, warps, stages, register cap, loop unroll)
ROWS = {
    "chunks": [(128, 2, 1, 1, 128, 2), (64, 2, 1, 1, None, 1), (64, 2, 1, 1, 128, 2),
               (64, 2, 1, 1, 96, 1), (256, 2, 1, 1, None, 1), (256, 2, 1, 1, 168, 2),
               (64, 4, 1, 1, 128, 1), (32, 4, 1, 1, None, 1)],
    "caps": [(128, 2, 1, 1, 128, 2), (128, 2, 1, 1, 112, 2), (128, 2, 1, 1, 120, 2),
             (128, 2, 1, 1, 136, 2), (128, 2, 1, 1, 144, 2), (128, 2, 1, 2, 128, 2),
             (128, 2, 1, 1, 128, 3)],
    "loop1": [(128, 2, 1, 1, 128, 1), (128, 2, 1, 1, 120, 1), (128, 2, 1, 1, 136, 1),
              (256, 2, 1, 1, 128, 1), (256, 2, 1, 1, 168, 1), (128, 4, 1, 1, 128, 1),
              (128, 2, 2, 1, 128, 1), (128, 2, 1, 2, 128, 1)],
}[os.environ.get("ROWS", "chunks")]
scan_tune.candidates_unrolled_backward = lambda tc, reverse=False: [
    ScanConfig(r[0], r[1], r[2], r[3], unroll=True, maxnreg=r[4], loop=r[5]) for r in ROWS]
scan_tune.candidates_unrolled_training = lambda reverse=False: [
    ScanConfig(32, 64, 8, 2, unroll=True, maxnreg=128)]


def main():
    args = mamba1_inputs()
    for v in args.values():
        v.requires_grad_(True)
    layer = lrc.compile(selective_scan)
    t0 = time.time()
    y = layer(**args)
    y.backward(torch.ones_like(y))
    torch.cuda.synchronize()
    print("first fwd+bwd with tuning", round(time.time() - t0, 1), "s", flush=True)
    for key, times in chunked_tune.TIMES.items():
        print("tuned", [(str(c), round(s * 1e3, 1)) for c, s in times], flush=True)


if __name__ == "__main__":
    main()
