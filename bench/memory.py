"""Memory figures of the scale benchmarks (``scale.py``, ``retrieval_scale.py``): resident
and anonymous memory read from /proc, a peak poller, and a step run in a fresh process so that
one step's memory does not carry over into the next one's figure (FAISS, torch and the
allocator keep freed memory for reuse)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def status(pid: int) -> dict[str, int]:
    """RssAnon and VmRSS (kB) of a live process from /proc (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()
            if line.startswith(("RssAnon", "VmRSS"))}


def _anon_kb() -> int:
    return status(os.getpid()).get("RssAnon", 0)


class Peak:
    """Peak anonymous RSS (GB) of this process since the last ``reset``, polled every 0.05 s
    on a thread (torch, FAISS and NumPy release the GIL in their kernels)."""

    def __init__(self) -> None:
        self.peak, self._lock, self._fresh = 0, threading.Lock(), True
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while True:
            seen = _anon_kb()
            with self._lock:   # (a reading taken before a reset belongs to the period before)
                if self._fresh:
                    self.peak = max(self.peak, seen)
                self._fresh = True
            time.sleep(0.05)

    def reset(self) -> None:
        with self._lock:
            self.peak, self._fresh = _anon_kb(), False

    def gb(self) -> float:
        return max(self.peak, _anon_kb()) / 2 ** 20


def json_child(script: str, args: list[str], what: str):
    """Run ``script`` with ``args`` in a fresh Python process and return the JSON of its last
    stdout line (its stderr passes through: live progress)."""
    proc = subprocess.run([sys.executable, script, *args], stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}; see above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])
