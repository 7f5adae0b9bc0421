"""Any network that predicts clean tokens -- a masked LM, LLaDA, Dream, MDLM, RADD -- as an lsdd model.

Such a network gives logits of p_theta(x_0^i = v | x_t) at every position. On the absorbing graph with total
noise sigma_bar, the concrete score of a masked position is (Ou et al. 2024, Thm. 1; the formula of
``lsdd.models.clean`` and method.md):

    s(x_t)^i_v = p_t(x_t with x^i <- v) / p_t(x_t) = e^{-sigma_bar} / (1 - e^{-sigma_bar}) p_theta(v | x_t)
               = p_theta(v | x_t) / (e^{sigma_bar} - 1)                          for the N real tokens v,

with p_theta the softmax of the logits over the real tokens only (the mask logit is dropped, MDLM's SUBS). The
entry at the current token (the mask) is 1. Unmasked positions cannot move in the absorbing reverse process;
their row is 1 at their own token and 0 elsewhere. A masked LM is trained at every mask rate at once, so its
network takes no time: ``sigma`` is passed to the logit function, which may ignore it.

Token ids: lsdd's absorbing graph has N real tokens 0..N-1 and the mask N. A model whose mask token lies inside
its vocabulary (BERT's [MASK] = 103, LLaDA's 126336) is mapped by ``IdMap``: lsdd's real tokens are the model's
ids 0..vocab_size-1 in order with the mask left out (ids above the mask move down by one), and lsdd's mask N is
the model's mask id. A model whose mask id is vocab_size or more (MDLM: 50257 of 50258) maps unchanged. Samples
are lsdd ids; ``model.tokenizer`` decodes them (it maps back), ``IdMap.model_ids`` gives the model's own ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..graphs import Absorbing, log_expm1
from ..noise import LogLinear, Noise, noise_from_dict

LogitFn = Callable[[Tensor, Tensor], Tensor]  # x (B, L) int64 model ids, sigma (B,) -> logits (B, L, V >= vocab_size)
PRECISIONS = ("fp32", "bf16")


class IdMap:
    """lsdd state ids <-> a model's token ids.

    lsdd's real tokens 0..N-1 are the model's ids 0..vocab_size-1 in increasing order with ``mask_id`` left out;
    lsdd's mask N is ``mask_id``. So N = vocab_size - 1 when the mask is one of the model's ids below
    vocab_size, else N = vocab_size (and the map is the identity).

    Args:
        mask_id: the model's mask token id (>= 0).
        vocab_size: how many of the model's ids are tokens; logit columns from vocab_size on (padding rows of
            the output layer) are dropped.
    """

    def __init__(self, mask_id: int, vocab_size: int):
        mask_id, vocab_size = int(mask_id), int(vocab_size)
        if mask_id < 0:
            raise UserError(f"mask id must be >= 0, got {mask_id}")
        self.mask_id, self.vocab_size = mask_id, vocab_size
        self.inside = mask_id < vocab_size
        self.num_tokens = vocab_size - 1 if self.inside else vocab_size
        if self.num_tokens < 1:
            raise UserError(f"a vocabulary of {vocab_size} with mask id {mask_id} leaves no real token")
        real = torch.arange(self.num_tokens)
        if self.inside:
            real = real + (real >= mask_id).long()
        self._to_model = torch.cat([real, torch.tensor([mask_id])])  # (N + 1,)
        self._cache: dict[torch.device, Tensor] = {}

    @property
    def identity(self) -> bool:
        return not self.inside or self.mask_id == self.vocab_size - 1

    def to_model_table(self, device: torch.device | str = "cpu") -> Tensor:
        """(N + 1,) int64: entry s = the model's id of lsdd state s."""
        device = torch.device(device)
        if device not in self._cache:
            self._cache[device] = self._to_model.to(device)
        return self._cache[device]

    def model_ids(self, x: Tensor) -> Tensor:
        """lsdd ids (any shape, in 0..N) -> the model's ids, same shape."""
        if self.identity:
            return x
        return self.to_model_table(x.device)[x]

    def lsdd_ids(self, ids: Tensor) -> Tensor:
        """The model's ids (any shape) -> lsdd ids; UserError for an id that is not a token (>= vocab_size and not
        the mask)."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        bad = ((ids < 0) | (ids >= self.vocab_size)) & (ids != self.mask_id)
        if bool(bad.any()):
            raise UserError(f"token id {int(ids[bad][0])} is outside the model's vocabulary of {self.vocab_size}")
        if not self.inside:
            return torch.where(ids == self.mask_id, torch.full_like(ids, self.num_tokens), ids)
        out = ids - (ids > self.mask_id).long()
        return torch.where(ids == self.mask_id, torch.full_like(ids, self.num_tokens), out)

    def real_columns(self, logits: Tensor) -> Tensor:
        """(..., V) logits in the model's id order -> (..., N) over lsdd's real tokens, in lsdd order."""
        if logits.shape[-1] < self.vocab_size:
            raise UserError(f"the logits have {logits.shape[-1]} columns, fewer than the vocabulary size "
                            f"{self.vocab_size}")
        if not self.inside:
            return logits[..., : self.vocab_size]
        return torch.cat([logits[..., : self.mask_id], logits[..., self.mask_id + 1: self.vocab_size]], dim=-1)

    def to_dict(self) -> dict[str, int]:
        return {"mask_id": self.mask_id, "vocab_size": self.vocab_size, "num_tokens": self.num_tokens}


class MappedTokenizer:
    """A model's own tokenizer (a ``transformers`` tokenizer, or anything with ``decode(list[int]) -> str`` and
    ``encode(str, add_special_tokens=False) -> list[int]``) that reads and writes lsdd ids (``IdMap``).

    Offers what lsdd's text code uses of a tokenizer: ``vocab_size`` (N, lsdd's real tokens), ``decode``,
    ``decode_batch``, ``encode``, ``check_text``, ``sha256`` and ``describe``. Special tokens are decoded as text.
    """

    def __init__(self, tokenizer: Any, ids: IdMap):
        if not callable(getattr(tokenizer, "decode", None)):
            raise UserError(f"tokenizer {type(tokenizer).__name__} has no decode method")
        self.hf, self.ids = tokenizer, ids
        self.vocab_size = ids.num_tokens
        self.kind = "transformers"
        self._sha: str | None = None

    def decode(self, ids) -> str:
        arr = np.asarray(ids).reshape(-1)
        bad = arr[(arr < 0) | (arr > self.ids.num_tokens)]
        if bad.size:
            raise UserError(f"token id {int(bad[0])} is outside the tokenizer's vocabulary of {self.vocab_size}")
        model = self.ids.model_ids(torch.from_numpy(arr.astype(np.int64)))
        return self.hf.decode(model.tolist(), skip_special_tokens=False)

    def decode_batch(self, ids) -> list[str]:
        """(n, L) lsdd ids -> n strings."""
        arr = np.asarray(ids)
        if arr.ndim != 2:
            raise UserError(f"expected (n, L) token ids, got shape {arr.shape}")
        return [self.decode(row) for row in arr]

    def encode(self, text: str, where: str = "text") -> np.ndarray:
        """(T,) int64 lsdd ids of ``text`` (no special tokens added)."""
        try:
            model = self.hf.encode(text, add_special_tokens=False)
        except TypeError:
            model = self.hf.encode(text)
        unk = getattr(self.hf, "unk_token_id", None)
        if unk is not None and unk in model:
            raise UserError(f"{where}: the model's tokenizer has no token for part of {text!r} (it encodes as "
                            f"{getattr(self.hf, 'unk_token', 'the unknown token')})")
        return self.ids.lsdd_ids(torch.as_tensor(list(model), dtype=torch.long)).numpy()

    # transformers tokenizers normalise text (case, spaces around punctuation), so a prompt need not decode back to
    # itself; encode refuses the text the vocabulary lacks instead (sampling.prompts reads this flag)
    exact_roundtrip = False

    def check_text(self, text: str, where: str = "text") -> None:
        """Every text encodes (unknown words become the tokenizer's unknown token)."""

    def sha256(self) -> str:
        """sha256 of the vocabulary (token -> id, when the tokenizer lists it) and the id map."""
        if self._sha is None:
            vocab = self.hf.get_vocab() if callable(getattr(self.hf, "get_vocab", None)) else {}
            doc = {"class": type(self.hf).__name__, "vocab": vocab, "ids": self.ids.to_dict()}
            self._sha = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        return self._sha

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "class": type(self.hf).__name__, "vocab_size": self.vocab_size,
                "sha256": self.sha256()}


