"""Conditional generation: which tokens a sample is given, from a prompt, an infill template or a token array.

A ``Condition`` holds ``given``, a (P, L) int64 array of tokens held fixed, with ``loop.free_token(graph)`` at
the free positions (the positions the sampler generates): the mask id on the absorbing graph, the id one past
the vocabulary (``num_tokens``) on the others. Sample i of a run holds row i mod P. Three ways to make one:

* ``from_prompt``: prefixes - a text (or a list of texts, one row each, encoded with the model's tokenizer) or
  token ids (a list of ints, a list of lists, a 1-D or 2-D integer array); the positions after each are free.
* ``from_infill``: templates, text with gaps written ``{{n}}`` (n >= 1 free tokens), e.g.
  ``"To be, or {{6}} to be"``; each literal piece is encoded on its own, and the positions after the template
  are free as well (the model continues it).
* ``from_fixed``: a (L,) or (P, L) integer array with ``free_token`` at the free positions (any model).

Every problem is a one-line ``UserError`` raised before any sampling: a model without a tokenizer for text, a
text the tokenizer cannot encode, a prompt or template that leaves no free position, a token id outside the
vocabulary. The condition is recorded in the samples' sidecar (``to_info``, ``from_info``), so ``lsdd decode``
shows prompt and continuation apart and ``lsdd eval`` scores the continuation given its prompt.

Shapes: P conditions (rows), L the model's length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .loop import free_token

KINDS = ("prompt", "infill", "fixed")
GAP = re.compile(r"\{\{(\d+)\}\}")  # an infill gap: {{n}}, n free tokens


@dataclass(frozen=True)
class Condition:
    """The given tokens of a run: ``given`` (P, L) int64 (``free`` at the free positions), how they were given
    (``kind`` in ``KINDS``) and, for text, the prompts or templates as written (``texts``, P strings)."""

    given: Tensor
    kind: str
    free: int
    texts: tuple[str, ...] | None = None

    def rows(self, num: int) -> Tensor:
        """(num, L) int64: the given tokens of samples 0..num-1 (sample i holds row i mod P)."""
        return self.given[torch.arange(num) % self.given.shape[0]]

    def held(self, num: int) -> Tensor:
        """(num, L) bool: the positions samples 0..num-1 hold fixed."""
        return self.rows(num) != self.free

    def free_positions(self, num: int) -> int:
        """The largest number of free positions among samples 0..num-1 (what ``Sampler.blocks`` takes)."""
        return int((~self.held(min(num, self.given.shape[0]))).sum(-1).max())

    def to_info(self) -> dict[str, Any]:
        """What the samples' sidecar records (JSON)."""
        return {"kind": self.kind, "texts": None if self.texts is None else list(self.texts),
                "free_token": self.free, "given": self.given.tolist()}

    @classmethod
    def from_info(cls, info: dict[str, Any], where: str = "the samples' sidecar") -> "Condition":
        """The condition a sidecar records (``to_info``); UserError when it is malformed."""
        try:
            given = torch.tensor(info["given"], dtype=torch.long)
            out = cls(given, str(info["kind"]), int(info["free_token"]),
                      None if info.get("texts") is None else tuple(str(t) for t in info["texts"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where}: malformed 'condition' record ({type(e).__name__}: {e})") from None
        if given.ndim != 2 or out.kind not in KINDS:
            raise UserError(f"{where}: malformed 'condition' record (given of shape {tuple(given.shape)}, kind "
                            f"{out.kind!r})")
        return out


def _tokenizer(model, what: str):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise UserError(f"{what} is text, but model {getattr(model, 'source', '?')} has no tokenizer; give token ids "
                        "instead (prompt=[ids], or --fixed FILE.npy)")
    return tok


def _encode(tok, text: str, where: str) -> np.ndarray:
    ids = tok.encode(text, where)  # UserError naming a character the tokenizer cannot encode
    if getattr(tok, "exact_roundtrip", True) and hasattr(tok, "decode") and len(ids) and tok.decode(ids) != text:
        raise UserError(f"{where}: the model's tokenizer cannot encode this text exactly (it decodes back as "
                        f"{tok.decode(ids)!r})")
    return np.asarray(ids, dtype=np.int64)


def _check_ids(ids: np.ndarray, model, where: str) -> None:
    n = model.graph.num_tokens
    bad = ids[(ids < 0) | (ids >= n)]
    if bad.size:
        raise UserError(f"{where}: token id {int(bad[0])} is outside the model's vocabulary of {n} tokens")


def _prefix_row(ids: np.ndarray, model, where: str) -> Tensor:
    length = model.length
    if ids.size >= length:
        raise UserError(f"{where} is {ids.size} tokens long, but the model's sequences are {length} tokens: no "
                        "position is left to generate")
    row = torch.full((length,), free_token(model.graph), dtype=torch.long)
    row[: ids.size] = torch.from_numpy(ids)
    return row


def _is_texts(prompt: Any) -> bool:
    return isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and len(prompt) > 0
                                       and all(isinstance(p, str) for p in prompt))


def _id_rows(prompt: Any) -> list[np.ndarray]:
    """Token-id prompts as a list of 1-D int64 arrays: a list of ints, a list of lists, a 1-D or 2-D array."""
    if isinstance(prompt, Tensor):
        prompt = prompt.cpu().numpy()
    if isinstance(prompt, np.ndarray):
        if not np.issubdtype(prompt.dtype, np.integer) or prompt.ndim not in (1, 2):
            raise UserError(f"token-id prompts must be a 1-D or 2-D integer array, got {prompt.ndim}-D {prompt.dtype}")
        return [np.asarray(r, dtype=np.int64) for r in (prompt[None] if prompt.ndim == 1 else prompt)]
    if isinstance(prompt, (list, tuple)) and prompt and all(_is_int(v) for v in prompt):
        return [np.asarray(prompt, dtype=np.int64)]
    if isinstance(prompt, (list, tuple)) and prompt and all(
            isinstance(r, (list, tuple)) and all(_is_int(v) for v in r) for r in prompt):
        return [np.asarray(r, dtype=np.int64) for r in prompt]
    raise UserError(f"a prompt is a string, a list of strings, or token ids (a list of ints, a list of lists, an "
                    f"integer array); got {type(prompt).__name__} {str(prompt)[:40]}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def from_prompt(model, prompt: Any) -> Condition:
    """Prefix prompts (module docstring): a text or a list of texts (the model's tokenizer), or token ids."""
    if _is_texts(prompt):
        texts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
        tok = _tokenizer(model, "the prompt")
        rows = []
        for i, text in enumerate(texts):
            where = "the prompt" if len(texts) == 1 else f"prompt {i + 1}"
            rows.append(_prefix_row(_encode(tok, text, where), model, where))
        return Condition(torch.stack(rows), "prompt", free_token(model.graph), texts)
    rows, ids_rows = [], _id_rows(prompt)
    for i, ids in enumerate(ids_rows):
        where = "the prompt" if len(ids_rows) == 1 else f"prompt {i + 1}"
        _check_ids(ids, model, where)
        rows.append(_prefix_row(ids, model, where))
    return Condition(torch.stack(rows), "prompt", free_token(model.graph))


def parse_template(template: str) -> list[str | int]:
    """An infill template as its pieces, in order: literal texts (str) and gaps (int n >= 1 free tokens).
    ``"To be {{3}} not"`` -> ["To be ", 3, " not"]. UserError without a gap or with a gap of 0."""
    pieces: list[str | int] = []
    last = 0
    for m in GAP.finditer(template):
        if m.start() > last:
            pieces.append(template[last:m.start()])
        n = int(m.group(1))
        if n < 1:
            raise UserError(f"infill template {template[:40]!r}: a gap {{{{n}}}} needs n >= 1 free tokens, got {n}")
        pieces.append(n)
        last = m.end()
    if last < len(template):
        pieces.append(template[last:])
    if not any(isinstance(p, int) for p in pieces):
        raise UserError(f"infill template {template[:40]!r} has no gap {{{{n}}}} (n free tokens); for a prefix use a "
                        "prompt")
    return pieces


def _template_row(model, tok, template: str, where: str) -> Tensor:
    free = free_token(model.graph)
    parts = [torch.full((p,), free, dtype=torch.long) if isinstance(p, int)
             else torch.from_numpy(_encode(tok, p, where)) for p in parse_template(template)]
    row = torch.cat(parts)
    if row.numel() > model.length:
        raise UserError(f"{where} is {row.numel()} tokens long with its gaps, more than the model's {model.length}")
    return torch.cat([row, torch.full((model.length - row.numel(),), free, dtype=torch.long)])


def from_infill(model, template: str | list[str]) -> Condition:
    """Infill templates (module docstring): a text with gaps ``{{n}}``, or a list of them (one row each)."""
    texts = (template,) if isinstance(template, str) else tuple(template)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise UserError(f"an infill template is a string (or a list of strings), got {type(template).__name__}")
    tok = _tokenizer(model, "the infill template")
    rows = [_template_row(model, tok, t, "the infill template" if len(texts) == 1 else f"infill template {i + 1}")
            for i, t in enumerate(texts)]
    return Condition(torch.stack(rows), "infill", free_token(model.graph), texts)


def from_fixed(model, fixed: Any, where: str = "fixed") -> Condition:
    """A (L,) or (P, L) integer array of given tokens, ``loop.free_token(model.graph)`` at the free positions."""
    arr = fixed.cpu().numpy() if isinstance(fixed, Tensor) else np.asarray(fixed)
    if arr.ndim not in (1, 2) or not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        raise UserError(f"{where}: expected a (L,) or (P, L) integer array, got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.reshape(-1, arr.shape[-1]).astype(np.int64)
    free = free_token(model.graph)
    if arr.shape[1] != model.length:
        raise UserError(f"{where}: rows of {arr.shape[1]} tokens, but the model's sequences are {model.length}")
    bad = arr[(arr < 0) | (arr > free)]
    if bad.size:
        raise UserError(f"{where}: token id {int(bad[0])} is outside the model's vocabulary of {free} tokens (free "
                        f"positions hold {free})")
    full = np.flatnonzero((arr != free).all(-1))
    if full.size:
        raise UserError(f"{where}: row {int(full[0])} has no free position (the id {free}): nothing to generate")
    return Condition(torch.from_numpy(arr), "fixed", free)


def condition(model, prompt: Any = None, infill: Any = None, fixed: Any = None) -> Condition | None:
    """The condition that at most one of ``prompt``, ``infill`` and ``fixed`` gives (None: none)."""
    given = [name for name, v in (("prompt", prompt), ("infill", infill), ("fixed", fixed)) if v is not None]
    if len(given) > 1:
        raise UserError(f"give one of prompt, infill and fixed, not {' and '.join(given)}")
    if prompt is not None:
        return from_prompt(model, prompt)
    if infill is not None:
        return from_infill(model, infill)
    if fixed is not None:
        return from_fixed(model, fixed)
    return None


__all__ = ["Condition", "KINDS", "GAP", "from_prompt", "from_infill", "from_fixed", "parse_template", "condition"]
