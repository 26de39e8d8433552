#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/../.."
M=.venv/bin/m2cofs
TEST=brats2013_pat0003,brats2013_pat0004,brats2013_pat0005,brats2013_pat0006,TCGA-FG-6692
for cfg in "$@"; do  # EPOCHS:FEATS[:LR]
  IFS=: read -r ep ft lr <<< "$cfg"; lr=${lr:-0.001}; name=headft_ep${ep}_${ft}_lr$lr; d=runs/fscreen/$name
  [ -e "$d/eval/summary.json" ] && { echo "skip $name"; continue; }
  rm -rf "$d"; mkdir -p "$d"
  echo "== $name start $(date -u +%H:%M:%S)"
  .venv/bin/python results/fusion_screen/headft.py runs/loso_fastssim/fold0/m2cofs "$d/run" $ep $ft train.lr=$lr > "$d/train.log" 2>&1 || { echo train failed; tail -n 20 "$d/train.log"; exit 1; }
  $M predict --model "$d/run/unified_headft.ckpt" --input ../shared/data --ids $TEST --out "$d/pred" --no-progress --no-preview --no-trust-check > "$d/pred.log" 2>&1 || { echo pred failed; tail "$d/pred.log"; exit 1; }
  $M evaluate --pred "$d/pred" --data ../shared/data --out "$d/eval" --mode volume --modalities t1ce,flair --quiet --no-report > "$d/eval.log" 2>&1 || { echo eval failed; tail "$d/eval.log"; exit 1; }
  echo "== $name done $(date -u +%H:%M:%S)"
done
