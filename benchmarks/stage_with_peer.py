"""Run bench.py stages in this process with mamba_ssm's CUDA selective scan imported lazily
from the sm_90 build (.peers/build_selective_scan.py, PEERS.md): torch's extension loader
reuses a finished build or waits for one under way, so the build can start in the background
before the first stage and the mamba1 stage's lrc rows run while it compiles.

    python3 benchmarks/stage_with_peer.py decode mamba1 ...    # from the repo root
"""
import importlib.abc
import importlib.util
import os
import runpy
import sys


class _LazyPeer(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "selective_scan_cuda":
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        sys.path.insert(0, ".peers")
        import build_selective_scan  # the extension module, built or loaded from its cache

        return build_selective_scan.m

    def exec_module(self, module):
        pass


if __name__ == "__main__":
    sys.meta_path.insert(0, _LazyPeer())
    sys.argv = ["bench.py"] + sys.argv[1:]
    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench.py"),
                   run_name="__main__")
