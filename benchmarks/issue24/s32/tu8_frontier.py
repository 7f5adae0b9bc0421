"""text-uniform 8 NFE: the model NLL bound vs unigram entropy along Euler's value-temperature frontier (validation's
draws and bound, the same streams), beside the rejected nll@entropy+mmd-guard fit. Is the first-order line right?"""
import torch, lsdd
from lsdd.distillation.distill import DistillConfig, base_sampler
from lsdd.distillation.statistics import model_nll, unigram_entropy
from lsdd.sampling.samplers import sample_batched, tempered_score
from lsdd.sampling.draws import derive_seed
model = lsdd.load_model("text-uniform")
cfg = DistillConfig(method="lsd-c", nfe=8, choose=True).resolve(model.graph)
base = base_sampler(cfg); learned = lsdd.Sampler.load("runs/s32/tu8_nllHg_learned.json")
common = dict(batch_size=cfg.batch_size, seed=derive_seed(0, 9))
def row(fn, smp, name):
    x = sample_batched(fn, model.graph, model.noise, smp.times_tensor(), 512, model.length, **common, **smp.loop_args(model.graph)).x
    n = model_nll(model.score_fn, model.graph, model.noise, x, seed=derive_seed(0, 10), batch_size=cfg.batch_size)
    h = unigram_entropy(x, model.graph.num_states)
    print(f"{name:>10}: H {float(h.mean()):.4f}  NLL {float(n.mean()):.4f}", flush=True)
with torch.no_grad():
    row(model.score_fn, learned, "learned")
    for t in (1.03, 1.0, 0.97, 0.94, 0.91):
        row(tempered_score(model.score_fn, t), base, f"euler T={t}")
