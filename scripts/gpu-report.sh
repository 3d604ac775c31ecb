#!/usr/bin/env bash
# Every GPU figure the issues ask for, in one run, as one Markdown report.
#
# On the NVIDIA machine, from the project root, after staging here with
#   scripts/stage-gpu.sh
# run (the device tool's `run`, carry [".device"]) in three calls, each
# inside the tool's 10 minutes (the pool sweeps alone are 30 runs of 48 8K
# frames; the editor section is two sessions; the report is written as it
# goes, so a call cut short keeps the sections it finished):
#   SECTIONS=info,kernels,pipeline,cache bash .device/on-device bash scripts/gpu-report.sh "$OUT/gpu-report.md"
#   SECTIONS=info,pipeline,pool bash .device/on-device bash scripts/gpu-report.sh "$OUT/gpu-report-pool.md"
#   SECTIONS=editor bash .device/on-device bash scripts/gpu-report.sh "$OUT/gpu-report-editor.md"
# (the second repeats `pipeline`: its decode+encode-only run is what the
# pool ratios are read against, and a machine released between calls has
# lost WORK). SECTIONS=decode adds the CPU decode bench. With 16 decode
# threads, 48 frames is 3 per thread, and filling and draining the
# pipeline is a fair share of the larger pools' runs; where device time
# allows, take the sweeps on 96 frames instead, one call each (about 4
# and 3 minutes):
#   FRAMES=96 SECTIONS=info,pipeline,pool_png bash .device/on-device bash scripts/gpu-report.sh "$OUT/gpu-report-pool-png.md"
#   FRAMES=96 SECTIONS=pool_tif bash .device/on-device bash scripts/gpu-report.sh "$OUT/gpu-report-pool-tif.md"
#
# It takes: `framepipe info`; kernel GB/s per op at 1080p/4K/8K on the GPU
# (from GPU timestamps) and on the CPU backend, beside the streaming
# reference (criterion `kernels` bench; its raw output is kept beside the
# report as kernels.txt, so a call cut short still has the cases it ran);
# the pipelined run against the decode+encode-only run on 48 8K PNG
# frames; `bench-pool` sweeps for PNG and uncompressed TIFF with the pipelined /
# decode+encode-only ratio per pool size; the preview cache bench; the
# editor session (once per PREFETCH_THREADS value, default "0 1": the
# engine's default prefetch threads, then one). A section that fails says so in the report and the rest
# still run. Where nvidia-smi is found, the device's memory in use is
# sampled every 200 ms and each section ends with its peak, beside the
# ledger's own figures.
# SCRATCH takes the TIFF sweep's outputs: each output is synced before
# its rename, so a disk slower than the codecs (the H100 machine's takes
# 1.1 GB/s with a sync, 8 frames/s of 8K TIFF) would measure the disk. By
# default /dev/shm/framepipe where /dev/shm has 16 GiB free, else the work
# folder; the report says where the outputs went and what that folder
# takes with a sync.
# FRAMES (default 48) and SIZE (default 8k) set the sequence; BUDGET
# (default 16GiB: room for the auto pool of 16 threads, 19 8K slots, beside
# the readback ring and single-band kernel buffers) is the VRAM budget of
# every run; BENCH_SECONDS (default 2) criterion's measuring time per case;
# KERNEL_BACKENDS (default gpu,cpu) and KERNEL_SIZES the kernel cases.
#
# Device time is scarce: where no hardware GPU adapter is found (the
# Vulkan driver did not load), the GPU sections are skipped at once with
# the diagnostics in the report (SOFTWARE_OK=1 runs them on a software
# adapter, to try the script on a machine without a GPU), and each heavy
# command has a time limit of its own (a hang is a noted failure, not the
# whole call): KERNELS_S 300, POOL_S 450 per bench-pool sweep, CACHE_S
# 150, EDITOR_S 240 seconds per editor session.
set -euo pipefail
report=${1:-gpu-report.md}
frames=${FRAMES:-48}
size=${SIZE:-8k}
budget=${BUDGET:-16GiB}
export FRAMEPIPE_BENCH_SECONDS=${BENCH_SECONDS:-2}
sections=",${SECTIONS:-info,kernels,pipeline,pool,cache,editor},"
want() { [[ "$sections" == *",$1,"* ]]; }
work=${WORK:-/tmp/framepipe-gpu}
out_dir=$(dirname "$report")
# An unset $OUT would put the report at /gpu-report.md, which never comes back.
[ "$out_dir" != / ] && [ -d "$out_dir" ] || { echo "error: no folder $out_dir for the report (is \$OUT set?)" >&2; exit 1; }
# The driver's tools live here on the device machine.
PATH=$PATH:/usr/local/nvidia/bin
framepipe --version >/dev/null || { echo "error: framepipe is not the framepipe CLI (stage with scripts/stage-gpu.sh)" >&2; exit 1; }
mkdir -p "$work"
# Whether a hardware GPU is there, found once for every section.
framepipe info >"$work/info.txt" 2>&1 || true
no_gpu=0
if grep -q "^auto picks: the CPU backend" "$work/info.txt" && [ "${SOFTWARE_OK:-0}" != 1 ]; then
  no_gpu=1
