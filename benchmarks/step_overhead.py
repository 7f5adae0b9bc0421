"""One sampler step against the bare network forward at the paper's scale (V = 50,257, L = 1,024), on the CPU.

A randomly initialised SEDD-small-shaped score network (12 blocks, hidden 768, 12 heads, absorbing graph,
log-linear noise) and a half-masked state at t = 0.5 -> 0.375 (step 4 of 8). Timings are medians of repeated
interleaved runs in one process (the forward, then every sampler variant in an order rotated per repeat, then
the forward again, ...), reported as ratios to the forward. The sampler's own work is everything after the network call: the score contract,
the factorised step law and the two-stage float64 draw. Peak memory is measured per phase in a fresh
subprocess (peak RSS during the phase minus RSS before it), so one phase's allocations cannot hide another's.

    python benchmarks/step_overhead.py --batch 1 --repeats 10 --out benchmarks/step_overhead.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

from lsdd.sampling.draws import make_generator
from lsdd.graphs import Absorbing
from lsdd.models.dit import DiTConfig, ScoreDiT
from lsdd.noise import LogLinear
from lsdd.sampling.samplers import euler_probs, sample_categorical
from lsdd.sampling.steps import get_rule

V, L = 50257, 1024
VARIANTS = ["euler", "lsd-linear", "lsd-log", "tweedie", "spread", "dense-reference"]


def build(batch: int, device: torch.device = torch.device("cpu"), seed: int = 0):
    torch.manual_seed(seed)
    cfg = DiTConfig(num_tokens=V, graph="absorbing", noise={"type": "loglinear", "eps": 1e-3}, length=L,
                    hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12)
    net = ScoreDiT(cfg).eval().to(device)
    with torch.no_grad():  # SEDD zero-initialises the output layer; give it weights so scores vary
        net.output_layer.linear.weight.normal_(0, 0.02)
        for blk in net.blocks:
            blk.adaLN_modulation.weight.normal_(0, 0.02)
    graph, noise = Absorbing(V), LogLinear(1e-3)

    def score_fn(x, sigma):  # bf16 autocast on a GPU (the CLI's default there), scores out in float32
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return net(x, sigma).float().exp_()

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (batch, L), generator=g)
    x[torch.rand(batch, L, generator=g) < 0.5] = graph.mask_id
    return net, score_fn, graph, noise, x.to(device)


def step_work(variant: str, graph, noise, x, score, gen):
    """The sampler's own work for one step, given the network's raw output ``score`` (consumed)."""
    t, s = torch.tensor(0.5, dtype=torch.float64), torch.tensor(0.375, dtype=torch.float64)
    score.scatter_(-1, x[..., None], 1.0)  # the loop's contract enforcement
    if variant == "dense-reference":
        return sample_categorical(euler_probs(graph, noise, x, score, t, s), gen)
    if variant == "spread":  # Euler with spread movers (lsdd distill's default on masked models)
        from lsdd.sampling.conditioned import ConditionedParams, ConditionedRule

        coeff = ConditionedParams(1, counted=True, choice="spread").requires_grad_(False).coeff_fn(graph)(0, x, score)
        return ConditionedRule("euler")(graph, noise, x, score, t, s, coeff, "linear", False, None).draw(gen)
    method = "tweedie" if variant == "tweedie" else "euler"
    coeff, mode = {"lsd-linear": (0.8, "linear"), "lsd-log": (0.8, "log")}.get(variant, (1.0, "linear"))
    return get_rule(method)(graph, noise, x, score, t, s, coeff, mode, False, None).draw(gen)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_extra_mib(fn, device: torch.device) -> float:
    """Peak memory that ``fn()`` adds: CUDA's allocator peak on a GPU; on the CPU the process RSS, polled
    every 0.2 ms by a thread while ``fn`` runs (large tensors are mmapped, so RSS follows them)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    gc.collect()
    before, peak, done = rss_mb(), [0.0], threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.0002)

    th = threading.Thread(target=poll)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    return max(0.0, max(peak[0], rss_mb()) - before)


def phase_memory(phase: str, batch: int, device: torch.device) -> dict:
    """Run one phase in this (fresh) process and return the peak memory it adds, in MiB."""
    net, score_fn, graph, noise, x = build(batch, device)
    sigma = noise.total(torch.tensor(0.5)).float().expand(batch).to(device)
    score = score_fn(x, sigma) if phase != "forward" else None
    if phase == "forward":
        extra = peak_extra_mib(lambda: score_fn(x, sigma), device)
    else:
        extra = peak_extra_mib(lambda: step_work(phase, graph, noise, x, score, make_generator(0, device)), device)
    return {"phase": phase, "peak_extra_mib": round(extra, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="write the markdown table here")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase_memory(args.phase, args.batch, torch.device(args.device))))
        return
    load = os.getloadavg()[0]
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    net, score_fn, graph, noise, x = build(args.batch, device)
    params = sum(p.numel() for p in net.parameters())
    sigma = noise.total(torch.tensor(0.5)).float().expand(args.batch).to(device)
    times = {k: [] for k in ["forward", *VARIANTS]}
    score_fn(x, sigma)  # warm-up
    for r in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        raw = score_fn(x, sigma)
        sync()
        times["forward"].append(time.perf_counter() - t0)
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[: r % len(VARIANTS)]  # rotate: no variant always first
        for v in order:
            score = raw.clone()
            sync()
            t0 = time.perf_counter()
            step_work(v, graph, noise, x, score, make_generator(r, device))
            sync()
            times[v].append(time.perf_counter() - t0)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items() if v),
              flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    mem = {}
    for phase in ["forward", *VARIANTS]:
        res = subprocess.run([sys.executable, __file__, "--phase", phase, "--batch", str(args.batch), "--device",
                              args.device],
                             capture_output=True, text=True, check=True)
        mem[phase] = json.loads(res.stdout.strip().splitlines()[-1])
    lines = [
        f"# One sampler step vs the network forward at V = {V:,}, L = {L:,} ({device.type.upper()})", "",
        f"Command: `python benchmarks/step_overhead.py --device {args.device} --batch {args.batch} --repeats {args.repeats}`", "",
        f"SEDD-small-shaped DiT, {params / 1e6:.1f} M parameters, random weights, "
        f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'} eager, batch {args.batch}, "
        f"half the tokens masked, step t = 0.5 -> 0.375; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average at start {load:.2f}. Medians of {args.repeats} interleaved repeats; memory is the peak "
        "RSS a phase adds, measured alone in a fresh process.", "",
        "| phase | median s | / forward | over Euler | peak extra memory |",
        "|---|---|---|---|---|",
    ]
    for k in ["forward", *VARIANTS]:
        over = "" if k in ("forward", "euler") else f"{(med[k] - med['euler']) / med['forward'] * 100:+.2f}% of a forward"
        lines.append(f"| {k} | {med[k]:.3f} | {med[k] / med['forward'] * 100:.2f}% | {over} | "
                     f"{mem[k]['peak_extra_mib']:.0f} MiB |")
    lines += ["", "Sampler rows: the work after the network call (contract, step law, draw). `dense-reference` is the "
              "float64 (B, L, V) law (`samplers.euler_probs`) that the two-stage draw replaces; "
              "`lsd-linear` (the default learned sampler) scales only the (B, L) move probabilities; `lsd-log` "
              "rescales every log-score (s^Phi, in log space)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
