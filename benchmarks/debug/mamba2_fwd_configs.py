"""Mamba-2's inference forward (the zoo spec, B8 L4096 H32 P64 N128 bf16, chunked) at pinned
configs, against fla's chunk_simple_gla in the same process: is a config outside the tuner's
set faster, and does the one-row kernel fit two programs on an SM (time at batch 4 against 8)?
Each compiled kernel's registers, spills and shared memory are printed with its time.

    PYTHONPATH=$PWD python benchmarks/debug/mamba2_fwd_configs.py   # $OUT/mamba2_fwd_configs.json
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
import lrc  # noqa: E402
from lrc.lowering.chunked.tune import PASS, Config  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
ROWS = []
CONFIGS = [Config(64, 64, 4, 2), Config(64, 64, 4, 1), Config(64, 64, 4, 3),
           Config(32, 64, 4, 2), Config(32, 64, 4, 1), Config(128, 64, 4, 1),
           Config(128, 64, 8, 2), Config(64, 64, 8, 1), Config(64, 64, 2, 2),
           Config(64, 64, 4, 2, split=PASS, wk=64), Config(64, 64, 4, 2, split=PASS)]


def row(**kw):
    ROWS.append(kw)
    print(json.dumps(kw), flush=True)


def compiled(prog):
    """(regs, spills, shared bytes) of every compiled variant of the forward kernel."""
    fn = prog.kernel("forward", False)
    out = []
    for cache in fn.device_caches.values():
        for k in cache[0].values():
            k = k.result() if hasattr(k, "result") else k
            k._init_handles()
            out.append((k.metadata.num_warps, k.metadata.num_stages, k.n_regs, k.n_spills,
                        k.metadata.shared))
    return out


def main():
    e = ZOO["mamba2"]
    layer = lrc.compile(e.spec, backend="triton", lowering="chunked")
    prog = layer._lowering("chunked")
    seen = set()
    for b in (8, 4):
        args = e.example(b=b, t=4096, g=1, r=32, p=64, n=128, dtype=torch.bfloat16,
                         device="cuda")
        if b == 8:
            x, dt = args["x"], F.softplus(args["dt"].float() + args["dt_bias"])
            A = -torch.exp(args["A_log"].float())
            q = args["C"].expand(8, 4096, 32, 128).contiguous()
            k = args["B"].expand(8, 4096, 32, 128).contiguous()
            v = (x * dt.to(x.dtype)[..., None])
            try:
                from fla.ops.simple_gla import chunk_simple_gla
                us = triton.testing.do_bench(
                    lambda: chunk_simple_gla(q, k, v, g=dt * A, scale=1.0), warmup=25,
                    rep=100, return_mode="median") * 1e3
                row(b=b, impl="fla chunk_simple_gla", us=round(us, 1))
            except Exception as ex:  # noqa: BLE001
                print("!! fla:", ex)
            del q, k, v
        with torch.no_grad():
            for cfg in CONFIGS:
                prog.override = (cfg, cfg)
                try:
                    layer(**args)
                    us = triton.testing.do_bench(lambda: layer(**args), warmup=25, rep=100,
                                                 return_mode="median") * 1e3
                except Exception as ex:  # noqa: BLE001
                    row(b=b, config=str(cfg), error=str(ex)[:200])
                    continue
                new = [c for c in compiled(prog) if c not in seen]
                seen.update(new)
                row(b=b, config=str(cfg), us=round(us, 1), kernels=new)
    json.dump(ROWS, open(os.path.join(OUT, "mamba2_fwd_configs.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