fi
exec 3>"$report"
say() { echo "$@" >&3; }
fence() { say '```'; cat >&3; say '```'; }
# The commit the staged binaries were built at, not the checkout's HEAD.
commit=$(cat .device/extra/COMMIT 2>/dev/null || git rev-parse --short HEAD 2>/dev/null || echo unknown)
matrix="1.05,-0.03,-0.02,0.01,1.0,-0.01,-0.02,-0.06,1.08"
field() { grep -o "\"$1\": *[0-9.e+-]*" "$2" | head -1 | sed 's/.*: *//'; }

# Runs one section in a subshell that stops at its first failure; a failed
# section is noted and the report goes on.
section() {
  local name=$1 rc=0
  want "$name" || return 0
  if [ "$no_gpu" = 1 ] && [ "$name" != info ] && [ "$name" != decode ]; then
    say "(section $name skipped: no hardware GPU adapter, see Adapters)"
    return 0
  fi
  echo "section $name ..." >&2
  local from
  from=$(sample_count)
  set +e
  ( set -e; "section_$name" )
  rc=$?
  set -e
  [ "$rc" -eq 0 ] || say "(section $name failed with exit code $rc)"
  device_peak "$from"
}

# Device memory in use (MiB), sampled in the background where the driver's
# nvidia-smi is found: the whole GPU's view, beside the ledger's count.
samples="$work/device-memory.csv"
: >"$samples"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >>"$samples" 2>/dev/null &
  sampler=$!
  trap 'kill "$sampler" 2>/dev/null || true' EXIT
fi
sample_count() { wc -l <"$samples"; }
device_peak() {
  local peak
  peak=$(tail -n +"$(($1 + 1))" "$samples" | sort -n | tail -1)
  [ -z "$peak" ] || { say; say "(device memory in use, peak during this section: $peak MiB, nvidia-smi)"; }
}

# The sequence, generated once per WORK, SIZE and FRAMES (a change of
# either makes it anew, and drops the runs measured on the old one).
sequence() {
  local mark="$work/.generated"
  if [ "$(cat "$mark" 2>/dev/null)" != "$size $frames" ]; then
    rm -rf "$work/seq" "$work"/noop*.json "$work/noop-fps" "$mark" && mkdir -p "$work/seq"
    framepipe generate --size "$size" --frames "$frames" -o "$work/seq/seq_%04d.png" -q
    echo "$size $frames" >"$mark"
  fi
}

section_info() {
  say "## Adapters"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | fence
  fi
  fence <"$work/info.txt"
  df -h "$work" | fence
  # Every other section runs --backend gpu, which takes any adapter: say
  # loudly when the one found is not a hardware GPU, with what Vulkan saw.
  if grep -q "^auto picks: the CPU backend" "$work/info.txt"; then
    say
    say "**WARNING: no hardware GPU adapter: $([ "$no_gpu" = 1 ] && echo "the GPU sections are skipped" || echo "the figures below are not the GPU's").**"
    {
      echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
      ls -l /usr/local/nvidia/share/vulkan/icd.d 2>&1 || true
      ldconfig -p 2>/dev/null | grep -E 'libvulkan|libGLX_nvidia|libnvidia-glcore' || echo "(no Vulkan loader or NVIDIA GL libraries in ldconfig)"
    } | fence
  fi
}

