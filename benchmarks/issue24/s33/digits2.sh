#!/bin/bash
# digits-uniform (dropout-0.1 run, 14000 steps): lsd-c at 8 NFE (its 1024-step teacher run doubles as the teacher's
# FID set), then FID over 4 sampling seeds
export OMP_NUM_THREADS=1
cd /work/main/runs/s33
P=../../.venv/bin/python
M=../digits32/digits-uniform-d01
N=8
rm -f dg${N}.json.ckpt
{ time ../../.venv/bin/lsdd distill --model $M --nfe $N --choose --objective nll@entropy+mmd-guard --teacher-nfe 1024 --batch-size 128 --teacher-cache ../teachers --out dg${N}.json ; } > dg${N}.log 2>&1
$P - <<'PY'
import glob, numpy as np, lsdd
from lsdd.distillation.teacher import load_cached
fp = lsdd.load_model("../digits32/digits-uniform-d01").fingerprint
path, = [f for f in glob.glob(f"../teachers/teacher_{fp}_euler_1024_m8_*") if "ckpt" not in f]
c = load_cached(path, 8)
np.save("dgT_cache.npy", c.x_0.numpy()); np.save("dgT_a.npy", c.x_0[:128].numpy()); np.save("dgT_b.npy", c.x_0[128:].numpy())
print(path, c.x_0.shape)
PY
L=dg${N}.json
if [ -n "$(python3 -c "import json; print(json.load(open('dg${N}.json'))['provenance'].get('rejected_learned') or '')")" ]; then
  $P ../s32/extract_rejected.py dg${N}.json dg${N}_learned.json && L=dg${N}_learned.json
fi
{ time $P ../../benchmarks/issue24/digits_seeds.py --model $M --nfe $N --samplers euler spread $L --seeds 1 2 3 4 --teacher-sets dgT_cache.npy --json dg${N}_fid.json ; } > dg${N}_fid.log 2>&1
