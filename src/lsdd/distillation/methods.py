"""Distillation methods as small strategies, each with its own settings (arXiv 2509.19962 for LSD / LSD+).

A method says what is learned and how it is fitted; the pipeline (``lsdd.distillation.pipeline.distill``)
runs teacher -> fit -> validate -> accept around it, the same for every method and every entry point.

- ``LSD``: one coefficient Phi_k per step on a fixed grid, fitted by matching the teacher's scores along its
  trajectories (``objective="trajectory"``, the paper) or its outputs (``"hellinger"``/``"mmd"``/``"features"``,
  CMA-ES with common random numbers).
- ``LSDPlus``: LSD that also learns the time grid (trajectory objective).
- ``LSDC``: per-step Phi, confidence slope and value temperature (state-conditioned, the last two on the absorbing
  graph), its movers or last step chosen among training-free ones, fitted on the output distribution.
- ``JYS``: a time grid from Jump Your Steps' KLUB search on the teacher's outputs (Phi = 1).

``engine_fields`` maps a method onto the fields of the fitting engine's config (``distill.DistillConfig``); that
config is internal: users and the CLI set a method's own fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from ..errors import UserError
from .objective import OBJECTIVES

LOSSES = ("l2", "kl", "rkl")


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise UserError(msg)


@dataclass(frozen=True)
class _CMA:
    """Settings of the distribution-level fit (CMA-ES over ``basis`` numbers per parameter family). early_exit:
    skip the fit and keep the base when the base's outputs cannot be told from the teacher's by the objective
    (permutation p-value >= 0.25, ``objective.at_teacher``)."""

    basis: int = 2
    obj_samples: int = 256
    cma_iters: int = 12
    cma_popsize: int = 8
    cma_sigma: float | None = None  # None: objective.default_sigma (0.5; 0.2 for nll@entropy)
    cma_probe: bool = False  # shape CMA-ES's first search by the objective's Hessian at the start (objective.probe_metric)
    early_exit: bool = True

    def _check_cma(self) -> None:
        _need(self.basis >= 1 and self.obj_samples >= 2 and self.cma_iters >= 1 and self.cma_popsize >= 2
              and (self.cma_sigma is None or self.cma_sigma > 0), f"need basis >= 1, obj_samples >= 2, cma_iters >= 1, cma_popsize >= 2, "
                                      f"cma_sigma > 0; got {self.basis}, {self.obj_samples}, {self.cma_iters}, "
                                      f"{self.cma_popsize}, {self.cma_sigma}")


@dataclass(frozen=True)
class LSD(_CMA):
    """LSD: Phi_k per step on the starting grid.

    phi_mode: "linear" (Phi scales the scores; on masked models only how many tokens unmask) or "log" (Phi
    scales log-scores: a per-step value temperature plus a rate change). loss: "l2" on the scores (the paper),
    "kl"/"rkl" between the one-step laws. zeta: share of start tokens perturbed. spread: spread movers (None:
    on for absorbing-graph models with linear Phi and independent paths). coupled: teacher and student share
    clocks and value uniforms (absorbing graph). closed_form: linear + l2, refit Phi exactly while simulating.
    """

    name: ClassVar[str] = "lsd"
    phi_mode: str = "linear"
    loss: str = "l2"
    zeta: float = 0.05
    epochs: int = 20
    lr: float = 0.05
    closed_form: bool = False
    spread: bool | None = None
    coupled: bool = False
    objective: str = "trajectory"

    def check(self) -> None:
        _need(self.phi_mode in ("linear", "log"), f"phi_mode must be linear or log, got {self.phi_mode!r}")
        _need(self.loss in LOSSES, f"loss must be one of {list(LOSSES)}, got {self.loss!r}")
        _need(0.0 <= self.zeta <= 1.0, f"zeta must lie in [0, 1], got {self.zeta}")
        _need(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        _need(self.objective in OBJECTIVES, f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        _need(not self.closed_form or (self.phi_mode == "linear" and self.loss == "l2"),
              "the closed-form fast path needs phi_mode linear and loss l2")
        _need(not self.spread or (self.phi_mode == "linear" and not self.coupled),
              "spread movers use linear Phi and independent teacher/student paths (drop phi_mode log / coupled)")
        self._check_cma()

    def needs_absorbing(self) -> list[str]:
        return ["coupled"] if self.coupled else []

    def engine_fields(self) -> dict[str, Any]:
        return {**asdict(self), "method": self.name}


@dataclass(frozen=True)
class LSDPlus(LSD):
    """LSD+: LSD that also learns the time grid. lr_time: Adam rate of the grid logits; alternate: alternate
    epochs of Phi and grid; match_times: compare with the teacher's score moved to the student's time
    (absorbing graph); init_lsd: start from LSD's Phi; select: keep LSD when it is closer to held-out outputs."""

    name: ClassVar[str] = "lsd+"
    lr_time: float = 0.05
    alternate: bool = False
    match_times: bool = False
    init_lsd: bool = False
    select: bool = False

    def check(self) -> None:
        super().check()
        _need(self.objective == "trajectory", "lsd+ is fitted on the teacher's trajectories (objective trajectory); "
                                              "a distribution objective fits lsd or lsd-c on a fixed grid")
        _need(not self.closed_form, "the closed-form fast path fits lsd, not lsd+")

    def needs_absorbing(self) -> list[str]:
        return super().needs_absorbing() + (["match_times"] if self.match_times else [])


