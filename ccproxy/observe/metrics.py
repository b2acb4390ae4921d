"""The ``metrics`` plugin: ``GET /metrics`` in the Prometheus text format (official ``prometheus-client``).

Fed only by the lifecycle events. A request adds to plain dicts of numbers (a few dict lookups: ~2 µs,
against ~12 µs through the library's metric objects, see docs/decisions.md); a custom collector turns
them into metric families when scraped, and the library renders the text format. Label values are
bounded: ``route`` is the route template, ``status`` a class (``2xx``), and model names past
``max_models`` distinct ones collapse into ``other``.

Several workers (``ccproxy serve --workers N``): ``serve`` points ``CCPROXY_METRICS_DIR`` at a fresh
directory; every worker writes its totals there once a second (and on shutdown), and the worker that
answers a scrape adds the others' files to its own live numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ccproxy.plugins import Plugin, PluginContext, PluginSettings, RequestEvent, hookimpl

SHARED_DIR_ENV = "CCPROXY_METRICS_DIR"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_STATUS = {code: f"{code // 100}xx" for code in range(100, 600)}
_TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "reasoning")
# name, help, label names; counters are exposed with the ``_total`` suffix
COUNTERS = {
    "requests": ("ccproxy_requests", "Proxied requests", ("provider", "route", "format", "model", "status")),
    "errors": ("ccproxy_upstream_errors", "Failed proxied requests by reason", ("provider", "reason")),
    "retries": ("ccproxy_upstream_retries", "Upstream retries by reason", ("provider", "reason")),
    "refreshes": ("ccproxy_credential_refreshes", "Credential refreshes by outcome", ("provider", "outcome")),
    # requests admitted by a client key (``ccproxy keys``) and their API-equivalent cost, by the key's name
    "key_requests": ("ccproxy_key_requests", "Proxied requests by client key", ("key",)),
    "key_cost": ("ccproxy_key_cost_usd", "API-equivalent cost in USD by client key", ("key",)),
}
HISTOGRAMS = {
    "duration": ("ccproxy_request_duration_seconds", "Time from request to the end of the answer"),
    "ttfb": ("ccproxy_time_to_first_byte_seconds", "Time from request to the first body byte sent"),
}


class MetricsSettings(PluginSettings):
    max_models: int = Field(
        50, ge=1, le=10_000, description="Distinct model label values; later ones are counted as 'other'"
    )
    open_on_loopback: bool = Field(
        False, description="Serve /metrics to loopback clients without the auth token (a local Prometheus)"
    )


Key = tuple[str, ...]


class Metrics:
    """One process's totals, as plain numbers keyed by label values."""

    def __init__(self, max_models: int) -> None:
        self.max_models = max_models
        self.models: set[str] = set()
        self.counters: dict[str, dict[Key, float]] = {name: {} for name in COUNTERS}
        # per (provider, route): a count per bucket (the last one is +Inf), then the sum
        self.histograms: dict[str, dict[Key, list[float]]] = {name: {} for name in HISTOGRAMS}
        # per (provider, model): tokens by kind, then the cost
        self.usage: dict[Key, list[float]] = {}
        self.in_flight: dict[str, int] = {}
        # per request label set: [count, duration row, ttfb row, usage row] (the rows shared with the
        # dicts above), so a request costs one lookup; the counts join ``counters["requests"]`` when read
        self._cells: dict[Key, list[Any]] = {}

    def model_label(self, model: str | None) -> str:
        if model is None:
            return "none"
        models = self.models
        if model in models:
            return model
        if len(models) >= self.max_models:
            return "other"
        models.add(model)
        return model

    def _cell(self, key: Key) -> list[Any]:
        provider, route, _, model, _ = key
        width = len(BUCKETS) + 2  # a count per bucket (the last one is +Inf), then the sum
        duration = self.histograms["duration"].setdefault((provider, route), [0.0] * width)
        ttfb = self.histograms["ttfb"].setdefault((provider, route), [0.0] * width)
        usage = self.usage.setdefault((provider, model), [0.0] * 6)  # tokens by kind, then the cost
        cell = self._cells[key] = [0, duration, ttfb, usage]
        return cell

    def started(self, event: RequestEvent) -> None:
        flight = self.in_flight
        flight[event.plugin] = flight.get(event.plugin, 0) + 1

    def finished(self, event: RequestEvent) -> None:
        provider = event.plugin
        model = event.model_served or event.model
        if model not in self.models:
            model = self.model_label(model)
        self.in_flight[provider] = self.in_flight.get(provider, 1) - 1
        key: Key = (
            provider,
            event.route or event.path,
            event.client_format,
            model,
            _STATUS.get(event.status, "other"),
        )
        cell = self._cells.get(key) or self._cell(key)
        cell[0] += 1
        duration, ttfb, row = cell[1], cell[2], cell[3]
        duration[bisect_left(BUCKETS, event.duration)] += 1  # the first bucket whose bound is >= it ("le")
        duration[-1] += event.duration
        if event.ttfb:
            ttfb[bisect_left(BUCKETS, event.ttfb)] += 1
            ttfb[-1] += event.ttfb
        u = event.usage
        if u is not None:  # a zero is skipped: adding it would still allocate a new float
            row[0] += u.input_tokens
            row[1] += u.output_tokens
            if u.cache_read_tokens:
                row[2] += u.cache_read_tokens
            if u.cache_write_tokens:
                row[3] += u.cache_write_tokens
            if u.reasoning_tokens:
                row[4] += u.reasoning_tokens
        if event.cost_usd:
            row[5] += event.cost_usd
        if event.status >= 400 or event.error is not None:
            _add(self.counters["errors"], (provider, event.error_kind or "unknown"))
        for reason in event.retry_reasons:
            _add(self.counters["retries"], (provider, reason))
        if event.key is not None:
            by_key = (event.key,)
            _add(self.counters["key_requests"], by_key)
            _add(self.counters["key_cost"], by_key, event.cost_usd or 0.0)

    def request_counts(self) -> dict[Key, float]:
        """Requests per label set: this process's live counts plus what was merged in."""
        counts = dict(self.counters["requests"])
        for key, cell in self._cells.items():
            counts[key] = counts.get(key, 0) + cell[0]
        return counts

    def snapshot(self) -> dict[str, Any]:
        return {
            "counters": {
                n: [[*k, v] for k, v in (self.request_counts() if n == "requests" else c).items()]
                for n, c in self.counters.items()
            },
            "histograms": {n: [[*k, *v] for k, v in h.items()] for n, h in self.histograms.items()},
            "usage": [[*k, *v] for k, v in self.usage.items()],
            "in_flight": self.in_flight,
        }


