"""The cache directory cannot run foreign code or give a wrong answer: each attack on it that
once worked (a pickled payload, code prepended to a cached module, a one-token edit of one, a
symlink at the temporary file's path, a shared writable directory) is reproduced here and is
harmless; an unusable directory gives one CacheWarning and the right outputs; constants are
keyed by their exact value; tuning tables are validated and updated under a lock."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import warnings
from dataclasses import astuple
from pathlib import Path

import pytest
import torch

import lrc
from lrc import Param, Seq, State, sigmoid
from lrc.kernels import disk, module, tune
from lrc.lowering.scan.configs import ScanConfig
from lrc.runtime import cache
from tests.conftest import rel_err

pytest.importorskip("triton")


@lrc.recurrence
def ema(x: Seq("b t d"), a: Param("d"), h: State("b d")):
    h = sigmoid(a) * h + 0.5 * x
    return h, h


def decay(c: float) -> lrc.Spec:
    """A spec named `decay` with the constant `c`: specs that differ only in it."""
    @lrc.recurrence
    def decay(x: Seq("b t d"), h: State("b d")):
        h = c * h + x
        return h, h
    return decay


@pytest.fixture
def fresh(monkeypatch):
    """As in a new process: no generated module imported yet, no cache warning given yet, no
    spec compiled yet."""
    monkeypatch.setattr(module, "_LOADED", {})
    monkeypatch.setattr(module, "_BY_SOURCE", {})
    monkeypatch.setattr(disk, "_WARNED", set())
    cache._BUILT.clear()


@pytest.fixture
def home(tmp_path, monkeypatch, fresh) -> Path:
    """The cache directory for this test (not created yet)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LRC_CACHE_DIR", str(path))
    return path


def _inputs() -> dict:
    return {"x": torch.randn(2, 7, 3), "a": torch.randn(3)}


def _check(spec=ema, **inputs) -> None:
    """The Triton layer's forward, gradient and decode step agree with the reference."""
    inputs = inputs or _inputs()
    layer = lrc.compile(spec, backend="triton")
    ref = lrc.compile(spec, backend="reference")
    assert rel_err(layer(**inputs), ref(**inputs)) < 1e-5
    x = inputs["x"].clone().requires_grad_(True)
    xr = inputs["x"].clone().requires_grad_(True)
    layer(**{**inputs, "x": x}).square().sum().backward()
    ref(**{**inputs, "x": xr}).square().sum().backward()
    assert rel_err(x.grad, xr.grad) < 1e-4
    first = {k: v[:, 0] if k == "x" else v for k, v in inputs.items()}
    y, _ = layer.step(**first)
    assert rel_err(y, ref(**inputs)[:, 0]) < 1e-5
    assert f"plan for {spec.name}" in str(ref.plan)  # the reference backend's plan builds


def _cache_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, lrc.CacheWarning)]


def _modules(path: Path) -> list[Path]:
    return sorted(path.glob("lrc_*.py"))


# ---- attacks, each once demonstrated on the old cache ------------------------------------

