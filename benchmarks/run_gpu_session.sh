#!/bin/bash
# One batched GPU session (device time is scarce): tests, then benchmark stages, each under
# its own time limit. From the repo root on the GPU machine, with .whl/ (and .peers/ for the
# mamba1 stage's CUDA peer) carried (PEERS.md):
#   bash benchmarks/run_gpu_session.sh            # writes logs and JSON under $OUT
# Knobs: T_TEST, T_BENCH, T_CONV (seconds), STAGES (bench.py stages). The run tool copies
# git-ignored paths only when asked: carry [".whl", ".peers"].
# Tests run verbose under SIGINT timeouts, so a cut-off run still names what passed.
set -u
export LRC_CACHE_DIR=${LRC_CACHE_DIR:-/tmp/lrcc} PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
python3 - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("mamba_ssm")
if spec:  # its __init__ imports the CUDA extension and mamba3's extras
    open(os.path.join(spec.submodule_search_locations[0], "__init__.py"), "w").write("")
PY
summary() { grep -E "PASSED|FAILED|ERROR|passed|failed" "$1" | sed 's/\[gw[0-9]*\] \[ *[0-9]*%\] //' | tail -${2:-60}; }
timeout 60 python3 benchmarks/host_probe.py > $OUT/host.log 2>&1; tail -1 $OUT/host.log
# every GPU test, default launch configs (LRC_TUNE=0: the first config that compiles; the
# tuned-config tests turn tuning on themselves); ~5 min with 8 workers on the H200 machine
# (sixth session). faulthandler_timeout prints where a slow test is (compile or run).
LRC_TUNE=0 timeout -s INT ${T_TEST:-400} python3 -m pytest -m gpu tests -n 8 -v -rf \
    -p no:cacheprovider -o faulthandler_timeout=120 --durations=15 \
    > $OUT/gpu_tests.log 2>&1; summary $OUT/gpu_tests.log
timeout ${T_BENCH:-300} python3 benchmarks/bench.py ${STAGES:-diag mamba2 gla two_level mamba1} \
    2>&1 | grep -v -i warn > $OUT/bench.log
grep -v "^ " $OUT/bench.log | tail -40
LRC_TUNE=0 timeout ${T_CONV:-150} python3 benchmarks/bench_conv.py peer sweep 2>&1 \
    | grep -v -i warn > $OUT/conv.log
tail -12 $OUT/conv.log
cp /tmp/bench_*.json $OUT/ 2>/dev/null
ls $OUT
