"""The command line: `python -m lrc COMMAND ...` (`python -m lrc -h` lists the commands).

    python -m lrc plan mamba1                         the plan: structure, lowerings, choice
    python -m lrc explain lrc.zoo.mamba1:mamba1       the graph after every pass
    python -m lrc source examples/demo.py:my_ssm --lowering scan --which backward
    python -m lrc draw mamba1 --out mamba1.png        a picture of the traced graph
    python -m lrc cache ls | clear                    lrc's entries in the cache directory
    python -m lrc bench mamba2 --shape b=8,t=4096 --dtype bf16
    python -m lrc tune-tables --out lrc/lowering      tuned tables for this kind of GPU

A SPEC is a zoo name (`mamba1`, see lrc.zoo.ZOO), `package.module:name`, or
`path/to/file.py:name`; the name may be a spec or a zoo entry.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import config
from .ir.trace import Spec
from .kernels import disk
from .kernels import tune as policy
from .runtime import compile as lrc_compile
from .zoo import ZOO

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
LOWERINGS = ("scan", "chunked", "conv")


class CliError(Exception):
    """A bad command line: printed as one line, exit status 2."""


def resolve(ref: str) -> Spec:
    """The spec `ref` names: a zoo name, `module:name` or `file.py:name`."""
    if ref in ZOO:
        return ZOO[ref].spec
    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise CliError(f"{ref!r} is not a zoo name ({', '.join(ZOO)}) nor MODULE:NAME or "
                       "FILE.py:NAME")
    if where.endswith(".py") or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise CliError(f"no file {where}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise CliError(f"cannot import {where}: {e}") from e
    if not hasattr(module, name):
        raise CliError(f"{where} has no {name!r}")
    obj = getattr(module, name)
    obj = getattr(obj, "spec", obj)  # a ZooEntry
    if not isinstance(obj, Spec):
        raise CliError(f"{ref} is a {type(obj).__name__}, not an @lrc.recurrence spec")
    return obj


def parse_shape(text: str) -> dict[str, int]:
    """'b=8,t=4096,d=2048' -> {'b': 8, 't': 4096, 'd': 2048}."""
    out = {}
    for part in filter(None, text.split(",")):
        dim, eq, size = part.partition("=")
        if not eq or not size.strip().isdigit():
            raise CliError(f"--shape takes dim=size pairs, e.g. b=8,t=4096; got {part!r}")
        out[dim.strip()] = int(size)
    return out


def _explain(a) -> None:
    from .passes.pipeline import explain

    explain(resolve(a.spec), a.lowering)


def _source(a) -> None:
    layer = lrc_compile(resolve(a.spec))
    try:
        print(layer.source(a.which, a.lowering or "scan"))
    except ValueError as e:
        raise CliError(str(e)) from e


def _draw(a) -> None:
    spec = resolve(a.spec)
    out = a.out or f"{spec.name}.png"
    print(lrc_compile(spec, backend="reference").draw(out))


def _plan(a) -> None:
    print(lrc_compile(resolve(a.spec), lowering=a.lowering).plan)


def _cache(a) -> None:
    home = disk.root()
    if home is None:
        raise CliError(f"the cache directory {config.cache_dir()} cannot be used")
    if a.action == "clear":
        print(f"removed {disk.clear(home)} entries from {home}")
        return
    rows = disk.entries(home)
    print(f"{home}: {len(rows)} entries, {sum(r[1] for r in rows) / 1e6:.1f} MB")
    for name, size, used in rows:
        print(f"  {time.strftime('%Y-%m-%d %H:%M', time.localtime(used))}  {size:>10}  {name}")


def _bench(a) -> None:
    if a.name not in ZOO:
        raise CliError(f"bench takes a zoo name ({', '.join(ZOO)}), got {a.name!r}")
    e = ZOO[a.name]
    shape = parse_shape(a.shape)
    b, t = shape.pop("b", 8), shape.pop("t", 4096)
    cuda = torch.cuda.is_available()
    if not cuda:
        b, t = min(b, 2), min(t, 64)
        print(f"no CUDA GPU: timing the CPU path at b={b}, t={t} with time.perf_counter "
              "(GPU numbers need a GPU)")
    dtype = DTYPES[a.dtype]
    args = e.example(b, t, dtype=dtype, device="cuda" if cuda else "cpu", **shape)
    layer = lrc_compile(e.spec, lowering=a.lowering)
    leaves = {k: v.detach().requires_grad_(v.is_floating_point() or v.is_complex())
              for k, v in args.items()}

    def forward():
        with torch.no_grad():
            layer(**args)

    def training():
        y = layer(**leaves)
        y = y[0] if isinstance(y, tuple) else y
        y.float().sum().backward()

    for what, fn in (("forward", forward), ("forward+backward", training)):
        fn()  # compile and tune outside the timing
        if cuda:
            import triton.testing

            ms = triton.testing.do_bench(fn)
        else:
            start, n = time.perf_counter(), 3
            for _ in range(n):
                fn()
            ms = (time.perf_counter() - start) / n * 1e3
        print(f"{a.name} {what}: {ms:.3f} ms (b={b}, t={t}, {a.dtype}"
              f"{''.join(f', {d}={s}' for d, s in shape.items())})")
    chosen = list(layer.plan.chosen.values()) if layer.backend == "triton" else []
    print(f"ran: {layer.backend}" + (f", lowering {chosen[-1]}" if chosen else ""))


def _tune_tables(a) -> None:
    if not torch.cuda.is_available():
        raise CliError("tune-tables times kernels on a GPU: run it on each kind of GPU")
    names = a.specs.split(",") if a.specs else list(ZOO)
    shape = parse_shape(a.shape)
    b, t = shape.pop("b", 8), shape.pop("t", 4096)
    slug = policy.device_slug(torch.cuda.get_device_name())
    with tempfile.TemporaryDirectory() as tmp, config.override(cache_dir=tmp, tune=True):
        Path(tmp).chmod(0o700)
        for name in names:
            e = ZOO[name]
            args = e.example(b, t, dtype=DTYPES[a.dtype], device="cuda")
            layer = lrc_compile(e.spec)
            with torch.no_grad():
                layer(**args)
            leaves = {k: v.detach().requires_grad_(True) for k, v in args.items()}
            y = layer(**leaves)
            (y[0] if isinstance(y, tuple) else y).float().sum().backward()
            torch.cuda.synchronize()
            print(f"tuned {name} at b={b}, t={t}, {a.dtype}")
        for low in ("scan", "chunked"):
            made = Path(tmp) / f"{low}_tuned.json"
            if not made.is_file():
                continue
            dest = Path(a.out) / low / "tuned" / f"{slug}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            rows = json.loads(dest.read_text()) if dest.is_file() else {}
            rows.update(json.loads(made.read_text()))
            dest.write_text(json.dumps(rows, indent=0, sort_keys=True) + "\n")
            print(f"wrote {len(rows)} rows to {dest}")


def parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m lrc`."""
    p = argparse.ArgumentParser(prog="python -m lrc", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, doc in (("explain", _explain, "the graph after every pass"),
                          ("source", _source, "the generated Triton source"),
                          ("draw", _draw, "a PNG of the traced graph"),
                          ("plan", _plan, "the plan: structure, lowerings, the choice")):
        c = sub.add_parser(name, help=doc)
        c.add_argument("spec", help="zoo name, MODULE:NAME or FILE.py:NAME")
        c.add_argument("--lowering", choices=LOWERINGS)
        if name == "source":
            c.add_argument("--which", default="forward",
                           help="forward, backward, step, module (and per lowering: "
                                "forward_n, backward_n, states, ...)")
        if name == "draw":
            c.add_argument("--out", help="the PNG's path (default: SPEC_NAME.png)")
        c.set_defaults(fn=fn)
    c = sub.add_parser("cache", help="list or clear lrc's entries in the cache directory")
    c.add_argument("action", choices=("ls", "clear"))
    c.set_defaults(fn=_cache)
    c = sub.add_parser("bench", help="time a zoo spec's forward and forward+backward")
    c.add_argument("name", help=f"a zoo name: {', '.join(ZOO)}")
    c.add_argument("--shape", default="", help="dim sizes, e.g. b=8,t=4096,d=2048")
    c.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    c.add_argument("--lowering", choices=LOWERINGS)
    c.set_defaults(fn=_bench)
    c = sub.add_parser("tune-tables", help="tune the zoo at reference shapes on this GPU and "
                       "write the tables lrc ships (OUT/<lowering>/tuned/<gpu>.json)")
    c.add_argument("--out", required=True, help="e.g. lrc/lowering (the package's own)")
    c.add_argument("--specs", default="", help="zoo names, comma-separated (default: all)")
    c.add_argument("--shape", default="b=8,t=4096")
    c.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    c.set_defaults(fn=_tune_tables)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; the exit status."""
    a = parser().parse_args(argv)
    try:
        a.fn(a)
    except CliError as e:
        print(f"lrc: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m lrc cache ls | head`: the reader stopped
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (nothing to flush at exit)
        return 0
    return 0
