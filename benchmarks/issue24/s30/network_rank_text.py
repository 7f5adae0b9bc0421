"""The network distance (NetworkObjective) of spread movers at three temperatures and of Euler, at 2/4/8 NFE, to the exact
teacher's outputs on text-absorb: it is smallest at T = 1 (sharpening does not game it). Run from the repository root."""
import torch, lsdd
from lsdd.distillation.statistics import unigram_entropy
from lsdd.distillation.objective import NetworkObjective
from lsdd.models.features import hidden_states
torch.set_num_threads(1)
m = lsdd.load_model("text-absorb")
c = torch.load("runs/teachers_auto/teacher_b3ae57f1b3d5299e_exact_m16_n256_s0_e1e-05_scores.pt", weights_only=False)
T = c["x_0"].long()
tgt, held = T[:192], T[192:]
obj = NetworkObjective(hidden_states(m), m.noise, tgt, batch_size=64)
def rep(name, x):
    d, p = obj.test(x, permutations=100, seed=0)
    print(f"{name:18s} ED {d:.4f} p {p:.3f} H {float(unigram_entropy(x, m.graph.num_states).mean()):.4f}", flush=True)
rep("teacher held 64", held)
for nfe in (2, 4, 8):
    for T_ in (0.9, 1.0, 1.1):
        s = lsdd.Sampler.spread(nfe).with_temperature(T_)
        rep(f"spread{nfe} T{T_}", lsdd.sample(m, s, num=256, seed=1).x)
    rep(f"euler{nfe}", lsdd.sample(m, lsdd.Sampler.euler(nfe), num=256, seed=1).x)
