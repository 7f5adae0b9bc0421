"""Every prompt token unchanged in every output: the bench's prompts (held-out:32:256), 256 samples per sampler."""
import torch, lsdd
from lsdd.cli.common import PromptSpec
model = lsdd.load_model("text-absorb")
cond = PromptSpec("held-out:32:256").condition(model)
given = cond.given
P = given.shape[0]
for name, smp in [("euler8", lsdd.Sampler.euler(8)), ("spread8", lsdd.Sampler.spread(8)),
                  ("spread16", lsdd.Sampler.spread(16)), ("spread8-B32", lsdd.Sampler.spread(8).replace(block=32))]:
    out = lsdd.sample(model, smp, num=256, seed=0, fixed=given, batch_size=128, progress=False)
    x = out.x
    g = given[torch.arange(x.shape[0]) % P]
    held = g != model.graph.num_tokens
    ok = bool((x[held] == g[held]).all())
    print(f"{name}: {int(held.sum())} prompt tokens over {x.shape[0]} samples, all unchanged: {ok}; "
          f"masks left {int((x == model.graph.mask_id).sum())}; NFE {out.nfe}")
