"""Side-by-side comparison of samplers at equal NFE (one process, same seeds, NFE counted).

Rows: the teacher (reference), and at every NFE the uniform-grid Euler and Tweedie baselines, the learned
samplers (LSD, LSD+ on each base), and on request the other baselines users compare against: JYS grids (a
KLUB search on the teacher's outputs, ``lsdd.distillation.jys``), the two-call theta-RK-2 / theta-trapezoidal solvers
(``lsdd.sampling.theta``; NFE/2 steps), the base rules with counted movers (``counted``, ``spread`` and the peer
orders ``dilated``, ``halton``, ``confidence``, ``margin``, ``entropy`` of ``lsdd.sampling.orders``: nothing
learned), and samplers learned earlier (``BenchConfig.learned``, e.g. ``lsdd distill``
files), scored with the same seeds. Each row is scored by the task's quality metrics beside their diversity
partners, with its network calls per sample as counted (and steps x calls per step), wall time per sample
and the fraction of the Euler-to-teacher gap closed.
With ``BenchConfig.frontier`` every row is drawn again at a sweep of value temperatures (generative frontiers,
Pynadath et al., arXiv 2604.02718): quality against diversity per sampler, and each row's headline metric read
off its curve at the teacher's diversity (``value_at_diversity``), which compares samplers at equal diversity
instead of at whatever diversity each happens to have.
One teacher run per base serves every NFE: uniform grids with the same eps nest, so the scores cached at
the finest student grid contain those of every coarser one.
With ``BenchConfig.prompts`` (P prompts; a task that scores continuations: ``Task.conditional``) every row draws
continuations: sample i of every row - the teacher's trajectory i included - continues prompt i mod P with the
same seeds as without prompts, and is scored on its continuation given its prompt (``Task.compute(x, fixed=)``);
the learned rows are distilled on the teacher's continuations with held-out prompts for validation
(``lsdd.distillation.pipeline``), the adaptive rows' parameter is matched on the conditional runs, and the
frontiers and temperature controls draw continuations too.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from . import dist
from .distillation.methods import METHODS as METHOD_CLASSES, get_method, method_options
from .distillation.objective import resolve_objective
from .distillation.pipeline import Teacher, distill
from .distillation.teacher import get_teacher
from .sampling.draws import make_generator
from .tasks import Task
from .sampling.generate import sample as draw
from .sampling.sampler import Sampler
from .sampling.samplers import sample
from .sampling.schedules import uniform_times
from .sampling.orders import ORDERS
from .sampling.adaptive import ADAPTIVE, match_budget
from .sampling.prompts import Condition
from .sampling.steps import THETA_RULES, get_rule

DISTILLED = ("lsd", "lsd+", "lsd-c")  # learned from the teacher (lsd-c: on its outputs)
MOVERS = ("counted", "spread", *ORDERS)  # the base rule with counted movers (nothing learned); ORDERS: peer orders
# (DUS dilated, Halton, confidence / margin / entropy top-K; absorbing graph)
BLOCKED = ("dilated", "eb", "threshold")  # rows that BenchConfig.block repeats within semi-autoregressive blocks
ADAPTIVE_METHODS = ("eb", "threshold")  # adaptive samplers (absorbing graph), compared at equal *mean* NFE: at each
# bench NFE N their parameter is chosen by ``adaptive.match_budget`` so that the row's mean calls per sample <= N
METHODS = (*DISTILLED, "jys", *MOVERS, *THETA_RULES, *ADAPTIVE_METHODS)  # everything --methods takes
DEFAULT_FRONTIER = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25)  # value temperatures of `lsdd bench --frontier` without values


@dataclass
class BenchConfig:
    nfes: tuple[int, ...] = (8, 16, 32, 64)
    teacher_nfe: int = 1024
    teacher_kind: str = "steps"  # "exact": the first-hitting teacher (masked models; one run serves every base)
    bases: tuple[str, ...] = ("euler", "tweedie")  # uniform-grid baselines
    methods: tuple[str, ...] = ("lsd", "lsd+")
    learn_bases: tuple[str, ...] | None = None  # bases of the learned samplers (None: same as ``bases``)
    num_samples: int = 256  # evaluation samples per row = teacher trajectories (the teacher row scores them)
    batch_size: int = 64
    seed: int = 0
    timing_repeats: int = 3  # interleaved repeats for the learned/base wall-time ratio
    distill: dict[str, Any] = field(default_factory=dict)  # method settings (phi_mode, loss, epochs, ...; each
    # method takes the ones it has) and the teacher's "teacher_store"
    validate: bool = True  # learned rows go through the pipeline's validation, as `lsdd distill` (False: raw fits)
    keep_samples: bool = False  # keep each row's samples on the row (BenchRow.samples; not serialised)
    temperature_control: bool = False  # add Euler at the temperature matching each learned Euler row's diversity
    temperature_iters: int = 4  # sampling runs of the search on log T in [0.25, 2] (``match_temperature``)
    temperature_tol: float = 1e-3  # stop once the diversity is within this fraction of the target
    theta: float | None = None  # theta of the theta-* rows (None: their default)
    jys: dict[str, Any] = field(default_factory=dict)  # JYS settings (max_iter)
    learned: tuple[tuple[str, Any], ...] = ()  # (name, Sampler) made earlier: scored as rows at their NFE
    teacher_cache: str | None = None  # folder: reuse the teacher runs saved there by an earlier bench, else save them
    frontier: tuple[float, ...] = ()  # value temperatures at which every non-teacher row is drawn again (``_frontier``;
    # empty: no frontiers); each multiplies the row's own sampler temperature
    block: int | None = None  # with dilated / eb / threshold in methods: also their rows within semi-autoregressive
    # blocks of this many tokens
    # (semi-autoregressive DUS), 1 <= B < the model's length
    match_iters: int = 8  # eb / threshold rows: bisection steps of ``adaptive.match_budget``
    # continuations of these prompts (module docstring): what ``lsdd.sample``'s ``prompt`` takes (texts, token ids)
    # or a ``lsdd.sampling.prompts.Condition``; None: unconditional. ``prompts_source`` names them in the record
    prompts: Any = None
    prompts_source: str | None = None


@dataclass
class BenchRow:
    label: str
    base: str
    method: str  # "teacher" | "uniform" | "lsd" | "lsd+"
    nfe: int  # network calls per sample, counted (adaptive rows: the NFE budget N their mean is matched to)
    metrics: dict[str, float]
    sec_per_sample: float
    gap_closed: float | None = None  # of the headline quality metric, Euler -> teacher, at this NFE
    overhead: float | None = None  # wall time / the base sampler's at equal NFE (interleaved timing)
    sampler: Sampler | None = None
    distill_seconds: float | None = None  # time to learn the row's sampler (distillation, or JYS's search)
    steps: int | None = None  # steps per sample; nfe / steps network calls per step
    matches: str | None = None  # temperature rows: the label of the row whose diversity they match
    accepted: bool | None = None  # learned rows: validation accepted the learned sampler (False: the row is the base)
    temperature: float | None = None  # temperature rows: the value temperature of their Euler sampler
    frontier: list[tuple[float, dict[str, float]]] | None = None  # (T, metrics) at each BenchConfig.frontier T
    at_teacher_diversity: float | None = None  # headline metric on the frontier at the teacher's diversity (NaN:
    # the sweep does not reach it; ``value_at_diversity``)
    samples: Any = field(default=None, repr=False)  # (n, L) int64 when BenchConfig.keep_samples
    param: float | None = None  # adaptive rows (eb, threshold): the gamma / tau matched to the NFE budget
    nfe_mean: float | None = None  # adaptive rows: mean network calls per sample of the row's draw (<= nfe)
    nfe_max: int | None = None  # adaptive rows: the most network calls any one sample made


@dataclass
class BenchResult:
    task: str
    headline: tuple[str, str]
    rows: list[BenchRow]
    teacher_seconds: dict[str, float]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.rows:
            d = asdict(r)
            d.pop("samples", None)
            d["sampler"] = r.sampler.to_dict() if r.sampler else None
            rows.append(d)
        return {"task": self.task, "headline": list(self.headline), "teacher_seconds": self.teacher_seconds,
                "config": self.config, "rows": rows}


def _lcm(values) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def _run_sampler(model, cfg: BenchConfig, sampler: Sampler, cond: Condition | None = None):
    """Draw cfg.num_samples with fixed seeds (continuing ``cond``'s prompts: sample i row i mod P); returns
    (``Samples``, seconds)."""
    t0 = time.perf_counter()
    out = draw(model, sampler, cfg.num_samples, seed=cfg.seed + 1, batch_size=cfg.batch_size,
               fixed=None if cond is None else cond.given)
    return out, time.perf_counter() - t0


def _score(task: Task, x, cond: Condition | None) -> dict[str, float]:
    """The task's metrics of samples x (n, L): of the continuations given their prompts with ``cond`` (sample i
    continuing row i mod P)."""
    return task.compute(x) if cond is None else task.compute(x, fixed=cond.held(x.shape[0]))


def prompts_record(cond: Condition, source: str | None = None) -> dict[str, Any]:
    """What a bench's config records of its prompts: their number, sha256 and where they came from."""
    import hashlib

    given = cond.given.to(torch.int64).contiguous().numpy()
    return {"source": source, "kind": cond.kind, "num_prompts": int(given.shape[0]),
            "sha256": hashlib.sha256(f"{given.shape}".encode() + given.tobytes()).hexdigest()}


