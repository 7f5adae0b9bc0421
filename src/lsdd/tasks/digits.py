"""Metrics of the digits task: samples are (n, 64) grey levels 0..16 in raster order (``lsdd.data.digits``).

All numbers live in the feature space of a small CNN trained on the digits' train split
(``tasks.digit_classifier``, bundled as ``digits-cnn``), against the 359 held-out test digits:

- ``fid``: Fréchet distance between Gaussians fitted to the features of the samples and of the test digits,
  computed by torchmetrics' ``FrechetInceptionDistance`` with the classifier as its custom feature extractor;
- ``precision`` / ``recall``: k-nearest-neighbour manifold precision and recall (Kynkäänniemi et al. 2019,
  k = 3): the fraction of samples inside some test digit's k-NN ball, and of test digits inside some
  sample's k-NN ball;
- ``confident``: the fraction of samples the classifier labels with probability >= 0.9 (recognisable);
- ``class_entropy`` / ``class_tv``: entropy of the predicted-label histogram and its TV distance to the
  test digits' label histogram (class balance: a collapsed sampler draws few classes);
- ``ref_*``: the same numbers for n real *training* digits (what a model that reproduces its training data
  exactly would score at the same sample size; every metric here depends on n). n is capped at the 1,438
  training digits for the reference.

Data: the digits' train split (``lsdd train --data digits``). Samples decode to 8 lines of ASCII art each and
draw as a PNG grid (``plot_grid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import UserError
from .base import Demo, MetricSpec, Task, check_samples
from .digit_classifier import DigitClassifier, FeatureExtractor, load_digit_classifier, tokens_to_images

K_NEIGHBOURS = 3
ASCII_LEVELS = " .:-=+*#%@"  # grey level g (0..16) is drawn as ASCII_LEVELS[g * 10 // 17]
CONFIDENT = 0.9
REF_SEED = 0


def knn_radii(feats: Tensor, k: int) -> Tensor:
    """Distance of each row of feats (n, d) to its k-th nearest other row: (n,)."""
    d = torch.cdist(feats, feats)
    return d.topk(k + 1, dim=1, largest=False).values[:, k]  # column 0 is the point itself


def knn_coverage(points: Tensor, centres: Tensor, k: int) -> float:
    """Fraction of points (n, d) inside at least one ball around centres (m, d) of radius its k-NN distance."""
    radii = knn_radii(centres, k)
    inside = torch.cdist(points, centres) <= radii[None, :]
    return float(inside.any(1).double().mean())


def class_histogram(labels: Tensor) -> Tensor:
    return torch.bincount(labels, minlength=10).double()


@dataclass
class DigitsTask(Task):
    """Digit-image metrics; ``classifier``: a classifier directory (default: the bundled ``digits-cnn``)."""

    num_values: int = 17
    classifier: str | None = None
    k: int = K_NEIGHBOURS
    model: DigitClassifier = field(init=False, repr=False)

    name: ClassVar[str] = "digits"
    metrics: ClassVar[list[MetricSpec]] = [
        MetricSpec("fid", "Fréchet distance to held-out digits in classifier features (torchmetrics FID)", False,
                   "quality"),
        MetricSpec("precision", "fraction of samples on the held-out digits' k-NN manifold (k=3)", True, "quality"),
        MetricSpec("confident", "fraction of samples the classifier labels with p >= 0.9", True, "quality"),
        MetricSpec("recall", "fraction of held-out digits on the samples' k-NN manifold (k=3)", True, "diversity"),
        MetricSpec("class_entropy", "entropy of the predicted labels (nats; uniform over 10: 2.303)", True,
                   "diversity"),
        MetricSpec("class_tv", "TV of the predicted-label histogram to the held-out digits'", False, "diversity"),
        MetricSpec("ref_fid", "fid of n real training digits (the floor at this sample size)", False, "reference"),
        MetricSpec("ref_precision", "precision of n real training digits", False, "reference"),
        MetricSpec("ref_recall", "recall of n real training digits", False, "reference"),
        MetricSpec("ref_class_entropy", "class_entropy of n real training digits", False, "reference"),
    ]
    pairs: ClassVar[list[tuple[str, str]]] = [("fid", "class_entropy"), ("precision", "recall")]
    default_model: ClassVar[str] = "digits-uniform"
    demo: ClassVar[Demo] = Demo(nfe=(8,), teacher_nfe=512, num_samples=256, methods=("lsd+",), shows="images")
    draws_images: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.num_values != 17:
            raise UserError(f"the digits task has 17 grey levels, got --num-values {self.num_values}")
        from ..data.digits import load_digits_tokens

        self.model, self.info = load_digit_classifier(self.classifier)
        self.real, real_labels = load_digits_tokens("test")
        self.train_digits, _ = load_digits_tokens("train")
        self.real_feats = self._features(self.real)
        self.real_hist = class_histogram(real_labels)
        self._fid = None
        self._ref: dict[int, dict[str, float]] = {}

    @classmethod
    def matches(cls, model) -> bool:
        """Models trained on the digits (their training record says so)."""
        return (model.meta.get("training") or {}).get("data", {}).get("type") == cls.name

    @classmethod
    def from_model(cls, model, **options: Any) -> "DigitsTask":
        """The task, after checking the model draws 8x8 images of 17 grey levels."""
        from ..data.digits import DIGITS_LENGTH, DIGITS_LEVELS

        if (model.config.num_tokens, model.config.length) != (DIGITS_LEVELS, DIGITS_LENGTH):
            raise UserError(f"the digits task needs a model of {DIGITS_LENGTH} tokens with {DIGITS_LEVELS} grey "
                            f"levels; {model.source} has {model.config.length} tokens and {model.config.num_tokens} "
                            "levels")
        return cls(**options)

    @classmethod
    def data(cls):
        """The digits' train split, drawn with replacement."""
        from ..data.digits import DigitsSource

        return DigitsSource()

    @classmethod
    def data_from_record(cls, record: dict[str, Any], directory: Path):
        from ..data.digits import DigitsSource

        return DigitsSource(record["split"], record["seed"], record["test_fraction"])

    def decode(self, samples: Tensor) -> list[str]:
        """Each sample as 8 lines of 8 characters, darker characters for more ink; ``?`` for a token outside
        0..16 (a leftover mask).

        Args:
            samples: (n, 64) integer grey levels in raster order.
        """
        x = check_samples(samples)
        if x.shape[1] != 64:
            raise UserError(f"digit samples must have 64 tokens (8x8 in raster order), got length {x.shape[1]}")
        chars = [ASCII_LEVELS[g * len(ASCII_LEVELS) // 17] for g in range(17)]
        art = []
        for row in x.tolist():
            pix = [chars[g] if 0 <= g <= 16 else "?" for g in row]
            art.append("\n".join("".join(pix[i:i + 8]) for i in range(0, 64, 8)))
        return art

    def plot_grid(self, samples: Tensor, path: str | Path, title: str | None = None) -> None:
        """Draw the first 256 samples as a PNG grid of 8x8 images."""
        from ..plots import plot_digit_grid

        plot_digit_grid(check_samples(samples)[:256].cpu().numpy(), path, title=title)

    def plot_panels(self, panels: dict[str, Tensor], path: str | Path) -> None:
        """Draw each heading's samples as a panel of 8x8 images, side by side."""
        from ..plots import plot_digit_panels

        plot_digit_panels({head: check_samples(x).cpu().numpy() for head, x in panels.items()}, path)

    @torch.no_grad()
    def _features(self, x: Tensor) -> Tensor:
        return self.model.features(tokens_to_images(x)).double()

    def _fid_metric(self):
        if self._fid is None:
            try:
                from torchmetrics.image.fid import FrechetInceptionDistance
            except ImportError:
                raise UserError("the digits task needs torchmetrics (pip install 'lsdd[images]')") from None
            # sums and covariances are accumulated in float64 by torchmetrics; the features are float32
            fid = FrechetInceptionDistance(feature=FeatureExtractor(self.model), reset_real_features=False,
                                           normalize=True)
            fid.update(tokens_to_images(self.real), real=True)
            self._fid = fid
        return self._fid

    def _scores(self, x: Tensor) -> dict[str, float]:
        fid = self._fid_metric()
        fid.reset()  # the fake features only (reset_real_features=False)
        fid.update(tokens_to_images(x), real=False)
        feats = self._features(x)
        with torch.no_grad():
            probs = torch.softmax(self.model.head(feats.float()), -1)
        hist = class_histogram(probs.argmax(-1))
        p, q = hist / hist.sum(), self.real_hist / self.real_hist.sum()
        nz = p > 0
        k = min(self.k, x.shape[0] - 1, self.real_feats.shape[0] - 1)
        return {"fid": float(fid.compute()) if x.shape[0] >= 2 else float("nan"),
                "precision": knn_coverage(feats, self.real_feats, k) if k >= 1 else float("nan"),
                "confident": float((probs.max(-1).values >= CONFIDENT).double().mean()),
                "recall": knn_coverage(self.real_feats, feats, k) if k >= 1 else float("nan"),
                "class_entropy": float(-(p[nz] * p[nz].log()).sum()),
                "class_tv": float(0.5 * (p - q).abs().sum())}

    def reference(self, n: int) -> dict[str, float]:
        """The metrics of min(n, 1438) real training digits, drawn without replacement (seed 0); cached."""
        n = min(n, self.train_digits.shape[0])
        if n not in self._ref:
            idx = torch.randperm(self.train_digits.shape[0], generator=torch.Generator().manual_seed(REF_SEED))[:n]
            self._ref[n] = self._scores(self.train_digits[idx])
        return self._ref[n]

    def compute(self, samples: Tensor) -> dict[str, float]:
        x = check_samples(samples)
        if x.shape[1] != 64:
            raise UserError(f"digit samples must have 64 tokens (8x8 in raster order), got length {x.shape[1]}")
        if int(x.min()) < 0 or int(x.max()) > 16:
            raise UserError(f"digit samples must hold grey levels 0..16, got range [{int(x.min())}, {int(x.max())}]")
        out = self._scores(x)
        ref = self.reference(x.shape[0])
        out.update({f"ref_{k}": ref[k] for k in ("fid", "precision", "recall", "class_entropy")})
        return {m.name: out[m.name] for m in self.metrics}


__all__ = ["DigitsTask", "knn_radii", "knn_coverage", "K_NEIGHBOURS"]
