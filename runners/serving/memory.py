"""Give memory a serving process has freed back to the operating system.

glibc keeps freed blocks in its heap, so a process stays as large as its busiest moment:
loading a model allocates far more than it keeps (NIMA builds an fp32 network and then keeps a
bf16 backbone), and every batch allocates its activations (NIMA at batch 8-16: ~100-150 MB;
DeepFace's Haar pyramids), all of which would stay resident.
`malloc_trim(0)` returns those pages: once after loading, and after batches at most once a
second (a trim costs 3-7 ms; the next batch's first touch of the pages costs about the same
either way). A no-op where the C library is not glibc.

The other half is the model files a runner maps: see `drop_mapped_file_pages`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

TRIM_INTERVAL_S = 1.0
# glibc's mallopt() parameter for the most heaps ("arenas") threads may spread over.
_M_ARENA_MAX = -8
HEAP_ARENAS = 2
_MADV_DONTNEED = 4

_lock = threading.Lock()
_last_trim = 0.0


@lru_cache(maxsize=1)
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim"):
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _trim() -> bool:
    global _last_trim
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    _last_trim = time.monotonic()
    return True


def limit_heap_arenas(arenas: int = HEAP_ARENAS) -> bool:
    """Let threads share `arenas` heaps instead of glibc's 8 per core; True if set.

    Each thread that allocates while others hold the heap gets a heap of its own, and freed
    memory can only be reused, or trimmed, within its heap: with BentoML's thread pools each
    decoding photos or running batches, the API process kept several half-empty heaps of
    megapixel buffers. Set early (at import); heaps already created stay.
    """
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """After loading: collect garbage, then return free heap pages; True if trimmed."""
    gc.collect()
    with _lock:
        return _trim()


def trim_after_batch() -> bool:
    """After a batch: return free heap pages unless that was done under a second ago."""
    with _lock:
        if time.monotonic() - _last_trim < TRIM_INTERVAL_S:
            return False
        return _trim()


def drop_mapped_file_pages(directory: Path) -> int:
    """Unmap the resident pages of files under `directory` this process maps read-only and
    shared; returns how many bytes of mappings were advised.

    OpenVINO maps an IR's weights file, copies the weights into its own packed layout while
    compiling and at the first inference, and keeps the mapping as long as the model without
    reading it again: the whole file stays resident and counts in full towards the process's
    PSS (CLIP ViT-B/32: 334 MB beside the 400 MB it computes with). `MADV_DONTNEED` on a
    read-only shared mapping only drops the process's page table entries: the pages stay in
    the page cache and anything that reads them again maps them back, so it is safe whatever
    the engine still reads. Call once the model is loaded and warmed up.
    """
    libc = _libc()
    if libc is None:
        return 0
    root = str(directory.resolve()).rstrip("/") + "/"
    advised = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[1] != "r--s" or not fields[5].startswith(root):
                continue
            start, end = (int(address, 16) for address in fields[0].split("-"))
            if libc.madvise(start, end - start, _MADV_DONTNEED) == 0:
                advised += end - start
    return advised


def skip_unused_gpu_compiler() -> bool:
    """Keep triton (torch's GPU kernel compiler) out of a CPU runner; True if blocked.

    timm and transformers import `torch._dynamo`, which imports triton whenever it is installed
    (the CUDA torch build brings it): ~100 MB of library pages and ~7 MB of heap per process,
    and nothing on a CPU ever calls it. A `None` entry in `sys.modules` is Python's way to make
    `import triton` fail, which torch handles as "triton not installed". Call before importing
    torch; does nothing if triton is already imported.
    """
    import sys

    if "triton" in sys.modules:
        return sys.modules["triton"] is None
    sys.modules["triton"] = None  # type: ignore[assignment]
    return True
