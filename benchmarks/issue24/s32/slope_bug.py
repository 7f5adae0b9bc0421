import torch, lsdd
from lsdd.distillation.distill import DistillConfig, DistillResult, _result_from_flat, discrete_options
from lsdd.distillation.objective import FeatureObjective
from lsdd.distillation.validate import frontier_slope, SLOPE_TEMPERATURES
from lsdd.sampling.samplers import tempered_score, sample_batched
from lsdd.sampling.loop import CountedScore
from lsdd.sampling.draws import derive_seed
model = lsdd.load_model("text-absorb")
cfg = DistillConfig(method="lsd-c", nfe=2).resolve(model.graph)
times = cfg.student_times(); opt = discrete_options(cfg, model.graph)[0]
start = torch.zeros(2 * cfg.basis, dtype=torch.float64); coeffs, cond = _result_from_flat(start, cfg)
smp = DistillResult(times, coeffs, conditioning=cond, movers=opt[0], final=opt[1]).sampler(cfg)
feat = FeatureObjective(model.score_fn, model.graph, model.noise, torch.zeros(4, model.length, dtype=torch.long), seed=derive_seed(0, 14), batch_size=64)
call = CountedScore(model.score_fn, model.graph, model.noise)
seed = derive_seed(0, 11)
for name, mk in [("fit (tempered CountedScore)", lambda t: tempered_score(call, t)), ("raw", lambda t: tempered_score(model.score_fn, t))]:
    f = []
    for t in SLOPE_TEMPERATURES:
        x = sample_batched(mk(t), model.graph, model.noise, times, 256, model.length, batch_size=64, seed=seed, **smp.loop_args(model.graph)).x
        f.append(feat.features(x))
    dn = float(f[1][:, 0].mean() - f[0][:, 0].mean()); dh = float(f[1][:, 1].mean() - f[0][:, 1].mean())
    print(f"{name}: dN {dn:.4f} dH {dh:.4f} slope {frontier_slope(dn, dh):.3f} H {float(f[0][:,1].mean()):.3f} N {float(f[0][:,0].mean()):.3f}", flush=True)
print(model.noise, model.noise.total(torch.tensor(1.0)), model.noise.total(model.noise.total(torch.tensor(1.0))))
