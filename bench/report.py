"""Medians, the results table (Markdown, printed and written), the targets, and the regression check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.load import median
from bench.runner import Results, Sample

TOLERANCE = 1.20  # a ratio may worsen by at most 20% against the baseline


def _med(samples: list[Sample] | None, attr: str) -> float | None:
    if not samples:
        return None
    return median([float(getattr(s, attr)) for s in samples])


def _f(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# The interleaved comparisons of bench/runner.py ``_versus``. name: the two sides' labels, what is
# compared, and the targets (req/s ratio at least, added p50 in ms at most). Both sides are fresh servers
# except for "aged", whose "on" side served the whole main table.
VERSUS = {
    "observe": ("metrics + ledger + pricing on", "off", "metrics + ledger + pricing vs without", 0.9, 0.05),
    "accounts": (
        "two accounts + a client key",
        "one login",
        "two accounts + a client key vs one login",
        0.9,
        0.05,
    ),
    "aged": ("after the main table", "fresh", "the main table's server vs a fresh one", 0.95, 0.05),
}


def paired_ratio(pr: dict[str, Any], name: str) -> float:
    """The req/s ratio of a comparison: the median of its rounds' ratios (ABBA order), which cancels a
    drift of the machine's speed; runs from before the pairing have only the two medians."""
    pairs = pr.get(f"{name}_rate_pairs")
    if pairs:
        return float(median(pairs))
    return float(median(pr[f"{name}_rate_on"]) / median(pr[f"{name}_rate_off"]))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass
class Row:
    key: str
    kind: str
    name: str
    conns: int
    d: list[Sample] | None
    n: list[Sample] | None
    c: list[Sample] | None

    def m(self, target: str, attr: str) -> float | None:
        return _med({"direct": self.d, "nginx": self.n, "ccproxy": self.c}[target], attr)

    def added(self, target: str, attr: str) -> float | None:
        v, base = self.m(target, attr), self.m("direct", attr)
        return None if v is None or base is None else v - base

    def errors(self) -> tuple[int, int, int]:
        samples = [*(self.d or []), *(self.n or []), *(self.c or [])]
        return (sum(s.count for s in samples), sum(s.errors for s in samples), sum(s.bad for s in samples))


def rows(res: Results) -> list[Row]:
    out = []
    for key, by_target in res.samples.items():
        if "ccproxy" not in by_target:
            continue
        kind, name, conns = key.split(":")
        base = _baseline_of(key, res)
        out.append(
            Row(
                key,
                kind,
                name,
                int(conns),
                res.samples.get(base, {}).get("direct"),
                res.samples.get(base, {}).get("nginx"),
                by_target["ccproxy"],
            )
        )
    return out


def _baseline_of(key: str, res: Results) -> str:
    kind, name, conns = key.split(":")
    large = " large-body" if "large-body" in name else ""
    up = "codex" if name.startswith("codex") else "anthropic"
    return f"{kind}:{up}{large}:{conns}"


