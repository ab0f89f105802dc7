#!/bin/bash
# LOO on N images of the sample: local engine vs Ray chunks (local Ray, 2 CPUs), wall time
N=${1:-1000}; EPOCHS=${2:-1}
REPO=$(cd "$(dirname "$0")/../.." && pwd); mkdir -p /tmp/loo_bench && cd /tmp/loo_bench && rm -rf lightning_logs_$N
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
PY=${PYTHON:-$REPO/.venv/bin/python}
common=(cv --config $REPO/experiments/seed_logistic.yaml --data.source ${SAMPLE:-$REPO/../shared/data/medical_mnist_sample}
  --data.split loo --data.subset $N --data.test_fraction 0 --trainer.max_epochs $EPOCHS --data.batch_size 64
  --cv.loo_limit 100000 --trainer.enable_progress_bar false --trainer.logger.init_args.save_dir lightning_logs_$N)
for ex in local ray; do
  /usr/bin/time -f "$ex N=$N wall %e s, maxrss %M KB" $PY -m medmnist_lit "${common[@]}" --trainer.logger.init_args.name $ex --cv.executor $ex > $ex-$N.log 2>&1
  tail -1 $ex-$N.log; grep -E "Ray task|done on Ray|trained together|folds in" $ex-$N.log | head -8
done
$PY - <<PY
import json
a=json.load(open("lightning_logs_$N/local/version_0/summary.json")); b=json.load(open("lightning_logs_$N/ray/version_0/summary.json"))
for k in ("oof/acc","val/loss/mean","val/acc/mean"):
    print(k, a.get(k), b.get(k))
print("keys", [k for k in a if isinstance(a[k], float)][:6])
PY
