#!/bin/bash
# One batched GPU session (device time is scarce): tests, then benchmark stages, each under
# its own time limit. From the repo root on the GPU machine, with .whl/ (and .peers/ for the
# mamba1 stage's CUDA peer) carried (PEERS.md):
#   bash benchmarks/run_gpu_session.sh            # writes logs and JSON under $OUT
# Knobs: T_FIRST, T_TEST, T_TUNED, T_BENCH, T_CONV (seconds), STAGES (bench.py stages).
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
# the tests nothing else covers first: packed sequences in one launch, the tuned configs
LRC_TUNE=0 timeout -s INT ${T_FIRST:-120} python3 -m pytest -m gpu tests -n 6 -v -rf \
    -p no:cacheprovider -k "cu_seqlens" > $OUT/gpu_first.log 2>&1; summary $OUT/gpu_first.log 12
timeout -s INT ${T_TUNED:-150} python3 -m pytest -m gpu tests/codegen/test_scan.py -k tuned \
    -n 3 -v -rf -p no:cacheprovider > $OUT/gpu_tuned.log 2>&1; summary $OUT/gpu_tuned.log 6
# every other GPU test with the default launch configs (tuning compiles ~5 configs per
# kernel and shape); the float64 reference runs on the GPU (a CPU reference with 12 workers
# was far slower: likely thread oversubscription, untried with torch.set_num_threads(1))
LRC_TUNE=0 timeout -s INT ${T_TEST:-300} python3 -m pytest -m gpu tests -n 12 -v -rf \
    -p no:cacheprovider -k "not tuned and not cu_seqlens" --durations=15 \
    > $OUT/gpu_tests.log 2>&1; summary $OUT/gpu_tests.log
timeout ${T_BENCH:-300} python3 benchmarks/bench.py ${STAGES:-diag mamba2 gla two_level mamba1} \
    2>&1 | grep -v -i warn > $OUT/bench.log
grep -v "^ " $OUT/bench.log | tail -40
LRC_TUNE=0 timeout ${T_CONV:-150} python3 benchmarks/bench_conv.py peer sweep 2>&1 \
    | grep -v -i warn > $OUT/conv.log
tail -12 $OUT/conv.log
cp /tmp/bench_*.json $OUT/ 2>/dev/null
ls $OUT