def tables(res: Results) -> str:
    all_rows = rows(res)
    out: list[str] = []
    json_rows = [r for r in all_rows if r.kind == "json"]
    if json_rows:
        out.append("### Request/response (non-streaming)\n")
        body = []
        for r in json_rows:
            total, errs, _ = r.errors()
            body.append(
                [
                    r.name,
                    str(r.conns),
                    _f(r.m("direct", "p50")),
                    _f(r.m("nginx", "p50")),
                    _f(r.m("ccproxy", "p50")),
                    _f(r.added("ccproxy", "p50")),
                    _f(r.added("nginx", "p50")),
                    _f(_ratio(r.m("ccproxy", "p50"), r.m("direct", "p50")), 2),
                    _f(_ratio(r.m("ccproxy", "p50"), r.m("nginx", "p50")), 2),
                    _f(r.m("ccproxy", "p99")),
                    _f(_ratio(r.m("ccproxy", "p99"), r.m("ccproxy", "p50")), 2),
                    _f(r.m("direct", "rate"), 0),
                    _f(r.m("nginx", "rate"), 0),
                    _f(r.m("ccproxy", "rate"), 0),
                    _f(_ratio(r.m("ccproxy", "rate"), r.m("direct", "rate")), 2),
                    _f(_ratio(r.m("ccproxy", "rate"), r.m("nginx", "rate")), 2),
                    _f(r.m("nginx", "cpu_us"), 0),
                    _f(r.m("ccproxy", "cpu_us"), 0),
                    f"{errs}/{total}",
                ]
            )
        out.append(
            _table(
                [
                    "scenario",
                    "conns",
                    "p50 ms direct",
                    "p50 nginx",
                    "p50 ccproxy",
                    "added ccproxy",
                    "added nginx",
                    "p50 ×direct",
                    "p50 ×nginx",
                    "p99 ccproxy",
                    "p99/p50",
                    "req/s direct",
                    "req/s nginx",
                    "req/s ccproxy",
                    "req/s ×direct",
                    "req/s ×nginx",
                    "CPU µs/req nginx",
                    "CPU µs/req ccproxy",
                    "errors/requests (all targets)",
                ],
                body,
            )
        )
    stream_rows = [r for r in all_rows if r.kind == "stream"]
    if stream_rows:
        out.append("\n### 200-event streams\n")
        body = []
        for r in stream_rows:
            total, errs, bad = r.errors()
            body.append(
                [
                    r.name,
                    str(r.conns),
                    _f(r.m("direct", "ttft")),
                    _f(r.m("nginx", "ttft")),
                    _f(r.m("ccproxy", "ttft")),
                    _f(r.added("ccproxy", "ttft")),
                    _f(r.m("direct", "p50")),
                    _f(r.m("nginx", "p50")),
                    _f(r.m("ccproxy", "p50")),
                    _f(r.added("ccproxy", "p50")),
                    _f(r.added("nginx", "p50")),
                    _f(_ratio(r.m("ccproxy", "p50"), r.m("direct", "p50")), 2),
                    _f(_ratio(r.m("ccproxy", "p50"), r.m("nginx", "p50")), 2),
                    _f(r.m("ccproxy", "p99")),
                    _f(r.m("direct", "rate"), 0),
                    _f(r.m("nginx", "rate"), 0),
                    _f(r.m("ccproxy", "rate"), 0),
                    _f(r.m("ccproxy", "cpu_us"), 0),
                    f"{total}/{bad}/{errs}",
                ]
            )
        out.append(
            _table(
                [
                    "scenario",
                    "conns",
                    "TTFT ms direct",
                    "TTFT nginx",
                    "TTFT ccproxy",
                    "added TTFT",
                    "total ms direct",
                    "total nginx",
                    "total ccproxy",
                    "added total",
                    "added nginx",
                    "total ×direct",
                    "total ×nginx",
                    "total p99 ccproxy",
                    "streams/s direct",
                    "streams/s nginx",
                    "streams/s ccproxy",
                    "CPU µs/stream ccproxy",
                    "checked/bad/errors (all targets)",
                ],
                body,
            )
        )
    slow_rows = [r for r in all_rows if r.kind == "slow"]
    if slow_rows:
        s = res.settings
        out.append(
            f"\n### {s.slow_conns:,} concurrent slow streams ({s.slow_events} events "
            f"{s.slow_interval * 1000:.0f} ms apart; ideal {(s.slow_events - 1) * s.slow_interval:.2f} s)\n"
        )
        body = []
        for r in slow_rows:
            total, errs, bad = r.errors()
            body.append(
                [
                    r.name,
                    _f(r.m("direct", "stretch")),
                    _f(r.m("nginx", "stretch")),
                    _f(r.m("ccproxy", "stretch")),
                    _f(r.m("ccproxy", "stretch_p99")),
                    _f(r.m("ccproxy", "stretch_max")),
                    _f(r.m("direct", "ttft"), 1),
                    _f(r.m("ccproxy", "ttft"), 1),
                    f"{total}/{bad}/{errs}",
                ]
            )
        out.append(
            _table(
                [
                    "scenario",
                    "stretch p50 direct",
                    "nginx",
                    "ccproxy",
                    "ccproxy p99",
                    "ccproxy max",
                    "TTFT ms direct",
                    "TTFT ccproxy",
                    "checked/bad/errors",
                ],
                body,
            )
        )
    pr = res.process
    out.append("\n### Process\n")
    prow = [
        ["start to healthy (s, median)", _f(median(pr.get("startup_s", [])))],
        ["`ccproxy --help` (s, median)", _f(median(pr.get("help_s", [])))],
        ["RSS idle after warm-up (MB)", _f(pr.get("rss_idle_mb"), 1)],
        ["RSS peak under slow streams (MB, sampled every 50 ms)", _f(pr.get("rss_peak_mb"), 1)],
        [f"RSS {2 * res.settings.settle:g} s after the last load (MB)", _f(pr.get("rss_after_mb"), 1)],
        [
            f"RSS at the end of the run, {pr.get('rss_end_after_s', 0):.0f} s after the scenario load (MB)",
            _f(pr.get("rss_end_mb"), 1),
        ],
        [
            "other processes' share of the machine's CPU during the run",
            f"{pr.get('foreign_cpu_share', 0):.0%}",
        ],
    ]
    if pr.get("workers_rps_1"):
        one, two = median(pr["workers_rps_1"]), median(pr["workers_rps_2"])
        prow.append(
            [
                "req/s messages 32 conns: 1 worker (CPU 0) / 2 workers (both CPUs)",
                f"{one:,.0f} / {two:,.0f} = {two / one:.2f}x",
            ]
        )
    for name, (on_label, off_label, *_) in VERSUS.items():
        if pr.get(f"{name}_rate_on"):
            on, off = median(pr[f"{name}_rate_on"]), median(pr[f"{name}_rate_off"])
            prow.append(
                [
                    f"req/s messages 32 conns: {on_label} / {off_label} (paired rounds)",
                    f"{on:,.0f} / {off:,.0f}: {paired_ratio(pr, name):.2f}x",
                ]
            )
            p50_on, p50_off = median(pr[f"{name}_p50_on"]), median(pr[f"{name}_p50_off"])
            prow.append(
                [f"p50 messages 1 conn (ms): {on_label} / {off_label}", f"{p50_on:.3f} / {p50_off:.3f}"]
            )
    if pr.get("dashboard_rate_open"):
        live, shut = median(pr["dashboard_rate_open"]), median(pr["dashboard_rate_closed"])
        prow.append(
            [
                "req/s messages 32 conns: dashboard open (live stream read) / closed",
                f"{live:,.0f} / {shut:,.0f} = {live / shut:.2f}x",
            ]
        )
    out.append(_table(["measure", "value"], prow))
    if res.micro.get("translation"):
        out.append("\n### Stream translation cost (in-process, pre-parsed events)\n")
        out.append(
            _table(
                [
                    "client ← upstream",
                    "µs per text delta",
                    "µs per event (200-event stream)",
                    "µs per 200-event stream",
                    "µs request",
                    "µs response",
                ],
                [
                    [
                        f"{t['client']} ← {t['upstream']}",
                        _f(t["delta_event_us"], 2),
                        _f(t["stream_per_event_us"], 2),
                        _f(t["stream_200_us"], 0),
                        _f(t["request_us"], 2),
                        _f(t["response_us"], 2),
                    ]
                    for t in res.micro["translation"]
                ],
            )
        )
        out.append(
            f"\nSSE parsing (`ccproxy.sse.SSEParser`): {res.micro['sse_parse_us_per_event']:.2f} µs/event."
        )
    return "\n".join(out)


