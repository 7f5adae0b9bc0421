"""Keep large CPU buffers in the process heap (glibc), so each network call does not re-fault its logits.

A sampling step or an NLL bound allocates a (batch, length, vocabulary) logits tensor per network call: 33.5 MB in
float32 for a batch of 64 on ``text-uniform`` (length 128, 1024 tokens). glibc serves every block above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and returns it with ``munmap`` when the tensor is freed, so each call
page-faults its whole buffer in again, and the kernel zeroes every page. On the 2-core CPU machine that kernel time was
38% of the CPU time of a ``text-uniform`` fit (``time`` of ``lsdd distill --model text-uniform --nfe 8 ...``: user 28 min 51 s,
sys 18 min 39 s). Raising the mmap and trim thresholds keeps freed blocks in the heap for the next call
(``benchmarks/allocator_bench.py`` measures both settings side by side in one process).

The price is a resident size that stays near its peak instead of shrinking between calls. ``tune_cpu_allocator`` is
called by the ``lsdd`` command line only (a library user's process is left as it is: call it yourself to opt in),
and does nothing where the C library is not glibc, or where the user already set ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` (glibc's own environment switches, or their ``GLIBC_TUNABLES`` forms), or set
``LSDD_ALLOCATOR=default``.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap, and up to 1 GiB of free heap is kept


def tune_cpu_allocator(threshold: int = THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds to ``threshold`` bytes; True when set, False when left alone (not
    glibc, or the user chose: ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``LSDD_ALLOCATOR=default``
    in the environment)."""
    if threshold <= 0:
        raise ValueError(f"threshold must be a positive number of bytes, got {threshold}")
    choice = os.environ.get("LSDD_ALLOCATOR", "tuned")
    if choice not in ("tuned", "default"):
        raise ValueError(f"LSDD_ALLOCATOR={choice!r}: expected 'tuned' or 'default'")
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if choice == "default" or "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ \
            or "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    value = min(threshold, 2**31 - 1)
    # mallopt returns 1 on success (glibc 2.36 here accepts 1 GiB; a C library that refuses the value leaves its
    # own setting, and this returns False)
    return bool(mallopt(M_MMAP_THRESHOLD, value)) and bool(mallopt(M_TRIM_THRESHOLD, value))


__all__ = ["tune_cpu_allocator", "THRESHOLD"]
