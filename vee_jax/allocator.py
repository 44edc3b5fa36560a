"""Keep freed memory in the process, so that jitted calls on large batches do not page-fault.

XLA:CPU allocates each call's temporaries (attention scores, the FFN's inner activations,
the span tables) with ``malloc`` and frees them when the call returns. With glibc's default
settings, blocks of more than a few hundred KB are handed back to the operating system on
free, so the next call faults every page in again. A program that makes many calls, one per
layer (``batched_infer``) or one per batch (``eval.py``), pays that at every call: one
MiniLM layer on a batch of 32 sentences of 96 subwords took 1.24x as long as a layer inside
one longer call (8 interleaved timings, this repo's 2-core CPU; 1.02x with the settings
below). Batch 1 is not affected (its buffers are small).

``keep_freed_memory()`` asks glibc (``mallopt``) to serve large blocks from the heap and not to
give the heap back: the process keeps its peak memory instead of returning it. Called by
``batched_infer``, eval.py, predict.py and the benchmarks; set ``VEE_JAX_KEEP_MEMORY=0`` to
leave malloc alone. On other C libraries (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
_SETTINGS = (
    (_M_MMAP_THRESHOLD, 32 << 20),  # blocks up to 32 MB (glibc's maximum) come from the heap
    (_M_TRIM_THRESHOLD, (1 << 31) - 1),  # never give the heap's top back (mallopt takes an int)
    (_M_TOP_PAD, 256 << 20),  # grow the heap in large steps
)
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process (see the module doc). True when the settings apply."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("VEE_JAX_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = [mallopt(param, value) == 1 for param, value in _SETTINGS]  # every one, even after a failure
    _done = all(applied)
    return _done
