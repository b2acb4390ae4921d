"""`ccproxy --show-completion SHELL`: the script for the named shell, and the README's `eval` line really
completes `ccproxy au<TAB>` to `ccproxy auth` in an interactive bash and zsh (driven through a pty)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CCPROXY = [sys.executable, "-m", "ccproxy"]
BIN = Path(sys.executable).parent  # where the `ccproxy` script of this environment lives


def show(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CCPROXY, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o default -F _ccproxy_completion ccproxy"),
        ("zsh", "compdef _ccproxy_completion ccproxy"),
        ("fish", "complete --command ccproxy"),
        ("powershell", "Register-ArgumentCompleter"),
    ],
)
def test_show_completion_prints_the_named_shells_script(shell: str, marker: str) -> None:
    result = show("--show-completion", shell)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    others = {"bash": "COMPREPLY", "zsh": "compdef", "fish": "complete --command", "powershell": "PSReadLine"}
    assert not any(text in result.stdout for name, text in others.items() if name != shell)


def test_show_completion_unknown_shell_is_one_line() -> None:
    result = show("--show-completion", "tcsh")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ccproxy: error: unknown shell 'tcsh'; expected one of bash, zsh, fish, powershell, pwsh"
    )


def _interactive(argv: list[str], lines: list[str], typed: str, expect: str, home: Path) -> str:
    """Start an interactive shell on a pty, send ``lines``, type ``typed`` (ending in a TAB), and return
    what the terminal showed once ``expect`` appeared (or after 20 s)."""
    env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "PS1": "$ ",
        "PROMPT": "$ ",
    }
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(home)
        os.execvpe(argv[0], argv, env)
    seen = b""
    try:
        for line in lines:
            os.write(fd, line.encode() + b"\n")
        time.sleep(0.5)
        os.write(fd, typed.encode())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and expect.encode() not in seen:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    return seen.decode(errors="replace")


SHELL_SETUPS = {
    # shell: (argv after the binary, lines to type first, a line whose output proves the function exists)
    "bash": (["--norc", "--noprofile", "-i"], "type -t _ccproxy_completion", "function"),
    # no rc files: the eval line alone must set everything up (compinit included)
    "zsh": (["-f", "-i"], "print -r -- ${+functions[_ccproxy_completion]}fn", "1fn"),
}


@pytest.mark.parametrize("shell", list(SHELL_SETUPS))
def test_eval_line_completes(shell: str, tmp_path: Path) -> None:
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed (.ci/run installs Debian's zsh)")
    flags, probe, defined = SHELL_SETUPS[shell]
    seen = _interactive(
        [binary, *flags],
        [f'eval "$(ccproxy --show-completion {shell})"', probe],
        "ccproxy au\t",
        "ccproxy auth",
        tmp_path,
    )
    assert defined in seen  # the eval defined the completion function
    assert "ccproxy auth" in seen, seen[-2000:]


def test_install_completion_writes_the_named_shells_startup_file(isolated_home: Path) -> None:
    result = subprocess.run(
        [*CCPROXY, "--install-completion", "zsh"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "zsh completion installed" in result.stdout
    assert "compinit" in (isolated_home / ".zshrc").read_text()
    assert "compdef _ccproxy_completion ccproxy" in (isolated_home / ".zfunc" / "_ccproxy").read_text()
