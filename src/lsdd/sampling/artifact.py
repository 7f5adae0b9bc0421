"""The learned-sampler artifact: a few dozen numbers in a self-describing JSON file.

A ``LearnedSampler`` names its base sampler, the graph and noise it was learned for, its time grid (M + 1
points, strictly decreasing from 1), its M coefficients and how they enter (``linear`` / ``log``), and its
provenance (the model's fingerprint, the teacher, the distillation settings, the lsdd version).

Format version 2 adds the optional ``conditioning`` of a state-conditioned sampler (``--method lsd-c``,
``lsdd.sampling.conditioned``): ``{"feature": "confidence", "slope": [M], "beta": [M]}``, where ``coeffs`` holds its phi_k.
Version 1 files (no such field) still load and mean what they meant.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..errors import UserError
from ..graphs import GRAPHS
from ..noise import noise_from_dict
from .samplers import PHI_MODES
from .steps import ONE_CALL
from .schedules import check_times

FORMAT = "lsdd-learned-sampler"
FORMAT_VERSION = 2  # written
READABLE_VERSIONS = (1, 2)
FEATURES = ("confidence",)
# lsd-c movers: each token on its own; a rounded number per sequence chosen by weight; or that number chosen spread
# along the sequence (draws.CountedLaw, choice "weight" / "spread")
COUNTS = ("independent", "rounded", "spread")


@dataclass(frozen=True)
class LearnedSampler:
    base: str  # a one-call step rule: steps.ONE_CALL
    graph: str  # "absorbing" | "uniform"
    num_tokens: int
    noise: dict[str, Any]  # noise.to_dict()
    times: tuple[float, ...]  # (M + 1,)
    coeffs: tuple[float, ...]  # (M,)
    phi_mode: str = "linear"
    provenance: dict[str, Any] = field(default_factory=dict)
    conditioning: dict[str, Any] | None = None  # lsd-c: {"feature", "slope" (M,), "beta" (M,), "count"?}
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        validate(asdict(self))

    @property
    def nfe(self) -> int:
        """Network calls per sample: exactly one per step."""
        return len(self.coeffs)

    def times_tensor(self) -> torch.Tensor:
        return torch.tensor(self.times, dtype=torch.float64)

    def coeffs_tensor(self) -> torch.Tensor:
        return torch.tensor(self.coeffs, dtype=torch.float64)

    def sampler_kwargs(self, graph) -> dict[str, Any]:
        """Keyword arguments of ``samplers.sample`` / ``sample_batched`` for this sampler on ``graph``:
        method (a rule name, or the conditioned rule), coeffs (M,) or the state-dependent function, phi_mode."""
        if self.conditioning is None:
            return {"method": self.base, "coeffs": self.coeffs_tensor(), "phi_mode": self.phi_mode}
        from .conditioned import ConditionedParams, ConditionedRule

        params = ConditionedParams.from_count(self.nfe, self.conditioning.get("count", "independent"),
                                              self.coeffs_tensor().log(),
                                              torch.tensor(self.conditioning["slope"], dtype=torch.float64),
                                              torch.tensor(self.conditioning["beta"], dtype=torch.float64).log())
        params.requires_grad_(False)
        return {"method": ConditionedRule(self.base), "coeffs": params.coeff_fn(graph), "phi_mode": self.phi_mode}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nfe"] = self.nfe
        return {"format": d.pop("format"), "format_version": d.pop("format_version"), **d}

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "LearnedSampler":
        try:
            validate(d)
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
        d = dict(d)
        d.pop("nfe", None)
        d["times"] = tuple(float(v) for v in d["times"])
        d["coeffs"] = tuple(float(v) for v in d["coeffs"])
        d["format_version"] = FORMAT_VERSION  # read as the current version (a v1 file has no conditioning)
        return cls(**d)

    @classmethod
    def load(cls, path: str | Path) -> "LearnedSampler":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"learned sampler file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not a learned-sampler JSON file ({e})") from None
        if not isinstance(d, dict):
            raise UserError(f"{path}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, str(path))

    def check_model(self, graph_name: str, num_tokens: int, noise: dict[str, Any], fingerprint: str,
                    force: bool = False) -> None:
        """Refuse a model this sampler was not learned for (a fingerprint mismatch passes with ``force``)."""
        if graph_name != self.graph or num_tokens != self.num_tokens:
            raise UserError(
                f"sampler was learned for a {self.graph} graph with {self.num_tokens} tokens, "
                f"but the model has a {graph_name} graph with {num_tokens} tokens")
        if noise != self.noise:
            raise UserError(f"sampler was learned for noise {self.noise}, but the model uses {noise}")
        want = self.provenance.get("model_fingerprint")
        if want is not None and want != fingerprint and not force:
            raise UserError(
                f"sampler was learned for model {want} ({self.provenance.get('model_source', '?')}), "
                f"not for this model ({fingerprint}); pass --force to use it anyway")


_REQUIRED = {"format": str, "format_version": int, "base": str, "graph": str, "num_tokens": int,
             "noise": dict, "times": list, "coeffs": list, "phi_mode": str, "provenance": dict}


def validate(d: dict[str, Any]) -> None:
    """Raise UserError naming the first bad field of an artifact dict."""
    for key, typ in _REQUIRED.items():
        if key not in d:
            raise UserError(f"missing field {key!r}")
        val = d[key]
        if typ is list and isinstance(val, tuple):
            continue
        if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
            raise UserError(f"field {key!r} must be {typ.__name__}, got {val!r}")
    if d["format"] != FORMAT:
        raise UserError(f"format is {d['format']!r}, expected {FORMAT!r}")
    if d["format_version"] not in READABLE_VERSIONS:
        raise UserError(f"unsupported format_version {d['format_version']!r} (this lsdd reads "
                        f"{', '.join(map(str, READABLE_VERSIONS))})")
    if d["base"] not in ONE_CALL:
        raise UserError(f"unknown base sampler {d['base']!r}; expected one of {list(ONE_CALL)} (a learned sampler "
                        "makes one network call per step)")
    if d["graph"] not in GRAPHS:
        raise UserError(f"unknown graph {d['graph']!r}; expected one of {sorted(GRAPHS)}")
    if d["phi_mode"] not in PHI_MODES:
        raise UserError(f"unknown phi_mode {d['phi_mode']!r}; expected one of {list(PHI_MODES)}")
    if d["num_tokens"] < 1:
        raise UserError(f"num_tokens must be >= 1, got {d['num_tokens']}")
    try:
        noise_from_dict(d["noise"])
    except ValueError as e:
        raise UserError(str(e)) from None
    values = list(d["times"]) + list(d["coeffs"])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise UserError("times and coeffs must be finite numbers")
    if len(d["coeffs"]) != len(d["times"]) - 1:
        raise UserError(f"{len(d['times'])} times need {len(d['times']) - 1} coeffs, got {len(d['coeffs'])}")
    if "nfe" in d and d["nfe"] != len(d["coeffs"]):
        raise UserError(f"nfe is {d['nfe']!r} but there are {len(d['coeffs'])} steps")
    try:
        check_times(torch.tensor(d["times"], dtype=torch.float64))
    except ValueError as e:
        raise UserError(str(e)) from None
    cond = d.get("conditioning")
    if cond is not None:
        _validate_conditioning(d, cond)


def _validate_conditioning(d: dict[str, Any], cond: Any) -> None:
    if d["format_version"] < 2:
        raise UserError(f"field 'conditioning' needs format_version 2, the file says {d['format_version']!r}")
    if not isinstance(cond, dict):
        raise UserError(f"field 'conditioning' must be an object, got {cond!r}")
    if cond.get("feature") not in FEATURES:
        raise UserError(f"unknown conditioning feature {cond.get('feature')!r}; expected one of {list(FEATURES)}")
    if d["phi_mode"] != "linear":
        raise UserError(f"a conditioned sampler needs linear phi, got {d['phi_mode']!r}")
    m = len(d["coeffs"])
    for key in ("slope", "beta"):
        vals = cond.get(key)
        if not isinstance(vals, (list, tuple)) or len(vals) != m or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
            raise UserError(f"conditioning {key!r} must be {m} finite numbers, got {vals!r}")
    if cond.get("count", "independent") not in COUNTS:
        raise UserError(f"conditioning 'count' must be one of {list(COUNTS)}, got {cond.get('count')!r}")
    if min(cond["beta"]) <= 0 or min(d["coeffs"]) <= 0:
        raise UserError("a conditioned sampler needs coeffs > 0 and beta > 0")
    if d["graph"] != "absorbing" and (any(cond["slope"]) or any(b != 1 for b in cond["beta"])
                                      or cond.get("count", "independent") == "independent"):
        raise UserError(f"on the {d['graph']!r} graph a conditioned sampler may only count its movers (count "
                        f"'rounded' or 'spread', slope 0, beta 1); confidence slopes and value temperatures need "
                        f"the absorbing graph")


def movers_sampler(times, base: str, graph, noise, count: str, provenance: dict[str, Any] | None = None,
                   beta: float = 1.0) -> LearnedSampler:
    """The base sampler on ``times`` (M + 1,) with counted movers (``count`` "rounded": chosen by weight; "spread":
    spread along the sequence) and nothing learned (Phi = 1, slope 0; ``beta`` a value inverse temperature at
    every step, 1 = none; absorbing graph only): how ``lsdd bench --methods counted spread`` and ``lsdd sample
    --counted/--spread`` name these rules as files. On the absorbing graph the movers are the tokens that unmask; on
    the others, the tokens that change."""
    if count not in COUNTS[1:]:
        raise ValueError(f"counted movers are {list(COUNTS[1:])}, not {count!r}")
    if beta != 1.0 and not graph.absorbing:
        raise ValueError(f"a value temperature (beta {beta}) needs the absorbing graph, not {graph.name!r}")
    m = len(times) - 1
    return LearnedSampler(base=base, graph=graph.name, num_tokens=graph.num_tokens, noise=noise.to_dict(),
                          times=tuple(float(v) for v in times), coeffs=(1.0,) * m, phi_mode="linear",
                          provenance={"method": {"rounded": "counted", "spread": "spread"}[count],
                                      "note": "nothing learned: the base sampler with counted movers",
                                      **(provenance or {})},
                          conditioning={"feature": "confidence", "slope": [0.0] * m, "beta": [float(beta)] * m,
                                        "count": count})

