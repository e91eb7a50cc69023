"""lrc's layering, checked from the imports: nothing imports a layer above its own, and no
two packages import each other (directly or round a cycle).

Bottom to top: errors and config; ir; passes and layout; kernels; lowering (each lowering a
package that imports no other lowering); runtime; distributed; zoo and nn; the public `lrc`
package."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "lrc"

LAYER = {  # unit -> rank; a unit may import units of lower or equal rank, never higher
    "errors": 0, "config": 0, "bounded": 0, "logs": 0,
    "ir": 1,
    "passes": 2, "layout": 2,
    "kernels": 3,
    "lowering.base": 4, "lowering.scan": 4, "lowering.chunked": 4, "lowering.conv": 4,
    "lowering.torch": 4,
    "lowering.dplr": 4,
    "lowering": 4,  # the registry (lowering/__init__.py) over the packages
    "runtime": 5,
    "distributed": 6,  # context parallelism over torch.distributed: wraps a runtime Layer
    "zoo": 7, "nn": 8,
    "models": 9,  # language models over the nn blocks
    "cli": 10, "__main__": 10,  # the command line, over everything
}


def unit(module: str) -> str | None:
    """'lrc.lowering.scan.launch' -> 'lowering.scan'; 'lrc.ir.trace' -> 'ir'."""
    parts = module.split(".")
    if parts[0] != "lrc" or len(parts) < 2:
        return None
    if parts[1] == "lowering" and len(parts) > 2 and parts[2] in (
            "scan", "chunked", "conv", "torch", "dplr", "base"):
        return f"lowering.{parts[2]}"
    return parts[1]


def imports(root: Path = ROOT) -> list[tuple[str, str, str, int]]:
    """(importing unit, imported unit, file, line) for every import inside the package."""
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        here = ".".join(parts)
        src = unit(here)
        if src is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                dst = unit(t)
                if dst is not None and dst in LAYER and dst != src:
                    out.append((src, dst, str(path.relative_to(root.parent)), node.lineno))
    return out


def test_every_unit_has_a_layer():
    units = {p.name if p.is_dir() else p.stem for p in ROOT.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    units -= {"__init__", "__main__"}
    assert units <= set(LAYER), f"add {sorted(units - set(LAYER))} to LAYER"


def upward(found) -> list[str]:
    return sorted({f"{f}:{line}: {src} imports {dst}" for src, dst, f, line in found
                   if LAYER[dst] > LAYER[src]})


def across_lowerings(found) -> list[str]:
    return sorted({f"{f}:{line}: {src} imports {dst}" for src, dst, f, line in found
                   if src.startswith("lowering.") and dst.startswith("lowering.")
                   and "lowering.base" not in (src, dst)})


def cycles(found) -> list[str]:
    edges: dict[str, set[str]] = {}
    for src, dst, _, _ in found:
        edges.setdefault(src, set()).add(dst)

    def reach(a: str, seen: set[str]) -> set[str]:
        for b in edges.get(a, ()):
            if b not in seen:
                seen.add(b)
                reach(b, seen)
        return seen

    return sorted(a for a in edges if a in reach(a, set()))


def test_no_upward_import():
    assert not upward(imports()), "imports upward:\n" + "\n".join(upward(imports()))


def test_lowerings_import_no_other_lowering():
    assert not across_lowerings(imports()), "\n".join(across_lowerings(imports()))


def test_no_cycle_between_packages():
    assert not cycles(imports()), f"packages on an import cycle: {cycles(imports())}"


def test_the_checks_see_bad_imports(tmp_path):
    """A made-up package with one fault of each kind: each check names it."""
    pkg = tmp_path / "lrc"
    for d in ("kernels", "ir", "passes", "lowering/scan", "lowering/conv"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "kernels" / "x.py").write_text("from ..lowering.scan import y\n")
    (pkg / "lowering" / "scan" / "y.py").write_text("from ..conv import z\n")
    (pkg / "ir" / "a.py").write_text("from ..passes import b\n")
    (pkg / "passes" / "b.py").write_text("from ..ir import a\n")
    found = imports(pkg)
    assert upward(found) == ["lrc/ir/a.py:1: ir imports passes",
                             "lrc/kernels/x.py:1: kernels imports lowering.scan"]
    assert across_lowerings(found) == ["lrc/lowering/scan/y.py:1: lowering.scan imports "
                                       "lowering.conv"]
    assert cycles(found) == ["ir", "passes"]