def _add(counter: dict[Key, float], key: Key, value: float = 1) -> None:
    counter[key] = counter.get(key, 0) + value


def merge(into: Metrics, snapshot: dict[str, Any], live: bool) -> None:
    """Add another worker's snapshot (its in-flight gauge only while that worker is alive)."""
    for name, rows in snapshot["counters"].items():
        for row in rows:
            _add(into.counters[name], tuple(row[:-1]), row[-1])
    width = len(BUCKETS) + 2
    for name, rows in snapshot["histograms"].items():
        for row in rows:
            key, values = tuple(row[:-width]), row[-width:]
            target = into.histograms[name].setdefault(key, [0.0] * width)
            for i, v in enumerate(values):
                target[i] += v
    for row in snapshot["usage"]:
        target = into.usage.setdefault(tuple(row[:2]), [0.0] * 6)
        for i, v in enumerate(row[2:]):
            target[i] += v
    if live:
        for provider, count in snapshot["in_flight"].items():
            into.in_flight[provider] = into.in_flight.get(provider, 0) + count


def families(m: Metrics) -> Iterator[Metric]:
    for name, (metric, doc, labels) in COUNTERS.items():
        family = CounterMetricFamily(metric, doc, labels=labels)
        for key, value in (m.request_counts() if name == "requests" else m.counters[name]).items():
            family.add_metric(key, value)
        yield family
    for name, (metric, doc) in HISTOGRAMS.items():
        histogram = HistogramMetricFamily(metric, doc, labels=("provider", "route"))
        for key, row in m.histograms[name].items():
            cumulative, buckets = 0.0, []
            for bound, count in zip((*BUCKETS, float("inf")), row[:-1], strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            histogram.add_metric(key, buckets, row[-1])
        yield histogram
    tokens = CounterMetricFamily("ccproxy_tokens", "Tokens by kind", labels=("provider", "model", "kind"))
    cost = CounterMetricFamily(
        "ccproxy_cost_usd", "API-equivalent cost in USD (pricing plugin)", labels=("provider", "model")
    )
    for key, row in m.usage.items():
        for kind, value in zip(_TOKEN_KINDS, row[:5], strict=True):
            tokens.add_metric((*key, kind), value)
        cost.add_metric(key, row[5])
    yield tokens
    yield cost
    flight = GaugeMetricFamily(
        "ccproxy_requests_in_flight", "Proxied requests being served", labels=("provider",)
    )
    for provider, count in m.in_flight.items():
        flight.add_metric((provider,), count)
    yield flight


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Collector:
    """What a scrape sees: this worker's live numbers plus the other workers' last snapshots."""

    def __init__(self, plugin: MetricsPlugin) -> None:
        self.plugin = plugin

    def collect(self) -> Iterator[Metric]:
        own = self.plugin.metrics
        assert own is not None
        shared = self.plugin.shared_dir
        if shared is None:
            yield from families(own)
            return
        total = Metrics(own.max_models)
        merge(total, own.snapshot(), live=True)
        for path in shared.glob("ccproxy-*.json"):
            pid = int(path.stem.rpartition("-")[2])
            if pid == os.getpid():
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError, ValueError, KeyError):
                merge(total, orjson.loads(path.read_bytes()), live=_alive(pid))
        yield from families(total)


