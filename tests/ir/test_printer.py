"""The printed IR: deterministic, pinned by golden files.

`LRC_UPDATE_GOLDEN=1 pytest tests/ir/test_printer.py` rewrites tests/ir/golden/*.txt; review the
diff like any other change.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import sympy as sp

import lrc
from lrc import Param, Seq, State
from lrc.ir.printer import format_axes, format_expr, print_names
from lrc.ir.trace import trace
from tests.ir.test_interpret import lru, mamba1_l, mixing, wkv
from tests.ir.test_interpret_ops import gated, shift_fill, ssd
from tests.ir.test_structured import s4_bilinear

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("LRC_UPDATE_GOLDEN") == "1"

# representative specs: selective diagonal (renamed time dim), matrix mixing, complex, several
# states, shift register with index/where, grouped dims, DPLR (Woodbury), where on inputs
SPECS = {s.name: s for s in (mamba1_l, mixing, lru, wkv, shift_fill, ssd, s4_bilinear, gated)}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_golden(name):
    text = str(SPECS[name].graph) + "\n"
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with LRC_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), (f"printed IR of {name} changed; if intended, rerun with "
                                      "LRC_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_tracing_twice_prints_identically(name):
    spec = SPECS[name]
    again = trace(spec.fn, time=spec.graph.time, name=spec.name)
    assert str(again) == str(spec.graph)
    assert again == spec.graph          # structural equality of the frozen graph


def test_printing_is_independent_of_the_hash_seed():
    code = ("import sys; sys.path.insert(0, '.')\n"
            "from tests.ir.test_printer import SPECS\n"
            "print('\\n'.join(str(s.graph) for _, s in sorted(SPECS.items())))\n")
    root = pathlib.Path(__file__).parents[2]
    outs = set()
    for seed in ("1", "987"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.add(subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True,
                                capture_output=True, text=True).stdout)
    here = "\n".join(str(s.graph) for _, s in sorted(SPECS.items())) + "\n"
    assert outs == {here}


def test_header_and_return_line():
    text = str(mamba1_l.graph)
    first, last = text.splitlines()[0], text.splitlines()[-1]
    assert first.startswith('recurrence mamba1_l(u: Seq("b l d"), ')
    assert first.endswith("h: State(\"b d n\")):  # time dim 'l'")
    assert last == "  return y: (b l d); h <- h'"
    assert 'Param("d n", complex=True)' in str(s4_bilinear.graph)


def test_intermediates_are_renumbered_in_node_order():
    names = print_names(s4_bilinear.graph)
    assert list(names.values()) == [f"%{i}" for i in range(len(names))]
    assert all(k.startswith("%") for k in names)


@lrc.recurrence
def printing(x: Seq("b t n"), c: Param("n", complex=True), h: State("b n", complex=True)):
    z = lrc.maximum(x, 0.5) + lrc.minimum(x, -0.5) + abs(x)
    h = 0.5 * h + c.conj() * z
    return lrc.where(x > 0, h.real, h.imag) + h.shift("n").real, h


def test_functions_print_by_their_lrc_names():
    text = str(printing.graph)
    for piece in ("maximum(0.5, x)", "minimum(-0.5, x)", "abs(x)", "conj(c)", "re(h')",
                  "im(h')", "where(x > 0, ", "shift(h', n)"):
        assert piece in text, piece


def test_format_helpers():
    assert format_axes((("b",), ("t",), ("g", "r"), ("p",))) == "b t (g r) p"
    x = sp.Symbol("%17", real=True)
    assert format_expr(2 * x + 1, {"%17": "%0"}) == "2*%0 + 1"
    assert format_expr(sp.Piecewise((x, x > 0), (0, True))) == "where(%17 > 0, %17, 0)"


def test_shared_work_becomes_one_node():
    """exp(-exp(w)) feeds both new states: one Map node for it, none for its insides."""
    text = str(wkv.graph)
    assert "%1[d] = exp(-exp(w))" in text
    assert sum(line.startswith("  %") for line in text.splitlines()) == 2


@lrc.recurrence
def shared_condition(x: Seq("b t d"), z: Seq("b t d"), h: State("b d")):
    c = x > 0.5                            # used by the new state and by the output
    h = lrc.where(c, 0.9 * h, 0.5 * h) + z
    return lrc.where(c, h, z), h


def test_comparisons_are_never_nodes_of_their_own():
    g = shared_condition.graph
    assert all(not isinstance(n.expr, sp.core.relational.Relational)
               for n in g.nodes if hasattr(n, "expr"))
    assert str(g).count("x > 0.5") == 2
