#!/bin/bash
export OMP_NUM_THREADS=1
L=../../.venv/bin/lsdd
M=../digits24/digits-uniform-30k
for n in 8 16; do
  for v in "euler:" "tweedie:--sampler tweedie" "euler_final:--final-step tweedie" "spread:--spread"; do
    k=${v%%:*}; f=${v#*:}
    $L sample --model $M --nfe $n $f --num 256 --batch-size 256 --seed 1 --quiet --out dg24_${k}_$n.npy
    $L eval --task digits dg24_${k}_$n.npy --json dg24_${k}_$n.eval.json > /dev/null 2>&1
    python3 -c "import json;m=json.load(open('dg24_${k}_$n.eval.json'))['metrics'];print('$k $n', *(f'{x} {m[x]:.4f}' for x in ('fid','recall','precision','class_entropy')))"
  done
done