def decisions_tables(res: Results) -> str:
    out = []
    d = res.decisions
    if d.get("http_clients"):
        out.append(
            "HTTP client, 32 concurrent requests to the fake upstream, one process on the proxy's CPU:\n"
        )
        out.append(
            _table(
                ["client", "answer", "req/s", "p50 ms", "p99 ms", "errors"],
                [
                    [
                        c["client"],
                        "200-event stream" if c["stream"] else "JSON",
                        _f(c.get("rps"), 0),
                        _f(c.get("p50_ms")),
                        _f(c.get("p99_ms")),
                        str(c.get("errors", c.get("skipped", ""))),
                    ]
                    for c in d["http_clients"]
                ],
            )
        )
    if d.get("servers"):
        out.append("\nServer (the same ccproxy app under uvicorn), non-streaming messages:\n")
        out.append(
            _table(
                [
                    "event loop",
                    "HTTP parser",
                    "p50 ms 1 conn",
                    "req/s 32 conns",
                    "p99 ms 32 conns",
                    "CPU µs/req",
                ],
                [
                    [
                        v["loop"],
                        v["http"],
                        _f(v.get("p50_1conn_ms")),
                        _f(v.get("rps_32"), 0),
                        _f(v.get("p99_32_ms")),
                        _f(v.get("cpu_us_per_req"), 0),
                    ]
                    for v in d["servers"]
                ],
            )
        )
    if res.micro.get("json"):
        out.append("\nJSON library (µs per loads+dumps):\n")
        out.append(
            _table(
                ["document", "orjson", "json", "json/orjson"],
                [
                    [j["document"], _f(j["orjson_us"], 2), _f(j["json_us"], 2), _f(j["json_over_orjson"], 1)]
                    for j in res.micro["json"]
                ],
            )
        )
    return "\n".join(out)


