"""Print a markdown table of one or more text bench JSONs (`lsdd bench ... --json b.json` on a text model).

usage: python benchmarks/text_table.py benchmarks/bench_text_absorb.json [more.json ...]

Several files (benches of the same model with the same seeds and teacher run, e.g. split by method with
--teacher-cache) are merged into one table ordered by NFE; a row present in several files (the teacher, the
Euler rows) must have the same metrics in each, else the files are refused as not comparable. The gap closed
is recomputed here (log gen PPL, as `lsdd bench` does now): blank at an NFE where Euler is not worse than the
teacher, whatever the JSON's own vintage says.
"""

import math

import json
import sys

COLS = [("gen_ppl", "gen PPL ↓"), ("gen_ppl_corpus", "corpus PPL ↓"), ("mauve", "MAUVE ↑"),
        ("entropy", "entropy"), ("distinct_2", "distinct-2")]


def merged_rows(paths: list[str]) -> list[dict]:
    rows, seen = [], {}
    for path in paths:
        for r in json.load(open(path))["rows"]:
            key = (r["label"], r["nfe"])
            if key in seen:
                if seen[key]["metrics"] != r["metrics"]:
                    sys.exit(f"{path}: row {r['label']} at NFE {r['nfe']} differs from the same row in an earlier file; "
                             "these benches are not comparable (other seeds, samples or teacher?)")
                continue
            seen[key] = r
            rows.append(r)
    teacher = [r for r in rows if r["method"] == "teacher"]
    rest = sorted((r for r in rows if r["method"] != "teacher"), key=lambda r: r["nfe"])  # stable within an NFE
    return teacher + rest


def gap_closed(rows: list[dict]) -> dict[int, float | None]:
    """Per row index: the share of the Euler -> teacher gap in log gen PPL closed; None where undefined."""
    teacher = math.log(rows[0]["metrics"]["gen_ppl"])
    euler = {r["nfe"]: math.log(r["metrics"]["gen_ppl"]) for r in rows if r["label"] == "uniform-euler"}
    out = {}
    for i, r in enumerate(rows[1:], 1):
        e = euler.get(r["nfe"])
        ok = e is not None and e - teacher > 1e-12
        out[i] = (e - math.log(r["metrics"]["gen_ppl"])) / (e - teacher) if ok else None
    return out


def main(paths: list[str]) -> None:
    rows = merged_rows(paths)
    gaps = gap_closed(rows)
    print("| sampler | NFE (steps × calls) | " + " | ".join(h for _, h in COLS) + " | gap closed (log PPL) |")
    print("|---" * (len(COLS) + 3) + "|")
    for i, r in enumerate(rows):
        m = r["metrics"]
        steps = r.get("steps") or r["nfe"]
        calls = r["nfe"] // steps if steps else 1
        cells = [f"{m[k]:.3f}" if k in ("mauve", "entropy", "distinct_2") else f"{m[k]:.1f}" for k, _ in COLS]
        gap = "" if gaps.get(i) is None else f"{gaps[i]:+.2f}"
        label = r["label"] + (f" (~{r['matches']})" if r.get("matches") else "")
        print(f"| {label} | {r['nfe']} ({steps} × {calls}) | " + " | ".join(cells) + f" | {gap} |")
    ref = rows[0]["metrics"]
    print(f"\nreal held-out text, same length: gen PPL {ref['ref_gen_ppl']:.1f}, entropy {ref['ref_entropy']:.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
