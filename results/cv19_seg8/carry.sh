#!/usr/bin/env bash
# Carry finished folds between machines: the compare reads a fold it does not run from
# runs/cv19_seg8/fold<F>/eval/<method>/metrics.csv, which a new machine lacks.
#   bash results/cv19_seg8/carry.sh save      # runs/cv19_seg8 -> results/cv19_seg8/evals (commit it)
#   bash results/cv19_seg8/carry.sh restore   # results/cv19_seg8/evals -> runs/cv19_seg8 (before the next fold)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
run=runs/cv19_seg8
keep="$here/evals"
case "${1:-}" in
  save)
    for ev in "$run"/fold*/eval/*/metrics.csv; do
      [ -e "$ev" ] || continue
      rel=${ev#"$run"/}
      mkdir -p "$keep/$(dirname "$rel")"
      cp "$ev" "$keep/$rel"
    done
    for s in "$run"/fold*/m2cofs/summary.json; do
      [ -e "$s" ] || continue
      rel=${s#"$run"/}
      mkdir -p "$keep/$(dirname "$rel")"
      cp "$s" "$keep/$rel"
    done
    cp "$run/folds.json" "$keep/folds.json"
    echo "saved $(find "$keep" -name metrics.csv | wc -l) metrics files to $keep" ;;
  restore)
    mkdir -p "$run"
    cp -rn "$keep"/. "$run"/
    echo "restored $(find "$keep" -name metrics.csv | wc -l) metrics files into $run" ;;
  *) echo "usage: carry.sh save|restore" >&2; exit 2 ;;
esac
