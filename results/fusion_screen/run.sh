#!/usr/bin/env bash
# Scratch screen (not shipped): θF retention vs the fusion loop's learning rate and steps.
# Stage 0 from runs/loso_fastssim (trained on brats2018's 14 cases); Stage I fusion only (the segmentation
# loop gets 1 epoch cap via epochs... see below); θF predicted and scored on LOSO's 5 held-out cases.
set -euo pipefail
cd "$(dirname "$0")/../.."
M=.venv/bin/m2cofs
TEST=brats2013_pat0003,brats2013_pat0004,brats2013_pat0005,brats2013_pat0006,TCGA-FG-6692
TRAIN=$(python3 -c "import json;print(','.join(json.load(open('runs/loso_fastssim/fold0/m2cofs/run.json'))['cases']))")
for cfg in "$@"; do   # cfg = LR:EPOCHS
  IFS=: read -r lr ep ret <<< "$cfg"; ret=${ret:-1.0}; name=lr${lr}_ep${ep}; [ "$ret" = 1.0 ] || name=${name}_ret$ret; d=runs/fscreen/$name
  [ -e "$d/eval/summary.json" ] && { echo "skip $name"; continue; }
  rm -rf "$d"; mkdir -p "$d/run/stages"
  cp runs/loso_fastssim/fold0/m2cofs/stages/stage0_autoencoder.safetensors "$d/run/stages/"
  echo "== $name start $(date -u +%H:%M:%S)"
  $M train --data ../shared/data --out "$d/run" --include "$TRAIN" --modalities t1ce,flair --stages 0,1 \
     --cache-dir runs/loso_fastssim/cache --no-progress --set train.lr=$lr --set train.fusion_retention=$ret \
     --set train.epochs.stage1_fusion=$ep --set train.epochs.stage1_segmentation=1 > "$d/train.log" 2>&1 || { echo "train failed"; tail "$d/train.log"; exit 1; }
  $M predict --model "$d/run/fusion_specialist.ckpt" --input ../shared/data --ids $TEST --out "$d/pred" --no-progress --no-preview > "$d/pred.log" 2>&1 || { echo pred failed; tail "$d/pred.log"; exit 1; }
  $M evaluate --pred "$d/pred" --data ../shared/data --out "$d/eval" --mode volume --modalities t1ce,flair --quiet > "$d/eval.log" 2>&1 || { echo eval failed; tail "$d/eval.log"; exit 1; }
  echo "== $name done $(date -u +%H:%M:%S)"
done