def nfe_cell(row: BenchRow) -> str:
    """The table's NFE cell: the row's NFE; adaptive rows add their mean and max calls per sample."""
    if row.nfe_mean is None:
        return str(row.nfe)
    return f"{row.nfe} (mean {row.nfe_mean:.1f}, max {row.nfe_max})"


def display_label(row: BenchRow) -> str:
    """The row's label as the tables show it: the temperature control's matched row, a learned row that is its base
    (validation rejected the fit, or the early exit fitted nothing), an adaptive row's matched parameter."""
    out = row.label + (f" (~{row.matches})" if row.matches else "")
    if row.accepted is False:
        early = (row.sampler.provenance.get("early_exit") if row.sampler is not None else None) or {}
        out += " (early exit: base)" if early.get("skipped") and early.get("base") else " (rejected: base)"
    if row.param is not None:
        out += f" ({ADAPTIVE[row.method]}={row.param:.4g})"
    return out


def timing_ratio(model, base: Sampler, learned: Sampler, batch: int, repeats: int) -> float:
    """Median wall time of ``learned`` over ``base`` at equal NFE, interleaved."""
    ratios = []
    for r in range(repeats):
        spans = []
        for sampler in (base, learned):
            gen = make_generator(r, model.device)
            _sync(model)
            t0 = time.perf_counter()
            sample(model.score_fn, model.graph, model.noise, sampler.times_tensor(), (batch, model.length),
                   generator=gen, device=model.device, **sampler.loop_args(model.graph))
            _sync(model)
            spans.append(time.perf_counter() - t0)
        ratios.append(spans[1] / spans[0])
    return float(sorted(ratios)[len(ratios) // 2])


def _method(name: str, options: dict[str, Any]):
    """The method object of a bench row, with the bench's method settings it has."""
    opts = method_options(METHOD_CLASSES[name], options)
    if opts.get("objective") == "auto":
        opts["objective"] = resolve_objective(name, "auto")
    return get_method(name, **opts)


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def run_bench(model, task: Task, cfg: BenchConfig, progress: bool = True, log=print) -> BenchResult:
    """Run the whole comparison; see the module docstring."""
    from .distillation.pipeline import as_condition

    cond = as_condition(model, cfg.prompts)  # a bad prompt fails before any work
    if cond is not None and "jys" in cfg.methods:
        raise ValueError("prompts: the jys rows search their grid on unconditional outputs; drop jys from the methods")
    if cond is not None and not getattr(task, "conditional", False):
        raise ValueError(f"prompts: the {task.name} task does not score continuations given their prompt; use a task "
                         "that does (text)")
    free = model.length if cond is None else cond.free_positions(cfg.num_samples)
    finest = _lcm(cfg.nfes)
    if cfg.teacher_kind not in ("steps", "exact"):
        raise ValueError(f"teacher kind must be steps or exact, got {cfg.teacher_kind!r}")
    if cfg.teacher_kind == "exact" and not model.graph.absorbing:
        raise ValueError(f"the exact teacher (first hitting) needs a masked (absorbing) model, not the "
                         f"{model.graph.name} graph")
    if cfg.teacher_kind == "steps" and cfg.teacher_nfe % finest:
        raise ValueError(f"teacher nfe {cfg.teacher_nfe} must be a multiple of every student nfe {list(cfg.nfes)}")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown bench methods {bad}; expected some of {list(METHODS)}")
    thetas = [m for m in cfg.methods if m in THETA_RULES]
    orders = [m for m in cfg.methods if m in ORDERS]
    if orders and not model.graph.absorbing:
        raise ValueError(f"the peer mover orders {orders} reveal masked tokens: absorbing graph only, not "
                         f"{model.graph.name}")
    adaptive = [m for m in cfg.methods if m in ADAPTIVE_METHODS]
    if adaptive and not model.graph.absorbing:
        raise ValueError(f"the adaptive samplers {adaptive} unmask tokens: absorbing graph only, not "
                         f"{model.graph.name}")
    B = cfg.block
    blocked = [m for m in cfg.methods if m in BLOCKED]
    if B is not None:
        if not blocked:
            raise ValueError(f"block {B!r} is the block size of the {'/'.join(BLOCKED)} rows; add one of them to the "
                             "methods")
        if isinstance(B, bool) or not isinstance(B, int) or not 1 <= B < model.length:
            raise ValueError(f"block must be an integer in [1, {model.length - 1}] (below the model's length "
                             f"{model.length}; the whole sequence is the row itself), got {B!r}")
        n_blocks = -(-free // B)  # blocks of the free positions (all of them without prompts)
        few = [n for n in cfg.nfes if n < n_blocks]
        if [m for m in blocked if m in ADAPTIVE_METHODS] and few:
            raise ValueError(f"eb / threshold in blocks of {B} make at least {n_blocks} calls per sample "
                             f"(one per block of the {free} free tokens); NFE {few} is below that")
        odd = [n for n in cfg.nfes if n % n_blocks]
        if "dilated" in blocked and odd:
            raise ValueError(f"dilated in blocks of {B} runs its grid once per block ({n_blocks} blocks of the "
                             f"{free} free tokens): NFE {odd} is not a multiple of {n_blocks}")
    odd = [n for n in cfg.nfes if n % 2]
    if thetas and odd:
        raise ValueError(f"{thetas[0]} makes 2 network calls per step, so it runs at even NFE only; got NFE {odd}")
    for m in thetas:
        get_rule(m, cfg.theta)  # a bad theta fails before any work
    bad_t = [t for t in cfg.frontier if not (isinstance(t, (int, float)) and math.isfinite(t) and t > 0)]
    if bad_t:
        raise ValueError(f"frontier temperatures must be finite and > 0, got {bad_t[0]!r}")
    for name, smp in cfg.learned:
        if smp.adaptive is not None:
            raise ValueError(f"{name} is an adaptive sampler ({smp.adaptive['rule']}): its network calls depend on the "
                             f"sample; bench it with --methods {smp.adaptive['rule']}, which matches its mean NFE to "
                             "each bench NFE")
        if smp.nfe not in cfg.nfes:
            raise ValueError(f"learned sampler {name} makes {smp.nfe} network calls per sample; add {smp.nfe} to "
                             f"the bench NFEs {list(cfg.nfes)} so that it has an Euler row to compare with")
        smp.check_model(model)
    learning = [m for m in cfg.methods if m in (*DISTILLED, "jys")]
    methods = {m: _method(m, {**cfg.distill, **cfg.jys}) for m in learning}  # a bad setting fails before any work
    for m in methods.values():
        m.check()
    eps = float(cfg.distill.get("eps", 1e-5))
    teacher_spec = Teacher(nfe=cfg.teacher_nfe, num_traj=cfg.num_samples, batch_size=cfg.batch_size, seed=cfg.seed,
                           eps=eps, store=cfg.distill.get("teacher_store", "auto"), cache_dir=cfg.teacher_cache,
                           kind=cfg.teacher_kind)
    headline = task.pairs[0]
    learn_bases = cfg.bases if cfg.learn_bases is None else cfg.learn_bases
    teacher_bases = tuple(learn_bases) if learning and learn_bases else (cfg.bases[0],)
    caches, teacher_seconds, rows = {}, {}, []
    exact = cfg.teacher_kind == "exact"
    for base in teacher_bases:  # one teacher run per base, on the finest grid: every NFE's grid nests in it
        if exact and caches:  # the exact teacher has no base: its one run serves every base
            caches[base] = next(iter(caches.values()))
            continue
        caches[base], _ = get_teacher(model, uniform_times(finest, eps), cfg.teacher_nfe, cfg.num_samples,
                                      method=base, batch_size=cfg.batch_size, seed=cfg.seed,
                                      store=teacher_spec.store, folder=cfg.teacher_cache, progress=progress, log=log,
                                      given=None if cond is None else cond.given, kind=cfg.teacher_kind)
        teacher_seconds["exact" if exact else base] = caches[base].seconds
    ref_base = teacher_bases[0]
    teacher_nfe = model.length if exact else cfg.teacher_nfe  # exact: one call per token (+ the cache's M)
    teacher = BenchRow("teacher-exact" if exact else f"teacher-{ref_base}", ref_base, "teacher", teacher_nfe,
                       _score(task, caches[ref_base].x_0, cond), caches[ref_base].seconds / cfg.num_samples)
    rows.append(teacher)
    jobs = [(m, b, "uniform") for m in cfg.nfes for b in cfg.bases]
    per_base = [meth for meth in cfg.methods if meth not in (*THETA_RULES, *ADAPTIVE_METHODS)]
    if B is not None and "dilated" in per_base:  # the blocked DUS row right after the whole-sequence one
        i = per_base.index("dilated") + 1
        per_base[i:i] = ["dilated-block"]
    jobs += [(m, b, meth) for m in cfg.nfes for b in learn_bases for meth in per_base]
    jobs += [(m, meth, meth) for m in cfg.nfes for meth in thetas]
    jobs += [(m, meth, meth) for m in cfg.nfes for meth in adaptive]
    jobs += [(m, meth, "block") for m in cfg.nfes for meth in adaptive if B is not None]  # Fast-dLLM's setting
    jobs += [(smp.nfe, smp.rule, i) for i, (_, smp) in enumerate(cfg.learned)]  # int method: a file row
    jobs.sort(key=lambda j: j[0])
    bar = tqdm(jobs, desc="bench", disable=not progress or not dist.is_main())
    for nfe, base, method in bar:
        bar.set_postfix_str(f"{method if isinstance(method, str) else 'file'}-{base} nfe={nfe}")
        dist_s, label, steps, accepted, param = None, None, nfe, None, None
        if isinstance(method, int):  # a sampler learned earlier
            name, smp = cfg.learned[method]
            method = smp.method
            label = f"{method.upper()}-{base} [{name}]"
        elif method in THETA_RULES:
            smp = Sampler.base(method, nfe, theta=cfg.theta, eps=eps)
            steps = smp.steps
        elif method in MOVERS:
            smp = Sampler.base(base, nfe, movers=method, eps=eps)
        elif method == "dilated-block":  # DUS's own scheme: the grid once per block, NFE / blocks calls each
            method = "dilated"
            smp = Sampler.base(base, nfe // -(-free // B), movers="dilated", eps=eps, block=B)
            label = f"DILATED-B{B}-{base}"
        elif method in ADAPTIVE_METHODS or method == "block":  # equal mean NFE: the parameter whose run fits N
            block = B if method == "block" else None
            if method == "block":
                method, label = base, f"{base}-B{B}"
            t0 = time.perf_counter()
            param, _ = match_budget(model, method, nfe, num=cfg.num_samples, seed=cfg.seed + 1,
                                    batch_size=cfg.batch_size, iters=cfg.match_iters, eps=eps, block=block,
                                    given=None if cond is None else cond.given)
            dist_s = time.perf_counter() - t0
            smp = Sampler.adaptive_rule(method, param, eps=eps, block=block)
            steps = None
        elif method == "uniform":
            smp = Sampler.base(base, nfe, eps=eps)
        else:  # learned through the pipeline, exactly as `lsdd distill` would learn it from this teacher run
            t0 = time.perf_counter()
            smp, _ = distill(model, methods[method], nfe, base=base, teacher=teacher_spec, validate=cfg.validate,
                             teacher_run=caches[base], progress=False, log=lambda *a: None, prompts=cond)
            dist_s = time.perf_counter() - t0
            accepted = smp.learned
        out, secs = _run_sampler(model, cfg, smp, cond)
        x, calls = out.x, out.nfe
        if param is not None:  # adaptive: the mean, counted by the loop, is within the row's NFE
            if not out.nfe_mean <= nfe:
                raise RuntimeError(f"{method}: counted {out.nfe_mean} network calls per sample on average, above "
                                   f"the row's NFE {nfe}")
        elif calls != nfe:  # every row runs at the NFE it is listed under, counted by the loop
            raise RuntimeError(f"{method}-{base}: counted {calls} network calls per sample, expected {nfe}")
        if label is None:
            label = method if method in (*THETA_RULES, *ADAPTIVE_METHODS) else \
                f"{'uniform' if method == 'uniform' else method.upper()}-{base}"
        keep = method not in ("uniform", *THETA_RULES)
        row = BenchRow(label, base, method, nfe, _score(task, x, cond), secs / cfg.num_samples,
                       sampler=smp if keep else None, distill_seconds=dist_s, steps=steps, accepted=accepted)
        if param is not None:
            row.param, row.nfe_mean, row.nfe_max = float(param), float(out.nfe_mean), int(out.nfe)
        elif keep and cfg.timing_repeats > 0:
            row.overhead = timing_ratio(model, Sampler.base(base, nfe, eps=eps), smp, cfg.batch_size,
                                        cfg.timing_repeats)
        row.samples = x if cfg.keep_samples else None
        rows.append(row)
    teacher.samples = caches[ref_base].x_0 if cfg.keep_samples else None
    if cfg.temperature_control:
        rows += _temperature_rows(model, task, cfg, rows, progress, eps, cond)
        rows[1:] = sorted(rows[1:], key=lambda r: r.nfe)  # stable: each NFE's rows stay in their order
    teacher.steps = teacher_nfe
    _fill_gap(rows, teacher, headline[0], task.spec(headline[0]).higher_is_better,
              log_scale=getattr(task, "gap_in_log", False))
    if cfg.frontier:
        _frontier(model, task, cfg, rows, eps, progress, cond)
    config = {**asdict(replace(cfg, learned=(), prompts=None)), "learned": [name for name, _ in cfg.learned],
              "methods_settings": {name: asdict(m) for name, m in methods.items()}, "teacher": asdict(teacher_spec),
              "prompts": None if cond is None else prompts_record(cond, cfg.prompts_source)}
    return BenchResult(task.name, headline, rows, teacher_seconds, config)


def match_temperature(value_at, target: float, evals: int, value_at_one: float | None = None, tol: float = 0.0,
                      lo: float = math.log(0.25), hi: float = math.log(2.0)) -> tuple[float, float, int]:
    """The temperature T in [e^lo, e^hi] whose diversity ``value_at(log T)`` is closest to ``target``, in at most
    ``evals`` calls (each one a sampling run). Diversity rises with T, close to linearly in log T near T = 1, so
    secant steps from T = 1 (``value_at_one``: its known value, else one more call) reach the target in 2-4
    calls where bisection over [0.25, 2] needs 7 for 1% in T. Once probes lie on both sides of the target the
    next one is the secant point of the closest pair, kept within the inner 80% of that bracket; a secant with a
    slope of the wrong sign (sampling noise) goes halfway to the bound instead. Stops early within ``tol``.

    Returns (T, its value, calls made); T is the best probe, T = 1 among them.
    """
    pts: list[tuple[float, float]] = []  # (log T, value - target)
    calls = 0
    if value_at_one is None:
        pts.append((0.0, value_at(0.0) - target))
        calls = 1
    else:
        pts.append((0.0, value_at_one - target))
    while calls < evals and min(abs(f) for _, f in pts) > tol:
        below = [p for p in pts if p[1] < 0]
        above = [p for p in pts if p[1] > 0]
        if below and above:
            (xa, fa), (xb, fb) = max(below), min(above)  # the innermost bracket
            x = xa - fa * (xb - xa) / (fb - fa)
            w = xb - xa
            x = min(max(x, min(xa, xb) + 0.1 * abs(w)), max(xa, xb) - 0.1 * abs(w))
        else:
            high = not below  # every probe is above the target: lower the temperature
            (x1, f1), *rest = sorted(pts, key=lambda p: abs(p[1]))
            bound = lo if high else hi
            if not rest:
                x = x1 + (-0.05 if high else 0.05)
            else:
                x2, f2 = rest[0]
                slope = (f1 - f2) / (x1 - x2)
                x = x1 - f1 / slope if slope > 0 else 0.5 * (x1 + bound)
            x = min(max(x, lo), hi)
        if any(abs(x - p[0]) < 1e-9 for p in pts):
            break
        pts.append((x, value_at(x) - target))
        calls += 1
    x, f = min(pts, key=lambda p: abs(p[1]))
    return math.exp(x), f + target, calls


def _temperature_rows(model, task: Task, cfg: BenchConfig, rows: list[BenchRow], progress: bool,
                      eps: float = 1e-5, cond: Condition | None = None) -> list[BenchRow]:
    """For each learned row on the Euler base (LSD, LSD-C, samplers made earlier; not LSD+, not JYS grids): Euler
    on the uniform grid at the same NFE with a plain temperature (``samplers.tempered_score``) tuned by secant
    steps on log T (``match_temperature``) so that its diversity metric (the headline's partner) matches that
    row's. The control that tells a learned sampler from mere sharpening; ``BenchRow.matches`` names the row it
    matches. With prompts (``cond``) the diversity is that of the continuations (the task's full conditional
    metrics: a fast metric reads whole sequences)."""
    div = task.pairs[0][1]
    fast = getattr(task, "fast_metrics", {}).get(div, lambda x: task.compute(x)[div])
    if cond is not None:
        fast = lambda x: _score(task, x, cond)[div]  # noqa: E731
    out = []
    for ref in [r for r in rows if r.base == "euler" and r.sampler is not None and r.method not in ("lsd+", "jys")]:
        target = ref.metrics[div]
        euler = next((r for r in rows if r.method == "uniform" and r.base == "euler" and r.nfe == ref.nfe), None)
        at_one = None if euler is None else euler.metrics[div]  # T = 1 is plain Euler, already scored

        probes = {}  # T -> (samples, seconds): the chosen probe's samples are the row's, not drawn again

        def run(temp: float):
            if temp not in probes:
                t = time.perf_counter()
                res, _ = _run_sampler(model, cfg, Sampler.euler(ref.nfe, eps).with_temperature(temp), cond)
                probes[temp] = (res, time.perf_counter() - t)
            return probes[temp][0]

        t0 = time.perf_counter()
        temp, _, _ = match_temperature(lambda log_t: fast(run(math.exp(log_t)).x), target, cfg.temperature_iters,
                                       at_one, tol=cfg.temperature_tol * abs(target))
        t1 = time.perf_counter()
        res = run(temp)
        secs = probes[temp][1]
        row = BenchRow(f"euler-T{temp:.3f}", "euler", "temperature", res.nfe, _score(task, res.x, cond),
                       secs / cfg.num_samples, distill_seconds=t1 - t0, steps=ref.nfe,
                       samples=res.x if cfg.keep_samples else None, matches=ref.label, temperature=temp)
        out.append(row)
    return out


def row_sampler(row: BenchRow, eps: float = 1e-5, theta: float | None = None) -> Sampler:
    """The ``Sampler`` that drew ``row`` (the bench's ``eps`` and ``theta``): the row's own when it keeps one (learned
    rows, movers, files), else rebuilt: the teacher and the uniform baselines are ``Sampler.base(base, nfe)``, the
    theta rows ``Sampler.base(rule, nfe, theta=theta)`` and the temperature rows Euler at their temperature."""
    if row.sampler is not None:
        return row.sampler
    if row.method == "temperature":
        return Sampler.euler(row.nfe, eps).with_temperature(row.temperature if row.temperature is not None else 1.0)
    if row.method in THETA_RULES:
        return Sampler.base(row.method, row.nfe, theta=theta, eps=eps)
    if row.method in ("teacher", "uniform"):
        return Sampler.base(row.base, row.nfe, eps=eps)
    raise ValueError(f"row {row.label} keeps no sampler and is not a baseline; cannot rebuild it")


def value_at_diversity(curve: Sequence[tuple[float, float, float]], target: float, log_scale: bool = False) -> float:
    """The quality a sampler's temperature curve reaches at diversity ``target`` (the teacher's), or NaN.

    Args:
        curve: (T, quality, diversity) points of one sampler, any order; points with a non-finite value are left
            out.
        target: the diversity to read the curve at.
        log_scale: interpolate log(quality) (perplexities), not quality.

    Walking the points in order of T, a segment between neighbouring temperatures *brackets* the target when
    its two diversities lie on either side of it (or one equals it). The quality is interpolated linearly in the
    diversity between those two points (in log quality when ``log_scale``); a point whose diversity equals the
    target gives its own quality exactly. When noise makes several segments bracket it (or several points equal
    it), the one nearest T = 1 is read: smallest |mean log T| of its two ends, the lower T on a tie. The
    direction of the diversity metric does not matter here (the countdown task's start_tv falls as diversity
    rises; the pair is used as given and the same rule applies). No bracketing segment: NaN, never an
    extrapolation.
    """
    pts = sorted((float(t), float(q), float(d)) for t, q, d in curve
                 if math.isfinite(t) and math.isfinite(q) and math.isfinite(d) and (q > 0 or not log_scale))
    if not math.isfinite(target) or not pts:
        return float("nan")
    log_t = lambda *ts: sum(math.log(t) if t > 0 else -math.inf for t in ts) / len(ts)  # noqa: E731
    exact = [p for p in pts if p[2] == target]
    if exact:
        return min(exact, key=lambda p: abs(log_t(p[0])))[1]
    segs = [(a, b) for a, b in zip(pts, pts[1:]) if min(a[2], b[2]) <= target <= max(a[2], b[2])]
    if not segs:
        return float("nan")
    (_, qa, da), (_, qb, db) = min(segs, key=lambda s: abs(log_t(s[0][0], s[1][0])))  # first (lowest T) on a tie
    w = (target - da) / (db - da)
    if log_scale:
        return math.exp(math.log(qa) + w * (math.log(qb) - math.log(qa)))
    return qa + w * (qb - qa)


def frontier_range(row: BenchRow, target: float, metric: str) -> str:
    """Why ``row`` has no value at the teacher's diversity: where ``target`` lies against the row's sweep."""
    ds = [(t, m[metric]) for t, m in row.frontier or [] if math.isfinite(m.get(metric, float("nan")))]
    if not ds or not math.isfinite(target):
        return f"no finite {metric} on the sweep" if math.isfinite(target) else f"the teacher's {metric} is not finite"
    lo, hi = min(d for _, d in ds), max(d for _, d in ds)
    ts = [t for t, _ in ds]
    side = "above" if target > hi else "below" if target < lo else "inside (but not between neighbouring T)"
    return (f"the teacher's {metric} {target:.4g} is {side} this row's range {lo:.4g}..{hi:.4g} over T in "
            f"[{min(ts):g}, {max(ts):g}]")


def _frontier(model, task: Task, cfg: BenchConfig, rows: list[BenchRow], eps: float, progress: bool,
              cond: Condition | None = None) -> None:
    """Draw every non-teacher row again at each ``cfg.frontier`` temperature (times the row's own; same seeds as
    the row, so T = 1 reproduces it), score each draw, and read the headline metric at the teacher's diversity
    (``value_at_diversity``; in log for tasks with ``gap_in_log``). Fills ``frontier`` and ``at_teacher_diversity``."""
    q, d = task.pairs[0]
    temps = sorted(set(float(t) for t in cfg.frontier))
    teacher = next(r for r in rows if r.method == "teacher")
    todo = [r for r in rows if r.method != "teacher"]
    bar = tqdm(total=len(todo) * len(temps), desc="frontier", disable=not progress or not dist.is_main())
    for r in todo:
        smp = row_sampler(r, eps, cfg.theta)
        r.frontier = []
        for t in temps:
            bar.set_postfix_str(f"{r.label} nfe={r.nfe} T={t:g}")
            if t == 1.0:  # the row itself: same sampler, seeds and samples (tests/test_frontier.py checks it)
                r.frontier.append((t, dict(r.metrics)))
                bar.update()
                continue
            res, _ = _run_sampler(model, cfg, smp.with_temperature(t * smp.temperature), cond)
            r.frontier.append((t, _score(task, res.x, cond)))
            bar.update()
        r.at_teacher_diversity = value_at_diversity([(t, m[q], m[d]) for t, m in r.frontier], teacher.metrics[d],
                                                    log_scale=getattr(task, "gap_in_log", False))
    bar.close()


def _fill_gap(rows: list[BenchRow], teacher: BenchRow, metric: str, higher_is_better: bool,
              log_scale: bool = False) -> None:
    """gap_closed = (euler - row) / (euler - teacher) on the headline metric (its log when ``log_scale``), per
    NFE (1 = as good as the teacher). Left out (None) at an NFE where Euler is not worse than the teacher: there
    is no gap to close, and dividing by a difference of the wrong sign, or one inside the sampling noise, would
    turn a worse row into a large "gap closed" (Euler@64 on text-uniform sits 1.4% below the teacher)."""
    f = (lambda v: math.log(v) if v > 0 else float("nan")) if log_scale else (lambda v: v)
    for nfe in {r.nfe for r in rows if r.method != "teacher"}:
        euler = next((r for r in rows if r.nfe == nfe and r.method == "uniform" and r.base == "euler"), None)
        if euler is None:
            continue
        gap = f(euler.metrics[metric]) - f(teacher.metrics[metric])
        worse = gap < -1e-12 if higher_is_better else gap > 1e-12
        for r in rows:
            if r.nfe == nfe and r.method != "teacher":
                r.gap_closed = (f(euler.metrics[metric]) - f(r.metrics[metric])) / gap if worse else None


AT_TEACHER = "at teacher's H"  # the table's frontier column


def format_table(result: BenchResult, task: Task) -> str:
    """An aligned text table: one row per sampler, quality metrics beside their diversity partners."""
    cols = []
    for q, d in task.pairs:
        for c in (q, d):
            if c not in cols:
                cols.append(c)
    q, d = result.headline
    frontier = any(r.frontier for r in result.rows)
    teacher = next((r for r in result.rows if r.method == "teacher"), None)
    head = ["sampler", "NFE", "steps x calls", *cols, *([AT_TEACHER] if frontier else []), "gap closed", "s/sample",
            "overhead"]
    lines, notes = [], []
    for r in result.rows:
        calls = "" if not r.steps else f"{r.steps}x{r.nfe // r.steps}"
        cells = [display_label(r), nfe_cell(r), calls] + [f"{r.metrics.get(c, float('nan')):.4f}" for c in cols]
        if frontier:
            v = r.at_teacher_diversity
            cells.append("" if v is None else f"{v:.4f}" if math.isfinite(v) else "out of range")
            if v is not None and not math.isfinite(v) and teacher is not None:
                notes.append(f"  {r.label} (NFE {r.nfe}): {frontier_range(r, teacher.metrics.get(d, math.nan), d)}")
        cells.append("" if r.gap_closed is None else f"{r.gap_closed:+.2f}")
        cells.append(f"{r.sec_per_sample * 1e3:.1f}ms")
        cells.append("" if r.overhead is None else f"{r.overhead:.3f}x")
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(head), fmt(["-" * w for w in widths])]
    prev_nfe = None
    for cells, r in zip(lines, result.rows):
        if prev_nfe is not None and r.nfe != prev_nfe:
            out.append("")
        out.append(fmt(cells))
        prev_nfe = r.nfe
    out.append("")
    out.append(f"gap closed: share of the Euler->teacher gap in {q} closed at equal NFE (1 = teacher quality; "
               f"blank where Euler is not worse than the teacher); read it beside {d} (diversity). overhead: wall time / the base sampler's, interleaved runs. "
               "NFE: network calls per sample, counted; steps x calls: steps per sample x calls per step.")
    if any(r.nfe_mean is not None for r in result.rows):
        out.append("eb / threshold: adaptive, compared at equal mean NFE: the parameter (in the label) is chosen so "
                   "that the mean network calls per sample of the row's draw is at most the row's NFE (mean and max "
                   "shown beside it).")
    if frontier:
        temps = sorted({t for r in result.rows for t, _ in r.frontier or []})
        log = f" in log {q}" if getattr(task, "gap_in_log", False) else ""
        sweep = ", ".join(f"{t:g}" for t in temps)
        out.append(f"{AT_TEACHER}: {q} read off the row's value-temperature sweep (T = {sweep}) at the teacher's {d} "
                   f"(H), interpolated linearly{log} between the two temperatures that bracket it; out of range where "
                   "the sweep does not reach the teacher's diversity (no extrapolation):")
        out += notes if notes else ["  every row's sweep brackets it"]
    return "\n".join(out)
