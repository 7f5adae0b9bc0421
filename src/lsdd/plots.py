"""Figures: learned samplers (Phi and time grid against the uniform grid), bench quality against NFE, generative
frontiers (quality against diversity over a temperature sweep), and grids of digit samples.

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


def _distinct_colors(plt, curves: int) -> list:
    """The colour cycle, or tab20's 20 colours when a panel has more curves than the cycle has colours."""
    import matplotlib

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if curves > len(colors):
        colors = [matplotlib.colormaps["tab20"](i) for i in range(20)]
    return colors


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
    colors = _distinct_colors(plt, len(labels))
    for ax, metric in zip(axes, (q, d)):
        for i, label in enumerate(labels):
            pts = sorted((r.nfe, r.metrics[metric]) for r in result.rows if key(r) == label)
            style = "--" if label.startswith("uniform") else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label,
                    color=colors[i % len(colors)])
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


def _reference(metrics: dict, name: str) -> float | None:
    """The task's reference value of metric ``name`` (``ref_NAME`` or ``NAME_ref``: e.g. real text's gen_ppl),
    if it has a finite one."""
    import math

    for key in (f"ref_{name}", f"{name}_ref"):
        v = metrics.get(key)
        if v is not None and math.isfinite(v):
            return float(v)
    return None


def plot_frontier(result, task, path: str | Path) -> None:
    """Generative frontiers: the headline quality metric against its diversity partner, one curve per sampler
    over the value-temperature sweep of ``BenchConfig.frontier`` (one panel per NFE). The teacher is a star with a
    dotted line at its diversity (where "at teacher's H" is read, an open circle on each curve that reaches it);
    the task's reference numbers (real text / real digits), where it has both, a black square, or a dashed line
    where it has only the diversity one (countdown's uniform starts). Log quality axis for ``gap_in_log`` tasks
    (gen PPL). A diversity metric that falls as diversity rises (``higher_is_better`` False, e.g. start_tv) is
    drawn reversed, so more diverse is always to the right."""
    import math

    plt = _plt()
    q, d = result.headline
    teacher = next(r for r in result.rows if r.method == "teacher")
    rows = [r for r in result.rows if r.frontier]
    nfes = sorted({r.nfe for r in rows})
    if not nfes:
        raise ValueError("no row has a frontier (run the bench with frontier temperatures)")
    fig, axes = plt.subplots(1, len(nfes), figsize=(5.5 * len(nfes) + 0.5, 4.6), squeeze=False, sharey=True)
    ref_q, ref_d = _reference(teacher.metrics, q), _reference(teacher.metrics, d)
    colors = _distinct_colors(plt, max(sum(r.nfe == n for r in rows) for n in nfes))
    for ax, nfe in zip(axes[0], nfes):
        for i, r in enumerate(r for r in rows if r.nfe == nfe):
            pts = sorted((t, m[q], m[d]) for t, m in r.frontier)
            color = colors[i % len(colors)]
            style = "--" if r.method in ("uniform", "temperature") else "-"
            label = r.label + (f" (~{r.matches})" if r.matches else "")
            ax.plot([p[2] for p in pts], [p[1] for p in pts], style, marker=".", color=color, label=label)
            for t, qq, dd in pts:
                if t == 1.0:
                    ax.plot([dd], [qq], "o", color=color, ms=6)  # the row itself
            for t, qq, dd in (pts[0], pts[-1]):  # the ends of the sweep
                ax.annotate(f"T={t:g}", (dd, qq), fontsize=6, color=color, textcoords="offset points",
                            xytext=(3, 3))
            v = r.at_teacher_diversity
            if v is not None and math.isfinite(v):
                ax.plot([teacher.metrics[d]], [v], "o", mfc="none", mec=color, ms=9, mew=1.5)
        ax.plot([teacher.metrics[d]], [teacher.metrics[q]], "*", color="k", ms=13,
                label=f"teacher ({teacher.nfe} NFE)")
        ax.axvline(teacher.metrics[d], color="k", lw=0.8, ls=":")
        if ref_q is not None and ref_d is not None:
            ax.plot([ref_d], [ref_q], "s", color="k", ms=8, label="real data (task reference)")
        elif ref_d is not None:
            ax.axvline(ref_d, color="k", lw=0.8, ls="--", label=f"reference {d}")
        if getattr(task, "gap_in_log", False):
            ax.set_yscale("log")
        spec = task.spec(d)
        if not spec.higher_is_better:
            ax.invert_xaxis()
        flipped = "" if spec.higher_is_better else "; lower is more diverse, axis reversed"
        ax.set_xlabel(f"{d} (more diverse ->{flipped})")
        ax.set_title(f"NFE {nfe}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    log = ", log scale" if getattr(task, "gap_in_log", False) else ""
    axes[0][0].set_ylabel(f"{q} ({task.spec(q).direction}{log})")
    temps = sorted({t for r in rows for t, _ in r.frontier})
    fig.suptitle(f"{result.task}: generative frontiers, value temperature T in {', '.join(f'{t:g}' for t in temps)} "
                 "(filled dot: T = 1, the row itself; open circle: at the teacher's diversity)", fontsize=10)
    fig.tight_layout()
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
