"""The public functions of `lrc` stay functions once every lrc module is imported: a module
named like an exported function (lrc/log.py once) would replace it on the package."""
from __future__ import annotations

import importlib
import pkgutil

import lrc

OPTIONAL = {"lrc.models.hf"}   # needs an extra (pip install "lrc[hf]")


def test_every_export_survives_importing_every_module():
    before = {name: getattr(lrc, name) for name in lrc.__all__}
    for info in pkgutil.walk_packages(lrc.__path__, "lrc."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:
            if info.name not in OPTIONAL:
                raise
    changed = [name for name in lrc.__all__ if getattr(lrc, name) is not before[name]]
    assert not changed, f"lrc.{changed[0]} is now {getattr(lrc, changed[0])!r}"
    assert callable(lrc.log)
