#!/usr/bin/env bash
# Every GPU figure the issues ask for, in one run, as one Markdown report.
#
# On the NVIDIA machine, from the project root, after staging here with
#   cargo build --release --examples && ../shared/device/stage --bench target/release/examples/editor
# run (the device tool's `run`, carry [".device"]):
#   bash .device/on-device bash scripts/gpu-report.sh "$OUT/gpu-report.md"
#
# It takes: `framepipe info`; kernel GB/s per op at 1080p/4K/8K from GPU
# timestamps (criterion `kernels` bench); the pipelined run against the
# decode+encode-only run on 48 8K PNG frames; `bench-pool` sweeps for PNG
# and QOI; the editor session where that example exists.
# FRAMES (default 48) and SIZE (default 8k) override the sequence.
set -euo pipefail
report=${1:-gpu-report.md}
frames=${FRAMES:-48}
size=${SIZE:-8k}
work=${WORK:-/tmp/framepipe-gpu}
rm -rf "$work" && mkdir -p "$work"
exec 3>"$report"
say() { echo "$@" >&3; }
fence() { say '```'; cat >&3; say '```'; }

say "# framepipe GPU report"
say
say "date $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo 'see staging'), $(nproc) cores"
say
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | fence
fi
say "## Adapters"
framepipe info 2>&1 | fence

say "## Kernels (GPU timestamps; throughput counts one RGBA8 frame read + one written)"
if command -v kernels >/dev/null; then
  FRAMEPIPE_BENCH_BACKENDS=gpu FRAMEPIPE_BENCH_SIZES=${KERNEL_SIZES:-1080p,4k,8k} \
    kernels --bench --noplot 2>&1 | grep -E '^kernels/|time:|thrpt:' | fence
else
  say "(no kernels bench executable: stage with --bench)"
fi

say "## Pipeline: $frames frames of $size PNG, color matrix + Gaussian sigma 4, PNG out"
framepipe generate --size "$size" --frames "$frames" -o "$work/seq_%04d.png" 2>&1 | fence
matrix="1.05,-0.03,-0.02,0.01,1.0,-0.01,-0.02,-0.06,1.08"
framepipe process "$work/seq_%04d.png" -o "$work/noop/o_%04d.png" -q --json "$work/noop.json" --backend gpu
framepipe process "$work/seq_%04d.png" -o "$work/graded/o_%04d.png" --matrix "$matrix" --blur 4 --backend gpu \
  --json "$work/graded.json" --timeline "$work/timeline.svg" 2>&1 | tail -1 | fence
fps() { grep -o '"fps": *[0-9.e+-]*' "$1" | head -1 | sed 's/.*: *//'; }
noop=$(fps "$work/noop.json")
graded=$(fps "$work/graded.json")
say "$(awk "BEGIN { printf \"- decode+encode only: %.2f frames/s; pipelined color+blur: %.2f frames/s; ratio %.1f %% (target >= 90 %%)\", $noop, $graded, 100 * $graded / $noop }")"
cp "$work/timeline.svg" "$(dirname "$report")/timeline-8k-png.svg" 2>/dev/null || true

say "## bench-pool, PNG out"
framepipe bench-pool "$work/seq_%04d.png" --pools 1,2,4,8,auto --repeat 3 --matrix "$matrix" --blur 4 \
  --backend gpu --csv "$(dirname "$report")/bench-pool-png.csv" --chart "$(dirname "$report")/bench-pool-png.svg" 2>/dev/null | fence

say "## bench-pool, QOI in and out (a fast codec: the GPU share is larger)"
framepipe process "$work/seq_%04d.png" -o "$work/qoi/seq_%04d.qoi" -q --backend cpu
framepipe bench-pool "$work/qoi/seq_%04d.qoi" --format qoi --pools 1,2,4,8,auto --repeat 3 --matrix "$matrix" --blur 4 \
  --backend gpu --csv "$(dirname "$report")/bench-pool-qoi.csv" --chart "$(dirname "$report")/bench-pool-qoi.svg" 2>/dev/null | fence

if command -v cache >/dev/null; then
  say "## Preview cache (criterion, $size sources, 1/4 previews)"
  FRAMEPIPE_BENCH_SIZE=$size FRAMEPIPE_BENCH_BACKEND=gpu cache --bench --noplot 2>&1 | grep -E '^preview/|time:' | fence
fi
editor_bin=$(command -v editor || true)
[ -z "$editor_bin" ] && [ -x .device/extra/editor ] && editor_bin=.device/extra/editor
if [ -n "$editor_bin" ]; then
  say "## Editor session (examples/editor.rs): scrub, slider drag, with and without an export"
  "$editor_bin" --input "$work/seq_%04d.png" --backend gpu 2>/dev/null >&3
else
  say "(no editor example: stage with ../shared/device/stage --bench target/release/examples/editor after cargo build --release --examples)"
fi
echo "wrote $report" >&2
