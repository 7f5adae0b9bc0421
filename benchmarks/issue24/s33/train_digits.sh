#!/bin/bash
export OMP_NUM_THREADS=1
cd /work/main
{ time .venv/bin/lsdd train --out runs/digits32/digits-uniform-d01 --resume --threads 1 ; } > runs/s33/train_digits.log 2>&1
