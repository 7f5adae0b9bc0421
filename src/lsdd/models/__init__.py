"""Score networks and their loaders.

``load_model(name_or_path)`` accepts a bundled model name (``bundled_models()``), a model directory written by
``lsdd train`` / ``save_model_dir``, a SEDD / RADD / MDLM checkpoint directory as those projects publish it, a
transformers masked-LM directory (``lsdd.models.hf_masked``), or a Hugging Face hub id of one; every one goes
through ``load_model_path``. ``from_clean_logits`` turns any clean-token predictor into a model value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..errors import UserError
from ..graphs import Graph, make_graph
from ..noise import Noise, noise_from_dict
from .dit import DiTConfig, ScoreDiT
from .masked import CleanLogitModel, from_clean_logits

PRECISIONS = ("fp32", "bf16")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"
ScoreFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LoadedModel:
    """A score network with everything needed to sample from it.

    Attributes:
        module: the network, (B, L) int64 tokens and (B,) sigma_bar -> (B, L, S) log-scores.
        config: its DiTConfig.
        fingerprint: 16 hex chars identifying config + weights (``checkpoint.fingerprint``).
        source: where it came from (a bundled name or a directory path).
        meta: the other keys of config.json (training provenance).
        graph, noise: built from ``config`` (the forward process the model was trained for).
    """

    module: ScoreDiT
    config: DiTConfig
    fingerprint: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # "fp32" or "bf16" (autocast for the network; scores are float32 either way)
    compiled: bool = False
    directory: Path | None = None  # the model directory it was loaded from
    graph: Graph = field(init=False)
    noise: Noise = field(init=False)

    def __post_init__(self) -> None:
        self.graph = make_graph(self.config.graph, self.config.num_tokens)
        self.noise = noise_from_dict(self.config.noise)
        self._forward = self.module

    def configure(self, precision: str = "auto", compile: bool = False) -> "LoadedModel":
        """Choose the network's arithmetic: ``precision`` "fp32", "bf16" (autocast) or "auto" (bf16 on CUDA,
        fp32 on the CPU); ``compile`` wraps the network in torch.compile (worth it for long runs: the first
        call compiles for 10-60 s). Returns self."""
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)} or 'auto'")
        self.precision = precision
        if compile and not self.compiled:
            self._forward = torch.compile(self.module, dynamic=True)
            self.compiled = True
        return self

    @property
    def tokenizer(self):
        """The model's ``lsdd.text.tokenizer.TextTokenizer`` (text models), checked against the sha256 that
        config.json records; None for models without one."""
        info = self.meta.get("tokenizer")
        if not info and self.meta.get("checkpoint_format"):
            if getattr(self, "_tokenizer", None) is None:
                from .tokens import external_tokenizer

                self._tokenizer = external_tokenizer(self.directory, self.config.num_tokens)
            return self._tokenizer
        if not info:
            return None
        if getattr(self, "_tokenizer", None) is None:
            from ..text.tokenizer import TOKENIZER_FILE, TextTokenizer

            if self.directory is None:
                raise UserError(f"model {self.source}: config.json names a tokenizer but the directory is unknown")
            path = self.directory / info.get("file", TOKENIZER_FILE)
            tok = TextTokenizer.load(path)
            if info.get("sha256") and tok.sha256() != info["sha256"]:
                raise UserError(f"{path}: the tokenizer does not match the one {self.directory / 'config.json'} "
                                "records (sha256 differs)")
            if tok.vocab_size != self.config.num_tokens:
                raise UserError(f"{path}: the tokenizer has {tok.vocab_size} tokens, the model "
                                f"{self.config.num_tokens}")
            self._tokenizer = tok
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def length(self) -> int:
        """Tokens per sequence."""
        return self.config.length

    @property
    def log_score_fn(self) -> ScoreFn:
        """Callable (x (B, L) int64, sigma (B,)) -> log-score (B, L, S) float32; eval mode, no grad, autocast
        to bf16 inside the call when ``precision`` is "bf16"."""
        module, forward, device = self.module, self._forward, self.device
        bf16 = self.precision == "bf16"

        def log_score(x: Tensor, sigma: Tensor) -> Tensor:
            module.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = forward(x.to(device), sigma.to(device=device, dtype=torch.float32))
            return out.float()

        return log_score

    @property
    def score_fn(self) -> ScoreFn:
        """Callable (x (B, L) int64, sigma (B,)) -> score (B, L, S) = exp(log-score), float32; eval, no grad."""
        log_score = self.log_score_fn

        def score(x: Tensor, sigma: Tensor) -> Tensor:
            return log_score(x, sigma).exp_()

        return score


@dataclass
class ScoreModel:
    """Any score function as a model value: what ``lsdd.sample`` and ``lsdd.distill`` take, like a loaded model.

    score_fn: (x (B, L) int64, sigma_bar (B,)) -> (B, L, S) concrete-score ratios >= 0 (the entry at the current
    token is set to 1 by the loop). fingerprint: any string that identifies the function (samplers record it).
    """

    score_fn: ScoreFn
    graph: Graph
    noise: Noise
    length: int
    fingerprint: str = ""
    source: str = "score function"
    tokenizer: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    meta: dict[str, Any] = field(default_factory=dict)


def bundled_models() -> list[str]:
    """Names of the models shipped with lsdd (folders of ``lsdd/bundled`` holding a config.json)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu", *, trust_remote_code: bool = False,
               length: int | None = None) -> LoadedModel | CleanLogitModel:
    """Load a bundled model by name, a model directory by path, or a Hugging Face hub id (``owner/name``,
    downloaded with ``huggingface_hub``); an existing directory wins over a name (with a note on stderr when it
    shadows a bundled name: ``bundled:NAME`` always means the bundled one), a name over a hub id.

    A directory may hold our own format, a SEDD, RADD or MDLM checkpoint exactly as its project publishes it
    (``lsdd.models.external.detect_format``), or a transformers masked LM (then a ``CleanLogitModel``;
    ``trust_remote_code`` lets one whose class ships as code in the directory run it, and ``length`` sets its
    tokens per sequence: ``lsdd.models.hf_masked``). UserError (listing the bundled names) when it is none of
    these, or when ``length`` differs from the fixed length of another kind of model.
    """
    from .external import download, looks_like_hub_id

    name = str(name_or_path)
    options = {"trust_remote_code": trust_remote_code, "length": length}
    if name.startswith("bundled:"):
        if name[8:] not in bundled_models():
            raise UserError(f"no bundled model named {name[8:]!r}; bundled models: {bundled_models() or 'none'}")
        return load_model_path(BUNDLED_DIR / name[8:], device, source=name, **options)
    path = Path(name_or_path)
    if path.is_dir():
        if name in bundled_models():
            import sys

            print(f"lsdd: note: {name!r} is a directory here, so it is loaded instead of the bundled model of that "
                  f"name (write bundled:{name} for the bundled one)", file=sys.stderr)
        return load_model_path(path, device, **options)
    if name in bundled_models():
        return load_model_path(BUNDLED_DIR / name, device, source=f"bundled:{name}", **options)
    if looks_like_hub_id(name):
        return load_model_path(download(name), device, source=f"hub:{name}", **options)
    raise UserError(f"no model directory or bundled model named {name!r} (nor a hub id owner/name); bundled models: "
                    f"{bundled_models() or 'none'}")


def load_model_path(path: Path, device: str | torch.device = "cpu", source: str | None = None, *,
                    trust_remote_code: bool = False, length: int | None = None) -> LoadedModel | CleanLogitModel:
    """Load the checkpoint in directory ``path``, whatever its format (ours, SEDD, RADD, MDLM, a transformers
    masked LM); ``trust_remote_code`` and ``length`` as in ``load_model``."""
    from .checkpoint import load_model_dir
    from .external import detect_format
    from .formats import load_external

    fmt = detect_format(path)
    if fmt == "masked-lm":
        from .hf_masked import load_masked_lm

        return load_masked_lm(path, device, source, trust_remote_code=trust_remote_code, length=length)
    model = load_model_dir(path, device, source=source) if fmt == "lsdd" else load_external(path, fmt, device,
                                                                                              source=source)
    if length is not None and length != model.length:
        raise UserError(f"--length {length}: {model.source} has a fixed length of {model.length} tokens (--length "
                        "sets the length of transformers masked LMs)")
    return model


__all__ = ["DiTConfig", "ScoreDiT", "LoadedModel", "ScoreModel", "load_model", "load_model_path", "bundled_models",
           "ScoreFn", "from_clean_logits", "CleanLogitModel"]
