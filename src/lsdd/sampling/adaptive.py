"""Adaptive samplers for masked (absorbing) models: the number of network calls depends on the sample.

Each network call reads the clean-token law p(x0_i | x_t) of every masked position i (on the absorbing graph
the masked rows' real-token scores are proportional to it: ``lsdd.models.clean``), decides *which* masked
tokens to unmask from that law alone (deterministically), and then draws each chosen token's value from its
own law. Unmasked tokens never change. A sequence stops calling the network once it has no mask.

Rules (``ADAPTIVE`` maps each to its parameter):

* ``eb`` - EB-Sampler, "Accelerated Sampling from Masked Diffusion Models via Entropy Bounded Unmasking"
  (Ben-Hamu, Gat, Severo, Nolte, Karrer; arXiv 2505.24857). Sort the masked tokens by the entropy
  H_i = -sum_v p_i(v) log p_i(v) (nats) of their predicted law, ascending, and unmask the largest prefix U with

      sum_{i in U} H_i - max_{i in U} H_i <= gamma,

  the paper's entropy bound (the left side bounds the mutual information among the tokens of U, so they are
  nearly independent given x_t). The one-token prefix always passes (0 <= gamma), so every call unmasks at
  least one token. The paper also allows other orders (confidence, margin); lsdd orders by the entropy itself.
  gamma = 0 unmasks one token per call (plus any further zero-entropy tokens); gamma >= (L - 1) log N unmasks
  everything in one call.
* ``threshold`` - Fast-dLLM's confidence-aware parallel decoding (Wu et al., arXiv 2505.22618): unmask every
  masked token whose confidence max_v p_i(v) *exceeds* tau (strictly, as the paper states it; the released
  code compares with >=, which differs only at exact ties); if none does, unmask the single most confident
  one. tau = 1 unmasks one token per call; tau = 0 everything in one call. Fast-dLLM's released code commits
  the argmax value (temperature 0); lsdd draws the value from the predicted law (use the sampler's
  ``temperature`` to sharpen it), so both rules are samplers of the model's law in the one-token limit.

Design choices:

* **The network's time.** A call on a row with m of L tokens masked feeds the network the time t at which the
  noise schedule's expected masked fraction equals m / L: 1 - e^{-sigma_bar(t)} = m / L (for log-linear noise
  t = (m / L) / (1 - eps) in closed form; other schedules by bisection), kept inside the sampler's
  [times[-1], times[0]] = [eps, 1]. Each row gets its own time.
* **A cap on calls.** Every call unmasks >= 1 token of each row it is made for, so L calls always suffice; the
  loop stops with an error if a row still has masks after L calls (it cannot happen).
* **NFE per sample.** A batch keeps calling while any row has masks, but only the rows that still have masks
  are passed to the network, and only they are counted: ``nfe[b]`` is the number of calls row b needed. They
  are reported as mean and max.
* **Semi-autoregressive blocks** (``block`` B, as Fast-dLLM decodes LLaDA and Dream): the free positions (all
  of them, or those a prompt leaves: the positions not held fixed) are cut into consecutive blocks of B, and
  each call's rule chooses only among the masked tokens of the row's first block that still has masks (the
  prefix of the sequence is finished first). The network still sees the whole sequence, later blocks masked,
  at the time of the whole row's masked fraction. Every call unmasks at least one token, so a row needs at
  least ceil(F / B) calls (one per block of its F free positions) and at most F.
* **Given tokens** (``fixed``; a prompt): they are never chosen; the rows' time is still that of their masked
  fraction m / L, which a prompt lowers.
* **Randomness.** Each call draws one float64 uniform per position of the *whole* batch from the explicit
  generator (finished rows discard theirs), so a row's draws do not depend on when the other rows finish;
  values are drawn by inverse CDF in float64.

``match_budget`` picks gamma / tau so that the mean NFE is at most a budget (for comparisons at equal mean
NFE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import ScoreContractError, UserError
from ..graphs import Graph
from ..noise import LogLinear, Noise
from .draws import Generators, RowStreams, check_generator, inverse_cdf, make_generator, uniforms
from .loop import CountedScore, ScoreFn

ADAPTIVE = {"eb": "gamma", "threshold": "tau"}  # rule -> its parameter's name


# ---- a call's law, apart from its draw ---------------------------------------------------------------------
def clean_law(graph: Graph, score: Tensor) -> Tensor:
    """p(x0_i = v | x_t) (B, L, N) float64 from an absorbing graph's score (B, L, S): the real-token columns
    normalised per row (meaningful on masked rows). A row with no positive real-token score is uniform."""
    w = score[..., : graph.num_tokens].to(torch.float64).clamp_min(0.0)
    total = w.sum(-1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.full_like(w, 1.0 / graph.num_tokens))


def entropy(law: Tensor) -> Tensor:
    """Shannon entropy in nats of each row of ``law`` (..., N) -> (...) float64 (0 log 0 = 0)."""
    return -torch.special.xlogy(law, law).sum(-1)


def eb_select(law: Tensor, masked: Tensor, gamma: float) -> Tensor:
    """EB-Sampler's set (B, L) bool: the masked tokens sorted by entropy (ascending, ties by position), the
    longest prefix with sum H - max H <= gamma (at least one token of every row that has a mask)."""
    h = torch.where(masked, entropy(law), torch.full(masked.shape, math.inf, dtype=torch.float64,
                                                      device=law.device))
    h_sorted, order = torch.sort(h, dim=-1, stable=True)
    finite = torch.isfinite(h_sorted)
    csum = torch.where(finite, h_sorted, torch.zeros_like(h_sorted)).cumsum(-1)
    # sorted ascending, so the prefix's max is its last entry: sum - max = the sum of the entries before it
    before = csum - torch.where(finite, h_sorted, torch.zeros_like(h_sorted))
    keep_sorted = finite & (before <= gamma)
    return torch.zeros_like(masked).scatter(-1, order, keep_sorted)


def threshold_select(law: Tensor, masked: Tensor, tau: float) -> Tensor:
    """Fast-dLLM's set (B, L) bool: the masked tokens with max_v p_i(v) > tau, or the single most confident
    masked token of a row where none is (ties: the first position)."""
    conf = torch.where(masked, law.max(-1).values, torch.full(masked.shape, -1.0, dtype=torch.float64,
                                                               device=law.device))
    chosen = masked & (conf > tau)
    best = torch.zeros_like(masked).scatter(-1, conf.argmax(-1, keepdim=True), True) & masked
    return torch.where(chosen.any(-1, keepdim=True), chosen, best)


SELECT: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {"eb": eb_select, "threshold": threshold_select}


@dataclass
class AdaptiveLaw:
    """One call's law for B rows: ``unmask`` (B, L) bool, the tokens that unmask (a function of the law alone),
    and ``values`` (B, L, N) float64, each token's value law. The next state is x with x_i ~ values_i for
    every i in unmask, independently."""

    x: Tensor
    unmask: Tensor
    values: Tensor

    def draw(self, u: Tensor) -> Tensor:
        """The next state for float64 uniforms ``u`` (B, L) (one per position; only the unmasked ones used)."""
        rows = self.unmask.nonzero(as_tuple=True)
        out = self.x.clone()
        out[rows] = inverse_cdf(self.values[rows], u[rows])
        return out


def current_block(masked: Tensor, block: int | None, fixed: Tensor | None = None) -> Tensor:
    """The masked positions (B, L) bool of each row's current semi-autoregressive block: the block of ``block``
    consecutive free positions (the positions not ``fixed`` ((B, L) or (L,) bool), in position order: the 1st to
    the B-th, the (B+1)-th to the 2B-th, ...; the last one may be shorter) that holds the row's first free mask.
    ``block`` None: every masked position (the whole sequence is one block)."""
    if block is None:
        return masked if fixed is None else masked & ~fixed
    pos = torch.arange(masked.shape[-1], device=masked.device)
    if fixed is not None:  # the rank of each position among its row's free positions
        free = ~fixed.expand_as(masked)
        masked, pos = masked & free, free.long().cumsum(-1) - 1
    big = torch.full_like(masked, masked.shape[-1], dtype=torch.long)
    first = torch.where(masked, pos.expand_as(masked), big).min(-1, keepdim=True).values
    return masked & (pos // block == first // block)


def adaptive_law(rule: str, param: float, graph: Graph, x: Tensor, score: Tensor,
                 block: int | None = None, fixed: Tensor | None = None) -> AdaptiveLaw:
    """The law of one ``rule`` call on x (B, L) with the score (B, L, S) at x; with ``block`` the rule chooses
    only among the masked tokens of each row's current block (``current_block``), ``fixed`` (B, L) bool the
    positions held (never chosen, not counted in the blocks)."""
    masked = current_block(x == graph.mask_id, block, fixed)
    law = clean_law(graph, score)
    return AdaptiveLaw(x, SELECT[rule](law, masked, float(param)), law)


# ---- the network's time ------------------------------------------------------------------------------------
def time_of_masked_fraction(noise: Noise, frac: Tensor, iters: int = 64) -> Tensor:
    """t (same shape, float64) in [0, 1] with 1 - e^{-sigma_bar(t)} = frac: closed form for log-linear noise
    (t = frac / (1 - eps)), bisection on [0, 1] otherwise (sigma_bar increasing); t = 1 where even t = 1 masks
    less than frac."""
    frac = frac.to(torch.float64)
    if isinstance(noise, LogLinear):
        return (frac / (1.0 - noise.eps)).clamp(0.0, 1.0)
    lo, hi = torch.zeros_like(frac), torch.ones_like(frac)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = -torch.expm1(-noise.total(mid).to(torch.float64)) < frac
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return hi


# ---- the loop ----------------------------------------------------------------------------------------------
@dataclass
class AdaptiveOutput:
    """x: (B, L) int64 without masks; nfe: (B,) int64, the network calls each row needed; calls: the batch
    calls made (= nfe.max())."""

    x: Tensor
    nfe: Tensor
    calls: int
    stopped: bool = False  # True: cut short by ``max_row_calls`` (rows may still hold masks)

    @property
    def nfe_mean(self) -> float:
        return float(self.nfe.to(torch.float64).mean())

    @property
    def nfe_max(self) -> int:
        return int(self.nfe.max()) if self.nfe.numel() else 0


@torch.no_grad()
def adaptive_loop(score_fn: ScoreFn | CountedScore, graph: Graph, noise: Noise, x: Tensor, rule: str, param: float,
                  *, generator: Generators = None, t_range: tuple[float, float] = (1.0, 1e-5),
                  block: int | None = None, max_row_calls: int | None = None,
                  on_call: Callable[[int, Tensor, AdaptiveLaw, Tensor], None] | None = None,
                  fixed: Tensor | None = None) -> AdaptiveOutput:
    """Run ``rule`` (``ADAPTIVE``) with parameter ``param`` from x (B, L) until no row has a mask.

    Call k passes the rows that still have masks to the network at their own times (``time_of_masked_fraction``,
    clipped to ``t_range`` = (1, eps)), builds the law (``adaptive_law``, within ``block``-token semi-autoregressive
    blocks when given), draws one uniform per position of the whole batch and unmasks.
    ``on_call(k, active (B,) bool, law of the active rows, x after)`` watches.

    ``max_row_calls``: stop early, returning ``stopped=True`` and rows that may still hold masks, once the calls
    summed over the rows exceed it (``match_budget``: the mean NFE is then known to exceed the budget).
    ``fixed`` (B, L) bool: positions held at their token in x (given tokens; a held mask stays masked and makes
    no call), the blocks cut from the free positions only.
    """
    check_rule(rule, param)
    check_block(block)
    if not graph.absorbing:
        raise UserError(f"adaptive samplers ({', '.join(ADAPTIVE)}) need a masked (absorbing) model, not the "
                        f"{graph.name} graph")
    for gen in generator.generators if isinstance(generator, RowStreams) else [generator]:
        check_generator(gen, x.device)
    call = score_fn if isinstance(score_fn, CountedScore) else CountedScore(score_fn, graph, noise)
    batch, length = x.shape
    t_hi, t_lo = t_range
    nfe = torch.zeros(batch, dtype=torch.long, device=x.device)
    calls = 0
    while True:
        masked = x == graph.mask_id if fixed is None else (x == graph.mask_id) & ~fixed
        active = masked.any(-1)
        if not bool(active.any()):
            break
        if calls == length:
            raise RuntimeError(f"{int(active.sum())} sequences still have masks after {length} calls; every call "
                               "should unmask at least one token")
        call.step = calls
        xa = x[active]
        t = time_of_masked_fraction(noise, masked[active].sum(-1).to(torch.float64) / length).clamp(t_lo, t_hi)
        score = call(xa, t)
        real = score[..., : graph.num_tokens]
        bad = masked[active] & ~torch.isfinite(real).all(-1)
        if bool(bad.any()):
            raise ScoreContractError(f"network call {calls}: the score is NaN or infinite in {int(bad.sum())} masked "
                                     "token rows; the model's output is not usable there")
        law = adaptive_law(rule, param, graph, xa, score, block, None if fixed is None else fixed[active])
        u = uniforms((batch, length), generator, x.device)  # the whole batch: a row's draws ignore the others
        x = x.clone()
        x[active] = law.draw(u[active])
        nfe += active.long()
        if on_call is not None:
            on_call(calls, active, law, x)
        calls += 1
        if max_row_calls is not None and int(nfe.sum()) > max_row_calls:
            return AdaptiveOutput(x, nfe, calls, stopped=True)
    return AdaptiveOutput(x, nfe, calls)


def sample_adaptive(score_fn: ScoreFn, graph: Graph, noise: Noise, rule: str, param: float, num: int, length: int,
                    *, seed: int, batch_size: int = 64, device: torch.device | str = "cpu",
                    t_range: tuple[float, float] = (1.0, 1e-5), block: int | None = None,
                    progress: bool = False, given: Tensor | None = None) -> AdaptiveOutput:
    """``num`` sequences in batches of ``batch_size`` from the all-mask state; batch b draws from
    ``make_generator(seed, device, b)`` (as ``samplers.sample_batched``), and under torch.distributed each rank
    runs its share. Returns x (num, L) and nfe (num,) on the CPU; ``calls`` is the largest batch's count.
    ``given`` (P, L) int64: tokens held fixed (the mask id at the free positions); sample i holds row i mod P."""
    from tqdm.auto import tqdm

    from .. import dist

    n_batches = -(-num // batch_size)
    mine = dist.my_items(n_batches)
    parts: dict[int, Any] = {}
    for b in tqdm(mine, desc=f"{rule} sampling", unit="batch", leave=False, disable=not progress or not dist.is_main()):
        n = min(batch_size, num - b * batch_size)
        x = graph.sample_limit(n, length, device=device)
        fixed = None
        if given is not None:
            rows = given[(b * batch_size + torch.arange(n)) % given.shape[0]].to(device)
            fixed = rows != graph.mask_id
            x = torch.where(fixed, rows, x)
        out = adaptive_loop(score_fn, graph, noise, x, rule, param, generator=make_generator(seed, device, b),
                            t_range=t_range, block=block, fixed=fixed)
        parts[b] = (out.x.cpu(), out.nfe.cpu())
    parts = dist.gather_items(parts, n_batches)
    x = torch.cat([parts[b][0] for b in range(n_batches)])
    nfe = torch.cat([parts[b][1] for b in range(n_batches)])
    return AdaptiveOutput(x, nfe, int(nfe.max()))


# ---- parameters ---------------------------------------------------------------------------------------------
def check_block(block: Any) -> None:
    """UserError unless ``block`` is None or an integer >= 1."""
    if block is not None and (isinstance(block, bool) or not isinstance(block, int) or block < 1):
        raise UserError(f"block is a number of tokens, an integer >= 1; got {block!r}")


def check_rule(rule: Any, param: Any) -> None:
    """UserError naming a bad rule or parameter: eb needs gamma >= 0 (finite), threshold needs tau in [0, 1]."""
    if rule not in ADAPTIVE:
        raise UserError(f"unknown adaptive rule {rule!r}; expected one of {list(ADAPTIVE)}")
    name = ADAPTIVE[rule]
    if not isinstance(param, (int, float)) or isinstance(param, bool) or not math.isfinite(param):
        raise UserError(f"{rule} needs a finite number {name}, got {param!r}")
    if rule == "eb" and param < 0:
        raise UserError(f"eb's entropy budget gamma must be >= 0, got {param!r}")
    if rule == "threshold" and not 0.0 <= param <= 1.0:
        raise UserError(f"threshold's confidence tau must lie in [0, 1], got {param!r}")


def match_budget(model, rule: str, nfe_budget: float, num: int = 64, seed: int = 0, *, batch_size: int = 64,
                 iters: int = 8, temperature: float = 1.0, eps: float = 1e-5,
                 block: int | None = None, given: Tensor | None = None) -> tuple[float, float]:
    """The parameter of ``rule`` whose mean NFE is at most ``nfe_budget``, for comparisons at equal mean NFE:
    bisection on gamma (eb; mean NFE falls as gamma grows) or tau (threshold; it rises with tau), ``iters``
    steps, each one sampling run of ``num`` sequences with ``seed``, drawn exactly as ``lsdd.sample`` draws them
    (same batches and generators, so the returned mean is the one ``lsdd.sample`` then counts).

    The search starts from the most careful end (gamma = 0, tau = 1: about one token per call) and returns it
    if it already fits; otherwise it keeps the most careful parameter found whose run fits. The other end
    (gamma = (L - 1) log N + 1, tau = 0) makes one call per sample (per block with ``block``), so a budget of at
    least that always fits. A run stops as soon as its calls, summed over the samples, exceed
    ``nfe_budget * num``: its mean is then known not to fit, so a probe costs about ``nfe_budget`` calls per
    sample however careful the parameter. Returns (param, mean NFE).

    ``given`` (P, L) int64 (prompts: ``prompts.Condition.given``, the mask id at the free positions): the runs
    continue them as ``lsdd.sample(..., fixed=given)`` does (sample i holds row i mod P), so the mean NFE is the
    conditional runs' (blocks then cut the free positions).
    """
    from .draws import make_generator
    from .samplers import tempered_score

    if rule not in ADAPTIVE:
        raise UserError(f"unknown adaptive rule {rule!r}; expected one of {list(ADAPTIVE)}")
    if not isinstance(nfe_budget, (int, float)) or not nfe_budget >= 1:
        raise UserError(f"nfe_budget must be >= 1 (every sample needs a network call), got {nfe_budget!r}")
    if not isinstance(iters, int) or iters < 0:
        raise UserError(f"iters must be an integer >= 0, got {iters!r}")
    check_block(block)
    if not model.graph.absorbing:
        raise UserError(f"the {rule} sampler needs a masked (absorbing) model, not the {model.graph.name} graph")
    free = model.length
    if given is not None:
        given = given.to(torch.long)
        held_rows = given[torch.arange(min(num, given.shape[0]))]  # the rows some sample holds
        free = int((held_rows == model.graph.mask_id).sum(-1).max())
    floor = 1 if block is None else -(-free // block)
    if nfe_budget < floor:
        raise UserError(f"{rule} in blocks of {block} makes at least {floor} calls per sample (one per block of "
                        f"the {free} free tokens); a budget of {nfe_budget:g} cannot be met")
    score_fn = tempered_score(model.score_fn, temperature)
    allowed = int(math.floor(nfe_budget * num + 1e-9))  # calls summed over the samples

    def mean_nfe(p: float) -> float:
        """The run's mean NFE, or inf as soon as it is known to exceed the budget."""
        used = 0
        for b in range(-(-num // batch_size)):
            n = min(batch_size, num - b * batch_size)
            x = model.graph.sample_limit(n, model.length, device=model.device)
            fixed = None
            if given is not None:  # as sample_adaptive holds them
                rows = given[(b * batch_size + torch.arange(n)) % given.shape[0]].to(model.device)
                fixed = rows != model.graph.mask_id
                x = torch.where(fixed, rows, x)
            out = adaptive_loop(score_fn, model.graph, model.noise, x, rule, p,
                                generator=make_generator(seed, model.device, b), t_range=(1.0, eps), block=block,
                                max_row_calls=allowed - used, fixed=fixed)
            used += int(out.nfe.sum())
            if out.stopped or used > allowed:
                return math.inf
        return used / num

    careful, bold = (0.0, (model.length - 1) * math.log(model.graph.num_tokens) + 1.0) if rule == "eb" else (1.0, 0.0)
    m = mean_nfe(careful)
    if m <= nfe_budget:
        return careful, m
    best, best_m = bold, mean_nfe(bold)
    if best_m > nfe_budget:  # cannot happen for a budget >= floor: the bold end makes one call per block
        raise RuntimeError(f"{rule} with {ADAPTIVE[rule]}={bold} made more than {nfe_budget} calls per sample")
    lo = careful  # does not fit
    for _ in range(iters):
        mid = 0.5 * (lo + best)
        m = mean_nfe(mid)
        if m <= nfe_budget:
            best, best_m = mid, m
        else:
            lo = mid
    return best, best_m


__all__ = ["ADAPTIVE", "clean_law", "entropy", "eb_select", "threshold_select", "AdaptiveLaw", "adaptive_law",
           "time_of_masked_fraction", "AdaptiveOutput", "adaptive_loop", "sample_adaptive", "check_rule",
           "check_block", "current_block",
           "match_budget"]
