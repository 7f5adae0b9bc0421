#!/bin/bash
export OMP_NUM_THREADS=1
cd /work/main
{ time .venv/bin/lsdd train --data digits --graph uniform --hidden-size 128 --cond-dim 128 --n-blocks 4 --n-heads 4 --dropout 0.1 --steps 14000 \
    --batch-size 64 --lr 1e-3 --warmup 300 --decay-steps 7000 --ema 0.999 --grad-clip 1.0 --seed 1 --threads 1 \
    --log-every 100 --ckpt-every 500 --out runs/digits32/digits-uniform-d01 ; } > runs/s32/train_digits.log 2>&1
