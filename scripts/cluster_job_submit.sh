#!/usr/bin/env bash
# Start a one-node Ray cluster with `ray start --head`, run a study on it through
# `ray job submit`, open its tables, and stop the cluster. The same steps work on a real
# cluster: start the head and workers (each with its own lbt_cpu count), submit from anywhere
# that reaches the dashboard, keep the run directory on shared storage.
#
#   bash scripts/cluster_job_submit.sh [RUN_DIR] [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=$(realpath -m "${1:-$(mktemp -d)/run}")
TRIALS=${2:-4}
PORT=${LBT_RAY_PORT:-6390}
export RAY_AUTH_MODE=token  # the local cluster uses token auth; the CLI must present it
export RAY_USAGE_STATS_ENABLED=0

ray start --head --port="$PORT" --num-cpus=2 --resources='{"lbt_cpu": 2}' \
  --dashboard-host=127.0.0.1 --dashboard-port=8265 --disable-usage-stats
trap 'ray stop --force >/dev/null 2>&1 || true' EXIT

ray job submit --address http://127.0.0.1:8265 -- \
  lbt-study run "$PWD/search_spaces/digits.py" --address auto --trials "$TRIALS" \
  --run-dir "$RUN_DIR" --no-report

python - "$RUN_DIR" "$TRIALS" <<'PY'
import sys
from lbt_study import load_results
trials, history = load_results(sys.argv[1])
print(f"{len(trials)} trials ({dict(trials['status'].value_counts())}), {len(history)} "
      f"evaluations in {sys.argv[1]}")
assert len(trials) == int(sys.argv[2]), "not every trial finished"
PY
