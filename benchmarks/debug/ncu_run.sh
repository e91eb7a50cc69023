#!/bin/bash
# ncu source-level stall sampling of Mamba-2 chunked forward and Mamba-1 backward_n, from the
# repo root on the GPU machine: OUT=dir bash benchmarks/debug/ncu_run.sh (then ncu_stalls.py)
set -u
export LRC_CACHE_DIR=/tmp/lrcc PYTHONUNBUFFERED=1 OUT=${OUT:-/tmp}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
echo "ncu: $NCU"; $NCU --version | tail -1
python3 benchmarks/debug/ncu_targets.py m2 > $OUT/warm_m2.log 2>&1; tail -2 $OUT/warm_m2.log
python3 benchmarks/debug/ncu_targets.py m1 > $OUT/warm_m1.log 2>&1; tail -2 $OUT/warm_m1.log
for w in m2 m1; do
  k=chunked_forward; [ $w = m1 ] && k=backward_n
  timeout 200 $NCU --clock-control none -k regex:$k -s 1 -c 1 --section SpeedOfLight --section WarpStateStats \
    --section SourceCounters --section Occupancy --section LaunchStats --section InstructionStats \
    -o /tmp/rep_$w -f python3 benchmarks/debug/ncu_targets.py $w > $OUT/ncu_$w.log 2>&1
  tail -3 $OUT/ncu_$w.log
  $NCU -i /tmp/rep_$w.ncu-rep --page details > $OUT/details_$w.txt 2>&1
  $NCU -i /tmp/rep_$w.ncu-rep --page source --csv --print-source sass > $OUT/source_$w.csv 2>&1
  head -c 300 $OUT/source_$w.csv; echo; wc -c $OUT/source_$w.csv
done
