#!/usr/bin/env bash
cd "$(dirname "$0")/../.."
for cfg in "$@"; do IFS=: read -r ep p <<< "$cfg"; d=runs/fscreen/lin_ep${ep}_p${p}_lr${LR:-0.001}; rm -rf $d; echo "== $cfg lr ${LR:-0.001} $(date -u +%H:%M:%S)"
  .venv/bin/python results/fusion_screen/linpath.py runs/loso_fastssim/fold0/m2cofs $d/run $ep $p 2>&1 | grep -v "^data" ; done
