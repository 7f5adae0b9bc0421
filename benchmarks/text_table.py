"""Print a markdown table of one or more text bench JSONs (`lsdd bench ... --json b.json` on a text model).

usage: python benchmarks/text_table.py benchmarks/bench_text_absorb.json [more.json ...]

Several files (benches of the same model with the same seeds and teacher run, e.g. split by method with
--teacher-cache) are merged into one table ordered by NFE; a row present in several files (the teacher, the
Euler rows) must have the same metrics in each, else the files are refused as not comparable.
"""

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


def main(paths: list[str]) -> None:
    rows = merged_rows(paths)
    print("| sampler | NFE (steps × calls) | " + " | ".join(h for _, h in COLS) + " | gap closed (log PPL) |")
    print("|---" * (len(COLS) + 3) + "|")
    for r in rows:
        m = r["metrics"]
        steps = r.get("steps") or r["nfe"]
        calls = r["nfe"] // steps if steps else 1
        cells = [f"{m[k]:.3f}" if k in ("mauve", "entropy", "distinct_2") else f"{m[k]:.1f}" for k, _ in COLS]
        gap = "" if r["gap_closed"] is None else f"{r['gap_closed']:+.2f}"
        label = r["label"] + (f" (~{r['matches']})" if r.get("matches") else "")
        print(f"| {label} | {r['nfe']} ({steps} × {calls}) | " + " | ".join(cells) + f" | {gap} |")
    ref = rows[0]["metrics"]
    print(f"\nreal held-out text, same length: gen PPL {ref['ref_gen_ppl']:.1f}, entropy {ref['ref_entropy']:.3f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
