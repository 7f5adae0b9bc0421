"""Does the `network` objective see what FID sees on digits? Its distance (lsdd.distillation.objective.NetworkObjective)
from few-step samplers' outputs to the 1024-step teacher's, on three sampling seeds, beside the permutation p-value.

    python benchmarks/issue24/s30/network_rank_digits.py   (from the repository root; the model and teacher run of stop 29)
"""
import torch

import lsdd
from lsdd.distillation.objective import NetworkObjective
from lsdd.models.features import hidden_states

torch.set_num_threads(1)
m = lsdd.load_model("runs/digits24/digits-uniform-s16000")
run = torch.load("runs/teachers/teacher_7d65f8431a3e611e_euler_1024_m16_n256_b128_s0_e1e-05_scores.pt",
                 weights_only=False)
teacher = run["x_0"].long()
obj = NetworkObjective(hidden_states(m), m.noise, teacher[:192], batch_size=128)
print(f"{'sampler':12s} " + " ".join(f"seed {s}: distance (p)" for s in (1, 2, 3)))
d, p = obj.test(teacher[192:], permutations=100)
print(f"{'teacher (64 held out)':12s} {d:.3f} ({p:.2f})")
for name, sampler in (("euler 8", lsdd.Sampler.euler(8)), ("spread 8", lsdd.Sampler.spread(8)),
                      ("euler 16", lsdd.Sampler.euler(16)), ("spread 16", lsdd.Sampler.spread(16))):
    cells = []
    for seed in (1, 2, 3):
        d, p = obj.test(lsdd.sample(m, sampler, num=256, seed=seed, batch_size=128).x, permutations=100)
        cells.append(f"{d:.3f} ({p:.2f})")
    print(f"{name:12s} " + "   ".join(cells), flush=True)
