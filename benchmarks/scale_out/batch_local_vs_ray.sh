#!/bin/bash
# The same small batch (optimizers.yaml, 2 epochs, one seed, the 3,000-image sample) on 2 local workers and on a
# local Ray with 2 CPUs, interleaved twice; then Ray's start-up and shutdown alone. Run from anywhere:
#   bash benchmarks/scale_out/batch_local_vs_ray.sh      (PYTHON=..., SAMPLE=... to override)

P=${PYTHON:-.venv/bin/python}
S=${SAMPLE:-$(cd "$(dirname "$0")/../.." && pwd)/../shared/data/medical_mnist_sample}
cd "$(dirname "$0")/../.."
$P -m medmnist_lit prepare --data.source $S > /dev/null 2>&1
for rep in 1 2; do
 for ex in local ray; do
  rm -rf /tmp/bench13/$ex
  if [ $ex = local ]; then X="--workers 2"; else X="--executor ray"; fi
  s=$(date +%s.%N)
  $P -m medmnist_lit batch experiments/optimizers.yaml --data.source $S --trainer.max_epochs 2 --seeds [0] $X --root /tmp/bench13/$ex > /tmp/bench13_$ex$rep.log 2>&1
  rc=$?
  e=$(date +%s.%N)
  echo "$ex rep$rep rc=$rc wall=$(echo "$e - $s" | bc) load=$(cut -d' ' -f1 /proc/loadavg)"
 done
done
$P - <<'PY'
import time, logging, os
t0 = time.perf_counter()
from medmnist_lit.batch.ray_executor import connect, RayOptions
connect(RayOptions())
t1 = time.perf_counter()
import ray
ray.shutdown()
t2 = time.perf_counter()
print(f"ray start (import+init) {t1-t0:.2f} s, shutdown {t2-t1:.2f} s")
PY
