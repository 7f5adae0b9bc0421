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
from .sampler import Sampler
from .samplers import sample_batched, tempered_score


@dataclass
class Samples:
    """x: (num, L) int64 on the CPU; nfe: network calls per sample, counted by the loop (an adaptive sampler's
    calls differ per sample: nfe is then their max); info: provenance (the model, the sampler, the seed), written
    beside the array by ``save``; nfe_mean: the mean calls per sample; nfe_per_sample: (num,) int64 calls each
    sample needed (every entry = nfe for a fixed grid)."""

    x: Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)
    nfe_mean: float | None = None
    nfe_per_sample: Tensor | None = None

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
           progress: bool = False) -> Samples:
    """Draw ``num`` sequences from ``model`` (a ``lsdd.load_model`` value, or any object with score_fn, graph,
    noise, length and device) with ``sampler``.

    ``force`` uses a sampler made for another model of the same graph, size and noise. The network calls are
    counted by the loop and returned as ``Samples.nfe``; they equal ``sampler.nfe``. An adaptive sampler
    (``Sampler.eb``, ``Sampler.threshold``; ``lsdd.sampling.adaptive``) counts each sample's calls:
    ``Samples.nfe_per_sample``, their mean ``nfe_mean`` and max ``nfe``.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be an lsdd.Sampler (e.g. Sampler.euler(8) or Sampler.load(path)), got "
                        f"{type(sampler).__name__}")
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    sampler.check_model(model, force=force)
    score_fn = tempered_score(model.score_fn, sampler.temperature)
    if sampler.adaptive is not None:
        return _sample_adaptive(model, sampler, score_fn, num, seed, batch_size, progress)
    out = sample_batched(score_fn, model.graph, model.noise, sampler.times_tensor(), num, model.length,
                         seed=seed, batch_size=batch_size, device=model.device, progress=progress,
                         **sampler.loop_args(model.graph))
    if out.nfe != sampler.nfe:
        raise RuntimeError(f"the loop counted {out.nfe} network calls per sample, the sampler promises {sampler.nfe}")
    from .. import __version__

    from .record import model_info

    info = {**model_info(model), "sampler": sampler.to_dict(), "nfe": out.nfe, "num_samples": num, "seed": seed,
            "batch_size": batch_size, "lsdd_version": __version__}
    return Samples(out.x, out.nfe, info)


def _sample_adaptive(model, sampler: Sampler, score_fn, num: int, seed: int, batch_size: int,
                     progress: bool) -> Samples:
    from .. import __version__
    from .adaptive import ADAPTIVE, sample_adaptive
    from .record import model_info

    rule = sampler.adaptive["rule"]
    if not model.graph.absorbing:
        raise UserError(f"the {rule} sampler needs a masked (absorbing) model, not the {model.graph.name} graph")
    out = sample_adaptive(score_fn, model.graph, model.noise, rule, sampler.adaptive[ADAPTIVE[rule]], num,
                          model.length, seed=seed, batch_size=batch_size, device=model.device,
                          t_range=(sampler.times[0], sampler.times[-1]), block=sampler.block,
                          progress=progress)
    info = {**model_info(model), "sampler": sampler.to_dict(), "nfe": out.nfe_max, "nfe_mean": out.nfe_mean,
            "nfe_max": out.nfe_max, "num_samples": num, "seed": seed, "batch_size": batch_size,
            "lsdd_version": __version__}
    return Samples(out.x, out.nfe_max, info, out.nfe_mean, out.nfe)


__all__ = ["Samples", "sample"]
