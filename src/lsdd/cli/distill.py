"""``lsdd distill``: learn an M-step sampler (LSD / LSD+) for a frozen model from an N-step teacher."""

from __future__ import annotations

import argparse

from ..errors import UserError
from .common import (PROMPTS_HELP, Formatter, PromptSpec, add_device_args, add_quiet_arg, check_output, fraction,
                     load_args, positive_int)

DESCRIPTION = """\
Distill a few-step sampler for a frozen score model (Learnable Sampler Distillation, arXiv 2509.19962).

The teacher samples the model's reverse process and records its states and scores at the student's --nfe times:
by default (--teacher auto) exactly, by first hitting, on a masked model whose length L is at most --teacher-nfe
(one network call per token: L + M calls per batch of trajectories, no discretisation error), and otherwise with
--teacher-nfe steps of the base sampler from the noise (--teacher steps forces these). The student runs --nfe steps from a start perturbed in --zeta of its positions
and learns one coefficient Phi_k per step (LSD) - and with --method lsd+ also its own time grid - so that
its scores match the teacher's along the way. The model is never changed. The result is a small JSON file
(a time grid and M coefficients) that `lsdd sample --learned` and `lsdd bench` use at no extra cost.

Phi modes: 'linear' scales the off-diagonal scores (for masked models this only changes how many tokens
are unmasked per step, like a time-grid change); 'log' scales log-scores, i.e. a per-step temperature
on which token is chosen plus a rate change. Losses: 'l2' on the scores (the paper), 'kl' between the
one-step laws the two scores induce (scale-free across steps).
"""

EPILOG = """\
examples:
  lsdd distill --model countdown --nfe 8 --out sampler8.json
  lsdd distill --model countdown --nfe 16 --method lsd --phi-mode linear --loss l2 --out lsd16.json
  lsdd distill --model countdown --nfe 8 --out sampler8.json --resume   # continue an interrupted run
  lsdd sample --model countdown --learned sampler8.json --num 256 --out samples.npy
  lsdd distill --model text-absorb --nfe 8 --prompts held-out:32 --out cont8.json   # for continuations
  lsdd sample --model text-absorb --learned cont8.json --prompt-file prompts.txt --num 64 --out x.npy

  torchrun --nproc-per-node 2 -m lsdd distill --model countdown --nfe 8 --out sampler8.json   # same result

Validation (on by default): --val-frac of the teacher trajectories are held out of training. After training,
the learned sampler and its base (uniform grid or --init-grid, Phi = 1) each draw --val-samples samples at the
same NFE from the same random streams, so sample i of each forms a pair; every figure's difference learned -
base gets a paired bootstrap interval at --val-level (1000 resamples of the pairs and of the held-out outputs,
seeded: the same run gives the same verdict). The NLL is read at matched entropy: the base is also drawn colder
(same streams), at the value temperature where its entropy meets the learned sampler's (located from a probe at
0.94, never closer), s = dNLL/dH is the slope of the chord from the base to that point, and the figure is
(NLL learned - NLL base) - s min(H learned - H base, 0): a learned sampler sharper than its base is compared with
the base sharpened to its entropy, so a learned temperature scores about 0 (a more diverse one gets no credit for
its extra entropy). The learned one
counts as better only if (1) the interval of that difference of the frozen model's own NLL bound per token at
matched entropy lies wholly below 0 (lower beyond noise), (2) that of
the unigram+bigram MMD^2 to the held-out teacher outputs does not lie wholly above 0 (not worse beyond noise),
and (3) that of its unigram entropy minus min(base, teacher) does not lie wholly below -1% of the teacher's (not
sharpened beyond noise). A gain within noise is rejected. If it is not better, OUT holds the base sampler
instead, with the learned numbers and every figure and interval in its provenance; --force writes the learned
one anyway.

Conditional distillation (--prompts FILE or held-out:K[:P]): teacher trajectory i continues prompt i mod P,
its prompt held at every step. The prompts that trajectories continue are split: --val-frac of them (at least
1, at least 1 left; spread evenly: the last of every 4 at 0.25) are held out, the student is fitted on the other prompts' trajectories only, and
validation draws base and learned continuations of the held-out prompts, against the held-out prompts' teacher
continuations, every figure on the continuations only (the NLL bound of the generated tokens given the prompt;
n-grams and entropy of the generated tokens). With validation, fewer than 2 prompts is an error. A teacher cache
file names the prompts' fingerprint, so a conditional run never reads an unconditional one; OUT's provenance
records the prompts (`conditional`: number, sha256, source).

Progress is checkpointed to OUT.ckpt after the teacher and after every epoch (lsd-c: every CMA-ES generation, which
--resume replays without sampling it again, so the run ends as if never stopped; the teacher run itself is
written once, to OUT.ckpt.teacher, or not at all when --teacher-cache holds it); both are removed when done.
"""