# Criterion's lines to a table: op, backend, GB/s, and the share of the
# streaming reference at the same size.
kernel_table() {
  awk '
    /^kernels\// { split($1, id, "/"); size = id[2]; op = id[3]; label = id[4]; next }
    /thrpt:/ && op != "" {
      v = $4; unit = $5
      if (unit ~ /^MB/) v /= 1000; else if (unit ~ /^KB/) v /= 1e6; else if (unit ~ /^TB/) v *= 1000
      key = size "/" label; gbs[size "/" op "/" label] = v; order[++n] = size "/" op "/" label
      if (op == "stream") ref[key] = v
      op = ""
    }
    END {
      print "| size | op | backend | GB/s | share of stream |"
      print "| --- | --- | --- | --- | --- |"
      for (i = 1; i <= n; i++) {
        split(order[i], k, "/"); r = ref[k[1] "/" k[3]]
        share = (r > 0) ? sprintf("%.0f %%", 100 * gbs[order[i]] / r) : "-"
        printf "| %s | %s | %s | %.2f | %s |\n", k[1], k[2], k[3], gbs[order[i]], share
      }
    }'
}

section_kernels() {
  say "## Kernels (GPU timestamps; throughput counts one RGBA8 frame read + one written; stream = a kernel that only copies)"
  if ! command -v kernels >/dev/null; then
    say "(no kernels bench executable: stage with scripts/stage-gpu.sh)"
    return 0
  fi
  local raw="$out_dir/kernels.txt"
  if ! FRAMEPIPE_BENCH_BACKENDS=${KERNEL_BACKENDS:-gpu,cpu} FRAMEPIPE_BENCH_SIZES=${KERNEL_SIZES:-1080p,4k,8k} \
    timeout "${KERNELS_S:-300}" kernels --bench --noplot >"$raw" 2>&1; then
    tail -20 "$raw" | fence
    return 1
  fi
  kernel_table <"$raw" >"$work/kernels.md"
  if ! grep -q '| gpu' "$work/kernels.md"; then
    # No GPU case ran (the bench skips software adapters under `gpu`): say why.
    tail -20 "$raw" | fence
    return 1
  fi
  cat "$work/kernels.md" >&3
  say
  grep -E '^kernels/|time:|thrpt:' "$raw" | fence
}

section_decode() {
  say "## PNG decode per frame (CPU, one thread; criterion \`decode\`)"
  FRAMEPIPE_BENCH_SIZE=$size decode --bench --noplot 2>&1 | grep -E '^decode/|time:|thrpt:' | fence
}

# Three runs of one `framepipe process` command (its --json added per
# run): single runs of the same command varied by about 10 % from call to
# call on the H100 machine, so ratios are read between medians. Leaves
# NAME.json (the first run's report, for its peaks), NAME-fps (the median
# frames/s) and NAME-runs (all three) in $work; the command's output of
# the last run on stdout; a failed run's last lines go to the report.
median_fps() {
  local name=$1 i runs=()
  shift
  for i in 1 2 3; do
    if ! "$@" --json "$work/$name-$i.json" 2>"$work/$name.log"; then
      tail -5 "$work/$name.log" | fence
      return 1
    fi
    runs+=("$(printf '%.2f' "$(field fps "$work/$name-$i.json")")")
  done
  cp "$work/$name-1.json" "$work/$name.json"
  echo "${runs[*]}" >"$work/$name-runs"
  printf '%s\n' "${runs[@]}" | sort -g | sed -n 2p >"$work/$name-fps"
  tail -1 "$work/$name.log"
}

# What a folder's file system writes with a sync at the end (1 GiB, dd).
sync_speed() {
  local f="$1/.sync-speed"
  dd if=/dev/zero of="$f" bs=16M count=64 conv=fsync 2>&1 | tail -1 | sed 's/.*, //'
  rm -f "$f"
}