# -- targets ------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    value: float | None
    limit: float
    higher_is_better: bool = False
    unit: str = ""
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def margin(self) -> str:
        if self.value is None:
            return "not measured"
        if self.higher_is_better:
            pct = (self.value / self.limit - 1) * 100 if self.limit else 0
        else:
            pct = (1 - self.value / self.limit) * 100 if self.limit else 0
        return f"{pct:+.0f}% headroom" if pct >= 0 else f"missed by {-pct:.0f}%"


def _capacity(cpu_us: float | None) -> str:
    if not cpu_us:
        return ""
    return f"{cpu_us:.0f} CPU µs/req: {1e6 / cpu_us:,.0f} req/s if it had its CPU to itself"


def targets(res: Results) -> list[Target]:
    by = {r.key: r for r in rows(res)}
    out: list[Target] = []

    def row(key: str) -> Row | None:
        return by.get(key)

    r = row("json:messages:1")
    if r:
        out.append(
            Target("added p50, messages, non-streaming, 1 conn", r.added("ccproxy", "p50"), 0.4, unit="ms")
        )
        out.append(
            Target(
                "… as a multiple of nginx's added p50",
                _ratio(r.added("ccproxy", "p50"), r.added("nginx", "p50")),
                4.0,
                unit="x",
            )
        )
    r = row("json:chat:1")
    if r:
        out.append(
            Target(
                "added p50, chat completion (translated), 1 conn", r.added("ccproxy", "p50"), 0.6, unit="ms"
            )
        )
    r = row("json:messages:32")
    if r:
        out.append(
            Target(
                "req/s, messages, non-streaming, 32 conns, 1 worker",
                r.m("ccproxy", "rate"),
                4000,
                higher_is_better=True,
                unit="req/s",
                detail=_capacity(r.m("ccproxy", "cpu_us")),
            )
        )
    for r in by.values():
        if r.kind == "json" and r.conns == 128:
            out.append(
                Target(
                    f"p99/p50 at 128 conns, {r.name}",
                    _ratio(r.m("ccproxy", "p99"), r.m("ccproxy", "p50")),
                    3.0,
                    unit="x",
                )
            )
    for name in ("messages", "codex-responses"):
        r = row(f"stream:{name}:1")
        if r:
            out.append(
                Target(
                    f"200-event stream passthrough ({name}) added TTFT",
                    r.added("ccproxy", "ttft"),
                    0.5,
                    unit="ms",
                )
            )
            out.append(
                Target(
                    f"200-event stream passthrough ({name}) added total",
                    r.added("ccproxy", "p50"),
                    3.0,
                    unit="ms",
                )
            )
    for name in ("chat", "responses", "codex-chat"):
        r = row(f"stream:{name}:1")
        if r:
            out.append(
                Target(
                    f"200-event stream translated ({name}) added total",
                    r.added("ccproxy", "p50"),
                    6.0,
                    unit="ms",
                )
            )
    for r in by.values():
        if r.kind == "slow":
            out.append(
                Target(
                    f"{res.settings.slow_conns:,} slow streams ({r.name}): stretch p50 over ideal",
                    r.m("ccproxy", "stretch"),
                    1.05,
                    unit="x",
                    detail=f"p99 {_f(r.m('ccproxy', 'stretch_p99'))}x",
                )
            )
            _, errs, bad = r.errors()
            out.append(
                Target(
                    f"{res.settings.slow_conns:,} slow streams ({r.name}): errors + bad streams",
                    float(errs + bad),
                    0,
                    unit="",
                )
            )
    pr = res.process
    if pr.get("rss_idle_mb") is not None:
        idle = pr["rss_idle_mb"]
        out.append(Target("memory idle", idle, 60, unit="MB"))
        if pr.get("rss_peak_mb"):
            out.append(
                Target(
                    f"memory peak under {res.settings.slow_conns:,} streams",
                    pr["rss_peak_mb"],
                    250,
                    unit="MB",
                )
            )
        if pr.get("rss_after_mb") is not None:
            out.append(
                Target(
                    "memory after, relative to idle",
                    pr["rss_after_mb"] / idle,
                    1.2,
                    unit="x",
                    detail=f"{pr['rss_after_mb']:.1f} MB",
                )
            )
    if pr.get("startup_s"):
        out.append(Target("start to healthy", median(pr["startup_s"]), 0.5, unit="s"))
    if pr.get("help_s"):
        out.append(Target("`ccproxy --help`", median(pr["help_s"]), 0.2, unit="s"))
    for name, (_, _, what, least, most) in VERSUS.items():
        if pr.get(f"{name}_rate_on"):
            ratio = paired_ratio(pr, name)
            out.append(Target(f"req/s with {what}, 32 conns", ratio, least, higher_is_better=True, unit="x"))
            added = median(pr[f"{name}_p50_on"]) - median(pr[f"{name}_p50_off"])
            out.append(Target(f"added p50 with {what}, 1 conn", added, most, unit="ms"))
    if pr.get("dashboard_rate_open"):
        out.append(
            Target(
                "req/s with the dashboard open vs closed, 32 conns",
                median(pr["dashboard_rate_open"]) / median(pr["dashboard_rate_closed"]),
                0.95,
                higher_is_better=True,
                unit="x",
            )
        )
    if pr.get("workers_rps_1"):
        out.append(
            Target(
                "req/s at 2 workers vs 1",
                median(pr["workers_rps_2"]) / median(pr["workers_rps_1"]),
                1.7,
                higher_is_better=True,
                unit="x",
            )
        )
    return out


