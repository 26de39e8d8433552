#!/usr/bin/env bash
# Usage: bash results/cv19_seg8/carry.sh save|restore  (see ../cv19/carry_arm.sh)
exec bash "$(dirname "$0")/../cv19/carry_arm.sh" cv19_seg8 "$@"