section_pipeline() {
  sequence
  say "## Pipeline: $frames frames of $size PNG, color matrix + Gaussian sigma 4, PNG out (3 runs each, medians)"
  rm -rf "$work/noop" "$work/graded"
  median_fps noop framepipe process "$work/seq/seq_%04d.png" -o "$work/noop/o_%04d.png" --backend gpu \
    --overwrite --vram-budget "$budget" >/dev/null
  median_fps graded framepipe process "$work/seq/seq_%04d.png" -o "$work/graded/o_%04d.png" --matrix "$matrix" --blur 4 \
    --backend gpu --overwrite --vram-budget "$budget" --timeline "$work/timeline.svg" | fence
  local noop graded run
  noop=$(cat "$work/noop-fps")
  graded=$(cat "$work/graded-fps")
  for run in noop graded; do
    say "$(awk "BEGIN { printf \"- $run: peak VRAM (ledger) %.1f MiB, peak host RSS %.1f MiB (first run)\", $(field vram_peak "$work/$run.json") / 1048576, $(field rss_peak "$work/$run.json") / 1048576 }")"
  done
  say "- runs, frames/s: decode+encode only $(cat "$work/noop-runs"); pipelined $(cat "$work/graded-runs")"
  say "$(awk "BEGIN { printf \"- decode+encode only: %.2f frames/s; pipelined color+blur (auto pool): %.2f frames/s; ratio %.1f %% (target >= 90 %%)\", $noop, $graded, 100 * $graded / $noop }")"
  cp "$work/timeline.svg" "$out_dir/timeline-$size-png.svg"
  # Only the reports are read later: the frames would fill the disk.
  rm -rf "$work/noop" "$work/graded"
}

