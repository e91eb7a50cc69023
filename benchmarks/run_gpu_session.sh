#!/bin/bash
# One batched GPU session (device time is scarce): tests, then benchmark stages, each under
# its own time limit. From the repo root on the GPU machine, with .whl/ (and .peers/ for the
# mamba1 stage's CUDA peer) carried (PEERS.md):
#   bash benchmarks/run_gpu_session.sh            # writes logs and JSON under $OUT
# Knobs: T_TEST, T_TUNED, T_BENCH, T_CONV (seconds), STAGES (bench.py stages).
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
# every GPU test with the default launch configs (tuning compiles ~5 configs per kernel and
# shape: a full tuned run does not fit a session), then the tuned configs' own test
LRC_TUNE=0 timeout ${T_TEST:-200} python3 -m pytest -m gpu tests -n 6 -q -rf \
    -p no:cacheprovider -k "not tuned" > $OUT/gpu_tests.log 2>&1
grep -E "passed|failed|FAILED|ERROR" $OUT/gpu_tests.log | tail -20
timeout ${T_TUNED:-120} python3 -m pytest -m gpu tests/codegen/test_scan.py -k tuned -q \
    -p no:cacheprovider > $OUT/gpu_tuned.log 2>&1
grep -E "passed|failed|FAILED|ERROR" $OUT/gpu_tuned.log | tail -5
timeout ${T_BENCH:-300} python3 benchmarks/bench.py ${STAGES:-diag mamba2 gla two_level mamba1} \
    2>&1 | grep -v -i warn > $OUT/bench.log
grep -v "^ " $OUT/bench.log | tail -40
timeout ${T_CONV:-120} python3 benchmarks/bench_conv.py peer sweep 2>&1 | grep -v -i warn \
    > $OUT/conv.log
tail -12 $OUT/conv.log
cp /tmp/bench_*.json $OUT/ 2>/dev/null
ls $OUT
