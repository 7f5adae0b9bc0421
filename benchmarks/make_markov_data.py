"""Write training sequences of the sparse Markov chain task (lsdd.data.markov) as a .npy token file.

    python benchmarks/make_markov_data.py --out runs/markov/data.npy      # 24 tokens, degree 3, seed 0
    lsdd train --data runs/markov/data.npy --vocab 24 --out runs/markov/model --steps 3000 --seed 0
"""

import argparse

import numpy as np
import torch

from lsdd.data.markov import generate_markov, markov_chain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-values", type=int, default=24)
    ap.add_argument("--degree", type=int, default=3)
    ap.add_argument("--chain-seed", type=int, default=0)
    ap.add_argument("--num", type=int, default=50_000)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    chain = markov_chain(args.num_values, args.degree, args.chain_seed)
    x = generate_markov(args.num, args.length, chain, torch.Generator().manual_seed(args.seed))
    np.save(args.out, x.numpy())
    h = -(chain * torch.log(chain.clamp_min(1e-300))).sum(-1)
    print(f"{args.num} x {args.length} -> {args.out}; mean successor entropy {float(h.mean()):.3f} nats")


if __name__ == "__main__":
    main()
