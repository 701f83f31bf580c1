#!/usr/bin/env bash
# One GPU run of everything issue 9 asks to measure, in under 7 minutes on an H100/H200:
#   heads       the subdivision alone (N 8192, 4 steps, 1024x2048), as built and prepared, fp32/bf16
#   bs1         the model table at batch 1, fp32 and bf16, ours as built and prepared, references
#   bs4         batch 4, bf16, channels_last
#   train       training bs8 512x1024 bf16 (fused SGD): ours + PointRend vs Detectron2 DeepLabV3
#   cudnn_off   peak memory with cudnn.benchmark off (bs1, fp32 and bf16)
#   pytest      the CUDA tests (pytest -m "not slow" -k cuda)
#   compile_*   a compiled head, then ours prepared + torch.compile (reduce-overhead: CUDA graphs)
# Each part runs under `timeout` in its own process (a failure loses only that part) and within a
# global budget; results go to $OUT as they come: <part>.json (7) and summary.md (every part's
# table and status, the tail of pytest's output): 8 files.
#
#   OUT=/path/to/out PY="python" bash tools/benchmarks/gpu_check.sh
#   GPU_CHECK_TINY=1 OUT=/tmp/gpu_check bash tools/benchmarks/gpu_check.sh   # CPU dry run, tiny
#
# PY: the Python command (e.g. "env PYTHONPATH=/tmp/site python3.12"); run from anywhere, the
# repository root is found from this file. BUDGET_S: total seconds (default 400).
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$REPO/output/gpu_check}"
PY="${PY:-python}"
BUDGET_S="${BUDGET_S:-400}"
TINY="${GPU_CHECK_TINY:-0}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

if [ "$TINY" = "1" ]; then
  DEVICE=(--device cpu --narrow --repeats 1 --warmup 0 --threads 1)
  FULL=(--size 64 128)
  TRAIN=(--size 64 128 --batch 2)
  CUDNN=()
  PYTEST_K="cuda or export or subdivision_points"
else
  DEVICE=(--device cuda --repeats 10 --warmup 3)
  FULL=(--size 1024 2048)
  TRAIN=(--size 512 1024 --batch 8)
  CUDNN=(--cudnn-benchmark)
  PYTEST_K="cuda"
fi

{
  echo "# GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo '```'
  $PY -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" 2>&1
  (cd "$REPO" && git log -1 --format='commit %H %s' 2>/dev/null)
  echo '```'
  echo
} > "$SUMMARY"

# run_part NAME TIMEOUT_S ARGS...: tools/benchmark.py ARGS, JSON to $OUT/NAME.json, table to
# summary.md; the part's timeout is cut to what is left of the budget.
run_part() {
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then
    printf '## %s\n\nskipped: budget spent\n\n' "$name" >> "$SUMMARY"; return
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  local t0=$(date +%s) rc=0
  timeout --kill-after=10 "$limit" $PY "$REPO/tools/benchmark.py" "$@" --quiet \
    --output "$WORK/$name" > "$WORK/$name.log" 2>&1 || rc=$?
  {
    printf '## %s (exit %s, %ss, limit %ss)\n\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$limit"
    echo "\`tools/benchmark.py $*\`"
    echo
    if [ -f "$WORK/$name.md" ]; then
      cat "$WORK/$name.md"
    else
      echo '```'; tail -n 30 "$WORK/$name.log"; echo '```'
    fi
    echo
  } >> "$SUMMARY"
  [ -f "$WORK/$name.json" ] && cp "$WORK/$name.json" "$OUT/$name.json"
  return 0
}

run_part heads 60 "${DEVICE[@]}" "${FULL[@]}" "${CUDNN[@]}" --models heads --amp none bf16
run_part bs1 110 "${DEVICE[@]}" "${FULL[@]}" "${CUDNN[@]}" --amp none bf16 \
  --models ours_pointrend ours_deeplabv3 ref_deeplabv3 ref_pointrend_fpn
run_part bs4 80 "${DEVICE[@]}" "${FULL[@]}" "${CUDNN[@]}" --batch 4 --amp bf16 --channels-last \
  --models ours_pointrend ours_deeplabv3 ref_deeplabv3 ref_pointrend_fpn
run_part train 80 "${DEVICE[@]}" "${TRAIN[@]}" "${CUDNN[@]}" --modes train --amp bf16 \
  --models ours_pointrend ref_deeplabv3 ref_pointrend_fpn
run_part cudnn_off 50 "${DEVICE[@]}" "${FULL[@]}" --amp none bf16 --prepare on \
  --models ours_pointrend ours_deeplabv3 ref_deeplabv3

left=$(( BUDGET_S - ($(date +%s) - START) ))
if [ "$left" -ge 20 ]; then
  limit=$(( left < 70 ? left : 70 )) t0=$(date +%s) rc=0
  (cd "$REPO" && timeout --kill-after=10 "$limit" $PY -m pytest -q -p no:cacheprovider \
     -m "not slow" -k "$PYTEST_K" -rs tests/test_point_sampling.py tests/test_semantic_heads.py \
     tests/test_inference.py) > "$WORK/pytest.txt" 2>&1 || rc=$?
  printf '## pytest -k "%s" (exit %s, %ss)\n\n```\n%s\n```\n\n' "$PYTEST_K" "$rc" \
    "$(( $(date +%s) - t0 ))" "$(tail -n 60 "$WORK/pytest.txt")" >> "$SUMMARY"
fi

# Last: compilation takes minutes; the compiled head first (small graphs), then the model
# (backbone + head), each with whatever the budget leaves.
run_part compile_head 90 "${DEVICE[@]}" "${FULL[@]}" "${CUDNN[@]}" --amp bf16 \
  --compile reduce-overhead --models heads
run_part compile_model 200 "${DEVICE[@]}" "${FULL[@]}" "${CUDNN[@]}" --amp bf16 --prepare on \
  --compile reduce-overhead --models ours_pointrend

printf 'total %ss of a %ss budget\n' "$(( $(date +%s) - START ))" "$BUDGET_S" >> "$SUMMARY"
echo "results in $OUT"