class MetricsPlugin(Plugin):
    name = "metrics"
    settings_model = MetricsSettings

    def __init__(self) -> None:
        self.metrics: Metrics | None = None
        self.registry: CollectorRegistry | None = None
        self.shared_dir: Path | None = None
        self._writer: asyncio.Task[None] | None = None

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        self.metrics = Metrics(ctx.settings.max_models)
        shared = os.environ.get(SHARED_DIR_ENV)
        self.shared_dir = Path(shared) if shared else None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        return [Route("/metrics", self._endpoint, methods=["GET"])]

    def loopback_open_paths(self, ctx: PluginContext) -> Sequence[str]:
        return ["/metrics"] if ctx.settings.open_on_loopback else []

    async def startup(self, ctx: PluginContext) -> None:
        if self.shared_dir is not None:
            self._writer = asyncio.get_running_loop().create_task(self._share())

    async def shutdown(self, ctx: PluginContext) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
            if self.metrics is not None:
                self.metrics.in_flight.clear()
            await self._write_snapshot()

    async def _share(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._write_snapshot()

    async def _write_snapshot(self) -> None:
        if self.shared_dir is None or self.metrics is None:
            return
        data = orjson.dumps(self.metrics.snapshot())  # taken on the loop, where the numbers change
        await asyncio.to_thread(_replace, self.shared_dir / f"ccproxy-{os.getpid()}.json", data)

    @hookimpl
    def ccproxy_request_started(self, event: RequestEvent) -> None:
        if self.metrics is not None:
            self.metrics.started(event)

    @hookimpl
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        if self.metrics is not None:
            self.metrics.finished(event)

    @hookimpl
    def ccproxy_credential_refreshed(self, provider: str, account: str | None, outcome: str) -> None:
        if self.metrics is not None:
            _add(self.metrics.counters["refreshes"], (provider, outcome))

    async def _endpoint(self, request: Request) -> Response:
        assert self.registry is not None
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
