"""``sample(model, sampler, num, seed)``: draw samples with a ``Sampler`` value, whole.

This is what ``lsdd sample`` runs and what ``lsdd.sample`` is: batch b of ``batch_size`` sequences draws from
its own generator ``make_generator(seed, device, b)``, so the same seed gives the same samples on any number
of torchrun processes, from Python or from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from .prompts import Condition, condition
from .sampler import Sampler
from .samplers import sample_batched, tempered_score


@dataclass
class Samples:
    """x: (num, L) int64 on the CPU; nfe: network calls per sample, counted by the loop (an adaptive sampler's
    calls differ per sample: nfe is then their max); info: provenance (the model, the sampler, the seed), written
    beside the array by ``save``; nfe_mean: the mean calls per sample; nfe_per_sample: (num,) int64 calls each
    sample needed (every entry = nfe for a fixed grid); fixed: (num, L) bool, the positions each sample was given
    (a prompt, an infill template or a token array; None for unconditional samples)."""

    x: Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)
    nfe_mean: float | None = None
    nfe_per_sample: Tensor | None = None
    fixed: Tensor | None = None

    def __post_init__(self) -> None:
        if self.nfe_per_sample is None:
            self.nfe_per_sample = torch.full((self.x.shape[0],), int(self.nfe), dtype=torch.long)
        if self.nfe_mean is None:
            self.nfe_mean = float(self.nfe_per_sample.to(torch.float64).mean()) if self.x.shape[0] else float(self.nfe)

    def numpy(self):
        return self.x.numpy()

    def save(self, path: str | Path) -> None:
        """Write ``path`` (.npy, a plain int64 array) and its provenance sidecar ``path.json``."""
        from .record import write_samples

        write_samples(path, self.x.numpy(), self.info)


def sample(model, sampler: Sampler, num: int = 64, *, seed: int = 0, batch_size: int = 64, force: bool = False,
           progress: bool = False, prompt: Any = None, infill: Any = None, fixed: Any = None) -> Samples:
    """Draw ``num`` sequences from ``model`` (a ``lsdd.load_model`` value, or any object with score_fn, graph,
    noise, length and device) with ``sampler``.

    ``force`` uses a sampler made for another model of the same graph, size and noise. The network calls are
    counted by the loop and returned as ``Samples.nfe``; they equal ``sampler.nfe`` (x the number of blocks with
    ``sampler.block``: ``Sampler.total_nfe``). An adaptive sampler (``Sampler.eb``, ``Sampler.threshold``;
    ``lsdd.sampling.adaptive``) counts each sample's calls: ``Samples.nfe_per_sample``, their mean ``nfe_mean``
    and max ``nfe``.

    Conditional generation (``lsdd.sampling.prompts``; at most one of the three): ``prompt`` a text, a list of
    texts (sample i continues prompt i mod P; the model's tokenizer) or token ids (a list of ints, a list of
    lists, an integer array); ``infill`` a template with gaps ``{{n}}`` (or a list of them); ``fixed`` a (L,) or
    (P, L) integer array of given tokens with the mask id (``model.graph.num_tokens``, on any graph) at the free
    positions. The given tokens stay as they are in every sample; the sampler draws the free positions.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be an lsdd.Sampler (e.g. Sampler.euler(8) or Sampler.load(path)), got "
                        f"{type(sampler).__name__}")
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    sampler.check_model(model, force=force)
    cond = condition(model, prompt, infill, fixed)
    score_fn = tempered_score(model.score_fn, sampler.temperature)
    if sampler.adaptive is not None:
        return _sample_adaptive(model, sampler, score_fn, num, seed, batch_size, progress, cond)
    out = sample_batched(score_fn, model.graph, model.noise, sampler.times_tensor(), num, model.length,
                         seed=seed, batch_size=batch_size, device=model.device, progress=progress,
                         given=None if cond is None else cond.given, **sampler.loop_args(model.graph))
    want = sampler.total_nfe(model.length if cond is None else cond.free_positions(num))
    if out.nfe != want:
        raise RuntimeError(f"the loop counted {out.nfe} network calls per sample, the sampler promises {want}")
    return Samples(out.x, out.nfe, _info(model, sampler, cond, num, seed, batch_size, nfe=out.nfe),
                   fixed=None if cond is None else cond.held(num))


def _info(model, sampler: Sampler, cond: Condition | None, num: int, seed: int, batch_size: int,
          **calls: Any) -> dict[str, Any]:
    """The samples' provenance (``record.write_samples``): model, sampler, calls, seed, and the condition."""
    from .. import __version__
    from .record import model_info

    info = {**model_info(model), "sampler": sampler.to_dict(), **calls, "num_samples": num, "seed": seed,
            "batch_size": batch_size, "lsdd_version": __version__}
    if cond is not None:
        info["condition"] = cond.to_info()
    return info


def _sample_adaptive(model, sampler: Sampler, score_fn, num: int, seed: int, batch_size: int,
                     progress: bool, cond: Condition | None) -> Samples:
    from .adaptive import ADAPTIVE, sample_adaptive

    rule = sampler.adaptive["rule"]
    if not model.graph.absorbing:
        raise UserError(f"the {rule} sampler needs a masked (absorbing) model, not the {model.graph.name} graph")
    out = sample_adaptive(score_fn, model.graph, model.noise, rule, sampler.adaptive[ADAPTIVE[rule]], num,
                          model.length, seed=seed, batch_size=batch_size, device=model.device,
                          t_range=(sampler.times[0], sampler.times[-1]), block=sampler.block,
                          progress=progress, given=None if cond is None else cond.given)
    info = _info(model, sampler, cond, num, seed, batch_size, nfe=out.nfe_max, nfe_mean=out.nfe_mean,
                 nfe_max=out.nfe_max)
    return Samples(out.x, out.nfe_max, info, out.nfe_mean, out.nfe, fixed=None if cond is None else cond.held(num))


__all__ = ["Samples", "sample"]
