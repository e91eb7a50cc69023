"""The tuner policy every lowering shares: a config forced or chosen earlier in the process,
one remembered on disk for this kind of GPU, else the candidates timed once per shape
(or, untimed, the first that compiles).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path
from typing import Any

from ..logs import describe, logger, slow_tuning
from . import disk

_CACHE: dict[tuple, Any] = {}  # key -> the config chosen in this process


# key -> [(config, median ms)] of each timed candidate (the benchmarks print it)
TIMES: dict[tuple, list] = {}

_ROWS = 4096  # rows a table keeps: adding one more drops the oldest


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[str, ...]:
    """The compiler versions a timing depends on."""
    import torch
    import triton

    return torch.__version__, triton.__version__


def _disk_key(key: tuple, device: str) -> str:
    return hashlib.sha256(repr((device,) + _versions() + key).encode()).hexdigest()[:24]


def _table(name: str) -> dict:
    """The rows of the table `name` in the cache directory ({} when there is none or it
    cannot be used)."""
    home = disk.root()
    data = disk.read(home / name) if home is not None else None
    if data is None:
        return {}
    try:
        rows = json.loads(data)
    except ValueError:
        disk.warn_once(home / name, f"{home / name} is not JSON: ignored")
        return {}
    return rows if isinstance(rows, dict) else {}


# table name -> the package folder of its shipped tables, one `<device slug>.json` per kind of
# GPU (lowerings register theirs: `ship`); read where the cache directory's table has no row
_SHIPPED: dict[str, Path] = {}


def ship(table: str, folder: Path) -> None:
    """Register `folder` as where the tables shipped with lrc for `table` lie."""
    _SHIPPED[table] = folder


def device_slug(name: str) -> str:
    """A GPU's name as a file name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@functools.lru_cache(maxsize=64)
def _shipped(table: str, device: str) -> dict:
    """The rows shipped with lrc for `table` on this kind of GPU ({} where none)."""
    folder = _SHIPPED.get(table)
    path = folder / f"{device_slug(device)}.json" if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return rows if isinstance(rows, dict) else {}


def _valid(row: Any, make: Callable) -> bool:
    """A row that can be `make`'s fields: a list of one value per field, each of the field's
    type (int: a count or size in [0, 2^16]; bool; None where the field allows it)."""
    fields = dataclasses.fields(make)
    if not isinstance(row, list) or len(row) != len(fields):
        return False
    for v, f in zip(row, fields, strict=True):
        kinds = {t.strip() for t in str(f.type).split("|")}
        if not kinds <= {"int", "bool", "None"}:
            return False  # a field this check does not know: nothing from disk
        if v is None:
            ok = "None" in kinds
        elif isinstance(v, bool):  # int fields take True/False too (split=True)
            ok = True
        else:
            ok = isinstance(v, int) and "int" in kinds and 0 <= v <= 1 << 16
        if not ok:
            return False
    return True


def remembered(key: tuple, device: str, table: str, make: Callable,
               allowed: Callable[[], list] | None = None):
    """A config tuned for `key` on this kind of device by an earlier process (in `table`, a
    JSON file in the kernel cache directory), now remembered for this one too. A row that is
    malformed, or (with `allowed`) not one of the configs `allowed()` lists, is ignored. The
    key holds the kernels' source and the torch and Triton versions. Where the cache
    directory's table has no row, the table shipped with lrc for this kind of GPU is read
    (`ship`), its rows checked the same way."""
    row = _table(table).get(_disk_key(key, device))
    if row is None:
        row = _shipped(table, device).get(_disk_key(key, device))
    if row is None or not _valid(row, make):
        return None
    try:
        cfg = make(*row)
    except (TypeError, ValueError):
        return None
    if allowed is not None and cfg not in allowed():
        logger.debug("tuning %s: ignored %s from %s (not a current candidate)", describe(key),
                     cfg, table)
        return None
    _CACHE[key] = cfg
    logger.info("tuning %s: %s, remembered in %s", describe(key), cfg, table)
    return cfg


def remember(key: tuple, device: str, cfg, table: str) -> None:
    """Add `cfg` to the on-disk `table` (read, update and replace atomically under a lock;
    nothing when the cache directory cannot be used)."""
    home = disk.root()
    if home is None:
        return
    path = home / table
    with disk.locked(path) as ok:
        if not ok:
            return
        rows = _table(table)
        rows.pop(_disk_key(key, device), None)
        rows[_disk_key(key, device)] = list(astuple(cfg))
        while len(rows) > _ROWS:
            rows.pop(next(iter(rows)))
        disk.write(path, json.dumps(rows).encode())


