#!/bin/bash
# The registry on the GPU machine, offline. From the repository root there, with the peer
# wheels (.whl/) and .peers/ (shared/peers/* and mamba-ssm's csrc/ as mamba_csrc) carried as
# /work/shared/PEERS.md prepares them:
#   bash benchmarks/gpu.sh [run.py arguments]           # every row
#   ROWS=mamba2 bash benchmarks/gpu.sh                  # some rows
# Installs the wheels into /tmp/site (no network), builds mamba-ssm's selective_scan_cuda in
# the background while the other rows run (the mamba1 row, last, waits for it), and runs
# run.py. Results accumulate per row in /tmp/lrc-bench/<card>.json on this machine (--merge:
# a later call on the same warm machine adds its rows) and are copied, with the chart, to $OUT.
# T: seconds for run.py (default 570, under one call's 600 s; finished rows are kept).
set -u
ROWS=${ROWS:-elementwise,decode,decode_mamba1,s4d,mamba2,gla,deltanet,gated_deltanet,kda,rwkv7,mamba1}
RES=/tmp/lrc-bench
mkdir -p "$RES" /tmp/site
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-14} LRC_CACHE_DIR=${LRC_CACHE_DIR:-/tmp/lrcc}
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
        .whl/*.whl > "$RES/pip.log" 2>&1 || tail -5 "$RES/pip.log"
else
    echo "no .whl/ here: the peers will be marked unavailable"
fi
export PYTHONPATH=$PWD:/tmp/site
BPID=
if [[ ",$ROWS," == *",mamba1,"* && -f .peers/build_selective_scan.py ]]; then
    (MAMBA_CSRC=.peers/mamba_csrc python3 .peers/build_selective_scan.py > "$RES/build.log" 2>&1
     echo "build rc=$?" >> "$RES/build.log") &
    BPID=$!
fi
CARD=$(python3 -c "import re, torch
print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-'))")
timeout "${T:-570}" python3 benchmarks/run.py --rows "$ROWS" --merge --out "$RES/$CARD.json" "$@" \
    2>&1 | grep -v -i warn
if [ -n "$BPID" ]; then wait "$BPID"; tail -2 "$RES/build.log"; fi
python3 benchmarks/plot.py "$RES/$CARD.json"
if [ -n "${OUT:-}" ]; then cp "$RES/$CARD.json" "$RES/$CARD.png" "$OUT/"; fi
