#!/usr/bin/env bash
# Stages everything scripts/gpu-report.sh needs on the NVIDIA machine into
# the git-ignored .device/, small enough for the device tool to carry.
#
#   scripts/stage-gpu.sh
# then the device tool's `run` with carry [".device"], in the two calls
# that scripts/gpu-report.sh's header gives.
#
# It builds the release CLI, the criterion suites and the editor example,
# stages them with ../shared/device/stage, strips the line tables the
# release profile keeps for local profiling (the tool carries 64 MiB at
# most), records the commit (the device machine has no .git), and checks
# that the staged `framepipe` is the CLI.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p "$(git rev-parse --git-dir)/info"
cargo build --release --examples
../shared/device/stage --bench target/release/examples/editor
# The end-to-end criterion suite is not part of the report.
rm -f .device/bin/pipeline
strip .device/bin/* .device/extra/editor
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD || commit="$commit (with uncommitted changes)"
echo "$commit" > .device/extra/COMMIT
.device/bin/framepipe --version >/dev/null
# The report's suites: missing, a call would spend device time without them.
for f in .device/bin/kernels .device/bin/cache .device/extra/editor; do
  [ -x "$f" ] || { echo "error: $f was not staged" >&2; exit 1; }
done
size=$(du -sm .device | cut -f1)
echo "staged .device/: ${size} MiB at $commit"
if [ "$size" -ge 64 ]; then
  echo "error: .device/ is ${size} MiB, over the 64 MiB the device tool carries" >&2
  exit 1
fi