def chosen(key: tuple) -> Any:
    """The config `choose` took for `key` earlier in this process, if any."""
    return _CACHE.get(key)


def keep(key: tuple, config) -> None:
    """Remember `config` for `key` in this process (a choice made without timing)."""
    _CACHE[key] = config


def first_working(key: tuple, configs: list, run: Callable):
    """The first of `configs` that compiles and runs (`run(config)` a launch), remembered for
    `key` in this process: the untimed choice (LRC_TUNE=0). Triton 3.6 rejects some configs
    of some kernels (shared memory over the limit, a failed layout pass), so the first
    candidate alone is not safe."""
    key = key + ("untimed",)
    if key in _CACHE:
        return _CACHE[key]
    errors = []
    for cfg in configs:
        try:
            run(cfg)
        except Exception as e:  # noqa: BLE001 (does not compile: try the next)
            errors.append(f"{cfg}: {type(e).__name__}: {str(e)[:300]}")
            logger.info("untimed %s: %s failed: %s", describe(key), cfg, errors[-1])
            continue
        _CACHE[key] = cfg
        logger.info("untimed %s: %s (the first that runs)", describe(key), cfg)
        return cfg
    raise RuntimeError(f"no config compiled for {key[1:]}:\n" + "\n".join(errors))


def choose(key: tuple, configs: list, run: Callable) -> Any:
    """The fastest of `configs` for `key` (timed once per process), `run(config)` a launch
    (the timed step of `pick`)."""
    if key in _CACHE:
        return _CACHE[key]
    import triton.testing

    best, best_t, errors = None, float("inf"), []
    start = time.perf_counter()
    for cfg in configs:
        try:
            run(cfg)  # compiles
            t = triton.testing.do_bench(lambda c=cfg: run(c), warmup=2, rep=10,
                                        return_mode="median")
        except Exception as e:  # noqa: BLE001 (out of registers / shared memory: not a candidate)
            errors.append(f"{cfg}: {type(e).__name__}: {str(e)[:300]}")
            logger.info("tuning %s: %s failed: %s", describe(key), cfg, errors[-1])
            continue
        logger.debug("tuning %s: %s %.4f ms", describe(key), cfg, t)
        TIMES.setdefault(key, []).append((cfg, t))
        if t < best_t:
            best, best_t = cfg, t
    if best is None:
        raise RuntimeError(f"no config compiled for {key[1:]}:\n" + "\n".join(errors))
    _CACHE[key] = best
    took = time.perf_counter() - start
    logger.info("tuning %s: %s at %.4f ms, fastest of %d (%d failed) in %.1f s",
                describe(key), best, best_t, len(configs), len(errors), took)
    if took > 1.0:
        slow_tuning(describe(key)[:120], took)
    return best


def pick(key: tuple, *, device, candidates: Callable[[], list], run: Callable,
         table: str, make: Callable, forced: Any = None, default: Any = None,
         untimed: Callable[[], list] | None = None) -> Any:
    """The launch config for `key`, by the one policy every lowering uses, in order:

    forced        a config the caller forces (a benchmark, a test): taken as is
    interpreter   on CPU tensors (not sized as a GPU by kernels.aot): `default`
    capture       inside a CUDA-graph capture nothing is timed or compiled anew: the config
                  chosen for `key` earlier, else `default`
    untimed       with config `tune` off: the first of `untimed()` (default: `candidates()`)
                  that compiles and runs
    process       a config chosen for `key` earlier in this process
    disk          one remembered in `table` for this kind of GPU by an earlier process
    timed         else each candidate timed (`run(config)` launches it), the fastest kept in
                  the process and on disk
    """
    import torch

    from .. import config

    if forced is not None:
        return forced
    if device.type != "cuda" and config.get("as_gpu") is None:
        return default
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if not config.get("tune"):
        if capturing:
            return chosen(key + ("untimed",)) or default
        return first_working(key, (untimed or candidates)(), run)
    if capturing:
        return chosen(key) or default
    done = chosen(key)
    if done is not None:
        return done
    name = torch.cuda.get_device_name(device)
    done = remembered(key, name, table, make, allowed=candidates)
    if done is None:
        done = choose(key, candidates(), run)
        remember(key, name, done, table)
    return done
