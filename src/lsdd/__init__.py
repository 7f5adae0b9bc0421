"""lsdd: few-step samplers for discrete diffusion models, and Learnable Sampler Distillation (LSD / LSD+,
Fu, Guo, Liu, NeurIPS 2025, arXiv 2509.19962) to learn them from a many-step teacher.

The package face, in five lines::

    import lsdd
    model = lsdd.load_model("countdown")                      # bundled name, model dir, checkpoint dir, hub id
    sampler, validation = lsdd.distill(model, "lsd", nfe=8)    # teacher -> fit -> validate -> accept
    samples = lsdd.sample(model, sampler, num=256, seed=0)     # .x (256, L) int64, .nfe counted
    print(lsdd.evaluate(samples.x, model))                     # the model's task metrics

Any masked LM (BERT-style, LLaDA, Dream) is a model too: ``lsdd.load_model(DIR)`` on a transformers directory, or
``lsdd.from_clean_logits(fn, mask_id, vocab_size, length)`` around a clean-token logit function.

Names are imported on first use, so ``import lsdd`` (and ``lsdd --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_FACE = {
    "load_model": "lsdd.models",
    "ScoreModel": "lsdd.models",
    "from_clean_logits": "lsdd.models",
    "Sampler": "lsdd.sampling.sampler",
    "sample": "lsdd.sampling.generate",
    "Samples": "lsdd.sampling.generate",
    "distill": "lsdd.distillation.pipeline",
    "Teacher": "lsdd.distillation.pipeline",
    "Distilled": "lsdd.distillation.pipeline",
    "LSD": "lsdd.distillation.methods",
    "LSDPlus": "lsdd.distillation.methods",
    "LSDC": "lsdd.distillation.methods",
    "JYS": "lsdd.distillation.methods",
    "evaluate": "lsdd.tasks",
}

__all__ = ["__version__", *_FACE]


def __getattr__(name: str) -> Any:
    if name in _FACE:
        value = getattr(importlib.import_module(_FACE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lsdd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))
