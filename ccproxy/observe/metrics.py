"""The ``metrics`` plugin: ``GET /metrics`` in the Prometheus text format (official ``prometheus-client``).

Fed only by the lifecycle events. Label values are bounded: ``route`` is the route template, ``status``
a class (``2xx``), and model names past ``max_models`` distinct ones collapse into ``other``. Label
children are cached, so a request costs a few dict lookups and counter increments.

Several workers (``ccproxy serve --workers N``): ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before the workers start, every worker writes its values there (the library's multiprocess
mode), and whichever worker answers a scrape sums all of them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ccproxy.plugins import Plugin, PluginContext, PluginSettings, RequestEvent, hookimpl

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_KINDS = ("input", "output", "cache_read", "cache_write", "reasoning")
_STATUS = {code: f"{code // 100}xx" for code in range(100, 600)}


class MetricsSettings(PluginSettings):
    max_models: int = Field(
        50, ge=1, le=10_000, description="Distinct model label values; later ones are counted as 'other'"
    )
    open_on_loopback: bool = Field(
        False, description="Serve /metrics to loopback clients without the auth token (a local Prometheus)"
    )


class Metrics:
    """The metric families of one app, with cached label children."""

    def __init__(self, registry: CollectorRegistry | None, max_models: int) -> None:
        reg: Any = registry
        self.max_models = max_models
        self.models: set[str] = set()
        self.requests = Counter(
            "ccproxy_requests",
            "Proxied requests",
            ["provider", "route", "format", "model", "status"],
            registry=reg,
        )
        self.duration = Histogram(
            "ccproxy_request_duration_seconds",
            "Time from request to the end of the answer",
            ["provider", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.ttfb = Histogram(
            "ccproxy_time_to_first_byte_seconds",
            "Time from request to the first body byte sent to the client",
            ["provider", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.tokens = Counter("ccproxy_tokens", "Tokens by kind", ["provider", "model", "kind"], registry=reg)
        self.cost = Counter(
            "ccproxy_cost_usd",
            "API-equivalent cost in USD (pricing plugin)",
            ["provider", "model"],
            registry=reg,
        )
        self.in_flight = Gauge(
            "ccproxy_requests_in_flight",
            "Proxied requests being served",
            ["provider"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "ccproxy_upstream_errors",
            "Failed proxied requests by reason",
            ["provider", "reason"],
            registry=reg,
        )
        self.retries = Counter(
            "ccproxy_upstream_retries", "Upstream retries by reason", ["provider", "reason"], registry=reg
        )
        self.refreshes = Counter(
            "ccproxy_credential_refreshes",
            "Credential refreshes by outcome",
            ["provider", "outcome"],
            registry=reg,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

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

    def started(self, event: RequestEvent) -> None:
        self.child(self.in_flight, event.plugin).inc()

    def finished(self, event: RequestEvent) -> None:
        provider, route, child = event.plugin, event.route or event.path, self.child
        model = self.model_label(event.model_served or event.model)
        child(self.in_flight, provider).dec()
        status = _STATUS.get(event.status, "other")
        child(self.requests, provider, route, event.client_format, model, status).inc()
        child(self.duration, provider, route).observe(event.duration)
        if event.ttfb:
            child(self.ttfb, provider, route).observe(event.ttfb)
        usage = event.usage
        if usage is not None:
            for kind, value in zip(
                _TOKEN_KINDS,
                (
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cache_read_tokens,
                    usage.cache_write_tokens,
                    usage.reasoning_tokens,
                ),
                strict=True,
            ):
                if value:
                    child(self.tokens, provider, model, kind).inc(value)
        if event.cost_usd:
            child(self.cost, provider, model).inc(event.cost_usd)
        if event.status >= 400 or event.error is not None:
            child(self.upstream_errors, provider, event.error_kind or "unknown").inc()
        for reason in event.retry_reasons:
            child(self.retries, provider, reason).inc()


class MetricsPlugin(Plugin):
    name = "metrics"
    settings_model = MetricsSettings

    def __init__(self) -> None:
        self.metrics: Metrics | None = None
        self.registry: CollectorRegistry | None = None
        self.multiprocess = False

    def routes(self, ctx: PluginContext) -> Sequence[BaseRoute]:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # One registry per app (tests build many apps in one process); in multiprocess mode values live
        # in the shared directory and a scrape collects them all.
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.metrics = Metrics(self.registry, ctx.settings.max_models)
        return [Route("/metrics", self._endpoint, methods=["GET"])]

    def loopback_open_paths(self, ctx: PluginContext) -> Sequence[str]:
        return ["/metrics"] if ctx.settings.open_on_loopback else []

    async def shutdown(self, ctx: PluginContext) -> None:
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

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
            self.metrics.child(self.metrics.refreshes, provider, outcome).inc()

    async def _endpoint(self, request: Request) -> Response:
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            assert self.registry is not None
            registry = self.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
