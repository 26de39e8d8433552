#!/usr/bin/env bash
# One fold of a declared CV arm on the 19 cases (results/ARM/PLAN.md), alone on the machine; then its
# tables and training logs copied to results/ARM (commit them after each fold). The arm's recipe is
# results/ARM/overrides: one `section.key=value` per line, passed as --set (lite's defaults otherwise),
# or a compare option (a line starting with --, e.g. `--peer-loss dice`), passed as it is.
#   bash results/cv19/run_arm.sh ARM F      (F = 0..4; the run folder is runs/ARM)
set -euo pipefail
arm=${1:?usage: run_arm.sh ARM FOLD}
fold=${2:?usage: run_arm.sh ARM FOLD}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
here=results/$arm
out=runs/$arm
m2cofs=${M2COFS:-.venv/bin/m2cofs}
sets=()
while read -r line; do
  [ -z "$line" ] || [ "${line#\#}" != "$line" ] && continue
  if [ "${line#--}" != "$line" ]; then read -ra flag <<< "$line"; sets+=("${flag[@]}"); else sets+=(--set "$line"); fi
done < "$here/overrides"
"$m2cofs" compare --data ../shared/data --out "$out" --folds 5 --fold "$fold" \
    --methods m2cofs,specialists,classical,copy,segresnet --no-progress \
    --set train.time_budget_minutes=8 ${sets[@]+"${sets[@]}"}
python3 - "$out/folds.json" <<'PY'
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
