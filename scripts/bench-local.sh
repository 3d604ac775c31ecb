#!/usr/bin/env bash
# The issue-4 comparison on any machine, GPU or not: the same generated
# sequence through framepipe (pipelined, CPU backend and GPU adapter),
# framepipe with no ops (decode + encode only), and FFmpeg's
# colorchannelmixer + gblur, each timed in this one run.
#
# Usage: scripts/bench-local.sh [FRAMES=6] [SIZE=8k] > report.md
#   FRAMEPIPE=path/to/framepipe (default: target/release/framepipe)
#   WORK=scratch folder (default: a new temp folder, removed at the end)
set -euo pipefail
frames=${1:-6}
size=${2:-8k}
fp=${FRAMEPIPE:-target/release/framepipe}
work=${WORK:-$(mktemp -d)}
cleanup() { if [ -z "${WORK:-}" ]; then rm -rf "$work"; fi; }
trap cleanup EXIT
matrix="1.05,-0.03,-0.02,0.01,1.0,-0.01,-0.02,-0.06,1.08"

"$fp" generate --size "$size" --frames "$frames" -o "$work/seq_%04d.png" >&2
field() { grep -o "\"$2\": *[0-9.e+-]*" "$1" | head -1 | sed 's/.*: *//'; }
mb_per_frame() { du -cb "$1"/*.png | tail -1 | awk -v n="$frames" '{ printf "%.1f", $1 / n / 1e6 }'; }

echo "## framepipe vs FFmpeg, $frames frames of $size PNG, color matrix + Gaussian sigma 4"
echo
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(date -u +%F)"
echo
echo "| run | frames/s | wall s | bottleneck | efficiency | peak VRAM MiB | peak RSS MiB | MB per output frame |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
# fps: the run's own frames/s (the report's); cmd: frames over the whole
# command's wall time, start-up included, as FFmpeg is timed.
declare -A fps cmd
for run in cpu gpu noop; do
  out="$work/out-$run"
  args=(--matrix "$matrix" --blur 4 --backend "$run")
  if [ "$run" = noop ]; then args=(--backend cpu); fi
  start=$(date +%s.%N)
  if ! "$fp" process "$work/seq_%04d.png" -o "$out/o_%04d.png" "${args[@]}" -q --json "$work/$run.json"; then
    echo "| framepipe $run | failed | | | | | | |"
    continue
  fi
  cmd[$run]=$(awk "BEGIN { print $frames / ($(date +%s.%N) - $start) }")
  fps[$run]=$(field "$work/$run.json" fps)
  printf '| framepipe %s | %.3f | %.1f | %s | %.0f %% | %.0f | %.0f | %s |\n' "$run" "${fps[$run]}" \
    "$(field "$work/$run.json" seconds)" "$(grep -o '"bottleneck": *"[a-z]*"' "$work/$run.json" | cut -d'"' -f4)" \
    "$(awk "BEGIN { print 100 * $(field "$work/$run.json" efficiency) }")" \
    "$(awk "BEGIN { print $(field "$work/$run.json" vram_peak) / 1048576 }")" \
    "$(awk "BEGIN { print $(field "$work/$run.json" rss_peak) / 1048576 }")" "$(mb_per_frame "$out")"
done
if command -v ffmpeg >/dev/null; then
  IFS=, read -r a b c d e f g h i <<<"$matrix"
  mkdir -p "$work/out-ffmpeg"
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/ffmpeg.rss" ffmpeg -v error -i "$work/seq_%04d.png" -filter_threads "$(nproc)" \
    -vf "colorchannelmixer=rr=$a:rg=$b:rb=$c:gr=$d:gg=$e:gb=$f:br=$g:bg=$h:bb=$i,gblur=sigma=4" \
    "$work/out-ffmpeg/o_%04d.png"
  wall=$(awk "BEGIN { print $(date +%s.%N) - $start }")
  fps[ffmpeg]=$(awk "BEGIN { print $frames / $wall }")
  printf '| ffmpeg colorchannelmixer,gblur | %.3f | %.1f | | | | %.0f | %s |\n' "${fps[ffmpeg]}" "$wall" \
    "$(awk "BEGIN { print $(cat "$work/ffmpeg.rss") / 1024 }")" "$(mb_per_frame "$work/out-ffmpeg")"
fi
echo
for run in cpu gpu; do
  if [ -n "${fps[$run]:-}" ] && [ -n "${fps[noop]:-}" ]; then
    echo "- framepipe $run reaches $(awk "BEGIN { printf \"%.0f\", 100 * ${fps[$run]} / ${fps[noop]} }") % of the decode+encode-only throughput"
  fi
  if [ -n "${cmd[$run]:-}" ] && [ -n "${fps[ffmpeg]:-}" ]; then
    echo "- framepipe $run ÷ FFmpeg, whole commands timed alike: $(awk "BEGIN { printf \"%.2f\", ${cmd[$run]} / ${fps[ffmpeg]} }")x"
  fi
done
