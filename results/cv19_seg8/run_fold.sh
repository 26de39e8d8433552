#!/usr/bin/env bash
# One fold of the CV declared in PLAN.md (its recipe: ./overrides), alone on the machine.
# Usage: bash results/cv19_seg8/run_fold.sh F  (F = 0..4)
exec bash "$(dirname "$0")/../cv19/run_arm.sh" cv19_seg8 "$@"
