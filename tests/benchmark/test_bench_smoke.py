"""The benchmark machinery end to end on tiny settings (a few seconds). No timing assertions: the numbers
of a smoke run mean nothing; `make bench` is the benchmark."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson

from bench.procs import bench_module


def test_bench_smoke_produces_a_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv, env = bench_module()
    proc = subprocess.run(
        [*argv, "--smoke", "--json", str(out)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for heading in ("### Request/response (non-streaming)", "### 200-event streams", "### Targets"):
        assert heading in text
    assert "| messages | 1 |" in text and "| chat | 1 |" in text
    assert "dashboard open (live stream read) / closed" in text
    data = orjson.loads(out.read_bytes())
    assert data["table"] in text
    # every probe passed and every streamed answer arrived complete, in order, unmerged
    assert set(data["probes"].values()) == {"ok"}
    for targets in data["samples"].values():
        for samples in targets.values():
            for sample in samples:
                assert sample["errors"] == 0 and sample["bad"] == 0, sample
                assert sample["count"] > 0
    assert data["ratios"]
