"""ccproxy: use the AI subscriptions you already pay for through the standard APIs."""

from __future__ import annotations

import sys
from typing import Any

__version__ = "0.1.0"


class _StructlogWithoutRich:
    """structlog's ``dev`` module (which ``import structlog`` loads) imports rich when it is installed, for
    console tracebacks that ccproxy never uses (``ccproxy.logs`` formats exceptions before rendering).
    rich and pygments are ~4 MB of every server process's memory and ~45 ms of its start. This finder
    refuses rich only while ``structlog.dev`` is being loaded; the commands that print tables import
    rich as usual."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "rich":
            dev = sys.modules.get("structlog.dev")
            if dev is not None and not hasattr(dev, "ConsoleRenderer"):  # structlog.dev half-loaded
                raise ModuleNotFoundError("rich is not loaded for structlog", name="rich")


sys.meta_path.insert(0, _StructlogWithoutRich())
