#!/usr/bin/env bash
# Mounts tracefs and bpffs when a fresh machine has them unmounted (DESIGN.md §2). Idempotent and quiet.
set -euo pipefail
mounted() { awk -v t="$1" '{ split($0, a, " - "); split(a[2], b, " "); if (b[1] == t) found=1 } END { exit !found }' /proc/self/mountinfo; }
if [[ $(id -u) -eq 0 ]]; then
  mounted tracefs || mount -t tracefs tracefs /sys/kernel/tracing
  mounted bpf || mount -t bpf bpf /sys/fs/bpf
fi
