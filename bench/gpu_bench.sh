#!/usr/bin/env bash
# The GPU benchmark of issue #3 on a machine with a hardware GPU (e.g. the H100 of the `device`
# tool), from a release binary built elsewhere. Writes one JSON line per case to $OUT (or ./out).
#
# Preparation on the build machine (the binary is too large to travel unpacked):
#   cargo build --release --bin fenestra
#   mkdir -p .gpu && strip -o .gpu/fenestra target/release/fenestra && xz -T2 -6 -f .gpu/fenestra
#   echo /.gpu/ >> .git/info/exclude      # and the Vulkan loader .debs as the device README says
# Then, in the device call (carry .gpu and .gl):
#   bash bench/gpu_bench.sh
# Not yet run on a hardware GPU: no device was lent when it was written.
set -euo pipefail
out="${OUT:-./out}"
mkdir -p "$out"
if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
bin=.gpu/fenestra
[ -x "$bin" ] || { xz -dkf .gpu/fenestra.xz; chmod +x "$bin"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1 || true
events="${EVENTS:-100000000}"
for window in tumble:1s hop:10s:1s; do
    for zipf in 0 1.1; do
        for backend in gpu cpu; do
            "$bin" bench --backend "$backend" --events "$events" --window "$window" --zipf "$zipf" --json \
                >> "$out/bench.jsonl" 2>> "$out/stderr.txt"
        done
    done
done
cat "$out/bench.jsonl"
