"""What the repository promises: the licence its metadata declares, docs linked from the README that
exist, and `make pre-commit`'s hooks (offline, from the project's venv) catching what they should."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DOC_PAGES = ("installation.md", "quickstart.md", "api-usage.md", "authentication.md", "plugins.md")


def test_license_is_the_declared_mit() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License\n")
    assert "ccproxy contributors" in text and "WITHOUT WARRANTY OF ANY KIND" in text


@pytest.mark.parametrize("page", ["README.md", "CONTRIBUTING.md", *(f"docs/{p}" for p in DOC_PAGES)])
def test_relative_links_resolve(page: str) -> None:
    path = REPO / page
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{page} links to a missing {target}"


def test_readme_links_every_doc_page_and_the_repo_files() -> None:
    readme = (REPO / "README.md").read_text()
    for page in DOC_PAGES:
        assert f"(docs/{page})" in readme
    assert "(CONTRIBUTING.md)" in readme and "(LICENSE)" in readme


def test_contributing_names_only_make_targets_that_exist() -> None:
    targets = set(re.findall(r"^([a-z0-9-]+):", (REPO / "Makefile").read_text(), re.M))
    named = set(re.findall(r"\bmake ([a-z0-9-]+)", (REPO / "CONTRIBUTING.md").read_text()))
    assert named and named <= targets, named - targets
    assert "pre-commit" in targets


def _pre_commit(*args: str) -> subprocess.CompletedProcess[str]:
    binary = VENV_BIN / "pre-commit"
    if not binary.exists():
        pytest.skip("pre-commit is not installed in this environment (make setup installs it)")
    return subprocess.run([str(binary), "run", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_pre_commit_hooks_catch_lint_and_format(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("pre-commit needs git")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    lint = _pre_commit("ruff-check", "--files", str(bad))
    assert lint.returncode == 1 and "F401" in lint.stdout, lint.stdout
    ugly = tmp_path / "ugly.py"
    ugly.write_text("x = {  'a':1 }\n")
    fmt = _pre_commit("ruff-format", "--files", str(ugly))
    # the hook rewrites the file (inside a git checkout pre-commit then also fails the commit)
    assert ugly.read_text() == 'x = {"a": 1}\n', fmt.stdout


def test_pre_commit_hooks_pass_on_the_package() -> None:
    result = _pre_commit("--files", "ccproxy/__init__.py", "ccproxy/cli.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mypy" in result.stdout and "Passed" in result.stdout
