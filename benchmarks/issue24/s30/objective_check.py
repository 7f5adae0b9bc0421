"""nll@entropy+mmd, calibrated on spread movers at 4 NFE (text-absorb), scoring fitted samplers on one seed: it prefers
the stop-28 features fit (its Phi + beta point) to spread movers. Run from the repository root."""
import torch, lsdd
from lsdd.distillation.objective import make_objective
from lsdd.models.features import hidden_states
torch.set_num_threads(1)
m = lsdd.load_model("text-absorb")
c = torch.load("runs/teachers_auto/teacher_b3ae57f1b3d5299e_exact_m16_n256_s0_e1e-05_scores.pt", weights_only=False)
tgt = c["x_0"].long()[:192]
obj = make_objective("nll@entropy+mmd", score_fn=m.score_fn, graph=m.graph, noise=m.noise, target=tgt, seed=7,
                     batch_size=128, hidden_fn=hidden_states(m))
J = obj.terms[0]
sp = lsdd.Sampler.spread(4)
draw = lambda s: lsdd.sample(m, s, num=256, seed=11, batch_size=128).x
print("slope", J.calibrate_slope(draw(sp.with_temperature(0.97)), draw(sp.with_temperature(1.03))))
x0 = draw(sp)
print("noise", obj.calibrate(x0, 200, 0))
f4 = lsdd.Sampler.load("benchmarks/issue24/s30/lsdc_feat4.json")
rows = [("spread", x0), ("feat4 phi+beta", draw(f4.replace(conditioning={**f4.conditioning, "slope": [0.0]*4}))),
        ("feat4 full", draw(f4)), ("fm_noslope", draw(lsdd.Sampler.load("benchmarks/issue24/ta4_fm_noslope.json"))),
        ("spread T0.98", draw(sp.with_temperature(0.98)))]
for name, x in rows:
    stat, total, n = J.pooled_stat(x)
    jv = stat(torch.arange(n), torch.arange(n, total))
    mm = obj.terms[1](x)
    print(f"{name:16s} J {jv:.4f}  mmd {mm*1e3:.4f}e-3  combined {obj(x):.3f}", flush=True)
