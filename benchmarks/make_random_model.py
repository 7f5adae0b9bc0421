"""Write a randomly initialised score network in lsdd's model-directory format (config.json +
model.safetensors), for throughput and memory checks at real sizes without a download.

    python benchmarks/make_random_model.py --preset sedd-small --out runs/sedd-small-random

Presets follow the published configs' shapes (SEDD small: 12 blocks, hidden 768, 12 heads, cond 128; GPT-2
tokens, 1,024 positions). The output layer and the adaLN modulations, which SEDD zero-initialises, get small
random weights so that scores vary between tokens and positions.
"""

from __future__ import annotations

import argparse

import torch

from lsdd.models.checkpoint import save_model_dir
from lsdd.models.dit import DiTConfig, ScoreDiT

PRESETS = {
    "sedd-small": dict(hidden_size=768, cond_dim=128, n_blocks=12, n_heads=12, num_tokens=50257, length=1024),
    "sedd-medium": dict(hidden_size=1024, cond_dim=128, n_blocks=24, n_heads=16, num_tokens=50257, length=1024),
    "tiny": dict(hidden_size=64, cond_dim=64, n_blocks=2, n_heads=2, num_tokens=50257, length=1024),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="sedd-small")
    ap.add_argument("--length", type=int, help="override the preset's sequence length")
    ap.add_argument("--graph", choices=["absorbing", "uniform"], default="absorbing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    shape = dict(PRESETS[args.preset])
    if args.length:
        shape["length"] = args.length
    noise = {"type": "loglinear", "eps": 1e-3} if args.graph == "absorbing" else {"type": "geometric",
                                                                                   "sigma_min": 1e-4, "sigma_max": 20.0}
    cfg = DiTConfig(graph=args.graph, noise=noise, **shape)
    torch.manual_seed(args.seed)
    net = ScoreDiT(cfg)
    with torch.no_grad():
        net.output_layer.linear.weight.normal_(0, 0.02)
        for blk in net.blocks:
            blk.adaLN_modulation.weight.normal_(0, 0.02)
    fp = save_model_dir(args.out, net, cfg, {"random_init": {"preset": args.preset, "seed": args.seed}})
    params = sum(p.numel() for p in net.parameters())
    print(f"{args.preset}: {params / 1e6:.1f} M parameters, fingerprint {fp} -> {args.out}")


if __name__ == "__main__":
    main()
