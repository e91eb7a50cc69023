"""Tuned tables shipped with lrc: read where the user's cache has no row, rows checked."""
from __future__ import annotations

import json
from dataclasses import astuple

import pytest

import lrc
from lrc.kernels import tune
from lrc.lowering.scan.configs import ScanConfig

GPU = "NVIDIA H100 80GB HBM3"


def test_device_slug():
    assert tune.device_slug(GPU) == "nvidia-h100-80gb-hbm3"
    assert tune.device_slug("NVIDIA H200") == "nvidia-h200"


def test_the_lowerings_register_their_folders():
    assert tune._SHIPPED["scan_tuned.json"].parts[-3:] == ("lowering", "scan", "tuned")
    assert tune._SHIPPED["chunked_tuned.json"].parts[-2:] == ("chunked", "tuned")


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """An empty cache directory and a shipped folder for a made-up table."""
    folder = tmp_path / "tuned"
    folder.mkdir()
    monkeypatch.setitem(tune._SHIPPED, "test_tuned.json", folder)
    tune._shipped.cache_clear()
    home = tmp_path / "cache"
    with lrc.config.override(cache_dir=str(home)):
        yield folder
    tune._shipped.cache_clear()


def test_shipped_row_used_when_the_cache_has_none(shipped):
    key, bad, foreign = ("k", 1), ("k", 2), ("k", 3)
    rows = {tune._disk_key(key, GPU): list(astuple(ScanConfig(64, 8))),
            tune._disk_key(bad, GPU): [64, "8"],  # malformed: ignored
            tune._disk_key(foreign, GPU): list(astuple(ScanConfig(512)))}
    (shipped / "nvidia-h100-80gb-hbm3.json").write_text(json.dumps(rows))
    assert tune.remembered(key, GPU, "test_tuned.json", ScanConfig) == ScanConfig(64, 8)
    assert tune.remembered(bad, GPU, "test_tuned.json", ScanConfig) is None
    # not one of the kernel's candidates now: not trusted
    assert tune.remembered(foreign, GPU, "test_tuned.json", ScanConfig,
                           allowed=lambda: [ScanConfig(64)]) is None
    # another kind of GPU has no table
    assert tune.remembered(key, "NVIDIA H200", "test_tuned.json", ScanConfig) is None


def test_the_users_row_wins(shipped):
    key = ("k", 4)
    (shipped / "nvidia-h100-80gb-hbm3.json").write_text(
        json.dumps({tune._disk_key(key, GPU): list(astuple(ScanConfig(64)))}))
    tune.remember(key, GPU, ScanConfig(128), "test_tuned.json")
    assert tune.remembered(key, GPU, "test_tuned.json", ScanConfig) == ScanConfig(128)


def test_a_shipped_table_that_is_not_json_is_ignored(shipped):
    (shipped / "nvidia-h100-80gb-hbm3.json").write_text("{not json")
    assert tune.remembered(("k", 5), GPU, "test_tuned.json", ScanConfig) is None
