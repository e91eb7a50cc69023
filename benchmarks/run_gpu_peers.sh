#!/bin/bash
# The twelfth session's GPU runs: every GPU test, then bench.py stages with mamba_ssm's CUDA
# selective scan built (in the background, while the tests run) and loaded in the same
# process as lrc. From the repo root on the GPU machine, with .whl/ and .peers/ carried
# (PEERS.md; the run tool copies git-ignored paths only when asked: carry [".whl", ".peers"]):
#   OUT=/some/dir STAGES="mamba1 mamba2" bash benchmarks/run_gpu_peers.sh
# Knobs: T_TEST, T_BENCH (seconds), STAGES (bench.py stages), K_TEST (a pytest -k filter;
# with it only TEST_FILES run, default tests/codegen/test_scan_unrolled.py, four workers).
# TUNED: a folder of scan_tuned.json / chunked_tuned.json from an earlier run's $OUT (carry
# it): the tuners' choices for unchanged kernels, so the stages compile only those (GLA's
# stage took >420 s with lrc's tuning after fla's autotuning). They are copied back to $OUT.
set -u
export LRC_CACHE_DIR=/tmp/lrcc PYTHONUNBUFFERED=1 MAX_JOBS=14 OUT=${OUT:-/tmp}
mkdir -p $LRC_CACHE_DIR
if [ -n "${TUNED:-}" ]; then cp $TUNED/*_tuned.json $LRC_CACHE_DIR/ 2>/dev/null; fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
python3 - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("mamba_ssm")  # its __init__ imports the CUDA extension
open(os.path.join(spec.submodule_search_locations[0], "__init__.py"), "w").write("")
PY
(python3 .peers/build_selective_scan.py > $OUT/build.log 2>&1; echo "build rc=$?" >> $OUT/build.log) &
BPID=$!
if [ -n "${K_TEST:-}" ]; then
    LRC_TUNE=0 timeout -s INT ${T_TEST:-240} python3 -m pytest -m gpu -n 4 \
        ${TEST_FILES:-tests/codegen/test_scan_unrolled.py} -v -rf -p no:cacheprovider \
        -k "$K_TEST" > $OUT/gpu_tests.log 2>&1
else
    LRC_TUNE=0 timeout -s INT ${T_TEST:-330} python3 -m pytest -m gpu tests -n 8 -v -rf \
        -p no:cacheprovider -o faulthandler_timeout=120 > $OUT/gpu_tests.log 2>&1
fi
grep -E "FAILED|ERROR|passed|failed" $OUT/gpu_tests.log | sed 's/\[gw[0-9]*\] \[ *[0-9]*%\] //' | tail -15
wait $BPID; tail -1 $OUT/build.log
timeout ${T_BENCH:-300} python3 - <<'PY' 2>&1 | grep -v -i warn | tee $OUT/bench_b.log
import sys, os, runpy
sys.path.insert(0, ".peers")
import build_selective_scan as b
sys.modules["selective_scan_cuda"] = b.m
sys.argv = ["bench.py"] + os.environ.get("STAGES", "mamba1").split()
runpy.run_path("benchmarks/bench.py", run_name="__main__")
PY
cp /tmp/bench_*.json $LRC_CACHE_DIR/*_tuned.json $OUT/ 2>/dev/null; ls $OUT
