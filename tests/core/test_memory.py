"""Memory is handed back once traffic stops, and only then."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from ccproxy.memory import YOUNG_THRESHOLD, IdleTrimmer, _load_malloc_trim


async def test_trims_once_after_a_quiet_period_and_not_while_busy() -> None:
    calls: list[int] = []
    trimmer = IdleTrimmer(quiet=0.05, trim=lambda pad: calls.append(pad) or 1)
    trimmer.started()
    await asyncio.sleep(0.2)  # a long request: in flight the whole time
    assert calls == []
    trimmer.finished()
    for _ in range(5):  # a steady trickle of short requests keeps it from trimming
        trimmer.started()
        await asyncio.sleep(0.03)
        trimmer.finished()
    assert calls == []
    await asyncio.sleep(0.2)
    assert calls == [0] and trimmer.trims == 1
    await asyncio.sleep(0.2)  # no traffic, no more work
    assert trimmer.trims == 1
    trimmer.started()
    trimmer.finished()
    await asyncio.sleep(0.2)
    assert trimmer.trims == 2


def test_malloc_trim_is_found_on_glibc() -> None:
    import platform

    trim = _load_malloc_trim()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert trim is not None and trim(0) in (0, 1)


def test_settling_after_startup_turns_the_collector_back_on() -> None:
    import gc

    from ccproxy.memory import settle_after_startup

    before = gc.get_threshold()
    gc.disable()  # as `ccproxy serve` starts
    try:
        settle_after_startup()
        assert gc.isenabled() and gc.get_threshold()[2] == 100 and gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        gc.enable()
        gc.set_threshold(*before)


def test_structlog_loads_without_rich_and_rich_still_loads_later() -> None:
    """rich (~4 MB with pygments) stays out of the server; a command that prints a table still gets it."""
    code = (
        "import sys, ccproxy, structlog; before = 'rich' in sys.modules; "
        "import rich.table; print(before, structlog.dev.rich is None, 'rich' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True"]
