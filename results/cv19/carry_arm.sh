#!/usr/bin/env bash
# Carry a CV arm's finished folds between machines: the compare reads a fold it does not run from
# runs/ARM/fold<F>/eval/<method>/metrics.csv, which a new machine lacks.
#   bash results/cv19/carry_arm.sh ARM save      # runs/ARM -> results/ARM/evals (commit it)
#   bash results/cv19/carry_arm.sh ARM restore   # results/ARM/evals -> runs/ARM (before the next fold)
set -euo pipefail
arm=${1:?usage: carry_arm.sh ARM save|restore}
cd "$(dirname "$0")/../.."
run=runs/$arm
keep=results/$arm/evals
case "${2:-}" in
  save)
    for f in "$run"/fold*/eval/*/metrics.csv "$run"/fold*/m2cofs/summary.json; do
      [ -e "$f" ] || continue
      rel=${f#"$run"/}
      mkdir -p "$keep/$(dirname "$rel")"
      cp "$f" "$keep/$rel"
    done
    cp "$run/folds.json" "$keep/folds.json"
    echo "saved $(find "$keep" -name metrics.csv | wc -l) metrics files to $keep" ;;
  restore)
    mkdir -p "$run"
    cp -rn "$keep"/. "$run"/
    echo "restored $(find "$keep" -name metrics.csv | wc -l) metrics files into $run" ;;
  *) echo "usage: carry_arm.sh ARM save|restore" >&2; exit 2 ;;
esac
