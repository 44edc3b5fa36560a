"""XLA compilations in this process, counted from JAX's own monitoring events.

JAX records ``/jax/core/compile/backend_compile_duration`` (``jax._src.dispatch.BACKEND_COMPILE_EVENT``)
once for every executable it builds: compiled by XLA, or read from the persistent compilation cache
(then it also records ``/jax/compilation_cache/cache_hits``, before). So

* ``count()``: programs XLA compiled in this process (builds less cache hits): what makes a
  request wait seconds, whatever jitted function, shape or static argument caused it;
* ``cache_hits()``: programs read from the persistent cache instead (``commands.common
  .enable_compilation_cache``; programs that compiled in under its minimum, a second except for
  serve.py, are not written there).

The listeners are registered once, when this module is first imported, and count for the whole
process (every thread, every jitted function: the engine, and JAX's own small helpers).
"""

from __future__ import annotations

import threading

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

_lock = threading.Lock()
_built = 0  # backend compile events: compiled or read from the persistent cache
_hits = 0
_seconds = 0.0


def _on_duration(event: str, duration_secs: float, **kwargs) -> None:
    global _built, _seconds
    if event == BACKEND_COMPILE_EVENT:
        with _lock:
            _built += 1
            _seconds += duration_secs


def _on_event(event: str, **kwargs) -> None:
    global _hits
    if event == CACHE_HIT_EVENT:
        with _lock:
            _hits += 1


def count() -> int:
    """Programs XLA compiled in this process so far (persistent-cache hits excluded)."""
    with _lock:
        return _built - _hits


def cache_hits() -> int:
    """Programs read from JAX's persistent compilation cache in this process so far."""
    with _lock:
        return _hits


def seconds() -> float:
    """Seconds spent building programs (compiling, or reading the persistent cache) so far."""
    with _lock:
        return _seconds


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)

__all__ = ["BACKEND_COMPILE_EVENT", "CACHE_HIT_EVENT", "cache_hits", "count", "seconds"]
