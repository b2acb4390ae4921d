"""Locating and reading the recorded conformance corpus (read in place from ``shared/``, never copied)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def corpus_dir() -> Path:
    """``$CCPROXY_CONFORMANCE_DIR`` (conformance folder or its corpus), else ``shared/`` beside the repo."""
    env = os.environ.get("CCPROXY_CONFORMANCE_DIR")
    if env:
        base = Path(env)
        return base / "corpus" if (base / "corpus").is_dir() else base
    return Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "corpus"


class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.manifest: dict[str, Any] = json.loads((root / "cases.json").read_text())
        self.cases: list[dict[str, Any]] = self.manifest["cases"]
        self.by_id = {case["id"]: case for case in self.cases}

    def ids(self, fmt: str, kind: str) -> list[str]:
        return [c["id"] for c in self.cases if c["format"] == fmt and c["kind"] == kind]

    def bytes(self, case_id: str) -> bytes:
        return (self.root / self.by_id[case_id]["file"]).read_bytes()

    def json(self, case_id: str) -> Any:
        return json.loads(self.bytes(case_id))


def load_corpus() -> Corpus | None:
    root = corpus_dir()
    return Corpus(root) if (root / "cases.json").is_file() else None
