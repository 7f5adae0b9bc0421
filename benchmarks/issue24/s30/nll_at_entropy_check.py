"""Model NLL bound (4 noise levels) and unigram entropy of spread movers swept in temperature and of fitted 4-NFE
samplers on text-absorb (512 samples, seed 1): the NLL at matched entropy ranks them as gen PPL at matched entropy does.
Run from the repository root."""
import torch, lsdd
from lsdd.distillation.statistics import model_nll, unigram_entropy
torch.set_num_threads(1)
m = lsdd.load_model("text-absorb")
S = m.graph.num_states
f4 = lsdd.Sampler.load("benchmarks/issue24/s30/lsdc_feat4.json")
f4pb = f4.replace(conditioning={**f4.conditioning, "slope": [0.0] * 4})
rows = [(f"spread T{t}", lsdd.Sampler.spread(4).with_temperature(t)) for t in (0.97, 0.98, 0.99, 1.0, 1.01)]
rows += [("feat4 full", f4), ("feat4 phi+beta", f4pb), ("fm_noslope", lsdd.Sampler.load("benchmarks/issue24/ta4_fm_noslope.json")),
         ("net", lsdd.Sampler.load("benchmarks/issue24/s30/ta4_net.json"))]
for name, s in rows:
    x = lsdd.sample(m, s, num=512, seed=1, batch_size=128).x
    nll = model_nll(m.score_fn, m.graph, m.noise, x, num_times=4, seed=5, batch_size=128)
    h = unigram_entropy(x, S)
    print(f"{name:16s} NLL {float(nll.mean()):.4f}  H {float(h.mean()):.4f}", flush=True)
