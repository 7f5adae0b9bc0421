"""Forward processes on tokens (method.md §1): the absorbing (mask), the uniform and the ordinal graph.

Shapes: B = batch, L = sequence length, S = ``num_states`` (for ``Absorbing`` the mask id ``S - 1`` is
included), N = ``num_tokens`` real tokens. ``sigma`` is the total noise sigma_bar, shape (B,).
A *score* is a tensor (B, L, S) of ratios s[b, i, y] ~ p_t(x with x_i <- y) / p_t(x) >= 0; its entry at the
current token is 1 and is never used.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


def _col(sigma: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1) for broadcasting against (B, L, S)."""
    return sigma.reshape(-1, 1, 1)


class Graph(Protocol):
    num_tokens: int
    num_states: int
    absorbing: bool
    name: str

    def sample_limit(self, batch: int, length: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor: ...
    def transition(self, x0: Tensor, sigma: Tensor) -> Tensor: ...
    def sample_transition(self, x0: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor: ...
    def rate_into(self, x: Tensor) -> Tensor: ...
    def reverse_rate(self, x: Tensor, score: Tensor) -> Tensor: ...
    def staggered_score(self, score: Tensor, dsigma: Tensor) -> Tensor: ...
    def transp_transition(self, x: Tensor, dsigma: Tensor) -> Tensor: ...
    def movable(self, x: Tensor) -> Tensor: ...
    def score_entropy(self, log_score: Tensor, sigma: Tensor, x_t: Tensor, x0: Tensor) -> Tensor: ...


class _Base:
    num_tokens: int
    num_states: int

    def reverse_rate(self, x: Tensor, score: Tensor) -> Tensor:
        """Reverse-time rate divided by sigma(t): R[b,i,y] = Q(y -> x_i) s[b,i,y] for y != x_i,
        R[b,i,x_i] = -sum of the others. (B, L) int64, (B, L, S) -> (B, L, S); rows sum to 0."""
        r = self.rate_into(x) * score
        r = r.scatter(-1, x[..., None], 0.0)
        return r.scatter(-1, x[..., None], -r.sum(-1, keepdim=True))

    def sample_transition(self, x0: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_t ~ transition(x0, sigma): (B, L) int64."""
        from .sampling.draws import sample_categorical

        return sample_categorical(self.transition(x0, sigma), generator)

    def _check_tokens(self, x: Tensor, limit: int) -> None:
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= limit):
            raise ValueError(f"token ids must lie in [0, {limit}), got range [{int(x.min())}, {int(x.max())}]")


class Absorbing(_Base):
    """N real tokens plus an absorbing mask id N. Q(v -> mask) = 1 for real v; the mask row is 0."""

    absorbing = True
    name = "absorbing"

    def __init__(self, num_tokens: int):
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.num_tokens = int(num_tokens)
        self.num_states = self.num_tokens + 1
        self.mask_id = self.num_tokens

    def sample_limit(self, batch: int, length: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        """The all-mask sequence (B, L); deterministic, ``generator`` is unused."""
        return torch.full((batch, length), self.mask_id, dtype=torch.long, device=device)

    def transition(self, x0: Tensor, sigma: Tensor) -> Tensor:
        """Law of x_t given x0: stay with e^{-sigma}, mask with 1 - e^{-sigma}. (B, L) -> (B, L, S)."""
        stay = torch.exp(-_col(sigma))
        p = F.one_hot(x0, self.num_states).to(stay.dtype) * stay
        p[..., self.mask_id] += (1.0 - stay[..., 0]).expand_as(p[..., 0])
        return p

    def sample_transition(self, x0: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        move = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        p_mask = -torch.expm1(-sigma.to(torch.float64)).reshape(-1, 1)
        return torch.where(move < p_mask, torch.full_like(x0, self.mask_id), x0)

    def rate_into(self, x: Tensor) -> Tensor:
        """Q(y -> x_i) for every y: 1 for real y when x_i is the mask, else 0 (diagonal excluded). (B, L, S)."""
        q = (x == self.mask_id).to(torch.float64)[..., None].expand(*x.shape, self.num_states).clone()
        q[..., self.mask_id] = 0.0
        return q

    def movable(self, x: Tensor) -> Tensor:
        """(B, L) bool: positions the reverse process can still change (masked ones)."""
        return x == self.mask_id

    def staggered_score(self, score: Tensor, dsigma: Tensor) -> Tensor:
        """sum_b s_b [exp(-dsigma Q)]_{b,y}: e^{d} s_y for real y; the mask entry gets
        s_m + (1 - e^{d}) sum_{real} s. (B, L, S), dsigma (B,)."""
        e = torch.exp(_col(dsigma))
        out = score * e
        extra = score[..., self.mask_id] + (1.0 - e[..., 0]) * score[..., : self.mask_id].sum(-1)
        return torch.cat([out[..., : self.mask_id], extra[..., None]], dim=-1)

    def transp_transition(self, x: Tensor, dsigma: Tensor) -> Tensor:
        """P_{dsigma}(x_i | y) as a function of y. (B, L) -> (B, L, S)."""
        e = torch.exp(-_col(dsigma))
        p = F.one_hot(x, self.num_states).to(e.dtype) * e
        masked = (x == self.mask_id)[..., None]
        p = torch.where(masked, (1.0 - e).expand_as(p), p)
        p[..., self.mask_id] = torch.where(masked[..., 0], 1.0, 0.0).to(p.dtype)
        return p

    def score_entropy(self, log_score: Tensor, sigma: Tensor, x_t: Tensor, x0: Tensor) -> Tensor:
        """Denoising score entropy per token, before the sigma(t) weight (SEDD eq. for absorbing).

        For a masked x_t: sum_{y real} s_y - r log s_{x0} + r (log r - 1), r = 1 / (e^{sigma} - 1);
        0 for unmasked tokens. log_score (B, L, S), sigma (B,), x_t, x0 (B, L) -> (B, L).
        """
        masked = x_t == self.mask_id
        ratio = 1.0 / torch.expm1(sigma).reshape(-1, 1)  # (B, 1)
        pos = log_score[..., : self.mask_id].exp().sum(-1)
        neg = ratio * log_score.gather(-1, x0[..., None])[..., 0]
        const = ratio * (torch.log(ratio) - 1.0)
        return torch.where(masked, pos - neg + const, torch.zeros_like(pos))


class Uniform(_Base):
    """N tokens, Q(x -> y) = 1/N for y != x: a token is resampled uniformly at rate 1."""

    absorbing = False
    name = "uniform"

    def __init__(self, num_tokens: int):
        if num_tokens < 2:
            raise ValueError(f"the uniform graph needs num_tokens >= 2, got {num_tokens}")
        self.num_tokens = int(num_tokens)
        self.num_states = self.num_tokens

    def sample_limit(self, batch: int, length: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        return torch.randint(0, self.num_tokens, (batch, length), generator=generator, device=device)

    def _kernel(self, x: Tensor, sigma: Tensor) -> Tensor:
        """e^{-sigma} onehot(x) + (1 - e^{-sigma}) / N: symmetric, so it is both P(.|x) and P(x|.)."""
        e = torch.exp(-_col(sigma))
        return F.one_hot(x, self.num_states).to(e.dtype) * e + (1.0 - e) / self.num_tokens

    def transition(self, x0: Tensor, sigma: Tensor) -> Tensor:
        return self._kernel(x0, sigma)

    def transp_transition(self, x: Tensor, dsigma: Tensor) -> Tensor:
        return self._kernel(x, dsigma)

    def rate_into(self, x: Tensor) -> Tensor:
        q = torch.full((*x.shape, self.num_states), 1.0 / self.num_tokens, dtype=torch.float64, device=x.device)
        return q.scatter(-1, x[..., None], 0.0)

    def movable(self, x: Tensor) -> Tensor:
        return torch.ones_like(x, dtype=torch.bool)

    def staggered_score(self, score: Tensor, dsigma: Tensor) -> Tensor:
        """exp(-dsigma Q) s = e^{d} s_y + (1 - e^{d}) / N sum_z s_z. (B, L, S), dsigma (B,)."""
        e = torch.exp(_col(dsigma))
        return e * score + (1.0 - e) / self.num_tokens * score.sum(-1, keepdim=True)

    def score_entropy(self, log_score: Tensor, sigma: Tensor, x_t: Tensor, x0: Tensor) -> Tensor:
        """Denoising score entropy per token with weights Q(y -> x_t) = 1/N, before sigma(t). -> (B, L)."""
        p = self._kernel(x0, sigma)  # (B, L, S): P(y | x0)
        ratio = p / p.gather(-1, x_t[..., None])  # P(y|x0) / P(x_t|x0)
        terms = log_score.exp() - ratio * log_score + ratio * (torch.log(ratio) - 1.0)
        terms = terms.scatter(-1, x_t[..., None], 0.0)
        return terms.sum(-1) / self.num_tokens


def default_bandwidth(num_tokens: int) -> float:
    """The ordinal graph's default kernel width in levels: N / 8 (about 2 of the digits' 17 grey levels)."""
    return num_tokens / 8.0


class Ordinal(_Base):
    """N ordered values (grey levels) with tauLDR-style rates that favour nearby values: a discretised
    Gaussian kernel Q(x -> y) = c exp(-(x - y)^2 / (2 w^2)) for y != x (w: ``bandwidth`` in levels).

    Q is symmetric, so exp(sigma Q) is doubly stochastic and the uniform law is stationary (the limit); c is
    chosen so that the spectral gap of -Q is 1, i.e. the slowest mode dies like e^{-sigma}, as on the uniform
    graph (so the same geometric schedule, sigma_max = 20, reaches the uniform limit). Transitions use the
    eigendecomposition Q = V diag(lam) V^T, computed once in float64: exp(sigma Q) = V diag(e^{sigma lam}) V^T.
    ``dense_rates``: Q(y -> x) depends on y, so samplers read ``rate_into`` instead of a constant 1/N.
    """

    absorbing = False
    name = "ordinal"
    dense_rates = True
    stagger_cap = 100.0  # the largest gain of a mode in ``staggered_score`` (see there)

    def __init__(self, num_tokens: int, bandwidth: float | None = None):
        if num_tokens < 2:
            raise ValueError(f"the ordinal graph needs num_tokens >= 2, got {num_tokens}")
        self.num_tokens = int(num_tokens)
        self.num_states = self.num_tokens
        self.bandwidth = float(default_bandwidth(self.num_tokens) if bandwidth is None else bandwidth)
        if not self.bandwidth > 0:
            raise ValueError(f"the ordinal graph's bandwidth must be > 0, got {bandwidth!r}")
        levels = torch.arange(self.num_tokens, dtype=torch.float64)
        kernel = torch.exp(-((levels[:, None] - levels[None, :]) ** 2) / (2.0 * self.bandwidth**2))
        kernel.fill_diagonal_(0.0)
        q = kernel - torch.diag(kernel.sum(1))
        gap = torch.linalg.eigvalsh(-q)[1]  # eigenvalues ascending: 0 (uniform), then the gap
        self.q = q / gap  # (S, S) float64, Q[a, b] = rate of a -> b; rows sum to 0
        lam, vec = torch.linalg.eigh(self.q)
        self.eigvals, self.eigvecs = lam.clamp_max(0.0), vec  # (S,), (S, S)
        self._off = self.q.clone().fill_diagonal_(0.0)  # off-diagonal rates

    def _expm(self, sigma: Tensor, device) -> Tensor:
        """exp(sigma Q) for sigma (B,): (B, S, S) float64 (sigma < 0: the inverse kernel, which has negative
        entries)."""
        vec = self.eigvecs.to(device)
        e = torch.exp(sigma.to(device=device, dtype=torch.float64).reshape(-1, 1) * self.eigvals.to(device))
        return torch.einsum("as,bs,cs->bac", vec, e, vec)

    def _rows(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Row x[b, i] of exp(sigma_b Q) for every token: (B, L) -> (B, L, S) in sigma's float dtype."""
        mats = self._expm(sigma, x.device).clamp_min(0.0)  # a law: round-off below 0 is clipped
        if mats.shape[0] == 1 and x.shape[0] != 1:
            mats = mats.expand(x.shape[0], -1, -1)
        out = mats[torch.arange(x.shape[0], device=x.device)[:, None], x]
        return out.to(sigma.dtype) if sigma.is_floating_point() else out

    def sample_limit(self, batch: int, length: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        """The stationary law is uniform (Q is symmetric)."""
        return torch.randint(0, self.num_tokens, (batch, length), generator=generator, device=device)

    def transition(self, x0: Tensor, sigma: Tensor) -> Tensor:
        """Law of x_t given x0: row x0 of exp(sigma Q). (B, L), sigma (B,) -> (B, L, S)."""
        return self._rows(x0, sigma)

    def transp_transition(self, x: Tensor, dsigma: Tensor) -> Tensor:
        """P_{dsigma}(x_i | y) over y: column x_i of exp(dsigma Q), equal to its row (symmetric)."""
        return self._rows(x, dsigma)

    def rate_into(self, x: Tensor) -> Tensor:
        """Q(y -> x_i) for every y (0 at y = x_i): (B, L) -> (B, L, S) float64."""
        return self._off.to(x.device)[x]

    def movable(self, x: Tensor) -> Tensor:
        return torch.ones_like(x, dtype=torch.bool)

    def staggered_score(self, score: Tensor, dsigma: Tensor) -> Tensor:
        """sum_b s_b [exp(-dsigma Q)]_{b, y}: (B, L, S) @ exp(-dsigma Q) per batch row, dsigma (B,).

        exp(-dsigma Q) = V diag(e^{dsigma |lam|}) V^T undoes dsigma of blurring; its fast modes grow like
        e^{dsigma |lam|} (|lam| up to ~14 for 17 levels, so e^{200} over the first step of an 8-step grid), which
        would amplify round-off and model error without bound. **[choice]** Each mode's gain is capped at
        ``stagger_cap`` (100): exact while dsigma |lam| <= log 100, a truncated (regularised) deconvolution
        beyond, where the uncapped one is numerical noise anyway."""
        gain = torch.exp((-dsigma.to(device=score.device, dtype=torch.float64).reshape(-1, 1)
                          * self.eigvals.to(score.device)).clamp_max(math.log(self.stagger_cap)))
        vec = self.eigvecs.to(score.device)
        mats = torch.einsum("as,bs,cs->bac", vec, gain, vec).to(score.dtype)  # (B, S, S)
        return torch.matmul(score, mats)  # (B, L, S) @ (B or 1, S, S)

    def score_entropy(self, log_score: Tensor, sigma: Tensor, x_t: Tensor, x0: Tensor) -> Tensor:
        """Denoising score entropy per token with weights Q(y -> x_t), before sigma(t) (SEDD):
        sum_{y != x_t} Q(y -> x_t) [s_y - r_y log s_y + r_y (log r_y - 1)], r_y = P(y | x0) / P(x_t | x0).
        log_score (B, L, S), sigma (B,), x_t, x0 (B, L) -> (B, L)."""
        p = self._rows(x0, sigma)  # (B, L, S): P(y | x0)
        ratio = p / p.gather(-1, x_t[..., None]).clamp_min(torch.finfo(p.dtype).tiny)
        terms = log_score.exp() - ratio * log_score + torch.xlogy(ratio, ratio) - ratio
        weights = self.rate_into(x_t).to(terms.dtype)  # 0 at y = x_t
        return (weights * terms).sum(-1)


GRAPHS = {"absorbing": Absorbing, "uniform": Uniform, "ordinal": Ordinal}


def make_graph(name: str, num_tokens: int) -> Graph:
    """Build a graph by name; ValueError lists the valid names."""
    if name not in GRAPHS:
        raise ValueError(f"unknown graph {name!r}; expected one of {sorted(GRAPHS)}")
    return GRAPHS[name](num_tokens)


def log_expm1(sigma: Tensor) -> Tensor:
    """log(e^sigma - 1), stable for small and large sigma."""
    return torch.where(sigma < 0.5, torch.log(torch.expm1(sigma)), sigma + torch.log(-torch.expm1(-sigma)))


__all__ = ["Graph", "Absorbing", "Uniform", "Ordinal", "default_bandwidth", "GRAPHS", "make_graph", "log_expm1"]
