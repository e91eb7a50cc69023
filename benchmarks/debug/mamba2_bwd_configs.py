"""Mamba-2's forward+backward at the reference shape (B8 L4096 H32 P64 N128 bf16) under fixed
chunked configs (no tuning): wall (do_bench median), GPU time per launch, and every gradient
against the first config's (the same math another way: a wrong sum shows here).

    PYTHONPATH=$PWD python3 benchmarks/debug/mamba2_bwd_configs.py [name ...]   # repo root
"""
import sys

import torch

sys.path.insert(0, "benchmarks")
import bench  # noqa: E402
import lrc  # noqa: E402
from lrc.lowering.chunked.tune import PASS, Config  # noqa: E402
from lrc.zoo import ZOO  # noqa: E402

FWD = Config(64, 64, 4, 2)  # the tuner's training forward (session 17)
CONFIGS = {  # as text: an older tree's Config may lack a field
    "spread4": "Config(64, 64, 4, 1, split=PASS, wk=64, spread=True)",
    "gather4": "Config(64, 64, 4, 1, split=PASS, wk=64, spread=True, gather=True)",
    "spread8": "Config(64, 64, 8, 1, split=PASS, wk=64, spread=True)",
    "gather8": "Config(64, 64, 8, 1, split=PASS, wk=64, spread=True, gather=True)",
}


def main(names):
    e = ZOO["mamba2"]
    args = e.example(b=8, t=4096, g=1, r=32, p=64, n=128, dtype=torch.bfloat16, device="cuda")
    leaves = {k: v.requires_grad_(True) for k, v in args.items() if v.is_floating_point()}
    layer = lrc.compile(e.spec, backend="triton", lowering="chunked")
    prog = layer._lowering("chunked")
    gy = torch.randn(8, 4096, 32, 64, device="cuda", dtype=torch.bfloat16)
    ref = None
    for name in names:
        # a name above, or a config written out: "Config(64, 64, 4, 1, split=2)"
        cfg = eval(CONFIGS.get(name, name), {"Config": Config, "PASS": PASS})
        prog.override = (FWD, cfg)

        def run():
            for v in leaves.values():
                v.grad = None
            layer(**args).backward(gy)
        try:
            run()
        except Exception as ex:  # noqa: BLE001
            print(f"{name}: {type(ex).__name__}: {str(ex)[:300]}", flush=True)
            continue
        grads = {k: v.grad.double() for k, v in leaves.items()}
        if ref is None:
            ref = grads
        errs = {k: ((grads[k] - ref[k]).norm() / ref[k].norm()).item() for k in ref}
        bad = [k for k, v in grads.items() if not torch.isfinite(v).all()]
        wall = bench.bench(run)
        gpu = bench.device_us(run)
        launches = bench.launches_us(run)
        print(f"{name:10s} fwd+bwd {wall * 1e3:8.1f} us wall, {gpu:8.1f} us GPU; max grad diff vs "
              f"first {max(errs.values()):.1e} nonfinite {bad}", flush=True)
        print("    ", [(n[:24], t) for n, t in launches if t > 2], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(CONFIGS))
