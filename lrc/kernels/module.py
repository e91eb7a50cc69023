"""Generated modules: written to the cache directory and imported, interpreted or compiled.

Triton reads a kernel's source through `inspect`, so generated kernels live in real files. A
file is named by the sha256 of its source, so a second process finds it ready; it is used only
when its content hashes to its name (kernels.disk checks its owner and mode first), else it is
rewritten. What runs is always the text lrc generated in this process: the module executes
that text, and `inspect` (Triton's source reads) is served the same text through `linecache`,
so a file changed on disk is never executed. A module imported for CPU tensors is decorated
under Triton's interpreter (`knobs.runtime.interpret`), one for CUDA tensors compiled; both
can live in one process.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import linecache
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import triton

from .. import config
from . import disk

_LOCK = threading.RLock()
_LOADED: dict[tuple[str, bool], ModuleType] = {}
_BY_SOURCE: dict[tuple[str, bool], ModuleType] = {}


def source_key(source: str) -> str:
    """The sha256 of the source text (the module file's name)."""
    return hashlib.sha256(source.encode()).hexdigest()


def write_source(source: str) -> Path:
    """The file holding `source`: the cached one when its content hashes to its name, else
    written (atomically) in the cache directory, or in the process's private directory when
    the cache directory cannot be used."""
    data = source.encode()
    key = hashlib.sha256(data).hexdigest()
    name = f"lrc_{key}.py"
    home = disk.root()
    if home is not None:
        path = home / name
        have = disk.read(path)
        if have is not None and hashlib.sha256(have).hexdigest() == key:
            disk.touch(path)
            return path
        if have is not None:
            disk.warn_once(path, f"{path} does not match its name: rewritten")
        if disk.write(path, data):
            disk.evict(home, "lrc_", ".py", config.get("cache_modules"))
            return path
    path = disk.private() / name
    if disk.read(path) != data and not disk.write(path, data):
        raise OSError(f"lrc cannot write a generated module to {path}")
    return path


def load(source: str, interpret: bool) -> ModuleType:
    """Import the module for `source`, its kernels interpreted (CPU) or compiled (CUDA)."""
    fast = _BY_SOURCE.get((source, interpret))  # every launch asks: no hash of the source
    if fast is not None:
        return fast
    key = (source_key(source), interpret)
    with _LOCK:
        if key in _LOADED:
            _BY_SOURCE[(source, interpret)] = _LOADED[key]
            return _LOADED[key]
        path = str(write_source(source))
        name = f"lrc_generated.{'interp_' if interpret else ''}{key[0][:24]}"
        spec = importlib.util.spec_from_loader(name, loader=None, origin=path)
        module = importlib.util.module_from_spec(spec)
        module.__file__ = path
        # inspect reads through linecache: an entry with no mtime is never re-read from disk
        linecache.cache[path] = (len(source), None, source.splitlines(True), path)
        code = compile(source, path, "exec", dont_inherit=True)
        with triton.knobs.runtime.scope():
            triton.knobs.runtime.interpret = interpret
            exec(code, module.__dict__)  # noqa: S102 (the text generated in this process)
        sys.modules[name] = module
        _LOADED[key] = module
        _BY_SOURCE[(source, interpret)] = module
        return module


@contextlib.contextmanager
def interpreted():
    """Run interpreted kernels in a process whose triton.language was imported for the GPU.

    Triton's own helpers (tl.zeros, tl.sum, tl.associative_scan's wrappers, ...) are jit
    functions decorated when Triton was imported; while this is active they are swapped for
    interpreted twins, so an interpreted kernel can call them."""
    import numpy as np
    import triton.language as tl
    import triton.language.standard as std
    from triton.runtime import interpreter
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    with _LOCK, warnings.catch_warnings(), np.errstate(all="ignore"):
        # The interpreter's tl.tensor.__index__ is int() of a one-element array, which NumPy
        # (>= 1.25) deprecates: harmless here, and once per kernel call. NumPy's floating-point
        # warnings are off as on the GPU: a kernel computes every lane, and the lanes its masks
        # leave out hold placeholders (0 / 0 in a gradient's formula is no error there)
        warnings.filterwarnings("ignore", message="Conversion of an array with ndim > 0",
                                category=DeprecationWarning, module=r"triton\.")
        # Everything swapped here, and whatever Triton's interpreter leaves patched, is put
        # back on exit: its launches restore what they patch, but a jit helper called inside
        # one (tl.cdiv, whose globals name triton.language.core) patches that module again
        # and never restores it, and a kernel compiled for the GPU later in the process then
        # fails at its first such call (a CompilationError at tl.cdiv, e.g. in the CPU
        # tests' sm_90 compiles, depending on which tests ran before in the worker).
        snap = _snapshot(tl, tl.core, tl.math, std, tl.core.tensor, tl.core.dtype,
                         tl.core.tensor_descriptor_base, interpreter.ScanOps,
                         interpreter.InterpreterBuilder)
        try:
            interpreter.ScanOps.generic_scan = _sliced_scan
            _bool_masks(interpreter.InterpreterBuilder)
            if not triton.knobs.runtime.interpret:  # TRITON_INTERPRET=1: helpers are ready
                for mod in (tl, std, tl.math):
                    for name, val in list(vars(mod).items()):
                        if isinstance(val, JITFunction):
                            setattr(mod, name, InterpretedFunction(val.fn))
                for name, val in list(vars(tl.tensor).items()):
                    if isinstance(val, JITFunction):
                        fn = InterpretedFunction(val.fn)
                        setattr(tl.tensor, name,
                                (lambda f: lambda self, *a, **k: f(self, *a, **k))(fn))
            yield
        finally:
            _restore(snap)


def _bool_masks(builder) -> None:
    """Masks of masked loads and stores as NumPy bool: the interpreter gives `block & scalar`
    of two booleans int32 data, which Triton 3.9's native load and store refuse ("mask has
    unsupported dtype"); earlier releases read any nonzero as true."""
    import numpy as np
    from triton.runtime.interpreter import TensorHandle

    def as_bool(m):
        if m is None or m.data.dtype == np.bool_:
            return m
        return TensorHandle(m.data.astype(np.bool_), m.dtype)

    load, store = builder.create_masked_load, builder.create_masked_store
    builder.create_masked_load = lambda self, ptrs, mask, *a: load(self, ptrs, as_bool(mask), *a)
    builder.create_masked_store = (
        lambda self, ptrs, value, mask, *a: store(self, ptrs, value, as_bool(mask), *a))


def _snapshot(*owners) -> list[tuple[object, dict]]:
    return [(o, dict(vars(o))) for o in owners]


def _restore(snap: list[tuple[object, dict]]) -> None:
    """Every attribute of the snapshot's modules and classes put back as it was (names the
    interpreter added stay: its rewritten helpers, cached, read them)."""
    for owner, before in snap:
        now = vars(owner)
        for name, val in before.items():
            if now.get(name, _GONE) is not val:
                setattr(owner, name, val)


_GONE = object()


def _sliced_scan(self, inputs):
    """The interpreter's associative scan, one combine call per step along the axis on whole
    slices (Triton's own calls it once per element, in Python: minutes for a chunk)."""
    import numpy as np
    import triton.language as tl

    data = [x.handle.data for x in inputs]
    n = data[0].shape[self.axis]
    acc = [np.take(d, [0], axis=self.axis) for d in data]
    outs = [[a] for a in acc]
    for i in range(1, n):
        prev = tuple(self.to_tensor(a, x.dtype) for a, x in zip(acc, inputs))
        cur = tuple(self.to_tensor(np.take(d, [i], axis=self.axis), x.dtype)
                    for d, x in zip(data, inputs))
        ret = self.combine_fn.fn(*prev, *cur)
        ret = ret if isinstance(ret, tuple) else (ret,)
        acc = [r.handle.data if isinstance(r, tl.core.tensor) else np.full_like(a, r)
               for r, a in zip(ret, acc)]
        for o, a in zip(outs, acc):
            o.append(a)
    return [self.to_tensor(np.concatenate(o, axis=self.axis), x.dtype)
            for o, x in zip(outs, inputs)]


def _warm_gluon() -> None:
    """Import Triton's lazily imported gluon now: it asserts on swapped helpers otherwise."""
    with contextlib.suppress(Exception):
        import triton.experimental.gluon  # noqa: F401


_warm_gluon()


