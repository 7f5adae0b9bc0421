"""One table per task from `lsdd bench --frontier` JSON files: each sampler's headline metric read at the teacher's
diversity ("at matched entropy"), per NFE, beside the raw value and diversity at T = 1, the mean NFE of the
adaptive rows, and each row's share of the Euler -> teacher gap closed at matched diversity.

    python benchmarks/peers_summary.py runs/rec22/peers_text_absorb_nfe*.json > table.md

Several files of one task merge row by row: a later file's row (same NFE, same name) replaces an earlier one's,
so a rerun of some rows against the same cached teacher run updates the table; the teacher must be the same.

Nothing is computed here but arithmetic on the files' numbers: the bench wrote every figure. The gap share is
(f(euler) - f(row)) / (f(euler) - f(teacher)) on the matched values, f = log for tasks whose gap is read in log
(text), left empty where Euler is not worse than the teacher.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict

LOG_TASKS = {"text"}  # the bench's gap_in_log tasks


def _label(row: dict) -> str:
    if row["method"] == "uniform":
        return "Euler" if row["base"] == "euler" else row["base"]
    label = row["label"]
    return label.removesuffix("-euler") if label.endswith("-euler") else label


def _name(row: dict) -> str:
    """The row's name in the table: the sampler's label, with the adaptive rows' matched parameter."""
    return _label(row) if row.get("param") is None else row["label"]


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def summarise(files: list[str], also: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> str:
    by_task: dict[str, list[dict]] = defaultdict(list)
    for f in files:
        d = json.load(open(f))
        by_task[d["task"]].append(d)
    out = []
    for task, runs in by_task.items():
        q, div = runs[0]["headline"]
        log = task in LOG_TASKS
        f = (lambda v: math.log(v)) if log else (lambda v: v)
        cells: dict[str, dict[int, str]] = defaultdict(dict)
        order: list[str] = []
        teachers = {}
        nfes: list[int] = []
        # rows by (nfe, name), a later file's row replacing an earlier one's (a rerun of some rows with the same
        # teacher and seeds); the teacher must be the same run in every file
        merged: dict[int, dict[str, dict]] = defaultdict(dict)
        t_val = None
        for d in runs:
            rows = d["rows"]
            teacher = next(r for r in rows if r["method"] == "teacher")
            teachers[teacher["label"]] = (teacher["metrics"][q], teacher["metrics"][div], teacher["nfe"])
            if t_val is not None and teacher["metrics"][q] != t_val:
                raise SystemExit(f"{task}: the files have different teacher runs ({t_val} vs {teacher['metrics'][q]})")
            t_val = teacher["metrics"][q]
            for r in rows:
                if r["method"] != "teacher" and _name(r) not in drop:
                    merged[r["nfe"]][_name(r)] = r
        for n in sorted(merged):
            nfes.append(n)
            here = list(merged[n].values())
            euler = next((r for r in here if r["method"] == "uniform"), None)
            e_val = euler.get("at_teacher_diversity") if euler else None
            best = min((r["at_teacher_diversity"] for r in here if r.get("at_teacher_diversity") is not None
                        and math.isfinite(r["at_teacher_diversity"])), default=None)
            for r in here:
                name = _name(r)
                if r.get("accepted") is False:
                    name += " (rejected: base)"
                if name not in order:
                    order.append(name)
                at = r.get("at_teacher_diversity")
                gap = ""
                if (at is not None and e_val is not None and math.isfinite(at) and math.isfinite(e_val)
                        and f(e_val) > f(t_val)):
                    gap = f", {100 * (f(e_val) - f(at)) / (f(e_val) - f(t_val)):.0f}%"
                nfe = f", NFE {r['nfe_mean']:.2f}/{r['nfe_max']}" if r.get("nfe_mean") is not None else ""
                cell = (f"**{_fmt(at)}**" if at is not None and best is not None and at == best else _fmt(at))
                extra = "".join(f"; {m} {_fmt(r['metrics'][m])}" for m in also if m in r["metrics"])
                cells[name][n] = (f"{cell} ({_fmt(r['metrics'][q])} @ {_fmt(r['metrics'][div])}{nfe}{gap}{extra})")
        nfes = sorted(set(nfes))
        out.append(f"## {task}: {q} at the teacher's {div}\n")
        for label, (tq, td, tn) in teachers.items():
            out.append(f"Teacher ({label}, {tn} NFE): {q} {_fmt(tq)}, {div} {_fmt(td)}.\n")
        tail = "".join(f"; its {m} at T = 1" for m in also)
        out.append(f"Cell: {q} read on the row's temperature frontier at the teacher's {div} (bold: best at that "
                   f"NFE), then (its {q} @ {div} at T = 1[, mean/max NFE of adaptive rows], share of the Euler -> "
                   f"teacher gap closed at matched {div}{' in log' if log else ''}{tail}).\n")
        out.append("| sampler | " + " | ".join(f"{n} NFE" for n in nfes) + " |")
        out.append("|---|" + "---|" * len(nfes))
        for name in order:
            out.append(f"| {name} | " + " | ".join(cells[name].get(n, "") for n in nfes) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("files", nargs="+", help="lsdd bench --json files made with --frontier")
    p.add_argument("--also", nargs="+", default=[], metavar="METRIC",
                   help="also show these metrics of each row at T = 1 (e.g. violation_rate for countdown)")
    p.add_argument("--drop", nargs="+", default=[], metavar="NAME",
                   help="leave out the rows of these names (e.g. a row whose rule changed after its run)")
    args = p.parse_args(argv)
    sys.stdout.write(summarise(args.files, tuple(args.also), tuple(args.drop)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