def targets_table(res: Results) -> str:
    body = []
    for t in targets(res):
        verdict = {True: "met", False: "**MISSED**", None: "–"}[t.met]
        op = "≥" if t.higher_is_better else "≤"
        value = _f(t.value) + (f" {t.unit}" if t.unit else "")
        body.append([t.name, value, f"{op} {t.limit:g} {t.unit}".strip(), verdict, t.margin(), t.detail])
    return _table(["target", "measured", "limit", "verdict", "margin", "note"], body)


def render(res: Results) -> str:
    s = res.settings
    head = [
        f"ccproxy benchmark ({s.mode}): medians of {s.reps} interleaved repetitions; {res.started_at}; "
        f"{res.wall_seconds:.0f} s",
        f"Pinning: {res.pinning}.",
    ]
    head += [f"Note: {n}" for n in res.notes]
    failed = {k: v for k, v in res.probes.items() if v != "ok"}
    if failed:
        head += [f"PROBE FAILED {k}: {v}" for k, v in failed.items()]
    parts = ["\n".join(head), tables(res), "\n### Targets\n", targets_table(res)]
    if res.instructions:
        off, acc = res.instructions_off, res.instructions_accounts
        rows_ = [
            [
                name,
                f"{count:,.0f}",
                *([f"{off[name]:,.0f}", f"{count / off[name] - 1:+.1%}"] if name in off else []),
                *([f"{acc[name]:,.0f}", f"{acc[name] / count - 1:+.1%}"] if name in acc else []),
            ]
            for name, count in res.instructions.items()
        ]
        header = [
            "scenario",
            "instructions",
            *(["metrics + ledger + pricing off", "on vs off"] if off else []),
            *(["2 accounts + client key", "vs 1 login"] if acc else []),
        ]
        parts += [
            "\n### CPU instructions per answer (callgrind, ccproxy process, 20 answers each)\n",
            _table(header, rows_),
        ]
    extra = decisions_tables(res)
    if extra:
        parts += ["\n### Measured design choices\n", extra]
    return "\n".join(parts) + "\n"


# -- regression check ---------------------------------------------------------------------------------


