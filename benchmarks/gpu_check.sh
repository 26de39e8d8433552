#!/usr/bin/env bash
# The whole GPU path of m2cofs in under 5 minutes: a few AMP training steps of every lite stage,
# a full 240×240×155 prediction, throughput and peak memory, the card's name.
#   bash benchmarks/gpu_check.sh            (needs a CUDA GPU and the package installed)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python}"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi
exec timeout 300 "$py" "$here/gpu_check.py" "$@"
