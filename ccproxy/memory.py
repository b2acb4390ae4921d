"""The process's memory policy: how the garbage collector runs, and giving memory back after a burst.

After 1,000 concurrent streams, CPython and glibc keep the freed memory (pymalloc arenas with a few live
objects, glibc heap pages below the top), so a proxy that idled at 50 MB stays at 85 MB for hours. Once
no request has been in flight for ``quiet`` seconds, one full collection and ``malloc_trim(0)`` return
it. The hot path pays two integer updates per request; the timer only runs while there is traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import importlib
from collections.abc import Callable


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim  # glibc only; musl and macOS have no such call
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


YOUNG_THRESHOLD = 7000


def settle_after_startup() -> None:
    """Called once the app is ready: start-up objects leave the collector's view, full passes get rarer.

    Modules, settings and routes never die, so ``gc.freeze()`` keeps every later pass from walking them.
    There is no collection first: start-up leaves ~1,200 garbage objects, and a full pass over the
    ~50,000 live ones would add 60 ms to the start (``ccproxy serve`` starts with the collector off).
    The request path makes no reference cycles (tests/providers/test_reference_cycles.py), so objects
    reach the oldest generation only by living long, as 1,000 open streams do. CPython's default of a
    full pass every 10 middle-generation passes then re-walked all of them twice per 1,000-stream burst
    (~50 ms of stalls, measured with gc.callbacks). One full pass per 100 keeps cyclic garbage from
    elsewhere bounded, and the idle trim below runs a full pass whenever traffic stops.

    The youngest generation is collected after 7,000 net new objects instead of 700: 32 requests in
    flight keep ~700 objects alive at any moment, so the default collected every ~19 requests and walked
    them each time (135 µs a pass, ~8 µs per request, measured with gc.callbacks); at 7,000 the same
    server answers ~4% more requests a second (`bench` pair runs, on and off alike).
    """
    _preload()
    gc.freeze()
    gc.enable()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, 100)


def _preload() -> None:
    """Modules the stack would import on its first connection, imported now with the other start-up objects.

    Imported mid-burst, their objects would be scattered among the burst's short-lived ones and keep
    those memory arenas from ever being freed.
    """
    for name in ("encodings.idna", "uvicorn.protocols.websockets.websockets_sansio_impl"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


class IdleTrimmer:
    def __init__(self, quiet: float = 1.0, trim: Callable[[int], int] | None = None) -> None:
        self.quiet = quiet
        self.in_flight = 0
        self.completed = 0
        self.trims = 0
        self._trim = trim if trim is not None else _load_malloc_trim()
        self._seen = 0  # ``completed`` at the last timer tick
        self._armed = False

    def started(self) -> None:
        self.in_flight += 1
        if not self._armed:
            self._armed = True
            self._seen = self.completed
            asyncio.get_running_loop().call_later(self.quiet, self._tick)

    def finished(self) -> None:
        self.in_flight -= 1
        self.completed += 1

    def _tick(self) -> None:
        if self.in_flight or self.completed != self._seen:  # still busy: look again later
            self._seen = self.completed
            asyncio.get_running_loop().call_later(self.quiet, self._tick)
            return
        self._armed = False
        self.release()

    def release(self) -> None:
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.trims += 1
