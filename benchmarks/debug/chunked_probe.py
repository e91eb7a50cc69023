"""Where the chunked kernels' time goes on the GPU (issue 6): per-kernel times of Mamba-2's and
GLA's forward+backward (torch.profiler), the backward without its atomic adds of the
group-shared B/C gradients (timing only: results are wrong then), and the forward's time
against the batch size (is one program per (batch, head) enough to fill the GPU?).

    PYTHONPATH=$PWD python benchmarks/debug/chunked_probe.py     # prints; $OUT/chunked_probe.json
"""
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import lrc  # noqa: E402
from bench import kernel_us as kernels  # noqa: E402
from lrc.lowering.chunked import launch as chunked_launch, tune as chunked_tune  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
ROWS = []


def row(**kw):
    ROWS.append(kw)
    print(json.dumps(kw), flush=True)


def fb(layer, args):
    leaves = [v for v in args.values() if v.is_floating_point()]

    def run():
        for v in leaves:
            v.grad = None
        y = layer(**args)
        y.backward(torch.ones_like(y))
    return run


def probe(name, dims, batches):
    e = ZOO[name]
    layer = lrc.compile(e.spec, backend="triton", lowering="chunked")
    args = e.example(dtype=torch.bfloat16, device="cuda", **dims)
    with torch.no_grad():
        ms = triton.testing.do_bench(lambda: layer(**args), return_mode="median")
        row(case=name, what="fwd", us=round(ms * 1e3, 1), kernels=kernels(lambda: layer(**args)))
    for v in args.values():
        if v.is_floating_point():
            v.requires_grad_(True)
    run = fb(layer, args)
    run()
    row(case=name, what="fwd+bwd", us=round(triton.testing.do_bench(run, return_mode="median")
                                            * 1e3, 1), kernels=kernels(run))
    row(case=name, what="configs", chosen={str(k[-3:]): str(v) for k, v in
                                            chunked_tune._CACHE.items()},
        timed={str(k[-3:]): [(str(c), round(t * 1e3, 1)) for c, t in v]
               for k, v in chunked_tune.TIMES.items()})
    launch = chunked_launch.Launcher.launch

    def no_atomics(self, which, cfg, tensors, **consts):  # timing only: wrong gradients
        for k in consts:
            if k.startswith("ATOM_"):
                consts[k] = False
        return launch(self, which, cfg, tensors, **consts)

    chunked_launch.Launcher.launch = no_atomics
    try:
        run()
        row(case=name, what="fwd+bwd, Seq gradients stored, not added atomically",
            us=round(triton.testing.do_bench(run, return_mode="median") * 1e3, 1),
            kernels=kernels(run))
    finally:
        chunked_launch.Launcher.launch = launch
    for b in batches:
        a = e.example(dtype=torch.bfloat16, device="cuda", **dict(dims, b=b))
        with torch.no_grad():
            k = kernels(lambda: layer(**a))
        row(case=name, what=f"fwd kernels at b={b}", kernels=k)


if __name__ == "__main__":
    probe("mamba2", dict(b=8, t=4096, g=1, r=32, p=64, n=128), (1, 2, 4, 16))
    probe("gla", dict(b=8, t=4096, h=16, k=128, v=128), (1, 2, 4, 16))
    with open(os.path.join(OUT, "chunked_probe.json"), "w") as fh:
        json.dump(ROWS, fh, indent=1)
