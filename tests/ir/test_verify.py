"""lrc.ir.verify: accepts every traced graph, rejects deliberately broken ones by name."""
from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

from lrc.ir import IRError, verify
from lrc.ir.nodes import Input, Map, Rename, Shift, Sum, symbol
from tests.ir import test_interpret, test_interpret_ops, test_structured
from tests.ir.test_interpret import hgrn, lru, mixing, wkv
from tests.ir.test_interpret_ops import shift_fill

ALL_SPECS = [v for mod in (test_interpret, test_interpret_ops, test_structured)
             for v in vars(mod).values() if type(v).__name__ == "Spec"]


def test_every_traced_graph_verifies():
    assert len(ALL_SPECS) >= 20
    for spec in ALL_SPECS:
        assert verify(spec.graph) is spec.graph


def with_node(g, name, **changes):
    """g with node `name` changed, keeping the node order (no re-sorting)."""
    assert name in g
    nodes = tuple(dataclasses.replace(n, **changes) if n.name == name else n for n in g.nodes)
    return dataclasses.replace(g, nodes=nodes)


def broken(g, *fragments):
    with pytest.raises(IRError) as info:
        verify(g)
    msg = str(info.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def node_named(g, cls):
    return next(n for n in g.nodes if isinstance(n, cls))


# ---- order and names


def test_use_before_define():
    g = mixing.graph
    nodes = list(g.nodes)
    i = next(k for k, n in enumerate(nodes) if isinstance(n, Rename))
    nodes.insert(0, nodes.pop(i + 1))          # the Map reading the rename, moved first
    broken(dataclasses.replace(g, nodes=tuple(nodes)), f"node {nodes[0].name!r}",
           "before it is defined")


def test_reading_a_node_that_does_not_exist():
    g = hgrn.graph
    bad = with_node(g, "y", expr=symbol("ghost") + symbol("h'"))
    broken(bad, "node 'y'", "'ghost'")


def test_defined_twice():
    g = hgrn.graph
    broken(dataclasses.replace(g, nodes=g.nodes + (g["y"],)), "node 'y'", "defined twice")


def test_graph_replace_resorts_topologically():
    g = mixing.graph
    inputs = [n for n in g.nodes if isinstance(n, Input)]
    rest = [n for n in g.nodes if not isinstance(n, Input)]
    shuffled = g.replace(nodes=tuple(inputs + rest[::-1]))
    assert verify(shuffled) is shuffled
    assert str(shuffled) == str(g)


# ---- dims


def test_sum_with_wrong_dims_or_dim():
    g = mixing.graph
    s = node_named(g, Sum)
    broken(with_node(g, s.name, dims=s.dims[:-1]), f"node {s.name!r}", "without 'm'")
    broken(with_node(g, s.name, dim="q"), f"node {s.name!r}", "'q'")


def test_rename_with_wrong_dims_or_mapping():
    g = mixing.graph
    r = node_named(g, Rename)
    broken(with_node(g, r.name, dims=("b", "d", "n")), f"node {r.name!r}", "renamed by")
    broken(with_node(g, r.name, mapping=(("d", "m"),)), f"node {r.name!r}", "renamed by")
    broken(with_node(g, r.name, mapping=(("q", "m"),)), f"node {r.name!r}", "renames dims not")


def test_rename_to_a_dim_without_a_size_source():
    g = mixing.graph
    r = node_named(g, Rename)
    bad = dataclasses.replace(g, dims=g.dims + ("q",))
    bad = with_node(bad, r.name, mapping=(("n", "q"),), dims=("b", "d", "q"))
    broken(bad, f"node {r.name!r}", "renamed dim 'q' has no size source")


def test_shift_with_wrong_dims_or_dim():
    g = shift_fill.graph
    s = node_named(g, Shift)
    broken(with_node(g, s.name, dims=("b", "d")), f"node {s.name!r}")
    broken(with_node(g, s.name, dim="m"), f"node {s.name!r}", "'m'")


def test_map_missing_a_dim_of_its_arguments():
    g = hgrn.graph
    broken(with_node(g, "y", dims=("b",)), "node 'y'", "miss {'d'}")


def test_non_canonical_dim_order():
    g = mixing.graph
    broken(with_node(g, "y", dims=("d", "b")), "node 'y'", "canonical order")
    broken(with_node(g, "y", dims=("b", "d", "d")), "node 'y'", "canonical order")
    broken(with_node(g, "y", dims=("b", "d", "zz")), "node 'y'", "not all in")


def test_input_dims_disagree_with_annotation():
    g = hgrn.graph
    broken(with_node(g, "x", dims=("b",)), "node 'x'", 'Seq("b t d")')


def test_graph_level_dims():
    g = hgrn.graph
    broken(dataclasses.replace(g, dims=("b", "d", "b")), "duplicate dims")
    broken(dataclasses.replace(g, dims=("b", "t", "d")), "time dim 't'")


# ---- complex flags


def test_complex_flag_mismatch_on_a_data_movement_node():
    g = mixing.graph
    s = node_named(g, Sum)
    broken(with_node(g, s.name, complex=True), f"node {s.name!r}", "complex flag")


def test_real_map_with_a_complex_value():
    g = lru.graph
    broken(with_node(g, "h'", complex=False), "node \"h'\"")


def test_complex_output():
    g = hgrn.graph
    bad = with_node(g, "y", expr=sp.I * symbol("h'"), complex=True)
    broken(bad, "output 'y' is complex")


def test_new_state_complex_flag_differs():
    g = hgrn.graph
    bad = with_node(g, "h'", complex=True)
    bad = with_node(bad, "y", expr=symbol("h'", True), complex=True)
    with pytest.raises(IRError, match="h'"):
        verify(bad)


# ---- states, outputs, params


def test_new_state_dims_differ_from_the_state():
    g = hgrn.graph
    bad = with_node(g, "h'", dims=("b",), expr=sp.Integer(0))
    bad = with_node(bad, "y", expr=sp.Integer(1))
    broken(bad, "new state \"h'\"", "('b',)", "('b', 'd')")


def test_state_pairs_must_name_state_inputs_and_maps():
    g = wkv.graph
    broken(dataclasses.replace(g, states=(("num", "num'"), ("k", "den'"))),
           "state 'k' is not a State input")
    broken(dataclasses.replace(g, states=(("num", "num'"), ("den", "k"))),
           "new state 'k' is not a Map")
    broken(dataclasses.replace(g, states=(("num", "num'"),)), "every State input")
    broken(dataclasses.replace(g, states=(("num", "num'"), ("num", "den'"))), "once")


def test_outputs_and_layouts():
    g = hgrn.graph
    broken(dataclasses.replace(g, outputs=("nope",)), "output 'nope' does not exist")
    broken(dataclasses.replace(g, out_axes=()), "outputs and out_axes disagree")
    broken(dataclasses.replace(g, out_axes=((("b",), ("d",)),)), "output 'y'", "layout")


def test_params_must_be_the_seq_and_param_inputs():
    g = hgrn.graph
    broken(dataclasses.replace(g, params=("f", "x")), "params")


def test_bad_input_role_and_parts():
    g = hgrn.graph
    broken(with_node(g, "x", role="Seq"), "node 'x'", "bad role")
    broken(with_node(g, "x", part="real"), "node 'x'", "bad part")
    broken(with_node(lru.graph, "Bc", part="re"), "node 'Bc'", "a part must be real")


# ---- symbols and functions


def test_symbol_with_wrong_assumptions():
    g = hgrn.graph
    expr = g["h'"].expr.subs(symbol("x"), sp.Symbol("x"))   # x without real=True
    broken(with_node(g, "h'", expr=expr), "node \"h'\"", "assumptions")
    expr = lru.graph["h'"].expr.subs(symbol("h", True), sp.Symbol("h", real=True))
    broken(with_node(lru.graph, "h'", expr=expr), "node \"h'\"", "assumptions")


@pytest.mark.parametrize("fn", [sp.gamma, sp.atan, sp.erf, sp.floor])
def test_unsupported_sympy_function(fn):
    g = hgrn.graph
    bad = with_node(g, "y", expr=fn(symbol("h'")))
    broken(bad, "node 'y'", "no rule for", fn.__name__)


def test_every_node_kind_is_checked_for_its_argument():
    # a Sum whose argument is a Map of fewer dims than it claims to sum over
    g = mixing.graph
    s = node_named(g, Sum)
    inner = g[s.arg]
    assert isinstance(inner, Map)
    broken(with_node(g, inner.name, dims=("b", "d", "n")), f"node {inner.name!r}")


def test_input_complex_flag_must_match_its_annotation():
    broken(with_node(hgrn.graph, "x", complex=True), "node 'x'", "complex flag", 'Seq("b t d")')
    broken(with_node(lru.graph, "Bc", complex=False), "node 'Bc'", "complex flag")