class Payload:
    """A pickle that creates `marker` when loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_in_the_cache_is_never_executed(home, tmp_path):
    """Every pickle in compiled/ (the ones a compile wrote, where the cache once kept the
    pipeline's result, and one at this spec's key) replaced by a payload: never loaded."""
    marker = tmp_path / "pwned"
    _check()
    (home / "compiled").mkdir(mode=0o700, exist_ok=True)
    key = cache.canonical_key(ema.graph, lowering=None, loop=False)
    planted = {home / "compiled" / f"{key[:24]}.pkl", *(home / "compiled").glob("*.pkl")}
    for path in planted:
        path.write_bytes(pickle.dumps(Payload(marker)))
    cache._BUILT.clear()  # as in a new process
    _check()
    assert not marker.exists()


def test_code_prepended_to_a_cached_module_is_not_executed(home, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    _check()
    files = _modules(home)
    assert files
    for f in files:
        f.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + f.read_text())
    monkeypatch.setattr(module, "_LOADED", {})  # a new process finds the edited files
    monkeypatch.setattr(module, "_BY_SOURCE", {})
    cache._BUILT.clear()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _check()
    assert not marker.exists()
    assert any("does not match its name" in m for m in _cache_warnings(record))
    for f in files:  # rewritten with what lrc generates
        assert f.name == f"lrc_{hashlib.sha256(f.read_bytes()).hexdigest()}.py"


def test_a_one_token_edit_of_a_cached_module_does_not_change_outputs(home, monkeypatch):
    _check()
    edited = 0
    for f in _modules(home):
        text = f.read_text()
        if "return 1.0 / (1.0 + tl.exp(-x))" in text:  # sigmoid 1% too large, if it ran
            f.write_text(text.replace("return 1.0 / (1.0 + tl.exp(-x))",
                                      "return 1.01 / (1.0 + tl.exp(-x))", 1))
            edited += 1
    assert edited
    monkeypatch.setattr(module, "_LOADED", {})
    monkeypatch.setattr(module, "_BY_SOURCE", {})
    cache._BUILT.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lrc.CacheWarning)
        _check()


def test_a_module_changed_after_it_was_checked_is_not_what_triton_reads(home):
    """The text Triton reads (inspect, through linecache) is the generated text, whatever the
    file holds later."""
    import inspect

    source = lrc.compile(ema, backend="triton").source("module")
    mod = module.load(source, True)
    path = Path(mod.__file__)
    path.write_text(path.read_text().replace("return 1.0 /", "return 1.01 /"))
    assert "return 1.0 / (1.0 + tl.exp(-x))" in inspect.getsource(mod._sigmoid.fn)


def test_a_symlink_at_a_temporary_path_is_not_followed(home, tmp_path, monkeypatch):
    """Symlinks planted at every temporary path a writer will use (the old predictable ones,
    and the new random one, made predictable here) leave their target as it was."""
    target = tmp_path / "victim"
    target.write_text("precious")
    source = lrc.compile(ema, backend="triton").source("module")
    name = f"lrc_{hashlib.sha256(source.encode()).hexdigest()}.py"
    home.mkdir(mode=0o700)
    (home / "compiled").mkdir(mode=0o700)
    key = cache.canonical_key(ema.graph, lowering=None, loop=False)
    monkeypatch.setattr(disk.secrets, "token_hex", lambda n: "0" * (2 * n))
    for planted in (home / "compiled" / f"{key[:24]}.{os.getpid()}.tmp",
                    home / f"scan_tuned.{os.getpid()}.tmp",
                    home / f".{name}.{'0' * 16}.tmp",
                    home / f".scan_tuned.json.{'0' * 16}.tmp"):
        planted.symlink_to(target)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _check()
        tune.remember(("k",), "dev", ScanConfig(8), "scan_tuned.json")
    assert target.read_text() == "precious"
    assert len(_cache_warnings(record)) == 2  # the module and the table: not written
    assert not (home / name).exists()  # the module went to the private directory instead


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_directory_others_can_write_is_ignored(home, mode):
    home.mkdir(mode=0o700)
    os.chmod(home, mode)
    planted = home / "lrc_0.py"
    planted.write_text("raise SystemExit")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _check()
        tune.remember(("k",), "dev", ScanConfig(8), "scan_tuned.json")
    found = _cache_warnings(record)
    assert len(found) == 1 and "writable" in found[0], found
    assert sorted(os.listdir(home)) == ["lrc_0.py"]  # nothing written or read there


@pytest.mark.parametrize("how", ["group-writable", "other-owner"])
def test_an_entry_others_could_have_written_is_ignored(home, how):
    if how == "other-owner" and os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    _check()
    files = _modules(home)
    for f in files:
        f.write_text("raise SystemExit\n" + f.read_text())
        if how == "group-writable":
            os.chmod(f, 0o664)
        else:
            os.chown(f, 65534, 65534)
    key = ("k", how)
    tune.remember(key, "dev", ScanConfig(8), "scan_tuned.json")
    table = home / "scan_tuned.json"
    if how == "group-writable":
        os.chmod(table, 0o664)
    else:
        os.chown(table, 65534, 65534)
    module._LOADED.clear()
    module._BY_SOURCE.clear()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _check()
        assert tune.remembered(key, "dev", "scan_tuned.json", ScanConfig) is None
    found = _cache_warnings(record)
    assert len(found) == len(files) + 1, found
    for f in files:  # replaced by this user's file, writable by them alone
        st = f.stat()
        assert st.st_uid == os.geteuid() and st.st_mode & 0o077 == 0
        assert f.name == f"lrc_{hashlib.sha256(f.read_bytes()).hexdigest()}.py"


# ---- an unusable directory ---------------------------------------------------------------

def _read_only(tmp: Path) -> Path:
    path = tmp / "ro"
    path.mkdir(mode=0o500)
    return path


def _under_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("")
    return tmp / "file" / "cache"


def _compiled_is_a_file(tmp: Path) -> Path:
    path = tmp / "cache"
    path.mkdir(mode=0o700)
    (path / "compiled").write_text("")
    return path


def _module_is_a_directory(tmp: Path) -> Path:
    path = tmp / "cache"
    source = lrc.compile(ema, backend="triton").source("module")
    (path / f"lrc_{hashlib.sha256(source.encode()).hexdigest()}.py").mkdir(parents=True)
    os.chmod(path, 0o700)
    return path


def _under_proc(tmp: Path) -> Path:
    return Path("/proc") / f"lrc-{tmp.name}" / "cache"


@pytest.mark.parametrize("make", [_read_only, _under_a_file, _compiled_is_a_file,
                                  _module_is_a_directory, _under_proc])
def test_an_unusable_directory_gives_one_warning_and_right_outputs(tmp_path, fresh, make):
    path = make(tmp_path)
    with lrc.config.override(cache_dir=str(path)), warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _check()
        tune.remember(("k",), "dev", ScanConfig(8), "scan_tuned.json")
        lrc.compile(ema, backend="reference").plan  # noqa: B018 (builds without the disk)
    found = _cache_warnings(rec)
    if make is _compiled_is_a_file:
        expected = 0  # nothing reads compiled/ any more
    elif make is _read_only and os.geteuid() == 0:
        expected = 0  # root writes into a 0500 directory: it is usable
    else:
        expected = 1
    assert len(found) == expected, found
    if expected:
        private = disk.private()
        assert os.stat(private).st_mode & 0o777 == 0o700
        assert _modules(private)


# ---- exact keys, eviction, tuning tables -------------------------------------------------

def test_constants_are_keyed_by_their_exact_value(home):
    """0.1 and 0.10000000000000002 print alike to 15 digits: each still gets its own kernel
    (the second compiled in the process once got the first's)."""
    tenth, tenth_ulp = decay(0.1), decay(0.10000000000000002)
    a = cache.canonical_key(tenth.graph, lowering=None, loop=False)
    b = cache.canonical_key(tenth_ulp.graph, lowering=None, loop=False)
    assert a != b
    x = torch.randn(2, 9, 3)
    la, lb = lrc.compile(tenth, backend="triton"), lrc.compile(tenth_ulp, backend="triton")
    assert "0.10000000000000002" in lb.source("forward")
    assert "0.10000000000000002" not in la.source("forward")
    for spec, layer in ((tenth, la), (tenth_ulp, lb)):
        ref = lrc.compile(spec, backend="reference")
        assert rel_err(layer(x), ref(x)) < 1e-5


def test_the_least_recently_used_modules_are_evicted(home, knobs):
    knobs(cache_modules=2)
    paths = [module.write_source(f"# module {i}\n") for i in range(2)]
    os.utime(paths[0], (1000, 1000))
    os.utime(paths[1], (2000, 2000))
    paths.append(module.write_source("# module 2\n"))  # evicts module 0
    assert _modules(home) == sorted(paths[1:])
    os.utime(paths[2], (3000, 3000))
    module.write_source("# module 1\n")  # used: now the newest but one
    paths.append(module.write_source("# module 3\n"))  # evicts module 2
    assert _modules(home) == sorted([paths[1], paths[3]])


GOOD = list(astuple(ScanConfig(8)))  # tc, block, warps, stages, unroll, maxnreg, loop, order


@pytest.mark.parametrize("row", [
    GOOD[:3], GOOD + [0], "8", {"tc": 8}, None, [GOOD],
    ["8"] + GOOD[1:], [-8] + GOOD[1:], [8.0] + GOOD[1:], [1 << 40] + GOOD[1:],
    GOOD[:2] + [None] + GOOD[3:],  # warps may not be None
    GOOD[:4] + [3] + GOOD[5:],  # unroll is a bool
    GOOD[:6] + [[0]] + GOOD[7:],
], ids=repr)
def test_a_malformed_tuning_row_is_ignored(home, row):
    home.mkdir(mode=0o700)
    key, other = ("bad",), ("good",)
    rows = {tune._disk_key(key, "dev"): row, tune._disk_key(other, "dev"): GOOD}
    (home / "scan_tuned.json").write_text(json.dumps(rows))
    os.chmod(home / "scan_tuned.json", 0o600)
    assert tune.remembered(key, "dev", "scan_tuned.json", ScanConfig) is None
    assert tune.remembered(other, "dev", "scan_tuned.json", ScanConfig) == ScanConfig(8)
    # a well-formed row that is not one of the kernel's candidates is not trusted either
    assert tune.remembered(other, "dev", "scan_tuned.json", ScanConfig,
                           allowed=lambda: [ScanConfig(16)]) is None


def test_a_tuning_table_that_is_not_json_is_ignored(home):
    home.mkdir(mode=0o700)
    (home / "scan_tuned.json").write_text("{not json")
    os.chmod(home / "scan_tuned.json", 0o600)
    with pytest.warns(lrc.CacheWarning, match="not JSON"):
        assert tune.remembered(("k",), "dev", "scan_tuned.json", ScanConfig) is None
    tune.remember(("k",), "dev", ScanConfig(8), "scan_tuned.json")  # starts it over
    assert tune.remembered(("k",), "dev", "scan_tuned.json", ScanConfig) == ScanConfig(8)


def test_concurrent_tuning_updates_lose_no_row(home):
    """Writers that each add a row under the lock: every row is there after."""
    def add(i: int) -> None:
        for j in range(5):
            tune.remember(("k", i, j), "dev", ScanConfig(i + 1, warps=j + 1), "scan_tuned.json")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        for j in range(5):
            got = tune.remembered(("k", i, j), "dev", "scan_tuned.json", ScanConfig)
            assert got == ScanConfig(i + 1, warps=j + 1)
    st = os.stat(home / "scan_tuned.json")
    assert st.st_mode & 0o777 == 0o600
    assert os.stat(home).st_mode & 0o777 == 0o700