def level(text: str) -> float:
    """argparse type of --val-level: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {value}")
    return value


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    from ..distillation.distill import DistillConfig
    from ..distillation.objective import OBJECTIVES

    d = DistillConfig()
    p = subparsers.add_parser(name, help="distill a learned few-step sampler (LSD / LSD+ / LSD-C)",
                              description=DESCRIPTION, epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--model", required=True, help="bundled model name, model directory (ours, or a SEDD/RADD/MDLM "
                   "checkpoint as published) or hub id owner/name")
    p.add_argument("--base", choices=["euler", "tweedie"], default=d.base, help="base sampler of student and teacher")
    p.add_argument("--nfe", type=positive_int, default=d.nfe, help="student steps M (network calls per sample)")
    p.add_argument("--teacher-nfe", type=positive_int, default=d.teacher_nfe,
                   help="teacher steps N, a multiple of M (--teacher steps; --teacher auto takes the exact teacher "
                        "on masked models with L <= N)")
    p.add_argument("--teacher", choices=["auto", "steps", "exact"], default="auto",
                   help="auto (default): exact on a masked model whose length L is at most --teacher-nfe, else "
                        "steps. steps: --teacher-nfe steps of the base sampler; exact (masked models only): the model's "
                        "continuous-time reverse process sampled by first hitting - every token's reveal time drawn "
                        "from the noise schedule, one network call per token at its own time (L calls per "
                        "trajectory, + M at the student times), no discretisation error; about N / L times fewer "
                        "calls than a step teacher (measured against 1024 steps: 7x on text-absorb, L = 128; 15x "
                        "on countdown, L = 64, same learned sampler). Use it on masked models with L well below "
                        "--teacher-nfe. Exact for "
                        "clean-token models (MDLM, RADD, masked LMs); for SEDD-style score networks it uses the "
                        "network's token laws with the schedule's reveal clock (docs/methods.md, 'The teacher')")
    p.add_argument("--method", choices=["lsd", "lsd+", "lsd-c", "jys"], default="lsd-c",
                   help="lsd-c (the default): its movers (spread, Halton or DUS order; on the uniform graph independent "
                        "or spread movers and an Euler or Tweedie last step), then per step how many tokens move (Phi) "
                        "and a value temperature (on masked models also a confidence slope with --slope), fitted on "
                        "the output distribution by CMA-ES (--objective auto); lsd: one Phi per step fitted on the teacher's scores (seconds); "
                        "lsd+: also learn the time grid; jys: a Jump-Your-Steps time grid searched on the teacher's "
                        "outputs (Phi = 1)")
    p.add_argument("--max-iter", type=positive_int, default=16, help="jys: golden-section evaluations per grid point")
    p.add_argument("--objective", choices=["auto", *OBJECTIVES], default=d.objective,
                   help="trajectory: match the teacher's scores step by step (lsd, lsd+); the others match the "
                        "teacher's outputs (CMA-ES, common random numbers): hellinger / mmd on pooled n-grams (mmd is "
                        "unbiased; hellinger's sampling noise favours sharper samplers), features = energy distance "
                        "of per-sample (model NLL, unigram entropy), which sharpening cannot game; features+mmd adds the "
                        "n-gram MMD^2 that validation guards, each term in units of its own noise (it also sees images, "
                        "where features alone cannot); network = energy distance of the frozen network's own pooled "
                        "hidden states (a FID in the model's feature space, no evaluator: it tells 8-step digits "
                        "samplers from the teacher where features cannot); nll@entropy = the model's NLL bound moved "
                        "along the base's temperature frontier to the teacher's entropy (quality at matched diversity, "
                        "what the bench reads); network+mmd, features+network+mmd, "
                        "nll@entropy+mmd: sums, each term in units of its noise; nll@entropy+mmd-guard: the MMD^2 "
                        "counts only where it is worse than at the start, as validation reads it (the NLL at "
                        "matched entropy decides, the n-grams must not get worse); auto (the default): for lsd-c "
                        "nll@entropy+mmd-guard on masked models, features+mmd on the other graphs; trajectory for "
                        "lsd / lsd+")
    p.add_argument("--basis", type=positive_int, default=d.basis,
                   help="distribution objective: numbers per parameter family (1 constant, 2 affine in the step; "
                        "capped at the steps where the family acts: on masked models Phi and the slope skip the "
                        "last step, which reveals every remaining token)")
    p.add_argument("--obj-samples", type=positive_int, default=d.obj_samples,
                   help="distribution objective: samples per candidate")
    p.add_argument("--cma-iters", type=positive_int, default=d.cma_iters, help="distribution objective: CMA-ES generations")
    p.add_argument("--cma-popsize", type=positive_int, default=d.cma_popsize, help="distribution objective: candidates per generation")
    p.add_argument("--cma-sigma", type=float, default=d.cma_sigma,
                   help="distribution objective: CMA-ES initial step size (default: 0.5; 0.2 for the nll@entropy "
                        "objectives, whose scale needs a smaller first step)")
    p.add_argument("--cma-probe", action=argparse.BooleanOptionalAction, default=d.cma_probe,
                   help="distribution objective: before CMA-ES, measure the objective's Hessian at the start by "
                        "finite differences (2d + d(d-1)/2 calls for d numbers) and search along its eigenvectors, "
                        "with a smaller first step along the steep ones (on text: the first step's value "
                        "temperature, which sets the entropy; without it the first candidates scored 10-200x the "
                        "start). Off by default; recommended at 2 NFE on masked models (text: 63/54/66%% of "
                        "spread's gap over three seeds, 54/19%% without), where it was measured to help")
    p.add_argument("--early-exit", action=argparse.BooleanOptionalAction, default=True,
                   help="lsd-c and distribution objectives: first test the base's outputs against the teacher's with "
                        "the objective itself (a permutation test); when they cannot be told apart (p-value >= 0.25) "
                        "write the base without fitting (text-absorb at 8 NFE: spread movers, minutes saved)")
    p.add_argument("--match-times", action="store_true",
                   help="lsd+ (absorbing graph): compare the student's score with the teacher's moved exactly to the "
                        "student's own time (the score scales as 1/(e^sigma_bar - 1)), so Phi does not absorb the grid")
    p.add_argument("--init-lsd", action="store_true", help="lsd+: fit LSD's Phi on the fixed grid first and start from it")
    p.add_argument("--select", action="store_true",
                   help="lsd+: also fit LSD and keep whichever is closer (n-gram Hellinger) to held-out teacher outputs")
    p.add_argument("--slope", action=argparse.BooleanOptionalAction, default=False,
                   help="lsd-c (masked models): also fit a per-step confidence slope, which sets which tokens a step "
                        "reveals (off by default: it hurt text at 4 NFE; benchmarks/issue24_bench.md)")
    p.add_argument("--choose", action=argparse.BooleanOptionalAction, default=False,
                   help="lsd-c: choose the movers (spread, Halton or DUS order on masked models with spread movers; "
                        "independent or spread on the other graphs) and there the last step (Euler or Tweedie) by the "
                        "objective at the base parameters, then fit the numbers (off by default: on text at 4 NFE it picked "
                        "Halton within noise and the fit found nothing; benchmarks/lsdc_features.md)")
    p.add_argument("--counted", action="store_true",
                   help="lsd-c: each sequence unmasks a number of tokens set by rounding the expected number (its sum "
                        "of move probabilities), chosen without replacement by weight, instead of each token on its own")
    p.add_argument("--spread", action=argparse.BooleanOptionalAction, default=None,
                   help="spread movers (default: on for absorbing-graph models, unless --counted, --coupled or --phi-mode "
                        "log; off for the others, where --spread asks for them): each sequence unmasks (or, on the "
                        "uniform graph, changes) the expected number of tokens, spread along the sequence (systematic "
                        "sampling in position order), so tokens unmasked in one step are rarely neighbours; lsd/lsd+ fit "
                        "Phi with these movers, lsd-c chooses its movers so; validation compares with the base rule with "
                        "the same movers (lsdd sample --spread), which is written if the learned sampler is no better")
    p.add_argument("--coupled", action="store_true",
                   help="teacher and student share per-position unmasking clocks and value uniforms (absorbing graph; "
                        "each path keeps its exact law)")
    # the settings of lsd / lsd+ alone: None when not given, so that another method refuses them instead of ignoring
    p.add_argument("--phi-mode", choices=["linear", "log"], default=None,
                   help=f"lsd / lsd+: how Phi enters the step (default: {d.phi_mode})")
    p.add_argument("--loss", choices=["l2", "kl", "rkl"], default=None,
                   help=f"lsd / lsd+: trajectory-matching distance (default: {d.loss})")
    p.add_argument("--zeta", type=fraction, default=None,
                   help=f"lsd / lsd+: fraction of student start tokens perturbed (default: {d.zeta})")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"lsd / lsd+: passes over the teacher trajectories (default: {d.epochs})")
    p.add_argument("--num-traj", type=positive_int, default=d.num_traj, help="teacher trajectories")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="trajectories per step")
    p.add_argument("--lr", type=float, default=None,
                   help=f"lsd / lsd+: Adam learning rate of the coefficients (default: {d.lr})")
    p.add_argument("--lr-time", type=float, default=None,
                   help=f"lsd+: Adam learning rate of the grid (default: {d.lr_time})")
    p.add_argument("--alternate", action="store_true", help="lsd+: alternate epochs of Phi and grid updates")
    p.add_argument("--closed-form", action="store_true",
                   help="lsd + linear + l2 only: refit Phi exactly while simulating instead of Adam")
    p.add_argument("--eps", type=float, default=d.eps, help="last time of the grid")
    p.add_argument("--init-grid", metavar="SAMPLER.json",
                   help="start from this sampler's time grid (e.g. `lsdd schedule --method jys`) instead of the uniform "
                        "one; the teacher refines it, and validation compares against it")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of teacher and student draws")
    p.add_argument("--prompts", metavar="FILE|held-out:K[:P]", help=PROMPTS_HELP + "; see below")
    p.add_argument("--reference", metavar="FILE|CORPUS_DIR",
                   help="held-out text of --prompts held-out:K: a text file or a corpus prepared by `lsdd data` (its "
                        "test split); default: the Shakespeare test slice bundled with lsdd")
    p.add_argument("--validate", dest="validation", action=argparse.BooleanOptionalAction, default=d.validation,
                   help="compare the learned sampler with its base on held-out teacher outputs; write the base "
                        "sampler instead when the learned one is not better")
    p.add_argument("--val-frac", type=fraction, default=d.val_frac,
                   help="share of the teacher trajectories held out of training for validation")
    p.add_argument("--val-samples", type=positive_int, default=d.val_samples,
                   help="samples drawn from each of base and learned sampler for validation")
    p.add_argument("--val-level", type=level, default=d.val_level,
                   help="level of the paired bootstrap intervals (two-sided, equal tails) of learned - base that "
                        "validation reads, in (0, 1): the learned sampler is written only if the interval of its model "
                        "NLL bound's difference at matched entropy lies wholly below 0 and no guard is worse beyond "
                        "noise")
    p.add_argument("--force", action="store_true",
                   help="write the learned sampler even when validation finds it no better than its base")
    p.add_argument("--chunk", type=positive_int, default=d.chunk,
                   help="trajectories per random stream (the unit spread over torchrun processes)")
    p.add_argument("--teacher-store", choices=["auto", "scores", "states"], default=d.teacher_store,
                   help="teacher cache: 'scores' keeps the teacher's score rows (4 N bytes per masked row: ~823 MB "
                        "per trajectory at GPT-2 size), 'states' keeps only its states (64 KiB per trajectory) and "
                        "recomputes the scores (one extra network call per student call); auto: scores up to 2 GiB")
    p.add_argument("--teacher-cache", metavar="DIR",
                   help="read the teacher run from DIR when `lsdd bench/distill --teacher-cache DIR` saved the same "
                        "one (same model, base, steps, trajectories, batch size, seed and eps; in either store; also "
                        "cached on a finer uniform grid, e.g. a bench's at NFE 64 for --nfe 8), else run it and save "
                        "it there")
    add_device_args(p)
    add_quiet_arg(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    p.add_argument("--out", required=True, help="output JSON file of the learned sampler")
    p.set_defaults(run=run)
    return p


_VALUE_FLAGS = ("phi_mode", "loss", "zeta", "epochs", "lr", "lr_time")  # lsd / lsd+ settings; None when not given


def method_from_args(args):
    """The method object (LSD, LSDPlus, LSDC, JYS) with the settings the flags give (UserError for a flag of
    another method)."""
    from dataclasses import fields

    from ..distillation.methods import METHODS, method_options

    cls = METHODS[args.method]
    own = {f.name for f in fields(cls)}
    for name in _VALUE_FLAGS:
        if getattr(args, name) is not None and name not in own:
            raise UserError(f"--{name.replace('_', '-')} does not apply to --method {args.method} (it sets lsd / lsd+)")
    opts = method_options(cls, {k: v for k, v in vars(args).items() if not (k in _VALUE_FLAGS and v is None)})
    if opts.get("objective") == "auto":
        from ..distillation.objective import resolve_objective

        opts["objective"] = resolve_objective(args.method, "auto")
    _refuse_foreign_flags(args, cls)
    return cls(**opts)


# flags that belong to some methods only: given to another method, they are an error rather than ignored
_METHOD_FLAGS = {"slope": "--slope", "choose": "--choose", "match_times": "--match-times", "init_lsd": "--init-lsd", "select": "--select", "counted": "--counted",
                 "alternate": "--alternate", "closed_form": "--closed-form", "coupled": "--coupled"}


def _refuse_foreign_flags(args, cls) -> None:
    from dataclasses import fields

    own = {f.name for f in fields(cls)}
    for name, flag in _METHOD_FLAGS.items():
        if getattr(args, name, False) and name not in own:
            raise UserError(f"{flag} does not apply to --method {args.method}")


def teacher_from_args(args):
    from ..distillation.pipeline import Teacher

    return Teacher(nfe=args.teacher_nfe, num_traj=args.num_traj, batch_size=args.batch_size, chunk=args.chunk,
                   seed=args.seed, eps=args.eps, store=args.teacher_store, cache_dir=args.teacher_cache,
                   kind=args.teacher)


def run(args) -> int:
    from ..distillation.pipeline import distill, prepare
    from ..sampling.sampler import Sampler

    out = check_output(args.out, ".json")
    check_output(args.teacher_cache, flag="--teacher-cache", folder=True)
    method, teacher = method_from_args(args), teacher_from_args(args)
    if args.reference is not None and (args.prompts is None or not args.prompts.startswith("held-out:")):
        raise UserError("--reference is the held-out text of --prompts held-out:K; give that too")
    spec = PromptSpec(args.prompts) if args.prompts is not None else None  # a missing / empty file: now
    init_grid = Sampler.load(args.init_grid) if args.init_grid else None
    if init_grid is not None and init_grid.steps != args.nfe:
        raise UserError(f"--init-grid {args.init_grid} has {init_grid.steps} steps but --nfe is {args.nfe}")
    if init_grid is not None and abs(init_grid.times[-1] - args.eps) > 1e-12:
        raise UserError(f"--init-grid {args.init_grid} ends at {init_grid.times[-1]!r}; pass --eps {init_grid.times[-1]!r}")
    model = load_args(args)
    cond = None if spec is None else spec.condition(model, args.reference)  # before any work
    common = dict(base=args.base, teacher=teacher, validate=args.validation, val_frac=args.val_frac,
                  val_samples=args.val_samples, val_level=args.val_level, init_grid=init_grid, prompts=cond)
    _, cfg = prepare(model, method, args.nfe, **common)  # every setting checked before the teacher runs
    from .. import dist

    sampler, val = distill(model, method, args.nfe, **common, force=args.force, checkpoint=str(out) + ".ckpt",
                           resume=args.resume)
    if args.init_grid:
        sampler = sampler.replace(provenance={**sampler.provenance,
                                              "init_grid": {"file": str(args.init_grid), "method": init_grid.method}})
    if cond is not None:
        record = {**sampler.provenance["conditional"], "source": args.prompts}
        sampler = sampler.replace(provenance={**sampler.provenance, "conditional": record})
        print(f"conditional: {record['num_prompts']} prompts ({args.prompts}), {record['prompts_used']} continued by "
              f"the teacher, {record['held_out_prompts']} held out for validation")
    if dist.is_main():
        sampler.save(out)
    prov = sampler.provenance
    if val is not None:
        print(val.summary())
    early = prov.get("early_exit") or {}
    if early.get("skipped") and early.get("base") and val is None:
        print(f"lsdd distill: the {prov['objective']} objective cannot tell the base's outputs from the teacher's "
              f"at {cfg.nfe} NFE (start {early['objective']:.5f}, permutation p-value {early['p']:.3f} >= "
              f"{early['threshold']:g}), so nothing is left to fit: {out} holds the base sampler"
              f"{' with spread movers' if sampler.movers == 'spread' else ''}. Pass --no-early-exit to fit anyway.")
        return 0
    if val is not None and not sampler.learned and not args.force:
        base = f"{cfg.base} with spread movers" if cfg.spread else f"plain {cfg.base}"
        grid = "the --init-grid" if args.init_grid else "uniform"
        print(f"lsdd distill: the learned sampler is not better than {base} at {cfg.nfe} NFE on held-out "
              f"teacher outputs beyond noise ({100 * cfg.val_level:g}% intervals), so {out} holds the base sampler "
              f"({grid} grid, Phi = 1); the learned numbers are in its provenance. Pass --force to write the learned "
              "sampler anyway.")
        print(f"  rejected coefficients: {', '.join(f'{c:.3f}' for c in prov['rejected_learned']['coeffs'])}")
        return 0
    if val is not None and not val.learned_better:
        print("warning: validation found the learned sampler no better than its base; written anyway (--force)")
    history = prov.get("history") or [{}]
    last = history[-1]
    print(f"{sampler.method} {sampler.rule} sampler with {sampler.nfe} NFE -> {out}")
    print(f"  coefficients: {', '.join(f'{c:.3f}' for c in sampler.coeffs_tensor().tolist())}")
    print(f"  time grid:    {', '.join(f'{t:.4f}' for t in sampler.times)}")
    if sampler.movers == "spread":
        print("  movers:       counted, spread along the sequence (--spread)")
    elif sampler.movers != "independent":
        print(f"  movers:       counted, in {sampler.movers} order" if sampler.movers != "counted" else
              "  movers:       counted, chosen by weight")
    if sampler.final is not None:
        print(f"  last step:    {sampler.final} (the posterior p(x0 | x_t) on the uniform graph)")
    if prov.get("discrete_choice"):
        print("  chosen among: " + ", ".join(f"{k} {v:.4g}" for k, v in prov["discrete_choice"].items())
              + " (objective at the base parameters)")
    if sampler.conditioning is not None:
        if any(sampler.conditioning["slope"]) or (sampler.model or {}).get("graph") == "absorbing":
            print(f"  confidence slope: {', '.join(f'{a:.3f}' for a in sampler.conditioning['slope'])}")
        print(f"  value beta:       {', '.join(f'{b:.3f}' for b in sampler.conditioning['beta'])}")
    t_s, s_s = prov.get("teacher_seconds", 0.0), prov.get("student_seconds", 0.0)
    if "best_so_far" in last:  # a CMA-ES fit: its last generation's best is not the fit's
        loss = f"objective {last['best_so_far']:.4g} (best of the fit)"
    else:
        loss = f"final loss: phi {last.get('loss_phi', float('nan')):.4g}, time {last.get('loss_time', 0.0):.4g}"
    print(f"  {loss}; teacher {t_s:.1f} s, student {s_s:.1f} s (ratio {s_s / max(t_s, 1e-9):.2f})")
    return 0