# Median frames/s per pool size from a bench-pool CSV, against `noop`.
pool_ratios() {
  local csv=$1 noop=$2
  say
  say "| pool | median frames/s | pipelined / decode+encode only |"
  say "| --- | --- | --- |"
  tail -n +2 "$csv" | sort -t, -k1,1 -k6,6g | awk -F, -v noop="$noop" '
    { v[$1] = v[$1] " " $6; n[$1]++; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
    END { for (i = 1; i <= k; i++) { p = order[i]; split(substr(v[p], 2), a, " "); m = a[int((n[p] + 1) / 2)]
      printf "| %s | %.2f | %s |\n", p, m, (noop > 0) ? sprintf("%.1f %%", 100 * m / noop) : "-" } }' >&3
}

section_pool_png() {
  sequence
  local noop=0
  [ -e "$work/noop-fps" ] && noop=$(cat "$work/noop-fps")
  say "## bench-pool, PNG out"
  timeout "${POOL_S:-450}" framepipe bench-pool "$work/seq/seq_%04d.png" --pools 1,2,4,8,auto --repeat 3 --overwrite --matrix "$matrix" --blur 4 \
    --backend gpu --budget "$budget" \
    --csv "$out_dir/bench-pool-png.csv" --chart "$out_dir/bench-pool-png.svg" 2>&1 | fence
  pool_ratios "$out_dir/bench-pool-png.csv" "$noop"
}

section_pool_tif() {
  sequence
  # Uncompressed TIFF: the fast codec here (1080p on one core: decode 9 ms
  # and encode 15 ms, against 19 and 26 for PNG and 24 and 31 for QOI),
  # so the GPU's share of the work is larger and the pool size matters more.
  say "## bench-pool, uncompressed TIFF in and out (a fast codec: the GPU share is larger)"
  rm -rf "$work/tif"
  framepipe process "$work/seq/seq_%04d.png" -o "$work/tif/seq_%04d.tif" -q --backend cpu
  # Each output is synced before its rename: 8K TIFF writes 6 GB per run,
  # and a disk slower than the codecs measures the disk. SCRATCH (e.g. a
  # tmpfs, /dev/shm/framepipe) takes this section's outputs instead.
  local scratch=${SCRATCH:-} need_kb
  if [ -z "$scratch" ]; then
    # A tmpfs where it has room for a run's outputs (twice the inputs,
    # which are the same size), else the work folder.
    scratch=$work
    need_kb=$(( $(du -sk "$work/tif" | cut -f1) * 2 ))
    if [ "$(df --output=avail -k /dev/shm 2>/dev/null | tail -1)" -gt "$need_kb" ] 2>/dev/null; then
      scratch=/dev/shm/framepipe
    fi
  fi
  mkdir -p "$scratch"
  # What a run cut short (a failure, the time limit) left there: on a tmpfs
  # that is memory, taken from the next runs.
  rm -rf "$scratch/tif-noop" "$scratch"/framepipe-bench-*
  say "outputs under $scratch ($(df --output=fstype "$scratch" | tail -1)), which takes $(sync_speed "$scratch") written with a sync"
  say
  rm -rf "$scratch/tif-noop"
  median_fps tif-noop framepipe process "$work/tif/seq_%04d.tif" -o "$scratch/tif-noop/o_%04d.tif" --backend gpu --overwrite \
    --vram-budget "$budget" >/dev/null
  say "decode+encode only, 3 runs: $(cat "$work/tif-noop-runs") frames/s"
  rm -rf "$scratch/tif-noop"
  TMPDIR=$scratch timeout "${POOL_S:-450}" framepipe bench-pool "$work/tif/seq_%04d.tif" --format tif --pools 1,2,4,8,auto --repeat 3 --overwrite --matrix "$matrix" --blur 4 \
    --backend gpu --budget "$budget" \
    --csv "$out_dir/bench-pool-tif.csv" --chart "$out_dir/bench-pool-tif.svg" 2>&1 | fence
  rm -rf "$scratch"/framepipe-bench-*
  pool_ratios "$out_dir/bench-pool-tif.csv" "$(cat "$work/tif-noop-fps")"
}

section_cache() {
  command -v cache >/dev/null || { say "(no cache bench executable)"; return 0; }
  say "## Preview cache (criterion, $size sources, 1/4 previews)"
  if ! FRAMEPIPE_BENCH_SIZE=$size FRAMEPIPE_BENCH_BACKEND=gpu timeout "${CACHE_S:-150}" cache --bench --noplot >"$work/cache.txt" 2>&1; then
    tail -10 "$work/cache.txt" | fence
    return 1
  fi
  grep -E '^preview/|time:' "$work/cache.txt" | fence
}

section_editor() {
  # Not `command -v editor`: Debian's /usr/bin/editor is a text editor.
  local editor_bin= e
  for e in .device/extra/editor target/release/examples/editor; do
    if [ -x "$e" ]; then editor_bin=$e; break; fi
  done
  [ -n "$editor_bin" ] || { say "(no editor example: stage with scripts/stage-gpu.sh)"; return 0; }
  sequence
  # Once per prefetch thread count (0: the engine's default, half the
  # cores; 1: one thread, as before f770c49), back to back, for the ratio.
  # The example prints its own "## Editor session" heading, with the count.
  # Every request's time and split goes beside the report as CSV.
  local threads run=0 csv
  for threads in ${PREFETCH_THREADS:-0 1}; do
    run=$((run + 1))
    csv="$out_dir/editor-requests-$run-prefetch-threads-$threads.csv"
    rm -f "$csv"
    if ! timeout "${EDITOR_S:-240}" "$editor_bin" --input "$work/seq/seq_%04d.png" --backend gpu --budget "$budget" \
      --prefetch-threads "$threads" --requests "$csv" >&3 2>"$work/editor.log"; then
      tail -5 "$work/editor.log" | fence
      return 1
    fi
  done
}

say "# framepipe GPU report"
say
listed=${sections//,/ }
listed=${listed# }
say "date $(date -u +%FT%TZ), commit $commit, $(nproc) cores, budget $budget, sections ${listed% }"
say
# `pool` is both sweeps; `pool_png` and `pool_tif` each alone (a call
# each, where a longer sequence would not fit one call's 10 minutes).
sections=${sections//,pool,/,pool_png,pool_tif,}
for s in info kernels decode pipeline pool_png pool_tif cache editor; do
  section "$s"
done
echo "wrote $report" >&2
