#!/usr/bin/env bash
# Every GPU figure the issues ask for, in one run, as one Markdown report.
#
# On the NVIDIA machine, from the project root, after staging here with
#   scripts/stage-gpu.sh
# run (the device tool's `run`, carry [".device"]):
#   bash .device/on-device bash scripts/gpu-report.sh "$OUT/gpu-report.md"
# The whole report can take longer than the tool's 10 minutes per command;
# SECTIONS picks parts (default all), e.g. two calls:
#   SECTIONS=info,kernels,decode,pipeline,cache,editor   and   SECTIONS=info,pool
#
# It takes: `framepipe info`; kernel GB/s per op at 1080p/4K/8K from GPU
# timestamps (criterion `kernels` bench); PNG decode per frame (`decode`
# bench, CPU); the pipelined run against the
# decode+encode-only run on 48 8K PNG frames; `bench-pool` sweeps for PNG
# and QOI; the editor session where that example exists.
# FRAMES (default 48) and SIZE (default 8k) override the sequence; BUDGET
# (default 16GiB: room for the auto pool of 16 threads, 19 8K slots, beside
# the readback ring and single-band kernel buffers) is the
# VRAM budget of every run.
set -euo pipefail
report=${1:-gpu-report.md}
frames=${FRAMES:-48}
size=${SIZE:-8k}
budget=${BUDGET:-16GiB}
sections=",${SECTIONS:-info,kernels,decode,pipeline,pool,cache,editor},"
want() { [[ "$sections" == *",$1,"* ]]; }
work=${WORK:-/tmp/framepipe-gpu}
rm -rf "$work" && mkdir -p "$work"
framepipe --version >/dev/null || { echo "error: framepipe is not the framepipe CLI (stage with scripts/stage-gpu.sh)" >&2; exit 1; }
exec 3>"$report"
say() { echo "$@" >&3; }
fence() { say '```'; cat >&3; say '```'; }
commit=$(git rev-parse --short HEAD 2>/dev/null || cat .device/extra/COMMIT 2>/dev/null || echo unknown)

say "# framepipe GPU report"
say
say "date $(date -u +%FT%TZ), commit $commit, $(nproc) cores, budget $budget, sections ${sections//,/ }"
say
if want info; then
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | fence
fi
say "## Adapters"
framepipe info 2>&1 | fence
fi

if want kernels; then
say "## Kernels (GPU timestamps; throughput counts one RGBA8 frame read + one written)"
if command -v kernels >/dev/null; then
  FRAMEPIPE_BENCH_BACKENDS=gpu FRAMEPIPE_BENCH_SIZES=${KERNEL_SIZES:-1080p,4k,8k} \
    kernels --bench --noplot 2>&1 | grep -E '^kernels/|time:|thrpt:' | fence
else
  say "(no kernels bench executable: stage with scripts/stage-gpu.sh)"
fi
fi

if want decode; then
say "## PNG decode per frame (CPU, one thread: what each decoder does per frame; criterion \`decode\`)"
if command -v decode >/dev/null; then
  FRAMEPIPE_BENCH_SIZE=$size decode --bench --noplot 2>&1 | grep -E '^decode/|time:|thrpt:' | fence
else
  say "(no decode bench executable: stage with scripts/stage-gpu.sh)"
fi
fi

if want pipeline || want pool || want editor; then
say "## Sequence: $frames frames of $size PNG"
framepipe generate --size "$size" --frames "$frames" -o "$work/seq_%04d.png" 2>&1 | fence
fi
matrix="1.05,-0.03,-0.02,0.01,1.0,-0.01,-0.02,-0.06,1.08"

if want pipeline; then
say "## Pipeline: color matrix + Gaussian sigma 4, PNG out"
framepipe process "$work/seq_%04d.png" -o "$work/noop/o_%04d.png" -q --json "$work/noop.json" --backend gpu \
  --vram-budget "$budget"
framepipe process "$work/seq_%04d.png" -o "$work/graded/o_%04d.png" --matrix "$matrix" --blur 4 --backend gpu \
  --vram-budget "$budget" --json "$work/graded.json" --timeline "$work/timeline.svg" 2>&1 | tail -1 | fence
field() { grep -o "\"$1\": *[0-9.e+-]*" "$2" | head -1 | sed 's/.*: *//'; }
fps() { field fps "$1"; }
noop=$(fps "$work/noop.json")
graded=$(fps "$work/graded.json")
for run in noop graded; do
  say "$(awk "BEGIN { printf \"- $run: peak VRAM (ledger) %.1f MiB, peak host RSS %.1f MiB\", $(field vram_peak "$work/$run.json") / 1048576, $(field rss_peak "$work/$run.json") / 1048576 }")"
done
say "$(awk "BEGIN { printf \"- decode+encode only: %.2f frames/s; pipelined color+blur: %.2f frames/s; ratio %.1f %% (target >= 90 %%)\", $noop, $graded, 100 * $graded / $noop }")"
cp "$work/timeline.svg" "$(dirname "$report")/timeline-8k-png.svg" 2>/dev/null || true
fi

if want pool; then
say "## bench-pool, PNG out"
framepipe bench-pool "$work/seq_%04d.png" --pools 1,2,4,8,auto --repeat 3 --overwrite --matrix "$matrix" --blur 4 \
  --backend gpu --budget "$budget" \
  --csv "$(dirname "$report")/bench-pool-png.csv" --chart "$(dirname "$report")/bench-pool-png.svg" 2>&1 | fence

say "## bench-pool, QOI in and out (a fast codec: the GPU share is larger)"
framepipe process "$work/seq_%04d.png" -o "$work/qoi/seq_%04d.qoi" -q --backend cpu
framepipe bench-pool "$work/qoi/seq_%04d.qoi" --format qoi --pools 1,2,4,8,auto --repeat 3 --overwrite --matrix "$matrix" --blur 4 \
  --backend gpu --budget "$budget" \
  --csv "$(dirname "$report")/bench-pool-qoi.csv" --chart "$(dirname "$report")/bench-pool-qoi.svg" 2>&1 | fence
fi

if want cache && command -v cache >/dev/null; then
  say "## Preview cache (criterion, $size sources, 1/4 previews)"
  FRAMEPIPE_BENCH_SIZE=$size FRAMEPIPE_BENCH_BACKEND=gpu cache --bench --noplot 2>&1 | grep -E '^preview/|time:' | fence
fi
if want editor; then
# Not `command -v editor`: Debian's /usr/bin/editor is a text editor.
editor_bin=
for e in .device/extra/editor target/release/examples/editor; do
  if [ -x "$e" ]; then editor_bin=$e; break; fi
done
if [ -n "$editor_bin" ]; then
  say "## Editor session (examples/editor.rs): scrub, slider drag, with and without an export"
  "$editor_bin" --input "$work/seq_%04d.png" --backend gpu --budget "$budget" 2>/dev/null >&3
else
  say "(no editor example: stage with scripts/stage-gpu.sh)"
fi
fi
echo "wrote $report" >&2
