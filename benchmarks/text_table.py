"""Print a markdown table of a text bench JSON (`lsdd bench ... --json b.json` on a text model).

usage: python benchmarks/text_table.py benchmarks/bench_text_absorb.json
"""

import json
import sys

COLS = [("gen_ppl", "gen PPL ↓"), ("gen_ppl_corpus", "corpus PPL ↓"), ("mauve", "MAUVE ↑"),
        ("entropy", "entropy"), ("distinct_2", "distinct-2")]


def main(path: str) -> None:
    d = json.load(open(path))
    rows = d["rows"]
    print("| sampler | NFE (steps × calls) | " + " | ".join(h for _, h in COLS) + " | gap closed (log PPL) |")
    print("|---" * (len(COLS) + 3) + "|")
    for r in rows:
        m = r["metrics"]
        steps = r.get("steps") or r["nfe"]
        calls = r["nfe"] // steps if steps else 1
        cells = [f"{m[k]:.3f}" if k in ("mauve", "entropy", "distinct_2") else f"{m[k]:.1f}" for k, _ in COLS]
        gap = "" if r["gap_closed"] is None else f"{r['gap_closed']:+.2f}"
        print(f"| {r['label']} | {r['nfe']} ({steps} × {calls}) | " + " | ".join(cells) + f" | {gap} |")
    ref = rows[0]["metrics"]
    print(f"\nreal held-out text, same length: gen PPL {ref['ref_gen_ppl']:.1f}, entropy {ref['ref_entropy']:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
