#!/bin/bash
# issue 24 bench rows on markov and countdown at 4 and 8 NFE: Euler, spread movers (the best training-free rule),
# lsd-c (lsdd distill's default, through validation: what `lsdd distill` writes) and the teacher, every row swept
# in value temperature (--frontier). Run from the repository root:
#   bash benchmarks/issue24/mc_bench.sh markov|countdown [TAG [lsdd bench options...]]
# e.g. `... countdown guard --objective nll@entropy+mmd-guard` writes issue24_countdown_guard.json / .png
set -e
export OMP_NUM_THREADS=1
task=$1
tag=${2:+_$2}
shift
[ $# -gt 0 ] && shift
case "$task" in
  markov) T="--teacher-nfe 1024" ;;
  countdown) T="--teacher exact" ;;
  *) echo "usage: $0 markov|countdown" >&2; exit 2 ;;
esac
lsdd bench --model $task --nfe 4 8 $T --num-samples 512 --batch-size 128 --bases euler --methods spread lsd-c \
  --timing-repeats 0 --no-temperature-control --frontier 0.8 0.9 1.0 1.1 1.25 --teacher-cache runs/teachers \
  --json issue24_$task$tag.json --plot issue24_$task$tag.png --device cpu "$@"
