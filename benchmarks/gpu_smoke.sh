#!/usr/bin/env bash
# GPU smoke check: vLLM with hermes tool calls and prefix caching, the whole pipeline on enwiki-233
# with 50 questions, then the funnel, rollout tokens/s and the re-sent ratio measured by vLLM itself.
#
#   benchmarks/gpu_smoke.sh MODEL [--replicas N] [--out DIR] [--port P] [--dry-run]
#   benchmarks/gpu_smoke.sh Qwen/Qwen3-8B --replicas 2
#
# NOT RUN on this project's machines: they have no GPU. `--dry-run` prints what would run (the
# vLLM command lines and the hopforge config) without starting anything; tests/llm/test_gpu_smoke.py
# checks that. Needs: a CUDA GPU per replica, `pip install 'hopforge[vllm]'`, ../shared/wiki.
#
# One vLLM replica per GPU (CUDA_VISIBLE_DEVICES=i, port P+i), listed in teacher.base_urls: hopforge
# routes each trajectory to one replica (sticky, least outstanding requests), so its prefix stays in
# that replica's cache. The vLLM command line is hopforge's own (hopforge.llm.servers.vllm_command,
# the one a managed `teacher.backend = "vllm"` runs) plus --enable-prefix-caching.
#
# Re-sent ratio: (prompt tokens vLLM did not find in its prefix cache) / (tokens the turns added:
# completions + tool results), from vLLM's /metrics counters vllm:prefix_cache_queries and
# vllm:prefix_cache_hits summed over replicas. 1.0 = every turn prefilled only what it added.
set -euo pipefail

usage() { echo "usage: $0 MODEL [--replicas N] [--out DIR] [--port P] [--dry-run]" >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
MODEL=$1; shift
REPLICAS=1; OUT=gpu-smoke-data; PORT=8100; DRY=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --replicas) REPLICAS=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --port) PORT=${2:?}; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) usage ;;
  esac
done
[[ $REPLICAS =~ ^[1-9][0-9]*$ ]] || { echo "error: --replicas must be a positive integer, got '$REPLICAS'" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-python}
DUMP=${DUMP:-$REPO/../shared/wiki/enwiki-233.xml.bz2}
mkdir -p "$OUT"
CONFIG="$OUT/gpu-smoke.toml"

urls=()
for ((i = 0; i < REPLICAS; i++)); do urls+=("\"http://127.0.0.1:$((PORT + i))\""); done
BASE_URLS=$(IFS=,; echo "${urls[*]}")

cat > "$CONFIG" <<EOF
# written by benchmarks/gpu_smoke.sh
[run]
out = "$OUT"
[graph]
dump = "$DUMP"
[synth]
n_questions = 50
[teacher]
backend = "vllm"
model = "$MODEL"
base_urls = [$BASE_URLS]
context_tokens = 32768
max_tokens = 1024
temperature = 0.6
extra_args = ["--enable-prefix-caching"]
[rollout]
max_in_flight = 256
max_turns = 100
[flows]
max_workers = 4
EOF

# The vLLM command of replica i: hopforge's vllm_command for this config, on port P+i.
vllm_cmd() {
  "$PY" - "$CONFIG" "$((PORT + $1))" <<'PYEOF'
import shlex, sys
from hopforge.config import load_config
from hopforge.llm.servers import vllm_command
cfg = load_config(sys.argv[1], {"teacher.port": int(sys.argv[2]), "teacher.base_urls": []})
print(shlex.join(vllm_command(cfg)))
PYEOF
}

if [[ $DRY == 1 ]]; then
  echo "# config: $CONFIG"; cat "$CONFIG"
  for ((i = 0; i < REPLICAS; i++)); do echo "CUDA_VISIBLE_DEVICES=$i $(vllm_cmd "$i")"; done
  echo "hopforge run --config $CONFIG --json $OUT/run-summary.json"
  echo "$PY $HERE/gpu_smoke_report.py --out $OUT --summary $OUT/run-summary.json --metrics ${BASE_URLS//\"/}"
  exit 0
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "error: no NVIDIA GPU here (nvidia-smi missing or failing): this smoke check needs one GPU per replica" >&2
  exit 2
fi
GPUS=$(nvidia-smi -L | wc -l)
(( REPLICAS <= GPUS )) || { echo "error: --replicas $REPLICAS but only $GPUS GPU(s)" >&2; exit 2; }
command -v vllm >/dev/null 2>&1 || { echo "error: vllm not found: pip install 'hopforge[vllm]'" >&2; exit 2; }
[[ -f $DUMP ]] || { echo "error: $DUMP not found (set DUMP=...)" >&2; exit 2; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
for ((i = 0; i < REPLICAS; i++)); do
  cmd=$(vllm_cmd "$i")
  echo "starting replica $i: $cmd" >&2
  # shellcheck disable=SC2086  # the command line is shlex-quoted by vllm_cmd
  CUDA_VISIBLE_DEVICES=$i setsid bash -c "exec $cmd" > "$OUT/vllm-$i.log" 2>&1 &
  pids+=($!)
done
for ((i = 0; i < REPLICAS; i++)); do
  for _ in $(seq 600); do
    curl -fsS "http://127.0.0.1:$((PORT + i))/health" >/dev/null 2>&1 && break
    kill -0 "${pids[$i]}" 2>/dev/null || { echo "error: replica $i exited; see $OUT/vllm-$i.log" >&2; exit 1; }
    sleep 1
  done
done

t0=$(date +%s)
hopforge run --config "$CONFIG" --json "$OUT/run-summary.json"
echo "pipeline wall time: $(( $(date +%s) - t0 )) s"
"$PY" "$HERE/gpu_smoke_report.py" --out "$OUT" --summary "$OUT/run-summary.json" --metrics ${BASE_URLS//\"/}
