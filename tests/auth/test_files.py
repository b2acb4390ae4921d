"""Secret files: atomic 0600 writes, strict reads that leave a broken file alone, the flock."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from ccproxy.auth.credential import CredentialError
from ccproxy.auth.files import file_lock, lock_path_for, read_json, write_json_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_is_0600_and_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "store" / "creds.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    # Overwrite a pre-existing world-readable file: the result is 0600, and no temp/backup files remain.
    target.chmod(0o644)
    write_json_atomic(target, {"a": 2})
    assert mode(target) == 0o600
    assert json.loads(target.read_text()) == {"a": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["creds.json"]


def test_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    tmp_path = tmp_path / "store"
    tmp_path.mkdir()
    target = tmp_path / "creds.json"
    orphan = tmp_path / f".creds.json.{int(dead.stdout)}.abc123.tmp"  # a writer SIGKILLed mid-write
    live = tmp_path / f".creds.json.{os.getpid()}.def456.tmp"  # a writer still at work (here: us)
    other = tmp_path / ".other.json.1.x.tmp"
    for path in (orphan, live, other):
        path.write_text("{")
    write_json_atomic(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["creds.json", live.name, other.name])


def test_atomic_write_never_creates_a_readable_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "creds.json"
    seen: list[tuple[str, int]] = []
    real_replace = os.replace

    def spy(src: str, dst: object) -> None:
        seen.append((os.path.basename(src), mode(Path(src))))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", spy)
    old = os.umask(0)  # even with a permissive umask
    try:
        write_json_atomic(target, {"x": "y"})
    finally:
        os.umask(old)
    assert seen and seen[0][1] == 0o600 and seen[0][0].startswith(".creds.json.")


def test_failed_write_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "d" / "creds.json"
    write_json_atomic(target, {"v": 1})

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_json_atomic(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in target.parent.iterdir()] == ["creds.json"]


def test_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "creds.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "creds.json"
    link.symlink_to(real)
    write_json_atomic(link, {"k": "v"})
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"k": "v"}


def test_read_missing_is_none(tmp_path: Path) -> None:
    assert read_json(tmp_path / "nope.json") is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"claudeAiOauth": {"accessToken": "sk-ant-oat01-SECRET"', "not valid JSON"),
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b'["sk-ant-oat01-SECRET"]', "expected an object"),
        (b"\xff\xfe\x00garbage", "not"),
    ],
)
def test_corrupted_file_raises_clearly_and_is_untouched(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / ".credentials.json"
    path.write_bytes(content)
    with pytest.raises(CredentialError) as info:
        read_json(path)
    message = str(info.value)
    assert str(path) in message and problem in message
    assert "SECRET" not in message
    assert path.read_bytes() == content


def test_lock_path_is_a_sibling_not_the_mkdir_lock_name(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    assert lock_path_for(path) == tmp_path / "auth.json.ccproxy.lock"


async def test_lock_excludes_a_second_holder_without_blocking_the_loop(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    order: list[str] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    async with file_lock(lock):
        order.append("first in")
        waiter = asyncio.create_task(_hold(lock, order))
        await asyncio.sleep(0.1)
        assert order == ["first in"], "second holder got in while the first held the lock"
        before = ticks
        await asyncio.sleep(0.05)
        assert ticks > before, "the event loop was blocked while a lock waiter was pending"
        order.append("first out")
    await waiter
    tick_task.cancel()
    assert order == ["first in", "first out", "second in"]
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


async def _hold(lock: Path, order: list[str]) -> None:
    async with file_lock(lock):
        order.append("second in")


async def test_lock_timeout_and_cancel(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    async with file_lock(lock):
        with pytest.raises(CredentialError, match="timed out"):
            async with file_lock(lock, timeout=0.1):
                pass
        task = asyncio.create_task(_hold(lock, []))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The cancelled waiter left nothing holding the lock.
    async with file_lock(lock, timeout=0.5):
        pass
