"""The ``ccproxy`` command's entry point: picks the memory allocator for ``serve`` before Python starts.

CPython's small-object allocator never gives back a 1 MiB arena while one object in it lives, so after a
burst of 1,000 streams a server that idled at 55 MB stayed at 72 MB. With ``PYTHONMALLOC=malloc`` the
same objects come from glibc, whose ``malloc_trim`` (run by ccproxy.memory once traffic stops) returns
the freed pages: 56 MB after the same burst, at the same CPU per request (docs/performance.md). The
allocator is fixed at interpreter start-up, so ``serve`` re-executes itself once, in place (same PID),
before anything heavy is imported. A PYTHONMALLOC the user set is left alone.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Mapping

MARKER = "CCPROXY_ALLOCATOR"


def wants_glibc_malloc(argv: list[str], environ: Mapping[str, str]) -> bool:
    if "PYTHONMALLOC" in environ or MARKER in environ or sys.platform != "linux":
        return False
    args = argv[1:]
    if not args or args[0] != "serve" or "--help" in args or "-h" in args:
        return False
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))  # malloc_trim is glibc's
    except (ValueError, OSError):
        return False


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        if wants_glibc_malloc(sys.argv, os.environ):
            env = {**os.environ, "PYTHONMALLOC": "malloc", MARKER: "malloc"}
            with contextlib.suppress(OSError):  # could not re-execute: serve with the default allocator
                os.execve(sys.executable, [sys.executable, "-m", "ccproxy", *sys.argv[1:]], env)
        # Importing the server makes ~50,000 long-lived objects and almost no garbage; collecting while
        # they are made cost ~70 ms of a ~450 ms start. ccproxy.memory.settle_after_startup turns it back on.
        gc.disable()
    from ccproxy.cli import main as cli_main

    cli_main()
