#!/bin/bash
# On the GPU machine, from the repo root, with .whl/ and .peers/ carried (PEERS.md):
#   bash benchmarks/run_gpu.sh [stage ...]
# installs the peer wheels, builds mamba_ssm's CUDA scan in the background while the other
# stages run, then runs the mamba1 stage (lrc vs the CUDA kernel) in the same kind of process.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MAX_JOBS=14 OUT=${OUT:-/tmp}
python3 - <<'PY'
import importlib.util, sys, types, os
spec = importlib.util.find_spec("mamba_ssm")
init = os.path.join(spec.submodule_search_locations[0], "__init__.py")
open(init, "w").write("")  # its __init__ imports the CUDA extension and mamba3's extras
PY
(python3 .peers/build_selective_scan.py > "$OUT/build.log" 2>&1; echo "build rc=$?" >> "$OUT/build.log") &
BPID=$!
STAGES=${*:-copy diag mamba2 gla decode s4d compile}
python3 benchmarks/bench.py $STAGES 2>&1 | tee "$OUT/bench_a.log"
wait $BPID; tail -2 "$OUT/build.log"
python3 - <<'PY' 2>&1 | tee "$OUT/bench_b.log"
import sys, os, runpy
sys.path.insert(0, ".peers")
import build_selective_scan as b
sys.modules["selective_scan_cuda"] = b.m
sys.argv = ["bench.py", "mamba1"]
runpy.run_path("benchmarks/bench.py", run_name="__main__")
PY
