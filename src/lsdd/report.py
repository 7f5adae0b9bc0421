"""``lsdd bench --report``: one self-contained HTML page of a bench run.

The page holds the table (with the frontier column when the bench swept temperatures), the bench plot and the
frontier plot, the samples of every row (three decoded samples side by side for tasks that read as text or
tokens, an image grid per row for tasks that draw images), and for every row its NFE and the ``lsdd sample``
command that draws its samples. Nothing outside the file is referenced: images are PNG data URIs, the style
sheet is inline, there is no script.
"""

from __future__ import annotations

import base64
import html
import math
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import atomic
from .bench import AT_TEACHER, BenchResult, BenchRow, display_label, frontier_range, nfe_cell, row_sampler
from .sampling.adaptive import ADAPTIVE
from .sampling.orders import ORDERS
from .sampling.sampler import Sampler
from .tasks import Task

NUM_DECODED = 3  # decoded samples per row
NUM_IMAGES = 32  # images per row (tasks that draw images)

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto; max-width: 1500px;
       color: #1d2329; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
     border-bottom: 1px solid #d8dee4; padding-bottom: 4px; }
.meta { color: #57606a; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 8px 0; }
th, td { border: 1px solid #d8dee4; padding: 3px 7px; vertical-align: top; }
th { background: #f3f5f7; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.teacher td { background: #fff8e1; } tr.gap td { border: none; height: 6px; }
td.out { color: #8a6d00; font-style: italic; }
img { max-width: 100%; border: 1px solid #d8dee4; }
.samples td { max-width: 420px; font-family: ui-monospace, 'SFMono-Regular', Menlo, monospace; font-size: 0.8em;
              white-space: pre-wrap; word-break: break-word; }
code { font-family: ui-monospace, 'SFMono-Regular', Menlo, monospace; font-size: 0.85em; background: #f3f5f7;
       padding: 1px 4px; border-radius: 3px; word-break: break-all; }
details pre { font-size: 0.75em; background: #f6f8fa; padding: 6px; max-height: 240px; overflow: auto; }
.note { color: #57606a; font-size: 0.85em; max-width: 1100px; }
"""


@dataclass
class RowCommand:
    """How to draw a row's samples again: the ``lsdd sample`` command, and the sampler file it reads (learned
    rows: its JSON, which the page carries) or None."""

    command: str
    sampler_file: str | None = None
    sampler_json: str | None = None
    note: str = ""


def _label(r: BenchRow) -> str:
    return display_label(r)


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.4f}" if math.isfinite(v) else "nan"


def row_command(row: BenchRow, result: BenchResult, model: str, index: int) -> RowCommand:
    """The ``lsdd sample`` command that draws ``row``'s samples (the bench's seed + 1, its sample count and batch
    size; the teacher: its law, with the teacher run's own seeds not reproduced by it; a bench with prompts: the
    same prompts)."""
    from dataclasses import replace

    out = _row_command(row, result, model, index)
    prompts = result.config.get("prompts")
    if not prompts:
        return out
    src = prompts.get("source") or ""
    if src and not src.startswith("held-out:"):
        return replace(out, command=out.command + " " + shlex.join(["--prompt-file", src]))
    note = (f"the bench continued {prompts['num_prompts']} prompts ({src or 'given in Python'}); pass them as "
            "--fixed prompts.npy, a (P, L) array of the given tokens with the mask id at the free positions")
    return replace(out, command=out.command + " --fixed prompts.npy", note="; ".join(n for n in (out.note, note) if n))


def _row_command(row: BenchRow, result: BenchResult, model: str, index: int) -> RowCommand:
    """``row_command`` without the prompts."""
    import json

    cfg = result.config
    eps = float(cfg.get("distill", {}).get("eps", 1e-5))
    smp = row_sampler(row, eps, cfg.get("theta"))
    head = ["lsdd", "sample", "--model", model]
    tail = ["--num-samples", str(cfg["num_samples"]), "--batch-size", str(cfg["batch_size"])]
    if row.method == "teacher":
        return RowCommand(shlex.join([*head, *_base_flags(smp), *tail, "--seed", str(cfg["seed"]), "--out",
                                      "teacher.npy"]),
                          note="the teacher's law; the bench's teacher run (shared with the distillations) keeps its "
                               "own draws, which this command need not repeat")
    tail += ["--seed", str(cfg["seed"] + 1)]
    out = f"{row.label.replace(' ', '_').replace('/', '_')}-nfe{row.nfe}"
    if not _is_base(smp):
        names = result.config.get("learned", [])
        name = next((n for n in names if row.label.endswith(f"[{n}]")), None)
        file = name or f"{out}.json"
        text = json.dumps(smp.to_dict(), indent=1)
        note = (f"{file}: the sampler file given to the bench" if name else
                f"{file}: this row's sampler (below; also rows[{index}].sampler in --json)")
        return RowCommand(shlex.join([*head, "--learned", file, *tail, "--out", f"{out}.npy"]), file, text, note)
    return RowCommand(shlex.join([*head, *_base_flags(smp, row.nfe), *tail, "--out", f"{out}.npy"]))


def _is_base(smp: Sampler) -> bool:
    """True when lsdd sample's base-sampler flags draw ``smp``: the uniform grid, no coefficients (or all 1), no
    conditioning."""
    if smp.adaptive is not None:  # --sampler eb --gamma G / --sampler threshold --threshold T
        return smp.conditioning is None and smp.times == (1.0, smp.times[-1])
    if smp.movers in ORDERS and smp.rule != "euler":  # lsdd sample's peer orders move by Euler only
        return False
    try:
        base = Sampler.base(smp.rule, smp.nfe, movers=smp.movers, eps=smp.times[-1], theta=smp.theta, block=smp.block)
    except Exception:  # noqa: BLE001 - anything the base constructor refuses is not a base sampler
        return False
    return (smp.conditioning is None and smp.times == base.times
            and (smp.coeffs is None or all(c == 1.0 for c in smp.coeffs)))


def _base_flags(smp: Sampler, nfe: int | None = None) -> list[str]:
    """lsdd sample's flags for a training-free sampler on the uniform grid; ``nfe``: the row's calls per sample
    (with ``block``, --nfe is the total over the blocks: the grid's ``smp.nfe`` x the number of blocks)."""
    total = nfe if smp.block is not None and nfe is not None else smp.nfe
    if smp.adaptive is not None:
        rule = smp.adaptive["rule"]
        flags = ["--sampler", rule, {"eb": "--gamma", "threshold": "--threshold"}[rule],
                 repr(smp.adaptive[ADAPTIVE[rule]])]
    elif smp.movers in ORDERS:  # --sampler dilated / halton / ...: Euler with that order's movers
        flags = ["--sampler", smp.movers, "--nfe", str(total)]
    else:
        flags = ["--sampler", smp.rule, "--nfe", str(total)]
    if smp.theta is not None:
        flags += ["--theta", f"{smp.theta:g}"]
    if smp.movers not in ("independent", *ORDERS) and smp.adaptive is None:
        flags.append(f"--{smp.movers}")
    if smp.block is not None:
        flags += ["--block", str(smp.block)]
    if smp.times[-1] != 1e-5:
        flags += ["--eps", f"{smp.times[-1]:g}"]
    if smp.temperature != 1.0:
        flags += ["--temperature", repr(smp.temperature)]
    return flags


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(path: Path, alt: str) -> str:
    return f'<img src="{_png_uri(path)}" alt="{html.escape(alt)}">'


def _table(result: BenchResult, task: Task) -> str:
    cols = []
    for q, d in task.pairs:
        for c in (q, d):
            if c not in cols:
                cols.append(c)
    frontier = any(r.frontier for r in result.rows)
    head = ["sampler", "NFE", "steps x calls", *cols, *([AT_TEACHER] if frontier else []), "gap closed",
            "ms/sample", "overhead"]
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    prev = None
    for r in result.rows:
        if prev is not None and r.nfe != prev:
            out.append(f'<tr class="gap"><td colspan="{len(head)}"></td></tr>')
        prev = r.nfe
        label = _label(r)
        cells = [f"<td>{html.escape(label)}</td>", f'<td class="num">{html.escape(nfe_cell(r))}</td>',
                 f'<td class="num">{"" if not r.steps else f"{r.steps}x{r.nfe // r.steps}"}</td>']
        cells += [f'<td class="num">{_fmt(r.metrics.get(c, math.nan))}</td>' for c in cols]
        if frontier:
            v = r.at_teacher_diversity
            if v is not None and not math.isfinite(v):
                cells.append('<td class="out">out of range</td>')
            else:
                cells.append(f'<td class="num">{_fmt(v)}</td>')
        cells.append(f'<td class="num">{"" if r.gap_closed is None else f"{r.gap_closed:+.2f}"}</td>')
        cells.append(f'<td class="num">{r.sec_per_sample * 1e3:.1f}</td>')
        cells.append(f'<td class="num">{"" if r.overhead is None else f"{r.overhead:.3f}x"}</td>')
        out.append(f'<tr class="{"teacher" if r.method == "teacher" else ""}">' + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _notes(result: BenchResult, task: Task) -> str:
    q, d = result.headline
    parts = [f"Headline: {q} ({task.spec(q).direction}) with its diversity partner {d} "
             f"({task.spec(d).direction}). gap closed: share of the Euler&rarr;teacher gap in {q} closed at equal "
             "NFE. NFE: network calls per sample, counted."]
    if any(r.frontier for r in result.rows):
        teacher = next(r for r in result.rows if r.method == "teacher")
        log = f" in log {q}" if getattr(task, "gap_in_log", False) else ""
        parts.append(f"{html.escape(AT_TEACHER)}: {q} read off each row's value-temperature sweep at the teacher's "
                     f"{d} ({teacher.metrics.get(d, math.nan):.4g}), interpolated linearly{log} between the two "
                     "temperatures that bracket it; out of range (no extrapolation) where the sweep does not reach "
                     "it.")
        for r in result.rows:
            v = r.at_teacher_diversity
            if v is not None and not math.isfinite(v):
                parts.append(html.escape(f"{r.label} (NFE {r.nfe}): "
                                         f"{frontier_range(r, teacher.metrics.get(d, math.nan), d)}."))
    return "".join(f'<p class="note">{p}</p>' for p in parts)


def _samples(result: BenchResult, task: Task, tmp: Path) -> str:
    rows = [r for r in result.rows if r.samples is not None]
    if not rows:
        return '<p class="note">No samples kept (the bench ran without keep_samples).</p>'
    if getattr(task, "draws_images", False):
        out = ['<table class="samples">']
        for i, r in enumerate(rows):
            png = tmp / f"grid{i}.png"
            task.plot_grid(r.samples[:NUM_IMAGES], png, title=f"{r.label} (NFE {r.nfe})")
            out.append(f"<tr><td>{html.escape(_label(r))}<br>NFE {r.nfe}</td><td>{_img(png, r.label)}</td></tr>")
        out.append("</table>")
        return "\n".join(out)
    out = ['<table class="samples">', "<tr><th>sampler</th><th>NFE</th>"
           + "".join(f"<th>sample {k + 1}</th>" for k in range(NUM_DECODED)) + "</tr>"]
    for r in rows:
        texts = task.decode(r.samples[:NUM_DECODED])
        out.append(f"<tr><td>{html.escape(_label(r))}</td><td>{r.nfe}</td>"
                   + "".join(f"<td>{html.escape(t)}</td>" for t in texts) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _commands(result: BenchResult, model: str) -> str:
    out = ["<table>", "<tr><th>sampler</th><th>NFE</th><th>command</th></tr>"]
    for i, r in enumerate(result.rows):
        c = row_command(r, result, model, i)
        extra = f'<br><span class="note">{html.escape(c.note)}</span>' if c.note else ""
        if c.sampler_json:
            extra += (f"<details><summary>{html.escape(c.sampler_file)}</summary>"
                      f"<pre>{html.escape(c.sampler_json)}</pre></details>")
        out.append(f"<tr><td>{html.escape(_label(r))}</td><td class=\"num\">{r.nfe}</td>"
                   f"<td><code>{html.escape(c.command)}</code>{extra}</td></tr>")
    out.append("</table>")
    temps = sorted({t for r in result.rows for t, _ in r.frontier or []})
    if temps:
        out.append('<p class="note">A frontier point at temperature T: the same command with --temperature T '
                   "(times the row's own temperature).</p>")
    return "\n".join(out)


def write_report(result: BenchResult, task: Task, path: str | Path, model: str = "MODEL") -> None:
    """Write the bench's HTML page to ``path`` (atomically).

    Args:
        result: a ``run_bench`` result; rows keep their samples when it ran with ``keep_samples`` (else the page
            says so), and their frontiers when it ran with ``frontier``.
        task: the task that scored it (metrics, decode, images).
        path: the .html file.
        model: the --model argument the row commands name.
    """
    from .plots import plot_bench, plot_frontier

    q, d = result.headline
    cfg = result.config
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        plot_bench(result, task, tmp / "bench.png")
        figures = [("Quality and diversity against NFE", _img(tmp / "bench.png", "bench plot"))]
        if any(r.frontier for r in result.rows):
            plot_frontier(result, task, tmp / "frontier.png")
            figures.append(("Generative frontiers: quality against diversity over a temperature sweep",
                            _img(tmp / "frontier.png", "frontier plot")))
        samples = _samples(result, task, tmp)
    meta = (f"model <code>{html.escape(model)}</code> &middot; task {html.escape(result.task)} &middot; "
            f"{cfg.get('num_samples')} samples per row, seed {cfg.get('seed')} &middot; teacher "
            + ("exact (first hitting)" if cfg.get("teacher_kind") == "exact" else f"{cfg.get('teacher_nfe')} NFE"))
    body = [f"<h1>lsdd bench: {html.escape(result.task)}</h1>", f'<p class="meta">{meta}</p>',
            "<h2>Table</h2>", _table(result, task), _notes(result, task)]
    for title, img in figures:
        body += [f"<h2>{html.escape(title)}</h2>", img]
    body += ["<h2>Samples</h2>", samples, "<h2>Reproduce each row</h2>", _commands(result, model)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>lsdd bench: {html.escape(result.task)} ({html.escape(q)} vs {html.escape(d)})</title>"
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")
    atomic.write_text(path, page)