@dataclass
class CleanLogitModel:
    """A clean-token predictor as an lsdd model value: what ``lsdd.sample`` and ``lsdd.distill`` take.

    Built by ``from_clean_logits`` (any logit function) or ``load_model(DIR)`` on a transformers masked-LM
    directory. ``score_fn`` is the absorbing-graph score (module docstring); ``clean_log_probs`` the network's
    p_theta over lsdd's real tokens.

    Attributes:
        logits_fn: x (B, L) int64 in the model's ids, sigma (B,) -> logits (B, L, V >= vocab_size).
        ids: the lsdd <-> model id map.
        noise, length, fingerprint, source, tokenizer (lsdd ids, or None), device, meta: as on ``LoadedModel``.
        module: the network (an nn.Module) when there is one: put in eval mode, moved by nothing here.
        suppress: model ids never sampled (their logits are set to -inf), e.g. padding tokens.
        graph: Absorbing(N), N = ``ids.num_tokens``.
    """

    logits_fn: LogitFn
    ids: IdMap
    noise: Noise
    length: int
    fingerprint: str = ""
    source: str = "clean-logit function"
    tokenizer: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    meta: dict[str, Any] = field(default_factory=dict)
    module: Any = None
    suppress: tuple[int, ...] = ()
    precision: str = "fp32"
    compiled: bool = False
    graph: Absorbing = field(init=False)

    def __post_init__(self) -> None:
        self.graph = Absorbing(self.ids.num_tokens)
        self.device = torch.device(self.device)
        self._forward = self.logits_fn
        bad = [i for i in self.suppress if not 0 <= int(i) < self.ids.vocab_size or int(i) == self.ids.mask_id]
        if bad:
            raise UserError(f"suppress: id {bad[0]} is not one of the model's real tokens (0..{self.ids.vocab_size - 1}"
                            f" without the mask {self.ids.mask_id})")
        self._suppress = self.ids.lsdd_ids(torch.tensor([int(i) for i in self.suppress], dtype=torch.long))

    def configure(self, precision: str = "auto", compile: bool = False) -> "CleanLogitModel":
        """``precision`` "fp32", "bf16" (autocast around the logit function) or "auto" (bf16 on CUDA, fp32 on
        the CPU); "fp32" also casts a network loaded in half precision to float32. ``compile`` wraps the logit
        function in torch.compile. Returns self."""
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)} or 'auto'")
        if precision == "fp32" and self.module is not None:
            if any(p.is_floating_point() and p.dtype != torch.float32 for p in self.module.parameters()):
                self.module.float()
        self.precision = precision
        if compile and not self.compiled:
            self._forward = torch.compile(self.logits_fn, dynamic=True)
            self.compiled = True
        return self

    def clean_log_probs(self, x: Tensor, sigma: Tensor) -> Tensor:
        """log p_theta(x_0^i = v | x_t) over lsdd's real tokens.

        Args:
            x: (B, L) int64 lsdd ids (mask N).
            sigma: (B,) total noise sigma_bar (passed on to the logit function).

        Returns:
            (B, L, N) float32 log-probabilities (the mask logit and the suppressed ids dropped).
        """
        device = self.device
        if self.module is not None:
            self.module.eval()
        x = x.to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self._forward(self.ids.model_ids(x), sigma.to(device=device, dtype=torch.float32))
        if logits.shape[:2] != x.shape:
            raise UserError(f"the logit function returned shape {tuple(logits.shape)} for input {tuple(x.shape)}; "
                            "expected (B, L, V)")
        real = self.ids.real_columns(logits).float()
        if self._suppress.numel():
            real = real.index_fill(-1, self._suppress.to(real.device), float("-inf"))
        return torch.log_softmax(real, dim=-1)

    @property
    def score_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        """Callable (x (B, L) int64, sigma (B,)) -> score (B, L, N + 1) float32: p_theta / (e^sigma_bar - 1) on the
        real columns of masked rows, 1 at the current token, 0 elsewhere; no grad."""

        def score(x: Tensor, sigma: Tensor) -> Tensor:
            x = x.to(self.device)
            sig = sigma.to(device=self.device, dtype=torch.float32)
            out = torch.zeros(*x.shape, self.graph.num_states, device=self.device)  # one (B, L, N + 1) buffer
            real = out[..., : self.graph.num_tokens]
            torch.sub(self.clean_log_probs(x, sig), log_expm1(sig)[:, None, None], out=real)
            real.exp_().masked_fill_(~(x == self.graph.mask_id)[..., None], 0.0)
            return out.scatter_(-1, x[..., None], 1.0)

        return score