def _best(samples: list[Sample] | None, attr: str, better: str) -> float | None:
    """The best repetition: machine noise only ever makes a run slower, so the best is the steadiest."""
    values = [float(getattr(s, attr)) for s in samples or () if getattr(s, attr)]
    if not values:
        return None
    return min(values) if better == "lower" else max(values)


def ratios(res: Results) -> dict[str, dict[str, Any]]:
    """The ratios to direct the regression check compares (direction: which way is better).

    Each side is its best repetition, not the median. "CPU×direct" (ccproxy's CPU time per answer over the
    fake upstream's, for the same answers) barely moves with other load on the machine, so it is what
    catches a slower hot path; the timing ratios catch waiting (buffering, a lost wake-up).
    """
    out: dict[str, dict[str, Any]] = {}

    def add(name: str, ours: list[Sample] | None, base: list[Sample] | None, attr: str, better: str) -> None:
        v = _ratio(_best(ours, attr, better), _best(base, attr, better))
        if v is not None:
            out[name] = {"value": v, "better": better}

    for r in rows(res):
        if r.kind == "json":
            if r.conns == 1:
                add(f"{r.key} p50×direct", r.c, r.d, "p50", "lower")
            else:
                add(f"{r.key} req/s×direct", r.c, r.d, "rate", "higher")
            add(f"{r.key} CPU×direct", r.c, r.d, "cpu_us", "lower")
        elif r.kind == "stream":
            add(f"{r.key} total×direct", r.c, r.d, "p50", "lower")
            add(f"{r.key} CPU×direct", r.c, r.d, "cpu_us", "lower")
        elif r.kind == "slow":
            v = _best(r.c, "stretch", "lower")
            if v is not None:
                out[f"{r.key} stretch"] = {"value": v, "better": "lower"}
    for name, count in res.instructions.items():
        out[f"{name} instructions/answer"] = {"value": count, "better": "lower", "exact": True}
    return out


def check(res: Results, baseline: dict[str, Any]) -> tuple[bool, str, list[str]]:
    """Compare this run's ratios with the baseline's; fail when any worsens by more than 20%.

    Returns (passed, report, names of the timing ratios that worsened): a re-run can only clear those.
    """
    base = baseline.get("ratios", {})
    now = ratios(res)
    lines, ok, timing_worse = [], True, []
    for name, cur in sorted(now.items()):
        if name not in base:
            lines.append(f"  new      {name}: {cur['value']:.3f} (not in the baseline)")
            continue
        b = float(base[name]["value"])
        v = float(cur["value"])
        worse = (v / b) if cur["better"] == "lower" else (b / v if v else float("inf"))
        status = "ok"
        if worse > TOLERANCE:
            status, ok = "WORSE", False
            if not cur.get("exact"):
                timing_worse.append(name)
        shown = f"{v:,.0f}" if cur.get("exact") else f"{v:.3f}"
        was = f"{b:,.0f}" if cur.get("exact") else f"{b:.3f}"
        lines.append(
            f"  {status:<8} {name}: {shown} vs baseline {was} ({(worse - 1) * 100:+.1f}% worse)"
            if worse > 1
            else f"  {status:<8} {name}: {shown} vs baseline {was} (better or equal)"
        )
    if base and not any(k.endswith("instructions/answer") for k in now):
        lines.append("  note     no instruction counts this run (valgrind missing?): timing ratios only")
    for r in rows(res):
        _, errs, bad = r.errors()
        if errs or bad:
            ok = False
            lines.append(f"  FAILED   {r.key}: {errs} errors, {bad} streams incomplete/out of order/merged")
    for probe, outcome in res.probes.items():
        if outcome != "ok":
            ok = False
            lines.append(f"  FAILED   probe {probe}: {outcome}")
    verdict = (
        "bench-check passed" if ok else "bench-check FAILED (a ratio worsened by more than 20%, or errors)"
    )
    return ok, "\n".join([*lines, verdict]), timing_worse


def only_ratios_failed(res: Results) -> bool:
    """True when the run had no errors, bad streams or failed probes (so only timing ratios can fail)."""
    if any(outcome != "ok" for outcome in res.probes.values()):
        return False
    return all(not r.errors()[1] and not r.errors()[2] for r in rows(res))
