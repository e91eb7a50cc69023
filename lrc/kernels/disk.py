"""The cache directory on disk, used only where it is safe: data in, never code.

The directory (`lrc.config.cache_dir()`) is created 0700. It is used only while it is a
directory owned by this user, writable by no one else, and writable by this process; an entry
is read only when it is a regular file (not a symlink, FIFO or directory) with the same owner
and no group or world write bit. Anything else is ignored with one `CacheWarning` per path,
and lrc works without it: generated modules then go to a private temporary directory (0700,
removed at exit), tuned configs stay in the process.

Entries are written atomically: a temporary file created with O_CREAT|O_EXCL|O_NOFOLLOW,
mode 0600, under a random name in the entry's directory, then `os.replace`d onto the entry
(a symlink planted at any path is never followed).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from .. import config
from ..errors import CacheWarning

try:
    import fcntl
except ImportError:  # no flock (Windows): tuned tables are then kept in memory only
    fcntl = None

_LOCK = threading.Lock()
_WARNED: set[str] = set()
_PRIVATE: list[Path] = []  # the process's temporary directory, once made


def warn_once(path: Path | str, message: str) -> None:
    """One CacheWarning per path per process."""
    key = str(path)
    with _LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    warnings.warn(f"lrc cache: {message}", CacheWarning, stacklevel=3)


def _unsafe(st: os.stat_result, kind: str) -> str:
    """Why a file or directory with this stat may not be trusted ('' when it may)."""
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not this user ({os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is group- or world-writable (mode {stat.S_IMODE(st.st_mode):o}; chmod 700 it)"
    return ""


def root() -> Path | None:
    """The cache directory, created 0700 and checked; None (after one warning) when it cannot
    be created or written, or someone other than this user could write into it."""
    path = config.cache_dir()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(path)
    except OSError as e:
        warn_once(path, f"cannot use the directory {path} ({e}); working in memory")
        return None
    why = _unsafe(st, "dir")
    if not why and not os.access(path, os.W_OK | os.X_OK):
        why = "is not writable"
    if why:
        warn_once(path, f"the directory {path} {why}: ignored, working in memory")
        return None
    return path


def private() -> Path:
    """This process's own temporary directory (mode 0700), removed at exit: where generated
    modules go when the cache directory cannot be used."""
    with _LOCK:
        if not _PRIVATE:
            made = Path(tempfile.mkdtemp(prefix="lrc-"))
            atexit.register(shutil.rmtree, made, True)
            _PRIVATE.append(made)
        return _PRIVATE[0]


def read(path: Path) -> bytes | None:
    """The bytes of the entry at `path`; None when there is none, or (with one warning) when
    it is not a regular file of this user's that only they can write."""
    try:  # O_NONBLOCK: a FIFO planted at the path does not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        warn_once(path, f"cannot read {path} ({e}): ignored")
        return None
    why = _unsafe(os.fstat(fd), "file")
    if why:
        os.close(fd)
        warn_once(path, f"{path} {why}: ignored")
        return None
    with os.fdopen(fd, "rb") as fh:
        try:
            return fh.read()
        except OSError as e:
            warn_once(path, f"cannot read {path} ({e}): ignored")
            return None


def write(path: Path, data: bytes) -> bool:
    """Replace the entry at `path` with `data` atomically; False (with one warning) when it
    cannot be written."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as e:
        warn_once(path, f"cannot write {path} ({e}): working in memory")
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        warn_once(path, f"cannot write {path} ({e}): working in memory")
        return False
    return True


def touch(path: Path) -> None:
    """Mark an entry used now (eviction deletes the least recently used)."""
    with contextlib.suppress(OSError):
        os.utime(path, follow_symlinks=False)


def evict(directory: Path, prefix: str, suffix: str, keep: int) -> None:
    """Delete all but the `keep` most recently used of this user's regular files named
    `prefix...suffix` in `directory`, and its temporary files left over for an hour."""
    entries = []
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                continue
            if e.name.startswith(prefix) and e.name.endswith(suffix):
                entries.append((st.st_mtime, e.path))
            elif e.name.startswith("." + prefix) and e.name.endswith(".tmp"):
                if now - st.st_mtime > 3600:  # a writer that died before its replace
                    with contextlib.suppress(OSError):
                        os.unlink(e.path)
    if len(entries) <= keep:
        return
    entries.sort()
    for _, p in entries[: len(entries) - keep]:
        with contextlib.suppress(OSError):
            os.unlink(p)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock (flock on `path`.lock) for a read-modify-write of `path`;
    yields False (without locking) when the lock file cannot be used."""
    lock = path.with_name(path.name + ".lock")
    if fcntl is None:
        yield False
        return
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        warn_once(lock, f"cannot lock {lock} ({e}): not written")
        yield False
        return
    try:
        why = _unsafe(os.fstat(fd), "file")
        if why:
            warn_once(lock, f"{lock} {why}: not written")
            yield False
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)  # closing releases the lock


# what lrc writes in the cache directory: generated modules, tuned tables, their lock files,
# and the temporaries of writes (`write`) that died before their replace
_ENTRY = re.compile(r"(lrc_[0-9a-f]+\.py|[a-z]+_tuned\.json(\.lock)?|"
                    r"\.(lrc_[0-9a-f]+\.py|[a-z]+_tuned\.json)\.[0-9a-f]+\.tmp)")


def entries(directory: Path) -> list[tuple[str, int, float]]:
    """(name, bytes, last used) of lrc's entries in `directory`: this user's regular files
    with the names lrc gives them (anything else there is left alone)."""
    out = []
    with contextlib.suppress(OSError), os.scandir(directory) as it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if (stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
                    and _ENTRY.fullmatch(e.name)):
                out.append((e.name, st.st_size, st.st_mtime))
    return sorted(out)


def clear(directory: Path) -> int:
    """Delete lrc's entries in `directory` (`entries`); the number deleted."""
    n = 0
    for name, _, _ in entries(directory):
        with contextlib.suppress(OSError):
            os.unlink(directory / name)
            n += 1
    return n
