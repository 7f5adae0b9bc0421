#!/usr/bin/env bash
# GPU check (issue 6): distill and bench a randomly initialised SEDD-small-shaped network on one GPU and print
# samples/s, NFE/s, peak memory and the sampler's overhead. Sized to finish in about 5 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh            # writes into ${OUT:-gpu_check_out}/ and prints everything
#
# Needs: torch with CUDA, and lsdd importable (pip install -e . or PYTHONPATH=src).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-}:$PWD/src" PYTHONUNBUFFERED=1
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.get_device_name(0))
PY
MODEL="$OUT/sedd-small-random"
python benchmarks/make_random_model.py --preset sedd-small --out "$MODEL"

echo "== tests marked gpu"
python -m pytest -q -m gpu tests 2>&1 | tail -5 || true

echo "== one sampler step vs the forward (V = 50,257, L = 1,024, batch 8, bf16 network)"
python benchmarks/step_overhead.py --device cuda --batch 8 --repeats 10 --out "$OUT/step_overhead_cuda.md"

echo "== sampling: 64 samples x 1,024 tokens, Euler, 64 steps, batch 32, bf16 network"
python - "$MODEL" <<'PY'
import sys, time, torch
from lsdd.models import load_model
from lsdd.sampling.samplers import sample_batched
from lsdd.sampling.schedules import uniform_times
m = load_model(sys.argv[1], "cuda").configure("bf16")
sample_batched(m.score_fn, m.graph, m.noise, uniform_times(2), 32, m.config.length, seed=1, batch_size=32,
               device=m.device)  # warm-up
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
out = sample_batched(m.score_fn, m.graph, m.noise, uniform_times(64), 64, m.config.length, seed=0, batch_size=32,
                     device=m.device)
torch.cuda.synchronize(); dt = time.perf_counter() - t0
print(f"{64 / dt:.2f} samples/s, {64 * out.nfe / dt:.1f} sequence-NFE/s ({out.nfe} calls per sample), "
      f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, {dt:.1f} s")
PY

echo "== distill: LSD at 8 NFE from a 64-step teacher, 32 trajectories, 2 epochs"
python -m lsdd distill --model "$MODEL" --device cuda --nfe 8 --teacher-nfe 64 --num-traj 32 --batch-size 16 \
  --epochs 2 --out "$OUT/lsd8.json" 2>/dev/null | tail -6

echo "== bench: Euler vs LSD at 8 NFE (teacher 64 steps, 32 samples)"
python -m lsdd bench --model "$MODEL" --task tokens --device cuda --nfe 8 --teacher-nfe 64 --num-samples 32 \
  --batch-size 16 --bases euler --methods lsd --epochs 1 --timing-repeats 3 --json "$OUT/bench.json" 2>/dev/null | tail -8
python - "$OUT/bench.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
for r in b["rows"]:
    sps = 1.0 / r["sec_per_sample"]
    print(f"{r['label']:>14} NFE {r['nfe']:>4}: {sps:8.2f} samples/s, {sps * r['nfe']:9.1f} NFE/s per sequence"
          + (f", overhead {r['overhead']:.3f}x" if r.get("overhead") else ""))
PY