def from_clean_logits(fn: LogitFn, mask_id: int, vocab_size: int, length: int, *, noise: Noise | dict | None = None,
                      tokenizer: Any = None, device: str | torch.device | None = None, fingerprint: str = "",
                      source: str = "clean-logit function", suppress: tuple[int, ...] | list[int] = (),
                      module: Any = None, meta: dict[str, Any] | None = None) -> CleanLogitModel:
    """Turn a clean-token logit function into an lsdd model on the absorbing graph.

    Args:
        fn: x (B, L) int64 in the model's own token ids, sigma (B,) float32 total noise -> logits (B, L, V) with
            V >= vocab_size (log p_theta(x_0 | x_t) up to a constant per position; a masked LM ignores sigma).
        mask_id: the model's mask token id; inside the vocabulary (BERT, LLaDA) or at/after its end (MDLM).
        vocab_size: how many of the model's ids are tokens (the tokenizer's length; columns past it are dropped).
        length: tokens per sequence.
        noise: the forward schedule the sampler's times map through (default log-linear, eps 1e-3: MDLM's and
            LLaDA's linear masking rate); a Noise or its dict.
        tokenizer: the model's tokenizer (``decode``/``encode`` in the model's ids), wrapped to read lsdd ids.
        device: where ``fn`` runs (default: the device of ``module``'s parameters, else the CPU).
        fingerprint: a string identifying the function (samplers record it and check it on use).
        source: a name for it (in messages and sample records).
        suppress: model ids given probability 0 (e.g. padding); never the mask.
        module: the network behind ``fn`` (put in eval mode before every call; cast by ``configure("fp32")``).
        meta: anything to keep with it.

    Returns:
        A ``CleanLogitModel``: graph Absorbing(N) with N = vocab_size - 1 (mask inside) or vocab_size (outside);
        lsdd id s is the model's id ``model.ids.model_ids(s)`` (``IdMap``).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (x, sigma) -> logits, got {type(fn).__name__}")
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise UserError(f"length must be a positive integer, got {length!r}")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1:
        raise UserError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if not isinstance(mask_id, int) or isinstance(mask_id, bool):
        raise UserError(f"mask_id must be an integer, got {mask_id!r}")
    ids = IdMap(mask_id, vocab_size)
    if noise is None:
        noise = LogLinear(1e-3)
    elif isinstance(noise, dict):
        noise = noise_from_dict(noise)
    if device is None:
        params = list(module.parameters())[:1] if module is not None and hasattr(module, "parameters") else []
        device = params[0].device if params else torch.device("cpu")
    tok = None if tokenizer is None else MappedTokenizer(tokenizer, ids)
    info = dict(meta or {})
    info.setdefault("ids", ids.to_dict())
    if tok is not None:
        info["tokenizer"] = tok.describe()
    return CleanLogitModel(logits_fn=fn, ids=ids, noise=noise, length=length, fingerprint=fingerprint, source=source,
                           tokenizer=tok, device=torch.device(device), meta=info, module=module,
                           suppress=tuple(int(i) for i in suppress))


__all__ = ["from_clean_logits", "CleanLogitModel", "IdMap", "MappedTokenizer", "LogitFn"]
