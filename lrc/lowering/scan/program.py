"""Everything generated for one spec's scan lowering: the kernels' graphs, tiling and source."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

from ...errors import Unsupported
from ...ir.graph import Graph
from ...ir.verify import verify
from ...kernels import module as modules
from ...kernels.abi import Signature
from ...kernels.writer import ident, namespace
from ...layout import batch_dim
from ...passes.derivatives import Backward, vjp
from .backward import backward_source, saved_states
from .blocks import Block, blocks
from .body import module_source
from .emit import Tiling
from .forward import fixed_order, forward_source, independent, varlen_able
from .loop import loop_source, step_source
from .partition import Partition, hoist_params, kernel_graph, partition
from .tiling import choose_tiling, unrolled
from .unrolled import backward_unrolled_source


@dataclass
class ScanProgram:
    """The scan kernels of a (real, pipeline-processed) graph `g`.

    part / kernel   which nodes run in the kernels, and the kernels' own graph
    blocks          the state blocks the forward scans; `backward` the adjoint step and its blocks
    sources         'forward', 'backward', 'step': each kernel's own source; `source` the module
    """

    g: Graph
    prefer_loop: bool = False  # run diagonal transitions one token at a time too
    part: Partition = field(init=False)
    kernel: Graph = field(init=False)
    blocks: tuple[Block, ...] = field(init=False)
    tiling: Tiling = field(init=False)
    tilings: dict[str, Tiling] = field(init=False)  # a kernel's own, where not `tiling`
    backward: Backward = field(init=False)
    bblocks: tuple[Block, ...] = field(init=False)
    varlen: bool = field(init=False)  # packed sequences (cu_seqlens) run in one launch
    saved: dict[str, str] = field(init=False)  # state -> the output the backward reads it from
    batch: str | None = field(init=False)  # the dim cu_seqlens packs along
    signatures: dict[str, Signature] = field(init=False)
    partials: dict[str, list[str]] = field(init=False)
    sources: dict[str, str] = field(init=False)
    source: str = field(init=False)
    # the fixed-order variants of the backward kernels (`fixed_order`): {which: (source,
    # partials)}, generated on first use into a module of their own
    fixed: dict[str, tuple[str, dict]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        with namespace():  # temporaries numbered per module, the same in every process
            self._generate()

    def _generate(self) -> None:
        g = self.g = hoist_params(self.g)
        self.part = partition(g)
        self.kernel = kernel_graph(self.part)
        self.backward = vjp(self.kernel)
        self.tiling = choose_tiling(self.kernel, self.part, self.backward.graph)
        verify(self.kernel)
        verify(self.backward.graph)
        base = ident(g.name)
        try:  # diagonal transitions: chunked associative scans
            if self.prefer_loop:
                raise Unsupported("the one-token loop was asked for")
            self.blocks = blocks(self.kernel)
            self.bblocks = blocks(self.backward.graph)
            self.mode = "scan"
            self.segmented = independent(self.kernel, self.blocks)
            self.bsegmented = independent(self.backward.graph, self.bblocks)
            self.batch = batch = batch_dim(g)
            self.varlen = varlen_able(self.tiling, batch)
            fwd, fsig = forward_source(self.kernel, self.blocks, self.tiling, f"{base}_forward",
                                       batch)
            self.saved = saved_states(self.kernel, self.backward)
            bwd, bsig, self.partials = backward_source(self.kernel, self.blocks,
                                                       self.backward.graph, self.bblocks,
                                                       self.backward, self.tiling,
                                                       f"{base}_backward", batch, self.saved)
            extra = self._unrolled(base, batch)
        except Unsupported as why:  # any other linear transition: one token at a time
            extra = {}
            self.blocks = self.bblocks = ()
            self.mode = f"loop ({why})"
            self.segmented = self.bsegmented = self.varlen = False
            self.batch = None
            self.saved = {}
            fwd, fsig, _ = loop_source(self.kernel, self.tiling, f"{base}_forward")
            bwd, bsig, self.partials = loop_source(self.backward.graph, self.tiling,
                                                   f"{base}_backward", self.backward)
        stp, ssig = step_source(self.kernel, self.tiling, f"{base}_step")
        self.sources = {"forward": fwd, "backward": bwd, "step": stp}
        self.signatures = {"forward": fsig, "backward": bsig, "step": ssig}
        self.tilings = {}
        for which, (src, sig, tiling) in extra.items():
            self.sources[which], self.signatures[which], self.tilings[which] = src, sig, tiling
        self.source = module_source(list(self.sources.values()), f"Scan kernels for {g.name}.")

    def _unrolled(self, base: str, batch: str | None) -> dict:
        """{'forward_n', 'backward_n': (source, signature, tiling)}: the forward and the
        backward with the whole dim unrolled (tiling.unrolled, scan_unrolled), where they
        apply. They save and read the checkpoints `forward` and `backward` do, so either
        forward pairs with either backward at the same chunk length."""
        t = unrolled(self.kernel, self.tiling)
        if t is None:
            return {}
        try:
            src, sig = forward_source(self.kernel, self.blocks, t, f"{base}_forward_n", batch)
        except Unsupported:
            return {}
        out = {"forward_n": (src, sig, t)}
        if self.saved:  # the backward reads saved outputs, not checkpoints
            return out
        try:
            bsrc, bsig, partials = backward_unrolled_source(
                self.kernel, self.blocks, self.backward.graph, self.bblocks, self.backward, t,
                f"{base}_backward_n", batch)
        except Unsupported:
            return out
        if partials == self.partials:  # the same gradient buffers as `backward`'s
            out["backward_n"] = (bsrc, bsig, t)
        return out

    @property
    def atomic_grads(self) -> bool:
        """Whether the backward adds some gradient with atomics across programs (a sum over a
        tile dim split over programs, as Mamba-1's dB and dC over d): its rounding then
        depends on the order the programs run in."""
        return any(atomic for _, atomic in self.partials.values())

    def module(self, interpret: bool) -> ModuleType:
        return modules.load(self.source, interpret)

    def fixed_order(self, which: str) -> str:
        """The kernel that runs `which` deterministically: `which` itself where no gradient is
        added atomically, else `<which>_det`, whose gradients summed over blocks of a split dim
        get one buffer slot per block (added up on the host in a fixed order)."""
        if which not in ("backward", "backward_n") or not any(
                atomic for _, atomic in self.partials.values()):
            return which
        det = f"{which}_det"
        if det not in self.signatures:
            self._generate_fixed()
        return det if det in self.signatures else "backward_det"

    def partials_of(self, which: str) -> dict:
        """{gradient: (partial axes, atomic)} of kernel `which`'s gradient buffers."""
        return self.fixed[which][1] if which in self.fixed else self.partials

    def _generate_fixed(self) -> None:
        base = ident(self.g.name)
        out: dict[str, tuple] = {}
        with namespace(), fixed_order():
            if self.mode == "scan":
                out["backward_det"] = backward_source(
                    self.kernel, self.blocks, self.backward.graph, self.bblocks, self.backward,
                    self.tiling, f"{base}_backward_det", self.batch, self.saved)
            else:
                out["backward_det"] = loop_source(self.backward.graph, self.tiling,
                                                  f"{base}_backward_det", self.backward)
            if "backward_n" in self.sources:
                src, sig, partials = backward_unrolled_source(
                    self.kernel, self.blocks, self.backward.graph, self.bblocks, self.backward,
                    self.tilings["backward_n"], f"{base}_backward_n_det", self.batch)
                if partials == out["backward_det"][2]:  # the same buffers, as backward_n's
                    out["backward_n_det"] = (src, sig, partials)
                    self.tilings["backward_n_det"] = self.tilings["backward_n"]
        for which, (src, sig, partials) in out.items():
            self.fixed[which] = (src, partials)
            self.signatures[which] = sig
        self.__dict__["fixed_source"] = module_source(
            [src for src, _ in self.fixed.values()],
            f"Scan backward kernels for {self.g.name}, cross-program sums in a fixed order.")

    def __getstate__(self) -> dict:  # pickled to the disk cache: without loaded kernels
        return {k: v for k, v in self.__dict__.items() if k not in ("_fns", "_pre")}

    def kernel_fn(self, which: str, interpret: bool):
        """The kernel `which` of the module (looked up once: every launch asks)."""
        fns = self.__dict__.setdefault("_fns", {})
        fn = fns.get((which, interpret))
        if fn is None:
            mod = (modules.load(self.__dict__["fixed_source"], interpret)
                   if which in self.fixed else self.module(interpret))
            fn = fns[which, interpret] = getattr(mod, f"{ident(self.g.name)}_{which}")
        return fn

    def run(self, call, finals: bool = True) -> tuple[list, list]:
        """Outputs and final states of a whole-sequence call (lowering.scan.call.run)."""
        from .call import run

        return run(self, call, finals)

    def step(self, call, states_out: dict | None = None, kept: list | None = None):
        """One token (lowering.scan.call.step): outputs and new states."""
        from .call import step

        return step(self, call, states_out, kept)

    def fast_entry(self, call, args: tuple, kwargs: dict, grad: bool):
        """The replay of a call's launches where it qualifies (lowering.scan.call)."""
        from .call import fast_entry

        return fast_entry(self, call, args, kwargs, grad)
