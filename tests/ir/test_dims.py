"""Annotations: dims text, grouped axes, roles; and the canonical dim order of a traced graph."""
from __future__ import annotations

import pytest

import lrc
from lrc import Param, Seq, State
from lrc.ir.dims import Role, parse_axes


def test_parse_axes():
    assert parse_axes("b t (g r) p") == (("b",), ("t",), ("g", "r"), ("p",))
    assert parse_axes("") == ()
    assert parse_axes("  d_1   n ") == (("d_1",), ("n",))


@pytest.mark.parametrize("text,fragment", [
    ("b (t (d))", "nested"), ("b t)", "unbalanced ')'"), ("b (t", "unbalanced '('"),
    ("b () t", "empty group"), ("b t b", "'b' appears twice"), ("b t, d", "unexpected ','"),
    ("b (g g)", "'g' appears twice"),
])
def test_parse_axes_refuses(text, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_axes(text)


def test_parse_axes_needs_a_string():
    with pytest.raises(TypeError):
        parse_axes(["b", "t"])


def test_annotations():
    a = Seq("b t (g r)", complex=True)
    assert a.role is Role.SEQ and a.dims == ("b", "t", "g", "r") and a.complex
    assert repr(a) == 'Seq("b t (g r)", complex=True)'
    assert Param().dims == () and State("b d").role is Role.STATE
    assert Param("d n") == Param("d n") and hash(Param("d n")) == hash(Param("d n"))


@lrc.recurrence
def order(x: Seq("t n b"), A: Param("k d"), h: State("d b"), g: State("b n")):
    z = (A * x).sum("k").rename(n="m")
    return (z * h).sum("m"), (h * 0.5, g + x)


def test_canonical_order_is_seq_then_state_then_param_then_renames():
    g = order.graph
    assert g.dims == ("n", "b", "d", "k", "m")
    assert g.aliases == (("m", "n"),)
    assert g["h"].dims == ("b", "d")            # canonical order, not the annotation's
    assert g.params == ("x", "A") and g.state_args == ("h", "g")


@lrc.recurrence
def keyword_only_state(x: Seq("b t d"), *, h: State("b d")):
    return h, 0.5 * h + x


def test_states_may_be_keyword_only():
    g = keyword_only_state.graph
    assert g.params == ("x",) and g.state_args == ("h",)
    assert str(g["h'"].expr) == "0.5*h + x"
