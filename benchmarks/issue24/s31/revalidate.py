"""Re-run `lsdd distill`'s validation (the current rule) for a sampler file it wrote, on the same held-out teacher
outputs: the distillation settings come from the file's provenance, the teacher run from the cache folder the fit
used (it must still be there; nothing is recomputed but the validation). The learned sampler is the one the file
holds, or the rejected one its provenance keeps.

    python benchmarks/issue24/s31/revalidate.py SAMPLER.json --model text-absorb --teacher-cache runs/teachers_auto
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

import torch

from lsdd.distillation.distill import DistillConfig, _given, validate_learned
from lsdd.distillation.teacher import get_teacher
from lsdd.models import load_model
from lsdd.sampling.sampler import Sampler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sampler")
    p.add_argument("--model", required=True)
    p.add_argument("--teacher-cache", required=True)
    p.add_argument("--json", help="write the validation figures here")
    args = p.parse_args()
    smp = Sampler.load(args.sampler)
    prov = smp.provenance
    known = {f.name for f in fields(DistillConfig)}
    cfg = DistillConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in prov["distill_config"].items()
                           if k in known})
    model = load_model(args.model)
    cfg = cfg.resolve(model.graph)
    learned = smp.replace(provenance={})
    if prov.get("rejected_learned"):
        r = prov["rejected_learned"]
        learned = smp.replace(times=tuple(r["times"]), coeffs=tuple(r["coeffs"]), movers=r["movers"],
                              conditioning=r["conditioning"], final=r["final"], provenance={})
    cache, kept = get_teacher(model, cfg.student_times(), cfg.teacher_nfe, cfg.num_traj, method=cfg.base,
                              batch_size=cfg.batch_size, seed=cfg.seed, store=cfg.teacher_store,
                              folder=args.teacher_cache, coupled_seed=cfg.coupling_seed(), progress=False,
                              kind=cfg.teacher_kind)
    print(f"teacher run: {kept}")
    n_train = cache.num - cfg.num_val()
    with torch.no_grad():
        v = validate_learned(model.score_fn, model.graph, model.noise, cache.x_0[n_train:], cfg, learned,
                             model.device, given=_given(cache, n_train))
    old = prov.get("validation") or {}
    print(f"recorded verdict: {'accepted' if old.get('learned_better') else 'rejected'}; "
          f"NLL difference {old.get('nll_diff')} [{old.get('nll_low')}, {old.get('nll_high')}]")
    print(v.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sampler": args.sampler, "validation": v.to_dict(), "recorded": old}, f, indent=1)


if __name__ == "__main__":
    main()
