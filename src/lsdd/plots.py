"""Figures: learned samplers (Phi and time grid against the uniform grid), bench quality against NFE, and
grids of digit samples.

matplotlib is imported inside the functions (Agg backend), so importing lsdd never touches it.
"""

from __future__ import annotations

from pathlib import Path

from . import atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_samplers(samplers: dict, path: str | Path) -> None:
    """Left: coefficient Phi_k at each step time; right: learned grid t_k against the uniform grid.

    samplers: label -> lsdd.Sampler.
    """
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, s in samplers.items():
        t = s.times[:-1]
        ax1.plot(t, s.coeffs_tensor().tolist(), "o-", label=f"{label} ({s.phi_mode})")
        m = s.nfe
        ax2.plot(range(m + 1), s.times, "o-", label=label)
    ms = sorted({s.nfe for s in samplers.values()})
    for m in ms:
        ax2.plot(range(m + 1), [1 - k * (1 - min(s.times[-1] for s in samplers.values())) / m for k in range(m + 1)],
                 "k--", lw=0.8, alpha=0.6, label=f"uniform M={m}")
    ax1.axhline(1.0, color="k", lw=0.8, ls="--")
    ax1.set_xlabel("step start time t_k")
    ax1.set_ylabel("coefficient Phi_k")
    ax1.set_title("learned coefficients (1 = base sampler)")
    ax1.invert_xaxis()
    ax2.set_xlabel("step k")
    ax2.set_ylabel("time t_k")
    ax2.set_title("time grid")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_bench(result, task, path: str | Path) -> None:
    """Headline quality metric and its diversity partner against NFE, one line per sampler; the teacher
    as a horizontal reference."""
    plt = _plt()
    q, d = result.headline
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    teacher = next(r for r in result.rows if r.method == "teacher")
    # a temperature control's T differs per NFE: one line per matched sampler
    key = lambda r: f"euler-T ~ {r.matches}" if getattr(r, "matches", None) else r.label  # noqa: E731
    labels = []
    for r in result.rows:
        if r.method != "teacher" and key(r) not in labels:
            labels.append(key(r))
    for ax, metric in zip(axes, (q, d)):
        for label in labels:
            pts = sorted((r.nfe, r.metrics[metric]) for r in result.rows if key(r) == label)
            style = "--" if label.startswith("uniform") else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label)
        ax.axhline(teacher.metrics[metric], color="k", lw=1, ls=":", label=f"teacher ({teacher.nfe} NFE)")
        spec = task.spec(metric)
        ax.set_title(f"{metric} ({spec.direction})")
        ax.set_xlabel("NFE (network calls per sample)")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result.task}: quality and diversity at equal NFE")
    _save(fig, path)
    plt.close(fig)


def _digit_mosaic(tokens, ncols: int, levels: int = 17, side: int = 8, pad: int = 1):
    """(n, side * side) grey levels -> one (rows * (side + pad) - pad, ...) float array in [0, 1], NaN padding."""
    import numpy as np

    x = np.asarray(tokens, dtype=np.float64).reshape(-1, side, side) / (levels - 1)
    n = x.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    cell = side + pad
    out = np.full((nrows * cell - pad, ncols * cell - pad), np.nan)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * cell: r * cell + side, c * cell: c * cell + side] = x[i]
    return out


def plot_digit_panels(panels: dict, path: str | Path, ncols: int = 8, levels: int = 17) -> None:
    """One figure with a grid of digit samples per panel, side by side: panels maps a title to an (n, 64)
    array of grey levels 0..levels-1 in raster order (ink white on black, as in the data)."""
    plt = _plt()
    import matplotlib

    cmap = matplotlib.colormaps["gray"].with_extremes(bad="#9fb7d6")  # the gaps between digits
    mosaics = {title: _digit_mosaic(tokens, ncols, levels) for title, tokens in panels.items()}
    h, w = max(m.shape[0] for m in mosaics.values()), max(m.shape[1] for m in mosaics.values())
    scale = 0.05  # inches per pixel: 8 x 8 digits about 0.4 inch wide
    fig, axes = plt.subplots(1, len(panels), figsize=(scale * w * len(panels) + 0.3, scale * h + 0.6), squeeze=False)
    for ax, (title, mosaic) in zip(axes[0], mosaics.items()):
        ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_digit_grid(tokens, path: str | Path, ncols: int = 16, title: str | None = None, levels: int = 17) -> None:
    """A PNG grid of digit samples (n, 64) (grey levels in raster order)."""
    plot_digit_panels({title or f"{len(tokens)} samples": tokens}, path, ncols=ncols, levels=levels)
