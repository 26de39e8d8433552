#!/usr/bin/env bash
# One fold of the CV declared in PLAN.md, alone on the machine; then its tables and training logs
# copied here (commit them after each fold). Usage: bash results/cv19_seg8/run_fold.sh F  (F = 0..4)
set -euo pipefail
fold=${1:?usage: run_fold.sh FOLD}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
out=runs/cv19_seg8
m2cofs=${M2COFS:-.venv/bin/m2cofs}
"$m2cofs" compare --data ../shared/data --out "$out" --folds 5 --fold "$fold" \
    --methods m2cofs,specialists,classical,copy,segresnet --no-progress \
    --set train.time_budget_minutes=8 --set model.seg_feature_size=8 --set train.seg_loss=dice \
    --set train.budget_shares.stage0_autoencoder=5 --set train.budget_shares.stage1_fusion=10 \
    --set train.budget_shares.stage1_segmentation=40 --set train.budget_shares.stage2_seg_to_fusion=10 \
    --set train.budget_shares.stage2_fusion_to_seg=15 --set train.budget_shares.stage3_unification=20
cmp "$out/folds.json" results/cv19/folds.json >/dev/null 2>&1 || python3 - "$out/folds.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["folds"]; b = json.load(open("results/cv19/folds.json"))["folds"]
sys.exit(0 if a == b else "the folds differ from results/cv19's")
PY
cp "$out"/results.json "$out"/table_*.md "$out"/table_*.csv "$out"/folds.json "$here/"
logs="$here/logs/fold$fold"
mkdir -p "$logs"
cp "$out/fold$fold"/m2cofs/logs/*.csv "$logs/"
cp "$out/fold$fold/m2cofs/summary.json" "$logs/m2cofs_summary.json"
cp "$out/fold$fold/methods/segresnet/logs/peer_segresnet.csv" "$logs/"
echo "fold $fold done: tables and logs in $here"
