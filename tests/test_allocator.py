"""``lsdd.allocator``: glibc's thresholds raised so large buffers stay in the heap (the CLI calls it), and left alone
where the user chose otherwise. Page faults are counted in a fresh process (the setting is process-wide)."""

import os
import platform
import subprocess
import sys

import pytest

from lsdd.allocator import tune_cpu_allocator

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

PROBE = """
import resource, sys, torch
from lsdd.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator() if sys.argv[1] == "tuned" else False
for _ in range(10):  # the heap grows to its working size either way (glibc 2.36: the first few still fault)
    torch.empty(64 << 18).fill_(1.0)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(64 << 18).fill_(1.0)  # 64 MiB, freed at once: above glibc's largest dynamic mmap threshold
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _faults(arm: str, **env) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "LSDD_ALLOCATOR", "GLIBC_TUNABLES"))} | env
    out = subprocess.run([sys.executable, "-c", PROBE, arm], capture_output=True, text=True, check=True, env=environ)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@glibc
def test_tuned_allocator_stops_refaulting_large_buffers():
    pages = (64 << 20) // 4096  # one 64 MiB buffer in 4 KiB pages
    tuned, faults_default = _faults("default")
    assert tuned == "False" and faults_default > 10 * pages  # every buffer faulted in again
    tuned, faults_tuned = _faults("tuned")
    assert tuned == "True" and faults_tuned < pages  # reused from the heap
    # the user's own choice is kept: glibc's switch, or LSDD_ALLOCATOR=default
    assert _faults("tuned", LSDD_ALLOCATOR="default")[0] == "False"
    assert _faults("tuned", MALLOC_MMAP_THRESHOLD_="131072")[0] == "False"
    assert _faults("tuned", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")[0] == "False"


def test_allocator_refuses_bad_settings(monkeypatch):
    with pytest.raises(ValueError, match="threshold"):
        tune_cpu_allocator(0)
    monkeypatch.setenv("LSDD_ALLOCATOR", "fast")
    with pytest.raises(ValueError, match="LSDD_ALLOCATOR='fast'"):
        tune_cpu_allocator()


def test_cli_names_a_bad_allocator_setting(tmp_path):
    env = dict(os.environ, LSDD_ALLOCATOR="fast")
    out = subprocess.run([sys.executable, "-m", "lsdd", "sample", "--model", "markov", "--nfe", "2", "--num", "2",
                          "--out", str(tmp_path / "x.npy")], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "LSDD_ALLOCATOR='fast'" in out.stderr and not (tmp_path / "x.npy").exists()
