"""Instruction counting drives a real `ccproxy serve` under callgrind against the bench's fake upstream."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench import instructions
from bench.procs import bench_module
from bench.upstream import run_fast


@pytest.mark.skipif(not instructions.available(), reason="valgrind (callgrind) is not installed")
def test_counts_are_per_answer_and_repeatable(tmp_path: Path) -> None:
    argv, env = bench_module("upstream")
    up = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE)
    try:
        assert up.stdout is not None
        port = int(up.stdout.readline().split()[1])
        todo = [("json:messages", "messages", False), ("json:messages again", "messages", False)]
        counts = run_fast(instructions.count(port, str(tmp_path), todo))
    finally:
        up.terminate()
        up.wait()
    first, again = counts["json:messages"], counts["json:messages again"]
    assert 100_000 < first < 5_000_000  # one proxied request, not the process start-up
    assert abs(first - again) / first < 0.05
    assert not list((tmp_path / "callgrind").glob("cg.*"))  # dumps are cleaned up
