#!/bin/bash
# The seventeenth session's last GPU call: every Must row of issue 7 but GLA's (its stage
# needs a call to itself: `bench.py gla`) and the conv GPU tests, each stage in its own
# process under its own limit, benchmarks first on a fresh machine, mamba_ssm's CUDA peer built
# in the background meanwhile (stage_with_peer.py imports it when the mamba1 stage needs it).
# From the repo root on the GPU machine, with .whl/ and .peers/ carried (PEERS.md):
#   bash benchmarks/run_gpu_all_rows.sh        # -> $OUT/results.tgz (logs and JSON)
# TUNED: a folder of scan_tuned.json / chunked_tuned.json from an earlier run (optional).
# STAGES: the stages to run, in this order (default: all of them; the whole takes ~665 s,
# over one call's 600 s: session 18 ran STAGES="decode mamba1 diag").
# The run tool brings back at most 8 files, so everything is packed into one archive, again
# after each stage (a time limit still returns what finished). The session ran mamba2 under
# 125 s (cut after mamba_chunk_scan_combined's forward) and again alone: it needs ~230 s.
set -u
RES=$OUT; export OUT=/tmp/o; mkdir -p $OUT
pack() { tar czf $RES/results.tgz -C $OUT .; }
export LRC_CACHE_DIR=/tmp/lrcc PYTHONUNBUFFERED=1 MAX_JOBS=12
mkdir -p $LRC_CACHE_DIR; if [ -n "${TUNED:-}" ]; then cp $TUNED/*_tuned.json $LRC_CACHE_DIR/; fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
python3 - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("mamba_ssm")
open(os.path.join(spec.submodule_search_locations[0], "__init__.py"), "w").write("")
PY
(python3 .peers/build_selective_scan.py > $OUT/build.log 2>&1; echo "build rc=$?" >> $OUT/build.log) &
S=$SECONDS
st() { echo "== $1 at $((SECONDS - S)) s"; }
STAGES=${STAGES:-"decode mamba1 conv diag mamba2 tests"}
on() { [[ " $STAGES " == *" $1 "* ]]; }
if on decode; then pack; st decode; timeout 80 python3 benchmarks/stage_with_peer.py decode 2>&1 | grep -v -i warn > $OUT/bench_decode.log; grep -v "^ " $OUT/bench_decode.log | cut -c1-150; fi
if on mamba1; then pack; st mamba1; timeout 170 python3 benchmarks/stage_with_peer.py mamba1 2>&1 | grep -v -i warn > $OUT/bench_mamba1.log; grep -v "^ " $OUT/bench_mamba1.log | cut -c1-150; fi
if on conv; then pack; st conv; timeout 75 python3 benchmarks/bench_conv.py peer 2>&1 | grep -v -i warn > $OUT/bench_conv.log; grep -v "^ " $OUT/bench_conv.log | cut -c1-150; grep "check" $OUT/bench_conv.log; fi
if on diag; then pack; st diag; timeout 70 python3 benchmarks/stage_with_peer.py diag 2>&1 | grep -v -i warn > $OUT/bench_diag.log; grep -v "^ " $OUT/bench_diag.log | cut -c1-150; fi
if on mamba2; then pack; st mamba2; timeout 230 python3 benchmarks/stage_with_peer.py mamba2 2>&1 | grep -v -i warn > $OUT/bench_mamba2.log; grep -v "^ " $OUT/bench_mamba2.log | cut -c1-150; fi
if on tests; then pack; st tests; LRC_TUNE=0 timeout 40 python3 -m pytest -m gpu tests/codegen/test_conv.py -n 4 -q -p no:cacheprovider > $OUT/gpu_tests_conv.log 2>&1; tail -2 $OUT/gpu_tests_conv.log; fi
pack; st done; tail -2 $OUT/build.log
cp $LRC_CACHE_DIR/*_tuned.json $OUT/ 2>/dev/null; pack; ls -la $RES