@dataclass(frozen=True)
class LSDC(_CMA):
    """lsd-c: per-step Phi (how many tokens move) and value temperature, and on request a confidence slope (absorbing
    graph), fitted on the output distribution by CMA-ES from the base sampler (all at their base values, which stay a
    candidate). objective: "auto" (the default) decides by the model's graph (``objective.resolve_objective``):
    on masked models "nll@entropy+mmd-guard" (the model's NLL bound moved along the base's temperature frontier to
    the teacher's entropy - quality at matched diversity, what validation reads -, with the n-gram MMD^2 counted only
    where it is worse than at the start; since stop 31, re-fitted at stop 32: 48% and 31% (two fits) of spread movers'
    gap to the teacher at 2 NFE on text and 61% at 4, where "features+mmd" gave 28% and 35%), elsewhere "features+mmd" (the energy distance of per-sample
    model NLL bound and unigram entropy to the teacher's outputs plus the pooled n-gram MMD^2, each in units of its
    own noise; it sees images, where "features" alone cannot tell 8-step Euler from the teacher). Or any name of
    ``objective.OBJECTIVES``. counted: movers counted and chosen by weight;
    spread: counted and spread along the sequence (None: on unless counted, absorbing graph). choose: first pick the
    movers among spread / Halton / DUS order (masked models with spread movers) or, on the other graphs, independent or
    spread movers and a Tweedie last step (the posterior p(x0 | x_t)), by the objective at the base parameters (off by
    default: on text at 4 NFE it picked Halton by a margin within noise, benchmarks/lsdc_features.md). slope: also fit
    the confidence slope (absorbing graph; off by default since stop 29: it hurt text at 4 NFE in the ablation, and
    without it the features+mmd fits were accepted at 2 and 4 NFE; benchmarks/issue24_bench.md)."""

    name: ClassVar[str] = "lsd-c"
    objective: str = "auto"
    counted: bool = False
    spread: bool | None = None
    choose: bool = False
    slope: bool = False

    def check(self) -> None:
        _need(self.objective == "auto" or (self.objective in OBJECTIVES and self.objective != "trajectory"),
              f"lsd-c is fitted on the output distribution: objective \"auto\" or one of "
              f"{[o for o in OBJECTIVES if o != 'trajectory']}, got {self.objective!r}")
        self._check_cma()

    def needs_absorbing(self) -> list[str]:
        return []

    def engine_fields(self) -> dict[str, Any]:
        return {**asdict(self), "method": self.name}


@dataclass(frozen=True)
class JYS:
    """Jump Your Steps (arXiv 2410.07761): the time grid that minimises a KL upper bound of tau-leaping's error,
    searched on the teacher's outputs; Phi = 1. max_iter: golden-section evaluations per grid point."""

    name: ClassVar[str] = "jys"
    max_iter: int = 16

    def check(self) -> None:
        _need(self.max_iter >= 2, f"max_iter must be >= 2, got {self.max_iter}")

    def needs_absorbing(self) -> list[str]:
        return []

    def engine_fields(self) -> dict[str, Any]:
        """The engine runs no epochs for JYS: it only holds out the validation trajectories and validates the grid
        against the plain base rule (Phi = 1, independent movers)."""
        return {"method": "lsd", "spread": False, "epochs": 0}


METHODS: dict[str, type] = {"lsd": LSD, "lsd+": LSDPlus, "lsd-c": LSDC, "jys": JYS}


def get_method(method: str | Any, **options) -> Any:
    """A method object: ``method`` itself (LSD(), ...), or the named method with ``options`` as its settings."""
    if not isinstance(method, str):
        if options:
            raise UserError("pass settings on the method object itself, e.g. lsdd.LSD(epochs=5)")
        if type(method) not in METHODS.values():
            raise UserError(f"unknown method {method!r}; expected one of {list(METHODS)} or LSD(), LSDPlus(), LSDC(), "
                            "JYS()")
        return method
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    cls = METHODS[method]
    known = {f.name for f in fields(cls)}
    bad = sorted(set(options) - known)
    if bad:
        raise UserError(f"{method} has no setting {bad[0]!r}; its settings are {sorted(known)}")
    return cls(**options)


def method_options(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` (e.g. parsed CLI flags) that are settings of ``cls``."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


__all__ = ["LSD", "LSDPlus", "LSDC", "JYS", "METHODS", "get_method", "method_options"]
