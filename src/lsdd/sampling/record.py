"""Placeholder until the cli branch lands (replaced by its record.py)."""
from __future__ import annotations

import numpy as np

from .. import atomic


def write_samples(path, x, info) -> None:
    atomic.save_npy(path, np.asarray(x))
    atomic.write_json(str(path) + ".json", {"format": "lsdd-samples", "format_version": 1, **info})
