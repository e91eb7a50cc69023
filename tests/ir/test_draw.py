"""draw() after a base install: without matplotlib it names the extra that brings it."""
from __future__ import annotations

import sys

import pytest

import lrc
from lrc.zoo import ZOO


def test_draw_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    """A None entry in sys.modules makes `import matplotlib` fail as if it were not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    layer = lrc.compile(ZOO["mamba1"].spec, backend="reference")
    with pytest.raises(ImportError) as info:
        layer.draw(str(tmp_path / "graph.png"))
    assert 'pip install "lrc[draw]"' in str(info.value)
    assert info.value.name == "matplotlib"
    assert not (tmp_path / "graph.png").exists()


def test_the_draw_extra_brings_matplotlib():
    """pyproject.toml's `draw` extra is what the message tells users to install."""
    import pathlib

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = pathlib.Path(__file__).parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert any(req.startswith("matplotlib") for req in extras["draw"])
