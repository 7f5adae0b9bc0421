"""The ``Sampler`` value: everything that decides how a few-step sample is drawn, in one frozen object.

A sampler is its time grid (M + 1 points, strictly decreasing from 1), its step rule (``euler``, ``tweedie``,
``theta-rk2``, ``theta-trapezoidal``), its per-step coefficients Phi_k (LSD, arXiv 2509.19962; None = 1), how
many tokens move per step and which (its *movers*: each token on its own coin, a counted number chosen by
weight, or that number spread along the sequence), any state-conditioned parameters (lsd-c's per-step
confidence slope and value inverse temperature), a value temperature, the model it was made for, and its
provenance. ``lsdd.sample(model, sampler, ...)`` takes it whole; nothing else builds loop arguments.

It *is* the artifact: ``save``/``load`` write and read a small self-describing JSON file. Files of earlier lsdd
versions (``"format": "lsdd-learned-sampler"``, versions 1 and 2) still load and give the same law: their
``base`` is the rule, their ``graph``/``num_tokens``/``noise`` and provenance fingerprint the model, and a
version-2 ``conditioning`` with ``count`` "rounded"/"spread" and no slope or temperature is just movers.

An *adaptive* sampler (``adaptive`` = {"rule": "eb", "gamma": g} or {"rule": "threshold", "tau": t};
``lsdd.sampling.adaptive``) has no fixed grid: its network calls depend on the sample, so its ``nfe`` is None
and ``times`` is just (1, eps), the range of the times it feeds the network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .. import atomic
from ..errors import UserError
from ..graphs import GRAPHS
from ..noise import noise_from_dict
from .adaptive import ADAPTIVE, check_rule
from .orders import ORDERS
from .schedules import check_times, uniform_times
from .steps import ONE_CALL, PHI_MODES, RULES, THETA_RULES, WithFinal, get_rule

FORMAT = "lsdd-sampler"
FORMAT_VERSION = 3
OLD_FORMAT = "lsdd-learned-sampler"  # versions 1 and 2, read
MOVERS = ("independent", "counted", "spread", *ORDERS)  # ORDERS: the peer orders of lsdd.sampling.orders
FEATURES = ("confidence",)
_COUNT = {"independent": "independent", "counted": "rounded", "spread": "spread",
          **{o: o for o in ORDERS}}  # movers -> draws' count name
_MOVERS_OF_COUNT = {"independent": "independent", "rounded": "counted", "spread": "spread"}  # old files' counts


@dataclass(frozen=True)
class Sampler:
    """A few-step sampler, whole.

    Attributes:
        times: (M + 1,) strictly decreasing from 1.0 to the grid's end eps.
        rule: step rule, a name of ``lsdd.sampling.steps.RULES``; theta-* rules make 2 network calls per step.
        coeffs: (M,) per-step Phi_k > 0 (LSD's coefficients), or None for Phi = 1 (the rule itself).
        movers: "independent" (each token its own coin, the rule as written), "counted" (each sequence moves
            the rounded expected number of tokens, chosen by weight) or "spread" (that number spread along the
            sequence): one-call rules only. Or a peer order (``lsdd.sampling.orders``): that number, chosen as the
            first ones in the dilated (DUS) or Halton order of positions, or by the step's confidence, margin
            or entropy; absorbing graph only.
        phi_mode: "linear" (Phi scales the scores) or "log" (Phi scales the log-scores).
        theta: theta of a theta-* rule (None: the paper's default).
        conditioning: lsd-c's state-conditioned parameters, {"feature": "confidence", "slope": (M,) list,
            "beta": (M,) list}, or None.
        temperature: value temperature of every jump target (1 = none; ``samplers.tempered_score``).
        model: the model it was made for, {"graph", "num_tokens", "noise", "fingerprint", "source"}, or None
            for a training-free sampler that fits any model.
        provenance: how it was made (method, teacher, settings, validation figures, lsdd version).
        adaptive: an adaptive rule of ``lsdd.sampling.adaptive`` and its parameter, {"rule": "eb", "gamma": g} or
            {"rule": "threshold", "tau": t}, or None for a fixed grid (then rule, coeffs and movers are unused).
        final: the one-call rule of the last step (the one landing on eps), or None for ``rule``'s own:
            "tweedie" on the uniform graph makes the last step the score's posterior p(x0_i | x_t) per token, which
            removes the noise tokens an Euler step would leave (``steps.WithFinal``); no extra network call.
        block: semi-autoregressive blocks of this many free positions (after a prompt: the positions not held
            fixed), decoded left to right, or None for the whole sequence at once. A fixed-grid sampler runs its
            whole grid once per block, every position outside the block held (earlier blocks at their decoded
            tokens, later ones masked), so a sample makes blocks x ``nfe`` network calls (``total_nfe``); the
            ``dilated`` order then runs inside each block (DUS's own scheme). An adaptive sampler keeps its own
            rule: each call chooses among the masked tokens of the first block that still has masks.
    """

    times: tuple[float, ...]
    rule: str = "euler"
    coeffs: tuple[float, ...] | None = None
    movers: str = "independent"
    phi_mode: str = "linear"
    theta: float | None = None
    conditioning: dict[str, Any] | None = None
    temperature: float = 1.0
    model: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    adaptive: dict[str, Any] | None = None
    block: int | None = None
    final: str | None = None

    def __post_init__(self) -> None:
        for name in ("times", "coeffs"):
            vals = getattr(self, name)
            if vals is None and name == "coeffs":
                continue
            if not isinstance(vals, (list, tuple)) or not _finite(vals):
                raise UserError("times and coeffs must be lists of finite numbers")
            object.__setattr__(self, name, tuple(float(v) for v in vals))
        _check(self)

    # ---- constructors of the training-free samplers -------------------------------------------------------
    @classmethod
    def base(cls, rule: str, nfe: int, *, movers: str = "independent", eps: float = 1e-5,
             theta: float | None = None, temperature: float = 1.0, block: int | None = None,
             final: str | None = None) -> "Sampler":
        """``rule`` on the uniform grid with ``nfe`` network calls per sample (nfe / 2 steps for theta-*);
        ``block``: semi-autoregressive blocks of that many tokens, the grid (``nfe`` calls) run once per block;
        ``final``: the rule of the last step ("tweedie": denoise on the uniform graph)."""
        if rule not in RULES:
            raise UserError(f"unknown step rule {rule!r}; expected one of {sorted(RULES)}")
        calls = get_rule(rule).calls
        if not isinstance(nfe, int) or nfe < 1 or nfe % calls:
            raise UserError(f"{rule} makes {calls} network call{'s' * (calls > 1)} per step; nfe must be a positive "
                            f"multiple of {calls}, got {nfe!r}")
        label = rule if movers == "independent" else movers
        label += f"+{final}-final" if final is not None else ""
        return cls(uniform_times(nfe // calls, eps).tolist(), rule, movers=movers, theta=theta,
                   temperature=temperature, provenance={"method": label, "note": "nothing learned"}, block=block,
                   final=final)

    @classmethod
    def euler(cls, nfe: int, eps: float = 1e-5) -> "Sampler":
        """Euler (tau-leaping) on the uniform grid, ``nfe`` steps."""
        return cls.base("euler", nfe, eps=eps)

    @classmethod
    def tweedie(cls, nfe: int, eps: float = 1e-5) -> "Sampler":
        """Tweedie tau-leaping on the uniform grid, ``nfe`` steps."""
        return cls.base("tweedie", nfe, eps=eps)

    @classmethod
    def spread(cls, nfe: int, rule: str = "euler", eps: float = 1e-5) -> "Sampler":
        """``rule`` with spread movers: each step moves the expected number of tokens, spread along the
        sequence (no training; lsdd's best training-free rule on masked models)."""
        return cls.base(rule, nfe, movers="spread", eps=eps)

    @classmethod
    def counted(cls, nfe: int, rule: str = "euler", eps: float = 1e-5) -> "Sampler":
        """``rule`` with counted movers chosen by weight."""
        return cls.base(rule, nfe, movers="counted", eps=eps)

    @classmethod
    def adaptive_rule(cls, rule: str, param: float, *, eps: float = 1e-5, temperature: float = 1.0,
                      block: int | None = None) -> "Sampler":
        """An adaptive sampler for masked models: ``rule`` "eb" (parameter gamma) or "threshold" (tau); with
        ``block`` it decodes semi-autoregressive blocks of that many tokens left to right (Fast-dLLM's setting)."""
        check_rule(rule, param)
        if not 0.0 < eps < 1.0:
            raise UserError(f"eps must lie in (0, 1), got {eps!r}")
        return cls((1.0, eps), temperature=temperature, adaptive={"rule": rule, ADAPTIVE[rule]: float(param)},
                   provenance={"method": rule, "note": "nothing learned; network calls depend on the sample"},
                   block=block)

    @classmethod
    def eb(cls, gamma: float, eps: float = 1e-5) -> "Sampler":
        """EB-Sampler (arXiv 2505.24857) with entropy budget ``gamma`` (``lsdd.sampling.adaptive``)."""
        return cls.adaptive_rule("eb", gamma, eps=eps)

    @classmethod
    def threshold(cls, tau: float, eps: float = 1e-5) -> "Sampler":
        """Fast-dLLM's confidence threshold ``tau`` (arXiv 2505.22618; ``lsdd.sampling.adaptive``)."""
        return cls.adaptive_rule("threshold", tau, eps=eps)

    # ---- what it is ---------------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def calls_per_step(self) -> int:
        return get_rule(self.rule).calls

    @property
    def nfe(self) -> int | None:
        """Network calls per sample of one run of the grid (counted again by the loop when it runs): per block
        when ``block`` is set (``total_nfe``); None for an adaptive sampler."""
        if self.adaptive is not None:
            return None
        return self.steps * self.calls_per_step

    def blocks(self, free: int) -> int:
        """How many semi-autoregressive blocks a sequence with ``free`` free positions is decoded in (1 without
        ``block``): ceil(free / block)."""
        return 1 if self.block is None else max(1, -(-int(free) // self.block))

    def total_nfe(self, free: int) -> int | None:
        """Network calls per sample for sequences with ``free`` free positions (the model's length without a
        prompt): ``blocks(free)`` x ``nfe``; None for an adaptive sampler."""
        return None if self.adaptive is not None else self.blocks(free) * self.nfe

    @property
    def method(self) -> str:
        """How it was made: "lsd", "lsd+", "lsd-c", "jys", or the rule / movers name when nothing was learned."""
        return str(self.provenance.get("method", self.rule))

    @property
    def learned(self) -> bool:
        """True when it carries learned numbers (coefficients, a grid or conditioning) from a distillation."""
        return (self.method in ("lsd", "lsd+", "lsd-c", "jys")
                and self.provenance.get("written", "learned sampler") == "learned sampler")

    def times_tensor(self) -> torch.Tensor:
        return torch.tensor(self.times, dtype=torch.float64)

    def coeffs_tensor(self) -> torch.Tensor:
        """(M,) float64 Phi (ones when ``coeffs`` is None)."""
        if self.coeffs is None:
            return torch.ones(self.steps, dtype=torch.float64)
        return torch.tensor(self.coeffs, dtype=torch.float64)

    def replace(self, **changes) -> "Sampler":
        return replace(self, **changes)

    def with_temperature(self, temperature: float) -> "Sampler":
        return replace(self, temperature=float(temperature))

    def for_model(self, model) -> "Sampler":
        """This sampler bound to ``model`` (its graph, noise and fingerprint recorded in ``model``)."""
        return replace(self, model=model_ref(model))

    def describe(self) -> str:
        """One line, e.g. "lsd euler, 8 steps x 1 call, spread movers"."""
        if self.adaptive is not None:
            rule = self.adaptive["rule"]
            name = ADAPTIVE[rule]
            text = f"{rule} {name}={self.adaptive[name]:g}, adaptive network calls (at most one per token)"
            text += f", in blocks of {self.block}" if self.block is not None else ""
            return text + (f", temperature {self.temperature:g}" if self.temperature != 1.0 else "")
        calls = self.calls_per_step
        parts = [f"{self.method} {self.rule}" if self.learned else self.rule,
                 f"{self.steps} step{'s' * (self.steps != 1)} x {calls} network call{'s' * (calls > 1)}"]
        if self.movers in ORDERS:
            parts.append(f"counted movers in {self.movers} order")
        elif self.movers != "independent":
            parts.append("counted movers spread along the sequence" if self.movers == "spread" else "counted movers")
        if self.coeffs is not None and any(c != 1.0 for c in self.coeffs):
            parts.append(f"learned Phi ({self.phi_mode})")
        if self.conditioning is not None:
            parts.append("state-conditioned")
        if self.final is not None:
            parts.append(f"{self.final} last step")
        if self.temperature != 1.0:
            parts.append(f"temperature {self.temperature:g}")
        if self.block is not None:
            parts.append(f"in blocks of {self.block} (the grid once per block)")
        return ", ".join(parts)

    # ---- the one place that turns the value into loop arguments -------------------------------------------
    def loop_args(self, graph) -> dict[str, Any]:
        """Keyword arguments of ``lsdd.sampling.samplers.sample``/``sample_batched`` on ``graph``: the step rule
        (a name, a theta rule object or the conditioned rule), the coefficients ((M,) tensor, None, or a
        state-dependent function), phi_mode and block. Every entry point goes through here."""
        if self.adaptive is not None:
            raise UserError(f"the {self.adaptive['rule']} sampler is adaptive and has no fixed grid; draw with "
                            "lsdd.sample (lsdd.sampling.adaptive)")
        if self.movers == "independent" and self.conditioning is None:
            rule = get_rule(self.rule, self.theta) if self.theta is not None else self.rule
            if self.final is not None:
                rule = WithFinal(self.rule, self.final)
            coeffs = None if self.coeffs is None else self.coeffs_tensor()
            return {"method": rule, "coeffs": coeffs, "phi_mode": self.phi_mode, "block": self.block}
        from .conditioned import ConditionedParams, ConditionedRule

        if self.movers in ORDERS and not graph.absorbing:
            raise UserError(f"the {self.movers} mover order reveals masked tokens, so it needs the absorbing graph, "
                            f"not the {graph.name} graph")
        m = self.steps
        cond = self.conditioning or {}
        slope = torch.tensor(cond["slope"], dtype=torch.float64) if cond else None
        log_beta = torch.tensor(cond["beta"], dtype=torch.float64).log() if cond else None
        log_phi = None if self.coeffs is None else self.coeffs_tensor().log()
        params = ConditionedParams.from_count(m, _COUNT[self.movers], log_phi, slope, log_beta)
        params.requires_grad_(False)
        return {"method": ConditionedRule(self.rule, self.final), "coeffs": params.coeff_fn(graph), "phi_mode": "linear",
                "block": self.block}

    # ---- the model it fits --------------------------------------------------------------------------------
    def check_model(self, model, force: bool = False) -> None:
        """Refuse a model this sampler was not made for: another graph, size or noise always; another
        fingerprint unless ``force``. A sampler with no ``model`` fits any model (movers need a one-call rule)."""
        if self.model is None:
            return
        m = self.model
        if m["graph"] != model.graph.name or m["num_tokens"] != model.graph.num_tokens:
            raise UserError(f"sampler was made for a model with the {m['graph']} graph and {m['num_tokens']} tokens, but "
                            f"this model has the {model.graph.name} graph and {model.graph.num_tokens} tokens")
        if m["noise"] != model.noise.to_dict():
            raise UserError(f"sampler was made for noise {m['noise']}, but the model uses {model.noise.to_dict()}")
        want = m.get("fingerprint")
        if want and want != getattr(model, "fingerprint", None) and not force:
            raise UserError(f"sampler was made for model {want} ({m.get('source', '?')}), not for this model "
                            f"({getattr(model, 'fingerprint', '?')}); pass --force (force=True) to use it anyway")

    # ---- the artifact --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {"format": FORMAT, "format_version": FORMAT_VERSION, "nfe": self.nfe, "rule": self.rule,
             "times": list(self.times), "coeffs": None if self.coeffs is None else list(self.coeffs),
             "movers": self.movers, "phi_mode": self.phi_mode, "theta": self.theta,
             "conditioning": self.conditioning, "temperature": self.temperature, "model": self.model,
             "provenance": self.provenance}
        if self.block is not None:  # written only when set: files without blocks stay as they were
            d["block"] = self.block
        if self.adaptive is not None:  # likewise for adaptive samplers
            d["adaptive"] = self.adaptive
        if self.final is not None:  # and for a last step of another rule
            d["final"] = self.final
        return d

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "Sampler":
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object, got {type(d).__name__}")
        try:
            if d.get("format") == OLD_FORMAT:
                return _from_old(d)
            if d.get("format") != FORMAT:
                raise UserError(f"format is {d.get('format')!r}, expected {FORMAT!r} (or {OLD_FORMAT!r})")
            if d.get("format_version") != FORMAT_VERSION:
                raise UserError(f"unsupported format_version {d.get('format_version')!r} (this lsdd reads "
                                f"{FORMAT_VERSION} and the {OLD_FORMAT!r} versions 1-2)")
            known = {"times", "rule", "coeffs", "movers", "phi_mode", "theta", "conditioning", "temperature",
                     "model", "provenance", "adaptive", "block", "final"}
            if "times" not in d:
                raise UserError("missing field 'times'")
            out = cls(**{k: v for k, v in d.items() if k in known})
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: {e}") from None
        except UserError as e:
            raise UserError(f"{source}: {e}") from None
        if "nfe" in d and d["nfe"] != out.nfe:
            raise UserError(f"{source}: nfe is {d['nfe']!r} but the grid and rule make {out.nfe} network calls")
        return out

    @classmethod
    def load(cls, path: str | Path) -> "Sampler":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError(f"sampler file not found: {path}") from None
        except IsADirectoryError:
            raise UserError(f"sampler file {path} is a directory") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not a sampler JSON file ({e})") from None
        return cls.from_dict(d, str(path))


def model_ref(model) -> dict[str, Any]:
    """What a sampler records of the model it was made for."""
    return {"graph": model.graph.name, "num_tokens": model.graph.num_tokens, "noise": model.noise.to_dict(),
            "fingerprint": getattr(model, "fingerprint", None), "source": getattr(model, "source", None)}


def _finite(vals) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals)


def _check(s: Sampler) -> None:
    """UserError naming the first bad field."""
    if s.rule not in RULES:
        raise UserError(f"unknown step rule {s.rule!r}; expected one of {sorted(RULES)}")
    try:
        check_times(torch.tensor(s.times, dtype=torch.float64))
    except ValueError as e:
        raise UserError(str(e)) from None
    m = len(s.times) - 1
    if s.coeffs is not None:
        if len(s.coeffs) != m:
            raise UserError(f"{len(s.times)} times need {m} coeffs, got {len(s.coeffs)}")
    if s.phi_mode not in PHI_MODES:
        raise UserError(f"unknown phi_mode {s.phi_mode!r}; expected one of {list(PHI_MODES)}")
    if s.movers not in MOVERS:
        raise UserError(f"unknown movers {s.movers!r}; expected one of {list(MOVERS)}")
    if s.block is not None and (isinstance(s.block, bool) or not isinstance(s.block, int) or s.block < 1):
        raise UserError(f"block is the number of tokens of a semi-autoregressive block, an integer >= 1; got "
                        f"block {s.block!r}")
    if s.theta is not None:
        if s.rule not in THETA_RULES:
            raise UserError(f"theta applies to {sorted(THETA_RULES)}, not to {s.rule!r}")
        try:
            get_rule(s.rule, s.theta)
        except ValueError as e:
            raise UserError(str(e)) from None
    if not (isinstance(s.temperature, (int, float)) and math.isfinite(s.temperature) and s.temperature > 0):
        raise UserError(f"temperature must be > 0, got {s.temperature!r}")
    if s.final is not None and (s.final not in ONE_CALL or s.rule not in ONE_CALL):
        raise UserError(f"final (the last step's rule) must be one of {list(ONE_CALL)} on a one-call rule; got final "
                        f"{s.final!r} on rule {s.rule!r}")
    special = s.movers != "independent" or s.conditioning is not None
    if special and s.rule not in ONE_CALL:
        raise UserError(f"counted/spread movers and conditioning need a one-call rule {list(ONE_CALL)}, not {s.rule!r}")
    if special and s.phi_mode != "linear":
        raise UserError(f"counted/spread movers and conditioning use linear Phi, got {s.phi_mode!r}")
    if special and s.coeffs is not None and min(s.coeffs) <= 0:
        raise UserError("counted/spread movers and conditioning need coeffs > 0")
    if s.conditioning is not None:
        _check_conditioning(s.conditioning, m)
    if s.model is not None:
        _check_model_ref(s.model, s)
    if not isinstance(s.provenance, dict):
        raise UserError(f"provenance must be an object, got {s.provenance!r}")
    if s.adaptive is not None:
        _check_adaptive(s)


def _check_adaptive(s: Sampler) -> None:
    a = s.adaptive
    if not isinstance(a, dict) or a.get("rule") not in ADAPTIVE:
        raise UserError(f"field 'adaptive' must be an object with a rule of {list(ADAPTIVE)}, got {a!r}")
    name = ADAPTIVE[a["rule"]]
    if set(a) != {"rule", name}:
        raise UserError(f"field 'adaptive' of rule {a['rule']!r} takes exactly 'rule' and {name!r}, got {sorted(a)}")
    check_rule(a["rule"], a[name])
    if (len(s.times) != 2 or s.rule != "euler" or s.coeffs is not None or s.movers != "independent"
            or s.theta is not None or s.final is not None or s.conditioning is not None or s.phi_mode != "linear"):
        raise UserError(f"an adaptive ({a['rule']}) sampler has times (1, eps) and no rule, coeffs, movers, theta, "
                        "final step, conditioning or phi_mode of its own")
    if s.model is not None and s.model["graph"] != "absorbing":
        raise UserError(f"adaptive samplers need a masked (absorbing) model, not the {s.model['graph']!r} graph")


def _check_conditioning(cond: Any, m: int) -> None:
    if not isinstance(cond, dict):
        raise UserError(f"field 'conditioning' must be an object, got {cond!r}")
    if cond.get("feature") not in FEATURES:
        raise UserError(f"unknown conditioning feature {cond.get('feature')!r}; expected one of {list(FEATURES)}")
    for key in ("slope", "beta"):
        vals = cond.get(key)
        if not isinstance(vals, (list, tuple)) or len(vals) != m or not _finite(vals):
            raise UserError(f"conditioning {key!r} must be {m} finite numbers, got {vals!r}")
    if min(cond["beta"]) <= 0:
        raise UserError("conditioning needs beta > 0")


def _check_model_ref(ref: Any, s: Sampler) -> None:
    if not isinstance(ref, dict) or not {"graph", "num_tokens", "noise"} <= set(ref):
        raise UserError(f"field 'model' must be an object with graph, num_tokens and noise, got {ref!r}")
    if ref["graph"] not in GRAPHS:
        raise UserError(f"unknown graph {ref['graph']!r}; expected one of {sorted(GRAPHS)}")
    if not isinstance(ref["num_tokens"], int) or isinstance(ref["num_tokens"], bool) or ref["num_tokens"] < 1:
        raise UserError(f"num_tokens must be an integer >= 1, got {ref['num_tokens']!r}")
    try:
        noise_from_dict(ref["noise"])
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise UserError(f"bad noise {ref['noise']!r}: {e}") from None
    if ref["graph"] != "absorbing" and s.conditioning is not None and any(s.conditioning["slope"]):
        raise UserError(f"on the {ref['graph']!r} graph a sampler's confidence slopes must be 0 (they read a masked "
                        "token's confidence: absorbing graph only)")


_OLD_REQUIRED = {"format_version": int, "base": str, "graph": str, "num_tokens": int, "noise": dict, "times": list,
                 "coeffs": list, "phi_mode": str, "provenance": dict}


def _from_old(d: dict[str, Any]) -> Sampler:
    """A version 1/2 ``lsdd-learned-sampler`` file as the same sampler."""
    for key, typ in _OLD_REQUIRED.items():
        if key not in d:
            raise UserError(f"missing field {key!r}")
        if not isinstance(d[key], typ) or (typ is int and isinstance(d[key], bool)):
            raise UserError(f"field {key!r} must be {typ.__name__}, got {d[key]!r}")
    if d["format_version"] not in (1, 2):
        raise UserError(f"unsupported format_version {d['format_version']!r} of {OLD_FORMAT!r} (this lsdd reads 1, "
                        f"2, and {FORMAT!r} {FORMAT_VERSION})")
    if d["base"] not in ONE_CALL:
        raise UserError(f"unknown base sampler {d['base']!r}; expected one of {list(ONE_CALL)}")
    if "nfe" in d and d["nfe"] != len(d["coeffs"]):
        raise UserError(f"nfe is {d['nfe']!r} but there are {len(d['coeffs'])} steps")
    prov = dict(d["provenance"])
    model = {"graph": d["graph"], "num_tokens": d["num_tokens"], "noise": d["noise"],
             "fingerprint": prov.get("model_fingerprint"), "source": prov.get("model_source")}
    movers, cond = "independent", d.get("conditioning")
    if cond is not None:
        if d["format_version"] < 2:
            raise UserError(f"field 'conditioning' needs format_version 2, the file says {d['format_version']!r}")
        if not isinstance(cond, dict):
            raise UserError(f"field 'conditioning' must be an object, got {cond!r}")
        count = cond.get("count", "independent")
        if count not in _MOVERS_OF_COUNT:
            raise UserError(f"conditioning 'count' must be one of {list(_MOVERS_OF_COUNT)}, got {count!r}")
        movers = _MOVERS_OF_COUNT[count]
        cond = {k: v for k, v in cond.items() if k != "count"}
        pure_movers = (isinstance(cond.get("slope"), list) and isinstance(cond.get("beta"), list)
                       and not any(cond["slope"]) and all(b == 1 for b in cond["beta"]))
        if pure_movers and movers != "independent":
            cond = None  # only the movers differ from the base rule: the same law as movers alone
    coeffs = list(d["coeffs"])
    return Sampler(times=d["times"], rule=d["base"], coeffs=coeffs, movers=movers, phi_mode=d["phi_mode"],
                   conditioning=cond, model=model, provenance={**prov, "read_from": f"{OLD_FORMAT} v{d['format_version']}"})


__all__ = ["Sampler", "model_ref", "FORMAT", "FORMAT_VERSION", "MOVERS"]
