"""Read a model's external data files into the page cache in the background.

Analysing a large model's graph takes seconds of CPU and needs no weights; scoring and writing them
then read the data files through. Reading them ahead on another thread while the graph is analysed
overlaps the disk with the CPU: a cold 13.5 GB file is in the cache by the time it is scored.
Only files that fit comfortably in the memory available now are read (otherwise the early pages
would be evicted before use and the read would be wasted). A file being read is not read again meanwhile.
Not started before the imports: on a cold machine the libraries' own files then wait behind the
data (a 2 GB model took 5.4 s instead of 4.1 s).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

log = logging.getLogger(__name__)

MIN_BYTES = 256 << 20  # below this the scoring's own read-ahead (madvise) is enough
MEMORY_SHARE = 0.8  # of MemAvailable
_BUFFER = 8 << 20
_started: set[str] = set()
_lock = threading.Lock()


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def start(files: Iterable[str]) -> threading.Thread | None:
    """Begin reading `files` into the page cache on a daemon thread; None when not worth it or when
    they are being read now."""
    files = sorted({os.path.realpath(f) for f in files})
    try:
        total = sum(os.path.getsize(f) for f in files)
    except OSError:
        return None
    memory = available_memory()
    if total < MIN_BYTES or memory is None or total > MEMORY_SHARE * memory:
        if total >= MIN_BYTES:
            log.debug("no read-ahead: %.1f GB of external data, %s available", total / 1e9,
                      "unknown memory" if memory is None else f"{memory / 1e9:.1f} GB")
        return None
    with _lock:
        files = [f for f in files if f not in _started]
        _started.update(files)
    if not files:
        return None
    log.debug("reading %.1f GB of external data ahead in the background", total / 1e9)
    thread = threading.Thread(target=_read_through, args=(files,), name="onnxprune-readahead", daemon=True)
    thread.start()
    return thread


def _read_through(files: list[str]) -> None:
    buffer = bytearray(_BUFFER)
    for path in files:
        try:
            with open(path, "rb", buffering=0) as f:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
                while f.readinto(buffer):
                    pass
        except OSError as exc:  # only a missed speed-up: the readers report real errors themselves
            log.debug("read-ahead of '%s' stopped: %s", path, exc)
        finally:
            with _lock:
                _started.discard(path)
