"""Secret JSON files: atomic 0600 writes, strict reads, and a cross-process lock.

The credential files are shared with the official CLIs (Claude Code, Codex) and with other ccproxy
processes, so a write must never expose a world-readable or half-written file, and two refreshes must
never run at once on the same refresh token (it rotates; the loser logs everybody out).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ccproxy.auth.credential import CredentialError

FILE_MODE = 0o600
DIR_MODE = 0o700


def read_json(path: Path) -> dict[str, Any] | None:
    """Read a JSON object; None when the file does not exist. Never modifies the file.

    Errors name the file and the problem but never quote its content (it holds tokens).
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CredentialError(f"{path} is a directory, expected a JSON credentials file") from None
    except PermissionError:
        raise CredentialError(f"{path} is not readable by this user (permission denied)") from None
    except OSError as exc:
        raise CredentialError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if not raw.strip():
        raise CredentialError(f"{path} is empty; expected a JSON object (log in again or delete it)")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise CredentialError(f"{path} is not UTF-8 text; expected a JSON object") from None
    except json.JSONDecodeError as exc:
        # exc.msg/lineno/colno only; str(exc) is fine too, but the doc excerpt must never be shown.
        raise CredentialError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "fix or delete the file and log in again"
        ) from None
    if not isinstance(data, dict):
        raise CredentialError(f"{path} holds a JSON {type(data).__name__}, expected an object")
    return data


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, nothing else.

    The temp file is created by ``mkstemp`` (mode 0600 from the first byte) in the same directory (so the
    rename is atomic), fsynced, renamed over the target, and the directory is fsynced so the rename
    survives a crash. A symlinked target (dotfile managers) is written through, keeping the link.
    No backup copies are made: old tokens are dead after a rotation anyway, and copies are leaks.
    The temp file's name carries the writer's pid, so the temp files of a writer that was killed (they
    hold tokens) are removed by the next write; a live writer's are never touched.
    """
    target = Path(os.path.realpath(path))
    target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    payload = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    _remove_orphaned_temp_files(target)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, FILE_MODE)  # mkstemp already uses 0600; be explicit against odd platforms
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _remove_orphaned_temp_files(target: Path) -> None:
    """Delete ``.<name>.<pid>.*.tmp`` files whose writer process no longer exists."""
    prefix = f".{target.name}."
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(target.parent / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _fsync_dir(directory: Path) -> None:
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself already happened
    finally:
        os.close(dir_fd)


def lock_path_for(path: Path) -> Path:
    """The sibling lock file of a credential file.

    Not ``<file>.lock``: that is the name mkdir-style lockers (proper-lockfile, used by Node CLIs) take
    as a *directory*, and a regular file there would wedge them.
    """
    target = Path(os.path.realpath(path))
    return target.with_name(f"{target.name}.ccproxy.lock")


@contextlib.asynccontextmanager
async def file_lock(path: Path, *, timeout: float = 30.0) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600) without blocking the event loop.

    Acquisition polls ``LOCK_NB`` with a short async sleep rather than parking a blocking ``flock`` in
    a worker thread: a cancelled waiter then simply stops, instead of leaving a thread that acquires
    the lock later and never releases it. flock locks belong to the open file description, so two
    managers in one process (separate opens) exclude each other just like two processes do.
    """
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise CredentialError(f"cannot open lock file {path}: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise CredentialError(f"cannot lock {path}: {exc.strerror or exc}") from None
            if time.monotonic() >= deadline:
                raise CredentialError(
                    f"timed out after {timeout:.0f}s waiting for the lock {path} "
                    "(another ccproxy process is refreshing?)"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class JsonFileSource:
    """A credential source kept in one JSON file (a CLI's or ccproxy's own): its path, name and lock."""

    writable = True

    def __init__(self, path: Path, name: str) -> None:
        self.path: Path | None = path
        self._path = path
        self.name = name

    @property
    def lock_path(self) -> Path | None:
        return lock_path_for(self._path)

    def _read(self, key: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The file's object and the object under ``key``; ``None`` when the file or the key is absent."""
        data = read_json(self._path)
        section = data.get(key) if data is not None else None
        if section is None or data is None:
            return None
        if not isinstance(section, dict):
            raise CredentialError(f"{self._path}: '{key}' is not an object")
        return data, section


def delete_file(path: Path) -> bool:
    """Remove a credential file; True if something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CredentialError(f"cannot delete {path}: {exc.strerror or exc}") from None
    return True


def dir_from_env(variable: str, default: Path) -> Path:
    """The folder an environment variable names (``~`` expanded), else ``default``."""
    value = os.environ.get(variable)
    return Path(value).expanduser() if value else default


def ccproxy_data_dir() -> Path:
    """ccproxy's own credential store: ``$XDG_DATA_HOME/ccproxy`` (default ``~/.local/share/ccproxy``)."""
    base = os.environ.get("XDG_DATA_HOME")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "ccproxy"
