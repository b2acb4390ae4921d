"""The regression check's judgement, on made-up results (no processes, no timing)."""

from __future__ import annotations

from bench import report
from bench.runner import Results, Sample, Settings


def _results(ccproxy_p50s: list[float], instructions: float) -> Results:
    res = Results(Settings.quick(), "test")
    for p50 in (0.020, 0.030, 0.025):
        res.add("json:anthropic:1", "direct", Sample(p50=p50, count=10, cpu_us=20))
    for p50 in ccproxy_p50s:
        res.add("json:messages:1", "ccproxy", Sample(p50=p50, count=10, cpu_us=300))
    res.instructions = {"json:messages": instructions}
    return res


def test_ratios_use_the_best_repetition_of_each_side() -> None:
    ratios = report.ratios(_results([0.5, 0.4, 0.9], 500_000))
    assert ratios["json:messages:1 p50×direct"]["value"] == 0.4 / 0.020
    assert ratios["json:messages:1 CPU×direct"]["value"] == 300 / 20
    assert ratios["json:messages instructions/answer"] == {"value": 500_000, "better": "lower", "exact": True}


def test_check_tells_timing_noise_from_an_instruction_regression() -> None:
    baseline = {"ratios": report.ratios(_results([0.4], 500_000))}
    ok, summary, timing = report.check(_results([0.4], 510_000), baseline)
    assert ok and timing == [] and "bench-check passed" in summary
    ok, summary, timing = report.check(_results([0.6], 500_000), baseline)  # slower: could be noise
    assert not ok and timing == ["json:messages:1 p50×direct"]
    ok, summary, timing = report.check(_results([0.4], 650_000), baseline)  # 30% more work: real
    assert not ok and timing == [] and "WORSE    json:messages instructions/answer" in summary


def test_check_fails_on_a_bad_stream_whatever_the_ratios() -> None:
    res = _results([0.4], 500_000)
    res.samples["json:messages:1"]["ccproxy"][0].bad = 1
    ok, summary, _ = report.check(res, {"ratios": report.ratios(res)})
    assert not ok and "streams incomplete" in summary


def test_the_interleaved_comparisons_become_rows_and_targets() -> None:
    """``_versus`` results (observability on/off, two accounts + key vs one login) reach the process table and
    the targets: req/s at 32 connections ≥ 90%, p50 at 1 connection ≤ +0.05 ms."""
    res = Results(Settings.quick(), "test")
    res.process.update(
        {
            "observe_rate_on": [900.0, 950.0],
            "observe_rate_off": [1000.0, 1000.0],
            "observe_p50_on": [0.40],
            "observe_p50_off": [0.38],
            "accounts_rate_on": [800.0],
            "accounts_rate_off": [1000.0],
            "accounts_p50_on": [0.50],
            "accounts_p50_off": [0.40],
        }
    )
    found = {t.name: t for t in report.targets(res)}
    observe = found["req/s with metrics + ledger + pricing vs without, 32 conns"]
    assert observe.value is not None and abs(observe.value - 0.925) < 1e-9 and observe.met
    assert not found["req/s with two accounts + a client key vs one login, 32 conns"].met
    assert not found["added p50 with two accounts + a client key vs one login, 1 conn"].met
    assert found["added p50 with metrics + ledger + pricing vs without, 1 conn"].met
    table = report.tables(res)
    assert (
        "metrics + ledger + pricing on / off" in table and "two accounts + a client key / one login" in table
    )


def test_a_comparison_with_paired_rounds_is_judged_by_their_median_ratio() -> None:
    """Rounds measured in ABBA order keep their own ratio; the target reads the median of those, so a slow
    minute that hit both sides of a round does not move it (the two medians alone would say 0.80 here)."""
    res = Results(Settings.quick(), "test")
    res.process.update(
        {
            "aged_rate_on": [900.0, 500.0, 480.0],
            "aged_rate_off": [1000.0, 600.0, 520.0],
            "aged_rate_pairs": [0.90, 0.833, 0.923],
            "aged_p50_on": [0.40],
            "aged_p50_off": [0.40],
        }
    )
    found = {t.name: t for t in report.targets(res)}
    aged = found["req/s with the main table's server vs a fresh one, 32 conns"]
    assert aged.value == 0.90 and not aged.met  # its target is 0.95
    assert "after the main table / fresh (paired rounds)" in report.tables(res)
