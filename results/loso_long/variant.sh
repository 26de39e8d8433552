#!/bin/bash
# Stage III alone from part 1's Stage I/II results (results/loso_long/PLAN.md), then predict + evaluate: variant.sh NAME [--set K=V ...]
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repository root
M=.venv/bin/m2cofs
IDS=brats2013_pat0003,brats2013_pat0004,brats2013_pat0005,brats2013_pat0006,TCGA-FG-6692
NAME=$1; shift
OUT=runs/loso_long_$NAME
mkdir -p $OUT/stages
for s in stage0_autoencoder stage1_fusion stage1_segmentation stage2_seg_to_fusion stage2_fusion_to_seg; do
  cp -n runs/loso_long/fold0/m2cofs/stages/$s.safetensors $OUT/stages/; done
echo "start $(date -u +%H:%M:%S)"
$M train --data ../shared/data --modalities t1ce,flair --exclude $IDS --out $OUT --stages 3 --time-budget 15 "$@" --no-progress
$M predict --model $OUT/unified.ckpt --input ../shared/data --ids $IDS --out $OUT/pred --no-preview --no-progress
$M evaluate --pred $OUT/pred --data ../shared/data --out $OUT/eval --mode volume --metrics seg,paper --no-report
echo "end $(date -u +%H:%M:%S)"
