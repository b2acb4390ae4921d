"""The product package is the product: the benchmark harness and the tests stay out of ``ccproxy/``."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_carries_only_the_product_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["ccproxy"]
    assert not (ROOT / "ccproxy" / "bench").exists()
    assert (ROOT / "bench" / "baseline.json").is_file()  # what `make bench-check` compares with


def test_no_product_module_imports_the_harness_or_the_tests() -> None:
    offenders = []
    for path in (ROOT / "ccproxy").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in ("bench", "tests")]
    assert not offenders
